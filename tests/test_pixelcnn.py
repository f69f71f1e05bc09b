"""Tests for dgmjax.nn.pixelcnn: causality, receptive field, exact likelihood, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import pixelcnn as P

H = W = 6


def _model(num_layers=2, kernel_size=3, first=5, num_classes=1, cond=False):
  m = P.PixelCNN(num_layers=num_layers, features=8, kernel_size=kernel_size,
                 first_kernel_size=first, num_classes=num_classes)
  x = jnp.zeros((2, H, W, 1))
  c = jnp.zeros((2, 3)) if cond else None
  return m, m.init(jax.random.key(0), x, c)


def test_masks():
  np.testing.assert_array_equal(P.causal_mask(3, "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(P.causal_mask(3, "B"), [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
  with pytest.raises(ValueError, match="mask_type"):
    P.causal_mask(3, "C")
  with pytest.raises(ValueError, match="kernel_size"):
    P.causal_mask(4, "A")


@pytest.mark.parametrize("num_layers,kernel_size,first", [(1, 3, 3), (3, 3, 5)])
def test_causal_and_receptive_field_matches_configuration(num_layers, kernel_size, first):
  m, params = _model(num_layers, kernel_size, first)
  x = (jax.random.uniform(jax.random.key(1), (1, H, W, 1)) < 0.5).astype(jnp.float32)
  jac = jax.jacobian(lambda v: m.apply(params, v)[0, :, :, 0])(x)  # [H, W, 1, H, W, 1]
  dep = np.abs(np.asarray(jac[..., 0, :, :, 0])) > 0  # dep[i, j, y, x]
  for i in range(H):
    for j in range(W):
      order = i * W + j
      seen = dep[i, j]
      # causality: no pixel at or after (i, j) in raster order influences its logits
      assert not seen.reshape(-1)[order:].any()
      # the dependency set equals the one the configuration implies
      np.testing.assert_array_equal(seen, P.receptive_field(num_layers, kernel_size, first, H, W,
                                                            (i, j)))


def test_perturbing_a_pixel_leaves_earlier_logits_unchanged():
  m, params = _model(3, 3, 5, cond=True)
  x = (jax.random.uniform(jax.random.key(2), (2, H, W, 1)) < 0.5).astype(jnp.float32)
  c = jax.random.normal(jax.random.key(3), (2, 3))
  base = m.apply(params, x, c)
  for j in (0, 7, 20, 35):
    i, jj = divmod(j, W)
    x2 = x.at[:, i, jj, 0].set(1.0 - x[:, i, jj, 0])
    out = m.apply(params, x2, c)
    flat_b, flat_o = base.reshape(2, -1), out.reshape(2, -1)
    np.testing.assert_array_equal(flat_b[:, :j + 1], flat_o[:, :j + 1])


def test_exact_likelihood_normalises_over_all_images():
  """On 2x2 binary images the 16 probabilities sum to 1 (the likelihood is exact)."""
  m = P.PixelCNN(num_layers=1, features=4, kernel_size=3, first_kernel_size=3)
  params = m.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
  bits = np.array([[(n >> k) & 1 for k in range(4)] for n in range(16)], np.float32)
  lp = P.bernoulli_log_prob(m, params, jnp.asarray(bits.reshape(16, 2, 2, 1)))
  np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(lp)), 1.0, rtol=1e-5)
  mc = P.PixelCNN(num_layers=1, features=4, kernel_size=3, first_kernel_size=3, num_classes=3)
  pc = mc.init(jax.random.key(1), jnp.zeros((1, 1, 2, 1)))
  maps = jnp.array([[[a, b]] for a in range(3) for b in range(3)])
  lp = P.categorical_log_prob(mc, pc, maps)
  np.testing.assert_allclose(jnp.exp(jax.nn.logsumexp(lp)), 1.0, rtol=1e-5)


def test_sampling_matches_the_model_distribution():
  """Pixel-by-pixel samples of 2x2 images follow the exact model probabilities (chi-square)."""
  import scipy.stats as st
  m = P.PixelCNN(num_layers=1, features=4, kernel_size=3, first_kernel_size=3)
  params = m.init(jax.random.key(4), jnp.zeros((1, 2, 2, 1)))
  params = jax.tree.map(lambda a: 3.0 * a, params)  # a less uniform model
  n = 20000
  xs = jax.jit(lambda k: P.sample(m, params, k, (n, 2, 2)))(jax.random.key(5))
  codes = np.asarray(xs.reshape(n, 4)) @ (2 ** np.arange(4))
  counts = np.bincount(codes.astype(int), minlength=16)
  bits = np.array([[(c >> k) & 1 for k in range(4)] for c in range(16)], np.float32)
  probs = np.exp(np.asarray(P.bernoulli_log_prob(m, params, jnp.asarray(bits.reshape(16, 2, 2, 1))),
                            np.float64))
  assert st.chisquare(counts, n * probs / probs.sum()).pvalue > 0.01


def test_bad_input():
  m, params = _model()
  with pytest.raises(ValueError, match="x must be"):
    m.apply(params, jnp.zeros((2, H, W)))
