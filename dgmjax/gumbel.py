"""Gumbel noise, the Gumbel-max trick, Gumbel-softmax (Concrete) relaxation, straight-through.

References:
  Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
  Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import _checks

Array = jax.Array


def sample_gumbel(key: Array, shape=(), dtype=jnp.float32) -> Array:
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
  """
  tiny = float(jnp.finfo(dtype).tiny)
  u = jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)
  return -jnp.log(-jnp.log(u))


def gumbel_max(key: Array, logits: Array, axis: int = -1) -> Array:
  """An exact sample of class indices from ``softmax(logits)`` by the Gumbel-max trick.

  .. math:: k = \\arg\\max_j (l_j + g_j), \\quad g_j \\sim \\mathrm{Gumbel}(0, 1)

  Args:
    key: a JAX PRNG key.
    logits: ``[..., C]`` unnormalised log-probabilities (classes on ``axis``).
    axis: class axis.

  Returns:
    int32 indices, ``logits`` shape without ``axis``.
  """
  g = sample_gumbel(key, jnp.shape(logits), jnp.result_type(logits))
  return jnp.argmax(logits + g, axis=axis)


def straight_through(hard: Array, soft: Array) -> Array:
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


def gumbel_softmax(key: Array, logits: Array, temperature, axis: int = -1, *,
                   hard: bool = False) -> Array:
  """A Gumbel-softmax (Concrete) relaxed one-hot sample.

  .. math:: y = \\mathrm{softmax}((l + g) / \\tau)

  With ``hard=True`` the forward value is the one-hot ``argmax`` of ``y`` (the Gumbel-max sample
  for the same noise), and the gradient is that of the relaxed ``y`` (straight-through
  Gumbel-softmax).

  Args:
    key: a JAX PRNG key.
    logits: ``[..., C]`` unnormalised log-probabilities.
    temperature: ``tau > 0`` (Python scalar or array; may be traced for annealing).
    axis: class axis.
    hard: straight-through one-hot forward.

  Returns:
    ``[..., C]`` on the simplex, dtype of ``logits``.

  References:
    Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
    Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
  """
  _checks.check_positive("temperature", temperature)
  dtype = jnp.result_type(logits)
  g = sample_gumbel(key, jnp.shape(logits), dtype)
  y = jax.nn.softmax((logits + g) / jnp.asarray(temperature, dtype), axis=axis)
  if not hard:
    return y
  one_hot = jax.nn.one_hot(jnp.argmax(y, axis=axis), jnp.shape(logits)[axis], dtype=dtype,
                           axis=axis)
  return straight_through(one_hot, y)


def concrete_log_prob(y: Array, logits: Array, temperature, axis: int = -1) -> Array:
  """Log-density of the Concrete (Gumbel-softmax) distribution on the simplex.

  Density with respect to Lebesgue measure on the first ``C - 1`` coordinates of the simplex,
  computed in log space from ``log y``:

  .. math:: \\log p(y) = \\log (C-1)! + (C-1)\\log\\tau + \\sum_k (l_k - (\\tau+1)\\log y_k) - C\\,\\mathrm{logsumexp}_k(l_k - \\tau\\log y_k)

  Args:
    y: points on the open simplex, ``[..., C]``.
    logits: ``l = log alpha``, ``[..., C]`` (broadcastable).
    temperature: ``tau > 0``.
    axis: simplex axis.

  Returns:
    ``[...]``.

  References:
    Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017, Definition 1.
  """
  _checks.check_positive("temperature", temperature)
  y, logits = _checks.broadcast(y=y, logits=logits)
  c = jnp.shape(y)[axis]
  dtype = jnp.result_type(y, logits)
  tau = jnp.asarray(temperature, dtype)
  log_y = jnp.log(y)
  return (math.lgamma(c) + (c - 1) * jnp.log(tau)
          + jnp.sum(logits - (tau + 1.0) * log_y, axis=axis)
          - c * jax.nn.logsumexp(logits - tau * log_y, axis=axis))
