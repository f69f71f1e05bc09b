"""The bijector protocol, input checks, composition (:class:`Chain`) and inversion (:class:`Invert`).

A bijector is a frozen (hashable) dataclass holding only *static* configuration: sizes, masks,
orders, fixed permutations. Its parameters are a separate pytree returned by ``init(key, dtype)``
and every method is a pure function of ``(params, input, context)``::

    bij = flows.real_nvp(2, num_layers=4)
    params = bij.init(jax.random.key(0))
    x, log_det = bij.forward_and_log_det(params, u)       # base u -> data x (sampling)
    u, log_det_inv = bij.inverse_and_log_det(params, x)   # data x -> base u (density)

Conventions:
  * ``forward`` maps the base variable ``u`` to the data ``x``; ``inverse`` maps ``x`` to ``u``.
    Each returns ``(output, log|det J|)`` with ``J`` the Jacobian of *that* direction, so the two
    log-determinants are negatives of each other.
  * The event lives on the trailing axes, ``event_shape`` (``(D,)`` for vectors, ``(H, W, C)``
    for channels-last images); the log-determinant has the batch shape ``x.shape[:-len(event)]``.
  * ``context`` ``[..., context_size]`` conditions a bijector (an IAF posterior on the encoder's
    features, a conditional prior); it broadcasts against the batch shape. Bijectors with
    ``context_size == 0`` refuse a context.
  * Bijectors are hashable, so a bound method such as ``jax.jit(bij.inverse_and_log_det)`` jits
    with the configuration static, and a bijector can be a Flax module field
    (:class:`dgmjax.nn.FlowModule`).

Input checks (in ``forward_and_log_det`` / ``inverse_and_log_det``; the unchecked ``_forward`` /
``_inverse`` are what compositions call): a wrong event shape raises ``ValueError`` naming the
argument and a non-floating dtype raises ``TypeError``, both at trace time, so also under ``jit``
(a complex input, context or params leaf included: a flow is a real map).
NaN or infinite input raises ``ValueError`` when the input is concrete (eager execution). Under
``jax.jit`` / ``jax.vmap`` values are traced and Python cannot look at them; NaNs then propagate
row by row, and ``jax.experimental.checkify.checkify(f, errors=checkify.float_checks)`` around the
jitted function turns them into a checked error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray, Real, Shaped

from dgmjax import _checks

Params = Any


# ----------------------------------------------------------------------------- helpers


def _float_dtype(dtype: DTypeLike | None = None) -> np.dtype:
  """``dtype`` as a floating dtype; ``None`` gives JAX's default float (float64 under x64)."""
  dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"params dtype must be floating, got {dtype}")
  return dtype


def as_tuple_of_ints(name: str, value: Any) -> tuple[int, ...]:
  """A (static) sequence of integers as a tuple of Python ints, or ValueError naming it."""
  arr = np.asarray(value)
  if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or
                           (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))):
    raise ValueError(f"{name} must be a 1-D sequence of ints, got {value!r}")
  return tuple(int(v) for v in arr)


def compute_dtype(params: Params, x: Shaped[Array, "..."]) -> np.dtype:
  """The promoted dtype of ``x`` and the floating leaves of ``params`` (mixed precision)."""
  leaves = [l for l in jax.tree_util.tree_leaves(params) if jnp.issubdtype(l.dtype, jnp.floating)]
  return jnp.result_type(x.dtype, *(l.dtype for l in leaves))


def zeros_log_det(x: Shaped[Array, "..."], event_ndims: int) -> Float[Array, "..."]:
  """A zero log-determinant with the batch shape of ``x`` (volume-preserving maps)."""
  return jnp.zeros(x.shape[:x.ndim - event_ndims], x.dtype)


def check_finite(name: str, value: Any) -> None:
  """Raises ValueError if ``value`` is concrete and holds NaN or infinite entries.

  Traced values (inside ``jit``, ``vmap``, ``grad`` with respect to ``value``) pass unchecked; see
  the module docstring for ``checkify``.

  Args:
    name: the argument's name, used in the message.
    value: an array (or anything ``np.asarray`` takes).
  """
  if not _checks.is_concrete(value):
    return
  arr = np.asarray(value)
  if not np.issubdtype(arr.dtype, np.inexact):
    return
  for what, bad in (("NaN", np.isnan(arr)), ("infinite", np.isinf(arr))):
    n = int(np.count_nonzero(bad))
    if n:
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name} contains {n} {what} value(s), the first at index {first} "
                       f"(shape {arr.shape}); a flow needs finite input")


def check_real_params(params: Params) -> None:
  """Raises ``TypeError`` naming the leaf if a leaf of ``params`` is complex (dtypes are static:
  also under ``jit``). A complex leaf would otherwise be cast to the input's real dtype, its
  imaginary part dropped."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    _checks.check_not_complex(f"params{jax.tree_util.keystr(path)}", leaf)


# ----------------------------------------------------------------------------- the protocol


class Bijector:
  """Base class of invertible maps with tractable log-determinants.

  Subclasses are ``@dataclasses.dataclass(frozen=True)`` holding static configuration; they define
  ``event_shape``, ``init(key, dtype=None)``, ``_forward(params, u, context)`` and
  ``_inverse(params, x, context)`` (unchecked, each returning ``(output, log_det)``), and set
  ``context_size`` if conditional. :meth:`data_init` is the identity unless overridden
  (:class:`~dgmjax.flows.ActNorm`).
  """

  context_size = 0
  # ``event_shape`` (a tuple) is a property or a dataclass field of each subclass.

  # The dataclass constructors of bijectors validate their static configuration themselves, in
  # ``__post_init__`` (NumPy ints accepted, a float or a bool size rejected by name): runtime type
  # checkers (jaxtyping's import hook in the test suite) leave the generated ``__init__`` alone.
  # The methods below are checked.
  __no_type_check__ = True

  @property
  def event_ndims(self) -> int:
    return len(self.event_shape)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> Params:
    """The initial params pytree (``dtype`` defaults to JAX's default float)."""
    raise NotImplementedError

  def _forward(self, params: Params, u: Array, context: Optional[Array]) -> tuple[Array, Array]:
    raise NotImplementedError

  def _inverse(self, params: Params, x: Array, context: Optional[Array]) -> tuple[Array, Array]:
    raise NotImplementedError

  def data_init(self, params: Params, x: Real[ArrayLike, "..."],
                context: Optional[Real[ArrayLike, "..."]] = None) -> Params:
    """Data-dependent initialisation from a batch ``x`` of this layer's data-side input."""
    del x, context
    return params

  # -- checks

  def _prepare(self, name: str, x: Shaped[ArrayLike, "..."],
               context: Optional[Shaped[ArrayLike, "..."]]):
    """Checks ``x`` (and ``context``); returns them as arrays, the context broadcast to the batch."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    es = tuple(self.event_shape)
    if x.ndim < len(es) or tuple(x.shape[x.ndim - len(es):]) != es:
      raise ValueError(f"{name} must have event shape {es} on its trailing axes, got an array of "
                       f"shape {tuple(x.shape)}")
    check_finite(name, x)
    batch = tuple(x.shape[:x.ndim - len(es)])
    if self.context_size == 0:
      if context is not None:
        raise ValueError(f"{type(self).__name__} takes no context (context_size=0), got one of "
                         f"shape {np.shape(context)}")
      return x, None
    if context is None:
      raise ValueError(f"{type(self).__name__} needs a context of size {self.context_size}")
    _checks.check_numeric("context", context)
    context = jnp.asarray(context)
    if context.ndim < 1 or context.shape[-1] != self.context_size:
      raise ValueError(f"context must have size {self.context_size} on its last axis, got shape "
                       f"{tuple(context.shape)}")
    check_finite("context", context)
    try:
      shape = jnp.broadcast_shapes(tuple(context.shape[:-1]), batch)
    except ValueError:
      raise ValueError(f"context batch shape {tuple(context.shape[:-1])} and {name} batch shape "
                       f"{batch} do not broadcast") from None
    if shape != batch:
      raise ValueError(f"context batch shape {tuple(context.shape[:-1])} and {name} batch shape "
                       f"{batch} do not broadcast to {name}'s batch shape")
    return x, jnp.broadcast_to(context, batch + (self.context_size,)).astype(x.dtype)

  # -- public API

  def forward_and_log_det(
      self, params: Params, u: Shaped[ArrayLike, "*shape"],
      context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "*shape"], Float[Array, "*batch"]]:
    """Base -> data (sampling direction): ``x = f(u)`` and ``log|det df/du|``.

    Args:
      params: the pytree from ``init``.
      u: ``[..., *event_shape]``.
      context: ``[..., context_size]`` (conditional bijectors only), broadcast to the batch.

    Returns:
      ``x`` shaped like ``u`` and the log-determinant ``[...]``, both of ``u``'s dtype (the
      computation runs in the promoted dtype of ``u`` and the params).
    """
    u, context = self._prepare("u", u, context)
    check_real_params(params)
    x, log_det = self._forward(params, u, context)
    return x.astype(u.dtype), log_det.astype(u.dtype)

  def inverse_and_log_det(
      self, params: Params, x: Shaped[ArrayLike, "*shape"],
      context: Optional[Real[ArrayLike, "..."]] = None,
  ) -> tuple[Float[Array, "*shape"], Float[Array, "*batch"]]:
    """Data -> base (density direction): ``u = f^{-1}(x)`` and ``log|det df^{-1}/dx|``.

    Args:
      params: the pytree from ``init``.
      x: ``[..., *event_shape]``.
      context: ``[..., context_size]`` (conditional bijectors only), broadcast to the batch.

    Returns:
      ``u`` shaped like ``x`` and the log-determinant ``[...]``, both of ``x``'s dtype.
    """
    x, context = self._prepare("x", x, context)
    check_real_params(params)
    u, log_det = self._inverse(params, x, context)
    return u.astype(x.dtype), log_det.astype(x.dtype)

  def forward(self, params: Params, u: Shaped[ArrayLike, "*shape"],
              context: Optional[Real[ArrayLike, "..."]] = None) -> Float[Array, "*shape"]:
    """``f(u)`` (see :meth:`forward_and_log_det`)."""
    return self.forward_and_log_det(params, u, context)[0]

  def inverse(self, params: Params, x: Shaped[ArrayLike, "*shape"],
              context: Optional[Real[ArrayLike, "..."]] = None) -> Float[Array, "*shape"]:
    """``f^{-1}(x)`` (see :meth:`inverse_and_log_det`)."""
    return self.inverse_and_log_det(params, x, context)[0]


# ----------------------------------------------------------------------------- composition


@dataclasses.dataclass(frozen=True)
class Chain(Bijector):
  """Composition of bijectors; ``forward`` applies ``layers[0]`` first (base side first).

  .. math:: f = f_L \\circ \\cdots \\circ f_1, \\quad \\log\\left|\\det \\frac{\\partial f}{\\partial u}\\right| = \\sum_{l=1}^{L} \\log\\left|\\det \\frac{\\partial f_l}{\\partial h_{l-1}}\\right|

  Params are a tuple with one entry per layer. The context goes to the conditional layers only.

  Args:
    layers: bijectors sharing one ``event_shape`` (and one ``context_size`` among the
      conditional ones), in forward order.

  References:
    Rezende & Mohamed, Variational Inference with Normalizing Flows, ICML 2015.
  """

  layers: tuple

  def __post_init__(self):
    layers = tuple(self.layers)
    if not layers or not all(isinstance(b, Bijector) for b in layers):
      raise ValueError(f"Chain needs a non-empty sequence of bijectors, got {self.layers!r}")
    shapes = {tuple(b.event_shape) for b in layers}
    if len(shapes) != 1:
      raise ValueError(f"all layers of a Chain must share one event shape, got event shapes "
                       f"{[tuple(b.event_shape) for b in layers]}")
    sizes = {b.context_size for b in layers if b.context_size}
    if len(sizes) > 1:
      raise ValueError(f"conditional layers of a Chain must share context_size, got {sorted(sizes)}")
    object.__setattr__(self, "layers", layers)

  @property
  def event_shape(self):
    return tuple(self.layers[0].event_shape)

  @property
  def context_size(self):  # type: ignore[override]
    return max(b.context_size for b in self.layers)

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> tuple:
    keys = jax.random.split(key, len(self.layers))
    return tuple(b.init(k, dtype) for b, k in zip(self.layers, keys))

  def _check_params(self, params):
    if not isinstance(params, (tuple, list)) or len(params) != len(self.layers):
      raise ValueError(f"Chain params must be a sequence of {len(self.layers)} per-layer params")

  def _forward(self, params, u, context):
    self._check_params(params)
    log_det = zeros_log_det(u, self.event_ndims)
    for b, p in zip(self.layers, params):
      u, ld = b._forward(p, u, context if b.context_size else None)
      log_det = log_det + ld
    return u, log_det

  def _inverse(self, params, x, context):
    self._check_params(params)
    log_det = zeros_log_det(x, self.event_ndims)
    for b, p in zip(reversed(self.layers), reversed(tuple(params))):
      x, ld = b._inverse(p, x, context if b.context_size else None)
      log_det = log_det + ld
    return x, log_det

  def data_init(self, params: Params, x: Real[ArrayLike, "..."],
                context: Optional[Real[ArrayLike, "..."]] = None) -> tuple:
    """Initialises data-dependent layers from a data batch ``x``, data side (last layer) first.

    Each layer is initialised on what it sees of ``x``: the inverse image of ``x`` through the
    layers after it, computed with their freshly initialised params.
    """
    self._check_params(params)
    h, context = self._prepare("x", x, context)
    new = list(params)
    for i in reversed(range(len(self.layers))):
      b = self.layers[i]
      ctx = context if b.context_size else None
      new[i] = b.data_init(new[i], h, ctx)
      h, _ = b._inverse(new[i], h, ctx)
    return tuple(new)


@dataclasses.dataclass(frozen=True)
class Invert(Bijector):
  """The inverse bijector: its ``forward`` is ``bijector``'s inverse and vice versa.

  ``Invert(MAF(...))`` is an IAF-like layer (one-pass sampling) that reads the data side.

  Args:
    bijector: the bijector to invert (params unchanged).
  """

  bijector: Bijector

  def __post_init__(self):
    if not isinstance(self.bijector, Bijector):
      raise ValueError(f"Invert needs a Bijector, got {self.bijector!r}")

  @property
  def event_shape(self):
    return tuple(self.bijector.event_shape)

  @property
  def context_size(self):  # type: ignore[override]
    return self.bijector.context_size

  def init(self, key: PRNGKeyArray, dtype: DTypeLike | None = None) -> Params:
    return self.bijector.init(key, dtype)

  def data_init(self, params: Params, x: Real[ArrayLike, "..."],
                context: Optional[Real[ArrayLike, "..."]] = None) -> Params:
    # Only meaningful if the inner bijector's data side is its base side: leave params alone.
    del x, context
    return params

  def _forward(self, params, u, context):
    return self.bijector._inverse(params, u, context)

  def _inverse(self, params, x, context):
    return self.bijector._forward(params, x, context)
