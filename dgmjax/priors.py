"""Priors ``p(z)`` for latent-variable models: standard Normal, learnable Gaussian mixture,
VampPrior and flow priors.

Every prior is a frozen (hashable) dataclass of static configuration with pure functions

* ``init(key, dtype=None) -> params`` (a pytree; ``{}`` when the prior has no parameters),
* ``log_prob(params, z, encoder=None) -> [...]`` for ``z`` ``[..., D]`` (e.g. ``[K, B, D]``),
* ``sample(params, key, num, encoder=None) -> [num, D]`` (parameters first, the key after them,
  as every function of parameters).

``encoder`` is only read by :class:`VampPrior`: a function ``x -> (loc, log_scale)`` of the
model's diagonal Gaussian ``q(z|x)`` (the model closes it over its own parameters, so the prior
and the encoder share them, as in Tomczak & Welling).

Bad input: sizes (``latent_dim``, ``num_components``, ``num``, ...) are Python or NumPy ints; a
bool, float or traced value raises :class:`~dgmjax._checks.ArgumentTypeError` (a ``TypeError``
that is also a ``ValueError``), a value below 1 ``ValueError``, both naming the argument. ``z``
of the wrong event size raises ``ValueError`` (also under ``jit``); concrete ``z`` with NaN or
infinite entries raises ``ValueError``; traced NaN gives NaN log-densities.

References:
  Tomczak & Welling, VAE with a VampPrior, AISTATS 2018.
  Dinh, Sohl-Dickstein & Bengio, Density Estimation using Real NVP, ICLR 2017.
  Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density Estimation, NeurIPS 2017.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks
from dgmjax import distributions
from dgmjax import flows

Array = jax.Array
Encoder = Callable[[Array], tuple[Array, Array]]

__all__ = ["PRIOR_NAMES", "FlowPrior", "MixtureOfGaussians", "StandardNormal", "VampPrior", "make_prior",
           "maf_prior", "mixture_normal_log_prob", "real_nvp_prior"]


def _positive_int(name: str, value) -> int:
  return _checks.check_int(name, value, minimum=1)


def _num(num) -> int:
  return _checks.check_int("num", num, minimum=0)


def _finite_scale(name: str, value, *, positive: bool = False) -> float:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                   np.floating)):
    raise _checks.ArgumentTypeError(f"{name} must be a real number, got "
                                    f"{type(value).__name__} {value!r}")
  v = float(value)
  if not np.isfinite(v) or (v <= 0 if positive else v < 0):
    raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}, got {value!r}")
  return v


def _check_z(z, latent_dim: int) -> Array:
  z = jnp.asarray(z)
  if z.ndim < 1 or z.shape[-1] != latent_dim:
    raise ValueError(f"z must have event size latent_dim={latent_dim} on its last axis "
                     f"([..., {latent_dim}]), got shape {z.shape}")
  flows.check_finite("z", z)
  return z


def _float(dtype):
  return jnp.dtype(dtype) if dtype is not None else jnp.dtype(jnp.float32)


def mixture_normal_log_prob(z: Array, logits: Array, loc: Array, log_scale: Array) -> Array:
  """Log-density of a mixture of diagonal Normals: ``z`` ``[..., D]`` -> ``[...]``.

  .. math:: \\log p(z) = \\log \\sum_m \\pi_m N(z; \\mu_m, \\mathrm{diag}\\,\\sigma_m^2), \\quad \\pi = \\mathrm{softmax}(\\mathrm{logits})

  Args:
    z: points ``[..., D]``.
    logits: unnormalised mixture log-weights ``[M]``.
    loc: component means ``[M, D]``.
    log_scale: component log standard deviations ``[M, D]``.

  Raises:
    ValueError: shapes that do not fit ``[M]``, ``[M, D]``, ``[M, D]`` and ``[..., D]``
      (also under ``jit``); concrete ``z`` with NaN or infinite entries.
  """
  z = jnp.asarray(z)
  if jnp.ndim(loc) != 2 or jnp.shape(log_scale) != jnp.shape(loc):
    raise ValueError(f"loc and log_scale must both be [M, D], got shapes {jnp.shape(loc)} and "
                     f"{jnp.shape(log_scale)}")
  m, d = jnp.shape(loc)
  if jnp.shape(logits) != (m,):
    raise ValueError(f"logits must be [M] = [{m}] (one per component of loc {jnp.shape(loc)}), "
                     f"got shape {jnp.shape(logits)}")
  if z.ndim < 1 or z.shape[-1] != d:
    raise ValueError(f"z must be [..., {d}] (the D of loc {jnp.shape(loc)}), got shape {z.shape}")
  _checks.check_finite("z", z)
  lead = (1,) * (z.ndim - 1)
  zz = jnp.expand_dims(z, -2)                                     # [..., 1, D]
  comp = distributions.normal_log_prob(
      zz, loc.reshape(lead + loc.shape), log_scale.reshape(lead + log_scale.shape))  # [..., M]
  log_pi = jax.nn.log_softmax(logits).astype(comp.dtype)
  return jax.scipy.special.logsumexp(comp + log_pi.reshape(lead + log_pi.shape), axis=-1)


def _sample_mixture(key, logits, loc, log_scale, num):
  k_c, k_z = jax.random.split(key)
  comp = jax.random.categorical(k_c, logits, shape=(num,))
  return distributions.sample_normal(k_z, loc[comp], log_scale[comp])


@dataclasses.dataclass(frozen=True)
class StandardNormal:
  """``p(z) = N(0, I)`` (no parameters).

  .. math:: \\log p(z) = -\\tfrac12 \\|z\\|^2 - \\tfrac{D}{2} \\log 2\\pi
  """
  latent_dim: int

  def __post_init__(self):
    object.__setattr__(self, "latent_dim", _positive_int("latent_dim", self.latent_dim))

  def init(self, key: Array, dtype=None) -> dict:
    del key, dtype
    return {}

  def log_prob(self, params, z: Array, encoder: Optional[Encoder] = None) -> Array:
    del params, encoder
    return distributions.standard_normal_log_prob(_check_z(z, self.latent_dim))

  def sample(self, params, key: Array, num: int, encoder: Optional[Encoder] = None) -> Array:
    del params, encoder
    return jax.random.normal(key, (_num(num), self.latent_dim))


@dataclasses.dataclass(frozen=True)
class MixtureOfGaussians:
  """A learnable mixture of ``M`` diagonal Gaussians.

  Params: ``logits`` ``[M]`` (zeros: uniform weights), ``loc`` ``[M, D]`` (``init_scale`` times a
  standard Normal draw, so the components start apart), ``log_scale`` ``[M, D]`` (zeros).

  .. math:: p(z) = \\sum_{m=1}^M \\pi_m N(z; \\mu_m, \\mathrm{diag}\\,\\sigma_m^2)

  References:
    Dilokthanakul et al., Deep Unsupervised Clustering with Gaussian Mixture VAEs, 2016;
    Tomczak & Welling, VAE with a VampPrior, AISTATS 2018 (the MoG baseline).
  """
  latent_dim: int
  num_components: int = 10
  init_scale: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "latent_dim", _positive_int("latent_dim", self.latent_dim))
    object.__setattr__(self, "num_components",
                       _positive_int("num_components", self.num_components))
    object.__setattr__(self, "init_scale", _finite_scale("init_scale", self.init_scale))

  def init(self, key: Array, dtype=None) -> dict:
    dt = _float(dtype)
    m, d = self.num_components, self.latent_dim
    return {"logits": jnp.zeros((m,), dt),
            "loc": self.init_scale * jax.random.normal(key, (m, d), dt),
            "log_scale": jnp.zeros((m, d), dt)}

  def log_prob(self, params, z: Array, encoder: Optional[Encoder] = None) -> Array:
    del encoder
    z = _check_z(z, self.latent_dim)
    return mixture_normal_log_prob(z, params["logits"], params["loc"], params["log_scale"])

  def sample(self, params, key: Array, num: int, encoder: Optional[Encoder] = None) -> Array:
    del encoder
    return _sample_mixture(key, params["logits"], params["loc"], params["log_scale"], _num(num))


@dataclasses.dataclass(frozen=True)
class VampPrior:
  """The variational mixture of posteriors prior with ``M`` learned pseudo-inputs ``u_m``.

  Params: ``pseudo_inputs`` ``[M, x_dim]`` (unconstrained); the encoder sees
  ``clip(pseudo_inputs, 0, 1)`` (the paper's hard-tanh into the pixel range). They start at
  ``N(init_mean, init_std^2)`` as in the paper's MNIST setting (0.05, 0.01).

  .. math:: p(z) = \\frac{1}{M} \\sum_{m=1}^M q(z | u_m)

  References:
    Tomczak & Welling, VAE with a VampPrior, AISTATS 2018, eq. (9).
  """
  latent_dim: int
  x_dim: int
  num_pseudo_inputs: int = 500
  init_mean: float = 0.05
  init_std: float = 0.01

  def __post_init__(self):
    object.__setattr__(self, "latent_dim", _positive_int("latent_dim", self.latent_dim))
    object.__setattr__(self, "x_dim", _positive_int("x_dim", self.x_dim))
    object.__setattr__(self, "num_pseudo_inputs",
                       _positive_int("num_pseudo_inputs", self.num_pseudo_inputs))
    object.__setattr__(self, "init_std", _finite_scale("init_std", self.init_std))
    if isinstance(self.init_mean, (bool, np.bool_)) or not np.isfinite(float(self.init_mean)):
      raise ValueError(f"init_mean must be a finite real number, got {self.init_mean!r}")

  def init(self, key: Array, dtype=None) -> dict:
    shape = (self.num_pseudo_inputs, self.x_dim)
    return {"pseudo_inputs": self.init_mean + self.init_std * jax.random.normal(
        key, shape, _float(dtype))}

  def pseudo_inputs(self, params) -> Array:
    """The encoder's inputs ``[M, x_dim]`` in [0, 1]."""
    return jnp.clip(params["pseudo_inputs"], 0.0, 1.0)

  def components(self, params, encoder: Optional[Encoder]) -> tuple[Array, Array]:
    """``(loc, log_scale)`` ``[M, D]`` of ``q(z | u_m)``."""
    if encoder is None:
      raise ValueError("VampPrior needs encoder: a function x -> (loc, log_scale) of q(z|x)")
    loc, log_scale = encoder(self.pseudo_inputs(params))
    if loc.shape != (self.num_pseudo_inputs, self.latent_dim):
      raise ValueError(f"encoder must map [M, x_dim] pseudo-inputs to [M, {self.latent_dim}] "
                       f"(latent_dim), got {loc.shape}")
    return loc, log_scale

  def log_prob(self, params, z: Array, encoder: Optional[Encoder] = None) -> Array:
    z = _check_z(z, self.latent_dim)
    loc, log_scale = self.components(params, encoder)
    logits = jnp.zeros((self.num_pseudo_inputs,), loc.dtype)
    return mixture_normal_log_prob(z, logits, loc, log_scale)

  def sample(self, params, key: Array, num: int, encoder: Optional[Encoder] = None) -> Array:
    num = _num(num)
    loc, log_scale = self.components(params, encoder)
    logits = jnp.zeros((self.num_pseudo_inputs,), loc.dtype)
    return _sample_mixture(key, logits, loc, log_scale, num)


@dataclasses.dataclass(frozen=True)
class FlowPrior:
  """``p(z)``: a normalizing flow (e.g. RealNVP or MAF) on a standard Normal base.

  ``log_prob`` is one inverse pass (MAF and RealNVP); ``sample`` is one forward pass for RealNVP
  and ``D`` sequential passes for MAF.

  .. math:: \\log p(z) = \\log N(f^{-1}(z); 0, I) + \\log|\\det \\partial f^{-1}(z)/\\partial z|
  """
  flow: flows.Flow

  @property
  def latent_dim(self) -> int:
    return int(math.prod(self.flow.event_shape))

  def init(self, key: Array, dtype=None):
    return self.flow.init(key, dtype)

  def log_prob(self, params, z: Array, encoder: Optional[Encoder] = None) -> Array:
    del encoder
    return self.flow.log_prob(params, _check_z(z, self.latent_dim))

  def sample(self, params, key: Array, num: int, encoder: Optional[Encoder] = None) -> Array:
    del encoder
    return self.flow.sample(params, key, _num(num))


def real_nvp_prior(latent_dim: int, num_layers: int = 4,
                   hidden_sizes: Sequence[int] = (64, 64)) -> FlowPrior:
  """A RealNVP flow prior (``num_layers`` affine couplings, alternating masks)."""
  latent_dim = _positive_int("latent_dim", latent_dim)
  num_layers = _positive_int("num_layers", num_layers)
  return FlowPrior(flows.Flow(flows.real_nvp(latent_dim, num_layers, tuple(hidden_sizes))))


def maf_prior(latent_dim: int, num_layers: int = 4,
              hidden_sizes: Sequence[int] = (64, 64)) -> FlowPrior:
  """A MAF flow prior (``num_layers`` MADE layers, orders alternating)."""
  latent_dim = _positive_int("latent_dim", latent_dim)
  num_layers = _positive_int("num_layers", num_layers)
  return FlowPrior(flows.Flow(flows.masked_autoregressive_flow(latent_dim, num_layers,
                                                               tuple(hidden_sizes))))


PRIOR_NAMES = ("standard", "mog", "vamp", "realnvp", "maf")


def make_prior(name: str, latent_dim: int, *, x_dim: int | None = None, num_components: int = 10,
               num_pseudo_inputs: int = 500, flow_layers: int = 4,
               flow_hidden: Sequence[int] = (64, 64)):
  """A prior by name: ``'standard'``, ``'mog'``, ``'vamp'`` (needs ``x_dim``), ``'realnvp'``,
  ``'maf'``."""
  if name == "standard":
    return StandardNormal(latent_dim)
  if name == "mog":
    return MixtureOfGaussians(latent_dim, num_components)
  if name == "vamp":
    if x_dim is None:
      raise ValueError("prior 'vamp' needs x_dim (the size of a pseudo-input)")
    return VampPrior(latent_dim, x_dim, num_pseudo_inputs)
  if name == "realnvp":
    return real_nvp_prior(latent_dim, flow_layers, flow_hidden)
  if name == "maf":
    return maf_prior(latent_dim, flow_layers, flow_hidden)
  raise ValueError(f"prior name must be one of {PRIOR_NAMES}, got {name!r}")
