"""Latent units: which latent dimensions a model uses (active units, KL per dimension).

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks, evaluation
from dgmjax.diagnostics.surgery import check_dataset
from dgmjax.models import base as models_base

__all__ = ["active_units", "kl_per_dimension"]

Array = jax.Array


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
      :func:`dgmjax.evaluation.log_likelihood`).
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
  images = evaluation.check_images(images)
  batch_size = min(batch_size, images.shape[0])
  fn = jax.jit(lambda p, x, k: models_base.posterior_means(model, p, x, k, num_samples))
  chunks = []
  for b, x, m in evaluation.padded_batches(images, batch_size):
    means = jax.device_get(fn(params, x, jax.random.fold_in(key, b)))
    chunks.append([np.asarray(a, np.float64)[:m].reshape(m, -1) for a in means])
  layers = [np.concatenate([c[l] for c in chunks], 0) for l in range(len(chunks[0]))]
  variances = [np.var(a, axis=0) for a in layers]
  return {"active": [int((v > threshold).sum()) for v in variances],
          "variances": [v.tolist() for v in variances]}


def kl_per_dimension(model, params, images, *, batch_size: int = 500) -> np.ndarray:
  """Average analytic ``KL(q(z_d|x) || p(z_d))`` per latent dimension over a dataset: ``[D]``.

  Reads the model's ``kl(params, x) -> [B, D]`` (the optional contract function; a diagonal
  Gaussian posterior against a standard Normal prior in the library's VAEs and in models of
  :func:`~dgmjax.models.from_networks`). Sums to the average KL; a dimension with KL near 0 is
  inactive (collapsed to the prior).

  .. math:: KL_d = \\mathbb{E}_n \\tfrac12 (\\sigma_d(x_n)^2 + \\mu_d(x_n)^2 - 1 - 2\\log\\sigma_d(x_n))

  Args:
    model: a contract model with ``kl``.
    params: model parameters.
    images: the dataset ``[N, ...]``.
    batch_size: examples per encoder call.

  Returns:
    ``[D]`` float64 numpy array (nats); a latent ``[B, ...]`` of several axes is flattened.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (active units).
  """
  if not models_base.has(model, "kl"):
    raise TypeError(f"kl_per_dimension needs the model to provide kl(...); {type(model).__name__} "
                    "does not (see dgmjax.models.base for the optional contract functions)")
  models_base.check_data(model, images, "images")  # the likelihood's support, before any work
  arr = check_dataset(images)
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
  fn = jax.jit(lambda p, x: (lambda k: k.reshape(k.shape[0], -1))(model.kl(p, x)))
  total = None
  for s in range(0, arr.shape[0], batch_size):
    kl = np.asarray(fn(params, jnp.asarray(arr[s:s + batch_size])), np.float64).sum(0)
    total = kl if total is None else total + kl
  return total / arr.shape[0]
