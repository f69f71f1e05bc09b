"""Vector quantization: nearest code, straight-through, codebook/commitment losses, EMA, usage.

Encoder outputs ``z_e`` are ``[..., D]`` (a spatial map ``[B, H, W, D]`` or vectors); a codebook is
``[N, D]``. Everything is a pure function; :class:`VectorQuantizer` is a thin Flax module holding
the codebook as a parameter.

References:
  van den Oord, Vinyals & Kavukcuoglu, Neural Discrete Representation Learning (VQ-VAE), NeurIPS
  2017.
  Razavi, van den Oord & Vinyals, Generating Diverse High-Fidelity Images with VQ-VAE-2, NeurIPS
  2019.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dgmjax.gumbel import straight_through

Array = jax.Array


def _check(z_e: Array, codebook: Array) -> None:
  if jnp.ndim(codebook) != 2 or jnp.shape(codebook)[0] < 1:
    raise ValueError(f"codebook must be [num_codes >= 1, D], got shape {jnp.shape(codebook)}")
  if jnp.shape(z_e)[-1:] != jnp.shape(codebook)[1:]:
    raise ValueError(f"z_e has embedding dim {jnp.shape(z_e)[-1:]} but the codebook has "
                     f"{jnp.shape(codebook)[1]} (codebook shape {jnp.shape(codebook)})")


def squared_distances(z_e: Array, codebook: Array) -> Array:
  """``||z_e - e_n||^2`` for every code: ``[..., D], [N, D] -> [..., N]``.

  Expanded as ``||z||^2 - 2 z.e + ||e||^2`` so the cost is one matrix product.
  """
  _check(z_e, codebook)
  zz = jnp.sum(jnp.square(z_e), axis=-1, keepdims=True)
  ee = jnp.sum(jnp.square(codebook), axis=-1)
  cross = jnp.einsum("...d,nd->...n", z_e, codebook)
  return zz - 2.0 * cross + jnp.broadcast_to(ee, cross.shape)


def nearest_code(z_e: Array, codebook: Array) -> Array:
  """Index of the nearest code: ``[..., D] -> [...]`` (int32).

  .. math:: k(x) = \\arg\\min_n \\|z_e(x) - e_n\\|_2
  """
  return jnp.argmin(squared_distances(z_e, codebook), axis=-1).astype(jnp.int32)


def lookup(indices: Array, codebook: Array) -> Array:
  """Codes of the given indices: ``[...] -> [..., D]``."""
  return jnp.take(codebook, indices, axis=0)


class Quantized(NamedTuple):
  """Result of :func:`quantize`.

  Attributes:
    z_q: the quantized map, forward value ``e_{k(x)}``, gradient passed straight through to
      ``z_e`` (feed this to the decoder).
    indices: ``[...]`` code indices.
    codebook_loss: ``mean ||sg(z_e) - e_k||^2`` (moves the codes; zero gradient to the encoder).
    commitment_loss: ``mean ||z_e - sg(e_k)||^2`` (unweighted; multiply by beta).
  """
  z_q: Array
  indices: Array
  codebook_loss: Array
  commitment_loss: Array


def quantize(z_e: Array, codebook: Array) -> Quantized:
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
  cluster_size: Array
  embed_sum: Array
  codebook: Array


def ema_init(codebook: Array) -> EMAState:
  """EMA state starting at ``codebook`` (each code counted once)."""
  if jnp.ndim(codebook) != 2 or jnp.shape(codebook)[0] < 1:
    raise ValueError(f"codebook must be [num_codes >= 1, D], got shape {jnp.shape(codebook)}")
  n = codebook.shape[0]
  return EMAState(jnp.ones((n,), codebook.dtype), codebook, codebook)


def ema_update(state: EMAState, z_e: Array, indices: Array, decay: float = 0.99,
               eps: float = 1e-5) -> EMAState:
  """One EMA codebook update with Laplace-smoothed counts (VQ-VAE, Appendix A.1).

  .. math:: N_n \\leftarrow \\gamma N_n + (1-\\gamma) n_n, \\quad m_n \\leftarrow \\gamma m_n + (1-\\gamma) \\sum_{i: k_i = n} z_i, \\quad e_n = m_n / \\tilde N_n

  with ``tilde N_n = (N_n + eps) / (sum N + N eps) * sum N``. As ``decay -> 0`` a code with assigned
  vectors becomes their mean (k-means' update); a code with none keeps ``m_n / tilde N_n``.

  Args:
    state: :class:`EMAState`.
    z_e: ``[..., D]`` encoder outputs (gradients are not taken through this update).
    indices: ``[...]`` their codes.
    decay: ``gamma`` in [0, 1).
    eps: Laplace smoothing.

  Returns:
    The new :class:`EMAState`.
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"decay must lie in [0, 1), got {decay}")
  _check(z_e, state.codebook)
  n, d = state.codebook.shape
  flat = lax.stop_gradient(z_e).reshape(-1, d)
  one_hot = jax.nn.one_hot(indices.reshape(-1), n, dtype=flat.dtype)
  counts = jnp.sum(one_hot, axis=0)
  sums = one_hot.T @ flat
  cluster_size = decay * state.cluster_size + (1.0 - decay) * counts
  embed_sum = decay * state.embed_sum + (1.0 - decay) * sums
  total = jnp.sum(cluster_size)
  smoothed = (cluster_size + eps) / (total + n * eps) * total
  return EMAState(cluster_size, embed_sum, embed_sum / smoothed[:, None])


# ----------------------------------------------------------------------------- codebook health


def code_counts(indices: Array, num_codes: int) -> Array:
  """How often each code is used: ``[...] -> [num_codes]`` (accumulate over an epoch)."""
  if num_codes < 1:
    raise ValueError(f"num_codes must be >= 1, got {num_codes}")
  return jnp.bincount(indices.reshape(-1), length=num_codes)


def perplexity(counts: Array) -> Array:
  """``exp(H(p))`` of the code-usage distribution ``p = counts / sum(counts)``.

  1 when one code is used, ``N`` when all are used equally. Measure it over an epoch of counts,
  not one batch (a batch under-samples the usage of a large codebook).
  """
  p = counts / jnp.maximum(jnp.sum(counts), 1)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def usage(counts: Array) -> Array:
  """Fraction of codes used at least once."""
  return jnp.mean((counts > 0).astype(jnp.float32))


def restart_dead_codes(key: Array, codebook: Array, counts: Array, z_e: Array, *,
                       threshold: float = 1.0) -> tuple[Array, Array]:
  """Replaces codes used fewer than ``threshold`` times by randomly chosen encoder outputs.

  Args:
    key: PRNG key.
    codebook: ``[N, D]``.
    counts: ``[N]`` usage counts (e.g. over the last epoch).
    z_e: ``[..., D]`` recent encoder outputs to draw replacements from.
    threshold: a code with ``counts < threshold`` is dead.

  Returns:
    ``(new_codebook, dead_mask [N])``.

  References:
    Dhariwal et al., Jukebox, 2020 (random restarts of dead codes); Williams et al.,
    Hierarchical Quantized Autoencoders, NeurIPS 2020.
  """
  _check(z_e, codebook)
  n, d = codebook.shape
  pool = lax.stop_gradient(z_e).reshape(-1, d)
  pick = jax.random.randint(key, (n,), 0, pool.shape[0])
  dead = counts < threshold
  return jnp.where(dead[:, None], pool[pick], codebook), dead


# ----------------------------------------------------------------------------- Flax module


class VectorQuantizer(nn.Module):
  """A codebook of ``num_codes`` vectors of size ``embedding_dim``; calls :func:`quantize`.

  Attributes:
    num_codes: codebook size ``N >= 1``.
    embedding_dim: ``D``; the last axis of the input must match.
    init_scale: codes initialised uniformly in ``[-init_scale, init_scale]``.
  """
  num_codes: int
  embedding_dim: int
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, z_e: Array) -> Quantized:
    if self.num_codes < 1:
      raise ValueError(f"num_codes must be >= 1, got {self.num_codes}")
    if z_e.shape[-1] != self.embedding_dim:
      raise ValueError(f"z_e has embedding dim {z_e.shape[-1]}, the quantizer expects "
                       f"embedding_dim={self.embedding_dim}")
    s = self.init_scale
    codebook = self.param(
        "codebook", lambda k, shape: jax.random.uniform(k, shape, minval=-s, maxval=s),
        (self.num_codes, self.embedding_dim))
    return quantize(z_e, codebook)
