"""Gaussian VAEs with Bernoulli decoders, including the architectures of Burda et al. (2016).

A model with ``L`` stochastic layers ``h_1, ..., h_L`` (``h_L`` on top):

.. math:: p(x, h) = p(h_L) \\prod_{l<L} p(h_l | h_{l+1}) \\, p(x | h_1), \\quad q(h|x) = q(h_1|x) \\prod_{l>1} q(h_l | h_{l-1})

with ``p(h_L) = N(0, I)``, diagonal Gaussian conditionals (``sigma = exp`` of a linear layer) and a
Bernoulli ``p(x|h_1)`` given by logits. :class:`VAE` is a model of the contract
(:mod:`dgmjax.models.base`): a frozen (hashable) dataclass of pure functions of ``params``; its
Flax module only holds parameters. The latent ``z`` is ``h_1`` ``[B, D_1]`` for one stochastic
layer and the tuple ``(h_1, ..., h_L)`` otherwise.

``dgmjax.models.log_weights(model, params, x, key, K)`` returns ``[K, B]``, the input of every
bound in :mod:`dgmjax.objectives`. The deterministic encoder of the first stochastic layer runs once
per ``x`` (the ``K`` samples are a ``vmap`` over keys with ``x`` unbatched); the layers above the
first and the decoder necessarily run once per importance sample, batched as ``[K, B, D]``.

Images ``[B, H, W, C]`` are flattened internally; the input size comes from ``image_shape``.

References:
  Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5 and
  Appendix (architectures: 784-200-200-50 and 784-200-200-100-100-100-50, tanh).
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
from dgmjax.models.base import LatentModel
from dgmjax.models.prior_vae import PriorVAE
from dgmjax.nn.mlp import GaussianHead, MLP, flatten_images

Array = jax.Array


class _Net(nn.Module):
  """Parameter holder: encoders q(h_l | h_{l-1}), conditional priors p(h_l | h_{l+1}), decoder."""
  x_dim: int
  latent_dims: tuple[int, ...]
  hidden_dims: tuple[tuple[int, ...], ...]

  def setup(self):
    n = len(self.latent_dims)
    self.encoders = [GaussianHead(self.hidden_dims[l], self.latent_dims[l]) for l in range(n)]
    self.priors = [GaussianHead(tuple(reversed(self.hidden_dims[l + 1])), self.latent_dims[l])
                   for l in range(n - 1)]
    self.decoder = MLP(tuple(reversed(self.hidden_dims[0])) + (self.x_dim,))

  def __call__(self, x):  # used by init only: touches every submodule once
    h = x
    hs = []
    for enc in self.encoders:
      h, _ = enc(h)
      hs.append(h)
    for l, prior in enumerate(self.priors):
      prior(hs[l + 1])
    return self.decoder(hs[0])


def output_bias_from_mean(mean: Array, clip: float = 1e-3) -> np.ndarray:
  """Decoder output bias ``logit(clip(mean, c, 1 - c))`` from the mean training image.

  Burda et al.'s reference code initialises the Bernoulli decoder's output bias this way, so that the
  untrained model already predicts the average pixel intensities.

  Args:
    mean: mean training image, any shape with ``x_dim`` elements.
    clip: the clipping ``c`` (the reference code uses ``1e-3``).

  Returns:
    ``[x_dim]`` float32 numpy array.
  """
  m = np.clip(np.asarray(mean, np.float64).reshape(-1), clip, 1.0 - clip)
  return (np.log(m) - np.log1p(-m)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class VAE(LatentModel):
  """A Gaussian VAE / IWAE with a Bernoulli decoder and ``len(latent_dims)`` stochastic layers.

  Every method is a pure function of ``params`` (and of ``key`` where it samples), so it can be
  jitted, vmapped and differentiated.

  Attributes:
    image_shape: shape of one input image, e.g. ``(28, 28, 1)``; ``x_dim`` is its size.
    latent_dims: sizes of ``h_1, ..., h_L`` (bottom first).
    hidden_dims: widths of the deterministic tanh layers of each stochastic layer's encoder, bottom
      first; the generative side mirrors them (``p(h_l|h_{l+1})`` uses ``reversed(hidden_dims[l+1])``
      and ``p(x|h_1)`` uses ``reversed(hidden_dims[0])``).
  """
  image_shape: tuple[int, ...]
  data_support = "binary"  # Bernoulli decoder (a class attribute, not a field)
  latent_dims: tuple[int, ...] = (50,)
  hidden_dims: tuple[tuple[int, ...], ...] = ((200, 200),)

  def __post_init__(self):
    object.__setattr__(self, "image_shape", check_sizes("image_shape", self.image_shape))
    object.__setattr__(self, "latent_dims", check_sizes("latent_dims", self.latent_dims))
    if isinstance(self.hidden_dims, (str, bytes)) or not isinstance(self.hidden_dims, Sequence):
      raise _checks.ArgumentTypeError(f"hidden_dims must be a sequence of width sequences (one "
                                      f"per stochastic layer), got {self.hidden_dims!r}")
    object.__setattr__(self, "hidden_dims", tuple(
        check_sizes(f"hidden_dims[{l}]", h, allow_empty=True)
        for l, h in enumerate(self.hidden_dims)))
    if not self.latent_dims or len(self.latent_dims) != len(self.hidden_dims):
      raise ValueError(f"latent_dims {self.latent_dims} and hidden_dims {self.hidden_dims} must "
                       "be non-empty and of equal length (one entry per stochastic layer)")

  @property
  def x_dim(self) -> int:
    """Number of pixels of one image."""
    return math.prod(self.image_shape)

  @property
  def num_layers(self) -> int:
    """Number of stochastic layers ``L``."""
    return len(self.latent_dims)

  @property
  def net(self) -> _Net:
    """The Flax module holding the parameters."""
    return _Net(self.x_dim, self.latent_dims, self.hidden_dims)

  # ---------------------------------------------------------------------------------- setup

  def init(self, key: Array, *, data_mean: Array | None = None) -> dict:
    """Initial parameters (a pytree): Glorot-uniform weights, zero biases.

    Args:
      key: PRNG key.
      data_mean: optional mean training image; if given, the decoder's output bias starts at
        ``logit(mean)`` (see :func:`output_bias_from_mean`), as in Burda et al.'s code.

    Returns:
      Flax variables ``{'params': ...}``.
    """
    params = self.net.init(key, jnp.zeros((1, self.x_dim), jnp.float32))
    if data_mean is not None:
      bias = output_bias_from_mean(data_mean)
      if bias.shape != (self.x_dim,):
        raise ValueError(f"data_mean has {bias.size} elements, the model expects {self.x_dim}")
      params = jax.tree.map(lambda a: a, params)  # fresh containers
      params["params"]["decoder"]["out"]["bias"] = jnp.asarray(bias)
    return params

  def flatten(self, x: Array) -> Array:
    """``[B, *image_shape]`` or ``[B, x_dim]`` -> ``[B, x_dim]``, checking the size."""
    x = jnp.asarray(x)
    if x.ndim >= 2 and (x.shape[1:] == self.image_shape or x.shape[1:] == (self.x_dim,)):
      return flatten_images(x)
    raise ValueError(f"x must be a batch of images [B, {', '.join(map(str, self.image_shape))}] "
                     f"(or [B, {self.x_dim}]) for this model, got shape {x.shape}")

  def unflatten(self, x: Array) -> Array:
    """``[..., x_dim]`` -> ``[..., *image_shape]``."""
    return x.reshape(x.shape[:-1] + self.image_shape)

  # ---------------------------------------------------------------------------------- pieces

  def encode(self, params, x: Array, layer: int = 0) -> tuple[Array, Array]:
    """``(loc, log_scale)`` of ``q(h_{layer+1} | h_layer)``, ``h_0 = x``; each ``[..., D_l]``."""
    inp = self.flatten(x) if layer == 0 else x
    return self.net.apply(params, inp, method=lambda m, h: m.encoders[layer](h))

  def decoder_logits(self, params, h1: Array) -> Array:
    """Bernoulli logits of ``p(x | h_1)``: ``[..., D_1] -> [..., x_dim]``."""
    return self.net.apply(params, h1, method=lambda m, h: m.decoder(h))

  def conditional_prior(self, params, h_above: Array, layer: int) -> tuple[Array, Array]:
    """``(loc, log_scale)`` of ``p(h_{layer+1} | h_{layer+2})`` (``layer < L - 1``)."""
    return self.net.apply(params, h_above, method=lambda m, h: m.priors[layer](h))

  # ---------------------------------------------------------------------------------- contract

  def _layer_keys(self, key: Array) -> list[Array]:
    """One key per stochastic layer (the key itself for ``L = 1``)."""
    if self.num_layers == 1:
      return [key]
    return list(jax.random.split(key, self.num_layers))

  def _as_layers(self, z) -> tuple[Array, ...]:
    hs = (z,) if self.num_layers == 1 else tuple(z)
    if len(hs) != self.num_layers:
      raise ValueError(f"z must hold {self.num_layers} stochastic layers, got {len(hs)}")
    return hs

  def _from_layers(self, hs):
    return hs[0] if self.num_layers == 1 else tuple(hs)

  def sample_and_log_q(self, params, x: Array, key: Array):
    """One draw ``h ~ q(h|x)`` per image and ``log q(h|x)`` ``[B]``; the encoder runs once."""
    hs, log_q, inp = [], 0.0, self.flatten(x)
    for l, k in enumerate(self._layer_keys(key)):
      loc, log_scale = self.encode(params, inp, l)
      h = distributions.sample_normal(k, loc, log_scale)
      log_q = log_q + distributions.normal_log_prob(h, loc, log_scale)
      hs.append(h)
      inp = h
    return self._from_layers(hs), log_q

  def sample_q(self, params, x: Array, key: Array):
    """``h ~ q(h|x)``: ``h_1`` ``[B, D_1]`` (a tuple over layers for ``L > 1``)."""
    return self.sample_and_log_q(params, x, key)[0]

  def log_q(self, params, x: Array, z) -> Array:
    """``log q(h|x) = sum_l log N(h_l; mu_l(h_{l-1}), sigma_l(h_{l-1})^2)``, ``h_0 = x``: ``[B]``."""
    hs = self._as_layers(z)
    log_q, inp = 0.0, self.flatten(x)
    for l, h in enumerate(hs):
      loc, log_scale = self.encode(params, inp, l)
      log_q = log_q + distributions.normal_log_prob(h, loc, log_scale)
      inp = h
    return log_q

  def log_prior(self, params, z) -> Array:
    """``log p(h) = log N(h_L; 0, I) + sum_{l<L} log p(h_l | h_{l+1})``: ``[B]``."""
    hs = self._as_layers(z)
    log_prior = distributions.standard_normal_log_prob(hs[-1])
    for l in range(self.num_layers - 1):
      loc, log_scale = self.conditional_prior(params, hs[l + 1], l)
      log_prior = log_prior + distributions.normal_log_prob(hs[l], loc, log_scale)
    return log_prior

  def log_likelihood(self, params, x: Array, z) -> Array:
    """Bernoulli ``log p(x | h_1)``, summed over pixels: ``[B]``."""
    return distributions.bernoulli_log_prob(self.flatten(x),
                                            self.decoder_logits(params, self._as_layers(z)[0]))

  # ---------------------------------------------------------------------------------- optional

  def sample_prior(self, params, key: Array, num: int):
    """Ancestral ``h_L ~ N(0, I)``, ``h_l ~ p(h_l | h_{l+1})``: ``z`` with ``num`` rows."""
    keys = jax.random.split(key, self.num_layers)
    h = jax.random.normal(keys[-1], (num, self.latent_dims[-1]))
    hs = [h]
    for l in reversed(range(self.num_layers - 1)):
      loc, log_scale = self.conditional_prior(params, h, l)
      h = distributions.sample_normal(keys[l], loc, log_scale)
      hs.insert(0, h)
    return self._from_layers(hs)

  def decode(self, params, z, key: Array | None = None) -> Array:
    """Bernoulli means of ``p(x | h_1)``: ``[B, *image_shape]``."""
    del key
    return self.unflatten(jax.nn.sigmoid(self.decoder_logits(params, self._as_layers(z)[0])))

  def posterior_mean(self, params, x: Array, key: Array, num_samples: int = 100):
    """``E_q[h_l | x]`` per stochastic layer, each ``[B, latent_dims[l]]`` (``z``'s structure).

    The first layer's mean is the encoder output. A higher layer's mean averages the encoder mean
    of ``h_l`` over ``num_samples`` samples of ``h_{l-1} ~ q`` (Burda et al.'s code uses one sample;
    more samples estimate the same expectation with less noise). ``key`` is unused for ``L = 1``.

    .. math:: \\mathbb{E}_q[h_l | x] = \\mathbb{E}_{q(h_{l-1}|x)}[\\mu_l(h_{l-1})]
    """
    loc, log_scale = self.encode(params, x, 0)
    means = [loc]
    if self.num_layers > 1:
      keys = jax.vmap(lambda k: jax.random.split(k, self.num_layers))(
          jax.random.split(key, num_samples))
      h = jax.vmap(distributions.sample_normal, (0, None, None))(keys[:, 0], loc, log_scale)
      for l in range(1, self.num_layers):
        loc, log_scale = self.encode(params, h, l)
        means.append(jnp.mean(loc, axis=0))
        if l + 1 < self.num_layers:
          h = jax.vmap(distributions.sample_normal)(keys[:, l], loc, log_scale)
    return self._from_layers(means)

  def kl(self, params, x: Array) -> Array:
    """Analytic ``KL(q(h_1|x) || N(0, I))`` per latent dimension ``[B, D_1]`` (``L = 1`` only)."""
    if self.num_layers != 1:
      raise ValueError("the analytic KL per dimension needs one stochastic layer (the prior of "
                       f"h_1 is a network for L={self.num_layers})")
    loc, log_scale = self.encode(params, x, 0)
    return distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0)

  @property
  def latent_dim(self) -> int | None:
    """``D_1`` for one stochastic layer (the size :class:`~dgmjax.models.PriorVAE` needs)."""
    return self.latent_dims[0] if self.num_layers == 1 else None

  @property
  def feature_dim(self) -> int:
    """Width of :meth:`features` (the encoder's last hidden layer, or the input size)."""
    return self.hidden_dims[0][-1] if self.hidden_dims[0] else self.x_dim

  def features(self, params, x: Array) -> Array:
    """The first encoder's last tanh hidden layer ``h(x)`` ``[B, H]`` (an IAF's context)."""
    h = self.flatten(x)
    enc = params["params"]["encoders_0"]
    for i in range(len(self.hidden_dims[0])):
      layer = enc[f"hidden_{i}"]
      bias = layer["bias"].reshape((1,) * (h.ndim - 1) + layer["bias"].shape)
      h = jnp.tanh(h @ layer["kernel"] + bias)
    return h


def check_sizes(name: str, value, *, allow_empty: bool = False) -> tuple[int, ...]:
  """A sequence of sizes as a tuple of ints >= 1, or an error naming ``name`` (a bool, float or
  string size, a bare int where a sequence is expected, an empty sequence unless allowed)."""
  if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
    raise _checks.ArgumentTypeError(f"{name} must be a sequence of ints >= 1 (e.g. (50,)), got "
                                    f"{type(value).__name__} {value!r}")
  out = tuple(_checks.check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(value))
  if not out and not allow_empty:
    raise ValueError(f"{name} must hold at least one size, got {value!r}")
  return out


def burda_one_layer(image_shape: Sequence[int] = (28, 28, 1)) -> VAE:
  """Burda et al.'s 1-stochastic-layer model: 784-200-200-50 (tanh), mirrored decoder."""
  return VAE(tuple(image_shape), (50,), ((200, 200),))


def burda_two_layer(image_shape: Sequence[int] = (28, 28, 1)) -> VAE:
  """Burda et al.'s 2-stochastic-layer model: 784-200-200-100 / 100-100-100-50 (tanh), mirrored."""
  return VAE(tuple(image_shape), (100, 50), ((200, 200), (100, 100)))


def make(name: str, image_shape: Sequence[int], *, latent_dims: Sequence[int] | None = None,
         hidden_dims: Sequence[Sequence[int]] | None = None) -> VAE:
  """A model by name: ``'burda1'``, ``'burda2'``, or ``'custom'`` with explicit sizes.

  Args:
    name: architecture name.
    image_shape: ``(H, W, C)`` of the data.
    latent_dims: for ``'custom'``: stochastic layer sizes, bottom first (for a named
      architecture: ``None`` or empty, a config's unset placeholder).
    hidden_dims: for ``'custom'``: hidden widths per stochastic layer (named: ``None`` or empty).

  Returns:
    A :class:`VAE`.

  Raises:
    ValueError: an unknown ``name``; ``latent_dims`` or ``hidden_dims`` given for a named
      architecture (they are only for ``'custom'``) or missing for ``'custom'``; sizes that are
      not ints >= 1 (each message names the argument and the entry).
  """
  if not isinstance(name, str):
    raise _checks.ArgumentTypeError(f"name must be one of 'burda1', 'burda2', 'custom'; got "
                                    f"{type(name).__name__} {name!r}")
  image_shape = check_sizes("image_shape", image_shape)
  if name in ("burda1", "burda_1layer", "burda2", "burda_2layer"):
    given = [k for k, v in (("latent_dims", latent_dims), ("hidden_dims", hidden_dims))
             if v is not None and not (isinstance(v, (tuple, list)) and not v)]
    if given:
      raise ValueError(f"{' and '.join(given)} must be None for model {name!r}: its sizes are "
                       f"fixed (Burda et al.); use name='custom' with latent_dims and hidden_dims")
  if name in ("burda1", "burda_1layer"):
    return burda_one_layer(image_shape)
  if name in ("burda2", "burda_2layer"):
    return burda_two_layer(image_shape)
  if name == "custom":
    if latent_dims is None or hidden_dims is None:
      raise ValueError("model 'custom' needs latent_dims and hidden_dims")
    return VAE(image_shape, latent_dims, hidden_dims)
  raise ValueError(f"model name must be one of 'burda1', 'burda2', 'custom'; got {name!r}")


# ------------------------------------------------------------------------------------------------
# Learnable priors and IAF posteriors on a one-stochastic-layer VAE


def make_prior_vae(name: str, image_shape: Sequence[int], *, prior: str = "standard",
                   posterior: str = "gaussian", latent_dims: Sequence[int] | None = None,
                   hidden_dims: Sequence[Sequence[int]] | None = None, num_components: int = 10,
                   num_pseudo_inputs: int = 500, flow_layers: int = 4,
                   flow_hidden: Sequence[int] = (64, 64)) -> PriorVAE:
  """A :class:`~dgmjax.models.prior_vae.PriorVAE` over a :class:`VAE`, from names: a one-layer architecture of :func:`make`, a prior of
  :func:`dgmjax.priors.make_prior` and ``posterior`` ``'gaussian'`` or ``'iaf'``
  (``flow_layers`` IAF layers with ``flow_hidden`` MADE widths, context = last encoder layer).

  Raises:
    ValueError: as :func:`make`; ``posterior`` not ``'gaussian'`` or ``'iaf'``; ``num_components``,
      ``num_pseudo_inputs`` or ``flow_layers`` not an int >= 1, ``flow_hidden`` not a non-empty
      sequence of ints >= 1 (checked whether or not the prior uses them).
  """
  from dgmjax import flows, priors  # pylint: disable=import-outside-toplevel
  if posterior not in ("gaussian", "iaf"):
    raise ValueError(f"posterior must be 'gaussian' or 'iaf', got {posterior!r}")
  for key, value in (("num_components", num_components), ("num_pseudo_inputs", num_pseudo_inputs),
                     ("flow_layers", flow_layers)):
    _checks.check_int(key, value, minimum=1)
  flow_hidden = check_sizes("flow_hidden", flow_hidden)
  base = make(name, image_shape, latent_dims=latent_dims, hidden_dims=hidden_dims)
  if base.num_layers != 1:
    raise ValueError(f"model {name!r} has {base.num_layers} stochastic layers; priors need one")
  d = base.latent_dims[0]
  p = priors.make_prior(prior, d, x_dim=base.x_dim, num_components=num_components,
                        num_pseudo_inputs=num_pseudo_inputs, flow_layers=flow_layers,
                        flow_hidden=flow_hidden)
  if posterior == "gaussian":
    flow = None
  elif posterior == "iaf":
    flow = flows.inverse_autoregressive_flow(d, flow_layers, tuple(flow_hidden),
                                             context_size=base.hidden_dims[0][-1])
  else:
    raise ValueError(f"posterior must be 'gaussian' or 'iaf', got {posterior!r}")
  return PriorVAE(base, p, flow)
