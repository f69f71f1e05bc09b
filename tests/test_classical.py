"""Tests for dgmjax.models.classical against closed forms, scikit-learn and scipy.

Oracles: scikit-learn's GaussianMixture (log-density, responsibilities, EM from the same start) and
PCA (whose ``score`` is the PPCA maximum-likelihood log-likelihood), Tipping & Bishop's closed-form
PPCA, ``scipy.linalg.subspace_angles``, and the identity ``ELBO(q = p(z|x)) = log p(x)``.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
import scipy.stats as st
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from dgmjax import distributions as D
from dgmjax import objectives as O
from dgmjax.models import classical as C
from dgmjax.models import linear_gaussian as lg


@pytest.fixture(autouse=True)
def _fast_compiling_prng():
  """Non-partitionable threefry for this module's tests: identical statistics, but XLA compiles
  programs that draw random numbers about 5x faster on CPU (the partitionable default only
  matters for sharded arrays)."""
  with jax.threefry_partitionable(False):
    yield


# Every GMM EM test uses N = 200 points in 2-D, 3 components and max_iters = MAX_ITERS, so that the
# jitted EM loop compiles once for the whole file.
MAX_ITERS = 100

_log_marginal = jax.jit(lg.log_marginal)
_gmm_log_prob = jax.jit(C.gmm_log_prob)
_gmm_posterior = jax.jit(C.gmm_posterior)
_gmm_covariances = jax.jit(C.gmm_covariances)
_ppca_mean_ll = jax.jit(C.ppca_mean_log_likelihood)
_linear_vae_elbo = jax.jit(C.linear_vae_elbo)


def _lg_params(seed, x_dim, z_dim, noise_scale=1.0):
  """Random float64 linear-Gaussian parameters built in numpy (no per-op compilation)."""
  rng = np.random.default_rng(seed)
  return lg.Params(jnp.asarray(rng.normal(size=(x_dim, z_dim)) / math.sqrt(z_dim)),
                   jnp.asarray(rng.normal(size=(x_dim,))),
                   jnp.asarray(math.log(noise_scale)))


def _blobs(seed=0, n=(60, 90, 50)):
  """Three 2-D clusters, 200 points by default (float64 numpy)."""
  rng = np.random.default_rng(seed)
  return np.concatenate([
      rng.normal(size=(n[0], 2)) + [4.0, 0.0],
      0.5 * rng.normal(size=(n[1], 2)),
      rng.normal(size=(n[2], 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]]) + [0.0, 4.0],
  ])


def _random_gmm(rng, c, d):
  a = rng.normal(size=(c, d, d))
  cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
  return C.gmm_params(rng.normal(size=(c,)), 3.0 * rng.normal(size=(c, d)), cov), cov


# ----------------------------------------------------------------------------- Gaussian mixture


def test_gmm_densities_match_sklearn(x64):
  x = _blobs()
  gm = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
  params = C.gmm_params(np.log(gm.weights_), gm.means_, gm.covariances_)
  np.testing.assert_allclose(_gmm_log_prob(params, x), gm.score_samples(x), rtol=1e-10)
  np.testing.assert_allclose(np.exp(_gmm_posterior(params, x)), gm.predict_proba(x), atol=1e-10)
  # log p(x) = logsumexp_z log p(x, z), with log p(x, z) evaluated per component index.
  joint = jax.jit(jax.vmap(lambda c: C.gmm_log_joint(params, x, jnp.full((len(x),), c))))(
      jnp.arange(3))
  np.testing.assert_allclose(jax.nn.logsumexp(joint, 0), gm.score_samples(x), rtol=1e-10)
  np.testing.assert_allclose(_gmm_covariances(params), gm.covariances_, rtol=1e-10)


def test_gmm_em_matches_sklearn_from_the_same_start(x64):
  x = _blobs(1)
  init = C.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  res = C.gmm_em(init, x, max_iters=MAX_ITERS, tol=0.0, reg_covar=0.0)
  assert int(res.num_iters) == MAX_ITERS and not bool(res.converged)
  cov0 = np.asarray(_gmm_covariances(init))
  gm = GaussianMixture(3, covariance_type="full", reg_covar=0.0, max_iter=MAX_ITERS, tol=0.0,
                       weights_init=np.full(3, 1 / 3), means_init=np.asarray(init.means),
                       precisions_init=np.linalg.inv(cov0))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 on purpose
    gm.fit(x)
  np.testing.assert_allclose(res.params.means, gm.means_, atol=1e-8)
  np.testing.assert_allclose(_gmm_covariances(res.params), gm.covariances_, atol=1e-8)
  np.testing.assert_allclose(jax.nn.softmax(res.params.logits), gm.weights_, atol=1e-8)
  np.testing.assert_allclose(res.log_likelihood[-1], gm.score(x), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_em_never_decreases_the_log_likelihood(x64, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_t(df=3, size=(200, 2))  # no mixture structure: a hard case for EM
  init = C.gmm_init(jax.random.key(seed), x, 3, reg_covar=0.0)
  res = C.gmm_em(init, x, max_iters=MAX_ITERS, tol=0.0, reg_covar=0.0)
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.isfinite(ll))
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  assert ll[-1] > ll[0] + 0.05
  # Entry t is the log-likelihood at the parameters after t iterations.
  np.testing.assert_allclose(ll[-1], _gmm_log_prob(res.params, x).mean(), rtol=1e-12)


def test_gmm_em_stops_at_tolerance_and_pads_the_trace(x64):
  x = _blobs(2)
  init = C.gmm_init(jax.random.key(1), x, 3)
  res = C.gmm_em(init, x, max_iters=MAX_ITERS, tol=1e-8)
  n = int(res.num_iters)
  assert bool(res.converged) and 1 < n < MAX_ITERS
  ll = np.asarray(res.log_likelihood)
  assert abs(ll[n] - ll[n - 1]) <= 1e-8 and abs(ll[n - 1] - ll[n - 2]) > 1e-8
  np.testing.assert_array_equal(ll[n:], ll[n])
  # Jitted once: a second fit with the same shapes does not retrace.
  size = C._gmm_em._cache_size()
  C.gmm_em(C.gmm_init(jax.random.key(2), x, 3), x, max_iters=MAX_ITERS, tol=1e-8)
  assert C._gmm_em._cache_size() == size


def test_gmm_elbo_with_the_exact_posterior_equals_log_prob(x64):
  rng = np.random.default_rng(3)
  params, _ = _random_gmm(rng, 4, 3)
  x = rng.normal(size=(7, 3)) * 3.0

  @jax.jit
  def check(key, params):
    log_px = C.gmm_log_prob(params, x)
    post = C.gmm_posterior(params, x)
    exact = C.gmm_elbo(params, x, post)
    # Monte Carlo: every log-weight log p(x, z) - log q(z) with z ~ p(z|x) equals log p(x).
    z = jax.vmap(lambda k: D.sample_categorical(k, post))(jax.random.split(key, 16))
    log_w = C.gmm_log_joint(params, x, z) - D.categorical_log_prob(z, post)
    # Any other q is below, by KL(q || p(z|x)).
    q = jnp.zeros_like(post)
    other = C.gmm_elbo(params, x, q)
    kl = D.kl_categorical_categorical(q, post)
    return log_px, exact, log_w, other, kl

  log_px, exact, log_w, other, kl = check(jax.random.key(0), params)
  np.testing.assert_allclose(exact, log_px, rtol=1e-12)
  np.testing.assert_allclose(log_w, jnp.broadcast_to(log_px, log_w.shape), rtol=1e-12)
  np.testing.assert_allclose(O.elbo(log_w), log_px, rtol=1e-12)
  np.testing.assert_allclose(other, log_px - kl, rtol=1e-10)
  # q(z) = 0 on components with p(x, z) = 0 contributes 0, not NaN.
  dead = params._replace(logits=params.logits.at[0].set(-jnp.inf))
  assert np.all(np.isfinite(jax.jit(C.gmm_elbo)(dead, x, _gmm_posterior(dead, x))))


def test_gmm_sample_frequencies_and_moments(x64):
  rng = np.random.default_rng(4)
  params, cov = _random_gmm(rng, 3, 2)
  n = 6000
  x, z = jax.jit(C.gmm_sample, static_argnums=2)(params, jax.random.key(5), n)
  assert x.shape == (n, 2) and z.shape == (n,)
  counts = np.bincount(np.asarray(z), minlength=3)
  pi = np.asarray(jax.nn.softmax(params.logits))
  assert st.chisquare(counts, n * pi).pvalue > 1e-3
  for c in range(3):
    xc = np.asarray(x)[np.asarray(z) == c]
    se = np.sqrt(np.diag(cov[c]) / len(xc))
    assert np.all(np.abs(xc.mean(0) - np.asarray(params.means[c])) < 5 * se)
    np.testing.assert_allclose(np.cov(xc.T), cov[c], rtol=0.15, atol=0.15 * np.abs(cov[c]).max())


def test_gmm_bad_inputs_raise_clear_errors(x64):
  rng = np.random.default_rng(5)
  params, _ = _random_gmm(rng, 2, 2)
  x = rng.normal(size=(10, 2))
  bad = x.copy()
  bad[3, 1] = np.nan
  with pytest.raises(ValueError, match=r"x has non-finite .* 1 data point\(s\), "
                                       r"the first x\[3\]"):
    C.gmm_log_prob(params, bad)
  bad[3, 1] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    C.gmm_em(params, bad)
  with pytest.raises(ValueError, match="non-finite"):
    C.gmm_init(jax.random.key(0), bad, 2)
  singular = np.stack([np.eye(2), np.array([[1.0, 1.0], [1.0, 1.0]])])
  with pytest.raises(ValueError, match="positive definite|singular"):
    C.gmm_params(np.zeros(2), np.zeros((2, 2)), singular)
  with pytest.raises(ValueError, match="symmetric"):
    C.gmm_params(np.zeros(2), np.zeros((2, 2)), np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]))
  # A hand-made Cholesky factor with a zero on the diagonal.
  tril = np.stack([np.eye(2), np.diag([1.0, 0.0])])
  with pytest.raises(ValueError, match="singular"):
    C.gmm_log_prob(C.GMMParams(jnp.zeros(2), jnp.zeros((2, 2)), jnp.asarray(tril)), x)
  with pytest.raises(ValueError, match=r"\[C, D, D\]"):
    C.gmm_log_prob(params._replace(scale_tril=params.scale_tril[:, :1]), x)


def test_gmm_em_component_that_loses_its_points_is_kept_not_nan(x64):
  x = _blobs(6)
  init = C.gmm_init(jax.random.key(0), x, 3)
  far = np.asarray(init.means).copy()
  far[2] = [1e3, 1e3]  # no point will ever be responsible for this component
  init = init._replace(means=jnp.asarray(far))
  res = C.gmm_em(init, x, max_iters=MAX_ITERS, tol=0.0)
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
  x = np.concatenate([_blobs(7, n=(60, 90, 49)), [[40.0, -40.0]]])
  init = C.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  init = init._replace(means=init.means.at[2].set(jnp.array([40.0, -40.0])),
                       scale_tril=init.scale_tril.at[2].set(0.1 * jnp.eye(2)))
  res = C.gmm_em(init, x, max_iters=MAX_ITERS, tol=0.0, reg_covar=0.0)
  for leaf in jax.tree.leaves(res.params):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(res.params.scale_tril[2], 0.1 * np.eye(2))
  assert np.all(np.isfinite(res.log_likelihood))


# ----------------------------------------------------------------------------- PPCA

X_DIM, Z_DIM = 8, 3


def _ppca_draws(seed, n, x_dim, signal, noise, dtype=np.float64):
  """``n`` draws of ``x = W z + b + noise * eps`` with ``W``'s column norms ~ ``signal`` (numpy)."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(x_dim, len(signal))) / math.sqrt(len(signal)) * np.asarray(signal)[None]
  b = rng.normal(size=(x_dim,))
  z = rng.normal(size=(n, len(signal)))
  return (z @ w.T + b + noise * rng.normal(size=(n, x_dim))).astype(dtype)


@pytest.fixture(scope="module")
def ppca_data():
  """Data from a PPCA model with well-separated signal eigenvalues (float64 numpy)."""
  return _ppca_draws(10, 600, X_DIM, [3.0, 2.0, 1.5], 0.5)


def test_ppca_ml_matches_sklearn_pca_and_is_stationary(x64, ppca_data):
  x = ppca_data
  n = len(x)
  ml = C.ppca_ml(x, Z_DIM)
  pca = PCA(Z_DIM).fit(x)
  # scikit-learn's PPCA uses the unbiased (1 / (N - 1)) covariance; the ML uses 1 / N.
  unbias = (n - 1) / n
  np.testing.assert_allclose(math.exp(2 * float(ml.log_scale)), unbias * pca.noise_variance_,
                             rtol=1e-10)
  w, s2 = np.asarray(ml.w), math.exp(2 * float(ml.log_scale))
  np.testing.assert_allclose(w @ w.T + s2 * np.eye(X_DIM), unbias * pca.get_covariance(),
                             rtol=1e-10, atol=1e-12)
  mvn = st.multivariate_normal(x.mean(0), unbias * pca.get_covariance())
  np.testing.assert_allclose(_log_marginal(ml, x), mvn.logpdf(x), rtol=1e-10)
  assert float(jnp.max(C.subspace_angles(ml.w, pca.components_.T))) < 1e-7
  np.testing.assert_allclose(C.covariance_eigenvalues(x),
                             np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1],
                             rtol=1e-10, atol=1e-12)
  grads = jax.jit(jax.grad(lambda p: lg.log_marginal(p, x).mean()))(ml)
  for g in jax.tree.leaves(grads):
    np.testing.assert_allclose(g, 0.0, atol=1e-9)
  mean, cov = x.mean(0), np.cov(x.T, bias=True)
  np.testing.assert_allclose(_ppca_mean_ll(ml, mean, cov), mvn.logpdf(x).mean(),
                             rtol=1e-12)
  other = _lg_params(0, X_DIM, Z_DIM)
  np.testing.assert_allclose(_ppca_mean_ll(other, mean, cov),
                             _log_marginal(other, x).mean(), rtol=1e-12)


def test_ppca_em_is_monotone_and_converges_to_the_closed_form(x64, ppca_data):
  x = ppca_data
  init = _lg_params(12, X_DIM, Z_DIM)
  res = C.ppca_em(init, x, max_iters=3000, tol=1e-12)
  ll = np.asarray(res.log_likelihood)
  assert bool(res.converged)
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  ml = C.ppca_ml(x, Z_DIM)
  ll_ml = float(_log_marginal(ml, x).mean())
  assert abs(float(_log_marginal(res.params, x).mean()) - ll_ml) < 1e-4
  assert abs(ll[-1] - ll_ml) < 1e-4
  assert float(jnp.max(C.subspace_angles(res.params.w, ml.w))) < 1e-3
  np.testing.assert_allclose(res.params.log_scale, ml.log_scale, atol=1e-5)
  np.testing.assert_allclose(res.params.b, x.mean(0), atol=1e-12)


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
    lw_diag = C.gaussian_log_weights(lg.log_joint, ml, x, loc_ml, scale, k_diag, 32)
    return (lw_full, lg.log_marginal(params, x), O.elbo(lw_full), lw_diag, tril_ml,
            lg.log_marginal(ml, x))

  params = _lg_params(13, X_DIM, Z_DIM)  # not the ML: the posterior has a full covariance
  ml = C.ppca_ml(ppca_data, Z_DIM)
  lw, log_px, elbo, lw_diag, tril, log_px_ml = log_weights(jax.random.key(0), params, ml)
  assert not np.allclose(np.asarray(log_px), np.asarray(log_px_ml))  # two different models
  np.testing.assert_allclose(lw, np.broadcast_to(log_px, lw.shape), rtol=1e-10)
  np.testing.assert_allclose(elbo, log_px, rtol=1e-10)
  np.testing.assert_allclose(tril, np.asarray(tril) * np.eye(Z_DIM), atol=1e-12)
  np.testing.assert_allclose(lw_diag, np.broadcast_to(log_px_ml, lw_diag.shape), rtol=1e-10)


def test_ppca_fixed_noise_zeroes_the_columns_below_the_noise(x64, ppca_data):
  ev = np.asarray(C.covariance_eigenvalues(ppca_data))
  s2 = 0.5 * (ev[1] + ev[2])
  ml = C.ppca_ml(ppca_data, 4, noise_variance=s2)
  norms = np.linalg.norm(np.asarray(ml.w), axis=0)
  np.testing.assert_allclose(norms[:2], np.sqrt(ev[:2] - s2), rtol=1e-10)
  np.testing.assert_array_equal(norms[2:], 0.0)
  np.testing.assert_allclose(float(jnp.exp(2 * ml.log_scale)), s2, rtol=1e-12)


def test_ppca_bad_inputs_raise_clear_errors(x64, ppca_data):
  bad = ppca_data.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    C.ppca_ml(bad, 2)
  init = _lg_params(0, X_DIM, 2)
  with pytest.raises(ValueError, match="non-finite"):
    C.ppca_em(init, bad)
  flat = ppca_data[:, :2] @ np.ones((2, X_DIM))  # rank 2 data
  with pytest.raises(ValueError, match="singular"):
    C.ppca_ml(flat, 2)
  with pytest.raises(ValueError, match="singular"):
    C.ppca_em(init, flat)
  with pytest.raises(ValueError, match="z_dim"):
    C.ppca_ml(ppca_data, X_DIM)


def test_subspace_angles_match_scipy(x64):
  rng = np.random.default_rng(8)
  a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
  np.testing.assert_allclose(C.subspace_angles(a, b), scipy.linalg.subspace_angles(a, b),
                             rtol=1e-10)
  tiny = a + 1e-9 * rng.normal(size=a.shape)  # small angles: the arcsin branch
  np.testing.assert_allclose(C.subspace_angles(a, tiny), scipy.linalg.subspace_angles(a, tiny),
                             rtol=1e-5, atol=1e-15)


# ----------------------------------------------------------------------------- variational EM, gaps


def test_variational_em_on_ppca_reaches_the_ml_likelihood(x64, ppca_data):
  x = ppca_data[:200, :6]
  ml = C.ppca_ml(x, 2)
  init = _lg_params(20, 6, 2)._replace(b=jnp.asarray(x.mean(0)))
  res = C.variational_em(lg.log_joint, init, x, jax.random.key(21), z_dim=2, num_iters=600,
                         e_steps=2, m_steps=1, e_optimizer=optax.adam(5e-2),
                         m_optimizer=optax.adam(optax.cosine_decay_schedule(5e-2, 600, 0.01)))
  ll = float(_log_marginal(res.params, x).mean())
  ll_ml = float(_log_marginal(ml, x).mean())
  ll_init = float(_log_marginal(init, x).mean())
  assert ll_ml - ll < 0.03 < ll - ll_init
  # The ELBO is a lower bound on the (exact) log-likelihood.
  assert float(res.elbo[-1]) < ll + 0.05
  assert float(jnp.max(C.subspace_angles(res.params.w, ml.w))) < 0.1


W_CORRELATED = ((1.0, 0.8), (0.5, 1.0), (0.0, 0.3), (1.0, 0.0), (0.2, 0.2), (0.0, 1.0))
S2_CORRELATED = 0.25


ENCODER_SHIFT, ENCODER_SCALE = 0.3, 0.4


def _shifted_posterior_encoder(params, x):
  """A deliberately poor encoder: the exact posterior mean shifted, a fixed scale."""
  loc, _ = lg.posterior(params, x)
  return loc + ENCODER_SHIFT, jnp.full_like(loc, math.log(ENCODER_SCALE))


def test_amortization_gaps_match_closed_forms(x64):
  # PPCA with non-orthogonal W: the posterior is not diagonal, so the approximation gap is > 0.
  w = jnp.asarray(W_CORRELATED)
  params = lg.Params(w, jnp.zeros(6), jnp.asarray(0.5 * math.log(S2_CORRELATED)))
  x = jnp.asarray(_ppca_draws(30, 8, 6, [1.0, 1.0], 0.5))
  log_px = _log_marginal(params, x)
  opt = optax.adam(optax.cosine_decay_schedule(3e-2, 600, 0.01))
  gaps = C.amortization_gaps(lg.log_joint, _shifted_posterior_encoder, params, x,
                             jax.random.key(31), num_steps=600, num_samples=4,
                             num_elbo_samples=2000, num_iwae_samples=1000, chunk_size=500,
                             optimizer=opt)
  # The best mean-field Gaussian for the posterior N(m, M^{-1}) has precisions diag(M):
  # KL = (sum_j log M_jj - log det M) / 2, the same for every x.
  m = np.eye(2) + np.asarray(w).T @ np.asarray(w) / S2_CORRELATED
  approx = 0.5 * (np.sum(np.log(np.diag(m))) - np.linalg.slogdet(m)[1])
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
  # The same encoder written as a linear VAE: the closed-form gaps equal the formulas above.
  v = np.asarray(w) @ np.linalg.inv(m) / S2_CORRELATED
  vae = C.LinearVAEParams(params, jnp.asarray(v), jnp.full((2,), ENCODER_SHIFT),
                          jnp.full((2,), math.log(ENCODER_SCALE)))
  exact = C.linear_vae_exact_gaps(vae, x)
  np.testing.assert_allclose(exact.log_px, log_px, rtol=1e-12)
  np.testing.assert_allclose(exact.approximation_gap, np.full(8, approx), rtol=1e-10)
  np.testing.assert_allclose(exact.inference_gap, np.full(8, kl_e), rtol=1e-10)
  np.testing.assert_allclose(exact.amortization_gap, np.full(8, kl_e - approx), rtol=1e-10)
  np.testing.assert_allclose(exact.elbo_amortized, _linear_vae_elbo(vae, x), rtol=1e-10)


# ----------------------------------------------------------------------------- linear VAE


def test_linear_vae_analytic_elbo_matches_monte_carlo_and_exact_posterior(x64, ppca_data):
  x = ppca_data[:6]
  rng = np.random.default_rng(40)
  vae = C.LinearVAEParams(_lg_params(41, X_DIM, Z_DIM, 0.7),
                          jnp.asarray(rng.normal(size=(X_DIM, Z_DIM))),
                          jnp.asarray(rng.normal(size=(Z_DIM,))), jnp.array([-0.5, 0.1, 0.3]))
  lw = jax.jit(C.linear_vae_log_weights, static_argnums=3)(vae, x, jax.random.key(41), 20000)
  mc = O.elbo(lw)
  se = jnp.std(lw, axis=0) / math.sqrt(20000)
  elbo = _linear_vae_elbo
  assert np.all(np.abs(mc - elbo(vae, x)) < 5 * se)
  # Encoder = exact posterior of the ML decoder (linear mean, diagonal covariance): ELBO = log p(x).
  ml = C.ppca_ml(ppca_data, Z_DIM)
  s2 = np.exp(2 * float(ml.log_scale))
  w = np.asarray(ml.w)
  m = np.eye(Z_DIM) + w.T @ w / s2
  v = w @ np.linalg.inv(m) / s2
  exact = C.LinearVAEParams(ml, jnp.asarray(v), jnp.asarray(-(np.asarray(ml.b) @ v)),
                            jnp.asarray(-0.5 * np.log(np.diag(m))))
  np.testing.assert_allclose(elbo(exact, x), _log_marginal(ml, x), rtol=1e-10)


@pytest.fixture(scope="module")
def vae_data():
  """Train / held-out float32 data from a 12-D PPCA with 3 strong directions."""
  x = _ppca_draws(50, 3000, 12, [3.0, 2.0, 1.5], 0.5, np.float32)
  return x[:2000], x[2000:]


def test_linear_vae_recovers_ppca_likelihood_and_subspace(vae_data):
  train, test = vae_data
  vae, trace = C.fit_linear_vae(jax.random.key(52), train, 3, num_steps=1000, learning_rate=0.1)
  ml = C.ppca_ml(train, 3)
  ll_vae = float(_log_marginal(vae.decoder, test).mean())
  ll_ppca = float(_log_marginal(ml, test).mean())
  assert abs(ll_vae - ll_ppca) < 0.1, (ll_vae, ll_ppca)
  assert float(jnp.max(C.subspace_angles(vae.decoder.w, ml.w))) < 0.02
  assert float(_linear_vae_elbo(vae, test).mean()) <= ll_vae
  assert float(jnp.mean(trace[-50:])) > float(jnp.mean(trace[:50]))


def test_linear_vae_collapses_the_dimensions_below_the_noise(vae_data):
  # Same z_dim and number of steps as above: the training loop is not compiled again.
  train, _ = vae_data
  ev = np.asarray(C.covariance_eigenvalues(train))
  s2 = float(0.5 * (ev[1] + ev[2]))
  vae, _ = C.fit_linear_vae(jax.random.key(53), train, 3, num_steps=1000, learning_rate=0.1,
                            noise_variance=s2)
  assert float(jnp.exp(2 * vae.decoder.log_scale)) == pytest.approx(s2, rel=1e-6)
  # Singular values of W (invariant to the rotation R of its columns): sqrt(lambda_j - s^2)_+.
  sv = np.linalg.svd(np.asarray(vae.decoder.w), compute_uv=False)
  np.testing.assert_allclose(sv[:2], np.sqrt(ev[:2] - s2), rtol=0.02)
  assert sv[2] < 0.05
  loc, log_scale = C.linear_vae_encode(vae, train)
  kl = np.asarray(jnp.mean(D.kl_normal_standard_normal(loc, log_scale, event_ndims=0), axis=0))
  assert np.sum(kl > 0.1) == 2 and np.sum(kl < 0.01) == 1
