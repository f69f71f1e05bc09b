"""Probabilistic PCA (PPCA): its closed-form maximum-likelihood fit and likelihood.

``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, s^2 I)``. The model itself is
:mod:`dgmjax.models.linear_gaussian` (``log_marginal``, ``posterior``, ``log_joint``, ``sample``,
parameters :class:`~dgmjax.models.linear_gaussian.Params`); this module adds the closed-form
maximum-likelihood fit :func:`ppca_ml`, the likelihood from sufficient statistics and the angles
between subspaces. Its EM is :func:`dgmjax.inference.em.ppca_em`.

Conventions: data are ``[N, D]`` (one example per row). Checks on concrete inputs (non-finite
data, data in a ``q``-dimensional subspace) raise ``ValueError`` before any work is done.

References:
  Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks
from dgmjax.models import data_matrix, linear_gaussian

Array = jax.Array

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = ["covariance_eigenvalues", "ppca_mean_log_likelihood", "ppca_ml", "subspace_angles"]


def covariance_eigenvalues(x: Array) -> Array:
  """Eigenvalues of the sample covariance ``S = (1/N) sum_n (x_n - xbar)(x_n - xbar)^T``, descending.

  These decide PPCA: the ML noise variance is the mean of the discarded ones, and a linear VAE with
  noise variance ``s^2`` keeps exactly the directions with eigenvalue above ``s^2``.

  Args:
    x: ``[N, D]``.

  Returns:
    ``[D]``, descending, clipped at 0.
  """
  data_matrix.check_data_matrix("x", x)
  return _covariance_eigenvalues(jnp.asarray(x))


@jax.jit
def _covariance_eigenvalues(x):
  _, cov = data_matrix.moments(x)
  return jnp.maximum(jnp.linalg.eigvalsh(cov)[::-1], 0.0)


def ppca_ml(x: Array, z_dim: int, *, noise_variance=None) -> linear_gaussian.Params:
  """Closed-form maximum-likelihood PPCA (Tipping & Bishop 1999), as linear-Gaussian parameters.

  With ``S = U diag(lambda) U^T`` (eigenvalues descending), the likelihood is maximised by

  .. math:: b = \\bar x, \\quad s^2 = \\frac{1}{D - q}\\sum_{j > q} \\lambda_j, \\quad W = U_q (\\Lambda_q - s^2 I)^{1/2} R

  (here ``R = I``, so the columns of ``W`` are orthogonal and the posterior covariance is diagonal).
  If ``noise_variance`` is given, ``s^2`` is fixed to it and ``W = U_q max(Lambda_q - s^2, 0)^{1/2}``
  maximises the likelihood over ``(W, b)``: columns whose eigenvalue is below ``s^2`` are zero, the
  "collapsed" latent dimensions of a linear VAE (Lucas et al. 2019).

  Args:
    x: data ``[N, D]``.
    z_dim: ``q < D`` (static).
    noise_variance: optional fixed ``s^2 > 0``.

  Returns:
    :class:`dgmjax.models.linear_gaussian.Params` ``(w [D, q], b [D], log_scale)``; use
    :func:`~dgmjax.models.linear_gaussian.log_marginal` for its exact log-likelihood.

  Raises:
    ValueError: non-finite data, ``q >= D`` without a fixed noise variance, or data lying in a
      ``q``-dimensional subspace (``s^2 = 0``: the likelihood is unbounded).

  References:
    Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999, eq. (7)-(8).
  """
  data_matrix.check_data_matrix("x", x)
  x = jnp.asarray(x)
  d = x.shape[1]
  if not isinstance(z_dim, (int, np.integer)) or z_dim < 1:
    raise ValueError(f"z_dim must be a positive int, got {z_dim!r}")
  if noise_variance is None and z_dim >= d:
    raise ValueError(f"z_dim={z_dim} must be < D={d} for the ML noise variance to be defined")
  if z_dim > d:
    raise ValueError(f"z_dim={z_dim} exceeds D={d}")
  if noise_variance is not None:
    _checks.check_positive("noise_variance", noise_variance)
  fixed = None if noise_variance is None else jnp.asarray(noise_variance, x.dtype)
  params, evals = _ppca_ml(x, fixed, z_dim=z_dim)
  if noise_variance is None and _checks.is_concrete(params.log_scale):
    if not float(jnp.exp(2.0 * params.log_scale)) > float(jnp.finfo(x.dtype).eps) * float(evals[0]):
      raise ValueError("the data lie in a subspace of dimension <= z_dim: the ML noise variance is "
                       "0 and the PPCA likelihood is unbounded (singular covariance)")
  return params


@functools.partial(jax.jit, static_argnames=("z_dim",))
def _ppca_ml(x, noise_variance, z_dim):
  mean, cov = data_matrix.moments(x)
  evals, evecs = jnp.linalg.eigh(cov)
  evals = jnp.maximum(evals[::-1], 0.0)
  evecs = evecs[:, ::-1]
  s2 = jnp.mean(evals[z_dim:]) if noise_variance is None else noise_variance
  scale = jnp.sqrt(jnp.maximum(evals[:z_dim] - s2, 0.0))
  w = evecs[:, :z_dim] * scale[None, :]
  return linear_gaussian.Params(w, mean, (0.5 * jnp.log(s2)).astype(x.dtype)), evals


def ppca_mean_log_likelihood(params: linear_gaussian.Params, mean: Array, cov: Array) -> Array:
  """Mean PPCA log-likelihood per example from the data's sufficient statistics.

  Equals ``mean_n linear_gaussian.log_marginal(params, x_n)`` for data with sample mean ``xbar`` and
  (``1/N``) sample covariance ``S``, at ``O(D^3)`` instead of ``O(N D^2)``.

  .. math:: \\bar\\ell = -\\tfrac12 \\big(D\\log 2\\pi + \\log|C| + \\mathrm{tr}(C^{-1}[S + (\\bar x-b)(\\bar x-b)^T])\\big),\\quad C = WW^T + s^2 I

  Args:
    params: PPCA parameters.
    mean: ``xbar``, ``[D]``.
    cov: ``S``, ``[D, D]``.

  Returns:
    A scalar.
  """
  d = params.w.shape[0]
  chol = jnp.linalg.cholesky(linear_gaussian.marginal_cov(params))
  diff = mean - params.b
  second = cov + jnp.outer(diff, diff)
  trace = jnp.trace(jax.scipy.linalg.cho_solve((chol, True), second))
  log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
  return -0.5 * (d * _LOG_2PI + log_det + trace)


@jax.jit
def subspace_angles(a: Array, b: Array) -> Array:
  """Principal angles between the column spaces of ``a`` ``[D, p]`` and ``b`` ``[D, q]``, descending.

  Cosines come from the singular values of ``Q_a^T Q_b``; small angles, where ``arccos`` loses
  precision, from the sines (singular values of ``Q_b - Q_a Q_a^T Q_b``), as in
  ``scipy.linalg.subspace_angles``.

  .. math:: \\cos\\theta_k = \\sigma_k(Q_a^T Q_b)

  Args:
    a: ``[D, p]`` of full column rank.
    b: ``[D, q]`` of full column rank.

  Returns:
    ``[min(p, q)]`` angles in radians, largest first.

  References:
    Björck & Golub, Numerical Methods for Computing Angles between Linear Subspaces, Math. Comp.
    1973.
  """
  if jnp.ndim(a) != 2 or jnp.ndim(b) != 2 or jnp.shape(a)[0] != jnp.shape(b)[0]:
    raise ValueError(f"a and b must be [D, p] and [D, q], got {jnp.shape(a)} and {jnp.shape(b)}")
  qa, _ = jnp.linalg.qr(a)
  qb, _ = jnp.linalg.qr(b)
  if qa.shape[1] < qb.shape[1]:
    qa, qb = qb, qa
  cross = qa.T @ qb
  cos = jnp.clip(jnp.linalg.svd(cross, compute_uv=False), -1.0, 1.0)  # descending
  sin = jnp.clip(jnp.linalg.svd(qb - qa @ cross, compute_uv=False), -1.0, 1.0)[::-1]  # ascending
  small = jnp.square(cos) > 0.5
  angles = jnp.where(small, jnp.arcsin(sin), jnp.arccos(cos))  # ascending
  return angles[::-1]
