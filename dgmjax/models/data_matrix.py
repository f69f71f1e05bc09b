"""Data matrices ``[N, D]`` (one example per row) of the classical models: checks and moments.

Shared by :mod:`~dgmjax.models.gmm`, :mod:`~dgmjax.models.ppca`, :mod:`~dgmjax.models.linear_vae`
and the EM algorithms of :mod:`dgmjax.inference.em`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks

Array = jax.Array

__all__ = ["check_data_matrix", "moments"]


def check_data_matrix(name: str, x, *, ndim: int | None = 2) -> None:
  """Rank and finiteness of concrete data (a clear ValueError instead of a NaN later).

  Args:
    name: how ``x`` is named in the message.
    x: data ``[N, D]`` (``ndim=2``), or ``[..., D]`` (``ndim=None``).
    ndim: the rank required, or ``None`` for any rank >= 1.

  Raises:
    ValueError: the wrong rank, or non-finite entries in concrete data (the message says where).
  """
  if ndim is not None and jnp.ndim(x) != ndim:
    raise ValueError(f"{name} must be [N, D] (rank {ndim}), got shape {jnp.shape(x)}")
  if ndim is None and jnp.ndim(x) < 1:
    raise ValueError(f"{name} must be [..., D], got shape {jnp.shape(x)}")
  if _checks.is_concrete(x):
    arr = np.asarray(x)
    finite = np.isfinite(arr)
    if not finite.all():
      if arr.ndim == 1:
        where = f"at entry {int(np.argwhere(~finite)[0, 0])}"
      else:
        rows = np.argwhere(~finite.reshape(-1, arr.shape[-1]).all(axis=-1))[:, 0]
        where = (f"in {len(rows)} data point(s), the first {name}[{int(rows[0])}]" if arr.ndim == 2
                 else f"in {len(rows)} data point(s) (rows of the [-1, D] view), the first at "
                      f"row {int(rows[0])}")
      raise ValueError(f"{name} has non-finite entries (NaN or inf) {where}")


def moments(x: Array) -> tuple[Array, Array]:
  """Sample mean ``[D]`` and (biased, ``1/N``) sample covariance ``[D, D]``."""
  mean = jnp.mean(x, axis=0)
  xc = x - mean[None, :]
  return mean, xc.T @ xc / x.shape[0]
