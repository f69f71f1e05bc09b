"""Evaluation: the importance-sampled test log-likelihood (k=5000), bounds, active units, figures.

Burda et al. report ``log p(x) ~ L_5000``. Here the 5000 samples are drawn in chunks and combined
with a streaming log-sum-exp, and the images are processed in fixed-size batches (the last one
padded), so peak memory is set by ``batch_size * sample_chunk`` whatever ``K`` and the test-set
size, and the jitted function is compiled once (and cached across calls).

Every evaluator takes a model of the contract (:mod:`dgmjax.models.base`): a library model or
your own. The estimator draws one importance sample per key
(:func:`dgmjax.models.log_weights_from_keys`): sample ``k`` depends on ``keys[k]`` only, so the
chunked estimate equals the unchunked ``iwae_bound(models.log_weights(model, params, x, key, K))``.

Near the roofline (``benchmarks/bench.py`` measures it):

* **Encoder once per image.** The first chunk is evaluated outside the ``lax.scan`` over the other
  chunks; XLA merges the two identical encoder computations (CSE) and hoists them out of the loop
  (loop-invariant code motion), so the deterministic encoder of a model (for
  :class:`~dgmjax.models.vae.VAE`, that of ``q(h_1|x)``) runs once per image for all ``K`` samples; only the layers that must see each sample
  run per sample. ``tests/test_evaluation.py`` checks this on the compiled program.
* **Cheap, stable Bernoulli term.** :func:`dgmjax.distributions.bernoulli_log_prob` is
  ``x l - max(l, 0) - log1p(exp(-|l|))``, one fused elementwise loop over the ``[c, B, D]`` logits.
* **Chunk size from available memory** (``sample_chunk="auto"``, :func:`auto_sample_chunk`).
* **Low-precision matmuls, float32 reductions** (``matmul_precision``, :func:`matmul_precision`):
  matmul inputs in bfloat16 or TF32, products accumulated in float32, and every elementwise op,
  pixel sum and log-sum-exp in float32 (at least).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import _checks, objectives
from dgmjax.models import base as models_base

__all__ = [
    "MATMUL_PRECISIONS", "active_units", "auto_sample_chunk", "bounds", "log_likelihood",
    "matmul_precision", "memory_budget", "streaming_iwae_bound", "write_sample_figures",
]

Array = jax.Array
LogWeightsFromKeys = Callable[[object, Array, Array], Array]

#: ``matmul_precision`` names: mantissa bits kept in the matmul inputs (float32 has 23).
MATMUL_PRECISIONS = {"float32": 23, "tensorfloat32": 10, "bfloat16": 7}


# ----------------------------------------------------------------------------- compiled cache


_JIT_CACHE: "collections.OrderedDict" = collections.OrderedDict()
_JIT_CACHE_SIZE = 64


def _cached(key, build: Callable):
  """``build()`` memoised on ``key`` (LRU); unhashable keys (e.g. a closure over an unhashable
  model) are built afresh each time, as before caching existed."""
  try:
    hash(key)
  except TypeError:
    return build()
  if key in _JIT_CACHE:
    _JIT_CACHE.move_to_end(key)
    return _JIT_CACHE[key]
  fn = _JIT_CACHE[key] = build()
  if len(_JIT_CACHE) > _JIT_CACHE_SIZE:
    _JIT_CACHE.popitem(last=False)
  return fn


# ----------------------------------------------------------------------------- matmul precision


def _check_precision(name):
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
  _check_precision(name)
  if name is None:
    yield
    return
  if emulate is None:
    emulate = jax.default_backend() == "cpu"
  with jax.default_matmul_precision(name), _intercept_matmuls(name, bool(emulate)):
    yield


# ----------------------------------------------------------------------------- the estimator


def _lse0(lw: Array) -> Array:
  """``logsumexp`` over samples (axis 0) in at least float32, whatever the log-weights' dtype."""
  return jax.nn.logsumexp(lw.astype(jnp.promote_types(lw.dtype, jnp.float32)), axis=0)


def streaming_iwae_bound(model, params, x: Array, keys: Array, sample_chunk: int) -> Array:
  """``L_K`` for one batch, accumulating ``logsumexp`` over chunks of ``sample_chunk`` samples.

  .. math:: \\mathcal{L}_K = \\log \\sum_{c} \\sum_{k \\in c} w_k - \\log K, \\quad \\text{accumulated as } a \\leftarrow \\operatorname{logaddexp}(a, \\operatorname{LSE}_{k \\in c} \\log w_k)

  Jittable; ``sample_chunk`` is static. Peak memory holds one chunk of ``[sample_chunk, B]``
  log-weights and its activations. The accumulation is in float32 (float64 under x64) even if the
  log-weights are bfloat16.

  Args:
    model: a model of the contract.
    params: model parameters.
    x: ``[B, ...]`` one batch of images; concrete ones are checked against the model's support
      (:func:`dgmjax.models.base.check_data`), traced ones are not (the likelihood gives NaN off
      its support).
    keys: ``[K]`` PRNG keys, one per importance sample.
    sample_chunk: samples evaluated at once.

  Returns:
    ``[B]``: equal (up to float rounding) to
    ``iwae_bound(models.log_weights_from_keys(model, params, x, keys))``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  sample_chunk = _checks.check_int("sample_chunk", sample_chunk, minimum=1)
  models_base.check_data(model, x, "x")  # concrete x only: a traced one passes (NaN off support)
  num_samples = keys.shape[0]
  chunk = min(sample_chunk, num_samples)
  num_chunks, rem = divmod(num_samples, chunk)
  batch = models_base._batch_size(x)  # pylint: disable=protected-access
  log_weights_from_keys = _FromKeys(model)

  def lse(k):
    lw = log_weights_from_keys(params, x, k)
    return _lse0(models_base.check_log_weights(lw, k.shape[0], batch))

  # The first chunk outside the scan: XLA merges its encoder pass with the loop body's and hoists
  # it out of the loop, so the per-image work runs once (see the module docstring).
  acc = lse(keys[:chunk])
  if num_chunks > 1:
    rest = keys[chunk:num_chunks * chunk].reshape(num_chunks - 1, chunk)

    def body(a, k):
      return jnp.logaddexp(a, lse(k)), None

    acc, _ = lax.scan(body, acc, rest)
  if rem:
    acc = jnp.logaddexp(acc, lse(keys[num_chunks * chunk:]))
  return acc - math.log(num_samples)


# ----------------------------------------------------------------------------- chunk size


def _cpu_cache_bytes() -> int | None:
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


def _host_available_bytes() -> int | None:
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
  avail = _host_available_bytes() or (4 << 30)
  budget, source = int(fraction * avail), f"{fraction:g} x MemAvailable ({avail / 2**30:.2f} GiB)"
  cache = _cpu_cache_bytes() if device.platform == "cpu" else None
  if cache and cache // 8 < budget:
    budget, source = cache // 8, f"1/8 of the last-level cache ({cache / 2**20:.0f} MiB)"
  return {"bytes": max(budget, 1 << 18), "source": source}


def _bytes_per_sample(log_weights_from_keys: LogWeightsFromKeys, params, x, probe: int,
                      precision) -> float:
  """Working set of one importance sample for the batch ``x``: XLA's temporary + output bytes of
  ``log_weights_from_keys`` at ``probe`` samples, divided by ``probe``."""

  def fn(p, xx, keys):
    with matmul_precision(precision):
      return log_weights_from_keys(p, xx, keys)

  def measure():
    keys = jax.random.split(jax.random.key(0), probe)  # compiled, never run: values irrelevant
    try:
      mem = jax.jit(fn).lower(params, x, keys).compile().memory_analysis()
      total = int(mem.temp_size_in_bytes) + int(mem.output_size_in_bytes)
    except Exception:  # pylint: disable=broad-except  (no memory analysis on this backend)
      total = 0
    if total <= 0:  # fall back to the sizes of every intermediate value (an upper bound)
      jaxpr = jax.make_jaxpr(fn)(params, x, keys)
      total = sum(int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize
                  for eqn in jaxpr.eqns for v in eqn.outvars if hasattr(v.aval, "shape"))
    return max(total / probe, 1.0)

  leaves, tree = jax.tree.flatten(params)
  shapes = tuple((np.shape(a), str(getattr(a, "dtype", np.asarray(a).dtype))) for a in leaves)
  x = jnp.asarray(x)
  return _cached(("bytes_per_sample", log_weights_from_keys, tree, shapes, x.shape, str(x.dtype),
                  probe, precision), measure)


def auto_sample_chunk(model, params, x, *,
                      num_samples: int = 5000, budget_bytes: int | None = None,
                      matmul_precision_name: str | None = None, probe: int = 16) -> int:
  """The number of importance samples per chunk that fits the memory budget.

  .. math:: c = \\min\\big(K, \\max(1, \\lfloor \\text{budget} / \\text{bytes per sample} \\rfloor)\\big), \\text{ then } c \\leftarrow \\lceil K / \\lceil K / c \\rceil \\rceil

  The bytes per sample (for the whole batch ``x``) come from XLA's memory analysis of the
  compiled log-weights at ``probe`` samples; the budget from :func:`memory_budget`. The last step
  spreads ``K`` evenly over the chunks so that the final chunk is not a small remainder.

  Args:
    model: a model of the contract.
    params: model parameters.
    x: ``[B, ...]`` one batch (its size sets the bytes per sample).
    num_samples: ``K``.
    budget_bytes: the budget; default :func:`memory_budget`.
    matmul_precision_name: see :func:`matmul_precision`.
    probe: samples compiled to measure the bytes per sample.

  Returns:
    ``sample_chunk``, an int in ``[1, K]``.
  """
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  probe = _checks.check_int("probe", probe, minimum=1)
  if budget_bytes is None:
    budget_bytes = memory_budget()["bytes"]
  budget_bytes = _checks.check_real("budget_bytes", budget_bytes, minimum=0.0,
                                    strict_minimum=True)
  per_sample = _bytes_per_sample(_FromKeys(model), params, x, probe, matmul_precision_name)
  chunk = int(min(num_samples, max(1, budget_bytes // per_sample)))
  num_chunks = -(-num_samples // chunk)
  return -(-num_samples // num_chunks)


def _batches(images: np.ndarray, batch_size: int):
  """Yields ``(index, batch padded to batch_size, true size)``; one compiled shape for all."""
  n = images.shape[0]
  for b, start in enumerate(range(0, n, batch_size)):
    x = images[start:start + batch_size]
    m = x.shape[0]
    if m < batch_size:
      x = np.concatenate([x, np.repeat(x[-1:], batch_size - m, 0)], 0)
    yield b, x, m


def _check_eval_images(images, name: str = "images") -> np.ndarray:
  images = np.asarray(images)
  if images.ndim < 2 or images.shape[0] == 0:
    raise ValueError(f"{name} is empty or has no example axis: shape {images.shape}")
  images = images.astype(np.float32, copy=False)
  if not np.all(np.isfinite(images)):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  return images


@dataclasses.dataclass(frozen=True)
class _FromKeys:
  """``(params, x, keys) -> [K, B]`` of a model, hashable (equal for equal models), so the jitted
  evaluators are cached per model."""
  model: object

  def __call__(self, params, x, keys):
    return models_base.log_weights_from_keys(self.model, params, x, keys)


def _streaming_fn(model, num_samples: int, sample_chunk: int, precision, emulate):
  """The jitted per-batch estimator, cached so that repeated evaluations compile once."""

  def build():
    @jax.jit
    def fn(p, x, k):
      with matmul_precision(precision, emulate=emulate):
        return streaming_iwae_bound(model, p, x, jax.random.split(k, num_samples), sample_chunk)
    return fn

  return _cached(("streaming", _FromKeys(model), num_samples, sample_chunk, precision,
                  emulate), build)


def log_likelihood(model, params, images, key: Array, *,
                   num_samples: int = 5000, sample_chunk: int | str = "auto",
                   batch_size: int = 100, progress: bool = False,
                   matmul_precision: str | None = None, emulate_precision: bool | None = None,
                   memory_budget_bytes: int | None = None) -> np.ndarray:
  """Per-example importance-sampled estimate of ``log p(x)``: the bound ``L_K`` with ``K = 5000``.

  .. math:: \\log p(x) \\approx \\mathcal{L}_K = \\log \\frac1K \\sum_{k=1}^K \\frac{p(x, z_k)}{q(z_k|x)}, \\quad z_k \\sim q(z|x)

  Peak memory is one batch's chunk of activations (``batch_size * sample_chunk`` rows), whatever
  ``K`` and the number of images: batches are evaluated one at a time by one compiled function and
  only their ``[B]`` results are kept.

  Args:
    model: a model of the contract (:mod:`dgmjax.models.base`).
    params: model parameters.
    images: ``[N, ...]`` data in the support of the model's likelihood: checked first, before
      any work, against ``model.data_support`` (:func:`dgmjax.models.base.check_data`; e.g.
      uint8 0..255 images or grey levels for a Bernoulli model, or NaN, raise ``ValueError``
      naming ``images``).
    key: PRNG key; batch ``b`` uses the sample keys ``split(fold_in(key, b), num_samples)``.
    num_samples: ``K`` (5000 in Burda et al.).
    sample_chunk: samples drawn at once (peak memory grows with ``batch_size * sample_chunk``), or
      ``"auto"``: :func:`auto_sample_chunk` fits one chunk into :func:`memory_budget`. The
      estimate does not depend on it (up to float rounding).
    batch_size: images per batch (the last batch is padded, then trimmed).
    progress: show a tqdm progress bar.
    matmul_precision: ``None`` (backend default), ``'float32'``, ``'tensorfloat32'`` or
      ``'bfloat16'``: the precision of the Dense layers' matmul inputs, with float32 accumulation
      and float32 elementwise ops and reductions (see :func:`matmul_precision`).
    emulate_precision: emulate the low-precision matmuls by rounding (default: on CPU).
    memory_budget_bytes: the budget of ``sample_chunk="auto"`` (default: :func:`memory_budget`).

  Returns:
    ``[N]`` float64 numpy array. The test NLL is ``-mean``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  from tqdm.auto import tqdm
  models_base._check_contract(model)  # pylint: disable=protected-access
  _checks.check_key("key", key)
  models_base.check_data(model, images, "images")
  _check_precision(matmul_precision)
  num_samples = models_base.check_num_samples(num_samples)
  if isinstance(sample_chunk, str):
    if sample_chunk != "auto":
      raise ValueError(f"sample_chunk must be a positive int or 'auto', got {sample_chunk!r}")
  else:
    sample_chunk = _checks.check_int("sample_chunk", sample_chunk, minimum=1)
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  _checks.check_bool("progress", progress)
  if emulate_precision is not None:
    _checks.check_bool("emulate_precision", emulate_precision)
  if memory_budget_bytes is not None:
    _checks.check_int("memory_budget_bytes", memory_budget_bytes, minimum=1)
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])
  if sample_chunk == "auto":
    first = next(_batches(images, batch_size))[1]
    sample_chunk = auto_sample_chunk(model, params, first,
                                     num_samples=num_samples, budget_bytes=memory_budget_bytes,
                                     matmul_precision_name=matmul_precision)
  fn = _streaming_fn(model, num_samples, int(sample_chunk), matmul_precision,
                     emulate_precision)

  out = []
  num_batches = -(-images.shape[0] // batch_size)
  for b, x, m in tqdm(_batches(images, batch_size), total=num_batches, disable=not progress,
                      unit="batch", desc=f"log p(x) with K={num_samples}"):
    out.append(np.asarray(fn(params, x, jax.random.fold_in(key, b)), np.float64)[:m])
  return np.concatenate(out)


def bounds(model, params, images, key: Array, *,
           ks: Sequence[int] = (1, 5, 50), batch_size: int = 100) -> dict:
  """Average test bounds: the ELBO ``L_1`` and the IWAE bounds ``L_k``, each ``mean_x``.

  All bounds come from one set of ``K = max(ks)`` samples per image: ``L_k`` is the average of the
  IWAE bound over ``K // k`` disjoint groups of ``k`` samples (MIWAE), an unbiased estimate of
  ``L_k``; ``elbo`` averages all ``K`` log-weights.

  .. math:: \\hat{\\mathcal{L}}_k = \\frac{k}{K} \\sum_{g=1}^{K/k} \\log \\frac1k \\sum_{j \\in g} w_j

  Args:
    model: a model of the contract.
    params: model parameters.
    images: ``[N, ...]`` data in the support of the model's likelihood (checked first, as in
      :func:`log_likelihood`).
    key: PRNG key; batch ``b`` uses ``fold_in(key, b)``.
    ks: the ``k`` of the reported bounds.
    batch_size: images per batch.

  Returns:
    ``{"elbo": float, "iwae_k": float for k in ks}``.
  """
  models_base._check_contract(model)  # pylint: disable=protected-access
  _checks.check_key("key", key)
  models_base.check_data(model, images, "images")
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])
  if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
    raise _checks.ArgumentTypeError(f"ks must be a sequence of ints >= 1 (e.g. (1, 5, 50)), got "
                            f"{type(ks).__name__} {ks!r}")
  if not ks:
    raise ValueError("ks must name at least one k")
  ks = tuple(models_base.check_num_samples(k, "every k of ks") for k in ks)
  kmax = max(ks)
  from_keys = _FromKeys(model)

  def build():
    @jax.jit
    def one(p, x, k):
      lw = from_keys(p, x, jax.random.split(k, kmax))
      lw = lw.astype(jnp.promote_types(lw.dtype, jnp.float32))
      res = {"elbo": objectives.elbo(lw)}
      for kk in ks:
        g = kmax // kk
        res[f"iwae_{kk}"] = objectives.miwae_bound(lw[:g * kk], g)
      return res
    return one

  one = _cached(("bounds", from_keys, ks), build)
  acc = {}
  for b, x, m in _batches(images, batch_size):
    r = jax.device_get(one(params, x, jax.random.fold_in(key, b)))
    for name, v in r.items():
      acc.setdefault(name, []).append(np.asarray(v, np.float64)[:m])
  return {name: float(np.concatenate(v).mean()) for name, v in acc.items()}


def active_units(model, params, images, key: Array, *, threshold: float = 1e-2,
                 batch_size: int = 500, num_samples: int = 100) -> dict:
  """Burda et al.'s active units: a latent unit ``u`` is active if ``Cov_x(E_q[u | x]) > 1e-2``.

  .. math:: A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{u \\sim q(u|x)}[u]\\big) > 10^{-2}

  Args:
    model: a model of the contract; its ``posterior_mean`` is used where it has one, else a
      ``num_samples`` Monte Carlo average (:func:`dgmjax.models.posterior_means`), per latent leaf
      (stochastic layer).
    params: model parameters.
    images: ``[N, ...]`` images over which the covariance is taken (checked first, as in
      :func:`log_likelihood`).
    key: PRNG key (for layers whose mean needs samples of the layer below).
    threshold: activity threshold on the variance (1e-2 in the paper).
    batch_size: images per call.
    num_samples: draws of the Monte Carlo mean (models without ``posterior_mean``).

  Returns:
    ``{"active": [count per layer], "variances": [[D_l] per layer]}``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.2.
  """
  _checks.check_key("key", key)
  models_base.check_data(model, images, "images")
  threshold = _checks.check_real("threshold", threshold, minimum=0.0)
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])
  fn = jax.jit(lambda p, x, k: models_base.posterior_means(model, p, x, k, num_samples))
  chunks = []
  for b, x, m in _batches(images, batch_size):
    means = jax.device_get(fn(params, x, jax.random.fold_in(key, b)))
    chunks.append([np.asarray(a, np.float64)[:m].reshape(m, -1) for a in means])
  layers = [np.concatenate([c[l] for c in chunks], 0) for l in range(len(chunks[0]))]
  variances = [np.var(a, axis=0) for a in layers]
  return {"active": [int((v > threshold).sum()) for v in variances],
          "variances": [v.tolist() for v in variances]}


def write_sample_figures(model, params, images, key: Array, workdir: str, *,
                         num_samples: int = 100, num_reconstructions: int = 16) -> dict:
  """Writes ``samples.png`` (ancestral samples) and ``reconstructions.png`` into ``workdir``.

  Args:
    model: a contract model with ``sample_prior`` and ``decode``.
    params: model parameters.
    images: data to reconstruct ``[N, H, W, C]`` (the first ``num_reconstructions`` are used,
      checked as in :func:`log_likelihood`).
    key: PRNG key.
    workdir: output directory.
    num_samples: samples in the grid.
    num_reconstructions: images in the reconstruction figure.

  Returns:
    ``{"samples": path, "reconstructions": path}``.
  """
  from dgmjax import plotting
  _checks.check_key("key", key)
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  num_reconstructions = _checks.check_int("num_reconstructions", num_reconstructions, minimum=1)
  models_base.check_data(model, images[:num_reconstructions], "images")
  samples = np.asarray(jax.jit(lambda p, k: models_base.sample_x(model, p, k, num_samples))(
      params, key))
  x = np.asarray(images[:num_reconstructions], np.float32)
  recon = np.asarray(jax.jit(lambda p, xx: models_base.reconstruct(model, p, xx))(params, x))
  os.makedirs(workdir, exist_ok=True)
  return {
      "samples": plotting.save_image_grid(os.path.join(workdir, "samples.png"), samples,
                                          title="samples (Bernoulli means)"),
      "reconstructions": plotting.save_reconstructions(
          os.path.join(workdir, "reconstructions.png"), x, recon),
  }
