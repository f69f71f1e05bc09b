"""Normalizing flows: bijectors as pure functions of params, composition, and flow densities.

Every bijector is a frozen dataclass of static configuration with

* ``init(key, dtype=None) -> params`` (a pytree),
* ``forward_and_log_det(params, u, context=None) -> (x, log|det dx/du|)`` (sampling direction),
* ``inverse_and_log_det(params, x, context=None) -> (u, log|det du/dx|)`` (density direction),

event on the trailing axes, log-determinants with the batch shape. :class:`Flow` adds a standard
Normal base (``log_prob``, ``sample``, ``sample_and_log_prob``); :class:`dgmjax.nn.FlowModule` is a
Flax linen module holding the params.

Recipes for latent-variable models:

* flow prior ``p(z)``: ``Flow(real_nvp(D, L))`` or ``Flow(masked_autoregressive_flow(D, L))``;
  ``log_prob`` is one pass for both.
* IAF posterior ``q(z|x)``: ``iaf = inverse_autoregressive_flow(D, L, context_size=H)``;
  ``z0 = mu + sigma * eps``, ``z, ld = iaf.forward_and_log_det(params, z0, context=h)``,
  ``log q(z|x) = normal_log_prob(z0, mu, log_sigma) - ld`` (one pass).
"""

from dgmjax.flows.actnorm import ActNorm
from dgmjax.flows.autoregressive import (
    IAF,
    MAF,
    inverse_autoregressive_flow,
    masked_autoregressive_flow,
    normalize_order,
    random_order,
)
from dgmjax.flows.base import Bijector, Chain, Invert, check_finite
from dgmjax.flows.coupling import AffineCoupling, alternating_mask, half_mask, real_nvp
from dgmjax.flows.distribution import Flow
from dgmjax.flows.linear import InvertibleConv1x1, LULinear, LUParams, QRLinear, QRParams
from dgmjax.flows.permutation import Permute, Reverse, random_permutation

__all__ = [
    "ActNorm", "AffineCoupling", "Bijector", "Chain", "Flow", "IAF",
    "InvertibleConv1x1", "Invert", "LULinear", "LUParams", "MAF", "Permute", "QRLinear",
    "QRParams", "Reverse", "alternating_mask", "check_finite", "half_mask",
    "inverse_autoregressive_flow", "masked_autoregressive_flow", "normalize_order",
    "random_order", "random_permutation", "real_nvp",
]

