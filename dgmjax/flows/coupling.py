"""Affine coupling layers (RealNVP) and their masks.

A binary mask splits the event into a kept part ``u_a`` (mask 1) and a transformed part ``u_b``
(mask 0). An MLP reads ``u_a`` (and an optional context) and outputs a shift and log-scale for
``u_b``. Both directions are one network pass; the Jacobian is triangular with log-determinant the
sum of the log-scales.

Params: a dict ``{"hidden": [{"w", "b"}, ...], "out": {"w", "b"}}``; the output layer starts at zero,
so a fresh layer is the identity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real

from dgmjax import _checks
from dgmjax.flows import _nets
from dgmjax.flows import base


def _check_mask_settings(event_size, parity) -> tuple[int, int]:
  """``event_size`` an int >= 1 and ``parity`` 0 or 1, else an error naming the argument."""
  event_size = _checks.check_int("event_size", event_size, minimum=1)
  parity = _checks.check_int("parity", parity, minimum=0)
  if parity > 1:
    raise ValueError(f"parity must be 0 or 1 (which of the two complementary masks), got {parity}")
  return event_size, parity


def alternating_mask(event_size: int, parity: int = 0) -> tuple[int, ...]:
  """``[1, 0, 1, 0, ...]`` (``parity=0``) or ``[0, 1, 0, 1, ...]`` (``parity=1``), ``[D]``.

  Raises:
    ValueError: ``event_size`` not an int >= 1, or ``parity`` not 0 or 1.
  """
  event_size, parity = _check_mask_settings(event_size, parity)
  return tuple(int((i + parity) % 2 == 0) for i in range(event_size))


def half_mask(event_size: int, parity: int = 0) -> tuple[int, ...]:
  """The first half kept (``parity=0``) or the second half kept (``parity=1``), ``[D]``.

  Raises:
    ValueError: ``event_size`` not an int >= 1, or ``parity`` not 0 or 1.
  """
  event_size, parity = _check_mask_settings(event_size, parity)
  first = tuple(int(i < (event_size + 1) // 2) for i in range(event_size))
  return first if parity == 0 else tuple(1 - m for m in first)


@dataclasses.dataclass(frozen=True)
class AffineCoupling(base.Bijector):
  """RealNVP affine coupling layer.

  .. math:: x_a = u_a, \\quad x_b = u_b \\odot \\exp(s(u_a)) + t(u_a), \\quad \\log|\\det \\partial x/\\partial u| = \\sum_j s_j(u_a)

  Args:
    event_size: ``D``.
    mask: ``[D]`` of 0/1 (or bools): 1 = kept and read by the conditioner, 0 = transformed. Must
      contain both values.
    hidden_sizes: conditioner MLP widths.
    context_size: size of an optional conditioning input (0: unconditional).
    activation: hidden nonlinearity.
    log_scale_clamp: soft bound on ``|s|`` (``bound * tanh(s / bound)``); ``None`` disables it.

  References:
    Dinh, Sohl-Dickstein & Bengio, Density Estimation using Real NVP, ICLR 2017.
  """

  event_size: int
  mask: tuple
  hidden_sizes: tuple = (64, 64)
  context_size: int = 0
  activation: str = "relu"
  log_scale_clamp: Optional[float] = None

  def __post_init__(self):
    object.__setattr__(self, "event_size", _nets.check_settings(
        self.event_size, self.context_size, self.log_scale_clamp, min_event_size=2))
    raw = np.asarray(self.mask)
    if raw.ndim != 1 or not (raw.dtype == bool or (np.issubdtype(raw.dtype, np.number)
                                                   and np.all((raw == 0) | (raw == 1)))):
      raise ValueError(f"mask must be a 1-D sequence of 0/1 (or bools), got {self.mask!r}")
    mask = tuple(int(bool(m)) for m in raw)
    if len(mask) != self.event_size:
      raise ValueError(f"mask must have event_size={self.event_size} entries, got {len(mask)}")
    if all(mask) or not any(mask):
      raise ValueError("mask must keep at least one dimension (1) and transform at least one (0), "
                       f"got {mask}")
    object.__setattr__(self, "mask", mask)
    object.__setattr__(self, "hidden_sizes", _nets.check_hidden_sizes(self.hidden_sizes))
    _nets.check_activation(self.activation)

  @property
  def event_shape(self):
    return (self.event_size,)

  @property
  def _index(self):
    keep = np.flatnonzero(np.asarray(self.mask) == 1)
    change = np.flatnonzero(np.asarray(self.mask) == 0)
    unsort = np.argsort(np.concatenate([keep, change]))
    return keep, change, unsort

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> dict:
    keep, change, _ = self._index
    return _nets.mlp_init(key, len(keep), self.hidden_sizes, 2 * len(change),
                          base._float_dtype(dtype), self.context_size)

  def conditioner(
      self, params: Mapping, y_keep: Float[ArrayLike, "*batch D_a"],
      context: Optional[Real[ArrayLike, "*batch C"]] = None,
  ) -> tuple[Float[Array, "*batch D_b"], Float[Array, "*batch D_b"]]:
    """``(shift, log_scale)`` for the transformed part, each ``[..., D_b]``."""
    out = _nets.mlp_apply(params, y_keep, self.activation, context)
    n = out.shape[-1] // 2
    return out[..., :n], _nets.soft_clamp(out[..., n:], self.log_scale_clamp)

  def _forward(self, params, u, context):
    keep, change, unsort = self._index
    u_a, u_b = u[..., keep], u[..., change]
    shift, log_scale = self.conditioner(params, u_a, context)
    x_b = u_b * jnp.exp(log_scale) + shift
    return jnp.concatenate([u_a, x_b], axis=-1)[..., unsort], jnp.sum(log_scale, axis=-1)

  def _inverse(self, params, x, context):
    keep, change, unsort = self._index
    x_a, x_b = x[..., keep], x[..., change]
    shift, log_scale = self.conditioner(params, x_a, context)
    u_b = (x_b - shift) * jnp.exp(-log_scale)
    return jnp.concatenate([x_a, u_b], axis=-1)[..., unsort], -jnp.sum(log_scale, axis=-1)


def real_nvp(event_size: int, num_layers: int, hidden_sizes: Sequence[int] = (64, 64), *,
             context_size: int = 0, activation: str = "relu",
             log_scale_clamp: Optional[float] = None, masks: Optional[Sequence] = None,
             actnorm: bool = False, permute_seed: Optional[int] = None) -> base.Chain:
  """A :class:`~dgmjax.flows.Chain` of affine couplings with alternating masks.

  Layer ``l`` keeps the dimensions of parity ``l % 2`` (:func:`alternating_mask`), so consecutive
  layers transform complementary halves. With ``actnorm=True`` an :class:`~dgmjax.flows.ActNorm`
  follows every coupling (on its data side). With ``permute_seed`` a fixed random
  :class:`~dgmjax.flows.Permute` (drawn with NumPy seed ``permute_seed + l``) follows coupling
  ``l`` for every layer but the last, mixing which dimensions later couplings condition on.

  References:
    Dinh, Sohl-Dickstein & Bengio, Density Estimation using Real NVP, ICLR 2017.
  """
  from dgmjax.flows.actnorm import ActNorm  # local imports: neither depends on coupling
  from dgmjax.flows.permutation import random_permutation
  event_size = _checks.check_int("event_size", event_size, minimum=2)
  num_layers = _checks.check_int("num_layers", num_layers, minimum=1)
  actnorm = _checks.check_bool("actnorm", actnorm)
  if permute_seed is not None:
    permute_seed = _checks.check_seed("permute_seed", permute_seed)
  if masks is None:
    masks = [alternating_mask(event_size, l % 2) for l in range(num_layers)]
  if len(masks) != num_layers:
    raise ValueError(f"masks must have num_layers={num_layers} entries, got {len(masks)}")
  layers = []
  for l, m in enumerate(masks):
    layers.append(AffineCoupling(event_size, tuple(m), tuple(hidden_sizes),
                                 context_size=context_size, activation=activation,
                                 log_scale_clamp=log_scale_clamp))
    if actnorm:
      layers.append(ActNorm((event_size,)))
    if permute_seed is not None and l < num_layers - 1:
      layers.append(random_permutation(event_size, permute_seed + l))
  return base.Chain(tuple(layers))
