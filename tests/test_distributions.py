"""Tests for dgmjax.distributions against scipy.stats and closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from jax.test_util import check_grads
from scipy.special import expit

from dgmjax import distributions as D
from dgmjax import gumbel as G
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("bernoulli_x_255", lambda: D.bernoulli_log_prob(255.0, 2.0, event_ndims=0),
     ValueError, r"x must be binary \(0 or 1\).*the first 255\.0"),
    ("bernoulli_x_grey_level", lambda: D.bernoulli_log_prob(jnp.array([0.0, 0.4, 1.0]), bi.z(3)),
     ValueError, r"x must be binary.*1 of 3 value\(s\).*0\.4.*index \(1,\)"),
    ("bernoulli_x_two", lambda: D.bernoulli_log_prob(jnp.array([2.0]), bi.z(1)),
     ValueError, r"x must be binary"),
    ("bernoulli_x_nan", lambda: D.bernoulli_log_prob(jnp.array([1.0, np.nan]), bi.z(2)),
     ValueError, r"x must be binary.*nan"),
    ("bernoulli_x_nan_image", lambda: D.bernoulli_log_prob(np.full((1, 2, 2, 1), np.nan),
                                                           bi.z(1, 2, 2, 1), event_ndims=3),
     ValueError, r"x must be binary.*4 of 4"),
    ("bernoulli_unit_interval_x_above_one",
     lambda: D.bernoulli_log_prob(jnp.array([1.5]), bi.z(1), support="unit_interval"),
     ValueError, r"x must be in \[0, 1\]"),
    ("bernoulli_unknown_support",
     lambda: D.bernoulli_log_prob(jnp.array([1.0]), bi.z(1), support="continuous"),
     ValueError, r"support must be one of"),
    ("normal_x_nan", lambda: D.normal_log_prob(jnp.array([0.0, np.nan]), 0.0, 0.0),
     ValueError, r"x contains 1 NaN value\(s\), the first at index \(1,\)"),
    ("standard_normal_x_inf", lambda: D.standard_normal_log_prob(jnp.array([np.inf])),
     ValueError, r"x contains 1 infinite"),
    ("mvn_x_nan", lambda: D.mvn_log_prob(jnp.array([np.nan, 0.0]), bi.z(2), jnp.eye(2)),
     ValueError, r"x contains 1 NaN"),
    ("categorical_index_equal_to_num_classes",
     lambda: D.categorical_log_prob(jnp.array([0, 4]), bi.z(2, 4)),
     ValueError, r"x must be class indices in \[0, 4\).*the first 4 at index \(1,\)"),
    ("categorical_index_negative", lambda: D.categorical_log_prob(jnp.array([-1]), bi.z(1, 4)),
     ValueError, r"x must be class indices in \[0, 4\).*-1"),
    ("categorical_float_indices", lambda: D.categorical_log_prob(jnp.array([1.0]), bi.z(1, 4)),
     TypeError, r"x must have an integer dtype, got float32"),
    ("categorical_bool_indices", lambda: D.categorical_log_prob(jnp.array([True]), bi.z(1, 4)),
     TypeError, r"x must have an integer dtype, got bool"),
    ("categorical_axis_bool", lambda: D.categorical_log_prob(jnp.array([1]), bi.z(1, 4), axis=True),
     TypeError, r"axis must be an int, got bool"),
    ("categorical_axis_out_of_range",
     lambda: D.categorical_log_prob(jnp.array([1]), bi.z(1, 4), axis=2),
     ValueError, r"axis=2 is out of range for logits of rank 2"),
    ("one_hot_two_ones", lambda: D.categorical_log_prob_one_hot(jnp.array([[1.0, 1.0, 0.0]]),
                                                                bi.z(1, 3)),
     ValueError, r"x summed over its class axis 1 must be 1.*the first 2\.0"),
    ("one_hot_all_zero", lambda: D.categorical_log_prob_one_hot(bi.z(2, 3), bi.z(2, 3)),
     ValueError, r"x summed over its class axis 1 must be 1.*2 of 2"),
    ("one_hot_relaxed_entries", lambda: D.categorical_log_prob_one_hot(
        jnp.array([[0.5, 0.5, 0.0]]), bi.z(1, 3)),
     ValueError, r"x must be one-hot on axis 1.*0\.5"),
    ("discretized_logistic_x_8bit_levels",
     lambda: D.discretized_logistic_log_prob(jnp.array([0.0, 255.0]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\] \(pixels scaled by 1/255.*255\.0 at index \(1,\)"),
    ("discretized_logistic_x_negative",
     lambda: D.discretized_logistic_log_prob(jnp.array([-0.1]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\]"),
    ("discretized_logistic_x_nan",
     lambda: D.discretized_logistic_log_prob(jnp.array([np.nan]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\].*nan"),
    ("discretized_logistic_num_bins_float",
     lambda: D.discretized_logistic_log_prob(bi.z(2), 0.5, 0.0, num_bins=256.0),
     TypeError, r"num_bins must be an int, got float 256\.0"),
    ("discretized_logistic_num_bins_bool",
     lambda: D.discretized_logistic_log_prob(bi.z(2), 0.5, 0.0, num_bins=True),
     TypeError, r"num_bins must be an int, got the bool True"),
    ("discretized_logistic_num_bins_one",
     lambda: D.discretized_logistic_log_prob(bi.z(2), 0.5, 0.0, num_bins=1),
     ValueError, r"num_bins must be an int >= 2, got 1"),
    ("event_ndims_float", lambda: D.normal_log_prob(bi.z(3), 0.0, 0.0, event_ndims=1.0),
     TypeError, r"event_ndims must be an int, got float"),
    ("event_ndims_bool", lambda: D.standard_normal_log_prob(bi.z(3), event_ndims=True),
     TypeError, r"event_ndims must be an int, got the bool"),
    ("event_ndims_negative", lambda: D.standard_normal_log_prob(bi.z(3), event_ndims=-1),
     ValueError, r"event_ndims must be an int >= 0, got -1"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _bernoulli_traced():
  x = jnp.array([[0.0, 1.0], [0.5, 1.0], [255.0, 0.0], [np.nan, 0.0]])
  out = jax.jit(D.bernoulli_log_prob)(x, jnp.full((4, 2), 2.0))
  return out, np.array([False, True, True, True])


def _bernoulli_unit_interval_traced():
  x = jnp.array([[0.3, 1.0], [1.5, 0.0]])
  out = jax.jit(lambda x, l: D.bernoulli_log_prob(x, l, support="unit_interval"))(x, bi.z(2, 2))
  return out, np.array([False, True])


def _bernoulli_traced_k_samples():
  # x [B, D] broadcast against [K, B, D] logits, the VAE layout
  x = jnp.array([[0.0, 1.0], [0.7, 1.0], [1.0, 1.0]])
  out = jax.jit(D.bernoulli_log_prob)(x, bi.z(5, 3, 2))
  return out, np.broadcast_to([False, True, False], (5, 3))


def _categorical_traced():
  out = jax.jit(D.categorical_log_prob)(jnp.array([0, 3, 4, -1]), bi.z(4, 4))
  return out, np.array([False, False, True, True])


def _one_hot_traced():
  x = jnp.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  out = jax.jit(D.categorical_log_prob_one_hot)(x, bi.z(4, 3))
  return out, np.array([False, True, True, True])


def _discretized_traced():
  x = jnp.array([0.0, 1.0, 1.2, -0.1, np.nan, 0.5])
  out = jax.jit(D.discretized_logistic_log_prob)(x, jnp.full(6, 0.5), bi.z(6))
  return out, np.array([False, False, True, True, True, False])


TRACED_NAN = [
    ("bernoulli_traced_off_support", _bernoulli_traced),
    ("bernoulli_unit_interval_traced_above_one", _bernoulli_unit_interval_traced),
    ("bernoulli_traced_grey_level_with_k_samples", _bernoulli_traced_k_samples),
    ("categorical_traced_index_out_of_range", _categorical_traced),
    ("one_hot_traced_not_one_hot", _one_hot_traced),
    ("discretized_logistic_traced_outside_unit_interval", _discretized_traced),
]


@bi.thunk_cases(TRACED_NAN)
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  bi.check_nan_exactly_where_bad(thunk)


_X_BIN = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
_L = bi.ON_SUPPORT_LOGITS
ON_SUPPORT = [
    ("bernoulli", lambda x, l: D.bernoulli_log_prob(x, l), _X_BIN, _L),
    ("bernoulli_unit_interval",
     lambda x, l: D.bernoulli_log_prob(x, l, support="unit_interval"), _X_BIN * 0.3, _L),
    ("categorical", lambda x, l: D.categorical_log_prob(x, l), jnp.array([2, 0]), _L),
    ("one_hot", lambda x, l: D.categorical_log_prob_one_hot(x, l), jnp.eye(3)[jnp.array([2, 0])],
     _L),
    ("discretized_logistic", lambda x, l: D.discretized_logistic_log_prob(x, l, l - 1.0),
     jnp.array([[0.0, 128 / 255, 1.0], [3 / 255, 1.0, 0.5]]), _L * 0.1),
]


@bi.on_support_cases(ON_SUPPORT)
def test_on_support_traced_values_and_gradients_equal_the_eager_ones(f, x, l):
  bi.check_traced_equals_eager(f, x, l)


def _accept_numpy_num_bins():
  x = jnp.array([0.0, 0.5, 1.0])
  np.testing.assert_array_equal(D.discretized_logistic_log_prob(x, 0.4, -1.0, np.int64(256)),
                                D.discretized_logistic_log_prob(x, 0.4, -1.0, 256))


def _accept_numpy_event_ndims():
  np.testing.assert_array_equal(D.standard_normal_log_prob(bi.z(2, 3), event_ndims=np.int32(2)),
                                D.standard_normal_log_prob(bi.z(2, 3), event_ndims=2))


def _accept_bernoulli_unit_interval():
  x, l = jnp.array([0.3, 1.0]), jnp.array([0.5, -1.0])
  got = D.bernoulli_log_prob(x, l, support="unit_interval")
  np.testing.assert_allclose(got, np.sum(np.asarray(x) * np.asarray(l)
                                         - np.log1p(np.exp(np.asarray(l)))), rtol=1e-6)


def _accept_uint8_class_indices():
  logits = jnp.log(jnp.array([[0.25, 0.75]]))
  np.testing.assert_allclose(D.categorical_log_prob(np.array([1], np.uint8), logits),
                             [math.log(0.75)], rtol=1e-6)


def _accept_straight_through_one_hot():
  y = G.gumbel_softmax(bi.key(), jnp.array([[0.3, -0.2, 1.5]]), 0.5, hard=True)
  logits = jnp.array([[0.3, -0.2, 1.5]])
  lp = D.categorical_log_prob_one_hot(y, logits)
  np.testing.assert_allclose(lp, jax.nn.log_softmax(logits)[0, int(jnp.argmax(y))], rtol=1e-6)


ACCEPTS = [
    ("numpy_int_num_bins", _accept_numpy_num_bins),
    ("numpy_int_event_ndims", _accept_numpy_event_ndims),
    ("bernoulli_unit_interval_cross_entropy", _accept_bernoulli_unit_interval),
    ("categorical_uint8_indices", _accept_uint8_class_indices),
    ("one_hot_straight_through_sample", _accept_straight_through_one_hot),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


# ----------------------------------------------------------------------------- discretized logistic


@pytest.mark.parametrize("log_scale", [-2.0, 0.0, 2.0, 5.0, 7.0])
def test_discretized_logistic_float32_matches_a_float64_oracle(log_scale):
  # Oracle: the bin mass sigma(b) - sigma(a) in float64 with scipy (relative error ~1e-11 here);
  # the difference of two float32 log-CDFs lost up to 1e-2 nats at log_scale = 5.
  rng = np.random.default_rng(1)
  x = (rng.integers(0, 256, size=5000) / 255.0).astype(np.float32)
  loc = rng.uniform(-0.5, 1.5, size=5000).astype(np.float32)
  ls = np.full(5000, log_scale, np.float32)
  got = np.asarray(jax.jit(D.discretized_logistic_log_prob)(x, loc, ls), np.float64)
  xs, mu, s, h = x.astype(np.float64), loc.astype(np.float64), np.exp(float(log_scale)), 0.5 / 255
  upper = np.where(xs > 1 - h, 1.0, expit((xs + h - mu) / s))
  lower = np.where(xs < h, 0.0, expit((xs - h - mu) / s))
  want = np.log(upper - lower)
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(want))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_discretized_logistic_masses_sum_to_one_at_large_scale():
  grid = jnp.arange(256, dtype=jnp.float32) / 255.0
  lp = D.discretized_logistic_log_prob(grid, 0.3, 5.0)
  assert abs(float(jax.nn.logsumexp(lp))) < 1e-5


RNG = np.random.default_rng(0)


def _tol(dtype):
  return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_log_prob_matches_scipy(dtype):
  with jax.enable_x64(dtype == np.float64):
    x = RNG.normal(size=(4, 3)).astype(dtype)
    loc = RNG.normal(size=(4, 3)).astype(dtype)
    log_scale = (0.3 * RNG.normal(size=(3,))).astype(dtype)
    got = jax.jit(D.normal_log_prob)(x, loc, log_scale)
    want = st.norm.logpdf(x, loc, np.exp(log_scale)).sum(-1)
    assert got.dtype == dtype and got.shape == (4,)
    np.testing.assert_allclose(got, want, **_tol(dtype))
    elementwise = D.normal_log_prob(x, loc, log_scale, event_ndims=0)
    np.testing.assert_allclose(elementwise, st.norm.logpdf(x, loc, np.exp(log_scale)),
                               **_tol(dtype))
    np.testing.assert_allclose(D.standard_normal_log_prob(x), st.norm.logpdf(x).sum(-1),
                               **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mvn_log_prob_matches_scipy(dtype):
  with jax.enable_x64(dtype == np.float64):
    a = RNG.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    x = RNG.normal(size=(5, 3)).astype(dtype)
    loc = RNG.normal(size=(3,)).astype(dtype)
    got = jax.jit(D.mvn_log_prob)(x, loc, np.linalg.cholesky(cov).astype(dtype))
    want = st.multivariate_normal(loc, cov).logpdf(x)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_log_prob_matches_scipy(dtype):
  with jax.enable_x64(dtype == np.float64):
    logits = (3 * RNG.normal(size=(6, 5))).astype(dtype)
    x = (RNG.uniform(size=(6, 5)) < 0.5).astype(dtype)
    got = jax.jit(D.bernoulli_log_prob)(x, logits)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    want = st.bernoulli.logpmf(x, p).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)
    # images [B, H, W, C] with event_ndims=3
    img = x.reshape(6, 5, 1, 1)
    np.testing.assert_allclose(D.bernoulli_log_prob(img, logits.reshape(6, 5, 1, 1),
                                                    event_ndims=3), got, rtol=1e-6)


def test_bernoulli_huge_logits_are_stable():
  logits = jnp.array([1e4, -1e4, 1e4, -1e4, 0.0], jnp.float32)
  x = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0], jnp.float32)
  lp = D.bernoulli_log_prob(x, logits, event_ndims=0)
  np.testing.assert_allclose(lp, [0.0, 0.0, -1e4, -1e4, -math.log(2)], rtol=1e-6)
  g = jax.grad(lambda l: D.bernoulli_log_prob(x, l))(logits)
  assert np.all(np.isfinite(g))
  np.testing.assert_allclose(g, x - jax.nn.sigmoid(logits), atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_log_prob_index_and_one_hot(dtype):
  with jax.enable_x64(dtype == np.float64):
    logits = (2 * RNG.normal(size=(7, 4))).astype(dtype)
    idx = RNG.integers(0, 4, size=(7,))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    want = np.log(p[np.arange(7), idx])
    np.testing.assert_allclose(jax.jit(D.categorical_log_prob)(idx, logits), want,
                               **_tol(dtype))
    one_hot = np.eye(4, dtype=dtype)[idx]
    np.testing.assert_allclose(D.categorical_log_prob_one_hot(one_hot, logits), want,
                               **_tol(dtype))
    # several categorical variables summed with event_ndims=1
    np.testing.assert_allclose(D.categorical_log_prob(idx.reshape(1, 7), logits[None],
                                                      event_ndims=1), [want.sum()],
                               rtol=1e-5)
    # a class with -inf logit that is not selected does not produce NaN
    l2 = logits.copy()
    l2[:, 0] = -np.inf
    sel = np.eye(4, dtype=dtype)[np.full(7, 1)]
    assert np.all(np.isfinite(D.categorical_log_prob_one_hot(sel, l2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_entropies_and_kls_match_closed_forms(dtype):
  with jax.enable_x64(dtype == np.float64):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    mq, lq = RNG.normal(size=(3, 4)).astype(dtype), (0.5 * RNG.normal(size=(3, 4))).astype(dtype)
    mp, lp = RNG.normal(size=(3, 4)).astype(dtype), (0.5 * RNG.normal(size=(3, 4))).astype(dtype)
    sq, sp = np.exp(lq.astype(np.float64)), np.exp(lp.astype(np.float64))
    want = (np.log(sp / sq) + (sq**2 + (mq - mp)**2) / (2 * sp**2) - 0.5).sum(-1)
    np.testing.assert_allclose(jax.jit(D.kl_normal_normal)(mq, lq, mp, lp), want, **tol)
    want0 = (-np.log(sq) + (sq**2 + mq**2) / 2 - 0.5).sum(-1)
    np.testing.assert_allclose(D.kl_normal_standard_normal(mq, lq), want0, **tol)
    np.testing.assert_allclose(D.kl_normal_normal(mq, lq, 0.0, 0.0), want0, **tol)
    np.testing.assert_allclose(D.normal_entropy(lq), st.norm(0, sq).entropy().sum(-1), **tol)
    logits = RNG.normal(size=(5, 6)).astype(dtype)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(D.categorical_entropy(logits), st.entropy(p, axis=-1), **tol)
    np.testing.assert_allclose(D.kl_categorical_uniform(logits),
                               st.entropy(p, np.full_like(p, 1 / 6), axis=-1), **tol)
    logits_p = RNG.normal(size=(5, 6)).astype(dtype)
    pp = np.exp(logits_p.astype(np.float64))
    pp /= pp.sum(-1, keepdims=True)
    np.testing.assert_allclose(D.kl_categorical_categorical(logits, logits_p),
                               st.entropy(p, pp, axis=-1), **tol)


def test_analytic_kl_agrees_with_monte_carlo():
  mq, lq = jnp.array([0.3, -1.0, 2.0]), jnp.array([-0.5, 0.2, 0.1])
  mp, lp = jnp.array([0.0, 0.5, 1.0]), jnp.array([0.3, -0.2, 0.0])
  keys = jax.random.split(jax.random.key(0), 200_000)
  z = jax.vmap(D.sample_normal, (0, None, None))(keys, mq, lq)
  samples = D.normal_log_prob(z, mq, lq) - D.normal_log_prob(z, mp, lp)
  mc, se = float(samples.mean()), float(samples.std() / np.sqrt(samples.size))
  assert abs(mc - float(D.kl_normal_normal(mq, lq, mp, lp))) < 4 * se
  logits = jnp.array([2.0, 0.0, -1.0, 0.5])
  idx = jax.vmap(D.sample_categorical, (0, None))(jax.random.split(jax.random.key(1), 100_000),
                                                   logits)
  lr = D.categorical_log_prob(idx, logits) + math.log(4)
  assert abs(float(lr.mean()) - float(D.kl_categorical_uniform(logits))) < 4 * float(
      lr.std() / np.sqrt(lr.size))


def test_sample_normal_moments_and_reparam_gradient():
  loc, log_scale = jnp.array([1.0, -2.0]), jnp.array([0.0, -1.0])
  keys = jax.random.split(jax.random.key(2), 50_000)
  z = jax.jit(jax.vmap(D.sample_normal, (0, None, None)))(keys, loc, log_scale)
  assert z.shape == (50_000, 2)
  for d in range(2):
    assert st.kstest(np.asarray(z[:, d]), "norm", args=(float(loc[d]),
                                                         float(np.exp(log_scale[d])))).pvalue > 0.01
  # d z / d loc = 1, d z / d log_scale = sigma * eps = z - loc
  k = jax.random.key(3)
  z1 = D.sample_normal(jax.random.clone(k), loc, log_scale)  # same draw twice, on purpose
  g = jax.grad(lambda ls: D.sample_normal(k, loc, ls).sum())(log_scale)
  np.testing.assert_allclose(g, z1 - loc, rtol=1e-6)


def test_sample_bernoulli_and_mvn():
  logits = jnp.array([-1.0, 0.0, 2.0])
  x = jax.vmap(D.sample_bernoulli, (0, None))(jax.random.split(jax.random.key(4), 40_000), logits)
  np.testing.assert_allclose(x.mean(0), jax.nn.sigmoid(logits), atol=0.01)
  assert set(np.unique(np.asarray(x))) <= {0.0, 1.0}
  tril = jnp.array([[1.0, 0.0], [0.8, 0.5]])
  z = jax.vmap(D.sample_mvn, (0, None, None))(jax.random.split(jax.random.key(5), 40_000),
                                              jnp.zeros(2), tril)
  np.testing.assert_allclose(np.cov(np.asarray(z).T), tril @ tril.T, atol=0.03)


def test_gradients_float64(x64):
  x = jnp.array([[0.2, -0.4, 1.3]])
  loc, ls = jnp.array([0.1, 0.2, -0.3]), jnp.array([-0.2, 0.1, 0.4])
  check_grads(lambda l, s: D.normal_log_prob(x, l, s), (loc, ls), order=2)
  check_grads(D.standard_normal_log_prob, (x,), order=2)
  check_grads(D.kl_normal_standard_normal, (loc, ls), order=2)
  check_grads(lambda a, b: D.kl_normal_normal(a, b, ls, loc), (loc, ls), order=2)
  check_grads(D.normal_entropy, (ls,), order=2)
  xb = jnp.array([1.0, 0.0, 1.0])
  check_grads(lambda l: D.bernoulli_log_prob(xb, l), (loc,), order=2)
  logits = jnp.array([[0.3, -1.0, 2.0, 0.1]])
  check_grads(lambda l: D.categorical_log_prob(jnp.array([2]), l), (logits,), order=2)
  check_grads(lambda l: D.categorical_log_prob_one_hot(jnp.eye(4)[1:2], l), (logits,), order=2)
  check_grads(D.categorical_entropy, (logits,), order=2)
  check_grads(D.kl_categorical_uniform, (logits,), order=2)
  check_grads(lambda l: D.kl_categorical_categorical(l, logits[::-1]), (logits,), order=2)
  tril = jnp.array([[1.0, 0.0], [0.3, 0.7]])
  # finite differences perturb every entry of t: jnp.tril keeps the factor lower triangular
  check_grads(lambda m, t: D.mvn_log_prob(jnp.array([0.2, 0.1]), m, jnp.tril(t)),
              (jnp.array([0.0, 0.5]), tril), order=1)
  # a fresh key per call: the same noise each time, without reusing a consumed key
  check_grads(lambda m, s: D.sample_normal(jax.random.key(0), m, s), (loc, ls), order=2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes_are_kept(dtype):
  x = jnp.ones((2, 3), dtype)
  p = jnp.zeros((2, 3), dtype)
  assert D.normal_log_prob(x, p, p).dtype == dtype
  assert D.standard_normal_log_prob(x).dtype == dtype
  assert D.bernoulli_log_prob(x, p).dtype == dtype
  assert D.kl_normal_standard_normal(p, p).dtype == dtype
  assert D.kl_normal_normal(p, p, x, p).dtype == dtype
  assert D.categorical_log_prob(jnp.array([0, 1]), p).dtype == dtype
  assert D.kl_categorical_uniform(p).dtype == dtype
  assert D.sample_normal(jax.random.key(0), p, p).dtype == dtype
  np.testing.assert_allclose(np.float32(D.normal_log_prob(x, p, p)[0]),
                             st.norm.logpdf(1.0) * 3, rtol=1e-2)


def test_mismatched_shapes_raise():
  with pytest.raises(ValueError, match="log_scale"):
    D.normal_log_prob(jnp.zeros((4, 3)), jnp.zeros((4, 3)), jnp.zeros((2,)))
  with pytest.raises(ValueError, match="logits"):
    D.bernoulli_log_prob(jnp.zeros((4, 3)), jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match="loc_p"):
    D.kl_normal_normal(jnp.zeros(3), jnp.zeros(3), jnp.zeros(4), jnp.zeros(3))
  with pytest.raises(ValueError, match="event_ndims"):
    D.standard_normal_log_prob(jnp.zeros(3), event_ndims=2)
  with pytest.raises(ValueError, match="scale_tril"):
    D.mvn_log_prob(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3))


def test_vmap_matches_python_loop():
  x = RNG.normal(size=(5, 4)).astype(np.float32)
  loc = RNG.normal(size=(5, 4)).astype(np.float32)
  ls = RNG.normal(size=(5, 4)).astype(np.float32)
  v = jax.vmap(D.normal_log_prob)(x, loc, ls)
  loop = np.array([D.normal_log_prob(x[i], loc[i], ls[i]) for i in range(5)])
  np.testing.assert_allclose(v, loop, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Samplers never turn invalid parameters into a valid draw; complex input is refused by name
# ---------------------------------------------------------------------------------------------

_BAD_LOGITS = [("nan", [np.nan, 0.0, 1.0]), ("all_neg_inf", [-np.inf] * 3),
               ("pos_inf", [np.inf, 0.0, 1.0])]


@pytest.mark.parametrize("logits", [l for _, l in _BAD_LOGITS], ids=[n for n, _ in _BAD_LOGITS])
def test_sample_categorical_concrete_invalid_logits_raise_naming_logits(logits):
  with pytest.raises(ValueError, match="logits"):
    D.sample_categorical(jax.random.key(0), jnp.array(logits))


def test_sample_categorical_traced_invalid_logits_give_minus_one_and_nan_log_prob():
  logits = jnp.array([[np.nan, 0.0, 1.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]])

  @jax.jit
  def draw_and_score(key, logits):
    x = D.sample_categorical(key, logits)
    return x, D.categorical_log_prob(x, logits)

  for i in range(20):
    x, lp = draw_and_score(jax.random.key(i), logits)
    np.testing.assert_array_equal(x[:3], [-1, -1, -1])
    assert int(x[3]) in (1, 2)                     # a masked class is never drawn
    assert np.all(np.isnan(lp[:3])) and np.isfinite(lp[3])
  with pytest.raises(ValueError, match="x"):       # the marker, once concrete, is no class
    D.categorical_log_prob(x, logits)


def test_sample_categorical_traced_marker_on_another_axis():
  logits = jnp.array([[np.nan, 0.0], [1.0, 2.0]])   # classes on axis 0: column 0 is invalid
  x = jax.jit(lambda k, l: D.sample_categorical(k, l, axis=0))(jax.random.key(0), logits)
  assert int(x[0]) == -1 and int(x[1]) in (0, 1)


def test_sample_categorical_refuses_integer_logits_by_name():
  with pytest.raises(TypeError, match="logits"):
    D.sample_categorical(jax.random.key(0), jnp.array([0, 1, 2]))


def test_sample_bernoulli_nan_logits_raise_concrete_and_mark_traced():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="logits"):
    D.sample_bernoulli(key, jnp.array([np.nan, 0.0]))
  logits = jnp.array([np.nan, np.inf, -np.inf, 0.0])
  x = jax.jit(D.sample_bernoulli)(jax.random.key(1), logits)
  assert np.isnan(x[0]) and float(x[1]) == 1.0 and float(x[2]) == 0.0 and float(x[3]) in (0, 1)
  xi = jax.jit(lambda k, l: D.sample_bernoulli(k, l, jnp.int32))(jax.random.key(2), logits)
  assert int(xi[0]) == -1 and xi.dtype == jnp.int32
  lp = jax.jit(lambda x, l: D.bernoulli_log_prob(x, l, event_ndims=0))(xi[:1], jnp.zeros(1))
  assert np.isnan(lp[0])                           # the marker has no probability


@pytest.mark.parametrize("dtype", [jnp.bool_, jnp.uint8, "not a dtype"])
def test_sample_bernoulli_refuses_dtypes_that_cannot_hold_the_marker(dtype):
  with pytest.raises(TypeError, match="dtype"):
    D.sample_bernoulli(jax.random.key(0), jnp.zeros(2), dtype)


@pytest.mark.parametrize("arg", ["loc", "log_scale"])
def test_sample_normal_concrete_nan_parameters_raise_naming_them(arg):
  params = {"loc": jnp.zeros(2), "log_scale": jnp.zeros(2)}
  params[arg] = jnp.array([np.nan, 0.0])
  with pytest.raises(ValueError, match=arg):
    D.sample_normal(jax.random.key(0), **params)


_BAD_TRIL = [("upper_triangle", [[1.0, 3.0], [0.0, 1.0]], "lower triangular"),
             ("zero_diagonal", [[0.0, 0.0], [0.0, 1.0]], "positive diagonal"),
             ("negative_diagonal", [[-1.0, 0.0], [0.0, 1.0]], "positive diagonal"),
             ("nan", [[np.nan, 0.0], [0.0, 1.0]], "NaN")]


@pytest.mark.parametrize("tril,what", [c[1:] for c in _BAD_TRIL], ids=[c[0] for c in _BAD_TRIL])
def test_mvn_concrete_scale_tril_checked_naming_it(tril, what):
  tril = jnp.array(tril)
  with pytest.raises(ValueError, match=f"scale_tril.*{what}|{what}.*scale_tril"):
    D.mvn_log_prob(jnp.zeros(2), jnp.zeros(2), tril)
  with pytest.raises(ValueError, match=f"scale_tril.*{what}|{what}.*scale_tril"):
    D.sample_mvn(jax.random.key(0), jnp.zeros(2), tril)


def test_mvn_traced_invalid_scale_tril_gives_nan_exactly_there():
  good = jnp.array([[1.0, 0.0], [0.5, 2.0]])
  trils = jnp.stack([good, jnp.array([[1.0, 3.0], [0.0, 1.0]]), jnp.array([[0.0, 0.0], [0.0, 1.0]]),
                     good * jnp.array([[-1.0], [1.0]])])
  lp = jax.jit(D.mvn_log_prob)(jnp.ones((4, 2)), jnp.zeros((4, 2)), trils)
  np.testing.assert_array_equal(np.isnan(lp), [False, True, True, True])
  np.testing.assert_allclose(lp[0], D.mvn_log_prob(jnp.ones(2), jnp.zeros(2), good), rtol=1e-6)
  z = jax.jit(D.sample_mvn)(jax.random.key(0), jnp.zeros((4, 2)), trils)
  np.testing.assert_array_equal(np.isnan(z), np.repeat([[False], [True], [True], [True]], 2, 1))
  z1 = jax.jit(D.sample_mvn)(jax.random.key(1), jnp.zeros((3, 2)), trils[1])   # shared [D, D]
  assert z1.shape == (3, 2) and np.all(np.isnan(z1))


def test_categorical_axis_out_of_range_named():
  for f in (D.categorical_entropy, D.kl_categorical_uniform):
    with pytest.raises(ValueError, match="axis"):
      f(jnp.zeros((2, 3)), axis=5)
  with pytest.raises(ValueError, match="axis"):
    D.kl_categorical_categorical(jnp.zeros((2, 3)), jnp.zeros((2, 3)), axis=2)


def test_distributions_refuse_complex_input_by_name_without_the_test_hook():
  from tests.unhooked import assert_raises_naming, errors_without_hook
  results = errors_without_hook("""
      import jax, jax.numpy as jnp
      from dgmjax import distributions as D
      K = jax.random.key(0)
      C = jnp.array([[0.3, 0.2], [1.0, -1.0]]) + 1j
      R = jnp.array([[0.3, 0.2], [1.0, -1.0]])
      CASES = {
          "normal x": lambda: D.normal_log_prob(C, 0.0, 0.0),
          "normal loc": lambda: D.normal_log_prob(R, C, 0.0),
          "normal log_scale": lambda: D.normal_log_prob(R, 0.0, C),
          "normal python list": lambda: D.normal_log_prob([1j, 2.0], 0.0, 0.0),
          "standard normal": lambda: D.standard_normal_log_prob(C),
          "sample_normal": lambda: D.sample_normal(K, C, 0.0),
          "entropy": lambda: D.normal_entropy(C),
          "kl std": lambda: D.kl_normal_standard_normal(C, 0.0),
          "kl": lambda: D.kl_normal_normal(R, 0.0, C, 0.0),
          "mvn x": lambda: D.mvn_log_prob(C, jnp.zeros(2), jnp.eye(2)),
          "mvn tril": lambda: D.mvn_log_prob(R, jnp.zeros(2), jnp.eye(2) + 0j),
          "sample_mvn": lambda: D.sample_mvn(K, C[0], jnp.eye(2)),
          "bernoulli logits": lambda: D.bernoulli_log_prob(jnp.ones(2), C),
          "bernoulli x": lambda: D.bernoulli_log_prob(jnp.ones(2) + 0j, R),
          "sample_bernoulli": lambda: D.sample_bernoulli(K, C),
          "categorical": lambda: D.categorical_log_prob(jnp.array([0, 1]), C),
          "one_hot": lambda: D.categorical_log_prob_one_hot(jnp.eye(2), C),
          "sample_categorical": lambda: D.sample_categorical(K, C),
          "cat entropy": lambda: D.categorical_entropy(C),
          "kl uniform": lambda: D.kl_categorical_uniform(C),
          "kl cat": lambda: D.kl_categorical_categorical(C, R),
          "discretized logistic": lambda: D.discretized_logistic_log_prob(jnp.full(2, 0.5), C, 0.0),
          "jit normal": lambda: jax.jit(D.normal_log_prob)(C, 0.0, 0.0),
          # shape errors the test session's hook would report first
          "mvn loc shape": lambda: D.sample_mvn(K, jnp.zeros(3), jnp.eye(2)),
          "mvn tril shape": lambda: D.sample_mvn(K, jnp.zeros(3), jnp.ones(3)),
      }
  """)
  assert_raises_naming(results, {"mvn loc shape": "loc", "mvn tril shape": "scale_tril"},
                       "ValueError", "must be")
  assert_raises_naming(results, {
      "normal x": "x", "normal loc": "loc", "normal log_scale": "log_scale",
      "normal python list": "x", "standard normal": "x", "sample_normal": "loc",
      "entropy": "log_scale", "kl std": "loc", "kl": "loc_p", "mvn x": "x",
      "mvn tril": "scale_tril", "sample_mvn": "loc", "bernoulli logits": "logits",
      "bernoulli x": "x", "sample_bernoulli": "logits", "categorical": "logits",
      "one_hot": "logits", "sample_categorical": "logits", "cat entropy": "logits",
      "kl uniform": "logits", "kl cat": "logits_q", "discretized logistic": "loc",
      "jit normal": "x"})
