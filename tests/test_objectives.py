"""Tests for dgmjax.objectives against the closed-form linear-Gaussian model and identities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from scipy.special import logsumexp as np_logsumexp

from dgmjax import _checks
from dgmjax import distributions as D
from dgmjax import objectives as O
from dgmjax.models import linear_gaussian as lg
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("miwae_num_groups_float", lambda: O.miwae_bound(bi.z(6, 2), 2.0),
     TypeError, r"num_groups must be an int, got float 2\.0"),
    ("miwae_num_groups_bool", lambda: O.miwae_bound(bi.z(6, 2), True),
     TypeError, r"num_groups must be an int, got the bool True"),
    ("miwae_num_groups_traced",
     lambda: jax.jit(O.miwae_bound)(bi.z(6, 2), 2),
     TypeError, r"num_groups must be a static Python int, got a traced value"),
    ("piwae_num_groups_not_dividing", lambda: O.piwae_bounds(bi.z(6, 2), 4),
     ValueError, r"num_groups must be a positive int dividing the 6 samples"),
    ("free_bits_num_groups_float", lambda: O.free_bits(bi.z(2, 4), 0.1, num_groups=2.0),
     TypeError, r"num_groups must be an int, got float"),
    ("free_bits_lam_inf", lambda: O.free_bits(bi.z(2, 4), np.inf),
     ValueError, r"lam must be finite and >= 0.*inf"),
    ("beta_elbo_beta_nan", lambda: O.beta_elbo(bi.z(3, 2), bi.z(2), np.nan),
     ValueError, r"beta must be finite and >= 0.*nan"),
    ("ciwae_beta_nan", lambda: O.ciwae_bound(bi.z(3, 2), np.nan),
     ValueError, r"beta must be in \[0, 1\].*nan"),
    ("iwae_axis_float", lambda: O.iwae_bound(bi.z(3, 2), axis=0.0),
     TypeError, r"axis must be an int, got float"),
    ("elbo_axis_bool", lambda: O.elbo(bi.z(3, 2), axis=False),
     TypeError, r"axis must be an int, got bool"),
    ("elbo_analytic_kl_kl_with_a_trailing_axis",
     lambda: O.elbo_analytic_kl(jnp.zeros((2, 3)), jnp.zeros((3, 1))),
     ValueError, r"kl must have one value per data point, shape \(3,\).*got \(1,\)"),
    ("beta_elbo_kl_that_would_broadcast_to_B_by_B",
     lambda: O.beta_elbo(jnp.zeros((2, 3, 1)), jnp.zeros((3,))),
     ValueError, r"kl must have one value per data point, shape \(3, 1\).*got \(3,\)"),
    ("ciwae_beta_string", lambda: O.ciwae_bound(jnp.zeros((2, 3)), "0.5"),
     TypeError, r"beta must be a number or a numeric array, got str"),
    ("renyi_alpha_string", lambda: O.renyi_bound(jnp.zeros((2, 3)), "0.5"),
     TypeError, r"alpha must be a number or a numeric array, got str"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def test_type_errors_are_also_value_errors():
  # Code that catches the ValueError of a bad argument keeps working for a wrong type.
  with pytest.raises(ValueError, match="num_groups"):
    O.miwae_bound(bi.z(6, 2), 2.0)
  assert issubclass(_checks.ArgumentTypeError, TypeError)
  assert issubclass(_checks.ArgumentTypeError, ValueError)


def _beta_elbo_traced():
  out = jax.jit(O.beta_elbo)(bi.z(3, 2), jnp.ones(2), -0.5)
  return out, np.array([True, True])


def _ciwae_traced():
  out = jax.jit(O.ciwae_bound)(bi.z(3, 2), 1.5)
  return out, np.array([True, True])


def _free_bits_traced():
  out = jax.jit(O.free_bits)(jnp.ones((2, 3)), -0.5)
  return out, np.array(True)


TRACED_NAN = [
    ("beta_elbo_traced_negative_beta", _beta_elbo_traced),
    ("ciwae_traced_beta_above_one", _ciwae_traced),
    ("free_bits_traced_negative_lam", _free_bits_traced),
]


@bi.thunk_cases(TRACED_NAN)
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  bi.check_nan_exactly_where_bad(thunk)


def _accept_numpy_num_groups():
  lw = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
  np.testing.assert_array_equal(O.miwae_bound(lw, np.int64(3)), O.miwae_bound(lw, 3))
  np.testing.assert_array_equal(O.free_bits(jnp.ones((2, 4)), 0.1, num_groups=np.int32(2)),
                                O.free_bits(jnp.ones((2, 4)), 0.1, num_groups=2))
  np.testing.assert_array_equal(O.iwae_bound(lw, axis=np.int64(0)), O.iwae_bound(lw))


ACCEPTS = [
    ("numpy_int_num_groups_and_axis", _accept_numpy_num_groups),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


X_DIM, Z_DIM = 4, 2


@pytest.fixture(scope="module")
def model():
  params = lg.init(jax.random.key(0), X_DIM, Z_DIM, noise_scale=0.7)
  x, _ = lg.sample(params, jax.random.key(1), 3)
  return params, x


def _posterior_log_weights(key, params, x, num_samples):
  """Log-weights [K, B] with q = the exact (full-covariance) posterior."""
  loc, tril = lg.posterior(params, x)

  def one(k):
    z = D.sample_mvn(k, loc, tril)
    return lg.log_joint(params, x, z) - D.mvn_log_prob(z, loc, tril)

  return jax.vmap(one)(jax.random.split(key, num_samples))


def _wrong_q(params, x):
  """A deliberately wrong diagonal q: shifted mean, inflated scale."""
  loc, tril = lg.posterior(params, x)
  return loc + 0.5, jnp.log(1.5 * jnp.sqrt(jnp.diagonal(tril @ tril.T)))


def _wrong_log_weights(key, params, x, num_samples):
  loc, log_scale = _wrong_q(params, x)
  log_scale = jnp.broadcast_to(log_scale, loc.shape)

  def one(k):
    z = D.sample_normal(k, loc, log_scale)
    return lg.log_joint(params, x, z) - D.normal_log_prob(z, loc, log_scale)

  return jax.vmap(one)(jax.random.split(key, num_samples))


def test_exact_posterior_gives_log_marginal_for_every_sample(model, x64):
  params = lg.init(jax.random.key(0), X_DIM, Z_DIM, noise_scale=0.7, dtype=jnp.float64)
  x, _ = lg.sample(params, jax.random.key(1), 3)
  lw = jax.jit(_posterior_log_weights, static_argnums=3)(jax.random.key(2), params, x, 10)
  log_px = lg.log_marginal(params, x)
  assert lw.shape == (10, 3)
  np.testing.assert_allclose(lw, jnp.broadcast_to(log_px, lw.shape), rtol=1e-10)
  np.testing.assert_allclose(jax.jit(O.elbo)(lw), log_px, rtol=1e-10)
  np.testing.assert_allclose(jax.jit(O.iwae_bound)(lw), log_px, rtol=1e-10)


def test_exact_posterior_float32(model):
  params, x = model
  lw = _posterior_log_weights(jax.random.key(3), params, x, 10)
  np.testing.assert_allclose(O.iwae_bound(lw), lg.log_marginal(params, x), atol=2e-4)
  np.testing.assert_allclose(O.elbo(lw), lg.log_marginal(params, x), atol=2e-4)


def test_log_marginal_matches_scipy(model):
  import scipy.stats as st
  params, x = model
  cov = np.asarray(lg.marginal_cov(params), np.float64)
  want = st.multivariate_normal(np.asarray(params.b, np.float64), cov).logpdf(np.asarray(x))
  np.testing.assert_allclose(lg.log_marginal(params, x), want, rtol=1e-5)


def test_bounds_tighten_with_k_for_a_wrong_q(model):
  params, x = model
  log_px = np.asarray(lg.log_marginal(params, x))
  reps = 4000

  @jax.jit
  def estimates(key):
    k1, k5, k50, k5000 = jax.random.split(key, 4)

    def rep(f, k, n):
      return jax.vmap(lambda kk: f(_wrong_log_weights(kk, params, x, n)))(
          jax.random.split(k, reps))

    return (rep(O.elbo, jax.random.clone(k1), 1), rep(O.iwae_bound, k1, 1),
            rep(O.iwae_bound, k5, 5), rep(O.iwae_bound, k50, 50),
            jax.vmap(lambda kk: O.iwae_bound(_wrong_log_weights(kk, params, x, 5000)))(
                jax.random.split(k5000, 8)))

  elbo1, l1, l5, l50, l5000 = estimates(jax.random.key(4))
  # IWAE with K = 1 equals the ELBO exactly (same samples).
  np.testing.assert_array_equal(l1, elbo1)
  means = [np.asarray(v.mean(0)) for v in (l1, l5, l50)]
  ses = [np.asarray(v.std(0) / math.sqrt(reps)) for v in (l1, l5, l50)]
  for i in range(3):  # every data point
    assert means[0][i] + 3 * (ses[0][i] + ses[1][i]) < means[1][i]
    assert means[1][i] + 3 * (ses[1][i] + ses[2][i]) < means[2][i]
    assert means[2][i] + 3 * ses[2][i] < log_px[i]
  gaps = [log_px - m for m in means] + [log_px - np.asarray(l5000.mean(0))]
  for a, b in zip(gaps, gaps[1:]):
    assert np.all(b < a)
  assert np.all(gaps[-1] < 0.01) and np.all(gaps[0] > 0.1)


def test_naive_estimator_unbiased_in_p_and_worse_than_iwae(model, x64):
  params = lg.init(jax.random.key(0), X_DIM, Z_DIM, noise_scale=0.7, dtype=jnp.float64)
  x, _ = lg.sample(params, jax.random.key(1), 3)
  log_px = np.asarray(lg.log_marginal(params, x))
  k, reps = 20, 20000

  @jax.jit
  def run(key):
    kp, kq = jax.random.split(key)

    def naive(kk):
      z = jax.random.normal(kk, (k,) + x.shape[:-1] + (Z_DIM,), jnp.float64)
      return O.naive_log_likelihood(lg.log_likelihood(params, x, z))

    def iwae(kk):
      return O.iwae_bound(_wrong_log_weights(kk, params, x, k))

    return (jax.vmap(naive)(jax.random.split(kp, reps)),
            jax.vmap(iwae)(jax.random.split(kq, reps)))

  naive, iwae = run(jax.random.key(5))
  ratio = np.exp(np.asarray(naive) - log_px)  # p_hat / p(x): unbiased means mean 1
  se = ratio.std(0) / math.sqrt(reps)
  assert np.all(np.abs(ratio.mean(0) - 1) < 3.5 * se)
  # log of an unbiased estimate is biased downward (Jensen) ...
  assert np.all(np.asarray(naive).mean(0) < log_px)
  # ... and at equal sample count it is a worse estimate of log p(x) than IWAE with a sensible q.
  mse_naive = ((np.asarray(naive) - log_px) ** 2).mean(0)
  mse_iwae = ((np.asarray(iwae) - log_px) ** 2).mean(0)
  assert np.all(mse_naive > mse_iwae)
  assert np.all(np.asarray(naive).mean(0) < np.asarray(iwae).mean(0))


def test_log_mean_exp_matches_numpy_and_handles_minus_inf():
  x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32) * 30
  np.testing.assert_allclose(jax.jit(O.log_mean_exp)(x), np_logsumexp(x, 0) - math.log(7),
                             rtol=1e-6)
  np.testing.assert_allclose(O.log_mean_exp(x, axis=1), np_logsumexp(x, 1) - math.log(3),
                             rtol=1e-6)
  lw = jnp.array([[-jnp.inf, -jnp.inf, 0.5], [-jnp.inf, 1.0, -jnp.inf]])
  for f in (O.iwae_bound, O.log_mean_exp, O.naive_log_likelihood):
    val = jax.jit(f)(lw)
    assert val[0] == -jnp.inf and np.isfinite(val[1]) and np.isfinite(val[2])
    g = jax.grad(lambda v: jnp.sum(jnp.where(jnp.isfinite(f(v)), f(v), 0.0)))(lw)
    assert not np.any(np.isnan(g))
    np.testing.assert_allclose(g[:, 1], [0.0, 1.0])
  assert float(O.elbo(lw)[0]) == -np.inf  # never NaN
  assert not np.any(np.isnan(O.elbo(lw)))
  # the gradient of the all--inf slice is zero, not NaN
  g = jax.grad(lambda v: O.iwae_bound(v)[1:].sum())(lw)
  assert not np.any(np.isnan(g))


def test_importance_weights_and_ess():
  lw = jnp.array([[0.0, 10.0, -jnp.inf], [0.0, -10.0, -jnp.inf], [0.0, -10.0, -jnp.inf]])
  w = jax.jit(O.importance_weights)(lw)
  np.testing.assert_allclose(w.sum(0), [1.0, 1.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(w[:, 0], 1 / 3, rtol=1e-6)
  ess = jax.jit(O.effective_sample_size)(lw)
  np.testing.assert_allclose(ess, [3.0, 1.0, 0.0], atol=1e-4)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 4))
  wn = np.exp(x - x.max(0))
  np.testing.assert_allclose(O.effective_sample_size(x), wn.sum(0) ** 2 / (wn**2).sum(0),
                             rtol=1e-5)


def test_multi_sample_family_identities():
  rng = np.random.default_rng(2)
  lw = jnp.asarray(rng.normal(size=(12, 5)) * 3, jnp.float32)
  np.testing.assert_allclose(O.miwae_bound(lw, 1), O.iwae_bound(lw), rtol=1e-6)
  np.testing.assert_allclose(O.miwae_bound(lw, 12), O.elbo(lw), rtol=1e-6)
  want = np.mean([np_logsumexp(np.asarray(lw)[m * 4:(m + 1) * 4], 0) - math.log(4)
                  for m in range(3)], 0)
  np.testing.assert_allclose(jax.jit(O.miwae_bound, static_argnums=1)(lw, 3), want, rtol=1e-5)
  np.testing.assert_allclose(O.ciwae_bound(lw, 1.0), O.elbo(lw), rtol=1e-6)
  np.testing.assert_allclose(O.ciwae_bound(lw, 0.0), O.iwae_bound(lw), rtol=1e-6)
  np.testing.assert_allclose(O.ciwae_bound(lw, 0.25),
                             0.25 * O.elbo(lw) + 0.75 * O.iwae_bound(lw), rtol=1e-6)
  theta, phi = O.piwae_bounds(lw, 3)
  np.testing.assert_allclose(theta, O.iwae_bound(lw), rtol=1e-6)
  np.testing.assert_allclose(phi, O.miwae_bound(lw, 3), rtol=1e-6)
  # ordering on the same samples: ELBO <= MIWAE(3, 4) <= IWAE(12)
  assert np.all(O.elbo(lw) <= O.miwae_bound(lw, 3) + 1e-6)
  assert np.all(O.miwae_bound(lw, 3) <= O.iwae_bound(lw) + 1e-6)
  # the sample axis can be elsewhere
  np.testing.assert_allclose(O.miwae_bound(lw.T, 3, axis=1), O.miwae_bound(lw, 3), rtol=1e-6)


def test_analytic_kl_elbo_beta_and_free_bits():
  rng = np.random.default_rng(3)
  ll = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  kl = jnp.asarray(rng.uniform(size=(4,)), jnp.float32)
  np.testing.assert_allclose(O.elbo_analytic_kl(ll, kl), ll.mean(0) - kl, rtol=1e-6)
  np.testing.assert_allclose(O.beta_elbo(ll, kl, 0.3), ll.mean(0) - 0.3 * kl, rtol=1e-6)
  kl_samples = jnp.asarray(rng.uniform(size=(6, 4)), jnp.float32)
  np.testing.assert_allclose(O.beta_elbo(ll, kl_samples, 0.5),
                             ll.mean(0) - 0.5 * kl_samples.mean(0), rtol=1e-6)
  # analytic-KL ELBO and the sampled ELBO agree in expectation on the wrong-q linear model
  per_dim = jnp.array([[0.01, 0.5, 2.0, 0.2], [0.03, 0.7, 1.0, 0.4]])  # [B, D]
  lam = 0.25
  np.testing.assert_allclose(O.free_bits(per_dim, lam), 0.25 + 0.6 + 1.5 + 0.3, rtol=1e-6)
  g = jax.grad(O.free_bits)(per_dim, lam)
  # no gradient for dimensions whose batch-mean KL (0.02) is below lambda; 1/B otherwise
  np.testing.assert_allclose(g, [[0.0, 0.5, 0.5, 0.5], [0.0, 0.5, 0.5, 0.5]])
  grouped = O.free_bits(per_dim, 1.0, num_groups=2)  # groups {0,1} -> 0.62, {2,3} -> 1.8
  np.testing.assert_allclose(grouped, 1.0 + 1.8, rtol=1e-6)


def test_analytic_kl_elbo_matches_sampled_elbo_in_expectation(model):
  params, x = model
  loc, log_scale = _wrong_q(params, x)
  log_scale = jnp.broadcast_to(log_scale, loc.shape)
  keys = jax.random.split(jax.random.key(6), 20000)
  z = jax.vmap(D.sample_normal, (0, None, None))(keys, loc, log_scale)
  sampled = O.elbo(lg.log_joint(params, x, z) - D.normal_log_prob(z, loc, log_scale))
  analytic = O.elbo_analytic_kl(lg.log_likelihood(params, x, z),
                                D.kl_normal_standard_normal(loc, log_scale))
  lw = lg.log_joint(params, x, z) - D.normal_log_prob(z, loc, log_scale)
  se = lw.std(0) / math.sqrt(20000)
  assert np.all(np.abs(sampled - analytic) < 4 * se)


def test_gradients_float64(x64):
  rng = np.random.default_rng(4)
  lw = jnp.asarray(rng.normal(size=(6, 3)))
  check_grads(jax.jit(O.iwae_bound), (lw,), order=2)
  for f in (O.log_mean_exp, O.elbo, O.importance_weights, O.effective_sample_size,
            O.naive_log_likelihood):
    check_grads(jax.jit(f), (lw,), order=1)
  check_grads(jax.jit(lambda v: O.miwae_bound(v, 2)), (lw,), order=1)
  check_grads(jax.jit(lambda v: O.ciwae_bound(v, 0.3)), (lw,), order=1)
  check_grads(jax.jit(lambda v: O.piwae_bounds(v, 3)[1]), (lw,), order=1)
  kl = jnp.asarray(rng.uniform(size=(3,)))
  check_grads(jax.jit(lambda a, b: O.beta_elbo(a, b, 0.5)), (lw, kl), order=1)
  check_grads(jax.jit(O.elbo_analytic_kl), (lw, kl), order=1)
  check_grads(jax.jit(lambda k: O.free_bits(k, 0.1)), (jnp.array([[0.01, 0.5], [0.02, 0.9]]),),
              order=1, modes=["rev"])


def test_k1_and_bad_inputs_raise():
  lw1 = jnp.array([[0.3, -2.0]])
  np.testing.assert_array_equal(O.iwae_bound(lw1), O.elbo(lw1))
  np.testing.assert_array_equal(O.iwae_bound(lw1), lw1[0])
  empty = jnp.zeros((0, 3))
  for f in (O.elbo, O.iwae_bound, O.importance_weights, O.effective_sample_size):
    with pytest.raises(ValueError, match="log_weights"):
      f(empty)
  with pytest.raises(ValueError, match="x"):
    O.log_mean_exp(empty)
  with pytest.raises(ValueError, match="num_groups"):
    O.miwae_bound(jnp.zeros((6, 2)), 4)
  with pytest.raises(ValueError, match="num_groups"):
    O.miwae_bound(jnp.zeros((6, 2)), 0)
  with pytest.raises(ValueError, match="beta"):
    O.ciwae_bound(jnp.zeros((6, 2)), 1.5)
  with pytest.raises(ValueError, match="beta"):
    O.beta_elbo(jnp.zeros((6, 2)), jnp.zeros(2), -1.0)
  with pytest.raises(ValueError, match="kl"):
    O.elbo_analytic_kl(jnp.zeros((6, 2)), jnp.zeros(3))
  with pytest.raises(ValueError, match="lam"):
    O.free_bits(jnp.zeros((2, 3)), -0.1)
  with pytest.raises(ValueError, match="num_groups"):
    O.free_bits(jnp.zeros((2, 3)), 0.1, num_groups=2)
  with pytest.raises(ValueError, match="axis"):
    O.iwae_bound(jnp.zeros((2, 3)), axis=2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes_are_kept(dtype):
  lw = jnp.asarray(np.random.default_rng(5).normal(size=(8, 2)), dtype)
  for f in (O.elbo, O.iwae_bound, O.log_mean_exp, O.importance_weights, O.effective_sample_size):
    assert f(lw).dtype == dtype
  assert O.miwae_bound(lw, 2).dtype == dtype
  assert O.ciwae_bound(lw, 0.5).dtype == dtype
  np.testing.assert_allclose(np.float32(O.iwae_bound(lw)),
                             O.iwae_bound(lw.astype(jnp.float32)), atol=0.05)


def test_vmap_over_batch_and_samples_equals_loop(model):
  params, x = model
  lw = _wrong_log_weights(jax.random.key(7), params, x, 16)  # [16, 3]
  per_x = jax.vmap(O.iwae_bound, in_axes=1)(lw[:, :, None])[:, 0]
  loop = np.array([float(O.iwae_bound(lw[:, b])) for b in range(3)])
  np.testing.assert_allclose(per_x, loop, rtol=1e-6)
  np.testing.assert_allclose(O.iwae_bound(lw), loop, rtol=1e-6)
  # vmap over samples: log-weights built per key equal those built in a Python loop
  keys = jax.random.split(jax.random.key(8), 4)
  loc, log_scale = _wrong_q(params, x)
  log_scale = jnp.broadcast_to(log_scale, loc.shape)

  def lw_one(k):
    z = D.sample_normal(k, loc, log_scale)
    return lg.log_joint(params, x, z) - D.normal_log_prob(z, loc, log_scale)

  vm = jax.vmap(lw_one)(keys)
  lp = jnp.stack([lw_one(k) for k in jax.random.split(jax.random.key(8), 4)])
  np.testing.assert_allclose(vm, lp, rtol=1e-5)



# ---------------------------------------------------------------------------------------------
# Weights of the bounds: shapes named; complex log-weights refused by name
# ---------------------------------------------------------------------------------------------

_LW = jax.random.normal(jax.random.key(3), (5, 3))


def test_renyi_weights_nan_alpha_raises_concrete_and_gives_nan_traced():
  with pytest.raises(ValueError, match="alpha"):
    O.renyi_weights(_LW, np.nan)
  assert np.all(np.isnan(jax.jit(O.renyi_weights)(_LW, jnp.nan)))
  np.testing.assert_allclose(jax.jit(O.renyi_weights)(_LW, 0.5), O.renyi_weights(_LW, 0.5),
                             rtol=1e-6)


def test_objectives_name_bad_weights_and_complex_input_without_the_test_hook():
  # The test session's annotation hook would refuse most of these before the library's checks:
  # run them as a user's script does.
  from tests.unhooked import assert_raises_naming, errors_without_hook
  results = errors_without_hook("""
      import jax, jax.numpy as jnp
      from dgmjax import objectives as O
      C = jnp.array([[0.3, 0.2], [1.0, -1.0]]) + 1j
      R = jnp.array([[0.3, 0.2], [1.0, -1.0]])
      LW = jnp.zeros((5, 3))
      CASES = {
          "log_mean_exp": lambda: O.log_mean_exp(C),
          "elbo": lambda: O.elbo(C),
          "iwae": lambda: O.iwae_bound(C),
          "jit iwae": lambda: jax.jit(O.iwae_bound)(C),
          "importance_weights": lambda: O.importance_weights(C),
          "ess": lambda: O.effective_sample_size(C),
          "beta_elbo ll": lambda: O.beta_elbo(C, R[0]),
          "beta_elbo kl": lambda: O.beta_elbo(R, C[0]),
          "elbo_analytic_kl": lambda: O.elbo_analytic_kl(R, C[0]),
          "free_bits": lambda: O.free_bits(C, 0.1),
          "miwae": lambda: O.miwae_bound(C, 1),
          "piwae": lambda: O.piwae_bounds(C, 1),
          "ciwae": lambda: O.ciwae_bound(C, 0.5),
          "renyi": lambda: O.renyi_bound(C, 0.5),
          "renyi alpha": lambda: O.renyi_bound(R, 0.5 + 1j),
          "renyi_weights": lambda: O.renyi_weights(C, 0.5),
          "jackknife": lambda: O.jackknife_bound(C, 1),
          "naive": lambda: O.naive_log_likelihood(C),
          # weights of another shape than a scalar: named, never a broadcasting error
          "ciwae beta [2]": lambda: O.ciwae_bound(LW, jnp.full((2,), 0.5)),
          "ciwae beta [K, B]": lambda: O.ciwae_bound(LW, jnp.full((5, 3), 0.5)),
          "jit ciwae beta": lambda: jax.jit(O.ciwae_bound)(LW, jnp.full((3,), 0.5)),
          "beta_elbo beta": lambda: O.beta_elbo(LW, jnp.zeros(3), jnp.full((2,), 0.5)),
          "free_bits lam": lambda: O.free_bits(LW, jnp.full((2,), 0.5)),
          "renyi alpha [2]": lambda: O.renyi_bound(LW, jnp.array([0.5, 0.2])),
          "jit renyi alpha": lambda: jax.jit(O.renyi_bound)(LW, jnp.array([0.5, 0.2])),
          "renyi_weights alpha": lambda: O.renyi_weights(LW, jnp.array([0.5, 0.2])),
          # log-weights that are not real numbers
          "bool log_weights": lambda: O.elbo(jnp.ones((3, 2), bool)),
          "text x": lambda: O.log_mean_exp("abc"),
          "text alpha": lambda: O.renyi_weights(LW, "a"),
      }
  """)
  assert_raises_naming(results, {
      "log_mean_exp": "x", "elbo": "log_weights", "iwae": "log_weights",
      "jit iwae": "log_weights", "importance_weights": "log_weights", "ess": "log_weights",
      "beta_elbo ll": "log_likelihood", "beta_elbo kl": "kl", "elbo_analytic_kl": "kl",
      "free_bits": "kl", "miwae": "log_weights", "piwae": "log_weights",
      "ciwae": "log_weights", "renyi": "log_weights", "renyi alpha": "alpha",
      "renyi_weights": "log_weights", "jackknife": "log_weights",
      "naive": "log_likelihood"})
  assert_raises_naming(results, {
      "ciwae beta [2]": "beta", "ciwae beta [K, B]": "beta", "jit ciwae beta": "beta",
      "beta_elbo beta": "beta", "free_bits lam": "lam", "renyi alpha [2]": "alpha",
      "jit renyi alpha": "alpha", "renyi_weights alpha": "alpha"},
                       "ValueError", "must be a scalar (shape ())")
  assert_raises_naming(results, {"bool log_weights": "log_weights", "text x": "x",
                                 "text alpha": "alpha"}, "TypeError", "must be a number")
