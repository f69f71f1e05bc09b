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


def _blobs(seed=0, n=(60, 90, 50)):
  """Three 2-D clusters (float64 numpy)."""
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
  np.testing.assert_allclose(jax.jit(C.gmm_log_prob)(params, x), gm.score_samples(x),
                             rtol=1e-10)
  np.testing.assert_allclose(np.exp(C.gmm_posterior(params, x)), gm.predict_proba(x), atol=1e-10)
  # log p(x) = logsumexp_z log p(x, z), with log p(x, z) evaluated per component index.
  joint = jnp.stack([C.gmm_log_joint(params, x, jnp.full((len(x),), c)) for c in range(3)], -1)
  np.testing.assert_allclose(jax.nn.logsumexp(joint, -1), gm.score_samples(x), rtol=1e-10)
  np.testing.assert_allclose(C.gmm_covariances(params), gm.covariances_, rtol=1e-10)


def test_gmm_em_matches_sklearn_from_the_same_start(x64):
  x = _blobs(1)
  init = C.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  res = C.gmm_em(init, x, max_iters=15, tol=0.0, reg_covar=0.0)
  assert int(res.num_iters) == 15 and not bool(res.converged)
  cov0 = np.asarray(C.gmm_covariances(init))
  gm = GaussianMixture(3, covariance_type="full", reg_covar=0.0, max_iter=15, tol=0.0,
                       weights_init=np.full(3, 1 / 3), means_init=np.asarray(init.means),
                       precisions_init=np.linalg.inv(cov0))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 on purpose
    gm.fit(x)
  np.testing.assert_allclose(res.params.means, gm.means_, atol=1e-8)
  np.testing.assert_allclose(C.gmm_covariances(res.params), gm.covariances_, atol=1e-8)
  np.testing.assert_allclose(jax.nn.softmax(res.params.logits), gm.weights_, atol=1e-8)
  np.testing.assert_allclose(res.log_likelihood[-1], gm.score(x), rtol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_em_never_decreases_the_log_likelihood(x64, seed):
  rng = np.random.default_rng(seed)
  x = rng.standard_t(df=3, size=(150, 3))  # no mixture structure: a hard case for EM
  init = C.gmm_init(jax.random.key(seed), x, 4, reg_covar=0.0)
  res = C.gmm_em(init, x, max_iters=60, tol=0.0, reg_covar=0.0)
  ll = np.asarray(res.log_likelihood)
  assert np.all(np.isfinite(ll))
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  assert ll[-1] > ll[0] + 0.05
  # Entry t is the log-likelihood at the parameters after t iterations.
  np.testing.assert_allclose(ll[-1], C.gmm_log_prob(res.params, x).mean(), rtol=1e-12)


def test_gmm_em_stops_at_tolerance_and_pads_the_trace(x64):
  x = _blobs(2)
  init = C.gmm_init(jax.random.key(1), x, 3)
  res = C.gmm_em(init, x, max_iters=500, tol=1e-8)
  n = int(res.num_iters)
  assert bool(res.converged) and 1 < n < 500
  ll = np.asarray(res.log_likelihood)
  assert abs(ll[n] - ll[n - 1]) <= 1e-8 and abs(ll[n - 1] - ll[n - 2]) > 1e-8
  np.testing.assert_array_equal(ll[n:], ll[n])
  # Jitted once: a second fit with the same shapes does not retrace.
  size = C._gmm_em._cache_size()
  C.gmm_em(C.gmm_init(jax.random.key(2), x, 3), x, max_iters=500, tol=1e-8)
  assert C._gmm_em._cache_size() == size


def test_gmm_elbo_with_the_exact_posterior_equals_log_prob(x64):
  rng = np.random.default_rng(3)
  params, _ = _random_gmm(rng, 4, 3)
  x = rng.normal(size=(7, 3)) * 3.0
  log_px = C.gmm_log_prob(params, x)
  post = C.gmm_posterior(params, x)
  # Exact (enumerated) ELBO.
  np.testing.assert_allclose(C.gmm_elbo(params, x, post), log_px, rtol=1e-12)
  # Monte Carlo: every log-weight log p(x, z) - log q(z) with z ~ p(z|x) equals log p(x).
  z = jax.vmap(lambda k: D.sample_categorical(k, post))(jax.random.split(jax.random.key(0), 16))
  log_w = C.gmm_log_joint(params, x, z) - D.categorical_log_prob(z, post)
  np.testing.assert_allclose(log_w, jnp.broadcast_to(log_px, log_w.shape), rtol=1e-12)
  np.testing.assert_allclose(O.elbo(log_w), log_px, rtol=1e-12)
  # Any other q is below, by KL(q || p(z|x)).
  q = jnp.zeros_like(post)
  kl = D.kl_categorical_categorical(q, post)
  np.testing.assert_allclose(C.gmm_elbo(params, x, q), log_px - kl, rtol=1e-10)
  # q(z) = 0 on components with p(x, z) = 0 contributes 0, not NaN.
  dead = params._replace(logits=params.logits.at[0].set(-jnp.inf))
  assert np.all(np.isfinite(C.gmm_elbo(dead, x, C.gmm_posterior(dead, x))))


def test_gmm_sample_frequencies_and_moments(x64):
  rng = np.random.default_rng(4)
  params, cov = _random_gmm(rng, 3, 2)
  n = 6000
  x, z = jax.jit(C.gmm_sample, static_argnums=2)(jax.random.key(5), params, n)
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
  with pytest.raises(ValueError, match="non-finite"):
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
  res = C.gmm_em(init, x, max_iters=30, tol=0.0)
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
  x = np.concatenate([_blobs(7), [[40.0, -40.0]]])
  init = C.gmm_init(jax.random.key(0), x, 3, reg_covar=0.0)
  init = init._replace(means=init.means.at[2].set(jnp.array([40.0, -40.0])),
                       scale_tril=init.scale_tril.at[2].set(0.1 * jnp.eye(2)))
  res = C.gmm_em(init, x, max_iters=20, tol=0.0, reg_covar=0.0)
  for leaf in jax.tree.leaves(res.params):
    assert np.all(np.isfinite(leaf))
  np.testing.assert_array_equal(res.params.scale_tril[2], 0.1 * np.eye(2))
  assert np.all(np.isfinite(res.log_likelihood))


# ----------------------------------------------------------------------------- PPCA

X_DIM, Z_DIM = 8, 3


@pytest.fixture(scope="module")
def ppca_data():
  """Data from a PPCA model with well-separated signal eigenvalues (float64 numpy)."""
  with jax.enable_x64(True):
    true = lg.init(jax.random.key(10), X_DIM, Z_DIM, noise_scale=0.5, dtype=jnp.float64)
    true = true._replace(w=true.w * jnp.array([[3.0, 2.0, 1.5]]))
    x, _ = lg.sample(jax.random.key(11), true, 600)
  return np.asarray(x)


def test_ppca_ml_matches_sklearn_pca_and_is_stationary(x64, ppca_data):
  x = ppca_data
  ml = C.ppca_ml(x, Z_DIM)
  pca = PCA(Z_DIM).fit(x)
  np.testing.assert_allclose(math.exp(2 * float(ml.log_scale)), pca.noise_variance_, rtol=1e-10)
  np.testing.assert_allclose(lg.log_marginal(ml, x).mean(), pca.score(x), rtol=1e-10)
  np.testing.assert_allclose(C.subspace_angles(ml.w, pca.components_.T), 0.0, atol=1e-7)
  np.testing.assert_allclose(C.covariance_eigenvalues(x), np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1],
                             rtol=1e-10, atol=1e-12)
  grads = jax.grad(lambda p: lg.log_marginal(p, x).mean())(ml)
  for g in jax.tree.leaves(grads):
    np.testing.assert_allclose(g, 0.0, atol=1e-9)
  mean, cov = C._moments(jnp.asarray(x))
  np.testing.assert_allclose(C.ppca_mean_log_likelihood(ml, mean, cov), pca.score(x), rtol=1e-12)
  other = lg.init(jax.random.key(0), X_DIM, Z_DIM, dtype=jnp.float64)
  np.testing.assert_allclose(C.ppca_mean_log_likelihood(other, mean, cov),
                             lg.log_marginal(other, x).mean(), rtol=1e-12)


def test_ppca_em_is_monotone_and_converges_to_the_closed_form(x64, ppca_data):
  x = ppca_data
  init = lg.init(jax.random.key(12), X_DIM, Z_DIM, dtype=jnp.float64)
  res = C.ppca_em(init, x, max_iters=3000, tol=1e-12)
  ll = np.asarray(res.log_likelihood)
  assert bool(res.converged)
  assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:])), np.diff(ll).min()
  ml = C.ppca_ml(x, Z_DIM)
  ll_ml = float(lg.log_marginal(ml, x).mean())
  assert abs(float(lg.log_marginal(res.params, x).mean()) - ll_ml) < 1e-4
  assert abs(ll[-1] - ll_ml) < 1e-4
  assert float(jnp.max(C.subspace_angles(res.params.w, ml.w))) < 1e-3
  np.testing.assert_allclose(res.params.log_scale, ml.log_scale, atol=1e-5)
  np.testing.assert_allclose(res.params.b, x.mean(0), atol=1e-12)


def test_ppca_elbo_with_the_exact_posterior_equals_log_marginal(x64, ppca_data):
  x = ppca_data[:5]
  params = lg.init(jax.random.key(13), X_DIM, Z_DIM, dtype=jnp.float64)  # not the ML: full posterior
  log_px = lg.log_marginal(params, x)
  loc, tril = lg.posterior(params, x)

  def log_w(key):
    z = D.sample_mvn(key, loc, tril)
    return lg.log_joint(params, x, z) - D.mvn_log_prob(z, loc, tril)

  lw = jax.vmap(log_w)(jax.random.split(jax.random.key(0), 32))
  np.testing.assert_allclose(lw, jnp.broadcast_to(log_px, lw.shape), rtol=1e-10)
  np.testing.assert_allclose(O.elbo(lw), log_px, rtol=1e-10)
  # At the ML solution W has orthogonal columns, so the posterior is diagonal and the
  # diagonal-Gaussian code path (gaussian_log_weights) is exact too.
  ml = C.ppca_ml(ppca_data, Z_DIM)
  loc, tril = lg.posterior(ml, x)
  np.testing.assert_allclose(tril, jnp.diag(jnp.diagonal(tril)), atol=1e-12)
  scale = jnp.broadcast_to(jnp.log(jnp.diagonal(tril)), loc.shape)
  lw = C.gaussian_log_weights(jax.random.key(1), lg.log_joint, ml, x, loc, scale, 32)
  np.testing.assert_allclose(lw, jnp.broadcast_to(lg.log_marginal(ml, x), lw.shape), rtol=1e-10)


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
  init = lg.init(jax.random.key(0), X_DIM, 2, dtype=jnp.float64)
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
  init = lg.init(jax.random.key(20), 6, 2, noise_scale=1.0, dtype=jnp.float64)
  init = init._replace(b=jnp.asarray(x.mean(0)))
  res = C.variational_em(jax.random.key(21), lg.log_joint, init, x, z_dim=2, num_iters=600,
                         e_steps=2, m_steps=1, e_optimizer=optax.adam(5e-2),
                         m_optimizer=optax.adam(optax.cosine_decay_schedule(5e-2, 600, 0.01)))
  ll = float(lg.log_marginal(res.params, x).mean())
  ll_ml = float(lg.log_marginal(ml, x).mean())
  ll_init = float(lg.log_marginal(init, x).mean())
  assert ll_ml - ll < 0.03 < ll - ll_init
  # The ELBO is a lower bound on the (exact) log-likelihood.
  assert float(res.elbo[-1]) < ll + 0.05
  assert float(jnp.max(C.subspace_angles(res.params.w, ml.w))) < 0.1


@pytest.fixture(scope="module")
def correlated_ppca():
  """A PPCA model with non-orthogonal W: its posterior is not diagonal (approximation gap > 0)."""
  w = jnp.array([[1.0, 0.8], [0.5, 1.0], [0.0, 0.3], [1.0, 0.0], [0.2, 0.2], [0.0, 1.0]])
  return w


def _posterior_encoder_shifted(params):
  def encoder(x):
    loc, _ = lg.posterior(params, x)
    return loc + 0.3, jnp.zeros_like(loc)
  return encoder


def test_amortization_gaps_match_closed_forms(x64, correlated_ppca):
  w = correlated_ppca
  s2 = 0.25
  params = lg.Params(w, jnp.zeros(6), jnp.asarray(0.5 * math.log(s2)))
  x, _ = lg.sample(jax.random.key(30), params, 8)
  log_px = lg.log_marginal(params, x)
  encoder = _posterior_encoder_shifted(params)
  opt = optax.adam(optax.cosine_decay_schedule(3e-2, 600, 0.01))
  gaps = C.amortization_gaps(jax.random.key(31), lg.log_joint, params, x, encoder, num_steps=600,
                             num_samples=4, num_elbo_samples=1000, num_iwae_samples=1000,
                             chunk_size=500, optimizer=opt)
  # The best mean-field Gaussian for N(m, M^{-1}) has precisions diag(M):
  # KL = (sum_j log M_jj - log det M) / 2, the same for every x.
  m = jnp.eye(2) + w.T @ w / s2
  approx = 0.5 * (jnp.sum(jnp.log(jnp.diag(m))) - jnp.linalg.slogdet(m)[1])
  # KL(q_encoder || p(z|x)) in closed form.
  loc, tril = lg.posterior(params, x)
  loc_e, log_scale_e = encoder(x)
  prec = m
  d = loc_e - loc
  kl_e = 0.5 * (jnp.trace(prec) + jnp.einsum("bi,ij,bj->b", d, prec, d) - 2
                - jnp.linalg.slogdet(m)[1])
  assert abs(float(jnp.mean(gaps.log_px - log_px))) < 0.02
  assert float(jnp.max(jnp.abs(gaps.log_px - log_px))) < 0.06
  np.testing.assert_allclose(jnp.mean(gaps.approximation_gap), approx, atol=0.03)
  np.testing.assert_allclose(jnp.mean(gaps.inference_gap), jnp.mean(kl_e), atol=0.05)
  np.testing.assert_allclose(jnp.mean(gaps.amortization_gap), jnp.mean(kl_e) - approx, atol=0.05)
  np.testing.assert_allclose(gaps.inference_gap, gaps.approximation_gap + gaps.amortization_gap,
                             rtol=1e-10)
  # With the exact log p(x) supplied, the decomposition uses it.
  exact = C.amortization_gaps(jax.random.key(32), lg.log_joint, params, x, encoder, num_steps=600,
                              num_samples=4, num_elbo_samples=1000, num_iwae_samples=1000,
                              chunk_size=500, optimizer=opt, log_px=log_px)
  np.testing.assert_array_equal(exact.log_px, log_px)
  np.testing.assert_allclose(jnp.mean(exact.approximation_gap), approx, atol=0.03)


# ----------------------------------------------------------------------------- linear VAE


def test_linear_vae_analytic_elbo_matches_monte_carlo_and_exact_posterior(x64, ppca_data):
  x = ppca_data[:6]
  vae = C.linear_vae_init(jax.random.key(40), X_DIM, Z_DIM, mean=ppca_data.mean(0),
                          dtype=jnp.float64)
  vae = vae._replace(enc_log_scale=jnp.array([-0.5, 0.1, 0.3]))
  lw = C.linear_vae_log_weights(jax.random.key(41), vae, x, 20000)
  mc = O.elbo(lw)
  se = jnp.std(lw, axis=0) / math.sqrt(20000)
  assert np.all(np.abs(mc - C.linear_vae_elbo(vae, x)) < 5 * se)
  # Encoder = exact posterior of the ML decoder (linear mean, diagonal covariance): ELBO = log p(x).
  ml = C.ppca_ml(ppca_data, Z_DIM)
  s2 = jnp.exp(2 * ml.log_scale)
  m = jnp.eye(Z_DIM) + ml.w.T @ ml.w / s2
  v = ml.w @ jnp.linalg.inv(m) / s2
  exact = C.LinearVAEParams(ml, v, -(ml.b @ v), -0.5 * jnp.log(jnp.diag(m)))
  np.testing.assert_allclose(C.linear_vae_elbo(exact, x), lg.log_marginal(ml, x), rtol=1e-10)
  loc, _ = C.linear_vae_encode(exact, x)
  np.testing.assert_allclose(loc, lg.posterior(ml, x)[0], rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def vae_data():
  """Train / held-out float32 data from a 12-D PPCA with 3 strong directions."""
  true = lg.init(jax.random.key(50), 12, 3, noise_scale=0.5)
  true = true._replace(w=true.w * jnp.array([[3.0, 2.0, 1.5]]))
  x, _ = lg.sample(jax.random.key(51), true, 3000)
  return np.asarray(x[:2000]), np.asarray(x[2000:])


def test_linear_vae_recovers_ppca_likelihood_and_subspace(vae_data):
  train, test = vae_data
  vae, trace = C.fit_linear_vae(jax.random.key(52), train, 3, num_steps=1000, learning_rate=3e-2)
  ml = C.ppca_ml(train, 3)
  ll_vae = float(lg.log_marginal(vae.decoder, test).mean())
  ll_ppca = float(lg.log_marginal(ml, test).mean())
  assert abs(ll_vae - ll_ppca) < 0.1, (ll_vae, ll_ppca)
  assert float(jnp.max(C.subspace_angles(vae.decoder.w, ml.w))) < 0.02
  assert float(C.linear_vae_elbo(vae, test).mean()) <= ll_vae
  assert float(jnp.mean(trace[-50:])) > float(jnp.mean(trace[:50]))


def test_linear_vae_collapses_the_dimensions_below_the_noise(vae_data):
  train, _ = vae_data
  ev = np.asarray(C.covariance_eigenvalues(train))
  s2 = float(0.5 * (ev[1] + ev[2]))
  vae, _ = C.fit_linear_vae(jax.random.key(53), train, 4, num_steps=1000, learning_rate=3e-2,
                            noise_variance=s2)
  assert float(jnp.exp(2 * vae.decoder.log_scale)) == pytest.approx(s2, rel=1e-6)
  norms = np.sort(np.linalg.norm(np.asarray(vae.decoder.w), axis=0))[::-1]
  np.testing.assert_allclose(norms[:2], np.sqrt(ev[:2] - s2), rtol=0.02)
  assert np.all(norms[2:] < 0.05)
  loc, log_scale = C.linear_vae_encode(vae, train)
  kl = np.asarray(jnp.mean(D.kl_normal_standard_normal(loc, log_scale, event_ndims=0), axis=0))
  assert np.sum(kl > 0.1) == 2 and np.sum(kl < 0.01) == 2
