"""A VAE whose decoder is autoregressive over pixels (PixelVAE / VLAE), or an MLP for reference.

.. math:: p(x | z) = \\prod_j p(x_j | x_{<j}, z), \\quad q(z|x) = N(\\mu(x), \\mathrm{diag}\\,\\sigma(x)^2), \\quad p(z) = N(0, I)

The code ``z`` enters the PixelCNN (:mod:`dgmjax.nn.pixelcnn`) as a spatial map: an MLP turns ``z``
into ``[H, W, cond_channels]`` features that bias the gates of every masked layer, so the decoder
can place information where it is needed. The PixelCNN's depth sets how much of ``p(x)`` the
decoder can model without ``z``: a few small layers see local statistics only (a *weak* decoder,
as in PixelVAE and VLAE); a deep one can model the digits alone and, trained with the plain ELBO,
leaves ``z`` unused (posterior collapse). ``decoder='mlp'`` gives the factorised Bernoulli decoder
of an ordinary VAE with the same encoder and prior.

The model follows the contract of :mod:`dgmjax.models.base` (with ``encode``, ``kl``,
``posterior_mean``, ``sample_prior`` and ``decode``), so every bound, estimator, evaluator and
diagnostic applies to it. The log-likelihood of one image given ``z`` is exact and takes one
network pass; sampling ``x`` runs the PixelCNN once per pixel (a jitted scan).

References:
  Gulrajani et al., PixelVAE: A Latent Variable Model for Natural Images, ICLR 2017.
  Chen et al., Variational Lossy Autoencoder, ICLR 2017.
  van den Oord et al., Conditional Image Generation with PixelCNN Decoders, NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks, distributions
from dgmjax.nn import pixelcnn as pixelcnn_lib
from dgmjax.models.base import LatentModel
from dgmjax.models.vae import check_sizes, output_bias_from_mean
from dgmjax.nn.mlp import MLP, GaussianHead, flatten_images

Array = jax.Array

DECODERS = ("pixelcnn", "mlp")


@dataclasses.dataclass(frozen=True)
class PixelVAE(LatentModel):
  """A Gaussian VAE with an autoregressive (PixelCNN) or factorised (MLP) Bernoulli decoder.

  Params: ``{"encoder": ..., "decoder": ...}`` for ``decoder='mlp'`` and
  ``{"encoder": ..., "cond": ..., "pixelcnn": ...}`` for ``decoder='pixelcnn'`` (Flax variables
  each; ``pixelcnn`` is a :class:`dgmjax.nn.pixelcnn.PixelCNN`'s, so :mod:`dgmjax.nn.pixelcnn`'s
  functions apply to it directly).

  Attributes:
    image_shape: ``(H, W, 1)`` binary images.
    latent_dim: size of ``z``.
    hidden: widths of the encoder's tanh layers (the MLP decoder and the conditioning MLP mirror
      them).
    decoder: ``'pixelcnn'`` or ``'mlp'``.
    num_layers: PixelCNN layers after the first (0 allowed: the mask-A layer alone).
    features: PixelCNN channels.
    kernel_size: PixelCNN hidden-layer kernel.
    first_kernel_size: kernel of the mask-A input layer.
    cond_channels: channels of the spatial map of ``z``.
  """
  data_support = "binary"  # Bernoulli decoder (a class attribute, not a field)
  image_shape: tuple[int, ...] = (28, 28, 1)
  latent_dim: int = 32
  hidden: tuple[int, ...] = (200, 200)
  decoder: str = "pixelcnn"
  num_layers: int = 6
  features: int = 32
  kernel_size: int = 3
  first_kernel_size: int = 7
  cond_channels: int = 4

  def __post_init__(self):
    object.__setattr__(self, "image_shape", check_sizes("image_shape", self.image_shape))
    object.__setattr__(self, "hidden", check_sizes("hidden", self.hidden, allow_empty=True))
    for name in ("latent_dim", "num_layers", "features", "kernel_size", "first_kernel_size",
                 "cond_channels"):  # ints, never truncated floats or bools
      object.__setattr__(self, name, _checks.check_int(name, getattr(self, name)))
    if len(self.image_shape) != 3 or self.image_shape[-1] != 1 or min(self.image_shape) < 1:
      raise ValueError(f"image_shape must be (H, W, 1) (binary single-channel images), got "
                       f"{self.image_shape}")
    if self.decoder not in DECODERS:
      raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
    for name in ("latent_dim", "features", "cond_channels"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if int(self.num_layers) < 0:
      raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
    for name in ("kernel_size", "first_kernel_size"):
      k = int(getattr(self, name))
      if k < 1 or k % 2 == 0:
        raise ValueError(f"{name} must be odd and >= 1, got {k}")

  # ------------------------------------------------------------------------------ modules

  @property
  def x_dim(self) -> int:
    return math.prod(self.image_shape)

  @property
  def latent_dims(self) -> tuple[int]:
    return (self.latent_dim,)

  @property
  def encoder_net(self) -> GaussianHead:
    return GaussianHead(self.hidden, self.latent_dim)

  @property
  def mlp_decoder_net(self) -> MLP:
    return MLP(tuple(reversed(self.hidden)) + (self.x_dim,))

  @property
  def cond_net(self) -> MLP:
    """``z -> [H * W * cond_channels]`` (ReLU hidden layers), reshaped into the spatial map."""
    h, w, _ = self.image_shape
    return MLP(tuple(reversed(self.hidden)) + (h * w * self.cond_channels,), activation=nn.relu)

  @property
  def pixelcnn(self) -> pixelcnn_lib.PixelCNN:
    return pixelcnn_lib.PixelCNN(num_layers=self.num_layers, features=self.features,
                                 kernel_size=self.kernel_size,
                                 first_kernel_size=self.first_kernel_size)

  def receptive_field(self, pixel: tuple[int, int]) -> np.ndarray:
    """The input pixels the decoder's logit at ``pixel`` can see (``[H, W]`` bool)."""
    if self.decoder != "pixelcnn":
      return np.zeros(self.image_shape[:2], bool)
    return pixelcnn_lib.receptive_field(self.num_layers, self.kernel_size,
                                        self.first_kernel_size, *self.image_shape[:2], pixel)

  def init(self, key: Array, *, data_mean: Array | None = None) -> dict:
    """Initial parameters; ``data_mean`` sets the MLP decoder's output bias to its logit."""
    k_enc, k_dec, k_pix = jax.random.split(key, 3)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    params = {"encoder": self.encoder_net.init(k_enc, jnp.zeros((1, self.x_dim), jnp.float32))}
    if self.decoder == "mlp":
      params["decoder"] = self.mlp_decoder_net.init(k_dec, z)
      if data_mean is not None:
        bias = output_bias_from_mean(data_mean)
        if bias.shape != (self.x_dim,):
          raise ValueError(f"data_mean has {bias.size} elements, the model expects {self.x_dim}")
        params["decoder"]["params"]["out"]["bias"] = jnp.asarray(bias)
    else:
      params["cond"] = self.cond_net.init(k_dec, z)
      cond = jnp.zeros((1,) + self.image_shape[:2] + (self.cond_channels,), jnp.float32)
      params["pixelcnn"] = self.pixelcnn.init(k_pix, jnp.zeros((1,) + self.image_shape), cond)
    return params

  # ------------------------------------------------------------------------------ pieces

  def flatten(self, x: Array) -> Array:
    """``[B, H, W, 1]`` or ``[B, x_dim]`` -> ``[B, x_dim]``, checking the size."""
    x = jnp.asarray(x)
    if x.ndim >= 2 and (x.shape[1:] == self.image_shape or x.shape[1:] == (self.x_dim,)):
      return flatten_images(x)
    raise ValueError(f"x must be a batch of images [B, {', '.join(map(str, self.image_shape))}] "
                     f"(or [B, {self.x_dim}]) for this model, got shape {x.shape}")

  def unflatten(self, x: Array) -> Array:
    return x.reshape(x.shape[:-1] + self.image_shape)

  def encode(self, params, x: Array, layer: int = 0) -> tuple[Array, Array]:
    """``(loc, log_scale)`` of ``q(z|x)``, each ``[B, D]`` (``layer`` must be 0)."""
    if layer != 0:
      raise ValueError(f"the model has one stochastic layer; layer must be 0, got {layer}")
    return self.encoder_net.apply(params["encoder"], self.flatten(x))

  def decoder_log_prob(self, params, x: Array, z: Array) -> Array:
    """``log p(x | z)`` for ``x`` ``[B, ...]`` and codes ``z`` ``[..., B, D]`` -> ``[..., B]``.

    One network pass per (sample, image) pair; the PixelCNN's likelihood is exact.
    """
    x = self.flatten(x)
    lead = z.shape[:-1]
    if self.decoder == "mlp":
      return distributions.bernoulli_log_prob(x, self.mlp_decoder_net.apply(params["decoder"], z))
    zf = z.reshape((-1, self.latent_dim))
    xf = jnp.broadcast_to(x, lead + x.shape[-1:]).reshape((-1,) + self.image_shape)
    logits = self.pixelcnn.apply(params["pixelcnn"], xf, self.cond_map(params, zf))
    lp = distributions.bernoulli_log_prob(xf, logits, event_ndims=3)
    return lp.reshape(lead)

  def cond_map(self, params, z: Array) -> Array:
    """The spatial conditioning map of codes ``z`` ``[N, D]`` -> ``[N, H, W, cond_channels]``."""
    h, w, _ = self.image_shape
    return self.cond_net.apply(params["cond"], z).reshape(z.shape[:-1] + (h, w, self.cond_channels))

  # ------------------------------------------------------------------------------ contract

  def sample_and_log_q(self, params, x: Array, key: Array) -> tuple[Array, Array]:
    """One draw ``z ~ q(z|x)`` ``[B, D]`` per image and ``log q(z|x)`` ``[B]``."""
    loc, log_scale = self.encode(params, x)
    z = distributions.sample_normal(key, loc, log_scale)
    return z, distributions.normal_log_prob(z, loc, log_scale)

  def sample_q(self, params, x: Array, key: Array) -> Array:
    return self.sample_and_log_q(params, x, key)[0]

  def log_q(self, params, x: Array, z: Array) -> Array:
    loc, log_scale = self.encode(params, x)
    return distributions.normal_log_prob(z, loc, log_scale)

  def log_prior(self, params, z: Array) -> Array:
    """``log N(z; 0, I)``: ``[B, D] -> [B]``."""
    del params
    return distributions.standard_normal_log_prob(z)

  def log_likelihood(self, params, x: Array, z: Array) -> Array:
    """``log p(x | z) = sum_j log p(x_j | x_{<j}, z)`` (exact, one pass): ``[B]``.

    .. math:: \\log p(x | z) = \\sum_j \\log p(x_j | x_{<j}, z)
    """
    return self.decoder_log_prob(params, x, z)

  def kl(self, params, x: Array) -> Array:
    """Analytic ``KL(q(z|x) || N(0, I))`` per latent dimension: ``[B, D]``."""
    loc, log_scale = self.encode(params, x)
    return distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0)

  def posterior_mean(self, params, x: Array, key: Array | None = None) -> Array:
    """``E_q[z | x]``, ``[B, D]`` (the encoder mean)."""
    del key
    return self.encode(params, x)[0]

  def sample_prior(self, params, key: Array, num: int) -> Array:
    """``z ~ N(0, I)``: ``[num, D]``."""
    del params
    return jax.random.normal(key, (num, self.latent_dim))

  def decode(self, params, z: Array, key: Array | None = None) -> Array:
    """Images for codes ``z`` (see :meth:`decode_sample`; the PixelCNN draws with ``key``)."""
    return self.decode_sample(params, jax.random.key(0) if key is None else key, z)

  # ------------------------------------------------------------------------------ samples

  def decode_sample(self, params, key: Array, z: Array, *, binary: bool = False) -> Array:
    """Images given codes ``z`` ``[N, D]`` -> ``[N, H, W, 1]``.

    The MLP decoder returns Bernoulli means (``binary=False``) or draws; the PixelCNN always
    draws, pixel by pixel (its means are only defined given the pixels before).
    """
    if self.decoder == "mlp":
      logits = self.mlp_decoder_net.apply(params["decoder"], z)
      out = distributions.sample_bernoulli(key, logits) if binary else jax.nn.sigmoid(logits)
      return self.unflatten(out)
    h, w, _ = self.image_shape
    return pixelcnn_lib.sample(self.pixelcnn, params["pixelcnn"], key, (z.shape[0], h, w),
                               self.cond_map(params, z))


def make(decoder: str = "pixelcnn", *, image_shape: Sequence[int] = (28, 28, 1),
         latent_dim: int = 32, hidden: Sequence[int] = (200, 200), num_layers: int = 6,
         features: int = 32, kernel_size: int = 3, first_kernel_size: int = 7,
         cond_channels: int = 4) -> PixelVAE:
  """A :class:`PixelVAE` from keyword settings (for configs)."""
  return PixelVAE(image_shape, latent_dim, hidden, decoder, num_layers, features, kernel_size,
                  first_kernel_size, cond_channels)
