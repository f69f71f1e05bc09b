"""Tests for dgmjax.gumbel: exact Gumbel-max sampling, relaxation limits, Concrete density."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from jax.test_util import check_grads
from scipy.special import gammaln, log_softmax, logsumexp

from dgmjax import gumbel as G
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("gumbel_softmax_temperature_zero", lambda: G.gumbel_softmax(bi.key(), bi.z(3), 0.0),
     ValueError, r"temperature must be finite and > 0.*0\.0"),
    ("gumbel_softmax_temperature_nan", lambda: G.gumbel_softmax(bi.key(), bi.z(3), np.nan),
     ValueError, r"temperature must be finite and > 0.*nan"),
    ("gumbel_softmax_temperature_inf", lambda: G.gumbel_softmax(bi.key(), bi.z(3), np.inf),
     ValueError, r"temperature must be finite and > 0.*inf"),
    ("gumbel_softmax_temperature_bool", lambda: G.gumbel_softmax(bi.key(), bi.z(3), True),
     TypeError, r"temperature must be a real number, got dtype bool"),
    ("gumbel_softmax_temperature_per_row_lines_up_with_classes",
     lambda: G.gumbel_softmax(bi.key(), bi.z(3, 3), jnp.array([0.5, 1.0, 2.0])),
     ValueError, r"temperature with shape \(3,\) would broadcast against the class axis -1 of "
                 r"logits with shape \(3, 3\).*shape \(3, 1\)"),
    ("gumbel_softmax_temperature_rank_too_high",
     lambda: G.gumbel_softmax(bi.key(), bi.z(3), jnp.ones((2, 1, 1))),
     ValueError, r"temperature with shape \(2, 1, 1\) would broadcast against the class axis"),
    ("gumbel_softmax_temperature_does_not_broadcast",
     lambda: G.gumbel_softmax(bi.key(), bi.z(3, 4), jnp.ones((2, 1))),
     ValueError, r"temperature with shape \(2, 1\) does not broadcast against logits"),
    ("gumbel_softmax_hard_not_bool", lambda: G.gumbel_softmax(bi.key(), bi.z(3), 1.0, hard="yes"),
     TypeError, r"hard must be a bool, got str"),
    ("gumbel_softmax_hard_and_log_space",
     lambda: G.gumbel_softmax(bi.key(), bi.z(3), 1.0, hard=True, log_space=True),
     ValueError, r"hard=True and log_space=True do not combine"),
    ("gumbel_softmax_integer_logits",
     lambda: G.gumbel_softmax(bi.key(), jnp.zeros(3, jnp.int32), 1.0),
     TypeError, r"logits must have a floating dtype, got int32"),
    ("sample_gumbel_integer_dtype", lambda: G.sample_gumbel(bi.key(), (3,), jnp.int32),
     TypeError, r"dtype must be a floating dtype, got int32"),
    ("gumbel_max_integer_logits", lambda: G.gumbel_max(bi.key(), jnp.zeros(3, jnp.int32)),
     TypeError, r"logits must have a floating dtype, got int32"),
    ("concrete_temperature_negative",
     lambda: G.concrete_log_prob(jnp.full(3, 1 / 3), bi.z(3), -1.0),
     ValueError, r"temperature must be finite and > 0"),
    ("concrete_temperature_per_row_lines_up_with_classes",
     lambda: G.concrete_log_prob(jnp.full((2, 2), 0.5), bi.z(2, 2), jnp.array([0.5, 1.0])),
     ValueError, r"temperature with shape \(2,\) would broadcast against the class axis"),
    ("concrete_y_vertex", lambda: G.concrete_log_prob(jnp.array([1.0, 0.0, 0.0]), bi.z(3), 0.5),
     ValueError, r"y must be in the open simplex \(entries > 0; a one-hot vertex.*index \(1,\)"),
    ("concrete_y_negative_entry",
     lambda: G.concrete_log_prob(jnp.array([1.2, -0.2]), bi.z(2), 0.5),
     ValueError, r"y must be in the open simplex.*-0\.2"),
    ("concrete_y_not_normalised",
     lambda: G.concrete_log_prob(jnp.array([[0.2, 0.3], [0.4, 0.6]]), bi.z(2, 2), 0.5),
     ValueError, r"y summed over the simplex axis must be 1 \(to 0\.0001\).*1 of 2.*index \(0,\)"),
    ("concrete_y_nan", lambda: G.concrete_log_prob(jnp.array([np.nan, 0.5]), bi.z(2), 0.5),
     ValueError, r"y must be in the open simplex.*nan"),
    ("concrete_y_integer_dtype",
     lambda: G.concrete_log_prob(jnp.array([0, 1]), bi.z(2), 0.5),
     TypeError, r"y must have a floating dtype, got int32"),
    ("concrete_log_space_minus_inf",
     lambda: G.concrete_log_prob(jnp.array([0.0, -np.inf]), bi.z(2), 0.5, log_space=True),
     ValueError, r"y must be finite log-probabilities"),
    ("concrete_log_space_not_normalised",
     lambda: G.concrete_log_prob(jnp.log(jnp.array([0.3, 0.3])), bi.z(2), 0.5, log_space=True),
     ValueError, r"logsumexp of log y over the simplex axis must be 0"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _concrete_traced():
  y = jnp.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.6], [-0.1, 1.1]])
  out = jax.jit(G.concrete_log_prob)(y, bi.z(4, 2), 0.5)
  return out, np.array([False, True, True, True])


def _concrete_log_space_traced():
  log_y = jnp.array([[math.log(0.2), math.log(0.8)], [0.0, -np.inf], [0.0, 0.0]])
  out = jax.jit(lambda y, l: G.concrete_log_prob(y, l, 0.5, log_space=True))(log_y, bi.z(3, 2))
  return out, np.array([False, True, True])


def _concrete_traced_temperature():
  t = jnp.array([[0.5], [0.0], [-1.0], [np.nan]])
  out = jax.jit(G.concrete_log_prob)(jnp.full((4, 2), 0.5), bi.z(4, 2), t)
  return out, np.array([False, True, True, True])


def _gumbel_softmax_traced_temperature():
  t = jnp.array([[0.5], [-0.5], [0.0]])
  out = jax.jit(G.gumbel_softmax)(bi.key(), bi.z(3, 4), t)
  return out, np.broadcast_to(np.array([[False], [True], [True]]), (3, 4))


TRACED_NAN = [
    ("concrete_traced_off_simplex", _concrete_traced),
    ("concrete_log_space_traced_off_simplex", _concrete_log_space_traced),
    ("concrete_traced_temperature_not_positive", _concrete_traced_temperature),
    ("gumbel_softmax_traced_temperature_not_positive", _gumbel_softmax_traced_temperature),
]


@bi.thunk_cases(TRACED_NAN)
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  bi.check_nan_exactly_where_bad(thunk)


_L = bi.ON_SUPPORT_LOGITS
ON_SUPPORT = [
    ("concrete", lambda y, l: G.concrete_log_prob(y, l, 0.7), jax.nn.softmax(_L[::-1]), _L),
    ("concrete_log_space", lambda y, l: G.concrete_log_prob(y, l, 0.7, log_space=True),
     jax.nn.log_softmax(_L[::-1]), _L),
]


@bi.on_support_cases(ON_SUPPORT)
def test_on_support_traced_values_and_gradients_equal_the_eager_ones(f, x, l):
  bi.check_traced_equals_eager(f, x, l)


# ----------------------------------------------------------------------------- Concrete density


def _concrete_oracle(log_y, logits, tau):
  """The Concrete log-density in float64 NumPy (Maddison et al., Definition 1)."""
  c = log_y.shape[-1]
  return (gammaln(c) + (c - 1) * np.log(tau) + np.sum(logits - (tau + 1) * log_y, -1)
          - c * logsumexp(logits - tau * log_y, -1))


def test_concrete_log_prob_is_finite_for_gumbel_softmax_samples_at_low_temperature():
  tau, key = 0.05, bi.key(7)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4096, 10)), jnp.float32)
  y = G.gumbel_softmax(jax.random.clone(key), logits, tau)
  g = G.sample_gumbel(jax.random.clone(key), logits.shape, jnp.float32)   # the same noise
  # Without the floor, most of these samples have entries that underflow to 0 (density -> nan).
  raw = np.asarray(jax.nn.softmax((logits + g) / tau, axis=-1))
  assert np.mean(np.any(raw == 0, axis=-1)) > 0.3
  lp = np.asarray(G.concrete_log_prob(y, logits, tau))
  assert np.mean(np.isfinite(lp)) == 1.0
  # ... and it is the density of the point returned, to float32 accuracy.
  want = _concrete_oracle(np.log(np.asarray(y, np.float64)), np.asarray(logits, np.float64), tau)
  np.testing.assert_allclose(lp, want, rtol=2e-6)
  # jitted (traced y) agrees and is finite too
  np.testing.assert_allclose(jax.jit(G.concrete_log_prob)(y, logits, tau), lp, rtol=1e-6)


def test_concrete_log_space_samples_are_exact_at_low_temperature():
  # log y from log_softmax needs no floor: the density of the exact sample for this noise.
  tau, key = 0.05, bi.key(8)
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(2048, 10)), jnp.float32)
  log_y = G.gumbel_softmax(jax.random.clone(key), logits, tau, log_space=True)
  g = np.asarray(G.sample_gumbel(jax.random.clone(key), logits.shape, jnp.float32), np.float64)
  l64 = np.asarray(logits, np.float64)
  exact_log_y = log_softmax((l64 + g) / tau, axis=-1)          # float64: nothing underflows
  assert np.min(exact_log_y) < np.log(np.finfo(np.float32).tiny)   # float32 y would underflow
  lp = np.asarray(G.concrete_log_prob(log_y, logits, tau, log_space=True))
  assert np.all(np.isfinite(lp))
  np.testing.assert_allclose(lp, _concrete_oracle(exact_log_y, l64, tau), rtol=2e-6)


# ----------------------------------------------------------------------------- temperature shape


def test_per_row_temperature_with_batch_equal_to_classes_is_applied_per_row():
  # B == C == 3: a [B, 1] temperature is one temperature per row, checked against row-by-row calls.
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3)), jnp.float32)
  temps = np.array([0.3, 1.0, 3.0], np.float32)
  key = bi.key(9)
  g = G.sample_gumbel(jax.random.clone(key), (3, 3), jnp.float32)
  y = G.gumbel_softmax(jax.random.clone(key), logits, jnp.asarray(temps)[:, None])
  want = np.stack([np.asarray(jax.nn.softmax((logits[i] + g[i]) / temps[i])) for i in range(3)])
  np.testing.assert_allclose(y, want, rtol=1e-6)
  lp = G.concrete_log_prob(y, logits, jnp.asarray(temps)[:, None])
  want_lp = [float(G.concrete_log_prob(y[i], logits[i], float(temps[i]))) for i in range(3)]
  np.testing.assert_allclose(lp, want_lp, rtol=1e-6)
  # a scalar-shaped [1] temperature broadcasts like a scalar
  np.testing.assert_allclose(G.concrete_log_prob(y, logits, jnp.array([0.5])),
                             G.concrete_log_prob(y, logits, 0.5), rtol=1e-6)


def test_sample_gumbel_is_finite_and_gumbel_distributed():
  g = jax.jit(G.sample_gumbel, static_argnums=(1, 2))(jax.random.key(0), (200_000,), jnp.float32)
  assert g.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(g)))
  assert st.kstest(np.asarray(g[:20_000]), "gumbel_r").pvalue > 0.01
  # the extreme uniforms map to finite values
  tiny = float(jnp.finfo(jnp.float32).tiny)
  u = jnp.array([tiny, 1.0 - float(jnp.finfo(jnp.float32).epsneg)], jnp.float32)
  assert bool(jnp.all(jnp.isfinite(-jnp.log(-jnp.log(u)))))
  for dtype in (jnp.bfloat16, jnp.float16):
    g = G.sample_gumbel(jax.random.key(1), (100_000,), dtype)
    assert g.dtype == dtype and bool(jnp.all(jnp.isfinite(g)))


def test_gumbel_max_matches_softmax_chi_square():
  logits = jnp.array([1.0, -0.5, 0.3, 2.0, -2.0])
  n = 100_000
  idx = jax.jit(jax.vmap(G.gumbel_max, (0, None)))(jax.random.split(jax.random.key(0), n), logits)
  counts = np.bincount(np.asarray(idx), minlength=5)
  expected = n * np.asarray(jax.nn.softmax(logits), np.float64)
  assert st.chisquare(counts, expected).pvalue > 0.01


def test_gumbel_softmax_tends_to_gumbel_max_as_temperature_vanishes():
  logits = jnp.array([[0.5, 1.0, -1.0, 0.0]] * 64)
  key = jax.random.key(3)
  hard_idx = G.gumbel_max(jax.random.clone(key), logits)  # same noise on purpose
  one_hot = jax.nn.one_hot(hard_idx, 4)
  errs = []
  for tau in (1.0, 0.1, 0.01, 1e-3):
    y = G.gumbel_softmax(jax.random.clone(key), logits, tau)
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)
    errs.append(float(jnp.abs(y - one_hot).max()))
  assert errs[-1] < 1e-3 and errs == sorted(errs, reverse=True)


def test_hard_gumbel_softmax_is_one_hot_forward_with_relaxed_gradient():
  logits = jnp.array([[0.3, -0.2, 1.5], [2.0, 0.0, -1.0]])
  key = jax.random.key(4)
  y_hard = jax.jit(lambda k, l: G.gumbel_softmax(k, l, 0.5, hard=True))(jax.random.clone(key),
                                                                         logits)
  assert set(np.unique(np.asarray(y_hard))) == {0.0, 1.0}
  np.testing.assert_array_equal(y_hard.sum(-1), 1.0)
  np.testing.assert_array_equal(jnp.argmax(y_hard, -1), G.gumbel_max(jax.random.clone(key),
                                                                     logits))
  w = jnp.array([[1.0, 2.0, -3.0]])
  g_hard = jax.grad(lambda l: (G.gumbel_softmax(jax.random.clone(key), l, 0.5, hard=True)
                               * w).sum())(logits)
  g_soft = jax.grad(lambda l: (G.gumbel_softmax(jax.random.clone(key), l, 0.5) * w).sum())(logits)
  np.testing.assert_allclose(g_hard, g_soft, rtol=1e-6)
  assert float(jnp.abs(g_hard).sum()) > 0


def test_straight_through_value_and_gradient():
  soft = jnp.array([0.1, 0.7, 0.2])
  hard = jnp.array([0.0, 1.0, 0.0])
  np.testing.assert_array_equal(G.straight_through(hard, soft), hard)
  g = jax.grad(lambda s: (G.straight_through(hard, s) * jnp.array([1.0, 2.0, 3.0])).sum())(soft)
  np.testing.assert_array_equal(g, [1.0, 2.0, 3.0])


def _softmax_grid(k, lo=-40.0, hi=40.0, n=1601):
  """Points of the open simplex as softmax([t, 0]) on a grid of t, with log|det dy/dt|."""
  t = np.linspace(lo, hi, n)
  grids = np.meshgrid(*([t] * (k - 1)), indexing="ij")
  tt = np.stack([g.ravel() for g in grids] + [np.zeros(grids[0].size)], -1)
  log_y = jax.nn.log_softmax(jnp.asarray(tt), axis=-1)
  # y = softmax(t_1..t_{k-1}, 0): the Jacobian of (t_1..t_{k-1}) -> (y_1..y_{k-1}) has
  # determinant y_1 * ... * y_k.
  return jnp.exp(log_y), jnp.sum(log_y, -1), (t[1] - t[0]) ** (k - 1)


@pytest.mark.parametrize("k,tau", [(2, 0.5), (2, 1.5), (3, 0.7), (3, 1.0)])
def test_concrete_density_integrates_to_one(x64, k, tau):
  logits = np.array([0.4, -0.3, 0.1][:k])
  y, log_jac, cell = _softmax_grid(k, n=20001 if k == 2 else 1201)
  log_p = jax.jit(G.concrete_log_prob)(y, logits, tau)
  total = float(jnp.sum(jnp.exp(log_p + log_jac)) * cell)
  assert abs(total - 1) < 1e-3, total


def test_concrete_log_prob_matches_change_of_variables_k2():
  # For K=2, y1 = sigmoid((l1 - l2 + L) / tau) with L ~ Logistic(0, 1); p(y1) by change of variables.
  logits = np.array([0.4, -0.3])
  tau = 0.8
  y1 = np.array([0.1, 0.5, 0.93])
  a = logits[0] - logits[1]
  t = tau * np.log(y1 / (1 - y1)) - a  # the logistic noise value
  want = st.logistic.logpdf(t) + np.log(tau) - np.log(y1) - np.log(1 - y1)
  got = G.concrete_log_prob(jnp.stack([y1, 1 - y1], -1), logits, tau)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gradients_float64(x64):
  y = jnp.array([[0.2, 0.5, 0.3]])
  logits = jnp.array([[0.1, -0.4, 0.9]])
  check_grads(lambda l, t: G.concrete_log_prob(y, l, t), (logits, 0.7), order=2)
  check_grads(lambda l: G.gumbel_softmax(jax.random.key(0), l, 0.5), (logits,), order=2)


def test_temperature_must_be_positive():
  with pytest.raises(ValueError, match="temperature"):
    G.gumbel_softmax(jax.random.key(0), jnp.zeros(3), 0.0)
  with pytest.raises(ValueError, match="temperature"):
    G.gumbel_softmax(jax.random.key(0), jnp.zeros(3), -1.0, hard=True)
  with pytest.raises(ValueError, match="temperature"):
    G.concrete_log_prob(jnp.full(3, 1 / 3), jnp.zeros(3), 0)
  with pytest.raises(ValueError, match="soft"):
    G.straight_through(jnp.zeros(3), jnp.zeros(4))


def test_huge_logits_and_low_precision():
  logits = jnp.array([1e4, -1e4, 0.0])
  y = G.gumbel_softmax(jax.random.key(0), logits, 0.5)
  assert bool(jnp.all(jnp.isfinite(y)))
  np.testing.assert_allclose(y, [1.0, 0.0, 0.0], atol=1e-6)
  assert int(G.gumbel_max(jax.random.key(1), logits)) == 0
  for dtype in (jnp.bfloat16, jnp.float16):
    y = G.gumbel_softmax(jax.random.key(2), jnp.zeros(4, dtype), 1.0, hard=True)
    assert y.dtype == dtype and float(y.sum()) == 1.0


def test_traced_temperature_under_jit_and_vmap():
  f = jax.jit(lambda k, l, t: G.gumbel_softmax(k, l, t))
  keys = jax.random.split(jax.random.key(5), 8)
  logits = jnp.zeros((8, 3))
  out = jax.vmap(f, (0, 0, None))(keys, logits, 0.3)
  loop = jnp.stack([G.gumbel_softmax(k, l, 0.3) for k, l in zip(jax.random.split(
      jax.random.key(5), 8), logits)])
  np.testing.assert_allclose(out, loop, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Invalid logits never become a valid draw; complex input is refused by name
# ---------------------------------------------------------------------------------------------

_BAD = [("nan", [np.nan, 0.0, 1.0]), ("all_neg_inf", [-np.inf] * 3),
        ("pos_inf", [np.inf, 0.0, 1.0])]


@pytest.mark.parametrize("logits", [l for _, l in _BAD], ids=[n for n, _ in _BAD])
def test_gumbel_max_and_softmax_concrete_invalid_logits_raise_naming_logits(logits):
  with pytest.raises(ValueError, match="logits"):
    G.gumbel_max(jax.random.key(0), jnp.array(logits))
  for hard in (False, True):
    with pytest.raises(ValueError, match="logits"):
      G.gumbel_softmax(jax.random.key(1), jnp.array(logits), 0.5, hard=hard)


def test_gumbel_max_traced_invalid_logits_give_minus_one():
  logits = jnp.array([[np.nan, 0.0, 1.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]])
  for i in range(10):
    idx = jax.jit(G.gumbel_max)(jax.random.key(i), logits)
    np.testing.assert_array_equal(idx[:3], [-1, -1, -1])
    assert int(idx[3]) in (1, 2)


def test_gumbel_max_traced_marker_has_nan_log_prob():
  from dgmjax import distributions as D
  logits = jnp.array([[np.nan, 0.0], [0.0, 1.0]])
  lp = jax.jit(lambda k, l: D.categorical_log_prob(G.gumbel_max(k, l), l))(jax.random.key(0),
                                                                           logits)
  assert np.isnan(lp[0]) and np.isfinite(lp[1])


@pytest.mark.parametrize("kw", [{}, {"hard": True}, {"log_space": True}],
                         ids=["soft", "hard", "log_space"])
def test_gumbel_softmax_traced_invalid_logits_give_nan_samples_exactly_there(kw):
  logits = jnp.array([[np.nan, 0.0, 1.0], [-np.inf] * 3, [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0]])
  y = jax.jit(lambda k, l: G.gumbel_softmax(k, l, 0.5, **kw))(jax.random.key(0), logits)
  np.testing.assert_array_equal(np.all(np.isnan(y), axis=-1), [True, True, True, False])
  assert not np.any(np.isnan(y[3]))


def test_gumbel_axis_and_shape_errors_are_named():
  with pytest.raises(ValueError, match="axis"):
    G.gumbel_max(jax.random.key(0), jnp.zeros((2, 3)), axis=4)
  with pytest.raises(ValueError, match="shape"):
    G.sample_gumbel(jax.random.key(1), (-1,))
  with pytest.raises(TypeError, match="dtype"):
    G.sample_gumbel(jax.random.key(2), (2,), "not a dtype")


def test_gumbel_refuses_complex_input_by_name_without_the_test_hook():
  from tests.unhooked import assert_raises_naming, errors_without_hook
  results = errors_without_hook("""
      import jax, jax.numpy as jnp
      from dgmjax import gumbel as G
      K = jax.random.key(0)
      C = jnp.array([[0.3, 0.2], [1.0, -1.0]]) + 1j
      R = jnp.array([[0.3, 0.2], [1.0, -1.0]])
      Y = jax.nn.softmax(R)
      CASES = {
          "gumbel_max": lambda: G.gumbel_max(K, C),
          "gumbel_softmax logits": lambda: G.gumbel_softmax(K, C, 0.5),
          "gumbel_softmax temperature": lambda: G.gumbel_softmax(K, R, 0.5 + 1j),
          "straight_through": lambda: G.straight_through(R, C),
          "concrete logits": lambda: G.concrete_log_prob(Y, C, 0.5),
          "concrete y": lambda: G.concrete_log_prob(Y + 0j, R, 0.5),
          "concrete temperature": lambda: G.concrete_log_prob(Y, R, jnp.complex64(0.5)),
      }
  """)
  assert_raises_naming(results, {
      "gumbel_max": "logits", "gumbel_softmax logits": "logits",
      "gumbel_softmax temperature": "temperature", "straight_through": "soft",
      "concrete logits": "logits", "concrete y": "y", "concrete temperature": "temperature"},
      says="")
