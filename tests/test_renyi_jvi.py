"""The variational Rényi bounds and jackknife variational inference (JVI) as log-weight reductions.

Oracles: brute-force subset averages for the jackknife, the closed-form log p(x) of a Gaussian
model for the bias of JVI vs IWAE, the limits and monotonicity of L_alpha, finite differences in
float64 for its gradient."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from dgmjax import objectives


def _lw(k=6, b=3, seed=0, scale=2.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(k, b)) * scale, jnp.float32)


def _subset_mean(lw, size):
  lw = np.asarray(lw, np.float64)
  k = lw.shape[0]
  vals = [logsumexp(lw[list(s)], axis=0) - math.log(size)
          for s in itertools.combinations(range(k), size)]
  return np.mean(vals, axis=0)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_jackknife_equals_the_brute_force_subset_combination(order):
  lw = _lw(7)
  k = 7
  want = sum((-1) ** j * (k - j) ** order / (math.factorial(order - j) * math.factorial(j))
             * _subset_mean(lw, k - j) for j in range(order + 1))
  np.testing.assert_allclose(objectives.jackknife_bound(lw, order), want, rtol=1e-4, atol=1e-4)


def test_jackknife_leave_one_out_is_exact_when_one_weight_dominates():
  lw = jnp.asarray([[0.0], [-60.0], [-61.0], [-62.0]], jnp.float32)
  want = 4 * _subset_mean(lw, 4) - 3 * _subset_mean(lw, 3)
  np.testing.assert_allclose(objectives.jackknife_bound(lw, 1), want, rtol=1e-5)


def test_jackknife_is_less_biased_than_iwae_at_equal_k():
  # z ~ N(0,1), x|z ~ N(z,1), q(z|x) = N(0.3 x, 1.2^2): log p(x) = log N(x; 0, 2) exactly.
  x, k, reps = 1.5, 8, 20000
  key = jax.random.key(0)
  z = 0.3 * x + 1.2 * jax.random.normal(key, (k, reps))
  norm = lambda v, m, s: -0.5 * ((v - m) / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
  lw = norm(z, 0.0, 1.0) + norm(x, z, 1.0) - norm(z, 0.3 * x, 1.2)
  exact = float(norm(x, 0.0, math.sqrt(2.0)))
  errs = {}
  for name, est in (("iwae", objectives.iwae_bound(lw)),
                    ("jvi1", objectives.jackknife_bound(lw, 1)),
                    ("jvi2", objectives.jackknife_bound(lw, 2))):
    e = np.asarray(est, np.float64) - exact
    errs[name] = (abs(e.mean()), e.std(ddof=1) / math.sqrt(reps))
  # IWAE's bias is clearly resolved and negative; each jackknife is smaller beyond 3 SE.
  assert errs["iwae"][0] > 5 * errs["iwae"][1]
  for name in ("jvi1", "jvi2"):
    se = math.hypot(errs[name][1], errs["iwae"][1])
    assert errs["iwae"][0] - errs[name][0] > 3 * se, (name, errs)


def test_jackknife_rejects_bad_orders():
  with pytest.raises(ValueError, match="order must be 0, 1 or 2"):
    objectives.jackknife_bound(_lw(), 3)
  with pytest.raises(ValueError, match="K > 2"):
    objectives.jackknife_bound(_lw(2), 2)


def test_renyi_limits_and_monotonicity():
  lw = _lw(10)
  np.testing.assert_allclose(objectives.renyi_bound(lw, 0.0), objectives.iwae_bound(lw),
                             rtol=1e-6)
  np.testing.assert_allclose(objectives.renyi_bound(lw, 1.0), objectives.elbo(lw), rtol=1e-6)
  with jax.enable_x64(True):                            # the limit alpha -> 1, in float64
    lw64 = jnp.asarray(lw, jnp.float64)
    np.testing.assert_allclose(objectives.renyi_bound(lw64, 1.0 - 1e-7), objectives.elbo(lw64),
                               rtol=1e-5)
  np.testing.assert_allclose(objectives.renyi_bound(lw, -np.inf), jnp.max(lw, 0))
  np.testing.assert_allclose(objectives.renyi_bound(lw, -200.0), jnp.max(lw, 0), rtol=1e-2)
  alphas = [-np.inf, -5.0, -1.0, -0.5, 0.0, 0.3, 0.9, 1.0, 1.5, 3.0]
  vals = np.stack([np.asarray(objectives.renyi_bound(lw, a)) for a in alphas])
  assert np.all(np.diff(vals, axis=0) <= 1e-5), vals            # non-increasing in alpha
  with pytest.raises(ValueError, match="alpha"):
    objectives.renyi_bound(lw, float("nan"))
  assert np.all(np.isnan(jax.jit(objectives.renyi_bound)(lw, jnp.nan)))


@pytest.mark.parametrize("alpha", [-2.0, 0.0, 0.5, 2.0])
def test_renyi_gradient_matches_finite_differences_in_float64(alpha):
  with jax.enable_x64(True):
    lw = jnp.asarray(np.random.default_rng(1).normal(size=(5, 2)), jnp.float64)
    f = lambda v: jnp.sum(objectives.renyi_bound(v, alpha))
    g = np.asarray(jax.grad(f)(lw))
    eps, fd = 1e-6, np.zeros_like(g)
    for idx in np.ndindex(*lw.shape):
      d = np.zeros(lw.shape)
      d[idx] = eps
      fd[idx] = (f(lw + d) - f(lw - d)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g, objectives.renyi_weights(lw, alpha), rtol=1e-10)
