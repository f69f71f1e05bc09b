"""Flax linen module holding a bijector's params (a thin wrapper over the pure functions)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from dgmjax.flows import base
from dgmjax.flows.distribution import Flow

Array = jax.Array


class FlowModule(nn.Module):
  """A linen module whose single param (``"flow"``) is the pytree of ``bijector.init``.

  Methods mirror the pure API: ``forward_and_log_det``, ``inverse_and_log_det``, ``log_prob``
  (also ``__call__``), ``sample`` and ``sample_and_log_prob`` (which take ``key`` as an argument:
  modules hold no RNG state). Use ``module.init(key, x)`` and
  ``module.apply(variables, x)`` / ``module.apply(variables, key, n, method="sample")``.

  Attributes:
    bijector: any :class:`~dgmjax.flows.Bijector`; the flow's base is ``N(0, I)``.
  """

  bijector: base.Bijector

  def setup(self):
    self.flow_params = self.param("flow", lambda key: self.bijector.init(key))

  @property
  def flow(self) -> Flow:
    return Flow(self.bijector)

  def forward_and_log_det(self, u: Array, context: Optional[Array] = None):
    return self.bijector.forward_and_log_det(self.flow_params, u, context)

  def inverse_and_log_det(self, x: Array, context: Optional[Array] = None):
    return self.bijector.inverse_and_log_det(self.flow_params, x, context)

  def log_prob(self, x: Array, context: Optional[Array] = None) -> Array:
    return self.flow.log_prob(self.flow_params, x, context)

  def __call__(self, x: Array, context: Optional[Array] = None) -> Array:
    return self.log_prob(x, context)

  def sample(self, key: Array, num_samples: int, context: Optional[Array] = None) -> Array:
    return self.flow.sample(key, self.flow_params, num_samples, context)

  def sample_and_log_prob(self, key: Array, num_samples: int,
                          context: Optional[Array] = None):
    return self.flow.sample_and_log_prob(key, self.flow_params, num_samples, context)
