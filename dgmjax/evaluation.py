"""Evaluation: the importance-sampled test log-likelihood (k=5000), bounds, active units, figures.

Burda et al. report ``log p(x) ~ L_5000``. Here the 5000 samples are drawn in chunks and combined
with a streaming log-sum-exp, and the images are processed in fixed-size batches (the last one
padded), so peak memory is set by ``batch_size * sample_chunk`` whatever ``K`` and the test-set size,
and the jitted function is compiled once.

The estimator needs the model's log-weights as a function of one key per sample,
``log_weights_from_keys(params, x, keys[K]) -> [K, B]`` (see
:meth:`dgmjax.models.vae.VAE.log_weights_from_keys`): sample ``k`` then depends on ``keys[k]`` only,
so the chunked estimate equals the unchunked ``iwae_bound(log_weights(params, x, key, K))``.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import objectives

Array = jax.Array
LogWeightsFromKeys = Callable[[object, Array, Array], Array]
LogWeightsFn = Callable[[object, Array, Array, int], Array]


def streaming_iwae_bound(log_weights_from_keys: LogWeightsFromKeys, params, x: Array,
                         keys: Array, sample_chunk: int) -> Array:
  """``L_K`` for one batch, accumulating ``logsumexp`` over chunks of ``sample_chunk`` samples.

  .. math:: \\mathcal{L}_K = \\log \\sum_{c} \\sum_{k \\in c} w_k - \\log K, \\quad \\text{accumulated as } a \\leftarrow \\operatorname{logaddexp}(a, \\operatorname{LSE}_{k \\in c} \\log w_k)

  Jittable; ``sample_chunk`` is static. Peak memory holds one chunk of ``[sample_chunk, B]``
  log-weights and its activations.

  Args:
    log_weights_from_keys: ``(params, x, keys[c]) -> [c, B]``.
    params: model parameters.
    x: ``[B, ...]`` one batch of images.
    keys: ``[K]`` PRNG keys, one per importance sample.
    sample_chunk: samples evaluated at once.

  Returns:
    ``[B]``: equal (up to float rounding) to ``iwae_bound(log_weights_from_keys(params, x, keys))``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  num_samples = keys.shape[0]
  chunk = max(1, min(int(sample_chunk), num_samples))
  num_chunks, rem = divmod(num_samples, chunk)
  lse = lambda lw: jax.nn.logsumexp(lw, axis=0)
  acc = lse(log_weights_from_keys(params, x, keys[:chunk]))
  if num_chunks > 1:
    rest = keys[chunk:num_chunks * chunk].reshape(num_chunks - 1, chunk)

    def body(a, k):
      return jnp.logaddexp(a, lse(log_weights_from_keys(params, x, k))), None

    acc, _ = lax.scan(body, acc, rest)
  if rem:
    acc = jnp.logaddexp(acc, lse(log_weights_from_keys(params, x, keys[num_chunks * chunk:])))
  return acc - math.log(num_samples)


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
  return images.astype(np.float32, copy=False)


def log_likelihood(log_weights_from_keys: LogWeightsFromKeys, params, images, key: Array, *,
                   num_samples: int = 5000, sample_chunk: int = 500, batch_size: int = 100,
                   progress: bool = False) -> np.ndarray:
  """Per-example importance-sampled estimate of ``log p(x)``: the bound ``L_K`` with ``K = 5000``.

  .. math:: \\log p(x) \\approx \\mathcal{L}_K = \\log \\frac1K \\sum_{k=1}^K \\frac{p(x, z_k)}{q(z_k|x)}, \\quad z_k \\sim q(z|x)

  Args:
    log_weights_from_keys: ``(params, x, keys[K]) -> [K, B]``, e.g.
      ``model.log_weights_from_keys``.
    params: model parameters.
    images: ``[N, ...]`` binary images.
    key: PRNG key; batch ``b`` uses the sample keys ``split(fold_in(key, b), num_samples)``.
    num_samples: ``K`` (5000 in Burda et al.).
    sample_chunk: samples drawn at once; peak memory grows with ``batch_size * sample_chunk``.
    batch_size: images per batch (the last batch is padded, then trimmed).
    progress: show a tqdm progress bar.

  Returns:
    ``[N]`` float64 numpy array. The test NLL is ``-mean``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  from tqdm.auto import tqdm
  if num_samples < 1 or sample_chunk < 1 or batch_size < 1:
    raise ValueError(f"num_samples, sample_chunk and batch_size must be >= 1; got "
                     f"{num_samples}, {sample_chunk}, {batch_size}")
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])

  @jax.jit
  def fn(p, x, k):
    return streaming_iwae_bound(log_weights_from_keys, p, x, jax.random.split(k, num_samples),
                                sample_chunk)

  out = []
  num_batches = -(-images.shape[0] // batch_size)
  for b, x, m in tqdm(_batches(images, batch_size), total=num_batches, disable=not progress,
                      unit="batch", desc=f"log p(x) with K={num_samples}"):
    out.append(np.asarray(fn(params, x, jax.random.fold_in(key, b)), np.float64)[:m])
  return np.concatenate(out)


def bounds(log_weights_fn: LogWeightsFn, params, images, key: Array, *,
           ks: Sequence[int] = (1, 5, 50), batch_size: int = 100) -> dict:
  """Average test bounds: the ELBO ``L_1`` and the IWAE bounds ``L_k``, each ``mean_x``.

  All bounds come from one set of ``K = max(ks)`` samples per image: ``L_k`` is the average of the
  IWAE bound over ``K // k`` disjoint groups of ``k`` samples (MIWAE), an unbiased estimate of
  ``L_k``; ``elbo`` averages all ``K`` log-weights.

  .. math:: \\hat{\\mathcal{L}}_k = \\frac{k}{K} \\sum_{g=1}^{K/k} \\log \\frac1k \\sum_{j \\in g} w_j

  Args:
    log_weights_fn: ``(params, x, key, K) -> [K, B]``, e.g. ``model.log_weights``.
    params: model parameters.
    images: ``[N, ...]`` binary images.
    key: PRNG key; batch ``b`` uses ``fold_in(key, b)``.
    ks: the ``k`` of the reported bounds.
    batch_size: images per batch.

  Returns:
    ``{"elbo": float, "iwae_k": float for k in ks}``.
  """
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])
  kmax = max(ks)

  @jax.jit
  def one(p, x, k):
    lw = log_weights_fn(p, x, k, kmax)
    res = {"elbo": objectives.elbo(lw)}
    for kk in ks:
      g = kmax // kk
      res[f"iwae_{kk}"] = objectives.miwae_bound(lw[:g * kk], g)
    return res

  acc = {}
  for b, x, m in _batches(images, batch_size):
    r = jax.device_get(one(params, x, jax.random.fold_in(key, b)))
    for name, v in r.items():
      acc.setdefault(name, []).append(np.asarray(v, np.float64)[:m])
  return {name: float(np.concatenate(v).mean()) for name, v in acc.items()}


def active_units(posterior_means_fn: Callable, params, images, key: Array, *,
                 threshold: float = 1e-2, batch_size: int = 500) -> dict:
  """Burda et al.'s active units: a latent unit ``u`` is active if ``Cov_x(E_q[u | x]) > 1e-2``.

  .. math:: A_u = \\mathrm{Cov}_x\\big(\\mathbb{E}_{u \\sim q(u|x)}[u]\\big) > 10^{-2}

  Args:
    posterior_means_fn: ``(params, x, key) -> [E_q[h_l | x] for each layer]`` (``[B, D_l]``
      each), e.g. ``model.posterior_means``.
    params: model parameters.
    images: ``[N, ...]`` images over which the covariance is taken.
    key: PRNG key (for layers whose mean needs samples of the layer below).
    threshold: activity threshold on the variance (1e-2 in the paper).
    batch_size: images per call.

  Returns:
    ``{"active": [count per layer], "variances": [[D_l] per layer]}``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.2.
  """
  images = _check_eval_images(images)
  batch_size = min(batch_size, images.shape[0])
  fn = jax.jit(posterior_means_fn)
  chunks = []
  for b, x, m in _batches(images, batch_size):
    means = jax.device_get(fn(params, x, jax.random.fold_in(key, b)))
    chunks.append([np.asarray(a, np.float64)[:m] for a in means])
  layers = [np.concatenate([c[l] for c in chunks], 0) for l in range(len(chunks[0]))]
  variances = [np.var(a, axis=0) for a in layers]
  return {"active": [int((v > threshold).sum()) for v in variances],
          "variances": [v.tolist() for v in variances]}


def write_sample_figures(model, params, images, key: Array, workdir: str, *,
                         num_samples: int = 100, num_reconstructions: int = 16) -> dict:
  """Writes ``samples.png`` (ancestral samples) and ``reconstructions.png`` into ``workdir``.

  Args:
    model: a model with ``sample(params, key, num)`` and ``reconstruct(params, x)``.
    params: model parameters.
    images: data to reconstruct ``[N, H, W, C]`` (the first ``num_reconstructions`` are used).
    key: PRNG key.
    workdir: output directory.
    num_samples: samples in the grid.
    num_reconstructions: images in the reconstruction figure.

  Returns:
    ``{"samples": path, "reconstructions": path}``.
  """
  from dgmjax import plotting
  samples = np.asarray(jax.jit(model.sample, static_argnums=2)(params, key, num_samples))
  x = np.asarray(images[:num_reconstructions], np.float32)
  recon = np.asarray(jax.jit(model.reconstruct)(params, x))
  os.makedirs(workdir, exist_ok=True)
  return {
      "samples": plotting.save_image_grid(os.path.join(workdir, "samples.png"), samples,
                                          title="samples (Bernoulli means)"),
      "reconstructions": plotting.save_reconstructions(
          os.path.join(workdir, "reconstructions.png"), x, recon),
  }
