"""Argument checks shared by the core modules.

Checks run at trace time on static information (shapes, Python scalars, concrete arrays), so they
cost nothing inside a jitted function and raise before any work is done. Values that are traced
(for example a temperature that is annealed inside a jitted step) cannot be checked and pass.
"""

from __future__ import annotations

import numpy as np
import jax


def is_concrete(value) -> bool:
  """True when ``value`` is a Python number or an array whose value is known at trace time."""
  return not isinstance(value, jax.core.Tracer)


def check_positive(name: str, value) -> None:
  """Raises ValueError if ``value`` is concrete and not strictly positive everywhere."""
  if is_concrete(value):
    arr = np.asarray(value)
    if arr.size and not np.all(arr > 0):
      raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(name: str, value) -> None:
  """Raises ValueError if ``value`` is concrete and negative somewhere."""
  if is_concrete(value):
    arr = np.asarray(value)
    if arr.size and not np.all(arr >= 0):
      raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_broadcast(**arrays) -> tuple[int, ...]:
  """Returns the broadcast shape of the named arrays or raises ValueError naming them."""
  shapes = {k: np.shape(v) for k, v in arrays.items()}
  try:
    return np.broadcast_shapes(*shapes.values())
  except ValueError:
    desc = ", ".join(f"{k} with shape {s}" for k, s in shapes.items())
    raise ValueError(f"shapes do not broadcast: {desc}") from None


def normalize_axis(name: str, axis: int, ndim: int) -> int:
  """Returns ``axis`` as a non-negative index into an array of rank ``ndim``."""
  if not isinstance(axis, (int, np.integer)):
    raise TypeError(f"axis must be an int, got {axis!r}")
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis={axis} is out of range for {name} of rank {ndim}")
  return int(axis) % ndim


def check_num_samples(name: str, x, axis: int) -> int:
  """Checks that ``x`` has at least one importance sample on ``axis``; returns the axis."""
  axis = normalize_axis(name, axis, np.ndim(x))
  k = np.shape(x)[axis]
  if k < 1:
    raise ValueError(
        f"{name} must hold at least one importance sample (K >= 1) on axis {axis}, "
        f"got shape {np.shape(x)}")
  return axis


def event_axes(name: str, x, event_ndims: int) -> tuple[int, ...]:
  """The trailing ``event_ndims`` axes of ``x`` (checked to exist)."""
  if not isinstance(event_ndims, (int, np.integer)) or event_ndims < 0:
    raise ValueError(f"event_ndims must be a non-negative int, got {event_ndims!r}")
  if event_ndims > np.ndim(x):
    raise ValueError(
        f"event_ndims={event_ndims} exceeds the rank of {name} (shape {np.shape(x)})")
  return tuple(range(np.ndim(x) - event_ndims, np.ndim(x)))


def broadcast(**arrays):
  """Broadcasts the named arrays explicitly to their common shape (a clear error if they can't).

  Explicit broadcasting keeps the library usable under ``jax_numpy_rank_promotion='raise'``.
  """
  import jax.numpy as jnp
  shape = check_broadcast(**arrays)
  return tuple(jnp.broadcast_to(jnp.asarray(a), shape) for a in arrays.values())
