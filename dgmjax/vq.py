"""Vector quantization: nearest code, straight-through, codebook/commitment losses, EMA, usage.

Encoder outputs ``z_e`` are ``[..., D]`` (a spatial map ``[B, H, W, D]`` or vectors); a codebook is
``[N, D]``. Everything is a pure function; :class:`dgmjax.nn.VectorQuantizer` is a thin Flax module
holding the codebook as a parameter.

References:
  van den Oord, Vinyals & Kavukcuoglu, Neural Discrete Representation Learning (VQ-VAE), NeurIPS
  2017.
  Razavi, van den Oord & Vinyals, Generating Diverse High-Fidelity Images with VQ-VAE-2, NeurIPS
  2019.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Real, Shaped

from dgmjax import _checks
from dgmjax.gumbel import straight_through

__all__ = [
    "EMAState", "Quantized", "code_counts", "ema_init", "ema_update", "lookup",
    "nearest_code", "perplexity", "quantize", "restart_dead_codes", "squared_distances", "usage",
]


def _check_codebook(codebook: Shaped[ArrayLike, "..."]) -> None:
  """A codebook is a floating ``[N >= 1, D]`` array (shape and dtype: also under ``jit``)."""
  if jnp.ndim(codebook) != 2 or jnp.shape(codebook)[0] < 1:
    raise ValueError(f"codebook must be [num_codes >= 1, D], got shape {jnp.shape(codebook)}")
  _checks.check_dtype("codebook", codebook, "floating")


def _check(z_e: Shaped[ArrayLike, "..."], codebook: Shaped[ArrayLike, "..."]) -> None:
  _check_codebook(codebook)
  if jnp.ndim(z_e) < 1 or jnp.shape(z_e)[-1:] != jnp.shape(codebook)[1:]:
    raise ValueError(f"z_e has embedding dim {jnp.shape(z_e)[-1:]} but the codebook has "
                     f"{jnp.shape(codebook)[1]} (codebook shape {jnp.shape(codebook)})")
  _checks.check_dtype("z_e", z_e, "floating")
  _checks.check_finite("z_e", z_e)
  _checks.check_finite("codebook", codebook)


def _check_indices(indices: Shaped[ArrayLike, "..."], num_codes: int,
                   name: str = "indices") -> None:
  """Integer dtype (static, also under jit); values in ``[0, num_codes)`` when concrete."""
  _checks.check_dtype(name, indices, "integer")
  _checks.check_values(name, indices, lambda a: (a >= 0) & (a < num_codes),
                       f"code indices in [0, {num_codes})")


def squared_distances(z_e: Shaped[ArrayLike, "..."],
                      codebook: Float[ArrayLike, "..."]) -> Float[Array, "*batch N"]:
  """``||z_e - e_n||^2`` for every code: ``[..., D], [N, D] -> [..., N]``.

  Expanded as ``||z||^2 - 2 z.e + ||e||^2`` so the cost is one matrix product.

  Concrete ``z_e`` or ``codebook`` with NaN or infinite entries raise ``ValueError``; traced ones
  give NaN distances.
  """
  _check(z_e, codebook)
  zz = jnp.sum(jnp.square(z_e), axis=-1, keepdims=True)
  ee = jnp.sum(jnp.square(codebook), axis=-1)
  cross = jnp.einsum("...d,nd->...n", z_e, codebook)
  return zz - 2.0 * cross + jnp.broadcast_to(ee, cross.shape)


def nearest_code(z_e: Shaped[ArrayLike, "..."],
                 codebook: Float[ArrayLike, "..."]) -> Int[Array, "*batch"]:
  """Index of the nearest code: ``[..., D] -> [...]`` (int32).

  .. math:: k(x) = \\arg\\min_n \\|z_e(x) - e_n\\|_2

  Concrete non-finite ``z_e`` / ``codebook`` raise ``ValueError``. Contract for traced input: an
  index cannot be NaN, so a vector whose distances are NaN (a NaN in ``z_e`` or in the codebook)
  gets ``-1`` (:data:`dgmjax._checks.INVALID_DRAW`), never a code: :func:`lookup` of it is NaN
  under ``jit`` (so are :func:`quantize`'s ``z_q`` and losses), :func:`ema_update` makes the state
  NaN and :func:`code_counts` counts it nowhere.
  """
  d2 = squared_distances(z_e, codebook)
  idx = jnp.argmin(d2, axis=-1).astype(jnp.int32)
  if _checks.is_concrete(z_e) and _checks.is_concrete(codebook):
    return idx
  return jnp.where(jnp.any(jnp.isnan(d2), axis=-1), _checks.INVALID_DRAW, idx)


def lookup(indices: Shaped[ArrayLike, "*batch"],
           codebook: Float[ArrayLike, "..."]) -> Float[Array, "*batch D"]:
  """Codes of the given indices: ``[...] -> [..., D]``.

  ``indices`` must be integers in ``[0, N)``: a float dtype raises
  :class:`~dgmjax._checks.ArgumentTypeError` (also under ``jit``); concrete out-of-range indices
  raise ``ValueError``; traced ones (negative ones included: they do not wrap) give NaN codes.
  """
  _check_codebook(codebook)
  n = jnp.shape(codebook)[0]
  _check_indices(indices, n)
  indices = jnp.asarray(indices)
  if not _checks.is_concrete(indices):
    indices = jnp.where((indices >= 0) & (indices < n), indices, n)  # n is out of range: NaN
  return jnp.take(codebook, indices, axis=0, mode="fill", fill_value=jnp.nan)


class Quantized(NamedTuple):
  """Result of :func:`quantize`.

  Attributes:
    z_q: the quantized map, forward value ``e_{k(x)}``, gradient passed straight through to
      ``z_e`` (feed this to the decoder).
    indices: ``[...]`` code indices.
    codebook_loss: ``mean ||sg(z_e) - e_k||^2`` (moves the codes; zero gradient to the encoder).
    commitment_loss: ``mean ||z_e - sg(e_k)||^2`` (unweighted; multiply by beta).
  """
  z_q: Float[Array, "*batch D"]
  indices: Int[Array, "*batch"]
  codebook_loss: Float[Array, ""]
  commitment_loss: Float[Array, ""]


def quantize(z_e: Shaped[ArrayLike, "..."], codebook: Float[ArrayLike, "..."]) -> Quantized:
  """Quantizes ``z_e`` to its nearest codes with a straight-through gradient and VQ losses.

  The VQ-VAE objective is ``reconstruction + codebook_loss + beta * commitment_loss``
  (``beta = 0.25`` in the paper); with EMA codebook updates drop ``codebook_loss``. Losses are means
  over all elements.

  .. math:: z_q = z_e + \\mathrm{sg}(e_k - z_e), \\quad L_{cb} = \\|\\mathrm{sg}(z_e) - e_k\\|^2, \\quad L_{commit} = \\|z_e - \\mathrm{sg}(e_k)\\|^2

  Args:
    z_e: encoder output ``[..., D]``.
    codebook: ``[N, D]``.

  Returns:
    :class:`Quantized`.

  Raises:
    ValueError: shapes that do not fit; concrete ``z_e`` or ``codebook`` with NaN or infinite
      entries. Traced NaN gives NaN ``z_q`` and losses (and ``-1`` in ``indices``, never a code).
  """
  idx = nearest_code(z_e, codebook)
  e_k = lookup(idx, codebook)
  codebook_loss = jnp.mean(jnp.square(lax.stop_gradient(z_e) - e_k))
  commitment_loss = jnp.mean(jnp.square(z_e - lax.stop_gradient(e_k)))
  return Quantized(straight_through(e_k, z_e), idx, codebook_loss, commitment_loss)


# ----------------------------------------------------------------------------- EMA codebook


class EMAState(NamedTuple):
  """Exponential-moving-average codebook statistics.

  Attributes:
    cluster_size: ``[N]`` EMA of the number of vectors assigned to each code.
    embed_sum: ``[N, D]`` EMA of the sum of the vectors assigned to each code.
    codebook: ``[N, D]`` current codes (``embed_sum / smoothed cluster_size``).
  """
  cluster_size: Float[Array, "N"]
  embed_sum: Float[Array, "N D"]
  codebook: Float[Array, "N D"]


def ema_init(codebook: Float[ArrayLike, "..."]) -> EMAState:
  """EMA state starting at ``codebook`` (each code counted once)."""
  _check_codebook(codebook)
  _checks.check_finite("codebook", codebook)
  codebook = jnp.asarray(codebook)
  n = codebook.shape[0]
  return EMAState(jnp.ones((n,), codebook.dtype), codebook, codebook)


def ema_update(state: EMAState, z_e: Shaped[ArrayLike, "..."], indices: Shaped[ArrayLike, "..."],
               decay: Real[ArrayLike, ""] = 0.99, eps: Real[ArrayLike, ""] = 1e-5) -> EMAState:
  """One EMA codebook update with Laplace-smoothed counts (VQ-VAE, Appendix A.1).

  .. math:: N_n \\leftarrow \\gamma N_n + (1-\\gamma) n_n, \\quad m_n \\leftarrow \\gamma m_n + (1-\\gamma) \\sum_{i: k_i = n} z_i, \\quad e_n = m_n / \\tilde N_n

  with ``tilde N_n = (N_n + eps) / (sum N + N eps) * sum N``. As ``decay -> 0`` a code with assigned
  vectors becomes their mean (k-means' update); a code with none keeps ``m_n / tilde N_n``.

  Args:
    state: :class:`EMAState`.
    z_e: ``[..., D]`` encoder outputs (gradients are not taken through this update).
    indices: ``[...]`` their codes (integers, the shape of ``z_e`` less its last axis).
    decay: ``gamma`` in [0, 1), a scalar.
    eps: Laplace smoothing, ``> 0``, a scalar.

  Returns:
    The new :class:`EMAState`.

  Raises:
    ValueError: concrete ``decay`` outside [0, 1) or ``eps <= 0``; ``indices`` of the wrong shape;
      concrete out-of-range ``indices``; concrete non-finite ``z_e``. Traced ``decay`` / ``eps``
      outside their ranges and traced out-of-range ``indices`` make the new state NaN.
  """
  _checks.check_scalar("decay", decay)
  _checks.check_scalar("eps", eps)
  _checks.check_values("decay", decay, lambda a: (a >= 0) & (a < 1), "in [0, 1)")
  _checks.check_values("eps", eps, lambda a: np.isfinite(a) & (a > 0), "finite and > 0")
  _check(z_e, state.codebook)
  n, d = state.codebook.shape
  if jnp.shape(indices) != jnp.shape(z_e)[:-1]:
    raise ValueError(f"indices must have the shape of z_e less its last axis, "
                     f"{jnp.shape(z_e)[:-1]}, got {jnp.shape(indices)}")
  _check_indices(indices, n)
  bad = jnp.zeros((), bool)
  if not _checks.is_concrete(indices):
    bad = bad | jnp.any((indices < 0) | (indices >= n))
  if not _checks.is_concrete(decay):
    bad = bad | ~((decay >= 0) & (decay < 1))
  if not _checks.is_concrete(eps):
    bad = bad | ~(eps > 0)
  flat = lax.stop_gradient(z_e).reshape(-1, d)
  one_hot = jax.nn.one_hot(indices.reshape(-1), n, dtype=flat.dtype)
  counts = jnp.sum(one_hot, axis=0)
  sums = one_hot.T @ flat
  cluster_size = decay * state.cluster_size + (1.0 - decay) * counts
  embed_sum = decay * state.embed_sum + (1.0 - decay) * sums
  total = jnp.sum(cluster_size)
  smoothed = (cluster_size + eps) / (total + n * eps) * total
  nan = jnp.asarray(jnp.nan, cluster_size.dtype)
  return EMAState(jnp.where(bad, nan, cluster_size), jnp.where(bad, nan, embed_sum),
                  jnp.where(bad, nan, embed_sum / smoothed[:, None]))


# ----------------------------------------------------------------------------- codebook health


def code_counts(indices: Shaped[ArrayLike, "..."], num_codes: int) -> Int[Array, "N"]:
  """How often each code is used: ``[...] -> [num_codes]`` (int32; accumulate over an epoch).

  ``num_codes`` is a Python or NumPy int ``>= 1``; ``indices`` must have an integer dtype (else
  :class:`~dgmjax._checks.ArgumentTypeError`, also under ``jit``). Concrete indices outside
  ``[0, num_codes)`` raise ``ValueError``. Contract for traced indices (counts cannot be NaN):
  an out-of-range index, negative ones included, is counted nowhere (neither clipped into code 0
  nor wrapped), so ``counts.sum() < indices.size`` exposes it.
  """
  num_codes = _checks.check_int("num_codes", num_codes, minimum=1)
  _check_indices(indices, num_codes)
  flat = jnp.reshape(jnp.asarray(indices), (-1,))
  # bincount clips negative values into bin 0; send every out-of-range index past the end instead
  flat = jnp.where((flat >= 0) & (flat < num_codes), flat, num_codes)
  return jnp.bincount(flat, length=num_codes)


def perplexity(counts: Real[ArrayLike, "..."]) -> Float[Array, ""]:
  """``exp(H(p))`` of the code-usage distribution ``p = counts / sum(counts)``.

  1 when one code is used, ``N`` when all are used equally. Measure it over an epoch of counts,
  not one batch (a batch under-samples the usage of a large codebook).

  ``counts`` is ``[N]``, finite and ``>= 0``: concrete counts that are not raise ``ValueError``;
  traced ones give NaN.
  """
  counts = _check_counts(counts)
  p = counts / jnp.maximum(jnp.sum(counts), 1)
  out = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
  return _nan_if_bad_counts(counts, out)


def usage(counts: Real[ArrayLike, "..."]) -> Float[Array, ""]:
  """Fraction of codes used at least once (``counts`` as for :func:`perplexity`)."""
  counts = _check_counts(counts)
  return _nan_if_bad_counts(counts, jnp.mean((counts > 0).astype(jnp.float32)))


def _check_counts(counts: Real[ArrayLike, "..."]) -> Real[Array, "N"]:
  if jnp.ndim(counts) != 1 or jnp.shape(counts)[0] < 1:
    raise ValueError(f"counts must be [num_codes >= 1], got shape {jnp.shape(counts)}")
  _checks.check_values("counts", counts, lambda a: np.isfinite(a) & (a >= 0),
                       "finite usage counts >= 0")
  return jnp.asarray(counts)


def _nan_if_bad_counts(counts: Real[Array, "N"], out: Float[Array, ""]) -> Float[Array, ""]:
  if _checks.is_concrete(counts):
    return out
  bad = jnp.any(~(counts >= 0)) | jnp.any(~jnp.isfinite(counts))
  return jnp.where(bad, jnp.asarray(jnp.nan, out.dtype), out)


def restart_dead_codes(key: PRNGKeyArray, codebook: Float[ArrayLike, "..."],
                       counts: Real[ArrayLike, "..."], z_e: Shaped[ArrayLike, "..."], *,
                       threshold: Real[ArrayLike, ""] = 1.0,
                       ) -> tuple[Float[Array, "N D"], Bool[Array, "N"]]:
  """Replaces codes used fewer than ``threshold`` times by randomly chosen encoder outputs.

  Args:
    key: PRNG key.
    codebook: ``[N, D]``.
    counts: ``[N]`` usage counts (e.g. over the last epoch).
    z_e: ``[..., D]`` recent encoder outputs to draw replacements from.
    threshold: a code with ``counts < threshold`` is dead: a scalar ``>= 0`` (``0`` restarts
      none, ``inf`` every code). Traced and NaN or negative, the new codebook is NaN.

  Returns:
    ``(new_codebook, dead_mask [N])``.

  Raises:
    ValueError: ``counts`` not ``[N]`` or (concrete) negative / non-finite; ``z_e`` without a
      vector to draw from, or (concrete) non-finite; ``threshold`` not a scalar, or (concrete)
      NaN or negative (a bool or string is an ``ArgumentTypeError``).

  References:
    Dhariwal et al., Jukebox, 2020 (random restarts of dead codes); Williams et al.,
    Hierarchical Quantized Autoencoders, NeurIPS 2020.
  """
  _check(z_e, codebook)
  n, d = codebook.shape
  if jnp.shape(counts) != (n,):
    raise ValueError(f"counts must be [{n}] (one per code of the codebook), got shape "
                     f"{jnp.shape(counts)}")
  _check_counts(counts)
  if math.prod(jnp.shape(z_e)[:-1]) < 1:
    raise ValueError(f"z_e must hold at least one vector to restart codes from, got shape "
                     f"{jnp.shape(z_e)}")
  _checks.check_numeric("threshold", threshold)
  if jnp.ndim(threshold) != 0:
    raise ValueError(f"threshold must be a scalar (one usage count for every code), got shape "
                     f"{jnp.shape(threshold)}")
  _checks.check_values("threshold", threshold, lambda a: a >= 0,
                       "a number >= 0 (0 restarts no code, inf every code)")
  pool = lax.stop_gradient(z_e).reshape(-1, d)
  pick = jax.random.randint(key, (n,), 0, pool.shape[0])
  dead = counts < threshold
  new = jnp.where(dead[:, None], pool[pick], codebook)
  if not _checks.is_concrete(threshold):  # a NaN or negative traced threshold: a NaN codebook
    new = jnp.where(threshold >= 0, new, jnp.asarray(jnp.nan, new.dtype))
  return new, dead
