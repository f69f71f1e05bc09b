"""Tests of dgmjax.models.ppca: Tipping & Bishop's closed-form PPCA against scikit-learn's PCA
(whose ``score`` is the PPCA maximum-likelihood log-likelihood) and ``scipy.linalg.subspace_angles``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats as st
from sklearn.decomposition import PCA

from dgmjax.inference import em
from dgmjax.models import linear_gaussian as lg
from dgmjax.models import ppca
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import
from tests.classical_data import ppca_data_fixture  # pylint: disable=unused-import


_ppca_mean_ll = jax.jit(ppca.ppca_mean_log_likelihood)


def test_ppca_ml_matches_sklearn_pca_and_is_stationary(x64, ppca_data):
  x = ppca_data
  n = len(x)
  ml = ppca.ppca_ml(x, cd.Z_DIM)
  pca = PCA(cd.Z_DIM).fit(x)
  # scikit-learn's PPCA uses the unbiased (1 / (N - 1)) covariance; the ML uses 1 / N.
  unbias = (n - 1) / n
  np.testing.assert_allclose(math.exp(2 * float(ml.log_scale)), unbias * pca.noise_variance_,
                             rtol=1e-10)
  w, s2 = np.asarray(ml.w), math.exp(2 * float(ml.log_scale))
  np.testing.assert_allclose(w @ w.T + s2 * np.eye(cd.X_DIM), unbias * pca.get_covariance(),
                             rtol=1e-10, atol=1e-12)
  mvn = st.multivariate_normal(x.mean(0), unbias * pca.get_covariance())
  np.testing.assert_allclose(cd.log_marginal(ml, x), mvn.logpdf(x), rtol=1e-10)
  assert float(jnp.max(ppca.subspace_angles(ml.w, pca.components_.T))) < 1e-7
  np.testing.assert_allclose(ppca.covariance_eigenvalues(x),
                             np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1],
                             rtol=1e-10, atol=1e-12)
  grads = jax.jit(jax.grad(lambda p: lg.log_marginal(p, x).mean()))(ml)
  for g in jax.tree.leaves(grads):
    np.testing.assert_allclose(g, 0.0, atol=1e-9)
  mean, cov = x.mean(0), np.cov(x.T, bias=True)
  np.testing.assert_allclose(_ppca_mean_ll(ml, mean, cov), mvn.logpdf(x).mean(),
                             rtol=1e-12)
  other = cd.lg_params(0, cd.X_DIM, cd.Z_DIM)
  np.testing.assert_allclose(_ppca_mean_ll(other, mean, cov),
                             cd.log_marginal(other, x).mean(), rtol=1e-12)


def test_ppca_fixed_noise_zeroes_the_columns_below_the_noise(x64, ppca_data):
  ev = np.asarray(ppca.covariance_eigenvalues(ppca_data))
  s2 = 0.5 * (ev[1] + ev[2])
  ml = ppca.ppca_ml(ppca_data, 4, noise_variance=s2)
  norms = np.linalg.norm(np.asarray(ml.w), axis=0)
  np.testing.assert_allclose(norms[:2], np.sqrt(ev[:2] - s2), rtol=1e-10)
  np.testing.assert_array_equal(norms[2:], 0.0)
  np.testing.assert_allclose(float(jnp.exp(2 * ml.log_scale)), s2, rtol=1e-12)


def test_ppca_bad_inputs_raise_clear_errors(x64, ppca_data):
  bad = ppca_data.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    ppca.ppca_ml(bad, 2)
  init = cd.lg_params(0, cd.X_DIM, 2)
  with pytest.raises(ValueError, match="non-finite"):
    em.ppca_em(init, bad)
  flat = ppca_data[:, :2] @ np.ones((2, cd.X_DIM))  # rank 2 data
  with pytest.raises(ValueError, match="singular"):
    ppca.ppca_ml(flat, 2)
  with pytest.raises(ValueError, match="singular"):
    em.ppca_em(init, flat)
  with pytest.raises(ValueError, match="z_dim"):
    ppca.ppca_ml(ppca_data, cd.X_DIM)


def test_subspace_angles_match_scipy(x64):
  rng = np.random.default_rng(8)
  a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
  np.testing.assert_allclose(ppca.subspace_angles(a, b), scipy.linalg.subspace_angles(a, b),
                             rtol=1e-10)
  tiny = a + 1e-9 * rng.normal(size=a.shape)  # small angles: the arcsin branch
  np.testing.assert_allclose(ppca.subspace_angles(a, tiny), scipy.linalg.subspace_angles(a, tiny),
                             rtol=1e-5, atol=1e-15)
