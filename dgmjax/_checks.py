"""Argument checks shared by the core modules.

Checks run at trace time on static information (shapes, dtypes, Python scalars, concrete arrays),
so they cost nothing inside a jitted function and raise before any work is done.

The rule for values (data and settings):

* **Concrete** (a Python number, a NumPy array, a JAX array outside ``jit``; anything that is not
  a ``jax.core.Tracer``): checked on the host; a bad value raises ``ValueError`` naming the
  argument, what was expected and what was given (the first offending entry and its index).
* **Traced** (inside ``jit`` / ``vmap`` / ``grad`` with respect to that argument): Python cannot
  look at the value. Densities then return NaN for the entries off their support
  (:func:`nan_unless`, one fused elementwise select: on-support values and gradients are
  unchanged), and functions that cannot produce NaN document their contract instead.
* Wrong **types** (a bool or float for an int, a float array of class indices) raise
  :class:`ArgumentTypeError`, a ``TypeError`` that is also a ``ValueError``; dtypes and shapes
  are static, so these raise under ``jit`` too.
"""

from __future__ import annotations

import numpy as np
import jax


def is_concrete(value) -> bool:
  """True when ``value`` is a Python number or an array whose value is known at trace time."""
  return not isinstance(value, jax.core.Tracer)


def check_positive(name: str, value) -> None:
  """Raises ValueError if ``value`` is concrete and not strictly positive everywhere."""
  if is_concrete(value):
    arr = np.asarray(value)
    if arr.size and not np.all(arr > 0):
      raise ValueError(f"{name} must be > 0, got {value!r}")


def check_nonnegative(name: str, value) -> None:
  """Raises ValueError if ``value`` is concrete and negative somewhere."""
  if is_concrete(value):
    arr = np.asarray(value)
    if arr.size and not np.all(arr >= 0):
      raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_broadcast(**arrays) -> tuple[int, ...]:
  """Returns the broadcast shape of the named arrays or raises ValueError naming them.

  A complex array raises :class:`ArgumentTypeError` naming it (:func:`check_not_complex`).
  """
  for k, v in arrays.items():
    check_not_complex(k, v)
  shapes = {k: np.shape(v) for k, v in arrays.items()}
  try:
    return np.broadcast_shapes(*shapes.values())
  except ValueError:
    desc = ", ".join(f"{k} with shape {s}" for k, s in shapes.items())
    raise ValueError(f"shapes do not broadcast: {desc}") from None


def normalize_axis(name: str, axis: int, ndim: int) -> int:
  """Returns ``axis`` as a non-negative index into an array of rank ``ndim``."""
  if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
    raise ArgumentTypeError(f"axis must be an int, got {type(axis).__name__} {axis!r}")
  if not -ndim <= axis < ndim:
    raise ValueError(f"axis={axis} is out of range for {name} of rank {ndim}")
  return int(axis) % ndim


def check_num_samples(name: str, x, axis: int) -> int:
  """Checks that ``x`` is a real array (:func:`check_numeric`: not complex, bool or text) with at
  least one importance sample on ``axis``; returns the axis."""
  check_numeric(name, x)
  axis = normalize_axis(name, axis, np.ndim(x))
  k = np.shape(x)[axis]
  if k < 1:
    raise ValueError(
        f"{name} must hold at least one importance sample (K >= 1) on axis {axis}, "
        f"got shape {np.shape(x)}")
  return axis


def event_axes(name: str, x, event_ndims: int) -> tuple[int, ...]:
  """The trailing ``event_ndims`` axes of ``x`` (checked to exist; ``x`` checked not complex)."""
  check_not_complex(name, x)
  event_ndims = check_int("event_ndims", event_ndims, minimum=0)
  if event_ndims > np.ndim(x):
    raise ValueError(
        f"event_ndims={event_ndims} exceeds the rank of {name} (shape {np.shape(x)})")
  return tuple(range(np.ndim(x) - event_ndims, np.ndim(x)))


def broadcast(**arrays):
  """Broadcasts the named arrays explicitly to their common shape (a clear error if they can't).

  Explicit broadcasting keeps the library usable under ``jax_numpy_rank_promotion='raise'``.
  """
  import jax.numpy as jnp
  shape = check_broadcast(**arrays)
  return tuple(jnp.broadcast_to(jnp.asarray(a), shape) for a in arrays.values())


# ----------------------------------------------------------------------------- types and values


class ArgumentTypeError(TypeError, ValueError):
  """An argument of the wrong type (a bool or a float where an int is needed, a float array of
  class indices, ...).

  A :class:`TypeError`, and also a :class:`ValueError`, so that code written to catch the
  ``ValueError`` of a bad argument keeps catching it.
  """


def check_int(name: str, value, *, minimum: int | None = None) -> int:
  """A static integer argument as a Python ``int``.

  Accepts Python ints, NumPy integers and 0-d concrete integer arrays. Rejects bools, floats
  (also integral ones such as ``2.0``), strings and traced values with :class:`ArgumentTypeError`,
  and values below ``minimum`` with ``ValueError``; both messages name the argument.
  """
  if isinstance(value, jax.core.Tracer):
    raise ArgumentTypeError(
        f"{name} must be a static Python int, got a traced value ({value.aval}); pass it as a "
        "static argument (e.g. static_argnames) or close over it")
  if isinstance(value, (bool, np.bool_)):
    raise ArgumentTypeError(f"{name} must be an int, got the bool {value!r}")
  if isinstance(value, (int, np.integer)):
    v = int(value)
  elif (isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0
        and np.issubdtype(value.dtype, np.integer)):
    v = int(value)
  else:
    raise ArgumentTypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
  if minimum is not None and v < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {v}")
  return v


def check_bool(name: str, value) -> bool:
  """A static flag as a Python ``bool`` (``True``/``False`` or a NumPy bool), else a TypeError."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  raise ArgumentTypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _host(value) -> np.ndarray:
  """A concrete value as a NumPy array (floating values as float64 for exact comparisons)."""
  arr = np.asarray(value)
  if np.issubdtype(arr.dtype, np.floating) or arr.dtype.kind == "V" or str(arr.dtype) in (
      "bfloat16", "float8_e4m3fn", "float8_e5m2"):
    arr = arr.astype(np.float64)
  return arr


def _first_bad(shown: np.ndarray, bad: np.ndarray) -> str:
  idx = tuple(int(i) for i in np.argwhere(bad)[0])
  first = shown[idx]
  first = first.item() if hasattr(first, "item") else first
  return (f"{int(np.count_nonzero(bad))} of {shown.size} value(s) are not, the first "
          f"{first!r} at index {idx} (shape {shown.shape})")


def check_finite(name: str, value, what: str = "") -> None:
  """Raises ValueError if ``value`` is concrete and holds NaN or infinite entries.

  Traced values pass unchecked (the caller documents what happens to them). A complex ``value``
  raises :class:`ArgumentTypeError` (also when traced).
  """
  check_not_complex(name, value)
  if not is_concrete(value):
    return
  arr = _host(value)
  if not np.issubdtype(arr.dtype, np.inexact):
    return
  for kind, bad in (("NaN", np.isnan(arr)), ("infinite", np.isinf(arr))):
    n = int(np.count_nonzero(bad))
    if n:
      first = tuple(int(i) for i in np.argwhere(bad)[0])
      raise ValueError(f"{name} contains {n} {kind} value(s), the first at index {first} "
                       f"(shape {arr.shape}){'; ' + what if what else ''}")


def check_values(name: str, value, ok, expected: str) -> None:
  """Raises ValueError if ``value`` is concrete and ``ok(array)`` is False somewhere.

  Args:
    name: the argument's name, used in the message.
    value: the argument.
    ok: a function of a NumPy array (floating values in float64) returning a boolean mask of the
      valid entries (NaN must map to False).
    expected: what the entries must be, e.g. ``"in {0, 1}"``.
  """
  check_numeric(name, value)
  if not is_concrete(value):
    return
  arr = _host(value)
  good = np.broadcast_to(np.asarray(ok(arr), bool), arr.shape)
  if not np.all(good):
    raise ValueError(f"{name} must be {expected}: {_first_bad(np.asarray(value), ~good)}")


def _dtype_of(value) -> np.dtype:
  """The dtype of an array, a Python number or a nested sequence (``object`` if there is none)."""
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    try:
      dtype = np.asarray(value).dtype
    except Exception:  # pylint: disable=broad-except
      dtype = np.dtype(object)
  return dtype


def check_not_complex(name: str, value) -> None:
  """Raises :class:`ArgumentTypeError` naming ``name`` if ``value`` is complex.

  The core computes real log-densities, bounds and draws: a complex array would flow through
  (``exp``, ``log`` and ``softmax`` all accept one) and come back as a complex "log-probability".
  Dtypes are static, so this also runs on traced values (at trace time, at no cost).
  """
  if isinstance(value, complex) or jax.numpy.issubdtype(_dtype_of(value),
                                                        jax.numpy.complexfloating):
    raise ArgumentTypeError(
        f"{name} must be real, got a complex value (dtype {_dtype_of(value)}): the library's "
        "densities, bounds and samplers are defined for real arrays; pass jnp.real(...) or "
        "jnp.abs(...) explicitly if that is what is meant")


def check_numeric(name: str, value) -> None:
  """Raises :class:`ArgumentTypeError` unless ``value`` is a real number or a real numeric array
  (a string, bool, object or complex value is refused, naming the argument). Dtypes are static:
  also runs on traced values."""
  if isinstance(value, (str, bytes, bool, np.bool_)):
    raise ArgumentTypeError(f"{name} must be a number or a numeric array, got "
                            f"{type(value).__name__} {value!r}")
  check_not_complex(name, value)
  dtype = _dtype_of(value)
  if not (jax.numpy.issubdtype(dtype, jax.numpy.number) and dtype != np.bool_):
    raise ArgumentTypeError(f"{name} must be a number or a numeric array, got dtype {dtype}")


def check_dtype(name: str, value, kind: str) -> None:
  """Raises :class:`ArgumentTypeError` unless ``value``'s dtype is of ``kind``.

  ``kind`` is ``"integer"`` (bool excluded) or ``"floating"``. Dtypes are static, so this also
  runs on traced values.
  """
  dtype = _dtype_of(value)
  if kind == "integer":
    good = np.issubdtype(dtype, np.integer) and dtype != np.bool_
  elif kind == "floating":
    good = jax.numpy.issubdtype(dtype, jax.numpy.floating)
  else:
    raise ValueError(f"unknown dtype kind {kind!r}")
  if not good:
    article = "an" if kind == "integer" else "a"
    raise ArgumentTypeError(f"{name} must have {article} {kind} dtype, got {dtype}")


def nan_unless(valid, value):
  """``value`` where ``valid``, NaN elsewhere (the traced form of a failed check).

  One elementwise select that XLA fuses into its producer; on-support values and their gradients
  are unchanged.
  """
  import jax.numpy as jnp
  value = jnp.asarray(value)
  return jnp.where(valid, value, jnp.asarray(jnp.nan, value.dtype))


def is_key(x) -> bool:
  """True for a PRNG key: a typed key array from ``jax.random.key``, or a raw ``uint32`` key of
  shape ``[..., 2]`` (dtypes and shapes are static, so traced keys are recognised too)."""
  dtype, shape = getattr(x, "dtype", None), getattr(x, "shape", None)
  if dtype is None or shape is None:
    return False
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    return True
  return np.dtype(dtype) == np.uint32 and tuple(shape)[-1:] == (2,)


def check_key(name: str, key):
  """``key`` if it is a PRNG key (:func:`is_key`), else :class:`ArgumentTypeError` naming the
  argument. Also runs on traced keys."""
  if is_key(key):
    return key
  shown = repr(key)
  shown = shown if len(shown) <= 60 else shown[:57] + "..."
  raise ArgumentTypeError(f"{name} must be a PRNG key (jax.random.key(seed)), got "
                          f"{type(key).__name__} {shown}")


def check_seed(name: str, value) -> int:
  """A seed as a Python ``int >= 0`` (NumPy integers accepted; bools, floats, ``None`` and
  negative values raise, naming the argument)."""
  if value is None:
    raise ArgumentTypeError(f"{name} must be an int >= 0, got None")
  return check_int(name, value, minimum=0)


def check_real(name: str, value, *, minimum: float | None = None, maximum: float | None = None,
               strict_minimum: bool = False) -> float:
  """A static real setting as a finite Python ``float`` in range, else an error naming it.

  Accepts Python and NumPy ints and floats and 0-d concrete real arrays; rejects bools, strings,
  NaN and infinities.
  """
  if isinstance(value, jax.core.Tracer):
    raise ArgumentTypeError(f"{name} must be a static number, got a traced value ({value.aval})")
  ok = (isinstance(value, (int, float, np.integer, np.floating))
        or (isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0
            and np.issubdtype(value.dtype, np.number)))
  if not ok or isinstance(value, (bool, np.bool_)):
    raise ArgumentTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
  v = float(value)
  below = minimum is not None and (v <= minimum if strict_minimum else v < minimum)
  if not np.isfinite(v) or below or (maximum is not None and v > maximum):
    lo = "" if minimum is None else f"{'>' if strict_minimum else '>='} {minimum:g}"
    hi = "" if maximum is None else f"<= {maximum:g}"
    rng = " and ".join(r for r in (lo, hi) if r)
    raise ValueError(f"{name} must be a finite number{' ' + rng if rng else ''}, got {value!r}")
  return v


# ----------------------------------------------------------------------------- sampler parameters

#: What an integer draw (a class index, a Bernoulli draw of an integer dtype) is, under ``jit``,
#: when its parameters are invalid: an index no distribution has, so that the log-probability of
#: it is NaN (:func:`dgmjax.distributions.categorical_log_prob` gives NaN for a traced index
#: outside ``[0, C)``) and a concrete one raises. Floating draws are NaN instead.
INVALID_DRAW = -1


def check_logits(name: str, logits, axis: int) -> None:
  """Raises ValueError if concrete categorical ``logits`` are not a distribution on ``axis``.

  Valid logits have no NaN and no ``+inf`` (``softmax`` of either is NaN) and at least one entry
  above ``-inf`` on ``axis`` (all ``-inf`` leaves no class to draw). ``-inf`` entries are valid:
  they mask classes. Traced logits pass (see :func:`logits_valid`).
  """
  if not is_concrete(logits):
    return
  arr = _host(logits)
  if not np.issubdtype(arr.dtype, np.floating):
    return
  bad = ~(arr < np.inf)                      # NaN or +inf
  if np.any(bad):
    raise ValueError(f"{name} must be < +inf and not NaN: {_first_bad(np.asarray(logits), bad)}")
  if arr.size:
    dead = np.all(arr == -np.inf, axis=axis)
    if np.any(dead):
      idx = tuple(int(i) for i in np.argwhere(np.atleast_1d(dead))[0])
      raise ValueError(
          f"{name} must have at least one entry above -inf on axis {axis} (a class with non-zero "
          f"probability): {int(np.count_nonzero(dead))} of {dead.size} distribution(s) have "
          f"none, the first at index {idx} of the other axes (shape {arr.shape})")


def logits_valid(logits, axis: int):
  """The traced form of :func:`check_logits`: True for each distribution on ``axis`` that has no
  NaN or ``+inf`` and an entry above ``-inf`` (a boolean array, ``logits`` less ``axis``)."""
  import jax.numpy as jnp
  return jnp.all(logits < jnp.inf, axis=axis) & jnp.any(logits > -jnp.inf, axis=axis)


def check_scalar(name: str, value) -> None:
  """Raises ValueError naming ``name`` unless ``value`` is a scalar (a number or a 0-d array)."""
  if np.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar (shape ()), got shape {np.shape(value)}")

