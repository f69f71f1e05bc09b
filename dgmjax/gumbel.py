"""Gumbel noise, the Gumbel-max trick, Gumbel-softmax (Concrete) relaxation, straight-through.

Bad input: complex arrays raise :class:`~dgmjax._checks.ArgumentTypeError` naming the argument.
The samplers never turn invalid logits (a NaN or ``+inf`` entry, or all ``-inf`` on the class
axis) into a valid draw: concrete ones raise ``ValueError`` naming ``logits``; traced ones give
``-1`` from :func:`gumbel_max` (whose ``categorical_log_prob`` is then NaN) and NaN samples from
:func:`gumbel_softmax`.

References:
  Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
  Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, DTypeLike, Float, Int, PRNGKeyArray, Real, Shaped

from dgmjax import _checks

__all__ = [
    "concrete_log_prob", "gumbel_max", "gumbel_softmax", "sample_gumbel", "straight_through",
]


def sample_gumbel(key: PRNGKeyArray, shape: Sequence[int] = (),
                  dtype: DTypeLike = jnp.float32) -> Float[Array, "..."]:
  """Standard Gumbel noise ``g = -log(-log u)``, always finite.

  ``u`` is drawn from ``[tiny, 1)`` where ``tiny`` is the smallest normal number of ``dtype``, so
  ``-log u`` lies in ``(0, -log tiny]`` and neither logarithm sees 0: the largest value is
  ``-log(-log(1 - eps))`` (about 16.6 in float32) and the smallest ``-log(-log tiny)``.

  .. math:: g = -\\log(-\\log u), \\quad u \\sim U(0, 1)

  Args:
    key: a JAX PRNG key.
    shape: output shape.
    dtype: a floating dtype.

  Returns:
    ``shape`` array of ``dtype``.

  Raises:
    TypeError: ``dtype`` is not a floating dtype.
    ValueError: ``shape`` is not a sequence of ints ``>= 0``.
  """
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise _checks.ArgumentTypeError(f"dtype must be a floating dtype, got {dtype!r}") from None
  if not jnp.issubdtype(dtype, jnp.floating):
    raise _checks.ArgumentTypeError(f"dtype must be a floating dtype, got {dtype}")
  if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
    shape = (shape,)
  try:
    shape = tuple(_checks.check_int("shape entry", n, minimum=0) for n in shape)
  except (TypeError, ValueError) as err:
    raise type(err)(f"shape must be a sequence of ints >= 0, got {shape!r} ({err})") from None
  tiny = float(jnp.finfo(dtype).tiny)
  u = jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)
  return -jnp.log(-jnp.log(u))


def gumbel_max(key: PRNGKeyArray, logits: Shaped[ArrayLike, "..."],
               axis: int = -1) -> Int[Array, "..."]:
  """An exact sample of class indices from ``softmax(logits)`` by the Gumbel-max trick.

  .. math:: k = \\arg\\max_j (l_j + g_j), \\quad g_j \\sim \\mathrm{Gumbel}(0, 1)

  Args:
    key: a JAX PRNG key.
    logits: ``[..., C]`` unnormalised log-probabilities (classes on ``axis``).
    axis: class axis.

  Returns:
    int32 indices, ``logits`` shape without ``axis``; ``-1`` where traced logits are invalid.

  Raises:
    TypeError: ``logits`` of a non-floating dtype (also under ``jit``).
    ValueError: concrete ``logits`` with a NaN or ``+inf`` entry, or all ``-inf`` on ``axis``.
  """
  _checks.check_dtype("logits", logits, "floating")
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  _checks.check_logits("logits", logits, axis)
  g = sample_gumbel(key, jnp.shape(logits), jnp.result_type(logits))
  draw = jnp.argmax(logits + g, axis=axis)
  if not _checks.is_concrete(logits):
    draw = jnp.where(_checks.logits_valid(logits, axis), draw, _checks.INVALID_DRAW)
  return draw


def straight_through(hard: Real[ArrayLike, "..."],
                     soft: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
  """Forward value ``hard`` exactly, gradient of ``soft``.

  Written ``hard + (soft - stop_gradient(soft))`` so the forward value is ``hard`` bit for bit
  (the bracket is exactly zero), while the derivative is that of ``soft``.

  .. math:: \\mathrm{ST}(h, s) = h + s - \\mathrm{sg}(s)

  Args:
    hard: forward value (e.g. a one-hot vector or a quantized code), treated as a constant.
    soft: differentiable stand-in of the same shape.

  Returns:
    ``hard``, carrying the gradient of ``soft``.

  References:
    Bengio, Leonard & Courville, Estimating or Propagating Gradients Through Stochastic Neurons,
    2013.
  """
  hard, soft = _checks.broadcast(hard=hard, soft=soft)
  return lax.stop_gradient(hard) + (soft - lax.stop_gradient(soft))


def _temperature(temperature: Shaped[ArrayLike, "..."], shape: tuple[int, ...], axis: int,
                 dtype: DTypeLike) -> Float[Array, "..."]:
  """``temperature`` as an array of ``dtype`` with the rank of ``shape`` and 1 on ``axis``.

  Rule: a scalar, or an array that broadcasts against ``shape`` *with size 1 on the class axis*
  (one temperature per categorical variable, e.g. ``[B, 1]`` for ``[B, C]`` logits). A ``[B]``
  temperature for ``[B, C]`` logits would line up with the class axis under NumPy broadcasting
  (silently, when ``B == C``), so it raises instead. Concrete temperatures must be finite and
  ``> 0`` (``ValueError``); traced ones that are not become NaN, so the result is NaN.
  """
  _checks.check_not_complex("temperature", temperature)
  t = jnp.asarray(temperature) if _checks.is_concrete(temperature) else temperature
  if not (jnp.issubdtype(t.dtype, jnp.floating) or jnp.issubdtype(t.dtype, jnp.integer)) or (
      t.dtype == jnp.bool_):
    raise _checks.ArgumentTypeError(f"temperature must be a real number, got dtype {t.dtype}")
  _checks.check_values("temperature", t, lambda a: np.isfinite(a) & (a > 0), "finite and > 0")
  t = t.astype(dtype)
  if t.ndim:
    rank = len(shape)
    full = (1,) * (rank - t.ndim) + tuple(t.shape) if t.ndim <= rank else None
    if full is None or full[axis] != 1:
      raise ValueError(
          f"temperature with shape {tuple(t.shape)} would broadcast against the class axis "
          f"{axis - rank} of logits with shape {shape}: pass a scalar, or one temperature per "
          "categorical variable with size 1 on the class axis (e.g. temperature[..., None], "
          f"shape {tuple(t.shape) + (1,)})")
    try:
      jnp.broadcast_shapes(full, shape)
    except ValueError:
      raise ValueError(f"temperature with shape {tuple(t.shape)} does not broadcast against "
                       f"logits with shape {shape}") from None
    t = jnp.reshape(t, full)
  if not _checks.is_concrete(t):
    t = jnp.where(jnp.isfinite(t) & (t > 0), t, jnp.asarray(jnp.nan, dtype))
  return t


def gumbel_softmax(key: PRNGKeyArray, logits: Shaped[ArrayLike, "*batch"],
                   temperature: Shaped[ArrayLike, "..."], axis: int = -1, *,
                   hard: bool = False, log_space: bool = False) -> Float[Array, "*batch"]:
  """A Gumbel-softmax (Concrete) relaxed one-hot sample.

  .. math:: y = \\mathrm{softmax}((l + g) / \\tau)

  With ``hard=True`` the forward value is the one-hot ``argmax`` of ``y`` (the Gumbel-max sample
  for the same noise), and the gradient is that of the relaxed ``y`` (straight-through
  Gumbel-softmax).

  Entries of ``y`` are floored at the smallest normal number of the dtype (``1.2e-38`` in
  float32), where they would otherwise underflow to 0 at low temperature (at ``tau = 0.05`` in
  float32 most samples have such entries); so every sample lies in the open simplex and
  :func:`concrete_log_prob` is finite at it (the density of the point returned). The floor moves
  a sample by less than ``C * 1.2e-38`` and its entries get no gradient. For the sample itself in
  log space, exact at any temperature, use ``log_space=True`` (returns ``log y``, to be passed to
  ``concrete_log_prob(..., log_space=True)``).

  Args:
    key: a JAX PRNG key.
    logits: ``[..., C]`` unnormalised log-probabilities.
    temperature: ``tau > 0``: a Python scalar or an array, may be traced for annealing. An array
      must have size 1 on the class axis (e.g. ``[B, 1]`` for ``[B, C]`` logits); a ``[B]``
      temperature raises ``ValueError`` instead of broadcasting against the classes. Concrete
      non-positive or non-finite values raise ``ValueError``; traced ones give NaN samples.
    axis: class axis.
    hard: straight-through one-hot forward.
    log_space: return ``log y`` (``log_softmax``) instead of ``y``; not with ``hard``.

  Returns:
    ``[..., C]`` on the simplex (or its log), dtype of ``logits``. Invalid logits (a NaN or
    ``+inf`` entry, or all ``-inf`` on ``axis``) raise ``ValueError`` when concrete and give an
    all-NaN sample for that variable when traced (also with ``hard=True``).

  References:
    Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
    Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
  """
  hard = _checks.check_bool("hard", hard)
  log_space = _checks.check_bool("log_space", log_space)
  if hard and log_space:
    raise ValueError("hard=True and log_space=True do not combine: a one-hot sample has no "
                     "finite log")
  _checks.check_dtype("logits", logits, "floating")
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  _checks.check_logits("logits", logits, axis)
  dtype = jnp.result_type(logits)
  tau = _temperature(temperature, jnp.shape(logits), axis, dtype)
  g = sample_gumbel(key, jnp.shape(logits), dtype)
  z = (logits + g) / tau
  if log_space:
    return jax.nn.log_softmax(z, axis=axis)
  y = jnp.maximum(jax.nn.softmax(z, axis=axis), jnp.finfo(dtype).tiny)
  if not hard:
    return y
  one_hot = jax.nn.one_hot(jnp.argmax(y, axis=axis), jnp.shape(logits)[axis], dtype=dtype,
                           axis=axis)
  return straight_through(one_hot, y)


def _simplex_tolerance(dtype: DTypeLike) -> float:
  """How far ``sum(y)`` may be from 1 for ``y`` to count as a point of the simplex."""
  return max(1e-4, 16 * float(jnp.finfo(dtype).eps))


def concrete_log_prob(y: Shaped[ArrayLike, "..."], logits: Real[ArrayLike, "..."],
                      temperature: Shaped[ArrayLike, "..."], axis: int = -1, *,
                      log_space: bool = False) -> Float[Array, "..."]:
  """Log-density of the Concrete (Gumbel-softmax) distribution on the simplex.

  Density with respect to Lebesgue measure on the first ``C - 1`` coordinates of the simplex,
  computed in log space from ``log y``:

  .. math:: \\log p(y) = \\log (C-1)! + (C-1)\\log\\tau + \\sum_k (l_k - (\\tau+1)\\log y_k) - C\\,\\mathrm{logsumexp}_k(l_k - \\tau\\log y_k)

  Support: the open simplex, ``y_k > 0`` and ``sum_k y_k = 1`` (to ``max(1e-4, 16 eps)``).
  Off-support ``y`` (a zero or negative entry, a vertex such as a straight-through sample, a sum
  away from 1, NaN): concrete ``y`` raises ``ValueError`` naming ``y``; traced ``y`` gives NaN
  for those vectors. :func:`gumbel_softmax` floors its entries at the smallest normal number, so
  its samples are always on the support. At low temperature, pass ``log y`` with
  ``log_space=True`` (e.g. ``gumbel_softmax(..., log_space=True)``): it needs no floor and is
  exact at any temperature.

  Args:
    y: points on the open simplex, ``[..., C]`` (or their logs with ``log_space=True``: finite,
      with ``logsumexp = 0`` on ``axis``).
    logits: ``l = log alpha``, ``[..., C]`` (broadcastable).
    temperature: ``tau > 0``, a scalar or an array with size 1 on the class axis (see
      :func:`gumbel_softmax`).
    axis: simplex axis.
    log_space: ``y`` holds ``log y``.

  Returns:
    ``[...]``.

  References:
    Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017, Definition 1.
  """
  log_space = _checks.check_bool("log_space", log_space)
  _checks.check_dtype("y", y, "floating")
  y, logits = _checks.broadcast(y=y, logits=logits)
  axis = _checks.normalize_axis("y", axis, jnp.ndim(y))
  c = jnp.shape(y)[axis]
  dtype = jnp.result_type(y, logits)
  tol = _simplex_tolerance(dtype)
  if _checks.is_concrete(y):
    if log_space:
      _checks.check_values("y", y, lambda a: np.isfinite(a) & (a <= tol),
                           "finite log-probabilities (log y <= 0, no -inf: the open simplex)")
      total = jax.nn.logsumexp(jnp.asarray(y, jnp.promote_types(dtype, jnp.float32)), axis=axis)
      _checks.check_values("logsumexp of log y over the simplex axis", total,
                           lambda a: np.abs(a) <= tol, f"0 (to {tol:g}): y must sum to 1")
    else:
      _checks.check_values("y", y, lambda a: np.isfinite(a) & (a > 0),
                           "in the open simplex (entries > 0; a one-hot vertex has no density)")
      total = jnp.sum(jnp.asarray(y, jnp.promote_types(dtype, jnp.float32)), axis=axis)
      _checks.check_values("y summed over the simplex axis", total,
                           lambda a: np.abs(a - 1) <= tol, f"1 (to {tol:g})")
  tau = _temperature(temperature, jnp.shape(y), axis, dtype)
  shape = jnp.broadcast_shapes(jnp.shape(y), jnp.shape(tau))
  y, logits = jnp.broadcast_to(y, shape), jnp.broadcast_to(logits, shape)
  tau = jnp.broadcast_to(tau, shape[:axis] + (1,) + shape[axis + 1:])
  log_y = y if log_space else jnp.log(y)
  lp = (math.lgamma(c) + (c - 1) * jnp.squeeze(jnp.log(tau), axis)
        + jnp.sum(logits - (tau + 1.0) * log_y, axis=axis)
        - c * jax.nn.logsumexp(logits - tau * log_y, axis=axis))
  if not _checks.is_concrete(y):
    wide = jnp.promote_types(dtype, jnp.float32)
    if log_space:
      ok = (jnp.all(jnp.isfinite(y) & (y <= tol), axis=axis)
            & (jnp.abs(jax.nn.logsumexp(y.astype(wide), axis=axis)) <= tol))
    else:
      ok = (jnp.all(jnp.isfinite(y) & (y > 0), axis=axis)
            & (jnp.abs(jnp.sum(y.astype(wide), axis=axis) - 1) <= tol))
    lp = _checks.nan_unless(ok, lp)
  return lp
