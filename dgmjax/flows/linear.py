"""Invertible linear flows parametrised by LU and QR decompositions, and Glow's 1x1 convolution.

Both parametrisations keep the matrix invertible for *any* parameter values, so training cannot
make it singular: the diagonal of the triangular factor is ``sign * exp(log_diag)``, never zero.

* LU: ``W = P L U`` with a fixed permutation ``P``, unit-lower ``L`` and upper ``U``.
* QR: ``W = Q R`` with ``Q = H_1 ... H_K`` a product of Householder reflections
  ``H_k = I - 2 v_k v_k^T / |v_k|^2`` (the identity for ``v_k = 0``) and ``R`` upper triangular.

The permutation and the diagonal signs are fixed at initialisation; they are *static* fields of the
params dataclass (pytree metadata), so gradients and optimisers never see them. ``init(key)`` draws
a random rotation and decomposes it once (jittable); ``params_from_matrix(w)`` decomposes a given
concrete matrix once with NumPy/SciPy and raises ``ValueError`` if it is singular.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real

from dgmjax import _checks
from dgmjax.flows import _nets
from dgmjax.flows import base


def _rows(x: Float[Array, "*batch D"]) -> tuple[Float[Array, "N D"], tuple[int, ...]]:
  """``[..., D] -> [N, D]`` and the batch shape to restore."""
  return jnp.reshape(x, (-1, x.shape[-1])), x.shape[:-1]


def _check_matrix(w: Real[ArrayLike, "..."], d: int) -> np.ndarray:
  if not _checks.is_concrete(w):
    raise ValueError("params_from_matrix decomposes w once with NumPy: pass a concrete matrix, "
                     "not a traced value (call it outside jit)")
  w = np.asarray(w, dtype=np.float64)
  if w.shape != (d, d):
    raise ValueError(f"w must be a square [{d}, {d}] matrix for event_size={d}, got shape "
                     f"{w.shape}")
  if not np.all(np.isfinite(w)):
    raise ValueError("w contains NaN or infinite values")
  return w


def _singular(diag: Float[np.ndarray, "D"], w: Float[np.ndarray, "D D"]) -> bool:
  scale = max(np.max(np.abs(w)), np.finfo(np.float64).tiny)
  return bool(np.any(np.abs(diag) <= w.shape[0] * np.finfo(np.float64).eps * scale))


def _random_rotation(key: PRNGKeyArray, d: int, dtype: DTypeLike) -> Float[Array, "D D"]:
  """A Haar-distributed orthogonal matrix ``[D, D]`` (QR of a Gaussian, signs fixed)."""
  q, r = jnp.linalg.qr(jax.random.normal(key, (d, d), dtype))
  return q * jnp.reshape(jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype), (1, d))


# ----------------------------------------------------------------------------- LU


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["lower", "upper", "log_diag", "bias"],
                   meta_fields=["perm", "sign"])
@dataclasses.dataclass(frozen=True)
class LUParams:
  """Params of :class:`LULinear`.

  Attributes:
    lower: ``[D, D]``; its strictly lower part is ``L`` (unit diagonal implied).
    upper: ``[D, D]``; its strictly upper part is ``U``'s off-diagonal.
    log_diag: ``[D]``; ``U_ii = sign_i * exp(log_diag_i)``.
    bias: ``[D]`` or ``None``.
    perm: static; ``(P y)_i = y[perm[i]]``.
    sign: static; signs of ``U``'s diagonal (all +1 after ``init``).
  """
  # A pytree node: JAX rebuilds it with arbitrary leaves (tree_map, vmap's in_axes), so runtime
  # type checkers (jaxtyping's import hook in the test suite) leave its constructor alone.
  __no_type_check__ = True

  lower: Float[Array, "D D"]
  upper: Float[Array, "D D"]
  log_diag: Float[Array, "D"]
  bias: Optional[Float[Array, "D"]]
  perm: tuple
  sign: tuple


@dataclasses.dataclass(frozen=True)
class LULinear(base.Bijector):
  """Invertible linear (affine) flow ``x = W u + b`` with ``W = P L U``.

  .. math:: W = P L (U_{strict} + \\mathrm{diag}(s \\odot e^{\\ell})), \\quad \\log|\\det W| = \\sum_i \\ell_i

  ``forward`` multiplies by the factors (``O(D^2)``); ``inverse`` does two triangular solves.

  Args:
    event_size: ``D``.
    use_bias: add a learned bias ``b``.

  References:
    Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions, NeurIPS 2018.
  """

  event_size: int
  use_bias: bool = True

  def __post_init__(self):
    object.__setattr__(self, "event_size", _checks.check_int("event_size", self.event_size,
                                                             minimum=1))

  @property
  def event_shape(self):
    return (self.event_size,)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> LUParams:
    """Decomposes a random rotation once: ``P = I`` and ``W = L U`` orthogonal, ``diag U > 0``.

    With ``M = P_0 L_0 U_0`` the pivoted LU of a random rotation, ``L_0 U_0 S`` (``S`` the signs of
    ``diag U_0``) is again a rotation, so no data-dependent permutation has to be static.
    """
    dtype = base._float_dtype(dtype)
    d = self.event_size
    # Decomposed in at least float32 (LAPACK has no bfloat16 / float16 LU), then cast.
    work = jnp.promote_types(dtype, jnp.float32)
    _, l, u = jax.scipy.linalg.lu(_random_rotation(key, d, work))
    diag = jnp.diagonal(u)
    u = u * jnp.reshape(jnp.sign(diag), (1, d))
    return LUParams(lower=l.astype(dtype), upper=u.astype(dtype),
                    log_diag=jnp.log(jnp.abs(diag)).astype(dtype),
                    bias=jnp.zeros((d,), dtype) if self.use_bias else None,
                    perm=tuple(range(d)), sign=(1.0,) * d)

  def params_from_matrix(self, w: Real[ArrayLike, "..."],
                         bias: Optional[Real[ArrayLike, "D"]] = None,
                         dtype: DTypeLike | None = None) -> LUParams:
    """Params with ``W = w`` exactly (pivoted LU done once with SciPy).

    Raises:
      ValueError: ``w`` is not ``[D, D]``, not finite, traced, or singular (non-invertible).
    """
    d = self.event_size
    w = _check_matrix(w, d)
    p, l, u = scipy.linalg.lu(w)
    diag = np.diagonal(u)
    if _singular(diag, w):
      raise ValueError("w is singular (a zero pivot in its LU decomposition): a linear flow "
                       "needs an invertible matrix")
    dtype = base._float_dtype(dtype)
    perm = tuple(int(i) for i in np.argmax(p, axis=1))  # w = p l u, (p y)_i = y[perm[i]]
    if bias is None:
      b = jnp.zeros((d,), dtype) if self.use_bias else None
    else:
      if not self.use_bias:
        raise ValueError("bias given but use_bias=False")
      b = jnp.asarray(bias, dtype)
    return LUParams(lower=jnp.asarray(l, dtype), upper=jnp.asarray(u, dtype),
                    log_diag=jnp.asarray(np.log(np.abs(diag)), dtype), bias=b,
                    perm=perm, sign=tuple(float(s) for s in np.sign(diag)))

  @staticmethod
  def factors(params: LUParams) -> tuple[Float[Array, "D D"], Float[Array, "D D"]]:
    """``(L, U)``, each ``[D, D]``."""
    d = params.log_diag.shape[-1]
    lower = jnp.tril(params.lower, -1) + jnp.eye(d, dtype=params.lower.dtype)
    diag = jnp.asarray(params.sign, params.log_diag.dtype) * jnp.exp(params.log_diag)
    upper = jnp.triu(params.upper, 1) + jnp.diag(diag)
    return lower, upper

  @classmethod
  def weight(cls, params: LUParams) -> Float[Array, "D D"]:
    """The matrix ``W = P L U``, ``[D, D]``."""
    lower, upper = cls.factors(params)
    return (lower @ upper)[np.asarray(params.perm), :]

  def _log_det(self, params, batch, dtype):
    return jnp.broadcast_to(jnp.sum(params.log_diag).astype(dtype), batch)

  def _forward(self, params, u, context):
    lower, upper = self.factors(params)
    y, batch = _rows(u)
    y = (y @ upper.T) @ lower.T
    y = y[:, np.asarray(params.perm)]
    if params.bias is not None:
      y = _nets.add_bias(y, params.bias)
    return jnp.reshape(y, u.shape), self._log_det(params, batch, y.dtype)

  def _inverse(self, params, x, context):
    lower, upper = self.factors(params)
    y, batch = _rows(x)
    if params.bias is not None:
      y = _nets.add_bias(y, -params.bias)
    y = y[:, np.argsort(params.perm)]
    y = jax.scipy.linalg.solve_triangular(lower, y.T, lower=True, unit_diagonal=True)
    y = jax.scipy.linalg.solve_triangular(upper, y, lower=False).T
    return jnp.reshape(y, x.shape), -self._log_det(params, batch, y.dtype)


# ----------------------------------------------------------------------------- QR


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["vectors", "upper", "log_diag", "bias"],
                   meta_fields=["sign"])
@dataclasses.dataclass(frozen=True)
class QRParams:
  """Params of :class:`QRLinear`.

  Attributes:
    vectors: ``[K, D]`` Householder vectors ``v_k`` (``Q = H_1 ... H_K``); any values: a zero
      vector is the identity (no reflection), so ``Q`` is orthogonal for every parameter value.
    upper: ``[D, D]``; its strictly upper part is ``R``'s off-diagonal.
    log_diag: ``[D]``; ``R_ii = sign_i * exp(log_diag_i)``.
    bias: ``[D]`` or ``None``.
    sign: static; signs of ``R``'s diagonal.
  """
  # A pytree node: JAX rebuilds it with arbitrary leaves (tree_map, vmap's in_axes), so runtime
  # type checkers (jaxtyping's import hook in the test suite) leave its constructor alone.
  __no_type_check__ = True

  vectors: Float[Array, "K D"]
  upper: Float[Array, "D D"]
  log_diag: Float[Array, "D"]
  bias: Optional[Float[Array, "D"]]
  sign: tuple


def _householder(y: Float[Array, "N D"], v: Float[Array, "D"]) -> Float[Array, "N D"]:
  """``H y = y - 2 v (v . y) / |v|^2`` for rows ``y`` ``[N, D]``; the identity for ``v = 0``.

  ``v`` is first divided by its largest magnitude, so ``|v|^2`` neither underflows (a tiny ``v``
  still reflects along its direction) nor overflows; a zero ``v`` (no direction, and the limit of
  ``H`` as ``v -> 0`` does not exist) is the identity with zero gradient, so every parameter value
  gives an orthogonal ``Q`` and an invertible flow. Forward and inverse use the same rule.
  """
  # H depends on the direction of v only, so holding the scale constant (stop_gradient) leaves
  # every derivative exact and keeps 1 / scale^2 (overflowing for a tiny v) out of the gradient.
  scale = jax.lax.stop_gradient(jnp.max(jnp.abs(v)))
  u = v / jnp.where(scale > 0, scale, jnp.ones((), v.dtype))
  norm2 = jnp.sum(jnp.square(u))                   # >= 1 unless v = 0 (then u = 0 and y . u = 0)
  coef = 2.0 * (y @ u) / jnp.where(norm2 > 0, norm2, jnp.ones((), u.dtype))
  return y - coef[:, None] * u[None, :]


@dataclasses.dataclass(frozen=True)
class QRLinear(base.Bijector):
  """Invertible linear (affine) flow ``x = Q R u + b`` with Householder ``Q``.

  .. math:: W = \\Big(\\prod_{k=1}^{K} (I - 2\\tfrac{v_k v_k^T}{\\|v_k\\|^2})\\Big) (R_{strict} + \\mathrm{diag}(s \\odot e^{\\ell})), \\quad \\log|\\det W| = \\sum_i \\ell_i

  Args:
    event_size: ``D``.
    num_reflections: ``K`` (default ``D``, enough for any rotation).
    use_bias: add a learned bias ``b``.

  References:
    Tomczak & Welling, Improving Variational Auto-Encoders using Householder Flow, 2016;
    Hoogeboom, van den Berg & Welling, Emerging Convolutions for Generative Normalizing Flows,
    ICML 2019 (QR parametrisation).
  """

  event_size: int
  num_reflections: Optional[int] = None
  use_bias: bool = True

  def __post_init__(self):
    object.__setattr__(self, "event_size", _checks.check_int("event_size", self.event_size,
                                                             minimum=1))
    if self.num_reflections is not None:
      object.__setattr__(self, "num_reflections",
                         _checks.check_int("num_reflections", self.num_reflections, minimum=1))

  @property
  def event_shape(self):
    return (self.event_size,)

  @property
  def _k(self) -> int:
    return self.num_reflections or self.event_size

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> QRParams:
    """Random Householder vectors (a random rotation ``Q``) and ``R = I``."""
    dtype = base._float_dtype(dtype)
    d = self.event_size
    return QRParams(vectors=jax.random.normal(key, (self._k, d), dtype),
                    upper=jnp.zeros((d, d), dtype), log_diag=jnp.zeros((d,), dtype),
                    bias=jnp.zeros((d,), dtype) if self.use_bias else None, sign=(1.0,) * d)

  def params_from_matrix(self, w: Real[ArrayLike, "..."],
                         bias: Optional[Real[ArrayLike, "D"]] = None,
                         dtype: DTypeLike | None = None) -> QRParams:
    """Params with ``W = w`` exactly (Householder QR done once with NumPy; needs ``K = D``).

    Raises:
      ValueError: ``w`` is not ``[D, D]``, not finite, traced, or singular (non-invertible).
    """
    d = self.event_size
    if self._k != d:
      raise ValueError(f"params_from_matrix needs num_reflections = event_size = {d}")
    w = _check_matrix(w, d)
    a = w.copy()
    vectors = np.zeros((d, d))
    for k in range(d):
      col = a[k:, k]
      norm = np.linalg.norm(col)
      if norm <= d * np.finfo(np.float64).eps * max(np.max(np.abs(w)), 1e-300):
        raise ValueError("w is singular (rank deficient in its QR decomposition): a linear flow "
                         "needs an invertible matrix")
      v = col.copy()
      v[0] += (1.0 if col[0] >= 0 else -1.0) * norm
      vectors[k, k:] = v
      a[k:, :] -= 2.0 * np.outer(v, v @ a[k:, :]) / (v @ v)
    diag = np.diagonal(a)
    if _singular(diag, w):
      raise ValueError("w is singular (a zero diagonal in R): a linear flow needs an invertible "
                       "matrix")
    dtype = base._float_dtype(dtype)
    if bias is None:
      b = jnp.zeros((d,), dtype) if self.use_bias else None
    else:
      if not self.use_bias:
        raise ValueError("bias given but use_bias=False")
      b = jnp.asarray(bias, dtype)
    return QRParams(vectors=jnp.asarray(vectors, dtype), upper=jnp.asarray(np.triu(a), dtype),
                    log_diag=jnp.asarray(np.log(np.abs(diag)), dtype), bias=b,
                    sign=tuple(float(s) for s in np.sign(diag)))

  @staticmethod
  def triangular(params: QRParams) -> Float[Array, "D D"]:
    """``R``, ``[D, D]``."""
    diag = jnp.asarray(params.sign, params.log_diag.dtype) * jnp.exp(params.log_diag)
    return jnp.triu(params.upper, 1) + jnp.diag(diag)

  @staticmethod
  def apply_q(params: QRParams, y: Float[Array, "N D"], *,
              transpose: bool = False) -> Float[Array, "N D"]:
    """``Q y`` (or ``Q^T y``) for rows ``y`` ``[N, D]``: ``K`` reflections in a scan."""
    def step(carry: Float[Array, "N D"], v: Float[Array, "D"]) -> tuple[Float[Array, "N D"], None]:
      return _householder(carry, v), None
    # Q y = H_1 (... (H_K y)): reflections applied last-to-first; Q^T y applies them first-to-last.
    return jax.lax.scan(step, y, params.vectors, reverse=not transpose)[0]

  @classmethod
  def weight(cls, params: QRParams) -> Float[Array, "D D"]:
    """The matrix ``W = Q R``, ``[D, D]``."""
    return cls.apply_q(params, cls.triangular(params).T).T

  def _log_det(self, params, batch, dtype):
    return jnp.broadcast_to(jnp.sum(params.log_diag).astype(dtype), batch)

  def _forward(self, params, u, context):
    y, batch = _rows(u)
    y = self.apply_q(params, y @ self.triangular(params).T)
    if params.bias is not None:
      y = _nets.add_bias(y, params.bias)
    return jnp.reshape(y, u.shape), self._log_det(params, batch, y.dtype)

  def _inverse(self, params, x, context):
    y, batch = _rows(x)
    if params.bias is not None:
      y = _nets.add_bias(y, -params.bias)
    y = self.apply_q(params, y, transpose=True)
    y = jax.scipy.linalg.solve_triangular(self.triangular(params), y.T, lower=False).T
    return jnp.reshape(y, x.shape), -self._log_det(params, batch, y.dtype)


# ----------------------------------------------------------------------------- 1x1 convolution


@dataclasses.dataclass(frozen=True)
class InvertibleConv1x1(base.Bijector):
  """Glow's invertible 1x1 convolution: one linear map of the channels at every position.

  The channel case of :class:`LULinear` / :class:`QRLinear` (no bias; ActNorm supplies it) on
  ``[..., H, W, C]``; the log-determinant is multiplied by the number of positions ``H W``.

  .. math:: x_{hw} = W u_{hw}, \\quad \\log|\\det J| = H W \\log|\\det W|

  Args:
    event_shape: ``(H, W, C)`` (channels last).
    parametrization: ``"lu"`` or ``"qr"``.

  References:
    Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions, NeurIPS 2018.
  """

  event_shape: tuple
  parametrization: str = "lu"

  def __post_init__(self):
    shape = tuple(int(s) for s in self.event_shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
      raise ValueError(f"event_shape must be (H, W, C) (channels last), got {self.event_shape}")
    object.__setattr__(self, "event_shape", shape)
    if self.parametrization not in ("lu", "qr"):
      raise ValueError(f"parametrization must be 'lu' or 'qr', got {self.parametrization!r}")

  @property
  def channel_bijector(self) -> base.Bijector:
    c = self.event_shape[-1]
    if self.parametrization == "lu":
      return LULinear(c, use_bias=False)
    return QRLinear(c, use_bias=False)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> LUParams | QRParams:
    return self.channel_bijector.init(key, dtype)

  def params_from_matrix(self, w: Real[ArrayLike, "..."],
                         dtype: DTypeLike | None = None) -> LUParams | QRParams:
    """Params with channel matrix ``w`` ``[C, C]`` (raises ``ValueError`` if singular)."""
    return self.channel_bijector.params_from_matrix(w, dtype=dtype)

  def _sum_positions(self, ld):
    n = len(self.event_shape) - 1
    return jnp.sum(ld, axis=tuple(range(ld.ndim - n, ld.ndim)))

  def _forward(self, params, u, context):
    x, ld = self.channel_bijector._forward(params, u, None)
    return x, self._sum_positions(ld)

  def _inverse(self, params, x, context):
    u, ld = self.channel_bijector._inverse(params, x, None)
    return u, self._sum_positions(ld)

