"""A VAE with categorical latents (Jang, Gu & Poole 2017; Maddison et al. 2017).

``N`` independent categorical variables with ``C`` classes each, a uniform prior, an MLP encoder
giving ``q(z|x) = prod_n Cat(z_n; softmax(l_n(x)))`` and an MLP Bernoulli decoder reading the
one-hot ``z`` (``[N, C]``, flattened). Training needs a gradient through a discrete sample; the
estimators here:

- ``'gumbel'``: the Gumbel-softmax (Concrete) relaxation ``y = softmax((l + g) / tau)`` fed to the
  decoder; biased, low variance. The KL to the uniform prior is the exact categorical one,
  ``sum_n (log C - H(q_n))``, as in Jang et al.'s code.
- ``'st'``: straight-through Gumbel-softmax, the one-hot ``argmax`` forward and the relaxed
  gradient backward.
- ``'reinforce'``: the score-function estimator on the reconstruction term with a leave-one-out
  minibatch-mean baseline (unbiased: the baseline of example ``i`` depends only on the other
  examples' samples), the exact KL gradient on the KL term.

With ``codebook_dim > 0`` the decoder reads ``z = sum_c y_c e_c`` for a learned codebook
``e in R^{C x D}`` shared by the ``N`` variables: the discrete VAE (dVAE) of DALL-E, with the relaxed
``y`` during training and one-hot codes at test time.

Evaluation always uses discrete samples: ``log_weights`` returns
``log p(x|z) + log p(z) - log q(z|x)`` for one-hot ``z ~ q``, so ``-elbo(log_weights)`` is the
negative ELBO with hard samples and :func:`dgmjax.evaluation.log_likelihood` the importance-sampled
NLL.

References:
  Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
  Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
  Ramesh et al., Zero-Shot Text-to-Image Generation, ICML 2021 (dVAE).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import distributions, gumbel
from dgmjax.networks import MLP, flatten_images

Array = jax.Array

ESTIMATORS = ("gumbel", "st", "reinforce")


class _Net(nn.Module):
  x_dim: int
  num_vars: int
  num_classes: int
  hidden_dims: tuple[int, ...]
  codebook_dim: int

  def setup(self):
    self.encoder = MLP(tuple(self.hidden_dims) + (self.num_vars * self.num_classes,),
                       activation=nn.relu)
    self.decoder = MLP(tuple(reversed(self.hidden_dims)) + (self.x_dim,), activation=nn.relu)
    if self.codebook_dim:
      self.codebook = self.param("codebook", nn.initializers.normal(1.0),
                                 (self.num_classes, self.codebook_dim))

  def encode(self, x):
    return self.encoder(x)

  def decode(self, y):
    if self.codebook_dim:
      y = y @ self.codebook
    return self.decoder(y.reshape(y.shape[:-2] + (-1,)))

  def __call__(self, x):  # init only
    logits = self.encode(x).reshape(x.shape[:-1] + (self.num_vars, self.num_classes))
    return self.decode(jax.nn.softmax(logits))


@dataclasses.dataclass(frozen=True)
class CategoricalVAE:
  """``N`` categorical latents with ``C`` classes, uniform prior, Bernoulli decoder.

  Attributes:
    image_shape: ``(H, W, C)`` of the inputs.
    num_vars: ``N`` (Jang et al.: 20).
    num_classes: ``C >= 2`` (Jang et al.: 10).
    hidden_dims: encoder widths; the decoder mirrors them (Jang et al.: 512, 256, ReLU).
    codebook_dim: ``0`` for one-hot inputs to the decoder, else the size of learned code vectors.
  """
  image_shape: tuple[int, ...] = (28, 28, 1)
  num_vars: int = 20
  num_classes: int = 10
  hidden_dims: tuple[int, ...] = (512, 256)
  codebook_dim: int = 0

  def __post_init__(self):
    if self.num_vars < 1:
      raise ValueError(f"num_vars must be >= 1, got {self.num_vars}")
    if self.num_classes < 2:
      raise ValueError(f"num_classes (the codebook size) must be >= 2, got {self.num_classes}")
    if self.codebook_dim < 0:
      raise ValueError(f"codebook_dim must be >= 0, got {self.codebook_dim}")

  @property
  def x_dim(self) -> int:
    return math.prod(self.image_shape)

  @property
  def module(self) -> _Net:
    return _Net(self.x_dim, self.num_vars, self.num_classes, tuple(self.hidden_dims),
                self.codebook_dim)

  def init(self, key: Array):
    return self.module.init(key, jnp.zeros((1, self.x_dim)))

  def _flat(self, x: Array) -> Array:
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"x must be [B, {', '.join(map(str, self.image_shape))}], got {x.shape}")
    return flatten_images(x)

  def encoder_logits(self, params, x: Array) -> Array:
    """Normalised ``log q(z_n = c | x)``: ``[B, N, C]``."""
    h = self.module.apply(params, self._flat(x), method=_Net.encode)
    return jax.nn.log_softmax(h.reshape(h.shape[:-1] + (self.num_vars, self.num_classes)))

  def decoder_logits(self, params, y: Array) -> Array:
    """Bernoulli logits of ``x`` given ``y`` (one-hot or relaxed) ``[..., N, C]`` -> ``[..., D]``."""
    return self.module.apply(params, y, method=_Net.decode)

  def kl(self, logits: Array) -> Array:
    """Exact ``KL(q(z|x) || Uniform) = sum_n (log C - H(q_n))``: ``[B, N, C] -> [B]``."""
    return jnp.sum(distributions.kl_categorical_uniform(logits), axis=-1)

  def loss(self, params, x: Array, key: Array, temperature, estimator: str = "gumbel"):
    """Negative training ELBO averaged over the batch, and metrics.

    Args:
      params: parameters.
      x: ``[B, H, W, C]`` binary images.
      key: PRNG key.
      temperature: Gumbel-softmax ``tau > 0`` (ignored by ``'reinforce'``); may be traced.
      estimator: ``'gumbel'``, ``'st'`` or ``'reinforce'``.

    Returns:
      ``(loss, metrics)``; ``metrics['elbo']`` is the ELBO estimate of this step (with relaxed
      samples for ``'gumbel'``).
    """
    if estimator not in ESTIMATORS:
      raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    xf = self._flat(x)
    logits = self.encoder_logits(params, x)
    kl = self.kl(logits)
    if estimator == "reinforce":
      idx = gumbel.gumbel_max(key, logits)                                   # [B, N]
      y = jax.nn.one_hot(idx, self.num_classes, dtype=logits.dtype)
      recon = distributions.bernoulli_log_prob(xf, self.decoder_logits(params, y))
      log_q = jnp.sum(distributions.categorical_log_prob(idx, logits), axis=-1)
      b = recon.shape[0]
      if b < 2:
        raise ValueError("estimator='reinforce' needs a batch of at least 2 (its baseline is the "
                         "mean over the other examples)")
      f = lax.stop_gradient(recon)
      baseline = (jnp.sum(f) - f) / (b - 1)
      surrogate = recon + (f - baseline) * (log_q - lax.stop_gradient(log_q))
    else:
      y = gumbel.gumbel_softmax(key, logits, temperature, hard=estimator == "st")
      recon = distributions.bernoulli_log_prob(xf, self.decoder_logits(params, y))
      surrogate = recon
    elbo = recon - kl
    return -jnp.mean(surrogate - kl), {"elbo": jnp.mean(elbo), "kl": jnp.mean(kl),
                                       "recon": jnp.mean(recon)}

  def log_weights_from_keys(self, params, x: Array, keys: Array) -> Array:
    """``log p(x, z_k) - log q(z_k | x)`` for one-hot ``z_k ~ q``, one per key: ``[K, B]``.

    The encoder runs once; the decoder once per sample.
    """
    xf = self._flat(x)
    logits = self.encoder_logits(params, x)
    log_prior = -self.num_vars * math.log(self.num_classes)

    def one(key):
      idx = gumbel.gumbel_max(key, logits)
      y = jax.nn.one_hot(idx, self.num_classes, dtype=logits.dtype)
      log_px = distributions.bernoulli_log_prob(xf, self.decoder_logits(params, y))
      return log_px + log_prior - jnp.sum(distributions.categorical_log_prob(idx, logits), -1)

    return jax.vmap(one)(keys)

  def log_weights(self, params, x: Array, key: Array, num_samples: int) -> Array:
    """``[K, B]`` log-weights with discrete samples (see :meth:`log_weights_from_keys`)."""
    return self.log_weights_from_keys(params, x, jax.random.split(key, num_samples))

  def sample(self, params, key: Array, num: int) -> Array:
    """Bernoulli means of ``p(x|z)`` for ``z`` from the uniform prior: ``[num, H, W, C]``."""
    idx = jax.random.randint(key, (num, self.num_vars), 0, self.num_classes)
    y = jax.nn.one_hot(idx, self.num_classes)
    return jax.nn.sigmoid(self.decoder_logits(params, y)).reshape((num,) + self.image_shape)

  def reconstruct(self, params, x: Array) -> Array:
    """Bernoulli means of ``p(x | argmax q(z|x))``."""
    idx = jnp.argmax(self.encoder_logits(params, x), axis=-1)
    y = jax.nn.one_hot(idx, self.num_classes)
    return jax.nn.sigmoid(self.decoder_logits(params, y)).reshape(x.shape)


def jang_temperature(step, *, initial: float = 1.0, minimum: float = 0.5, rate: float = 3e-5,
                     every: int = 1000):
  """Jang et al.'s annealing ``tau = max(minimum, initial * exp(-rate * t))``, ``t`` updated every
  ``every`` steps (their code: ``tau0 = 1``, ``ANNEAL_RATE = 0.00003``, ``MIN_TEMP = 0.5``,
  every 1000 steps)."""
  if minimum <= 0 or initial <= 0:
    raise ValueError(f"temperatures must be > 0, got initial={initial}, minimum={minimum}")
  t = (step // every) * every
  return jnp.maximum(minimum, initial * jnp.exp(-rate * t))
