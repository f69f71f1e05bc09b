"""Tests of dgmjax.inference.em: EM for the Gaussian mixture against scikit-learn from the same
start, and for PPCA against the closed-form maximum-likelihood solution."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from dgmjax.inference import em
from dgmjax.models import gmm
from dgmjax.models import ppca
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import
from tests.classical_data import ppca_data_fixture  # pylint: disable=unused-import


def test_gmm_em_matches_sklearn_from_the_same_start(x64):
  x = cd.blobs(1)
  init = gmm.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  res = em.gmm_em(init, x, max_iters=cd.MAX_ITERS, tol=0.0, reg_covar=0.0)
  t = int(res.num_iters)
  # tol=0: it runs every iteration unless the log-likelihood stops changing exactly (a fixed
  # point, where scikit-learn's further iterations change nothing either)
  assert t == cd.MAX_ITERS or (bool(res.converged)
                               and res.log_likelihood[t] == res.log_likelihood[t - 1])
  cov0 = np.asarray(cd.gmm_covariances(init))
  gm = GaussianMixture(3, covariance_type="full", reg_covar=0.0, max_iter=cd.MAX_ITERS, tol=0.0,
                       weights_init=np.full(3, 1 / 3), means_init=np.asarray(init.means),
                       precisions_init=np.linalg.inv(cov0))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 on purpose
    gm.fit(x)
  np.testing.assert_allclose(res.params.means, gm.means_, atol=1e-8)
  np.testing.assert_allclose(cd.gmm_covariances(res.params), gm.covariances_, atol=1e-8)
  np.testing.assert_allclose(jax.nn.softmax(res.params.logits), gm.weights_, atol=1e-8)
  np.testing.assert_allclose(res.log_likelihood[-1], gm.score(x), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_em_never_decreases_the_log_likelihood(x64, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_t(df=3, size=(200, 2))  # no mixture structure: a hard case for EM
  init = gmm.gmm_init(jax.random.key(seed), x, 3, reg_covar=0.0)
  res = em.gmm_em(init, x, max_iters=cd.MAX_ITERS, tol=0.0, reg_covar=0.0)
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.isfinite(ll))
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  assert ll[-1] > ll[0] + 0.05
  # Entry t is the log-likelihood at the parameters after t iterations.
  np.testing.assert_allclose(ll[-1], cd.gmm_log_prob(res.params, x).mean(), rtol=1e-12)


def test_gmm_em_stops_at_tolerance_and_pads_the_trace(x64):
  x = cd.blobs(2)
  init = gmm.gmm_init(jax.random.key(1), x, 3)
  res = em.gmm_em(init, x, max_iters=cd.MAX_ITERS, tol=1e-8)
  n = int(res.num_iters)
  assert bool(res.converged) and 1 < n < cd.MAX_ITERS
  ll = np.asarray(res.log_likelihood)
  assert abs(ll[n] - ll[n - 1]) <= 1e-8 and abs(ll[n - 1] - ll[n - 2]) > 1e-8
  np.testing.assert_array_equal(ll[n:], ll[n])
  # Jitted once: a second fit with the same shapes does not retrace.
  size = em._gmm_em._cache_size()
  em.gmm_em(gmm.gmm_init(jax.random.key(2), x, 3), x, max_iters=cd.MAX_ITERS, tol=1e-8)
  assert em._gmm_em._cache_size() == size


def test_gmm_em_component_that_loses_its_points_is_kept_not_nan(x64):
  x = cd.blobs(6)
  init = gmm.gmm_init(jax.random.key(0), x, 3)
  far = np.asarray(init.means).copy()
  far[2] = [1e3, 1e3]  # no point will ever be responsible for this component
  init = init._replace(means=jnp.asarray(far))
  res = em.gmm_em(init, x, max_iters=cd.MAX_ITERS, tol=0.0)
  for leaf in jax.tree.leaves(res.params):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(res.params.means[2], far[2])
  np.testing.assert_array_equal(res.params.scale_tril[2], init.scale_tril[2])
  assert float(jax.nn.softmax(res.params.logits)[2]) < 1e-30
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.isfinite(ll)) and np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:]))


def test_gmm_em_component_collapsing_onto_one_point_is_kept_not_nan(x64):
  # An isolated point and a component centred on it with reg_covar = 0: the ML covariance of
  # that component would be the zero matrix; the policy keeps its previous covariance.
  x = np.concatenate([cd.blobs(7, n=(60, 90, 49)), [[40.0, -40.0]]])
  init = gmm.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  init = init._replace(means=init.means.at[2].set(jnp.array([40.0, -40.0])),
                       scale_tril=init.scale_tril.at[2].set(0.1 * jnp.eye(2)))
  res = em.gmm_em(init, x, max_iters=cd.MAX_ITERS, tol=0.0, reg_covar=0.0)
  for leaf in jax.tree.leaves(res.params):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(res.params.scale_tril[2], 0.1 * np.eye(2))
  assert np.all(np.isfinite(res.log_likelihood))


def test_ppca_em_is_monotone_and_converges_to_the_closed_form(x64, ppca_data):
  x = ppca_data
  init = cd.lg_params(12, cd.X_DIM, cd.Z_DIM)
  res = em.ppca_em(init, x, max_iters=3000, tol=1e-12)
  ll = np.asarray(res.log_likelihood)
  assert bool(res.converged)
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  ml = ppca.ppca_ml(x, cd.Z_DIM)
  ll_ml = float(cd.log_marginal(ml, x).mean())
  assert abs(float(cd.log_marginal(res.params, x).mean()) - ll_ml) < 1e-4
  assert abs(ll[-1] - ll_ml) < 1e-4
  assert float(jnp.max(ppca.subspace_angles(res.params.w, ml.w))) < 1e-3
  np.testing.assert_allclose(res.params.log_scale, ml.log_scale, atol=1e-5)
  np.testing.assert_allclose(res.params.b, x.mean(0), atol=1e-12)
