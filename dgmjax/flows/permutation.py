"""Fixed permutations of the event axis (volume preserving, no parameters)."""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import DTypeLike, PRNGKeyArray

from dgmjax import _checks
from dgmjax.flows import base


@dataclasses.dataclass(frozen=True)
class Permute(base.Bijector):
  """``x = u[..., perm]``: a fixed permutation of the last axis. Params: ``()``.

  .. math:: x_i = u_{\\pi(i)}, \\quad \\log|\\det J| = 0

  Args:
    permutation: a permutation of ``0..D-1`` (static).
  """

  permutation: tuple

  def __post_init__(self):
    perm = base.as_tuple_of_ints("permutation", self.permutation)
    if sorted(perm) != list(range(len(perm))) or not perm:
      raise ValueError(f"permutation must be a permutation of 0..D-1, got {perm}")
    object.__setattr__(self, "permutation", perm)

  @property
  def event_shape(self):
    return (len(self.permutation),)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> tuple[()]:
    del key, dtype
    return ()

  def _forward(self, params, u, context):
    return u[..., np.asarray(self.permutation)], base.zeros_log_det(u, 1)

  def _inverse(self, params, x, context):
    return x[..., np.argsort(self.permutation)], base.zeros_log_det(x, 1)


def Reverse(event_size: int) -> Permute:  # pylint: disable=invalid-name
  """The permutation ``D-1, ..., 0`` (reverses the event axis)."""
  event_size = _checks.check_int("event_size", event_size, minimum=1)
  return Permute(tuple(range(event_size - 1, -1, -1)))


def random_permutation(event_size: int, seed: int) -> Permute:
  """A fixed random permutation drawn with a NumPy seed (static configuration, not a key)."""
  event_size = _checks.check_int("event_size", event_size, minimum=1)
  seed = _checks.check_seed("seed", seed)
  return Permute(tuple(int(i) for i in np.random.RandomState(seed).permutation(event_size)))
