"""A flow distribution: a bijector pushing forward a standard Normal base."""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real, Shaped

from dgmjax import _checks, distributions
from dgmjax.flows import base


@dataclasses.dataclass(frozen=True)
class Flow:
  """The density of ``x = f(u)``, ``u ~ N(0, I)``, by the change of variables.

  All methods are pure functions of the bijector's params and are jittable (``num_samples`` is
  static). A conditional bijector makes a conditional density ``q(x | context)``.

  .. math:: \\log q(x) = \\log N(f^{-1}(x); 0, I) + \\log\\left|\\det \\frac{\\partial f^{-1}(x)}{\\partial x}\\right|

  Args:
    bijector: any :class:`~dgmjax.flows.Bijector` (usually a :class:`~dgmjax.flows.Chain`).

  References:
    Rezende & Mohamed, Variational Inference with Normalizing Flows, ICML 2015;
    Papamakarios, Nalisnick, Rezende, Mohamed & Lakshminarayanan, Normalizing Flows for
    Probabilistic Modeling and Inference, JMLR 2021.
  """

  bijector: base.Bijector

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self.bijector.event_shape)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> base.Params:
    """The bijector's params."""
    return self.bijector.init(key, dtype)

  def log_prob(self, params: base.Params, x: Shaped[ArrayLike, "..."],
               context: Optional[Real[ArrayLike, "..."]] = None) -> Float[Array, "*batch"]:
    """``log q(x)``: ``x`` ``[..., *event_shape]`` -> ``[...]`` (one inverse pass)."""
    u, log_det = self.bijector.inverse_and_log_det(params, x, context)
    return distributions.standard_normal_log_prob(u, event_ndims=len(self.event_shape)) + log_det

  def _base_sample(self, key: PRNGKeyArray, params: base.Params, num_samples: int,
                   context: Optional[Real[ArrayLike, "..."]]):
    num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
    batch = () if context is None else tuple(jnp.shape(context)[:-1])
    dtype = jax.tree_util.tree_leaves(params)[0].dtype if jax.tree_util.tree_leaves(
        params) else jnp.result_type(float)
    u = jax.random.normal(key, (num_samples,) + batch + self.event_shape, dtype)
    if context is not None:
      context = jnp.broadcast_to(context, (num_samples,) + tuple(jnp.shape(context)))
    return u, context

  def sample(self, params: base.Params, key: PRNGKeyArray, num_samples: int,
             context: Optional[Real[ArrayLike, "..."]] = None,
             ) -> Float[Array, "num_samples *shape"]:
    """``num_samples`` draws ``[num_samples, *context_batch, *event_shape]`` (one forward pass).

    Args:
      params: the bijector's params.
      key: a PRNG key.
      num_samples: static number of draws.
      context: ``[..., context_size]`` for conditional flows; its batch shape follows the
        sample axis.
    """
    u, context = self._base_sample(key, params, num_samples, context)
    return self.bijector.forward(params, u, context)

  def sample_and_log_prob(
      self, params: base.Params, key: PRNGKeyArray, num_samples: int,
      context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "num_samples *shape"], Float[Array, "num_samples *batch"]]:
    """Draws and their log-densities from the forward pass alone (one pass for IAF).

    .. math:: \\log q(x) = \\log N(u; 0, I) - \\log|\\det \\partial f(u)/\\partial u|

    Returns:
      ``x`` ``[num_samples, ..., *event_shape]`` and ``log q(x)`` ``[num_samples, ...]``.
    """
    u, context = self._base_sample(key, params, num_samples, context)
    x, log_det = self.bijector.forward_and_log_det(params, u, context)
    log_q = distributions.standard_normal_log_prob(u, event_ndims=len(self.event_shape))
    return x, log_q - log_det
