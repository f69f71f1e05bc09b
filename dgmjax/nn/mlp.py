"""Flax modules for encoders and decoders.

Modules hold parameters only; nothing here samples, so no module carries RNG state (a model that
samples takes ``key`` as an argument of its pure functions). Dense layers act on the last axis, so a
module applied to ``[K, B, D]`` treats ``K`` and ``B`` alike as batch axes: one call evaluates every
importance sample.

Weights default to the Glorot-uniform initialisation and biases to zero, as in Burda et al.'s
reference code (``nnet.Linear.random``).

References:
  Glorot & Bengio, Understanding the difficulty of training deep feedforward neural networks,
  AISTATS 2010.
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Any]

default_kernel_init = nn.initializers.xavier_uniform()


class MLP(nn.Module):
  """A multilayer perceptron: hidden layers with ``activation``, a linear output layer.

  ``[..., D_in] -> [..., features[-1]]``.

  Attributes:
    features: widths of the hidden layers followed by the output width.
    activation: nonlinearity between layers (Burda et al. use ``tanh``).
    kernel_init: initializer of every weight matrix.
    out_bias_init: initializer of the output layer's bias (e.g. the logit of the data mean for a
      Bernoulli decoder).
  """
  features: Sequence[int]
  activation: Callable[[Array], Array] = nn.tanh
  kernel_init: Initializer = default_kernel_init
  out_bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if not self.features:
      raise ValueError("MLP needs at least an output width in features")
    for i, width in enumerate(self.features[:-1]):
      x = self.activation(nn.Dense(width, kernel_init=self.kernel_init, name=f"hidden_{i}")(x))
    return nn.Dense(self.features[-1], kernel_init=self.kernel_init,
                    bias_init=self.out_bias_init, name="out")(x)


class GaussianHead(nn.Module):
  """An MLP producing the mean and log standard deviation of a diagonal Gaussian.

  ``[..., D_in] -> ([..., latent_dim], [..., latent_dim])``. As in Burda et al.'s reference code the
  standard deviation is ``exp`` of a linear output of the last hidden layer.

  .. math:: h = \\tanh(\\cdots\\tanh(W_1 x + b_1)\\cdots), \\quad \\mu = W_\\mu h + b_\\mu, \\quad \\log\\sigma = W_\\sigma h + b_\\sigma

  Attributes:
    hidden: widths of the deterministic hidden layers.
    latent_dim: dimension of the Gaussian.
    activation: hidden nonlinearity.
    kernel_init: initializer of every weight matrix.
  """
  hidden: Sequence[int]
  latent_dim: int
  activation: Callable[[Array], Array] = nn.tanh
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    for i, width in enumerate(self.hidden):
      x = self.activation(nn.Dense(width, kernel_init=self.kernel_init, name=f"hidden_{i}")(x))
    loc = nn.Dense(self.latent_dim, kernel_init=self.kernel_init, name="loc")(x)
    log_scale = nn.Dense(self.latent_dim, kernel_init=self.kernel_init, name="log_scale")(x)
    return loc, log_scale


def flatten_images(x: Array) -> Array:
  """``[B, H, W, C]`` (or any ``[B, ...]``) -> ``[B, H*W*C]``; ``[B, D]`` is returned as is."""
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"expected a batch of images [B, H, W, C] or vectors [B, D], got shape "
                     f"{x.shape}")
  return x.reshape(x.shape[0], -1) if x.ndim > 2 else x


#: The public API of this module.
__all__ = [
    "Initializer", "default_kernel_init", "MLP", "GaussianHead", "flatten_images",
]
