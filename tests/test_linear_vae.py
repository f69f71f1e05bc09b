"""Tests of dgmjax.models.linear_vae: the analytic ELBO against Monte Carlo and the exact posterior,
and training that recovers PPCA and collapses the dimensions below the noise (Lucas et al. 2019)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import distributions as D
from dgmjax import models
from dgmjax import objectives as O
from dgmjax.models import linear_gaussian as lg
from dgmjax.models import linear_vae, ppca
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import
from tests.classical_data import ppca_data_fixture  # pylint: disable=unused-import


MODEL = linear_vae.LinearVAE()


@pytest.fixture(scope="module")
def vae_data():
  """Train / held-out float32 data from a 12-D PPCA with 3 strong directions."""
  x = cd.ppca_draws(50, 3000, 12, [3.0, 2.0, 1.5], 0.5, np.float32)
  return x[:2000], x[2000:]


def test_linear_vae_analytic_elbo_matches_monte_carlo_and_exact_posterior(x64, ppca_data):
  x = ppca_data[:6]
  rng = np.random.default_rng(40)
  vae = linear_vae.LinearVAEParams(cd.lg_params(41, cd.X_DIM, cd.Z_DIM, 0.7),
                          jnp.asarray(rng.normal(size=(cd.X_DIM, cd.Z_DIM))),
                          jnp.asarray(rng.normal(size=(cd.Z_DIM,))), jnp.array([-0.5, 0.1, 0.3]))
  lw = jax.jit(lambda p, xx, k: models.log_weights(MODEL, p, xx, k, 20000))(
      vae, x, jax.random.key(41))
  mc = O.elbo(lw)
  se = jnp.std(lw, axis=0) / math.sqrt(20000)
  elbo = cd.linear_vae_elbo
  assert np.all(np.abs(mc - elbo(vae, x)) < 5 * se)
  # Encoder = exact posterior of the ML decoder (linear mean, diagonal covariance): ELBO = log p(x).
  ml = ppca.ppca_ml(ppca_data, cd.Z_DIM)
  s2 = np.exp(2 * float(ml.log_scale))
  w = np.asarray(ml.w)
  m = np.eye(cd.Z_DIM) + w.T @ w / s2
  v = w @ np.linalg.inv(m) / s2
  exact = linear_vae.LinearVAEParams(ml, jnp.asarray(v), jnp.asarray(-(np.asarray(ml.b) @ v)),
                            jnp.asarray(-0.5 * np.log(np.diag(m))))
  np.testing.assert_allclose(elbo(exact, x), cd.log_marginal(ml, x), rtol=1e-10)


def test_linear_vae_recovers_ppca_likelihood_and_subspace(vae_data):
  train, test = vae_data
  vae, trace = linear_vae.fit_linear_vae(jax.random.key(52), train, 3, num_steps=1000, learning_rate=0.1)
  ml = ppca.ppca_ml(train, 3)
  ll_vae = float(cd.log_marginal(vae.decoder, test).mean())
  ll_ppca = float(cd.log_marginal(ml, test).mean())
  assert abs(ll_vae - ll_ppca) < 0.1, (ll_vae, ll_ppca)
  assert float(jnp.max(ppca.subspace_angles(vae.decoder.w, ml.w))) < 0.02
  assert float(cd.linear_vae_elbo(vae, test).mean()) <= ll_vae
  assert float(jnp.mean(trace[-50:])) > float(jnp.mean(trace[:50]))


def test_linear_vae_collapses_the_dimensions_below_the_noise(vae_data):
  # Same z_dim and number of steps as above: the training loop is not compiled again.
  train, _ = vae_data
  ev = np.asarray(ppca.covariance_eigenvalues(train))
  s2 = float(0.5 * (ev[1] + ev[2]))
  vae, _ = linear_vae.fit_linear_vae(jax.random.key(53), train, 3, num_steps=1000, learning_rate=0.1,
                            noise_variance=s2)
  assert float(jnp.exp(2 * vae.decoder.log_scale)) == pytest.approx(s2, rel=1e-6)
  # Singular values of W (invariant to the rotation R of its columns): sqrt(lambda_j - s^2)_+.
  sv = np.linalg.svd(np.asarray(vae.decoder.w), compute_uv=False)
  np.testing.assert_allclose(sv[:2], np.sqrt(ev[:2] - s2), rtol=0.02)
  assert sv[2] < 0.05
  loc, log_scale = MODEL.encode(vae, train)
  kl = np.asarray(jnp.mean(D.kl_normal_standard_normal(loc, log_scale, event_ndims=0), axis=0))
  assert np.sum(kl > 0.1) == 2 and np.sum(kl < 0.01) == 1


@pytest.mark.parametrize("call,match", [
    (lambda: linear_vae.linear_vae_init(jax.random.key(0), 0, 2), "x_dim must be an int >= 1"),
    (lambda: linear_vae.linear_vae_init(jax.random.key(0), 5, 2.5), "z_dim must be an int"),
    (lambda: linear_vae.linear_vae_init(jax.random.key(0), 5, 2, noise_scale=-1.0), "noise_scale"),
    (lambda: linear_vae.fit_linear_vae(jax.random.key(0), np.ones((8, 3)), 0),
     "z_dim must be an int >= 1"),
    (lambda: linear_vae.fit_linear_vae(jax.random.key(0), np.ones((8, 3)), 2, num_steps=0),
     "num_steps must be an int >= 1"),
    (lambda: linear_vae.fit_linear_vae(jax.random.key(0), np.ones((8, 3)), 2, learning_rate=-1.0),
     "learning_rate must be a finite number > 0"),
    (lambda: linear_vae.fit_linear_vae(jax.random.key(0), np.ones((8, 3)), 2, batch_size=0),
     "batch_size must be an int >= 1"),
    (lambda: lg.init(jax.random.key(0), 0, 2), "x_dim must be an int >= 1"),
    (lambda: lg.init(jax.random.key(0), 4, 2, noise_scale=-1.0), "noise_scale must be > 0"),
    (lambda: lg.sample(lg.init(jax.random.key(0), 4, 2), jax.random.key(1), 0),
     "num must be an int >= 1"),
], ids=["init_x_dim_zero", "init_z_dim_float", "init_noise_negative", "fit_z_dim_zero",
        "fit_steps_zero", "fit_rate_negative", "fit_batch_zero", "lg_x_dim_zero",
        "lg_noise_negative", "lg_sample_zero"])
def test_linear_model_settings_are_refused_naming_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
