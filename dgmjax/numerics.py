"""Numerics shared by the evaluators, diagnostics and inference: one streaming log-mean-exp,
matmul precision, memory budgets.

* :func:`streaming_logsumexp` / :func:`streaming_log_mean_exp`: ``log (1/N) sum_i exp(v_i)`` over
  values computed chunk by chunk (a ``lax.scan`` of ``logaddexp``), so peak memory holds one chunk
  whatever ``N``. The k=5000 evaluation, the aggregate posterior of ELBO surgery and the
  importance-sampled ``log p(x)`` of the amortization gaps all reduce through it.
* :func:`matmul_precision`: a trace-time context that runs every matmul and convolution in
  bfloat16, TF32 or true float32 (emulated on CPU), everything else in its own dtype.
* :func:`memory_budget` (with the host probes :func:`host_available_bytes` and
  :func:`cpu_cache_bytes`): how much memory one chunk of a streamed computation may use.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from dgmjax import _checks

__all__ = [
    "MATMUL_PRECISIONS", "check_matmul_precision", "cpu_cache_bytes", "host_available_bytes",
    "matmul_precision", "memory_budget", "streaming_log_mean_exp", "streaming_logsumexp",
]

Array = jax.Array

#: ``matmul_precision`` names: mantissa bits kept in the matmul inputs (float32 has 23).
MATMUL_PRECISIONS = {"float32": 23, "tensorfloat32": 10, "bfloat16": 7}


# ----------------------------------------------------------------------------- matmul precision


def check_matmul_precision(name):
  """Raises ``ValueError`` unless ``name`` is ``None`` or a key of :data:`MATMUL_PRECISIONS`."""
  if name is not None and name not in MATMUL_PRECISIONS:
    raise ValueError(f"matmul_precision must be None or one of {sorted(MATMUL_PRECISIONS)}, got "
                     f"{name!r}")


#: The primitives :func:`matmul_precision` rounds: every matmul (``jnp.dot``, ``@``, ``einsum``,
#: ``nn.Dense``, ``nn.DenseGeneral``, attention) binds ``dot_general``; every convolution
#: (``nn.Conv``, ``nn.ConvTranspose``, ``lax.conv*``) binds ``conv_general_dilated``.
_MATMUL_PRIMITIVES = (lax.dot_general_p, lax.conv_general_dilated_p)
_ACTIVE_PRECISION: list = []   # the stack of (name, emulate) of the open contexts


def _rounded_bind(original_bind):
  """A primitive's ``bind`` that applies the innermost open :func:`matmul_precision` to its two
  floating operands (the output dtype is unchanged)."""

  def bind(*args, **params):
    if not _ACTIVE_PRECISION or len(args) != 2:
      return original_bind(*args, **params)
    if not all(jnp.issubdtype(jnp.result_type(a), jnp.floating) for a in args):
      return original_bind(*args, **params)  # integer or complex products are left alone
    name, emulate = _ACTIVE_PRECISION[-1]
    bits = MATMUL_PRECISIONS[name]
    out = params.get("preferred_element_type") or jnp.result_type(*args)
    params = dict(params, preferred_element_type=jnp.dtype(out))
    if emulate:
      def rnd(a):  # round in the operand's own dtype (a no-op where it is already as narrow)
        if jnp.finfo(jnp.result_type(a)).nmant <= bits:
          return a
        return lax.reduce_precision(a, exponent_bits=8, mantissa_bits=bits)
      args = tuple(rnd(a) for a in args)
      prec = lax.Precision.HIGHEST
    elif name == "bfloat16":
      args = tuple(a.astype(jnp.bfloat16) for a in args)
      prec = lax.Precision.DEFAULT
    else:
      prec = lax.Precision.HIGH if name == "tensorfloat32" else lax.Precision.HIGHEST
    return original_bind(*args, **dict(params, precision=(prec, prec)))

  return bind


@contextlib.contextmanager
def _intercept_matmuls(name: str, emulate: bool):
  """Routes every ``dot_general`` / ``conv_general_dilated`` bound while open through
  :func:`_rounded_bind` (the primitives' ``bind`` is replaced for the duration; nested contexts
  stack, the innermost wins)."""
  installed = []
  if not _ACTIVE_PRECISION:
    for prim in _MATMUL_PRIMITIVES:
      installed.append((prim, prim.__dict__.get("bind")))
      prim.bind = _rounded_bind(prim.bind)
  _ACTIVE_PRECISION.append((name, emulate))
  try:
    yield
  finally:
    _ACTIVE_PRECISION.pop()
    for prim, previous in installed:
      if previous is None:
        del prim.bind
      else:
        prim.bind = previous


@contextlib.contextmanager
def matmul_precision(name: str | None, *, emulate: bool | None = None):
  """Trace-time context: every matmul and convolution multiplies in ``name`` precision.

  Inside the context (while a function is traced, or run eagerly), every ``lax.dot_general`` and
  ``lax.conv_general_dilated`` (so ``jnp.dot``, ``@``, ``einsum``, ``nn.Dense``, ``nn.Conv``,
  ``nn.ConvTranspose``, a user's own matmuls) computes ``y = dot(round(x), round(W))`` where
  ``round`` keeps ``MATMUL_PRECISIONS[name]`` mantissa bits (bfloat16: 7, TF32: 10, float32:
  23), the products are accumulated in the product's own output dtype (float32 for a float32
  model; the rounding does not change it), and everything else (biases, activations,
  log-densities, pixel sums, the log-sum-exp over samples) keeps its dtype. That is what bfloat16
  or TF32 tensor-core matmuls compute, so the NLL shift of a low-precision evaluation can be
  measured on any backend.

  * ``emulate=False`` (default on GPU/TPU): native low-precision matmuls, ``bfloat16``: inputs cast
    to bfloat16, ``preferred_element_type`` the output dtype of the unrounded product;
    ``tensorfloat32``: ``precision=lax.Precision.HIGH``; ``float32``: ``lax.Precision.HIGHEST``
    (true float32, which JAX's default on GPU is not).
  * ``emulate=True`` (default on CPU, whose XLA dots ignore precision settings): the operands are
    rounded with ``lax.reduce_precision`` and multiplied in float32: the numerics of the
    low-precision matmul at float32 speed.

  The rounding is applied where the primitives are bound, so it covers every matmul and
  convolution traced inside the context, nested ``jit``, ``scan`` and ``vmap`` bodies included
  (``jax_default_matmul_precision`` is also set to ``name``, which keeps the compiled functions
  traced inside the context apart from those traced outside). Integer and complex products are
  left alone. The context is process-wide while open: do not trace other functions in other
  threads meanwhile.

  Args:
    name: ``None`` (no change), ``'float32'``, ``'tensorfloat32'`` or ``'bfloat16'``.
    emulate: round-and-multiply-in-float32 instead of native low-precision matmuls; default: on
      CPU only.

  Yields:
    Nothing; trace (``jax.jit`` lowers) the function inside the context.

  References:
    Kalamkar et al., A Study of BFLOAT16 for Deep Learning Training, 2019; NVIDIA, TensorFloat-32
    in the A100 GPU, 2020.
  """
  check_matmul_precision(name)
  if name is None:
    yield
    return
  if emulate is None:
    emulate = jax.default_backend() == "cpu"
  with jax.default_matmul_precision(name), _intercept_matmuls(name, bool(emulate)):
    yield




# ----------------------------------------------------------------------------- streaming log-mean-exp


def _lse(values: Array, axis: int) -> Array:
  """``logsumexp`` over ``axis`` in at least float32, whatever the values' dtype."""
  return jax.nn.logsumexp(values.astype(jnp.promote_types(values.dtype, jnp.float32)), axis=axis)


def streaming_logsumexp(fn: Callable[[Any], Array], chunks: Any, *, axis: int = 0,
                        last: Any = None) -> Array:
  """``log sum_i exp(v_i)`` over values computed chunk by chunk, one chunk in memory at a time.

  ``fn(chunk)`` gives the values of one chunk, reduced over ``axis``; ``chunks`` is a pytree whose
  leaves stack ``C`` chunk inputs on axis 0 (e.g. PRNG keys ``[C, c]``). The first chunk is
  evaluated outside the ``lax.scan`` over the others, so XLA can merge the work that does not
  depend on the chunk (an encoder pass) with the loop body's and hoist it out of the loop. An
  optional ``last`` chunk input of another size (a remainder) is added after the scan. The sums
  are in at least float32.

  .. math:: a_1 = \\operatorname{LSE}(v_{c_1}), \\quad a_{j} = \\operatorname{logaddexp}(a_{j-1}, \\operatorname{LSE}(v_{c_j}))

  Args:
    fn: ``chunk input -> values`` (``-inf`` for values to leave out, e.g. padding).
    chunks: chunk inputs stacked on axis 0 (``C >= 1``).
    axis: the axis of ``fn``'s output summed over.
    last: an extra chunk input, not stacked (``None``: none).

  Returns:
    The log-sum-exp over every value: ``fn``'s output without ``axis``.
  """
  num_chunks = jax.tree.leaves(chunks)[0].shape[0]
  acc = _lse(fn(jax.tree.map(lambda a: a[0], chunks)), axis)
  if num_chunks > 1:

    def body(a, chunk):
      return jnp.logaddexp(a, _lse(fn(chunk), axis)), None

    acc, _ = lax.scan(body, acc, jax.tree.map(lambda a: a[1:], chunks))
  if last is not None:
    acc = jnp.logaddexp(acc, _lse(fn(last), axis))
  return acc


def streaming_log_mean_exp(fn: Callable[[Any], Array], chunks: Any, count, *, axis: int = 0,
                           last: Any = None) -> Array:
  """``log (1/N) sum_i exp(v_i)`` over values computed chunk by chunk (:func:`streaming_logsumexp`).

  .. math:: \\log \\frac1N \\sum_{i=1}^N e^{v_i}

  Args:
    fn: ``chunk input -> values``, as in :func:`streaming_logsumexp`.
    chunks: chunk inputs stacked on axis 0.
    count: ``N``, the number of values averaged (an int, or a traced count, e.g. of the values not
      masked to ``-inf``).
    axis: the axis of ``fn``'s output averaged over.
    last: an extra chunk input, not stacked.

  Returns:
    The log-mean-exp: ``fn``'s output without ``axis``.
  """
  acc = streaming_logsumexp(fn, chunks, axis=axis, last=last)
  if isinstance(count, int):
    return acc - math.log(count)
  return acc - jnp.log(jnp.asarray(count).astype(acc.dtype))


# ----------------------------------------------------------------------------- memory budget


def cpu_cache_bytes() -> int | None:
  """Size of the last-level CPU cache (Linux sysfs or ``sysconf``), or None if unknown."""
  best = 0
  base = "/sys/devices/system/cpu/cpu0/cache"
  try:
    for d in os.listdir(base):
      try:
        with open(os.path.join(base, d, "size")) as f:
          txt = f.read().strip().upper()
      except OSError:
        continue
      mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(txt[-1:], 1)
      num = txt[:-1] if txt[-1:] in "KMG" else txt
      best = max(best, int(num) * mult)
  except (OSError, ValueError):
    pass
  if not best:
    try:
      best = int(os.sysconf("SC_LEVEL3_CACHE_SIZE") or 0)
    except (ValueError, OSError, AttributeError):
      best = 0
  return best or None


def host_available_bytes() -> int | None:
  """The host's available memory (``MemAvailable`` of ``/proc/meminfo``, else ``sysconf``), or
  None if unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
  except (ValueError, OSError, AttributeError):
    return None


def memory_budget(device=None, *, fraction: float = 0.25) -> dict:
  """The working-set budget of one chunk of the k=5000 estimator, and where it comes from.

  The rule:

  * accelerators: ``fraction`` of the free device memory, ``bytes_limit - bytes_in_use`` from
    ``device.memory_stats()``;
  * CPU: the smaller of ``fraction`` of the host's available memory (``MemAvailable``) and an
    eighth of the last-level cache. On CPU each matmul's output is streamed through elementwise
    passes (tanh, the Bernoulli term) that run at cache speed only while the chunk stays
    cache-resident. On the 2-core EPYC of ``benchmarks/bench.py`` (32 MiB L3) Burda's 1-layer
    model evaluates at the same speed (within 10%) from 1,000 to 8,000 rows (``batch * chunk``)
    and 4-5x slower at 50,000 rows; an eighth of the L3 (4 MiB) at XLA's 1.2 KiB per row gives
    about 3,300 rows, the middle of that plateau, while RAM would allow far more.

  Args:
    device: a ``jax.Device`` (default: the first device).
    fraction: share of the free memory one chunk may use.

  Returns:
    ``{"bytes": int, "source": str}``.
  """
  fraction = _checks.check_real("fraction", fraction, minimum=0.0, maximum=1.0,
                                strict_minimum=True)
  device = device or jax.devices()[0]
  stats = None
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without memory stats)
    stats = None
  if stats and stats.get("bytes_limit"):
    free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return {"bytes": max(int(fraction * free), 1 << 20),
            "source": f"{fraction:g} x free device memory ({free / 2**30:.2f} GiB)"}
  avail = host_available_bytes() or (4 << 30)
  budget, source = int(fraction * avail), f"{fraction:g} x MemAvailable ({avail / 2**30:.2f} GiB)"
  cache = cpu_cache_bytes() if device.platform == "cpu" else None
  if cache and cache // 8 < budget:
    budget, source = cache // 8, f"1/8 of the last-level cache ({cache / 2**20:.0f} MiB)"
  return {"bytes": max(budget, 1 << 18), "source": source}
