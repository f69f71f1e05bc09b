"""Data, parameters and set-up shared by the tests of the classical models and their inference
(tests/test_gmm.py, test_ppca.py, test_linear_vae.py, test_inference_em.py, test_inference_local.py,
test_inference_gaps.py): numpy draws, so that building them compiles nothing; the jitted
closed forms those tests compare against (one compiled program each for all of them); and two
fixtures, which a test module registers by importing them::

  from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.models import gmm
from dgmjax.models import linear_gaussian as lg
from dgmjax.models import linear_vae

# Every GMM EM test uses N = 200 points in 2-D, 3 components and max_iters = MAX_ITERS, so that the
# jitted EM loop compiles once for the whole suite.
MAX_ITERS = 100

X_DIM, Z_DIM = 8, 3


def lg_params(seed, x_dim, z_dim, noise_scale=1.0):
  """Random float64 linear-Gaussian parameters built in numpy (no per-op compilation)."""
  rng = np.random.default_rng(seed)
  return lg.Params(jnp.asarray(rng.normal(size=(x_dim, z_dim)) / math.sqrt(z_dim)),
                   jnp.asarray(rng.normal(size=(x_dim,))),
                   jnp.asarray(math.log(noise_scale)))


def blobs(seed=0, n=(60, 90, 50)):
  """Three 2-D clusters, 200 points by default (float64 numpy)."""
  rng = np.random.default_rng(seed)
  return np.concatenate([
      rng.normal(size=(n[0], 2)) + [4.0, 0.0],
      0.5 * rng.normal(size=(n[1], 2)),
      rng.normal(size=(n[2], 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]]) + [0.0, 4.0],
  ])


def ppca_draws(seed, n, x_dim, signal, noise, dtype=np.float64):
  """``n`` draws of ``x = W z + b + noise * eps`` with ``W``'s column norms ~ ``signal`` (numpy)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(x_dim, len(signal))) / math.sqrt(len(signal)) * np.asarray(signal)[None]
  b = rng.normal(size=(x_dim,))
  z = rng.normal(size=(n, len(signal)))
  return (z @ w.T + b + noise * rng.normal(size=(n, x_dim))).astype(dtype)


@pytest.fixture(scope="module", name="ppca_data")
def ppca_data_fixture():
  """Data from a PPCA model with well-separated signal eigenvalues (float64 numpy)."""
  return ppca_draws(10, 600, X_DIM, [3.0, 2.0, 1.5], 0.5)


@pytest.fixture(autouse=True)
def fast_compiling_prng():
  """Non-partitionable threefry for the importing module's tests: identical statistics, but XLA
  compiles programs that draw random numbers about 5x faster on CPU (the partitionable default
  only matters for sharded arrays)."""
  with jax.threefry_partitionable(False):
    yield


log_marginal = jax.jit(lg.log_marginal)
linear_vae_elbo = jax.jit(linear_vae.linear_vae_elbo)
gmm_log_prob = jax.jit(gmm.gmm_log_prob)
gmm_covariances = jax.jit(gmm.gmm_covariances)
