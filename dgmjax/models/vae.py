"""Gaussian VAEs with Bernoulli decoders, including the architectures of Burda et al. (2016).

A model with ``L`` stochastic layers ``h_1, ..., h_L`` (``h_L`` on top):

.. math:: p(x, h) = p(h_L) \\prod_{l<L} p(h_l | h_{l+1}) \\, p(x | h_1), \\quad q(h|x) = q(h_1|x) \\prod_{l>1} q(h_l | h_{l-1})

with ``p(h_L) = N(0, I)``, diagonal Gaussian conditionals (``sigma = exp`` of a linear layer) and a
Bernoulli ``p(x|h_1)`` given by logits. :class:`VAE` is a frozen (hashable) dataclass of pure
functions of ``(params, x, key)``; its Flax module only holds parameters.

``log_weights(params, x, key, K)`` returns ``[K, B]``, the input of every objective in
:mod:`dgmjax.objectives` (VAE: ``elbo``; IWAE: ``iwae_bound``). The deterministic encoder of the first
stochastic layer runs once per ``x`` (its output is shared by the ``K`` samples); the layers above
the first and the decoder necessarily run once per importance sample, batched as ``[K, B, D]``.

Images ``[B, H, W, C]`` are flattened internally; the input size comes from ``image_shape``.

References:
  Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5 and
  Appendix (architectures: 784-200-200-50 and 784-200-200-100-100-100-50, tanh).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import distributions
from dgmjax.networks import GaussianHead, MLP, flatten_images

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


class LogWeightTerms(NamedTuple):
  """The pieces of the log-weights, each ``[K, B]``.

  Attributes:
    log_px_given_z: ``log p(x | h_1)``.
    log_prior: ``log p(h)`` (all stochastic layers).
    log_q: ``log q(h | x)`` with live encoder parameters.
    log_q_stop: ``log q(h | x)`` with the encoder parameters behind ``stop_gradient`` but the
      (reparametrized) samples live: the term STL and DReG need. ``None`` unless requested.
  """
  log_px_given_z: Array
  log_prior: Array
  log_q: Array
  log_q_stop: Array | None = None

  @property
  def log_weights(self) -> Array:
    return self.log_px_given_z + self.log_prior - self.log_q


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
class VAE:
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
  latent_dims: tuple[int, ...] = (50,)
  hidden_dims: tuple[tuple[int, ...], ...] = ((200, 200),)

  def __post_init__(self):
    object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
    object.__setattr__(self, "latent_dims", tuple(int(s) for s in self.latent_dims))
    object.__setattr__(self, "hidden_dims", tuple(tuple(int(w) for w in h)
                                                  for h in self.hidden_dims))
    if not self.image_shape or min(self.image_shape) < 1:
      raise ValueError(f"image_shape must be a non-empty tuple of positive sizes, got "
                       f"{self.image_shape}")
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

  def decode(self, params, h1: Array) -> Array:
    """Bernoulli logits of ``p(x | h_1)``: ``[..., D_1] -> [..., x_dim]``."""
    return self.net.apply(params, h1, method=lambda m, h: m.decoder(h))

  def conditional_prior(self, params, h_above: Array, layer: int) -> tuple[Array, Array]:
    """``(loc, log_scale)`` of ``p(h_{layer+1} | h_{layer+2})`` (``layer < L - 1``)."""
    return self.net.apply(params, h_above, method=lambda m, h: m.priors[layer](h))

  # ---------------------------------------------------------------------------------- bounds

  def _layer_keys(self, keys: Array) -> list[Array]:
    """Per-sample keys ``[K]`` -> one ``[K]`` key array per stochastic layer."""
    if self.num_layers == 1:
      return [keys]
    split = jax.vmap(lambda k: jax.random.split(k, self.num_layers))(keys)  # [K, L]
    return [split[:, l] for l in range(self.num_layers)]

  def log_weight_terms_from_keys(self, params, x: Array, keys: Array, *,
                                 stop_q: bool = False) -> LogWeightTerms:
    """Log-weight terms for one importance sample per key: each term ``[K, B]``.

    Sample ``k`` depends only on ``keys[k]``, so evaluating the keys in chunks gives exactly the
    log-weights of evaluating them at once (the chunked ``K = 5000`` estimator relies on this).

    Args:
      params: model parameters.
      x: ``[B, H, W, C]`` or ``[B, D]`` images in [0, 1] (binary for a proper likelihood).
      keys: ``[K]`` PRNG keys, one per importance sample.
      stop_q: also compute ``log_q_stop`` (q's density with stopped encoder parameters).

    Returns:
      :class:`LogWeightTerms`.
    """
    if keys.ndim != 1 or keys.shape[0] < 1:
      raise ValueError(f"keys must be a 1-D array of K >= 1 keys, got shape {keys.shape}")
    x = self.flatten(x)
    layer_keys = self._layer_keys(keys)
    sg_params = jax.tree.map(lax.stop_gradient, params) if stop_q else None
    sample_shared = jax.vmap(distributions.sample_normal, in_axes=(0, None, None))
    sample_each = jax.vmap(distributions.sample_normal, in_axes=(0, 0, 0))

    hs, log_q, log_q_stop = [], 0.0, 0.0
    inp = x
    for l in range(self.num_layers):
      loc, log_scale = self.encode(params, inp, l)
      if l == 0:  # the encoder ran once per x ([B, D_1]); draw K samples from it
        h = sample_shared(layer_keys[l], loc, log_scale)
      else:  # a layer above runs once per sample of the layer below ([K, B, D_l])
        h = sample_each(layer_keys[l], loc, log_scale)
      log_q = log_q + distributions.normal_log_prob(h, loc, log_scale)
      if stop_q:
        loc_s, log_scale_s = self.encode(sg_params, inp, l)
        log_q_stop = log_q_stop + distributions.normal_log_prob(h, loc_s, log_scale_s)
      hs.append(h)
      inp = h

    log_prior = distributions.standard_normal_log_prob(hs[-1])
    for l in range(self.num_layers - 1):
      loc, log_scale = self.conditional_prior(params, hs[l + 1], l)
      log_prior = log_prior + distributions.normal_log_prob(hs[l], loc, log_scale)
    logits = self.decode(params, hs[0])
    log_px = distributions.bernoulli_log_prob(x, logits)
    return LogWeightTerms(log_px, log_prior, log_q, log_q_stop if stop_q else None)

  def log_weight_terms(self, params, x: Array, key: Array, num_samples: int, *,
                       stop_q: bool = False) -> LogWeightTerms:
    """:meth:`log_weight_terms_from_keys` with ``jax.random.split(key, num_samples)``."""
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
      raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return self.log_weight_terms_from_keys(params, x, jax.random.split(key, num_samples),
                                           stop_q=stop_q)

  def log_weights_from_keys(self, params, x: Array, keys: Array) -> Array:
    """Log-weights ``[K, B]`` for one importance sample per key in ``keys`` ``[K]``."""
    return self.log_weight_terms_from_keys(params, x, keys).log_weights

  def log_weights(self, params, x: Array, key: Array, num_samples: int) -> Array:
    """``log p(x, h_k) - log q(h_k | x)`` for ``K = num_samples`` samples ``h_k ~ q(h|x)``.

    .. math:: \\log w_k = \\log p(x, h^{(k)}) - \\log q(h^{(k)} | x), \\quad h^{(k)} \\sim q(h|x)

    Args:
      params: model parameters.
      x: ``[B, H, W, C]`` (or ``[B, x_dim]``) images in [0, 1].
      key: PRNG key.
      num_samples: ``K`` (static).

    Returns:
      ``[K, B]`` log-weights; ``elbo`` / ``iwae_bound`` reduce them to ``[B]``.

    References:
      Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, eq. (8).
    """
    return self.log_weight_terms(params, x, key, num_samples).log_weights

  # ---------------------------------------------------------------------------------- samples

  def sample(self, params, key: Array, num: int, *, binary: bool = False) -> Array:
    """Ancestral samples from ``p(x)``, ``[num, *image_shape]``.

    Args:
      params: model parameters.
      key: PRNG key.
      num: number of samples.
      binary: return Bernoulli draws in {0, 1} instead of the Bernoulli means (the means are the
        usual display, as in Burda et al.'s figures).

    Returns:
      ``[num, H, W, C]``.
    """
    keys = jax.random.split(key, self.num_layers + 1)
    h = jax.random.normal(keys[-1], (num, self.latent_dims[-1]))
    for l in reversed(range(self.num_layers - 1)):
      loc, log_scale = self.conditional_prior(params, h, l)
      h = distributions.sample_normal(keys[l + 1], loc, log_scale)
    logits = self.decode(params, h)
    out = distributions.sample_bernoulli(keys[0], logits) if binary else jax.nn.sigmoid(logits)
    return self.unflatten(out)

  def reconstruct(self, params, x: Array, key: Array | None = None) -> Array:
    """Bernoulli means of ``p(x | h_1)`` at ``h_1 ~ q(h_1 | x)`` (or at its mean if ``key`` is None).

    Args:
      params: model parameters.
      x: ``[B, H, W, C]`` images.
      key: PRNG key, or None for the deterministic reconstruction from the encoder mean.

    Returns:
      ``[B, H, W, C]`` pixel probabilities.
    """
    loc, log_scale = self.encode(params, x, 0)
    h = loc if key is None else distributions.sample_normal(key, loc, log_scale)
    return self.unflatten(jax.nn.sigmoid(self.decode(params, h)))

  def posterior_means(self, params, x: Array, key: Array, num_samples: int = 100) -> list[Array]:
    """``E_q[h_l | x]`` per stochastic layer, each ``[B, latent_dims[l]]``.

    The first layer's mean is the encoder output. A higher layer's mean averages the encoder mean
    of ``h_l`` over ``num_samples`` samples of ``h_{l-1} ~ q`` (Burda et al.'s code uses one sample;
    more samples estimate the same expectation with less noise). ``key`` is unused for ``L = 1``.

    .. math:: \\mathbb{E}_q[h_l | x] = \\mathbb{E}_{q(h_{l-1}|x)}[\\mu_l(h_{l-1})]
    """
    loc, log_scale = self.encode(params, x, 0)
    means = [loc]
    if self.num_layers > 1:
      layer_keys = self._layer_keys(jax.random.split(key, num_samples))
      h = jax.vmap(distributions.sample_normal, (0, None, None))(layer_keys[0], loc, log_scale)
      for l in range(1, self.num_layers):
        loc, log_scale = self.encode(params, h, l)
        means.append(jnp.mean(loc, axis=0))
        if l + 1 < self.num_layers:
          h = jax.vmap(distributions.sample_normal)(layer_keys[l], loc, log_scale)
    return means


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
    latent_dims: for ``'custom'``: stochastic layer sizes, bottom first.
    hidden_dims: for ``'custom'``: hidden widths per stochastic layer.

  Returns:
    A :class:`VAE`.
  """
  if name in ("burda1", "burda_1layer"):
    return burda_one_layer(image_shape)
  if name in ("burda2", "burda_2layer"):
    return burda_two_layer(image_shape)
  if name == "custom":
    if latent_dims is None or hidden_dims is None:
      raise ValueError("model 'custom' needs latent_dims and hidden_dims")
    return VAE(tuple(image_shape), tuple(latent_dims), tuple(tuple(h) for h in hidden_dims))
  raise ValueError(f"model name must be one of 'burda1', 'burda2', 'custom'; got {name!r}")


# ------------------------------------------------------------------------------------------------
# Learnable priors and IAF posteriors on a one-stochastic-layer VAE


@dataclasses.dataclass(frozen=True)
class PriorVAE:
  """A one-stochastic-layer :class:`VAE` with a chosen prior ``p(z)`` and, optionally, an IAF
  posterior; the same interface as :class:`VAE` (``init``, ``log_weights``,
  ``log_weights_from_keys``, ``posterior_means``, ``sample``, ``reconstruct``).

  Params: ``{"vae": <the base VAE's variables>, "prior": <the prior's params>,
  "posterior_flow": <the IAF's params or {}>}``. The prior is any of :mod:`dgmjax.priors`; a
  :class:`~dgmjax.priors.VampPrior` reads the base encoder (with the same params) at its
  pseudo-inputs. With ``posterior_flow`` (a conditional IAF whose ``context_size`` is the width of
  the encoder's last hidden layer ``h``), ``z0 = mu + sigma * eps`` is pushed through the flow:

  .. math:: z = f(z_0; h(x)), \\quad \\log q(z|x) = \\log N(z_0; \\mu(x), \\sigma(x)^2) - \\log|\\det \\partial f / \\partial z_0|

  and the log-weights are ``log p(x|z) + log p(z) - log q(z|x)`` ``[K, B]``.

  Attributes:
    base: the encoder / decoder (``num_layers == 1``).
    prior: a prior of :mod:`dgmjax.priors` (default: ``StandardNormal``), ``latent_dim`` equal to
      the base latent size.
    posterior_flow: ``None`` (diagonal Gaussian ``q``) or a conditional IAF bijector, e.g.
      ``flows.inverse_autoregressive_flow(D, L, context_size=hidden_dims[0][-1])``.

  References:
    Tomczak & Welling, VAE with a VampPrior, AISTATS 2018;
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, Improved Variational Inference with
    Inverse Autoregressive Flow, NeurIPS 2016.
  """
  base: VAE
  prior: object = None
  posterior_flow: object = None

  def __post_init__(self):
    from dgmjax import priors as priors_lib  # pylint: disable=import-outside-toplevel
    if not isinstance(self.base, VAE) or self.base.num_layers != 1:
      raise ValueError(f"base must be a VAE with one stochastic layer, got {self.base!r}")
    d = self.base.latent_dims[0]
    if self.prior is None:
      object.__setattr__(self, "prior", priors_lib.StandardNormal(d))
    if getattr(self.prior, "latent_dim", None) != d:
      raise ValueError(f"prior must have latent_dim={d} (the base VAE's latent size), got "
                       f"{getattr(self.prior, 'latent_dim', None)!r}")
    if isinstance(self.prior, priors_lib.VampPrior) and self.prior.x_dim != self.base.x_dim:
      raise ValueError(f"prior (VampPrior) must have x_dim={self.base.x_dim}, got "
                       f"{self.prior.x_dim}")
    if self.posterior_flow is not None:
      f = self.posterior_flow
      h = self.base.hidden_dims[0][-1] if self.base.hidden_dims[0] else self.base.x_dim
      if tuple(f.event_shape) != (d,) or getattr(f, "context_size", 0) != h:
        raise ValueError(f"posterior_flow must have event_shape ({d},) and context_size {h} "
                         f"(the encoder's last hidden width), got {tuple(f.event_shape)} and "
                         f"{getattr(f, 'context_size', 0)}")

  # -- the base model's shape attributes
  image_shape = property(lambda self: self.base.image_shape)
  latent_dims = property(lambda self: self.base.latent_dims)
  hidden_dims = property(lambda self: self.base.hidden_dims)
  x_dim = property(lambda self: self.base.x_dim)
  num_layers = property(lambda self: 1)
  latent_dim = property(lambda self: self.base.latent_dims[0])

  def flatten(self, x: Array) -> Array:
    return self.base.flatten(x)

  def unflatten(self, x: Array) -> Array:
    return self.base.unflatten(x)

  def init(self, key: Array, *, data_mean: Array | None = None) -> dict:
    """``{"vae", "prior", "posterior_flow"}`` params (``data_mean`` as :meth:`VAE.init`)."""
    k_vae, k_prior, k_flow = jax.random.split(key, 3)
    return {"vae": self.base.init(k_vae, data_mean=data_mean),
            "prior": self.prior.init(k_prior),
            "posterior_flow": ({} if self.posterior_flow is None
                               else self.posterior_flow.init(k_flow))}

  # -- pieces

  def encoder(self, params):
    """``u -> (loc, log_scale)`` of the Gaussian ``q(z_0|u)`` with these params."""
    return lambda u: self.base.encode(params["vae"], u, 0)

  def encoder_features(self, params, x: Array) -> Array:
    """The encoder's last tanh hidden layer ``h(x)`` ``[B, H]`` (the IAF context)."""
    h = self.flatten(x)
    enc = params["vae"]["params"]["encoders_0"]
    for i in range(len(self.base.hidden_dims[0])):
      layer = enc[f"hidden_{i}"]
      bias = layer["bias"].reshape((1,) * (h.ndim - 1) + layer["bias"].shape)
      h = jnp.tanh(h @ layer["kernel"] + bias)
    return h

  def prior_log_prob(self, params, z: Array) -> Array:
    """``log p(z)``: ``[..., D] -> [...]``."""
    return self.prior.log_prob(params["prior"], z, self.encoder(params))

  def posterior_sample_and_log_prob(self, params, x: Array, keys: Array) -> tuple[Array, Array]:
    """One draw ``z ~ q(z|x)`` per key: ``z`` ``[K, B, D]`` and ``log q(z|x)`` ``[K, B]``."""
    if keys.ndim != 1 or keys.shape[0] < 1:
      raise ValueError(f"keys must be a 1-D array of K >= 1 keys, got shape {keys.shape}")
    loc, log_scale = self.base.encode(params["vae"], x, 0)
    z0 = jax.vmap(distributions.sample_normal, in_axes=(0, None, None))(keys, loc, log_scale)
    log_q = distributions.normal_log_prob(z0, loc, log_scale)
    if self.posterior_flow is None:
      return z0, log_q
    h = self.encoder_features(params, x)
    context = jnp.broadcast_to(h, z0.shape[:1] + h.shape)
    z, log_det = self.posterior_flow.forward_and_log_det(params["posterior_flow"], z0, context)
    return z, log_q - log_det

  def posterior_log_prob_cross(self, params, z: Array, x: Array) -> Array:
    """``log q(z_s | x_n)`` for every pair: ``z`` ``[S, D]``, ``x`` ``[N, ...]`` -> ``[S, N]``.

    Gaussian posteriors are closed form; an IAF posterior inverts the flow at every pair
    (``D`` sequential MADE passes on ``[S, N, D]``).
    """
    loc, log_scale = self.base.encode(params["vae"], x, 0)          # [N, D]
    zz = jnp.broadcast_to(z[:, None, :], (z.shape[0],) + loc.shape)  # [S, N, D]
    if self.posterior_flow is None:
      return distributions.normal_log_prob(zz, loc[None], log_scale[None])
    h = self.encoder_features(params, x)
    context = jnp.broadcast_to(h[None], (z.shape[0],) + h.shape)
    z0, log_det = self.posterior_flow.inverse_and_log_det(params["posterior_flow"], zz, context)
    lq = distributions.normal_log_prob(z0, loc[None], log_scale[None]) + log_det
    # A pair far outside q(.|x_n)'s support can overflow the sequential inversion (|z0| beyond
    # sqrt(max float), see flows.autoregressive._bounded); its density is zero, not NaN.
    return jnp.where(jnp.isfinite(lq), lq, -jnp.inf)

  # -- bounds

  def log_weight_terms_from_keys(self, params, x: Array, keys: Array) -> LogWeightTerms:
    """Log-weight terms ``[K, B]`` for one importance sample per key (``log_q_stop`` is None)."""
    x = self.flatten(x)
    z, log_q = self.posterior_sample_and_log_prob(params, x, keys)
    log_prior = self.prior_log_prob(params, z)
    log_px = distributions.bernoulli_log_prob(x, self.base.decode(params["vae"], z))
    return LogWeightTerms(log_px, log_prior, log_q)

  def log_weights_from_keys(self, params, x: Array, keys: Array) -> Array:
    """Log-weights ``[K, B]`` for one importance sample per key in ``keys`` ``[K]``."""
    return self.log_weight_terms_from_keys(params, x, keys).log_weights

  def log_weights(self, params, x: Array, key: Array, num_samples: int) -> Array:
    """``log p(x|z_k) + log p(z_k) - log q(z_k|x)``, ``z_k ~ q(z|x)``: ``[K, B]``.

    .. math:: \\log w_k = \\log p(x | z^{(k)}) + \\log p(z^{(k)}) - \\log q(z^{(k)} | x)
    """
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
      raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    return self.log_weights_from_keys(params, x, jax.random.split(key, num_samples))

  # -- samples

  def sample(self, params, key: Array, num: int, *, binary: bool = False) -> Array:
    """Samples of ``p(x)``: ``z ~ p(z)``, Bernoulli means (or draws) ``[num, *image_shape]``."""
    k_z, k_x = jax.random.split(key)
    z = self.prior.sample(k_z, params["prior"], num, self.encoder(params))
    logits = self.base.decode(params["vae"], z)
    out = distributions.sample_bernoulli(k_x, logits) if binary else jax.nn.sigmoid(logits)
    return self.unflatten(out)

  def reconstruct(self, params, x: Array, key: Array | None = None) -> Array:
    """Bernoulli means at ``z ~ q(z|x)`` (or at the flow image of the encoder mean if no key)."""
    if key is None:
      loc, _ = self.base.encode(params["vae"], x, 0)
      z = loc
      if self.posterior_flow is not None:
        z = self.posterior_flow.forward(params["posterior_flow"], loc,
                                        self.encoder_features(params, x))
    else:
      z = self.posterior_sample_and_log_prob(params, x, key[None])[0][0]
    return self.unflatten(jax.nn.sigmoid(self.base.decode(params["vae"], z)))

  def posterior_means(self, params, x: Array, key: Array, num_samples: int = 100) -> list[Array]:
    """``[E_q[z | x]]`` ``[B, D]``: the encoder mean, or a ``num_samples`` average with an IAF."""
    if self.posterior_flow is None:
      return [self.base.encode(params["vae"], x, 0)[0]]
    z, _ = self.posterior_sample_and_log_prob(params, x, jax.random.split(key, num_samples))
    return [jnp.mean(z, axis=0)]


def make_prior_vae(name: str, image_shape: Sequence[int], *, prior: str = "standard",
                   posterior: str = "gaussian", latent_dims: Sequence[int] | None = None,
                   hidden_dims: Sequence[Sequence[int]] | None = None, num_components: int = 10,
                   num_pseudo_inputs: int = 500, flow_layers: int = 4,
                   flow_hidden: Sequence[int] = (64, 64)) -> PriorVAE:
  """A :class:`PriorVAE` from names: a one-layer architecture of :func:`make`, a prior of
  :func:`dgmjax.priors.make_prior` and ``posterior`` ``'gaussian'`` or ``'iaf'``
  (``flow_layers`` IAF layers with ``flow_hidden`` MADE widths, context = last encoder layer).
  """
  from dgmjax import flows, priors  # pylint: disable=import-outside-toplevel
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
