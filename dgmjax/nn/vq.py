"""The VQ module: a Flax codebook over the pure vector-quantization functions of :mod:`dgmjax.vq`.

References:
  van den Oord, Vinyals & Kavukcuoglu, Neural Discrete Representation Learning (VQ-VAE), NeurIPS
  2017.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jaxtyping import ArrayLike, Shaped

from dgmjax import _checks
from dgmjax.vq import Quantized, quantize

__all__ = ["VectorQuantizer"]


class VectorQuantizer(nn.Module):
  """A codebook ``[num_codes, embedding_dim]`` as a Flax param; calls :func:`dgmjax.vq.quantize`.

  Attributes:
    num_codes: codebook size ``N >= 1``.
    embedding_dim: ``D``; the last axis of the input must match.
    init_scale: codes initialised uniformly in ``[-init_scale, init_scale]``.
  """
  num_codes: int
  embedding_dim: int
  init_scale: float = 1.0

  @nn.compact
  def __call__(self, z_e: Shaped[ArrayLike, "..."]) -> Quantized:
    _checks.check_int("num_codes", self.num_codes, minimum=1)
    _checks.check_int("embedding_dim", self.embedding_dim, minimum=1)
    if z_e.shape[-1] != self.embedding_dim:
      raise ValueError(f"z_e has embedding dim {z_e.shape[-1]}, the quantizer expects "
                       f"embedding_dim={self.embedding_dim}")
    s = self.init_scale
    codebook = self.param(
        "codebook", lambda k, shape: jax.random.uniform(k, shape, minval=-s, maxval=s),
        (self.num_codes, self.embedding_dim))
    return quantize(z_e, codebook)
