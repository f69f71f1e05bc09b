"""Activation normalisation (ActNorm): a per-channel affine map with data-dependent init."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real

from dgmjax import _checks
from dgmjax.flows import _nets
from dgmjax.flows import base


def _reshape_channel(p: Float[ArrayLike, "C"], x: Float[Array, "..."]) -> Float[Array, "..."]:
  """``[C] -> [1, ..., 1, C]`` with the rank of ``x``."""
  return jnp.reshape(p, (1,) * (x.ndim - 1) + p.shape)


@dataclasses.dataclass(frozen=True)
class ActNorm(base.Bijector):
  """Per-channel affine bijector (channels last); for images the scale is shared over positions.

  .. math:: x = u \\odot e^{s} + b, \\quad \\log|\\det \\partial x/\\partial u| = N_{pos} \\sum_c s_c

  ``N_pos`` is the product of the non-channel event axes (``H W`` for ``[H, W, C]``, 1 for
  vectors). Params: ``{"log_scale": [C], "bias": [C]}``, initialised to the identity;
  :meth:`data_init` sets them so that the inverse maps a data batch to zero mean and unit variance
  per channel.

  Args:
    event_shape: ``(D,)`` for vectors, ``(H, W, C)`` for images (an int means ``(D,)``).

  References:
    Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions, NeurIPS 2018.
  """

  event_shape: tuple

  def __post_init__(self):
    es = self.event_shape
    shape = (int(es),) if np.ndim(es) == 0 else tuple(int(s) for s in es)
    if not shape or any(s < 1 for s in shape):
      raise ValueError(f"event_shape must be a non-empty tuple of positive ints, got {es}")
    object.__setattr__(self, "event_shape", shape)

  @property
  def _positions(self) -> int:
    return math.prod(self.event_shape[:-1])

  def init(self, key: PRNGKeyArray,
           dtype: DTypeLike | None = None) -> dict[str, Float[Array, "C"]]:
    del key  # deterministic identity initialisation
    dtype = base._float_dtype(dtype)
    c = self.event_shape[-1]
    return {"log_scale": jnp.zeros((c,), dtype), "bias": jnp.zeros((c,), dtype)}

  def _log_det(self, params, x):
    batch = x.shape[:x.ndim - len(self.event_shape)]
    ld = self._positions * jnp.sum(params["log_scale"])
    return jnp.broadcast_to(ld.astype(x.dtype), batch)

  def _forward(self, params, u, context):
    x = u * jnp.exp(_reshape_channel(params["log_scale"], u)) + _reshape_channel(
        params["bias"], u)
    return x, self._log_det(params, u)

  def _inverse(self, params, x, context):
    u = (x - _reshape_channel(params["bias"], x)) * jnp.exp(
        -_reshape_channel(params["log_scale"], x))
    return u, -self._log_det(params, x)

  def data_init(self, params: dict[str, Float[ArrayLike, "C"]], x: Real[ArrayLike, "..."],
                context: Optional[Real[ArrayLike, "..."]] = None,
                eps: float = 1e-6) -> dict[str, Float[Array, "C"]]:
    """Sets ``bias = mean(x)`` and ``log_scale = log std(x)`` per channel.

    Args:
      params: current params (their dtype is kept).
      x: a data batch ``[..., *event_shape]`` (this layer's input on the density side).
      context: unused.
      eps: floor on the standard deviation under tracing.

    Raises:
      ValueError: if ``x`` is concrete and a channel has zero variance: scaling it to unit
        variance would make the layer non-invertible.
    """
    del context
    x, _ = self._prepare("x", x, None)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes)
    std = jnp.std(x, axis=axes)
    if _checks.is_concrete(std):
      bad = np.flatnonzero(~(np.asarray(std) > 0))
      if bad.size:
        raise ValueError(f"ActNorm data_init: channel(s) {bad.tolist()} of x have zero variance; "
                         "a zero scale would make the layer non-invertible")
    # Under tracing a constant channel cannot raise; the floor keeps log(std) finite.
    std = jnp.maximum(std, eps)
    dtype = params["log_scale"].dtype
    return {"log_scale": jnp.log(std).astype(dtype), "bias": mean.astype(dtype)}
