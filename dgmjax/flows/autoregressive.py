"""Gaussian autoregressive flows with MADE conditioners: MAF and IAF.

Both are affine autoregressive maps whose shift ``mu`` and log-scale ``alpha`` come from one MADE
pass. They differ in which side the MADE reads:

* **MAF** conditions on the data: ``x_i = u_i exp(alpha_i(x_{<i})) + mu_i(x_{<i})``. The density
  direction ``x -> u`` is one MADE pass; sampling ``u -> x`` needs ``D`` sequential passes.
* **IAF** conditions on the noise: ``x_i = u_i exp(alpha_i(u_{<i})) + mu_i(u_{<i})``. Sampling is
  one MADE pass; the density direction needs ``D`` sequential passes.

The sequential direction is a ``lax.fori_loop`` of ``D`` MADE passes: after pass ``k`` the first
``k`` variables in the order are exact, and the last pass also yields the exact log-scales.

Params (both): a dict ``{"hidden": [{"w", "b"}, ...], "out": {"w", "b"}}`` (plus ``"ctx"`` and
``"ctx_out"`` with a context). The output layer starts at zero, so a fresh layer is the identity.

A conditional IAF (``context_size > 0``) is the posterior flow of Kingma et al. (2016): the
encoder's feature ``h`` is the context. With ``z0 = mu + sigma * eps`` and
``z, ld = iaf.forward_and_log_det(params, z0, context=h)``, the posterior log-density is
``log q(z|x) = log N(z0; mu, sigma) - ld``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real

from dgmjax import _checks
from dgmjax.flows import _nets
from dgmjax.flows import base

# Looked up at call time through the module, so tests can count conditioner passes.
made_apply = _nets.made_apply


def normalize_order(order: Union[str, Sequence[int], ArrayLike],
                    event_size: int) -> tuple[int, ...]:
  """The autoregressive degrees ``[D]`` (a permutation of ``1..D``) of an ``order`` spec.

  Args:
    order: ``"natural"`` (``1..D``), ``"reversed"`` (``D..1``) or a sequence giving each input's
      1-based position in the autoregressive order.
    event_size: ``D``.
  """
  if isinstance(order, str):
    if order == "natural":
      return tuple(range(1, event_size + 1))
    if order == "reversed":
      return tuple(range(event_size, 0, -1))
    raise ValueError(f"order must be 'natural', 'reversed' or a permutation of 1..{event_size}, "
                     f"got {order!r}")
  degrees = base.as_tuple_of_ints("order", order)
  if sorted(degrees) != list(range(1, event_size + 1)):
    raise ValueError(f"order must be a permutation of 1..{event_size}, got {degrees}")
  return degrees


def random_order(event_size: int, seed: int) -> tuple[int, ...]:
  """A random autoregressive order (degrees ``1..D`` shuffled with a NumPy seed; static)."""
  event_size = _checks.check_int("event_size", event_size, minimum=1)
  seed = _checks.check_seed("seed", seed)
  return tuple(int(d) for d in np.random.RandomState(seed).permutation(event_size) + 1)


@dataclasses.dataclass(frozen=True)
class _AffineAutoregressive(base.Bijector):
  """Shared configuration and conditioner of MAF and IAF."""

  event_size: int
  hidden_sizes: tuple = (64, 64)
  order: Union[str, tuple] = "natural"
  context_size: int = 0
  activation: str = "relu"
  log_scale_clamp: Optional[float] = None

  def __post_init__(self):
    object.__setattr__(self, "event_size", _nets.check_settings(
        self.event_size, self.context_size, self.log_scale_clamp))
    object.__setattr__(self, "hidden_sizes", _nets.check_hidden_sizes(self.hidden_sizes))
    object.__setattr__(self, "order", normalize_order(self.order, self.event_size))
    _nets.check_activation(self.activation)

  @property
  def event_shape(self):
    return (self.event_size,)

  @property
  def masks(self) -> tuple[np.ndarray, ...]:
    return _nets.made_masks(self.order, self.hidden_sizes, 2)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> dict:
    return _nets.made_init(key, self.event_size, self.hidden_sizes, 2,
                           base._float_dtype(dtype), self.context_size)

  def conditioner(
      self, params: Mapping, y: Float[ArrayLike, "*batch D"],
      context: Optional[Real[ArrayLike, "*context_batch C"]] = None,
  ) -> tuple[Float[Array, "*batch D"], Float[Array, "*batch D"]]:
    """One MADE pass: ``(shift, log_scale)``, each ``[..., D]``; entry ``i`` sees ``y_{<i}``."""
    out = made_apply(params, y, self.masks, self.activation, context)
    d = self.event_size
    return out[..., :d], _nets.soft_clamp(out[..., d:], self.log_scale_clamp)

  def _affine_one_pass(self, params, y, context):
    """``y * exp(alpha(y)) + mu(y)`` reading ``y`` itself (one pass)."""
    shift, log_scale = self.conditioner(params, y, context)
    return y * jnp.exp(log_scale) + shift, jnp.sum(log_scale, axis=-1)

  def _unaffine_one_pass(self, params, y, context):
    """``(y - mu(y)) * exp(-alpha(y))`` reading ``y`` itself (one pass)."""
    shift, log_scale = self.conditioner(params, y, context)
    return (y - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale, axis=-1)

  def _solve_affine(self, params, target, context):
    """Finds ``y`` with ``y = target * exp(alpha(y)) + mu(y)`` by ``D`` sequential passes."""
    target = target.astype(base.compute_dtype(params, target))  # a loop-invariant carry dtype
    def body(_, carry):
      y, _ = carry
      shift, log_scale = self.conditioner(params, _bounded(y), context)
      return target * jnp.exp(log_scale) + shift, jnp.sum(log_scale, axis=-1)
    init = (jnp.zeros_like(target), jnp.zeros(target.shape[:-1], target.dtype))
    return jax.lax.fori_loop(0, self.event_size, body, init)

  def _solve_unaffine(self, params, target, context):
    """Finds ``y`` with ``y = (target - mu(y)) * exp(-alpha(y))`` by ``D`` sequential passes."""
    target = target.astype(base.compute_dtype(params, target))  # a loop-invariant carry dtype
    def body(_, carry):
      y, _ = carry
      shift, log_scale = self.conditioner(params, _bounded(y), context)
      return (target - shift) * jnp.exp(-log_scale), -jnp.sum(log_scale, axis=-1)
    init = (jnp.zeros_like(target), jnp.zeros(target.shape[:-1], target.dtype))
    return jax.lax.fori_loop(0, self.event_size, body, init)


def _bounded(y: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
  """The iterate of a sequential solve, made finite before the conditioner reads it.

  After pass ``t`` only entries ``< t`` are final; the others may have overflowed (an ``exp`` of a
  not-yet-correct log-scale). The MADE's masked weights multiply them by exact zeros, but
  ``0 * inf`` is NaN, which would poison the final entries too. Clamping NaN to 0 and
  magnitudes to ``sqrt(max float)`` keeps every product finite; final entries are unaffected
  unless their true value exceeds that bound (a density of exactly zero in practice). The last
  pass's output is returned unclamped.
  """
  big = float(np.sqrt(float(jnp.finfo(y.dtype).max)))
  return jnp.clip(jnp.nan_to_num(y, nan=0.0), -big, big)


@dataclasses.dataclass(frozen=True)
class MAF(_AffineAutoregressive):
  """Masked autoregressive flow layer: one-pass density, ``D``-pass sampling.

  .. math:: x_i = u_i \\exp(\\alpha_i(x_{<i})) + \\mu_i(x_{<i}), \\quad \\log|\\det \\partial u/\\partial x| = -\\sum_i \\alpha_i(x_{<i})

  Args:
    event_size: ``D``.
    hidden_sizes: MADE hidden layer widths.
    order: ``"natural"``, ``"reversed"`` or degrees ``1..D`` (see :func:`normalize_order`).
    context_size: size of an optional conditioning input (0: unconditional).
    activation: hidden nonlinearity (``relu``, ``tanh``, ``elu``, ``gelu``, ``silu``).
    log_scale_clamp: soft bound on ``|alpha|`` (``None``: unconstrained, as in the paper).

  References:
    Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density Estimation,
    NeurIPS 2017.
  """

  def _inverse(self, params, x, context):
    return self._unaffine_one_pass(params, x, context)

  def _forward(self, params, u, context):
    return self._solve_affine(params, u, context)


@dataclasses.dataclass(frozen=True)
class IAF(_AffineAutoregressive):
  """Inverse autoregressive flow layer: one-pass sampling, ``D``-pass density.

  .. math:: x_i = u_i \\exp(\\alpha_i(u_{<i})) + \\mu_i(u_{<i}), \\quad \\log|\\det \\partial x/\\partial u| = \\sum_i \\alpha_i(u_{<i})

  Args: as :class:`MAF`; a ``context`` (the encoder feature ``h``) makes it a posterior flow.

  References:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, Improved Variational Inference with
    Inverse Autoregressive Flow, NeurIPS 2016.
  """

  def _forward(self, params, u, context):
    return self._affine_one_pass(params, u, context)

  def _inverse(self, params, x, context):
    return self._solve_unaffine(params, x, context)


def _stack(cls, event_size, num_layers, hidden_sizes, context_size, activation,
           log_scale_clamp, orders):
  num_layers = _checks.check_int("num_layers", num_layers, minimum=1)
  if orders is None:
    orders = ["natural" if i % 2 == 0 else "reversed" for i in range(num_layers)]
  if len(orders) != num_layers:
    raise ValueError(f"orders must have num_layers={num_layers} entries, got {len(orders)}")
  return base.Chain(tuple(
      cls(event_size, tuple(hidden_sizes), order=o, context_size=context_size,
          activation=activation, log_scale_clamp=log_scale_clamp) for o in orders))


def masked_autoregressive_flow(event_size: int, num_layers: int,
                               hidden_sizes: Sequence[int] = (64, 64), *,
                               context_size: int = 0, activation: str = "relu",
                               log_scale_clamp: Optional[float] = None,
                               orders: Optional[Sequence] = None) -> base.Chain:
  """A :class:`~dgmjax.flows.Chain` of ``num_layers`` MAF layers, orders alternating
  natural / reversed unless ``orders`` is given.

  References:
    Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density Estimation,
    NeurIPS 2017.
  """
  return _stack(MAF, event_size, num_layers, hidden_sizes, context_size, activation,
                log_scale_clamp, orders)


def inverse_autoregressive_flow(event_size: int, num_layers: int,
                                hidden_sizes: Sequence[int] = (64, 64), *,
                                context_size: int = 0, activation: str = "relu",
                                log_scale_clamp: Optional[float] = None,
                                orders: Optional[Sequence] = None) -> base.Chain:
  """A :class:`~dgmjax.flows.Chain` of ``num_layers`` IAF layers (orders alternate).

  References:
    Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS 2016.
  """
  return _stack(IAF, event_size, num_layers, hidden_sizes, context_size, activation,
                log_scale_clamp, orders)
