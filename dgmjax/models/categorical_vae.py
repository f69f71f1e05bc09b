"""A VAE with categorical latents (Jang, Gu & Poole 2017; Maddison et al. 2017).

``N`` independent categorical variables with ``C`` classes each, a uniform prior, an MLP encoder
giving ``q(z|x) = prod_n Cat(z_n; softmax(l_n(x)))`` and an MLP Bernoulli decoder reading the
one-hot ``z`` (``[N, C]``, flattened). Training needs a gradient through a discrete sample.

:class:`CategoricalVAE` is a model of the contract (:mod:`dgmjax.models.base`) with one-hot
samples ``z ~ q`` ``[B, N, C]`` (float, so it declares ``latent = 'discrete'``: the pathwise
estimators refuse it), so the generic score-function estimators of
:func:`dgmjax.losses.make_loss` train it: ``'reinforce'`` (with a leave-one-out minibatch
baseline or a learned input-dependent one, NVIL), ``'vimco'``, ``'rws'``. Its analytic
``kl(params, x)`` (``log C - H(q_n)`` per variable) serves ``make_loss(..., kl='analytic')``.

:meth:`CategoricalVAE.relaxed` gives the Gumbel-softmax relaxations as contract models of their own:
``hard=False`` (``'gumbel'``: ``y = softmax((l + g) / tau)`` fed to the decoder; biased, low
variance) and ``hard=True`` (``'st'``: straight-through, the one-hot ``argmax`` forward and the
relaxed gradient backward); Jang et al. train both with the exact categorical KL.

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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks, distributions, gumbel
from dgmjax.models.base import LatentModel
from dgmjax.nn.mlp import MLP, flatten_images

Array = jax.Array

#: The relaxations of :meth:`CategoricalVAE.relaxed` by name (``'st'``: straight-through).
RELAXATIONS = ("gumbel", "st")


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
class CategoricalVAE(LatentModel):
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
  data_support = "binary"  # Bernoulli decoder (a class attribute, not a field)
  latent = "discrete"      # one-hot float draws: pathwise estimators refuse the model
  num_classes: int = 10
  hidden_dims: tuple[int, ...] = (512, 256)
  codebook_dim: int = 0

  def __post_init__(self):
    from dgmjax.models.vae import check_sizes  # pylint: disable=import-outside-toplevel
    object.__setattr__(self, "image_shape", check_sizes("image_shape", self.image_shape))
    object.__setattr__(self, "hidden_dims", check_sizes("hidden_dims", self.hidden_dims,
                                                        allow_empty=True))
    for name in ("num_vars", "num_classes", "codebook_dim"):
      object.__setattr__(self, name, _checks.check_int(name, getattr(self, name)))
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

  def kl(self, params, x: Array) -> Array:
    """Exact ``KL(q(z_n|x) || Uniform) = log C - H(q_n)`` per variable: ``[B, N]``."""
    return distributions.kl_categorical_uniform(self.encoder_logits(params, x))

  # ------------------------------------------------------------------------------ contract

  def sample_and_log_q(self, params, x: Array, key: Array) -> tuple[Array, Array]:
    """One-hot ``z ~ q(z|x)`` ``[B, N, C]`` (no gradient path: a discrete draw) and ``log q``."""
    logits = self.encoder_logits(params, x)
    z = jax.nn.one_hot(gumbel.gumbel_max(key, logits), self.num_classes, dtype=logits.dtype)
    return z, jnp.sum(jnp.sum(z * logits, axis=-1), axis=-1)

  def sample_q(self, params, x: Array, key: Array) -> Array:
    return self.sample_and_log_q(params, x, key)[0]

  def log_q(self, params, x: Array, z: Array) -> Array:
    """``sum_n log q(z_n | x)`` for one-hot ``z`` ``[B, N, C]``: ``[B]``."""
    return jnp.sum(distributions.categorical_log_prob_one_hot(z, self.encoder_logits(params, x)),
                   axis=-1)

  def log_prior(self, params, z: Array) -> Array:
    """The uniform prior, ``-N log C`` for every one-hot ``z``: ``[B]``."""
    del params
    return jnp.full(z.shape[:1], -self.num_vars * math.log(self.num_classes), z.dtype)

  def log_likelihood(self, params, x: Array, z: Array) -> Array:
    """Bernoulli ``log p(x | z)`` of the decoder reading ``z`` (one-hot or relaxed): ``[B]``."""
    return distributions.bernoulli_log_prob(self._flat(x), self.decoder_logits(params, z))

  def posterior_mean(self, params, x: Array, key: Array | None = None) -> Array:
    """``E_q[z | x]``: the class probabilities ``[B, N, C]``."""
    del key
    return jnp.exp(self.encoder_logits(params, x))

  def sample_prior(self, params, key: Array, num: int) -> Array:
    """One-hot codes from the uniform prior: ``[num, N, C]``."""
    del params
    idx = jax.random.randint(key, (num, self.num_vars), 0, self.num_classes)
    return jax.nn.one_hot(idx, self.num_classes)

  def decode(self, params, z: Array, key: Array | None = None) -> Array:
    """Bernoulli means of ``p(x|z)``: ``[B, *image_shape]``."""
    del key
    return jax.nn.sigmoid(self.decoder_logits(params, z)).reshape(z.shape[:1] + self.image_shape)

  def relaxed(self, temperature, *, hard: bool = False) -> "RelaxedCategoricalVAE":
    """The Gumbel-softmax relaxation of this model at ``temperature`` (may be traced)."""
    return RelaxedCategoricalVAE(self, temperature, hard)


@dataclasses.dataclass(frozen=True)
class RelaxedCategoricalVAE(LatentModel):
  """The Concrete (Gumbel-softmax) relaxation of a :class:`CategoricalVAE`, a contract model.

  ``sample_q`` draws ``y = softmax((log q + g) / tau)`` per variable (reparametrized); with
  ``hard=True`` the straight-through sample, one-hot forward. ``log_q`` and ``log_prior`` are the
  Concrete densities of ``q`` and of the uniform prior at ``tau`` (Maddison et al.), so the
  relaxed ELBO and IWAE bounds exist; Jang et al.'s objective is the relaxed reconstruction with
  the exact categorical KL: ``losses.make_loss(model.relaxed(tau), 'elbo', 1, kl='analytic')``.
  The straight-through sample sits on a vertex of the simplex, where the Concrete density is not
  defined: with ``hard=True`` only the analytic-KL objective applies.

  Attributes:
    model: the discrete model.
    temperature: ``tau > 0`` (a float or a traced scalar, e.g. a schedule of the step).
    hard: straight-through.

  References:
    Jang, Gu & Poole, ICLR 2017; Maddison, Mnih & Teh, ICLR 2017.
  """
  data_support = "binary"  # the discrete model's Bernoulli decoder
  latent = "continuous"    # relaxed draws, reparametrized (straight-through with hard=True)
  model: CategoricalVAE
  temperature: Any
  hard: bool = False

  def __post_init__(self):
    if not isinstance(self.model, CategoricalVAE):
      raise _checks.ArgumentTypeError(f"model must be a CategoricalVAE, got "
                                      f"{type(self.model).__name__}")
    _checks.check_bool("hard", self.hard)
    _checks.check_numeric("temperature", self.temperature)
    _checks.check_values("temperature", self.temperature, lambda t: np.isfinite(t) & (t > 0),
                         "a finite number > 0 (a traced value is checked by the sampler)")

  def sample_q(self, params, x: Array, key: Array) -> Array:
    logits = self.model.encoder_logits(params, x)
    return gumbel.gumbel_softmax(key, logits, self.temperature, hard=self.hard)

  def _no_density(self):
    if self.hard:
      raise ValueError("the straight-through relaxation (hard=True) has no density at its one-hot "
                       "samples; train it with make_loss(model, 'elbo', K, kl='analytic')")

  def log_q(self, params, x: Array, z: Array) -> Array:
    self._no_density()
    logits = self.model.encoder_logits(params, x)
    return jnp.sum(gumbel.concrete_log_prob(z, logits, self.temperature), axis=-1)

  def log_prior(self, params, z: Array) -> Array:
    self._no_density()
    uniform = jnp.zeros(z.shape, z.dtype)
    return jnp.sum(gumbel.concrete_log_prob(z, uniform, self.temperature), axis=-1)

  def log_likelihood(self, params, x: Array, z: Array) -> Array:
    return self.model.log_likelihood(params, x, z)

  def kl(self, params, x: Array) -> Array:
    """The exact categorical KL of the discrete model, ``[B, N]`` (Jang et al.'s objective)."""
    return self.model.kl(params, x)

  def decode(self, params, z: Array, key: Array | None = None) -> Array:
    return self.model.decode(params, z, key)


def jang_temperature(step, *, initial: float = 1.0, minimum: float = 0.5, rate: float = 3e-5,
                     every: int = 1000):
  """Jang et al.'s annealing ``tau = max(minimum, initial * exp(-rate * t))``, ``t`` updated every
  ``every`` steps (their code: ``tau0 = 1``, ``ANNEAL_RATE = 0.00003``, ``MIN_TEMP = 0.5``,
  every 1000 steps).

  Raises:
    ValueError: ``initial`` or ``minimum`` not a finite number > 0, ``rate`` not finite and
      ``>= 0``, ``every`` not an int >= 1, or a concrete ``step`` < 0 (each names the argument).
  """
  initial = _checks.check_real("initial", initial, minimum=0.0, strict_minimum=True)
  minimum = _checks.check_real("minimum", minimum, minimum=0.0, strict_minimum=True)
  rate = _checks.check_real("rate", rate, minimum=0.0)
  every = _checks.check_int("every", every, minimum=1)
  _checks.check_values("step", step, lambda s: s >= 0, "a step count >= 0")
  t = (step // every) * every
  return jnp.maximum(minimum, initial * jnp.exp(-rate * t))
