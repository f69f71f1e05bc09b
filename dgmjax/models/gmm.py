"""The Gaussian mixture model (GMM), solvable in closed form.

``p(z) = Cat(softmax(logits))``, ``p(x|z) = N(mu_z, Sigma_z)``: ``log p(x)`` and ``p(z|x)`` are
exact, so EM (:func:`dgmjax.inference.em.gmm_em`) runs with closed-form steps and never decreases
the likelihood.

Conventions: data are ``[N, D]`` (one example per row); keys are typed (``jax.random.key``).
Checks on concrete inputs (non-finite data, singular covariances) raise ``ValueError`` before any
work is done; traced values cannot be checked and pass.

References:
  Dempster, Laird & Rubin, Maximum Likelihood from Incomplete Data via the EM Algorithm, JRSS B 1977.
  Bishop, Pattern Recognition and Machine Learning, 2006, Section 9.2.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks
from dgmjax import distributions
from dgmjax.models import data_matrix

Array = jax.Array

__all__ = [
    "GMMParams", "check_params", "check_scale_tril", "gmm_component_log_probs", "gmm_covariances",
    "gmm_elbo", "gmm_init", "gmm_log_joint", "gmm_log_prob", "gmm_params", "gmm_posterior",
    "gmm_sample",
]


def check_scale_tril(name: str, scale_tril) -> None:
  """A Cholesky factor must have finite, numerically non-zero diagonal entries.

  "Numerically singular" means ``min |L_dd| <= sqrt(eps) * max |L_dd|`` within a component, i.e. a
  covariance condition number beyond ``1 / eps`` of the dtype.
  """
  if not _checks.is_concrete(scale_tril):
    return
  arr = np.asarray(scale_tril)
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} has non-finite entries: the covariance is not positive definite")
  diag = np.abs(np.diagonal(arr, axis1=-2, axis2=-1))
  eps = np.finfo(arr.dtype).eps if np.issubdtype(arr.dtype, np.floating) else 1e-16
  bad = diag.min(axis=-1) <= np.sqrt(eps) * diag.max(axis=-1)
  if np.any(bad):
    idx = np.argwhere(np.atleast_1d(bad))[:, 0].tolist()
    raise ValueError(f"{name} is (numerically) singular for component(s) {idx}: a covariance "
                     "must be positive definite (add a ridge, e.g. reg_covar * I)")


class GMMParams(NamedTuple):
  """Gaussian-mixture parameters.

  Attributes:
    logits: unnormalised log mixing weights ``log pi`` (up to a constant), ``[C]``.
    means: component means ``mu_c``, ``[C, D]``.
    scale_tril: lower Cholesky factors ``L_c`` of the covariances ``Sigma_c = L_c L_c^T``,
      ``[C, D, D]``.
  """
  logits: Array
  means: Array
  scale_tril: Array


def check_params(params: GMMParams) -> None:
  """Shapes of :class:`GMMParams` and non-singular (concrete) Cholesky factors; else ``ValueError``."""
  c = jnp.shape(params.logits)
  if len(c) != 1 or jnp.shape(params.means)[:1] != c or jnp.ndim(params.means) != 2:
    raise ValueError(f"GMMParams: logits must be [C] and means [C, D], got {jnp.shape(params.logits)}"
                     f" and {jnp.shape(params.means)}")
  d = jnp.shape(params.means)[1]
  if jnp.shape(params.scale_tril) != c + (d, d):
    raise ValueError(f"GMMParams: scale_tril must be [C, D, D] = {c + (d, d)}, got "
                     f"{jnp.shape(params.scale_tril)}")
  check_scale_tril("GMMParams.scale_tril", params.scale_tril)


def gmm_params(logits: Array, means: Array, covariances: Array) -> GMMParams:
  """Builds :class:`GMMParams` from full covariances, checking that they are positive definite.

  .. math:: \\Sigma_c = L_c L_c^T \\text{ (Cholesky)}

  Args:
    logits: ``[C]`` log mixing weights (normalised or not).
    means: ``[C, D]``.
    covariances: ``[C, D, D]`` symmetric positive definite.

  Returns:
    The parameters, with ``scale_tril = cholesky(covariances)``.

  Raises:
    ValueError: if (concrete) covariances are not symmetric or not positive definite (singular).
  """
  covariances = jnp.asarray(covariances)
  if _checks.is_concrete(covariances):
    cov = np.asarray(covariances)
    if not np.all(np.isfinite(cov)):
      raise ValueError("covariances have non-finite entries")
    if not np.allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-5,
                       atol=1e-8 * max(1.0, float(np.abs(cov).max(initial=0.0)))):
      raise ValueError("covariances must be symmetric")
  chol = jnp.linalg.cholesky(covariances)
  params = GMMParams(jnp.asarray(logits), jnp.asarray(means), chol)
  check_params(params)
  return params


def gmm_covariances(params: GMMParams) -> Array:
  """The covariances ``L_c L_c^T``, ``[C, D, D]``."""
  return params.scale_tril @ jnp.swapaxes(params.scale_tril, -1, -2)


def gmm_component_log_probs(params: GMMParams, x: Array) -> Array:
  """``log pi_c + log N(x; mu_c, Sigma_c)`` for every component: ``[..., D] -> [..., C]``.

  .. math:: \\log p(x, z=c) = \\log \\pi_c + \\log N(x; \\mu_c, \\Sigma_c)
  """
  check_params(params)
  data_matrix.check_data_matrix("x", x, ndim=None)
  lp = distributions.mvn_log_prob(jnp.expand_dims(x, -2), params.means, params.scale_tril)
  log_w = jax.nn.log_softmax(params.logits)
  return lp + jnp.broadcast_to(log_w, lp.shape)


def gmm_log_prob(params: GMMParams, x: Array) -> Array:
  """Exact ``log p(x)`` of the mixture: ``[..., D] -> [...]``.

  .. math:: \\log p(x) = \\log \\sum_{c=1}^C \\pi_c N(x; \\mu_c, \\Sigma_c)

  Raises:
    ValueError: for non-finite (concrete) ``x`` or a singular covariance.
  """
  return jax.nn.logsumexp(gmm_component_log_probs(params, x), axis=-1)


def gmm_posterior(params: GMMParams, x: Array) -> Array:
  """Exact posterior ``p(z|x)`` as normalised log-probabilities (log responsibilities).

  .. math:: \\log p(z=c|x) = \\log \\pi_c N(x; \\mu_c, \\Sigma_c) - \\log p(x)

  Args:
    params: the mixture.
    x: ``[..., D]``.

  Returns:
    ``[..., C]``; also valid logits for :func:`dgmjax.distributions.categorical_log_prob`.
  """
  return jax.nn.log_softmax(gmm_component_log_probs(params, x), axis=-1)


def gmm_log_joint(params: GMMParams, x: Array, z: Array) -> Array:
  """``log p(x, z) = log pi_z + log N(x; mu_z, Sigma_z)``; ``x`` ``[..., D]``, ``z`` int ``[...]``.

  .. math:: \\log p(x, z) = \\log \\pi_z + \\log N(x; \\mu_z, \\Sigma_z)
  """
  check_params(params)
  z = jnp.asarray(z)
  log_w = jax.nn.log_softmax(params.logits)
  lp = distributions.mvn_log_prob(x, params.means[z], params.scale_tril[z])
  return lp + log_w[z]


def gmm_elbo(params: GMMParams, x: Array, q_logits: Array) -> Array:
  """Exact ELBO of the mixture for a categorical ``q(z)``, summed over the ``C`` values of ``z``.

  Equals ``log p(x)`` when ``q = p(z|x)`` (:func:`gmm_posterior`), and ``log p(x) - KL(q || p(z|x))``
  otherwise; components with ``q(z) = 0`` contribute nothing (``0 log 0 = 0``).

  .. math:: \\mathcal{L}(q) = \\sum_{c} q(c) [\\log p(x, c) - \\log q(c)]

  Args:
    params: the mixture.
    x: ``[..., D]``.
    q_logits: ``[..., C]`` logits of ``q``.

  Returns:
    ``[...]``.
  """
  log_joint = gmm_component_log_probs(params, x)
  log_q = jax.nn.log_softmax(q_logits, axis=-1)
  log_q = jnp.broadcast_to(log_q, log_joint.shape)
  q = jnp.exp(log_q)
  # q = 0 with log p(x, c) = -inf would give 0 * -inf = NaN: such terms are 0.
  return jnp.sum(jnp.where(q > 0, q * (log_joint - log_q), 0.0), axis=-1)


def gmm_sample(params: GMMParams, key: Array, num: int) -> tuple[Array, Array]:
  """Ancestral sampling: ``z ~ Cat(pi)``, ``x ~ N(mu_z, Sigma_z)``.

  Args:
    params: the mixture.
    key: a JAX PRNG key.
    num: number of draws.

  Returns:
    ``(x [num, D], z [num])`` with integer components ``z``.
  """
  check_params(params)
  num = _checks.check_int("num", num, minimum=1)
  kz, kx = jax.random.split(key)
  z = jax.random.categorical(kz, params.logits, shape=(num,))
  x = distributions.sample_mvn(kx, params.means[z], params.scale_tril[z])
  return x, z


def gmm_init(key: Array, x: Array, num_components: int, *, reg_covar: float = 1e-6) -> GMMParams:
  """Initial mixture: means at ``C`` distinct random data points, every covariance the data's.

  Args:
    key: a JAX PRNG key.
    x: data ``[N, D]`` with ``N >= C``.
    num_components: ``C``.
    reg_covar: ridge added to the diagonal of the data covariance.

  Returns:
    :class:`GMMParams` with equal weights.
  """
  data_matrix.check_data_matrix("x", x)
  x = jnp.asarray(x)
  n, d = x.shape
  num_components = _checks.check_int("num_components", num_components, minimum=1)
  if not 1 <= num_components <= n:
    raise ValueError(f"num_components must be in [1, N={n}], got {num_components}")
  _checks.check_real("reg_covar", reg_covar, minimum=0.0)
  return _gmm_init(key, x, jnp.asarray(reg_covar, x.dtype), num_components=num_components)


@functools.partial(jax.jit, static_argnames=("num_components",))
def _gmm_init(key, x, reg_covar, num_components):
  n, d = x.shape
  idx = jax.random.choice(key, n, (num_components,), replace=False)
  _, cov = data_matrix.moments(x)
  cov = cov + reg_covar * jnp.eye(d, dtype=x.dtype)
  chol = jnp.broadcast_to(jnp.linalg.cholesky(cov), (num_components, d, d))
  return GMMParams(jnp.zeros((num_components,), x.dtype), x[idx], chol)
