"""Flax linen module holding a bijector's params (a thin wrapper over the pure functions of
:mod:`dgmjax.flows`)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real, Shaped

from dgmjax.flows import base
from dgmjax.flows.distribution import Flow

__all__ = ["FlowModule"]


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

  def forward_and_log_det(
      self, u: Shaped[ArrayLike, "*shape"], context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "*shape"], Float[Array, "*batch"]]:
    return self.bijector.forward_and_log_det(self.flow_params, u, context)

  def inverse_and_log_det(
      self, x: Shaped[ArrayLike, "*shape"], context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "*shape"], Float[Array, "*batch"]]:
    return self.bijector.inverse_and_log_det(self.flow_params, x, context)

  def log_prob(self, x: Shaped[ArrayLike, "..."],
               context: Optional[Real[ArrayLike, "..."]] = None) -> Float[Array, "*batch"]:
    return self.flow.log_prob(self.flow_params, x, context)

  def __call__(self, x: Shaped[ArrayLike, "..."],
               context: Optional[Real[ArrayLike, "..."]] = None) -> Float[Array, "*batch"]:
    return self.log_prob(x, context)

  def sample(self, key: PRNGKeyArray, num_samples: int,
             context: Optional[Real[ArrayLike, "..."]] = None,
             ) -> Float[Array, "num_samples *shape"]:
    return self.flow.sample(self.flow_params, key, num_samples, context)

  def sample_and_log_prob(
      self, key: PRNGKeyArray, num_samples: int, context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "num_samples *shape"], Float[Array, "num_samples *batch"]]:
    return self.flow.sample_and_log_prob(self.flow_params, key, num_samples, context)
