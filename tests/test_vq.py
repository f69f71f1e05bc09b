"""Tests for dgmjax.vq: nearest codes, straight-through gradient, losses, EMA, codebook health."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import vq
from dgmjax.nn import VectorQuantizer

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
