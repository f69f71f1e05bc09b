"""Small pure-function networks used as flow conditioners (dense MLP, MADE masks).

Params are plain dicts of arrays so that any optimiser and ``jax.tree_util`` handle them. The last
layer of a conditioner is zero-initialised, so every flow layer starts as the identity.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real

from dgmjax import _checks

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
}


def check_activation(name: str) -> None:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")


def check_hidden_sizes(hidden_sizes: Sequence[int]) -> tuple[int, ...]:
  """A non-empty sequence of ints >= 1 (a bool, float or string entry raises, naming it)."""
  expected = f"hidden_sizes must be a non-empty sequence of positive ints, got {hidden_sizes!r}"
  if isinstance(hidden_sizes, (str, bytes)) or not isinstance(hidden_sizes, Sequence) and not (
      isinstance(hidden_sizes, np.ndarray) and hidden_sizes.ndim == 1):
    raise _checks.ArgumentTypeError(expected)
  try:
    sizes = tuple(_checks.check_int("hidden_sizes", h, minimum=1) for h in hidden_sizes)
  except ValueError as e:
    raise type(e)(f"{expected} ({e})") from None
  if not sizes:
    raise ValueError(expected)
  return sizes


def check_settings(event_size, context_size, log_scale_clamp, *, min_event_size: int = 1) -> int:
  """The shared settings of a conditioned layer; returns ``event_size`` as an int."""
  event_size = _checks.check_int("event_size", event_size, minimum=min_event_size)
  _checks.check_int("context_size", context_size, minimum=0)
  if log_scale_clamp is not None:
    _checks.check_real("log_scale_clamp", log_scale_clamp, minimum=0.0, strict_minimum=True)
  return event_size


def add_bias(y: Float[Array, "*batch H"], b: Float[ArrayLike, "H"]) -> Float[Array, "*batch H"]:
  """``y + b`` with ``b`` ``[H]`` reshaped to the rank of ``y`` (no implicit rank promotion)."""
  return y + jnp.reshape(b, (1,) * (y.ndim - 1) + b.shape)


def _glorot(key: PRNGKeyArray, shape: tuple[int, int], dtype: DTypeLike) -> Float[Array, "a b"]:
  return jax.nn.initializers.glorot_uniform()(key, shape, dtype)


def mlp_init(key: PRNGKeyArray, in_size: int, hidden_sizes: Sequence[int], out_size: int,
             dtype: DTypeLike, context_size: int = 0) -> dict:
  """Params of an MLP ``in_size (+ context_size) -> hidden_sizes -> out_size`` (last layer 0)."""
  sizes = (in_size + context_size,) + tuple(hidden_sizes)
  keys = jax.random.split(key, len(hidden_sizes))
  hidden = [{"w": _glorot(k, (a, b), dtype), "b": jnp.zeros((b,), dtype)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
  out = {"w": jnp.zeros((sizes[-1], out_size), dtype), "b": jnp.zeros((out_size,), dtype)}
  return {"hidden": hidden, "out": out}


def mlp_apply(params: Mapping, x: Float[ArrayLike, "*batch I"], activation: str,
              context: Optional[Real[ArrayLike, "*batch C"]] = None) -> Float[Array, "*batch O"]:
  """``[..., in] (and context [..., C]) -> [..., out]``."""
  act = ACTIVATIONS[activation]
  h = x if context is None else jnp.concatenate([x, context.astype(x.dtype)], axis=-1)
  for layer in params["hidden"]:
    h = act(add_bias(h @ layer["w"], layer["b"]))
  return add_bias(h @ params["out"]["w"], params["out"]["b"])


# ----------------------------------------------------------------------------- MADE


def hidden_degrees(event_size: int, hidden_sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
  """Degrees of hidden units: cycled deterministically through ``1 .. D-1`` (0 when ``D = 1``)."""
  if event_size == 1:
    return tuple(np.zeros(h, np.int64) for h in hidden_sizes)
  return tuple(np.arange(h) % (event_size - 1) + 1 for h in hidden_sizes)


@functools.lru_cache(maxsize=None)
def made_masks(order: tuple[int, ...], hidden_sizes: tuple[int, ...],
               num_params: int) -> tuple[np.ndarray, ...]:
  """Binary masks of a MADE, input layer to output layer.

  Input ``i`` has degree ``order[i]`` (its position, 1-based, in the autoregressive order). A hidden
  unit of degree ``m`` sees inputs of degree ``<= m``; output ``d`` (and each of its
  ``num_params`` copies, laid out as ``[param, d]`` blocks) sees hidden units of degree
  ``< order[d]``, so output ``d`` depends only on inputs that precede it in the order.

  .. math:: M^{(1)}_{ik} = [m_k \\ge m_i], \\quad M^{out}_{kd} = [m_d > m_k]

  References:
    Germain, Gregor, Murray & Larochelle, MADE: Masked Autoencoder for Distribution Estimation,
    ICML 2015.
  """
  d = len(order)
  deg_in = np.asarray(order)
  degs = (deg_in,) + hidden_degrees(d, hidden_sizes)
  masks = [(b[None, :] >= a[:, None]).astype(np.float32) for a, b in zip(degs[:-1], degs[1:])]
  out = (deg_in[None, :] > degs[-1][:, None]).astype(np.float32)
  masks.append(np.concatenate([out] * num_params, axis=1))
  return tuple(masks)


def made_init(key: PRNGKeyArray, event_size: int, hidden_sizes: tuple[int, ...], num_params: int,
              dtype: DTypeLike, context_size: int = 0) -> dict:
  """Params of a MADE ``[..., D] -> [..., num_params * D]``, output layer zero-initialised.

  A context enters every first-layer hidden unit and, through ``ctx_out``, every output directly
  (so even the first variable in the order can depend on it).
  """
  sizes = (event_size,) + tuple(hidden_sizes)
  keys = jax.random.split(key, len(hidden_sizes) + 1)
  params = {
      "hidden": [{"w": _glorot(k, (a, b), dtype), "b": jnp.zeros((b,), dtype)}
                 for k, a, b in zip(keys[:-1], sizes[:-1], sizes[1:])],
      "out": {"w": jnp.zeros((sizes[-1], num_params * event_size), dtype),
              "b": jnp.zeros((num_params * event_size,), dtype)},
  }
  if context_size:
    params["ctx"] = _glorot(keys[-1], (context_size, sizes[1]), dtype)
    params["ctx_out"] = jnp.zeros((context_size, num_params * event_size), dtype)
  return params


def made_apply(params: Mapping, x: Float[ArrayLike, "*batch D"], masks: tuple[np.ndarray, ...],
               activation: str,
               context: Optional[Real[ArrayLike, "*context_batch C"]] = None,
               ) -> Float[Array, "*batch P"]:
  """One MADE pass: ``[..., D] -> [..., num_params * D]`` (blocks of ``D`` per parameter)."""
  act = ACTIVATIONS[activation]
  h = x
  for i, (layer, mask) in enumerate(zip(params["hidden"], masks[:-1])):
    pre = h @ (layer["w"] * jnp.asarray(mask, layer["w"].dtype))
    if i == 0 and context is not None:
      pre = pre + context.astype(pre.dtype) @ params["ctx"]
    h = act(add_bias(pre, layer["b"]))
  out = h @ (params["out"]["w"] * jnp.asarray(masks[-1], params["out"]["w"].dtype))
  if context is not None:
    out = out + context.astype(out.dtype) @ params["ctx_out"]
  return add_bias(out, params["out"]["b"])


def soft_clamp(log_scale: Float[Array, "*shape"], bound: Optional[float]) -> Float[Array, "*shape"]:
  """``bound * tanh(s / bound)``: a smooth clamp of log-scales to ``(-bound, bound)``.

  Keeps affine flow layers from producing huge scales early in training; ``None`` disables it.
  """
  if bound is None:
    return log_scale
  return bound * jnp.tanh(log_scale / bound)
