"""Tests of dgmjax.inference.gaps: the amortization gaps of a linear VAE against their closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax import models
from dgmjax.inference import gaps as gaps_lib
from dgmjax.models import linear_gaussian as lg
from dgmjax.models import linear_vae
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import


W_CORRELATED = ((1.0, 0.8), (0.5, 1.0), (0.0, 0.3), (1.0, 0.0), (0.2, 0.2), (0.0, 1.0))
S2_CORRELATED = 0.25
ENCODER_SHIFT, ENCODER_SCALE = 0.3, 0.4


def test_amortization_gaps_match_closed_forms(x64):
  # PPCA with non-orthogonal W: the posterior is not diagonal, so the approximation gap is > 0.
  w = jnp.asarray(W_CORRELATED)
  params = lg.Params(w, jnp.zeros(6), jnp.asarray(0.5 * math.log(S2_CORRELATED)))
  x = jnp.asarray(cd.ppca_draws(30, 8, 6, [1.0, 1.0], 0.5))
  log_px = cd.log_marginal(params, x)
  # The best mean-field Gaussian for the posterior N(m, M^{-1}) has precisions diag(M):
  # KL = (sum_j log M_jj - log det M) / 2, the same for every x.
  m = np.eye(2) + np.asarray(w).T @ np.asarray(w) / S2_CORRELATED
  approx = 0.5 * (np.sum(np.log(np.diag(m))) - np.linalg.slogdet(m)[1])
  # A deliberately poor linear encoder: the exact posterior mean x W M^{-1} / s^2 (b = 0) shifted
  # by ENCODER_SHIFT, a fixed scale ENCODER_SCALE.
  v = np.asarray(w) @ np.linalg.inv(m) / S2_CORRELATED
  vae = linear_vae.LinearVAEParams(params, jnp.asarray(v), jnp.full((2,), ENCODER_SHIFT),
                                   jnp.full((2,), math.log(ENCODER_SCALE)))
  opt = optax.adam(optax.cosine_decay_schedule(3e-2, 600, 0.01))
  gaps = gaps_lib.amortization_gaps(linear_vae.LinearVAE(), vae, x, jax.random.key(31),
                                    num_steps=600, num_samples=4, num_elbo_samples=2000,
                                    num_iwae_samples=1000, chunk_size=500, optimizer=opt)
  # KL(N(m + d, s^2 I) || N(m, M^{-1})) = (s^2 tr M + d^T M d - 2 - log det M - 4 log s) / 2.
  d = np.full(2, ENCODER_SHIFT)
  s2 = ENCODER_SCALE ** 2
  kl_e = 0.5 * (s2 * np.trace(m) + d @ m @ d - 2 - np.linalg.slogdet(m)[1] - 2 * np.log(s2))
  assert abs(float(jnp.mean(gaps.log_px - log_px))) < 0.02
  assert float(jnp.max(jnp.abs(gaps.log_px - log_px))) < 0.08
  np.testing.assert_allclose(jnp.mean(gaps.approximation_gap), approx, atol=0.03)
  # Monte Carlo tolerances: about 4 standard errors of the 2000-sample ELBO averaged over 8 points.
  np.testing.assert_allclose(jnp.mean(gaps.inference_gap), kl_e, atol=0.1)
  np.testing.assert_allclose(jnp.mean(gaps.amortization_gap), kl_e - approx, atol=0.1)
  np.testing.assert_allclose(gaps.inference_gap, gaps.approximation_gap + gaps.amortization_gap,
                             rtol=1e-10)
  np.testing.assert_allclose(gaps.elbo_amortized, gaps.log_px - gaps.inference_gap, rtol=1e-12)
  assert np.all(np.asarray(gaps.amortization_gap) > 0)
  # The closed-form gaps of the same linear VAE equal the formulas above.
  exact = gaps_lib.linear_vae_exact_gaps(vae, x)
  np.testing.assert_allclose(exact.log_px, log_px, rtol=1e-12)
  np.testing.assert_allclose(exact.approximation_gap, np.full(8, approx), rtol=1e-10)
  np.testing.assert_allclose(exact.inference_gap, np.full(8, kl_e), rtol=1e-10)
  np.testing.assert_allclose(exact.amortization_gap, np.full(8, kl_e - approx), rtol=1e-10)
  np.testing.assert_allclose(exact.elbo_amortized, cd.linear_vae_elbo(vae, x), rtol=1e-10)


def test_amortization_gaps_need_a_model_with_encode():
  model = models.from_functions(sample_q=lambda p, x, k: x, log_q=lambda p, x, z: z[:, 0],
                                log_prior=lambda p, z: z[:, 0],
                                log_likelihood=lambda p, x, z: z[:, 0])
  with pytest.raises(TypeError, match=r"amortization_gaps needs the model to provide encode"):
    gaps_lib.amortization_gaps(model, {}, jnp.zeros((2, 3)), jax.random.key(0))
