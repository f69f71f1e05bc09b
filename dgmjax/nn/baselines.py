"""Variance-reduction baselines as Flax modules (for :func:`dgmjax.estimators.reinforce_surrogate`).

References:
  Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real

__all__ = ["NVILBaseline"]


class NVILBaseline(nn.Module):
  """An input-dependent baseline ``b(x)``: a small MLP, ``[B, ...] -> [B]``.

  Train it jointly with the model by adding :func:`dgmjax.estimators.baseline_loss` to the
  training loss; it only reduces the variance of :func:`dgmjax.estimators.reinforce_surrogate`,
  never biases it.

  Attributes:
    hidden: widths of the tanh hidden layers (NVIL uses one layer of 100).

  References:
    Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014, Sec. 3.
  """
  hidden: Sequence[int] = (100,)

  @nn.compact
  def __call__(self, x: Real[ArrayLike, "B *features"]) -> Float[Array, "B"]:
    h = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden:
      h = nn.tanh(nn.Dense(width)(h))
    return nn.Dense(1)(h)[:, 0]
