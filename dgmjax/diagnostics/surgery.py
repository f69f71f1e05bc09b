"""ELBO surgery: the average KL term split into mutual information and the marginal KL.

The average KL term of the ELBO splits into the mutual information between the data index and the
code, and the KL from the aggregated posterior to the prior (Hoffman & Johnson, 2016):

.. math:: \\mathbb{E}_n KL(q(z|x_n) \\| p(z)) = I_q[n; z] + KL(q_{agg}(z) \\| p(z)), \\quad q_{agg}(z) = \\frac1N \\sum_n q(z|x_n)

The functions take any model of the contract (:mod:`dgmjax.models.base`) whose latent is one array
``z`` ``[B, D]``: its ``sample_q`` / ``log_q`` / ``log_prior``. ``log q_agg`` is streamed over the
dataset in chunks (:func:`dgmjax.numerics.streaming_log_mean_exp`).

References:
  Hoffman & Johnson, ELBO surgery: yet another way to carve up the variational evidence lower
  bound, NIPS 2016 Workshop on Advances in Approximate Bayesian Inference.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import numerics
from dgmjax.models import base as models_base

__all__ = ["SurgeryResult", "aggregate_posterior_log_prob", "check_dataset", "chunked",
           "elbo_surgery"]

Array = jax.Array


class SurgeryResult(NamedTuple):
  """ELBO surgery over a dataset of ``N`` examples (nats; each with its standard error over
  examples).

  Attributes:
    average_kl: ``E_n E_q(z|x_n)[log q(z|x_n) - log p(z)]``.
    mutual_information: ``E_n E_q(z|x_n)[log q(z|x_n) - log q_agg(z)]`` (``<= log N``).
    marginal_kl: ``E_n E_q(z|x_n)[log q_agg(z) - log p(z)]``, i.e. ``KL(q_agg || p)``.
    average_kl_stderr, mutual_information_stderr, marginal_kl_stderr: standard errors.
    num_examples: ``N``.
    num_samples: draws of ``z`` per example.
  """
  average_kl: float
  mutual_information: float
  marginal_kl: float
  average_kl_stderr: float
  mutual_information_stderr: float
  marginal_kl_stderr: float
  num_examples: int
  num_samples: int

  @property
  def log_num_examples(self) -> float:
    """``log N``, the upper bound of the mutual information estimate."""
    return float(np.log(self.num_examples))

  def as_dict(self) -> dict:
    return {**self._asdict(), "log_num_examples": self.log_num_examples}


def check_dataset(images, name: str = "images") -> np.ndarray:
  """A non-empty ``[N, ...]`` dataset of finite values as float32 numpy; else ``ValueError``."""
  arr = np.asarray(images)
  if arr.ndim < 2 or arr.shape[0] < 1:
    raise ValueError(f"{name} must be a non-empty batch [N, ...], got shape {arr.shape}")
  if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains NaN or infinite values")
  return arr.astype(np.float32) if arr.dtype != np.float32 else arr


def chunked(arr: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """``[N, ...]`` -> zero-padded ``[C, chunk, ...]`` and a validity mask ``[C, chunk]``."""
  n = arr.shape[0]
  c = -(-n // chunk)
  pad = c * chunk - n
  padded = np.concatenate([arr, np.zeros((pad,) + arr.shape[1:], arr.dtype)], 0)
  mask = np.arange(c * chunk) < n
  return padded.reshape((c, chunk) + arr.shape[1:]), mask.reshape(c, chunk)


def _log_q_agg(model, params, z: Array, data_chunks: Array, data_mask: Array) -> Array:
  """``log (1/N) sum_n q(z|x_n)`` for ``z`` ``[S, D]``: a streaming log-mean-exp over the data."""

  def log_q(chunk):
    x, m = chunk
    lq = models_base.posterior_log_prob_cross(model, params, z, x)    # [S, chunk]
    return jnp.where(m[None, :], lq, -jnp.inf)

  return numerics.streaming_log_mean_exp(log_q, (data_chunks, data_mask), jnp.sum(data_mask),
                                         axis=1)


@functools.partial(jax.jit, static_argnums=(0,))
def _aggregate_posterior_log_prob_jit(model, params, z, data_chunks, data_mask):
  return _log_q_agg(model, params, z, data_chunks, data_mask)


def aggregate_posterior_log_prob(model, params, z, images, *, chunk_size: int = 500) -> np.ndarray:
  """``log q_agg(z) = log (1/N) sum_n q(z | x_n)`` at points ``z`` ``[S, D]`` -> ``[S]``.

  .. math:: \\log q_{agg}(z) = \\log \\frac{1}{N} \\sum_{n=1}^N q(z | x_n)

  Args:
    model: a contract model with one latent array (its ``log_q`` is evaluated for every pair).
    params: model parameters.
    z: points ``[S, D]``.
    images: the dataset ``[N, ...]``.
    chunk_size: data points per chunk (memory ``O(S * chunk_size * D)``).
  """
  models_base.check_data(model, images, "images")  # the likelihood's support, before any work
  arr = check_dataset(images)
  z = jnp.asarray(z)
  if z.ndim != 2:
    raise ValueError(f"z must be [S, D], got shape {z.shape}")
  try:  # the latent size of a model whose encode gives (loc [B, D], ...); others are not checked
    d = int(jax.eval_shape(lambda p, x: model.encode(p, x)[0], params, arr[:1]).shape[-1])
  except Exception:  # pylint: disable=broad-except
    d = None
  if d is not None and z.shape[1] != d:
    raise ValueError(f"z must be [S, D] with D = {d}, the latent size of the model's q(z|x); got "
                     f"shape {z.shape}")
  if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
  chunks, mask = chunked(arr, int(min(chunk_size, arr.shape[0])))
  return np.asarray(_aggregate_posterior_log_prob_jit(model, params, z, chunks, mask))


@functools.partial(jax.jit, static_argnums=(0,))
def _surgery_batch(model, params, x, keys, data_chunks, data_mask):
  d = models_base.draws(model, params, x, keys)
  z, log_q, log_p = d.z, d.log_q, d.log_prior                        # [K, B]
  if z.ndim != 3:
    raise ValueError(f"elbo_surgery needs one latent array z [B, D] per datapoint; the model's "
                     f"sample_q gives shape {z.shape[1:]}")
  k, b, d = z.shape
  log_agg = _log_q_agg(model, params, z.reshape(k * b, d), data_chunks, data_mask).reshape(k, b)
  # per example: mean over the K draws of each term
  return (jnp.mean(log_q - log_p, 0), jnp.mean(log_q - log_agg, 0), jnp.mean(log_agg - log_p, 0))


def elbo_surgery(model, params, images, key: Array, *, num_samples: int = 1,
                 batch_size: int = 100, chunk_size: int = 500) -> SurgeryResult:
  """Average KL, mutual information and marginal KL of a model's posterior over a dataset.

  Each example ``x_n`` draws ``num_samples`` codes ``z ~ q(z|x_n)``; at each code the three
  integrands share ``log q(z|x_n)``, ``log p(z)`` and ``log q_agg(z)`` (over all ``N`` examples,
  streamed in chunks), so ``average_kl = mutual_information + marginal_kl`` holds per draw up to
  float rounding, and each term is an unbiased-in-``z`` Monte Carlo estimate (``log q_agg`` is
  exact for the dataset's empirical distribution).

  .. math:: \\mathbb{E}_n KL(q(z|x_n) \\| p(z)) = I_q[n; z] + KL(q_{agg}(z) \\| p(z))

  Args:
    model: a contract model with one latent array ``z`` ``[B, D]`` (a library VAE with one
      stochastic layer, a :class:`~dgmjax.models.PriorVAE`, a model of
      :func:`~dgmjax.models.from_networks`).
    params: model parameters.
    images: the dataset ``[N, ...]`` (binarized images for a Bernoulli model).
    key: PRNG key.
    num_samples: draws of ``z`` per example.
    batch_size: examples per query batch (memory ``O(batch_size * num_samples * chunk_size)``).
    chunk_size: data points per chunk of the ``log q_agg`` sum.

  Returns:
    :class:`SurgeryResult`.

  References:
    Hoffman & Johnson, ELBO surgery: yet another way to carve up the variational evidence lower
    bound, NIPS 2016 Workshop on Advances in Approximate Bayesian Inference.
  """
  models_base.check_data(model, images, "images")  # the likelihood's support, before any work
  arr = check_dataset(images)
  for name, v in (("num_samples", num_samples), ("batch_size", batch_size),
                  ("chunk_size", chunk_size)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
      raise ValueError(f"{name} must be a positive int, got {v!r}")
  n = arr.shape[0]
  data_chunks, data_mask = chunked(arr, int(min(chunk_size, n)))
  data_chunks, data_mask = jnp.asarray(data_chunks), jnp.asarray(data_mask)
  bs = int(min(batch_size, n))
  queries, qmask = chunked(arr, bs)
  out = []
  for i in range(queries.shape[0]):
    keys = jax.random.split(jax.random.fold_in(key, i), num_samples)
    terms = _surgery_batch(model, params, jnp.asarray(queries[i]), keys, data_chunks, data_mask)
    m = qmask[i]
    out.append(np.stack([np.asarray(t, np.float64)[m] for t in terms], 1))
  per_example = np.concatenate(out, 0)                               # [N, 3]
  mean = per_example.mean(0)
  se = per_example.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(3)
  return SurgeryResult(float(mean[0]), float(mean[1]), float(mean[2]), float(se[0]),
                       float(se[1]), float(se[2]), int(n), int(num_samples))
