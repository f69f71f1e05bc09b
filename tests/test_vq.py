"""Tests for dgmjax.vq: nearest codes, straight-through gradient, losses, EMA, codebook health."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import vq
from dgmjax.nn import VectorQuantizer
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input


def _ema_state():
  return vq.ema_init(jnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3)))


RAISES = [
    ("code_counts_index_equal_to_num_codes", lambda: vq.code_counts(jnp.array([0, 4]), 4),
     ValueError, r"indices must be code indices in \[0, 4\).*the first 4 at index \(1,\)"),
    ("code_counts_negative_index", lambda: vq.code_counts(jnp.array([[0, -1]]), 4),
     ValueError, r"indices must be code indices in \[0, 4\).*-1 at index \(0, 1\)"),
    ("code_counts_float_indices", lambda: vq.code_counts(jnp.array([0.0, 1.0]), 4),
     TypeError, r"indices must have an integer dtype, got float32"),
    ("code_counts_num_codes_float", lambda: vq.code_counts(jnp.array([0]), 4.0),
     TypeError, r"num_codes must be an int, got float"),
    ("code_counts_num_codes_bool", lambda: vq.code_counts(jnp.array([0]), True),
     TypeError, r"num_codes must be an int, got the bool"),
    ("lookup_index_out_of_range", lambda: vq.lookup(jnp.array([7]), jnp.ones((4, 3))),
     ValueError, r"indices must be code indices in \[0, 4\)"),
    ("ema_update_index_out_of_range",
     lambda: vq.ema_update(_ema_state(), bi.z(2, 3), jnp.array([0, 9])),
     ValueError, r"indices must be code indices in \[0, 4\).*9"),
    ("ema_update_indices_wrong_shape",
     lambda: vq.ema_update(_ema_state(), bi.z(2, 3), jnp.array([0, 1, 2])),
     ValueError, r"indices must have the shape of z_e less its last axis, \(2,\), got \(3,\)"),
    ("ema_update_eps_zero",
     lambda: vq.ema_update(_ema_state(), bi.z(2, 3), jnp.array([0, 1]), eps=0.0),
     ValueError, r"eps must be finite and > 0"),
    ("ema_update_decay_nan",
     lambda: vq.ema_update(_ema_state(), bi.z(2, 3), jnp.array([0, 1]), decay=np.nan),
     ValueError, r"decay must be in \[0, 1\)"),
    ("quantize_z_e_nan",
     lambda: vq.quantize(jnp.array([[0.0, np.nan, 0.0]]), jnp.ones((4, 3))),
     ValueError, r"z_e contains 1 NaN value\(s\), the first at index \(0, 1\)"),
    ("quantize_codebook_inf",
     lambda: vq.quantize(bi.z(2, 3), jnp.full((4, 3), np.inf)),
     ValueError, r"codebook contains 12 infinite"),
    ("perplexity_negative_counts", lambda: vq.perplexity(jnp.array([3.0, -1.0])),
     ValueError, r"counts must be finite usage counts >= 0.*-1\.0"),
    ("usage_counts_not_a_vector", lambda: vq.usage(jnp.ones((2, 2))),
     ValueError, r"counts must be \[num_codes >= 1\], got shape \(2, 2\)"),
    ("restart_dead_codes_counts_wrong_shape",
     lambda: vq.restart_dead_codes(bi.key(), jnp.ones((4, 3)), jnp.ones(3), bi.z(5, 3)),
     ValueError, r"counts must be \[4\] \(one per code"),
    ("restart_dead_codes_empty_pool",
     lambda: vq.restart_dead_codes(bi.key(), jnp.ones((4, 3)), jnp.ones(4), bi.z(0, 3)),
     ValueError, r"z_e must hold at least one vector"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _lookup_traced():
  out = jax.jit(vq.lookup)(jnp.array([0, 4, -1, 3]), jnp.ones((4, 2)))
  return out, np.broadcast_to(np.array([[False], [True], [True], [False]]), (4, 2))


def _ema_update_traced_indices():
  new = jax.jit(vq.ema_update)(_ema_state(), bi.z(2, 3), jnp.array([0, 4]))
  return new.codebook, np.ones((4, 3), bool)


def _ema_update_traced_decay():
  new = jax.jit(vq.ema_update)(_ema_state(), bi.z(2, 3), jnp.array([0, 1]), 1.5)
  return new.cluster_size, np.ones(4, bool)


def _perplexity_traced():
  f = jax.jit(lambda c: jnp.stack([vq.perplexity(c), vq.usage(c)]))
  return f(jnp.array([2.0, -1.0, 3.0])), np.array([True, True])


TRACED_NAN = [
    ("lookup_traced_index_out_of_range", _lookup_traced),
    ("ema_update_traced_index_out_of_range", _ema_update_traced_indices),
    ("ema_update_traced_decay_out_of_range", _ema_update_traced_decay),
    ("perplexity_and_usage_traced_negative_counts", _perplexity_traced),
]


@bi.thunk_cases(TRACED_NAN)
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  bi.check_nan_exactly_where_bad(thunk)


def test_code_counts_traced_out_of_range_is_counted_nowhere():
  # The documented contract (an int count cannot be NaN): not clipped into code 0, not wrapped.
  idx = jnp.array([0, 1, 1, 4, -1, 9, 3])
  counts = jax.jit(vq.code_counts, static_argnums=1)(idx, 4)
  np.testing.assert_array_equal(counts, [1, 2, 0, 1])
  assert int(counts.sum()) < idx.size


def _accept_numpy_num_codes():
  np.testing.assert_array_equal(vq.code_counts(jnp.array([0, 2, 2]), np.int64(3)), [1, 0, 2])
  np.testing.assert_array_equal(vq.code_counts(np.array([0, 2, 2], np.uint8), 3), [1, 0, 2])


ACCEPTS = [
    ("numpy_int_num_codes_and_uint8_indices", _accept_numpy_num_codes),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


RNG = np.random.default_rng(0)


def test_nearest_code_matches_brute_force():
  z = jnp.asarray(RNG.normal(size=(2, 3, 3, 4)), jnp.float32)
  cb = jnp.asarray(RNG.normal(size=(7, 4)), jnp.float32)
  idx = jax.jit(vq.nearest_code)(z, cb)
  brute = np.argmin(((np.asarray(z)[..., None, :] - np.asarray(cb)) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(idx, brute)
  np.testing.assert_allclose(vq.squared_distances(z, cb),
                             ((np.asarray(z)[..., None, :] - np.asarray(cb)) ** 2).sum(-1),
                             rtol=1e-4, atol=1e-5)


def test_straight_through_gradient_equals_decoder_gradient_at_z_q():
  z_e = jnp.asarray(RNG.normal(size=(5, 3)), jnp.float32)
  cb = jnp.asarray(RNG.normal(size=(4, 3)), jnp.float32)
  w = jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32)
  decoder = lambda z: jnp.sum(jnp.tanh(z @ w) ** 2)
  out = vq.quantize(z_e, cb)
  e_k = vq.lookup(out.indices, cb)
  np.testing.assert_array_equal(out.z_q, e_k)  # forward value is exactly the code
  g_enc = jax.grad(lambda z: decoder(vq.quantize(z, cb).z_q))(z_e)
  g_dec = jax.grad(decoder)(e_k)  # the decoder's gradient evaluated at z_q
  np.testing.assert_allclose(g_enc, g_dec, rtol=1e-6)
  # the reconstruction path gives the codebook no gradient
  g_cb = jax.grad(lambda c: decoder(vq.quantize(z_e, c).z_q))(cb)
  np.testing.assert_array_equal(g_cb, 0.0)


def test_losses_route_gradients():
  z_e = jnp.asarray(RNG.normal(size=(6, 2)), jnp.float32)
  cb = jnp.asarray(RNG.normal(size=(3, 2)), jnp.float32)
  out = vq.quantize(z_e, cb)
  e_k = vq.lookup(out.indices, cb)
  np.testing.assert_allclose(out.codebook_loss, np.mean((np.asarray(z_e) - np.asarray(e_k)) ** 2),
                             rtol=1e-6)
  np.testing.assert_allclose(out.commitment_loss, out.codebook_loss, rtol=1e-6)
  # codebook loss moves codes only, commitment loss moves the encoder only
  g_z = jax.grad(lambda z: vq.quantize(z, cb).codebook_loss)(z_e)
  g_c = jax.grad(lambda c: vq.quantize(z_e, c).commitment_loss)(cb)
  np.testing.assert_array_equal(g_z, 0.0)
  np.testing.assert_array_equal(g_c, 0.0)
  g_c2 = jax.grad(lambda c: vq.quantize(z_e, c).codebook_loss)(cb)
  assert float(jnp.abs(g_c2).sum()) > 0


def test_ema_update_tends_to_cluster_means_as_decay_vanishes():
  cb = jnp.asarray([[0.0, 0.0], [5.0, 5.0], [-50.0, 50.0]], jnp.float32)
  z = jnp.asarray(np.concatenate([RNG.normal(size=(40, 2)) * 0.3,
                                  5 + RNG.normal(size=(30, 2)) * 0.3]), jnp.float32)
  idx = vq.nearest_code(z, cb)
  state = jax.jit(vq.ema_update, static_argnums=(3, 4))(vq.ema_init(cb), z, idx, 0.0, 1e-12)
  means = np.stack([np.asarray(z)[np.asarray(idx) == k].mean(0) for k in (0, 1)])
  np.testing.assert_allclose(state.codebook[:2], means, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.cluster_size, [40.0, 30.0, 0.0])
  # with decay the update moves part of the way, and stays finite for the unused code
  s2 = vq.ema_update(vq.ema_init(cb), z, idx, 0.99)
  assert np.all(np.isfinite(s2.codebook))
  assert float(jnp.linalg.norm(s2.codebook[0] - means[0])) < float(jnp.linalg.norm(cb[0] - means[0])) + 1e-6


def test_usage_perplexity_and_restarts():
  counts = vq.code_counts(jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), 8)
  np.testing.assert_array_equal(counts, [2, 2, 2, 2, 0, 0, 0, 0])
  np.testing.assert_allclose(vq.perplexity(counts), 4.0, rtol=1e-6)
  np.testing.assert_allclose(vq.usage(counts), 0.5)
  np.testing.assert_allclose(vq.perplexity(vq.code_counts(jnp.zeros(10, jnp.int32), 5)), 1.0)
  cb = jnp.zeros((8, 2))
  z = jnp.asarray(RNG.normal(size=(20, 2)), jnp.float32) + 10.0
  new, dead = vq.restart_dead_codes(jax.random.key(0), cb, counts, z)
  np.testing.assert_array_equal(dead, [False] * 4 + [True] * 4)
  np.testing.assert_array_equal(new[:4], 0.0)
  assert np.all(np.asarray(new[4:]) > 5)  # drawn from the encoder outputs


def test_bad_collapse_recovers_with_restarts():
  """A bad initialisation (all codes far from the data) uses one code; restarts recover usage."""
  data = jnp.asarray(RNG.normal(size=(512, 2)) * 3.0, jnp.float32)
  cb = jnp.asarray(100.0 + RNG.normal(size=(16, 2)) * 0.01, jnp.float32)

  @jax.jit
  def kmeans_step(cb, key, restart):
    idx = vq.nearest_code(data, cb)
    state = vq.ema_update(vq.ema_init(cb), data, idx, 0.0, 1e-12)
    counts = vq.code_counts(idx, cb.shape[0])
    new = jnp.where((counts > 0)[:, None], state.codebook, cb)  # unused codes stay put
    restarted, _ = vq.restart_dead_codes(key, new, counts, data)
    return jnp.where(restart, restarted, new), counts

  results = {}
  for restart in (False, True):
    c = cb
    for i in range(10):
      c, counts = kmeans_step(c, jax.random.key(i), restart)
    counts = vq.code_counts(vq.nearest_code(data, c), 16)
    results[restart] = (float(vq.usage(counts)), float(vq.perplexity(counts)))
  assert results[False][0] <= 2 / 16
  assert results[True][0] > 0.8 and results[True][1] > 8


def test_module_and_bad_input():
  m = VectorQuantizer(num_codes=8, embedding_dim=3)
  z = jnp.ones((2, 4, 4, 3))
  params = m.init(jax.random.key(0), z)
  out = m.apply(params, z)
  assert out.z_q.shape == z.shape and out.indices.shape == (2, 4, 4)
  with pytest.raises(ValueError, match="embedding_dim"):
    m.apply(params, jnp.ones((2, 4)))
  with pytest.raises(ValueError, match="num_codes"):
    VectorQuantizer(num_codes=0, embedding_dim=3).init(jax.random.key(0), z)
  with pytest.raises(ValueError, match="codebook"):
    vq.quantize(jnp.ones((2, 3)), jnp.ones((4, 2)))
  with pytest.raises(ValueError, match="codebook"):
    vq.nearest_code(jnp.ones((2, 3)), jnp.ones((0, 3)))
  with pytest.raises(ValueError, match="num_codes"):
    vq.code_counts(jnp.zeros(3, jnp.int32), 0)
  with pytest.raises(ValueError, match="decay"):
    vq.ema_update(vq.ema_init(jnp.ones((2, 3))), jnp.ones((4, 3)), jnp.zeros(4, jnp.int32), 1.0)


# ---------------------------------------------------------------------------------------------
# A NaN distance gives no code under jit; complex and integer codebooks are refused by name
# ---------------------------------------------------------------------------------------------


def test_nearest_code_traced_nan_gives_minus_one_and_nan_codes():
  cb = jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
  z = jnp.array([[np.nan, 0.0], [0.9, 1.2], [2.8, 0.1]])
  idx = jax.jit(vq.nearest_code)(z, cb)
  np.testing.assert_array_equal(idx, [-1, 1, 2])
  q = jax.jit(vq.quantize)(z, cb)
  np.testing.assert_array_equal(q.indices, [-1, 1, 2])
  np.testing.assert_array_equal(np.isnan(q.z_q), [[True, True], [False, False], [False, False]])
  assert np.isnan(q.codebook_loss) and np.isnan(q.commitment_loss)
  np.testing.assert_array_equal(jax.jit(vq.code_counts, static_argnums=1)(idx, 3), [0, 1, 1])
  state = jax.jit(vq.ema_update)(vq.ema_init(cb), z, idx)
  assert np.all(np.isnan(state.codebook))
  # a NaN code poisons every distance of the vectors, so no vector gets a code
  idx = jax.jit(vq.nearest_code)(z[1:], cb.at[0, 0].set(np.nan))
  np.testing.assert_array_equal(idx, [-1, -1])
  np.testing.assert_array_equal(jax.jit(vq.nearest_code)(z[1:], cb), vq.nearest_code(z[1:], cb))


def test_ema_init_refuses_non_finite_codebook_by_name():
  with pytest.raises(ValueError, match="codebook"):
    vq.ema_init(jnp.array([[np.nan, 0.0]]))


def test_vq_names_bad_codebooks_and_settings_without_the_test_hook():
  from tests.unhooked import assert_raises_naming, errors_without_hook
  results = errors_without_hook("""
      import jax, jax.numpy as jnp
      from dgmjax import vq
      C = jnp.array([[0.3, 0.2], [1.0, -1.0]]) + 1j
      R = jnp.array([[0.3, 0.2], [1.0, -1.0]])
      I = jnp.array([0, 1])
      CASES = {
          "distances z_e": lambda: vq.squared_distances(C, R),
          "distances codebook": lambda: vq.squared_distances(R, C),
          "nearest codebook": lambda: vq.nearest_code(R, C),
          "quantize codebook": lambda: vq.quantize(R, C),
          "lookup codebook": lambda: vq.lookup(I, C),
          "ema_init codebook": lambda: vq.ema_init(C),
          "ema_update z_e": lambda: vq.ema_update(vq.ema_init(R), C, I),
          "perplexity counts": lambda: vq.perplexity(jnp.ones(3) + 0j),
          "usage counts": lambda: vq.usage(jnp.ones(3) + 0j),
          "int codebook": lambda: vq.lookup(I, jnp.ones((2, 2), jnp.int32)),
          "decay shape": lambda: vq.ema_update(vq.ema_init(R), R, I, jnp.full((3,), 0.9)),
          "eps shape": lambda: vq.ema_update(vq.ema_init(R), R, I, 0.9, jnp.full((2,), 1e-5)),
      }
  """)
  assert_raises_naming(results, {
      "distances z_e": "z_e", "distances codebook": "codebook", "nearest codebook": "codebook",
      "quantize codebook": "codebook", "lookup codebook": "codebook",
      "ema_init codebook": "codebook", "ema_update z_e": "z_e", "perplexity counts": "counts",
      "usage counts": "counts"}, says="complex")
  assert_raises_naming(results, {"int codebook": "codebook"}, says="floating")
  assert_raises_naming(results, {"decay shape": "decay", "eps shape": "eps"}, "ValueError",
                       "must be a scalar (shape ())")


@pytest.mark.parametrize("threshold,error,match", [
    (float("nan"), ValueError, r"threshold must be a number >= 0.*nan"),
    (-1.0, ValueError, "threshold must be a number >= 0"),
    (float("-inf"), ValueError, "threshold must be a number >= 0"),
    (True, TypeError, "threshold must be a number"),
    ("1", TypeError, "threshold must be a number"),
    (np.ones(2), ValueError, "threshold must be a scalar"),
], ids=["nan", "negative", "minus_inf", "bool", "str", "vector"])
def test_restart_dead_codes_refuses_a_bad_threshold(threshold, error, match):
  cb, ze = jnp.ones((4, 2)), jnp.zeros((6, 2))
  with pytest.raises(error, match=match):
    vq.restart_dead_codes(jax.random.key(0), cb, jnp.asarray([0.0, 5, 1, 3]), ze,
                          threshold=threshold)


def test_restart_dead_codes_with_a_traced_nan_threshold_gives_a_nan_codebook():
  cb, ze, counts = jnp.ones((4, 2)), jnp.zeros((6, 2)), jnp.asarray([0.0, 5, 1, 3])
  fn = jax.jit(lambda t: vq.restart_dead_codes(jax.random.key(0), cb, counts, ze, threshold=t)[0])
  assert np.all(np.isnan(fn(jnp.float32(np.nan))))
  assert np.all(np.isnan(fn(jnp.float32(-1.0))))
  np.testing.assert_array_equal(fn(jnp.float32(2.0)), vq.restart_dead_codes(
      jax.random.key(0), cb, counts, ze, threshold=2.0)[0])
  np.testing.assert_array_equal(fn(jnp.float32(np.inf))[:, 0], np.zeros(4))  # every code restarts
