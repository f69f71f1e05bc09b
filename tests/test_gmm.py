"""Tests of dgmjax.models.gmm against scikit-learn's GaussianMixture and the identity
``ELBO(q = p(z|x)) = log p(x)``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from sklearn.mixture import GaussianMixture

from dgmjax import distributions as D
from dgmjax import objectives as O
from dgmjax.inference import em
from dgmjax.models import gmm
from tests import classical_data as cd
from tests.classical_data import fast_compiling_prng  # pylint: disable=unused-import


_gmm_posterior = jax.jit(gmm.gmm_posterior)


def _random_gmm(rng, c, d):
  a = rng.normal(size=(c, d, d))
  cov = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
  return gmm.gmm_params(rng.normal(size=(c,)), 3.0 * rng.normal(size=(c, d)), cov), cov


def test_gmm_densities_match_sklearn(x64):
  x = cd.blobs()
  gm = GaussianMixture(3, covariance_type="full", random_state=0).fit(x)
  params = gmm.gmm_params(np.log(gm.weights_), gm.means_, gm.covariances_)
  np.testing.assert_allclose(cd.gmm_log_prob(params, x), gm.score_samples(x), rtol=1e-10)
  np.testing.assert_allclose(np.exp(_gmm_posterior(params, x)), gm.predict_proba(x), atol=1e-10)
  # log p(x) = logsumexp_z log p(x, z), with log p(x, z) evaluated per component index.
  joint = jax.jit(jax.vmap(lambda c: gmm.gmm_log_joint(params, x, jnp.full((len(x),), c))))(
      jnp.arange(3))
  np.testing.assert_allclose(jax.nn.logsumexp(joint, 0), gm.score_samples(x), rtol=1e-10)
  np.testing.assert_allclose(cd.gmm_covariances(params), gm.covariances_, rtol=1e-10)


def test_gmm_elbo_with_the_exact_posterior_equals_log_prob(x64):
  rng = np.random.default_rng(3)
  params, _ = _random_gmm(rng, 4, 3)
  x = rng.normal(size=(7, 3)) * 3.0

  @jax.jit
  def check(key, params):
    log_px = gmm.gmm_log_prob(params, x)
    post = gmm.gmm_posterior(params, x)
    exact = gmm.gmm_elbo(params, x, post)
    # Monte Carlo: every log-weight log p(x, z) - log q(z) with z ~ p(z|x) equals log p(x).
    z = jax.vmap(lambda k: D.sample_categorical(k, post))(jax.random.split(key, 16))
    log_w = gmm.gmm_log_joint(params, x, z) - D.categorical_log_prob(z, post)
    # Any other q is below, by KL(q || p(z|x)).
    q = jnp.zeros_like(post)
    other = gmm.gmm_elbo(params, x, q)
    kl = D.kl_categorical_categorical(q, post)
    return log_px, exact, log_w, other, kl

  log_px, exact, log_w, other, kl = check(jax.random.key(0), params)
  np.testing.assert_allclose(exact, log_px, rtol=1e-12)
  np.testing.assert_allclose(log_w, jnp.broadcast_to(log_px, log_w.shape), rtol=1e-12)
  np.testing.assert_allclose(O.elbo(log_w), log_px, rtol=1e-12)
  np.testing.assert_allclose(other, log_px - kl, rtol=1e-10)
  # q(z) = 0 on components with p(x, z) = 0 contributes 0, not NaN.
  dead = params._replace(logits=params.logits.at[0].set(-jnp.inf))
  assert np.all(np.isfinite(jax.jit(gmm.gmm_elbo)(dead, x, _gmm_posterior(dead, x))))


def test_gmm_sample_frequencies_and_moments(x64):
  rng = np.random.default_rng(4)
  params, cov = _random_gmm(rng, 3, 2)
  n = 6000
  x, z = jax.jit(gmm.gmm_sample, static_argnums=2)(params, jax.random.key(5), n)
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
    gmm.gmm_log_prob(params, bad)
  bad[3, 1] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    em.gmm_em(params, bad)
  with pytest.raises(ValueError, match="non-finite"):
    gmm.gmm_init(jax.random.key(0), bad, 2)
  singular = np.stack([np.eye(2), np.array([[1.0, 1.0], [1.0, 1.0]])])
  with pytest.raises(ValueError, match="positive definite|singular"):
    gmm.gmm_params(np.zeros(2), np.zeros((2, 2)), singular)
  with pytest.raises(ValueError, match="symmetric"):
    gmm.gmm_params(np.zeros(2), np.zeros((2, 2)), np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]))
  # A hand-made Cholesky factor with a zero on the diagonal.
  tril = np.stack([np.eye(2), np.diag([1.0, 0.0])])
  with pytest.raises(ValueError, match="singular"):
    gmm.gmm_log_prob(gmm.GMMParams(jnp.zeros(2), jnp.zeros((2, 2)), jnp.asarray(tril)), x)
  with pytest.raises(ValueError, match=r"\[C, D, D\]"):
    gmm.gmm_log_prob(params._replace(scale_tril=params.scale_tril[:, :1]), x)


def test_gmm_sizes_are_checked_naming_the_argument():
  x = np.random.RandomState(0).randn(20, 2).astype(np.float32)
  with pytest.raises(ValueError, match="num_components must be an int"):
    gmm.gmm_init(jax.random.key(0), x, 2.5)
  with pytest.raises(ValueError, match="reg_covar must be a finite number >= 0"):
    gmm.gmm_init(jax.random.key(0), x, 2, reg_covar=float("nan"))
  params = gmm.gmm_init(jax.random.key(0), x, 2)
  for num in (0, -1, 2.0):
    with pytest.raises(ValueError, match="num must be an int"):
      gmm.gmm_sample(params, jax.random.key(1), num)
