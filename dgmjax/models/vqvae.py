"""VQ-VAE (van den Oord et al. 2017) and its two-level hierarchy, VQ-VAE-2 (Razavi et al. 2019).

One level: a conv encoder (two stride-2 4x4 convs and residual blocks) maps ``[B, 28, 28, C]`` to a
``7 x 7`` map of ``D``-vectors, each replaced by its nearest code (:func:`dgmjax.vq.quantize`,
straight-through gradient), and a mirrored decoder gives a discretized logistic per pixel.

Two levels (VQ-VAE-2): a bottom encoder to ``14 x 14``, a top encoder to ``7 x 7``; the top codes
are quantized, decoded to ``14 x 14`` and concatenated with the bottom features before the bottom
codes are quantized; the decoder reads the bottom codes and the upsampled top codes.

Training loss: ``-log p(x | z_q) / D + codebook_loss + beta * commitment_loss`` (``D`` pixels), the
codebook trained either by its loss or, with ``ema=True``, by exponential moving averages of the
assigned encoder outputs (:func:`dgmjax.vq.ema_update`, decay 0.99, Laplace smoothing); dead codes
(EMA count below a threshold) can be restarted from encoder outputs every ``restart_every`` steps.
Code usage is counted in the parameters (``usage_counts``, reset at each restart check).

The VQ-VAE bound: ``q(z|x)`` is a point mass, so ``-log p(x) <= -log p(x|z_q) - log p(z_q)``; with
the uniform prior ``-log p(z_q) = M log N`` for ``M`` code positions, and with a PixelCNN prior
fitted afterwards, its exact ``-log p(z_q)``. Reported in bits per dimension for 8-bit pixels.

References:
  van den Oord, Vinyals & Kavukcuoglu, Neural Discrete Representation Learning, NeurIPS 2017.
  Razavi, van den Oord & Vinyals, Generating Diverse High-Fidelity Images with VQ-VAE-2, 2019.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import _checks, distributions, vq

Array = jax.Array


class _Residual(nn.Module):
  features: int
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(self.hidden, (3, 3))(nn.relu(x))
    return x + nn.Conv(self.features, (1, 1))(nn.relu(h))


class _Stack(nn.Module):
  """Conv 3x3 then residual blocks then ReLU."""
  features: int
  hidden: int
  num_blocks: int

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(self.features, (3, 3))(x)
    for _ in range(self.num_blocks):
      x = _Residual(self.features, self.hidden)(x)
    return nn.relu(x)


class _Down(nn.Module):
  features: int
  hidden: int
  num_blocks: int
  num_down: int

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_down):
      width = self.features // 2 if i < self.num_down - 1 else self.features
      x = nn.relu(nn.Conv(width, (4, 4), strides=(2, 2))(x))
    return _Stack(self.features, self.hidden, self.num_blocks)(x)


class _Up(nn.Module):
  features: int
  hidden: int
  num_blocks: int
  num_up: int
  out: int

  @nn.compact
  def __call__(self, x):
    x = _Stack(self.features, self.hidden, self.num_blocks)(x)
    for i in range(self.num_up):
      last = i == self.num_up - 1
      x = nn.ConvTranspose(self.out if last else self.features // 2, (4, 4), strides=(2, 2))(x)
      if not last:
        x = nn.relu(x)
    return x


class _Net(nn.Module):
  levels: int
  features: int
  hidden: int
  num_blocks: int
  embedding_dim: int
  channels: int

  def setup(self):
    f, h, r, d = self.features, self.hidden, self.num_blocks, self.embedding_dim
    if self.levels == 1:
      self.enc = _Down(f, h, r, 2)
      self.pre = nn.Conv(d, (1, 1))
      self.dec = _Up(f, h, r, 2, 2 * self.channels)
    else:
      self.enc_b = _Down(f, h, r, 1)
      self.enc_t = _Down(f, h, r, 1)
      self.pre_t = nn.Conv(d, (1, 1))
      self.dec_t = _Up(f, h, r, 1, d)
      self.pre_b = nn.Conv(d, (1, 1))
      self.up_t = nn.ConvTranspose(d, (4, 4), strides=(2, 2))
      self.dec = _Up(f, h, r, 1, 2 * self.channels)

  # one level
  def encode1(self, x):
    return self.pre(self.enc(x))

  # two levels: the top, then the bottom given the quantized top
  def encode_top(self, x):
    hb = self.enc_b(x)
    return self.pre_t(self.enc_t(hb)), hb

  def encode_bottom(self, hb, zq_t):
    return self.pre_b(jnp.concatenate([hb, self.dec_t(zq_t)], -1))

  def decode(self, zq_b, zq_t=None):
    z = zq_b if zq_t is None else jnp.concatenate([zq_b, self.up_t(zq_t)], -1)
    return self.dec(z)

  def __call__(self, x):  # init only
    if self.levels == 1:
      return self.decode(self.encode1(x))
    zt, hb = self.encode_top(x)
    return self.decode(self.encode_bottom(hb, zt), zt)


@dataclasses.dataclass(frozen=True)
class VQVAE:
  """A one- or two-level VQ-VAE on ``[B, H, W, C]`` images in [0, 1] (``H, W`` divisible by 4).

  Attributes:
    image_shape: ``(H, W, C)``.
    levels: 1 (VQ-VAE) or 2 (VQ-VAE-2: bottom ``H/2 x W/2``, top ``H/4 x W/4``).
    num_codes: codebook size ``N >= 1`` (each level has its own codebook).
    embedding_dim: code size ``D``.
    features, hidden, num_blocks: conv widths and residual blocks.
    beta: commitment weight (0.25 in the paper).
    ema: train codebooks by EMA (decay ``ema_decay``) instead of the codebook loss.
    restart_every: steps between dead-code restarts (0: never); a code whose usage since the
      last check is below ``restart_threshold`` is replaced by a random encoder output.
    init_scale: codes are initialised uniformly in ``[-init_scale, init_scale]`` (plus
      ``init_offset``: a deliberately bad initialisation moves them away from the encoder outputs).
  """
  image_shape: tuple[int, ...] = (28, 28, 1)
  levels: int = 1
  num_codes: int = 64
  embedding_dim: int = 16
  features: int = 64
  hidden: int = 32
  num_blocks: int = 2
  beta: float = 0.25
  ema: bool = False
  ema_decay: float = 0.99
  restart_every: int = 0
  restart_threshold: float = 1.0
  init_scale: float = 1.0
  init_offset: float = 0.0

  def __post_init__(self):
    from dgmjax.models.vae import check_sizes  # pylint: disable=import-outside-toplevel
    object.__setattr__(self, "image_shape", check_sizes("image_shape", self.image_shape))
    for name, low in (("levels", 1), ("num_codes", 1), ("embedding_dim", 1), ("features", 1),
                      ("hidden", 1), ("num_blocks", 0), ("restart_every", 0)):
      object.__setattr__(self, name, _checks.check_int(name, getattr(self, name), minimum=low))
    _checks.check_real("beta", self.beta, minimum=0.0)
    _checks.check_real("restart_threshold", self.restart_threshold, minimum=0.0)
    _checks.check_real("init_scale", self.init_scale, minimum=0.0)
    _checks.check_real("init_offset", self.init_offset)
    _checks.check_real("ema_decay", self.ema_decay)
    _checks.check_bool("ema", self.ema)
    if self.levels not in (1, 2):
      raise ValueError(f"levels must be 1 or 2, got {self.levels}")
    if self.num_codes < 1:
      raise ValueError(f"num_codes (the codebook size) must be >= 1, got {self.num_codes}")
    if self.embedding_dim < 1:
      raise ValueError(f"embedding_dim must be >= 1, got {self.embedding_dim}")
    if len(self.image_shape) != 3 or self.image_shape[0] % 4 or self.image_shape[1] % 4:
      raise ValueError(f"image_shape must be (H, W, C) with H, W divisible by 4, "
                       f"got {self.image_shape}")
    if not 0.0 <= self.ema_decay < 1.0:
      raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")

  @property
  def module(self) -> _Net:
    return _Net(self.levels, self.features, self.hidden, self.num_blocks, self.embedding_dim,
                self.image_shape[-1])

  @property
  def code_shapes(self) -> tuple[tuple[int, int], ...]:
    """Spatial shapes of the code maps, bottom (or only) level first."""
    h, w = self.image_shape[:2]
    return ((h // 4, w // 4),) if self.levels == 1 else ((h // 2, w // 2), (h // 4, w // 4))

  @property
  def num_pixels(self) -> int:
    return math.prod(self.image_shape)

  def init(self, key: Array) -> dict:
    """``{'net', 'codebooks', 'ema_size', 'ema_sum', 'usage_counts'}``, one codebook per level."""
    k_net, *k_codes = jax.random.split(key, 1 + self.levels)
    net = self.module.init(k_net, jnp.zeros((1,) + tuple(self.image_shape)))
    s = self.init_scale
    codebooks = [jax.random.uniform(k, (self.num_codes, self.embedding_dim), minval=-s, maxval=s)
                 + self.init_offset for k in k_codes]
    return {"net": net,
            "codebooks": codebooks,
            "ema_size": [jnp.ones((self.num_codes,)) for _ in codebooks],
            "ema_sum": [c for c in codebooks],
            "usage_counts": [jnp.zeros((self.num_codes,)) for _ in codebooks]}

  def _check_x(self, x: Array) -> None:
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"x must be [B, {', '.join(map(str, self.image_shape))}], got {x.shape}")

  def encode(self, params, x: Array) -> tuple[list[Array], list[vq.Quantized]]:
    """Encoder outputs and their quantization per level (bottom first)."""
    self._check_x(x)
    net, cbs = params["net"], [lax.stop_gradient(c) if self.ema else c
                               for c in params["codebooks"]]
    if self.levels == 1:
      z_e = self.module.apply(net, x, method=_Net.encode1)
      return [z_e], [vq.quantize(z_e, cbs[0])]
    z_t, hb = self.module.apply(net, x, method=_Net.encode_top)
    q_t = vq.quantize(z_t, cbs[1])
    z_b = self.module.apply(net, hb, q_t.z_q, method=_Net.encode_bottom)
    return [z_b, z_t], [vq.quantize(z_b, cbs[0]), q_t]

  def decode_codes(self, params, z_qs: list[Array]) -> tuple[Array, Array]:
    """Decoder output: discretized-logistic ``(loc, log_scale)``, each ``[B, H, W, C]``.

    ``loc`` is unconstrained (centred on 0.5): a squashed location saturates on data with many
    pixels at exactly 0 or 1 (MNIST) and stops learning; :meth:`reconstruct` clips it to [0, 1].
    """
    out = self.module.apply(params["net"], *z_qs, method=_Net.decode)
    loc, log_scale = jnp.split(out, 2, axis=-1)
    return 0.5 + loc, jnp.maximum(log_scale, -7.0)

  def decode_indices(self, params, indices: list[Array]) -> tuple[Array, Array]:
    z_qs = [vq.lookup(i, c) for i, c in zip(indices, params["codebooks"])]
    return self.decode_codes(params, z_qs)

  def recon_log_prob(self, x: Array, loc: Array, log_scale: Array) -> Array:
    """``log p(x | z_q)`` of 8-bit pixels ``x`` in [0, 1]: ``[B]``."""
    x8 = jnp.round(x * 255.0) / 255.0
    return distributions.discretized_logistic_log_prob(x8, loc, log_scale, event_ndims=3)

  def loss(self, params, x: Array, key: Array, step: Array):
    """``(loss, metrics)``, a training loss ``(params, x, key, step)`` (neither ``key`` nor
    ``step`` is read); ``metrics['aux']`` carries what :meth:`post_update` needs."""
    del key, step
    z_es, qs = self.encode(params, x)
    loc, log_scale = self.decode_codes(params, [q.z_q for q in qs])
    log_px = self.recon_log_prob(x, loc, log_scale)
    codebook = sum(q.codebook_loss for q in qs)
    commit = sum(q.commitment_loss for q in qs)
    loss = -jnp.mean(log_px) / self.num_pixels + self.beta * commit
    if not self.ema:
      loss = loss + codebook
    metrics = {"nll_bits_per_dim_uniform_prior": self.bits_per_dim(-jnp.mean(log_px)),
               "recon_nats": -jnp.mean(log_px),
               "mse": jnp.mean(jnp.square(jnp.clip(loc, 0.0, 1.0) - x)),
               "commitment": commit,
               "aux": {"z_e": [lax.stop_gradient(z) for z in z_es],
                       "indices": [q.indices for q in qs]}}
    return loss, metrics

  def post_update(self, params, aux, key: Array, step) -> dict:
    """EMA codebook updates, usage counts and dead-code restarts (see the module docstring)."""
    params = dict(params)
    cbs, sizes, sums, counts = [], [], [], []
    keys = jax.random.split(key, self.levels)
    for lvl in range(self.levels):
      z_e, idx = aux["z_e"][lvl], aux["indices"][lvl]
      cb = params["codebooks"][lvl]
      size, ssum = params["ema_size"][lvl], params["ema_sum"][lvl]
      if self.ema:
        st = vq.ema_update(vq.EMAState(size, ssum, cb), z_e, idx, self.ema_decay)
        size, ssum, cb = st.cluster_size, st.embed_sum, st.codebook
      c = params["usage_counts"][lvl] + vq.code_counts(idx, self.num_codes).astype(jnp.float32)
      if self.restart_every:
        check = (step + 1) % self.restart_every == 0
        new_cb, dead = vq.restart_dead_codes(keys[lvl], cb, c, z_e,
                                             threshold=self.restart_threshold)
        dead = dead & check
        cb = jnp.where(dead[:, None], new_cb, cb)
        ssum = jnp.where(dead[:, None], new_cb, ssum)   # the EMA restarts at the new code
        size = jnp.where(dead, 1.0, size)
        c = jnp.where(check, jnp.zeros_like(c), c)
      cbs.append(cb), sizes.append(size), sums.append(ssum), counts.append(c)
    params.update(codebooks=cbs, ema_size=sizes, ema_sum=sums, usage_counts=counts)
    return params

  def indices(self, params, x: Array) -> list[Array]:
    """Code maps per level (bottom first): ``[B, h, w]`` int32."""
    return [q.indices for q in self.encode(params, x)[1]]

  def reconstruct(self, params, x: Array) -> Array:
    _, qs = self.encode(params, x)
    return jnp.clip(self.decode_codes(params, [q.z_q for q in qs])[0], 0.0, 1.0)

  def bits_per_dim(self, nats: Array) -> Array:
    """Nats per image -> bits per (8-bit) dimension."""
    return nats / (self.num_pixels * math.log(2.0))

  def uniform_prior_nats(self) -> float:
    """``-log p(z)`` under the uniform prior over all code positions."""
    return sum(h * w for h, w in self.code_shapes) * math.log(self.num_codes)
