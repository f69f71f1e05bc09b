"""PixelCNN: masked convolutions, gated layers, exact one-pass likelihood, pixel-by-pixel sampling.

Pixels are ordered in raster order (row by row, left to right). A mask-A convolution lets pixel
``j`` see only pixels ``< j``; the following mask-B convolutions also see the pixel itself in the
previous layer's features, so the output at ``j`` depends on input pixels ``< j`` only. The depth
and kernel size set the receptive field: a few 3x3 layers give a *weak* decoder that sees local
statistics only (PixelVAE / VLAE); many layers give a decoder able to model ``p(x)`` on its own.

This is the original (single-stack) PixelCNN with gated activations; its receptive field has the
well-known blind spot to the upper right, which :func:`receptive_field` reports exactly.

References:
  van den Oord, Kalchbrenner & Kavukcuoglu, Pixel Recurrent Neural Networks, ICML 2016.
  van den Oord et al., Conditional Image Generation with PixelCNN Decoders, NeurIPS 2016.
  Gulrajani et al., PixelVAE, ICLR 2017; Chen et al., Variational Lossy Autoencoder, ICLR 2017.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import distributions

Array = jax.Array


def causal_mask(kernel_size: int, mask_type: str) -> np.ndarray:
  """The ``[k, k]`` spatial mask: ones above the centre row and left of the centre.

  Mask ``'A'`` excludes the centre, ``'B'`` includes it.
  """
  if mask_type not in ("A", "B"):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
  m = np.zeros((kernel_size, kernel_size), np.float32)
  c = kernel_size // 2
  m[:c, :] = 1.0
  m[c, :c] = 1.0
  if mask_type == "B":
    m[c, c] = 1.0
  return m


class MaskedConv2D(nn.Module):
  """A 2-D convolution (``SAME`` padding, NHWC) whose kernel is multiplied by a causal mask."""
  features: int
  kernel_size: int
  mask_type: str

  @nn.compact
  def __call__(self, x: Array) -> Array:
    mask = causal_mask(self.kernel_size, self.mask_type)
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1],
                                                                  self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    kernel = kernel * jnp.asarray(mask)[:, :, None, None]
    y = lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + jnp.broadcast_to(bias.astype(y.dtype), y.shape)


class PixelCNN(nn.Module):
  """A gated PixelCNN producing per-pixel logits, optionally conditioned on a vector ``cond``.

  Attributes:
    num_layers: number of layers after the first (mask-B, gated, residual).
    features: channels of the hidden layers.
    kernel_size: kernel of the hidden layers (the first layer uses ``first_kernel_size``).
    first_kernel_size: kernel of the mask-A input layer.
    num_classes: 1 for binary pixels (Bernoulli logits); ``C`` for categorical pixels (e.g. VQ
      codes), giving ``C`` logits per pixel.

  Call: ``(x [B, H, W, 1], cond [B, D], [B, H, W, D] or None) -> logits [B, H, W, num_classes]``
  (a spatial ``cond`` enters every pixel's gates through a 1x1 map, e.g. VQ-VAE-2's top codes
  for the bottom prior; it must not depend on ``x``). For categorical
  pixels pass indices as floats scaled to [0, 1] or use ``embed_classes``.
  """
  num_layers: int = 2
  features: int = 32
  kernel_size: int = 3
  first_kernel_size: int = 7
  num_classes: int = 1

  @nn.compact
  def __call__(self, x: Array, cond: Array | None = None) -> Array:
    if x.ndim != 4:
      raise ValueError(f"x must be [B, H, W, C], got shape {x.shape}")
    if self.num_classes > 1:  # categorical input: embed indices (channel 0) one-hot
      x = jax.nn.one_hot(x[..., 0].astype(jnp.int32), self.num_classes, dtype=jnp.float32)
    h = MaskedConv2D(2 * self.features, self.first_kernel_size, "A", name="in")(x)
    h = _gate(h, cond, self.features, "cond_in")
    for i in range(self.num_layers):
      g = MaskedConv2D(2 * self.features, self.kernel_size, "B", name=f"gated_{i}")(h)
      h = h + _gate(g, cond, self.features, f"cond_{i}")
    h = nn.relu(h)
    h = nn.relu(MaskedConv2D(self.features, 1, "B", name="out_hidden")(h))
    return MaskedConv2D(self.num_classes, 1, "B", name="out")(h)


def _gate(h: Array, cond: Array | None, features: int, name: str) -> Array:
  """``tanh(a + V_a c) * sigmoid(b + V_b c)``: the gated activation with a conditioning bias."""
  if cond is not None:
    c = nn.Dense(2 * features, name=name)(cond)  # a vector [B, D] or a map [B, H, W, D]
    h = h + jnp.broadcast_to(c[:, None, None, :] if c.ndim == 2 else c, h.shape)
  a, b = jnp.split(h, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


def receptive_field(num_layers: int, kernel_size: int, first_kernel_size: int,
                    height: int, width: int, pixel: tuple[int, int]) -> np.ndarray:
  """The input pixels that can influence the output at ``pixel``, by propagating the masks.

  Returns a boolean ``[height, width]`` map (computed independently of any network: each layer's
  dependency set is the union of its mask's taps over the previous set).
  """
  def dilate(dep, mask):
    k = mask.shape[0]
    c = k // 2
    out = np.zeros_like(dep)
    for (i, j) in zip(*np.nonzero(dep)):  # output (i, j) reads input (i + di - c, j + dj - c)
      for di in range(k):
        for dj in range(k):
          if mask[di, dj]:
            y, x = i + di - c, j + dj - c
            if 0 <= y < height and 0 <= x < width:
              out[y, x] = True
    return out

  dep = np.zeros((height, width), bool)
  dep[pixel] = True
  # output layers are 1x1 mask B (identity taps); then the hidden layers (residual: keep the set)
  for _ in range(num_layers):
    dep = dep | dilate(dep, causal_mask(kernel_size, "B"))
  return dilate(dep, causal_mask(first_kernel_size, "A"))


def bernoulli_log_prob(model: PixelCNN, params, x: Array, cond: Array | None = None) -> Array:
  """Exact ``log p(x | cond)`` of binary images in one pass: ``[B, H, W, 1] -> [B]``."""
  logits = model.apply(params, x, cond)
  return distributions.bernoulli_log_prob(x, logits, event_ndims=3)


def categorical_log_prob(model: PixelCNN, params, x: Array, cond: Array | None = None) -> Array:
  """Exact ``log p(x | cond)`` of integer maps ``[B, H, W]`` in one pass -> ``[B]``."""
  logits = model.apply(params, x[..., None].astype(jnp.float32), cond)
  return distributions.categorical_log_prob(x, logits, event_ndims=2)


def sample(model: PixelCNN, params, key: Array, shape: Sequence[int],
           cond: Array | None = None) -> Array:
  """Samples ``[B, H, W]`` pixel by pixel in raster order with a jitted ``lax.scan``.

  Each step runs the network on the partial image and draws pixel ``j`` from its conditional;
  later pixels of the partial image are ignored by the masks. Binary pixels come back as float
  {0, 1} ``[B, H, W, 1]``; categorical ones as int32 ``[B, H, W]``.
  """
  b, h, w = shape
  binary = model.num_classes == 1
  x0 = jnp.zeros((b, h, w, 1), jnp.float32)
  keys = jax.random.split(key, h * w)

  def step(x, inp):
    k, j = inp
    i, jj = j // w, j % w
    logits = model.apply(params, x, cond)[:, i, jj, :]  # [B, C]
    if binary:
      v = distributions.sample_bernoulli(k, logits[:, 0], jnp.float32)
    else:
      v = distributions.sample_categorical(k, logits).astype(jnp.float32)
    return x.at[:, i, jj, 0].set(v), None

  x, _ = lax.scan(step, x0, (keys, jnp.arange(h * w)))
  return x if binary else x[..., 0].astype(jnp.int32)


#: The public API of this module.
__all__ = [
    "causal_mask", "MaskedConv2D", "PixelCNN", "receptive_field", "bernoulli_log_prob",
    "categorical_log_prob", "sample",
]
