"""Evaluation: the importance-sampled test log-likelihood (k=5000), bounds, figures.

Burda et al. report ``log p(x) ~ L_5000``. Here the 5000 samples are drawn in chunks and combined
with a streaming log-sum-exp (:func:`dgmjax.numerics.streaming_log_mean_exp`), and the images
are processed in fixed-size batches (the last one padded), so peak memory is set by
``batch_size * sample_chunk`` whatever ``K`` and the test-set size, and the jitted function is compiled once (and cached across calls).

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
* **Low-precision matmuls, float32 reductions** (``matmul_precision``,
  :func:`dgmjax.numerics.matmul_precision`): matmul inputs in bfloat16 or TF32, products
  accumulated in float32, and every elementwise op, pixel sum and log-sum-exp in float32 (at
  least).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks, numerics, objectives
from dgmjax.models import base as models_base

__all__ = [
    "auto_sample_chunk", "bounds", "check_images", "log_likelihood", "padded_batches",
    "streaming_iwae_bound", "write_sample_figures",
]

Array = jax.Array
LogWeightsFromKeys = Callable[[object, Array, Array], Array]

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


# ----------------------------------------------------------------------------- the estimator


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
  batch = models_base.batch_size_of(x)
  log_weights_from_keys = _FromKeys(model)

  def log_w(k):
    return models_base.check_log_weights(log_weights_from_keys(params, x, k), k.shape[0], batch)

  # The first chunk runs outside the scan: XLA merges its encoder pass with the loop body's and
  # hoists it out of the loop, so the per-image work runs once (see the module docstring).
  chunks = keys[:num_chunks * chunk].reshape(num_chunks, chunk)
  return numerics.streaming_log_mean_exp(log_w, chunks, num_samples,
                                         last=keys[num_chunks * chunk:] if rem else None)


# ----------------------------------------------------------------------------- chunk size


def _bytes_per_sample(log_weights_from_keys: LogWeightsFromKeys, params, x, probe: int,
                      precision) -> float:
  """Working set of one importance sample for the batch ``x``: XLA's temporary + output bytes of
  ``log_weights_from_keys`` at ``probe`` samples, divided by ``probe``."""

  def fn(p, xx, keys):
    with numerics.matmul_precision(precision):
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
  compiled log-weights at ``probe`` samples; the budget from
  :func:`dgmjax.numerics.memory_budget`. The last step spreads ``K`` evenly over the chunks so
  that the final chunk is not a small remainder.

  Args:
    model: a model of the contract.
    params: model parameters.
    x: ``[B, ...]`` one batch (its size sets the bytes per sample).
    num_samples: ``K``.
    budget_bytes: the budget; default :func:`dgmjax.numerics.memory_budget`.
    matmul_precision_name: see :func:`dgmjax.numerics.matmul_precision`.
    probe: samples compiled to measure the bytes per sample.

  Returns:
    ``sample_chunk``, an int in ``[1, K]``.
  """
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  probe = _checks.check_int("probe", probe, minimum=1)
  if budget_bytes is None:
    budget_bytes = numerics.memory_budget()["bytes"]
  budget_bytes = _checks.check_real("budget_bytes", budget_bytes, minimum=0.0,
                                    strict_minimum=True)
  per_sample = _bytes_per_sample(_FromKeys(model), params, x, probe, matmul_precision_name)
  chunk = int(min(num_samples, max(1, budget_bytes // per_sample)))
  num_chunks = -(-num_samples // chunk)
  return -(-num_samples // num_chunks)


def padded_batches(images: np.ndarray, batch_size: int):
  """Yields ``(index, batch padded to batch_size, true size)``; one compiled shape for all."""
  n = images.shape[0]
  for b, start in enumerate(range(0, n, batch_size)):
    x = images[start:start + batch_size]
    m = x.shape[0]
    if m < batch_size:
      x = np.concatenate([x, np.repeat(x[-1:], batch_size - m, 0)], 0)
    yield b, x, m


def check_images(images, name: str = "images") -> np.ndarray:
  """A non-empty ``[N, ...]`` array of finite values as float32 numpy; else ``ValueError``."""
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
      with numerics.matmul_precision(precision, emulate=emulate):
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
      ``"auto"``: :func:`auto_sample_chunk` fits one chunk into
      :func:`dgmjax.numerics.memory_budget`. The estimate does not depend on it (up to float rounding).
    batch_size: images per batch (the last batch is padded, then trimmed).
    progress: show a tqdm progress bar.
    matmul_precision: ``None`` (backend default), ``'float32'``, ``'tensorfloat32'`` or
      ``'bfloat16'``: the precision of the Dense layers' matmul inputs, with float32 accumulation
      and float32 elementwise ops and reductions (see :func:`dgmjax.numerics.matmul_precision`).
    emulate_precision: emulate the low-precision matmuls by rounding (default: on CPU).
    memory_budget_bytes: the budget of ``sample_chunk="auto"`` (default:
      :func:`dgmjax.numerics.memory_budget`).

  Returns:
    ``[N]`` float64 numpy array. The test NLL is ``-mean``.

  Raises:
    ValueError: bad images or settings (naming the argument); or an estimate that is not finite
      for some image: the message names the images and the contract function that returned a
      non-finite value for the first of them (its batch re-evaluated eagerly at the same sample
      keys), so a NaN from the model is never returned as a result. Under ``jit``
      (:func:`streaming_iwae_bound`) such an image's estimate is NaN.
    TypeError: a contract function returns a non-floating dtype (integer log-densities would be
      truncated, complex ones lose their imaginary part), named at trace time.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  from tqdm.auto import tqdm
  models_base.check_contract(model)
  _checks.check_key("key", key)
  models_base.check_data(model, images, "images")
  numerics.check_matmul_precision(matmul_precision)
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
  images = check_images(images)
  batch_size = min(batch_size, images.shape[0])
  if sample_chunk == "auto":
    first = next(padded_batches(images, batch_size))[1]
    sample_chunk = auto_sample_chunk(model, params, first,
                                     num_samples=num_samples, budget_bytes=memory_budget_bytes,
                                     matmul_precision_name=matmul_precision)
  fn = _streaming_fn(model, num_samples, int(sample_chunk), matmul_precision,
                     emulate_precision)

  out = []
  num_batches = -(-images.shape[0] // batch_size)
  for b, x, m in tqdm(padded_batches(images, batch_size), total=num_batches, disable=not progress,
                      unit="batch", desc=f"log p(x) with K={num_samples}"):
    out.append(np.asarray(fn(params, x, jax.random.fold_in(key, b)), np.float64)[:m])
  out = np.concatenate(out)
  _raise_if_nonfinite(model, params, images, key, out, batch_size, num_samples,
                      "evaluation.log_likelihood's estimate")
  return out


def _raise_if_nonfinite(model, params, images, key, values, batch_size: int, num_samples: int,
                        where: str) -> None:
  """Raises ``ValueError`` if a per-image result is not finite, naming the images and the
  contract function that first gave a non-finite value for the first of them (its batch
  re-evaluated eagerly at the same sample keys: :func:`dgmjax.models.base.find_nonfinite`)."""
  bad = np.flatnonzero(~np.isfinite(values))
  if not bad.size:
    return
  first = int(bad[0])
  b, row = divmod(first, batch_size)
  x = next(itertools.islice(padded_batches(images, batch_size), b, None))[1]
  keys = jax.random.split(jax.random.fold_in(key, b), num_samples)
  found = models_base.find_nonfinite(model, params, jnp.asarray(x), row, keys=keys)
  raise models_base.nonfinite_error(model, params, where, bad, len(values), found, first)


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

  Raises:
    ValueError: as :func:`log_likelihood`: bad arguments, or a bound that is not finite for some
      image (naming the images and the contract function that produced the non-finite value).
    TypeError: a contract function returns a non-floating dtype.
  """
  models_base.check_contract(model)
  _checks.check_key("key", key)
  models_base.check_data(model, images, "images")
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  images = check_images(images)
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
  for b, x, m in padded_batches(images, batch_size):
    r = jax.device_get(one(params, x, jax.random.fold_in(key, b)))
    for name, v in r.items():
      acc.setdefault(name, []).append(np.asarray(v, np.float64)[:m])
  acc = {name: np.concatenate(v) for name, v in acc.items()}
  finite = np.all([np.isfinite(v) for v in acc.values()], axis=0)
  _raise_if_nonfinite(model, params, images, key, np.where(finite, 0.0, np.nan), batch_size, kmax,
                      "evaluation.bounds")
  return {name: float(v.mean()) for name, v in acc.items()}


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
