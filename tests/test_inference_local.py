"""Tests of dgmjax.inference.local: per-datapoint Gaussian fits and variational EM on PPCA, whose
exact posterior and maximum-likelihood solution are the oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import distributions as D
from dgmjax import objectives as O
from dgmjax.inference import local
from dgmjax.models import linear_gaussian as lg
from dgmjax.models import linear_vae, ppca
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import
from tests.classical_data import ppca_data_fixture  # pylint: disable=unused-import


LINEAR_VAE = linear_vae.LinearVAE()


def _as_linear_vae(decoder):
  """A :class:`LinearVAEParams` with the given PPCA decoder (the encoder is not read by the local
  fits, which use the model's log-joint only)."""
  x_dim, z_dim = decoder.w.shape
  zeros = jnp.zeros((z_dim,), decoder.w.dtype)
  return linear_vae.LinearVAEParams(decoder, jnp.zeros((x_dim, z_dim), decoder.w.dtype), zeros,
                                    zeros)


def test_ppca_elbo_with_the_exact_posterior_equals_log_marginal(x64, ppca_data):
  x = ppca_data[:5]

  @jax.jit
  def log_weights(key, params, ml):
    k_full, k_diag = jax.random.split(key)
    loc, tril = lg.posterior(params, x)

    def one(k):
      z = D.sample_mvn(k, loc, tril)
      return lg.log_joint(params, x, z) - D.mvn_log_prob(z, loc, tril)

    lw_full = jax.vmap(one)(jax.random.split(k_full, 32))
    # At the ML solution W has orthogonal columns, so the posterior is diagonal and the
    # diagonal-Gaussian code path (gaussian_log_weights) is exact too.
    loc_ml, tril_ml = lg.posterior(ml, x)
    scale = jnp.broadcast_to(jnp.log(jnp.diagonal(tril_ml)), loc_ml.shape)
    lw_diag = local.gaussian_log_weights(LINEAR_VAE, _as_linear_vae(ml), x, loc_ml, scale,
                                         k_diag, 32)
    return (lw_full, lg.log_marginal(params, x), O.elbo(lw_full), lw_diag, tril_ml,
            lg.log_marginal(ml, x))

  params = cd.lg_params(13, cd.X_DIM, cd.Z_DIM)  # not the ML: the posterior has a full covariance
  ml = ppca.ppca_ml(ppca_data, cd.Z_DIM)
  lw, log_px, elbo, lw_diag, tril, log_px_ml = log_weights(jax.random.key(0), params, ml)
  assert not np.allclose(np.asarray(log_px), np.asarray(log_px_ml))  # two different models
  np.testing.assert_allclose(lw, np.broadcast_to(log_px, lw.shape), rtol=1e-10)
  np.testing.assert_allclose(elbo, log_px, rtol=1e-10)
  np.testing.assert_allclose(tril, np.asarray(tril) * np.eye(cd.Z_DIM), atol=1e-12)
  np.testing.assert_allclose(lw_diag, np.broadcast_to(log_px_ml, lw_diag.shape), rtol=1e-10)


def test_variational_em_on_ppca_reaches_the_ml_likelihood(x64, ppca_data):
  x = ppca_data[:200, :6]
  ml = ppca.ppca_ml(x, 2)
  init = cd.lg_params(20, 6, 2)._replace(b=jnp.asarray(x.mean(0)))
  res = local.variational_em(LINEAR_VAE, _as_linear_vae(init), x, jax.random.key(21), z_dim=2,
                             num_iters=600, e_steps=2, m_steps=1, e_optimizer=optax.adam(5e-2),
                             m_optimizer=optax.adam(optax.cosine_decay_schedule(5e-2, 600, 0.01)))
  decoder = res.params.decoder  # the encoder is not read, its gradient is 0: Adam leaves it
  ll = float(cd.log_marginal(decoder, x).mean())
  ll_ml = float(cd.log_marginal(ml, x).mean())
  ll_init = float(cd.log_marginal(init, x).mean())
  assert ll_ml - ll < 0.03 < ll - ll_init
  # The ELBO is a lower bound on the (exact) log-likelihood.
  assert float(res.elbo[-1]) < ll + 0.05
  assert float(jnp.max(ppca.subspace_angles(decoder.w, ml.w))) < 0.1
