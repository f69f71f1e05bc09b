"""Expectation-maximisation for the models solvable in closed form: the Gaussian mixture and PPCA.

For both, ``p(z|x)`` is exact, so the E-step sets ``q = p(z|x)`` (which makes the ELBO equal to
``log p(x)``) and the M-step maximises the ELBO in ``theta`` in closed form: the likelihood never
decreases. Both loops are jitted (a ``lax.while_loop``) with a fixed-size trace (:class:`EMResult`).
The models are :mod:`dgmjax.models.gmm` and :mod:`dgmjax.models.ppca`
(:mod:`dgmjax.models.linear_gaussian`).

Conventions: data are ``[N, D]``; log-likelihoods are averages per example. Checks on concrete
inputs (non-finite data, singular covariances) raise ``ValueError`` before any work is done.

References:
  Dempster, Laird & Rubin, Maximum Likelihood from Incomplete Data via the EM Algorithm, JRSS B 1977.
  Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import _checks
from dgmjax.models import data_matrix, gmm, linear_gaussian, ppca

Array = jax.Array

__all__ = ["EMResult", "gmm_e_step", "gmm_em", "gmm_em_step", "gmm_m_step", "ppca_em",
           "ppca_em_step"]


class EMResult(NamedTuple):
  """Result of an EM run.

  Attributes:
    params: the parameters after ``num_iters`` EM iterations.
    log_likelihood: ``[max_iters + 1]`` mean ``log p(x_n)`` per example: entry ``t`` is at the
      parameters after ``t`` iterations (entry 0 at the initial parameters); entries after
      ``num_iters`` repeat the last value.
    num_iters: number of iterations run (int scalar).
    converged: whether the change of the mean log-likelihood fell to ``tol`` or below.
  """
  params: Any
  log_likelihood: Array
  num_iters: Array
  converged: Array


def _em_loop(step: Callable, params, aux, ll0: Array, max_iters: int, tol) -> EMResult:
  """``lax.while_loop`` over ``(params, aux, ll) <- step(params, aux)`` with a fixed-size trace."""
  trace = jnp.full((max_iters + 1,), ll0)

  def cond(carry):
    _, _, _, t, _, done = carry
    return (t < max_iters) & ~done

  def body(carry):
    params, aux, ll, t, trace, _ = carry
    params, aux, new_ll = step(params, aux)
    trace = trace.at[t + 1].set(new_ll)
    # Absolute change of the mean log-likelihood per example (scikit-learn's criterion).
    done = jnp.abs(new_ll - ll) <= tol
    return params, aux, new_ll, t + 1, trace, done

  init = (params, aux, ll0, jnp.zeros((), jnp.int32), trace, jnp.zeros((), bool))
  params, _, ll, t, trace, done = lax.while_loop(cond, body, init)
  trace = jnp.where(jnp.arange(max_iters + 1) > t, ll, trace)
  return EMResult(params, trace, t, done)


def gmm_e_step(params: gmm.GMMParams, x: Array) -> tuple[Array, Array]:
  """E-step: log responsibilities ``log p(z|x_n)`` ``[N, C]`` and the mean ``log p(x_n)`` (scalar).

  .. math:: r_{nc} = p(z=c|x_n), \\quad \\bar\\ell = \\frac1N \\sum_n \\log p(x_n)
  """
  comp = gmm.gmm_component_log_probs(params, x)
  ll = jax.nn.logsumexp(comp, axis=-1, keepdims=True)
  return comp - ll, jnp.mean(ll)


def gmm_m_step(x: Array, log_resp: Array, params: gmm.GMMParams, *,
               reg_covar: float = 1e-6) -> gmm.GMMParams:
  """M-step: the closed-form maximiser of the ELBO ``sum_n sum_c r_nc log p(x_n, c)`` in ``theta``.

  .. math:: N_c = \\sum_n r_{nc},\\; \\pi_c = \\frac{N_c}{N},\\; \\mu_c = \\frac{\\sum_n r_{nc} x_n}{N_c},\\; \\Sigma_c = \\frac{\\sum_n r_{nc}(x_n-\\mu_c)(x_n-\\mu_c)^T}{N_c} + \\epsilon I

  Policy for degenerate components (never NaN): a component whose responsibilities sum to at most
  ``10 * eps * N`` ("lost all its points"), or whose updated covariance is not numerically positive
  definite (it collapsed onto fewer than ``D + 1`` points with ``reg_covar = 0``), *keeps its
  previous mean and covariance*. Its weight still follows ``N_c / N``, with ``N_c`` floored at the
  smallest normal number of the dtype so that its log-weight stays finite (the component is
  effectively switched off but can be revived by later E-steps).

  ``reg_covar = epsilon`` (as in scikit-learn) keeps covariances positive definite; with
  ``epsilon > 0`` the M-step is no longer the exact maximiser, so the monotonicity of EM holds
  exactly only for ``reg_covar = 0`` (in practice it holds for small ridges too).

  Args:
    x: data ``[N, D]``.
    log_resp: ``log q(z = c | x_n)``, ``[N, C]`` (the E-step's output for exact EM).
    params: the current parameters (kept for degenerate components).
    reg_covar: ``epsilon >= 0``.

  Returns:
    The new :class:`~dgmjax.models.gmm.GMMParams`.
  """
  n, d = x.shape
  dtype = x.dtype
  resp = jnp.exp(log_resp)
  nk = jnp.sum(resp, axis=0)
  tiny = jnp.finfo(dtype).tiny
  safe_nk = jnp.maximum(nk, tiny)
  means = (resp.T @ x) / safe_nk[:, None]
  diff = x[None, :, :] - means[:, None, :]
  cov = jnp.einsum("nc,cnd,cne->cde", resp, diff, diff) / safe_nk[:, None, None]
  cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + reg_covar * jnp.eye(d, dtype=dtype)[None]
  chol = jnp.linalg.cholesky(cov)
  diag = jnp.abs(jnp.diagonal(chol, axis1=-2, axis2=-1))
  chol_ok = (jnp.all(jnp.isfinite(chol), axis=(-2, -1))
             & (jnp.min(diag, axis=-1) > jnp.sqrt(jnp.finfo(dtype).eps) * jnp.max(diag, axis=-1)))
  ok = (nk > 10.0 * jnp.finfo(dtype).eps * n) & chol_ok & jnp.all(jnp.isfinite(means), axis=-1)
  means = jnp.where(ok[:, None], means, params.means)
  chol = jnp.where(ok[:, None, None], chol, params.scale_tril)
  logits = jnp.log(safe_nk) - math.log(n)
  return gmm.GMMParams(logits.astype(dtype), means, chol)


def gmm_em_step(params: gmm.GMMParams, x: Array, *,
                reg_covar: float = 1e-6) -> tuple[gmm.GMMParams, Array]:
  """One EM iteration (E-step at ``params``, then M-step).

  Returns:
    ``(new_params, mean log p(x) at the old params)``.
  """
  log_resp, ll = gmm_e_step(params, x)
  return gmm_m_step(x, log_resp, params, reg_covar=reg_covar), ll


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _gmm_em(params, x, tol, reg_covar, max_iters):
  log_resp, ll0 = gmm_e_step(params, x)

  def step(params, log_resp):
    params = gmm_m_step(x, log_resp, params, reg_covar=reg_covar)
    log_resp, ll = gmm_e_step(params, x)
    return params, log_resp, ll

  return _em_loop(step, params, log_resp, ll0, max_iters, tol)


def gmm_em(params: gmm.GMMParams, x: Array, *, max_iters: int = 100, tol: float = 1e-6,
           reg_covar: float = 1e-6) -> EMResult:
  """Expectation-maximisation for the Gaussian mixture, jitted, with a ``lax.while_loop``.

  Each iteration sets ``q(z|x_n) = p(z|x_n)`` (E-step, :func:`gmm_e_step`), which makes the ELBO
  equal to ``log p(x)``, then maximises the ELBO in ``theta`` in closed form (M-step,
  :func:`gmm_m_step`), so ``log p(x)`` never decreases (exactly so for ``reg_covar = 0``).
  Stops when the mean log-likelihood changes by ``tol`` or less, or after ``max_iters`` iterations.

  .. math:: \\theta^{t+1} = \\arg\\max_\\theta \\sum_n \\mathbb{E}_{p(z|x_n, \\theta^t)}[\\log p(x_n, z|\\theta)]

  Args:
    params: initial parameters (e.g. :func:`dgmjax.models.gmm.gmm_init`).
    x: data ``[N, D]``.
    max_iters: the most iterations (static).
    tol: tolerance on the change of the mean log-likelihood per example.
    reg_covar: ridge ``epsilon`` added to every covariance (see :func:`gmm_m_step`).

  Returns:
    :class:`EMResult`. Degenerate components follow the policy of :func:`gmm_m_step`.

  Raises:
    ValueError: for non-finite (concrete) data or singular initial covariances.

  References:
    Dempster, Laird & Rubin, JRSS B 1977; Bishop, Pattern Recognition and Machine Learning, 9.2.2.
  """
  data_matrix.check_data_matrix("x", x)
  gmm.check_params(params)
  _checks.check_nonnegative("reg_covar", reg_covar)
  _checks.check_nonnegative("tol", tol)
  if jnp.shape(params.means)[1] != jnp.shape(x)[1]:
    raise ValueError(f"x has D={jnp.shape(x)[1]}, params have D={jnp.shape(params.means)[1]}")
  x = jnp.asarray(x)
  params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
  return _gmm_em(params, x, jnp.asarray(tol, x.dtype), jnp.asarray(reg_covar, x.dtype),
                 max_iters=max_iters)


def ppca_em_step(params: linear_gaussian.Params, mean: Array, cov: Array) -> linear_gaussian.Params:
  """One EM iteration for PPCA (Tipping & Bishop 1999, eq. (29)-(30)), preceded by ``b = xbar``.

  ``b = xbar`` maximises the likelihood in ``b`` for any ``(W, s^2)``; the EM update of ``(W, s^2)``
  (E-step: the Gaussian posterior moments; M-step: the closed-form maximiser) then never decreases
  it either. With ``M = W^T W + s^2 I``:

  .. math:: \\tilde W = S W (s^2 I + M^{-1} W^T S W)^{-1}, \\quad \\tilde s^2 = \\tfrac1D \\mathrm{tr}(S - S W M^{-1} \\tilde W^T)

  Args:
    params: current parameters.
    mean: sample mean ``[D]``.
    cov: sample covariance ``S`` (``1/N``), ``[D, D]``.

  Returns:
    The new :class:`~dgmjax.models.linear_gaussian.Params`.

  References:
    Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999, Appendix A.
  """
  w = params.w
  d, q = w.shape
  s2 = jnp.exp(2.0 * params.log_scale)
  eye = jnp.eye(q, dtype=w.dtype)
  m = w.T @ w + s2 * eye
  sw = cov @ w
  m_inv_wt_sw = jnp.linalg.solve(m, w.T @ sw)
  w_new = jnp.linalg.solve((s2 * eye + m_inv_wt_sw).T, sw.T).T
  sw_m_inv = jnp.linalg.solve(m, sw.T).T
  s2_new = (jnp.trace(cov) - jnp.sum(sw_m_inv * w_new)) / d
  return linear_gaussian.Params(w_new, mean, 0.5 * jnp.log(s2_new))


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _ppca_em(params, x, tol, max_iters):
  mean, cov = data_matrix.moments(x)
  ll0 = ppca.ppca_mean_log_likelihood(params, mean, cov)

  def step(params, aux):
    params = ppca_em_step(params, mean, cov)
    return params, aux, ppca.ppca_mean_log_likelihood(params, mean, cov)

  return _em_loop(step, params, None, ll0, max_iters, tol)


def ppca_em(params: linear_gaussian.Params, x: Array, *, max_iters: int = 1000,
            tol: float = 1e-8) -> EMResult:
  """EM for probabilistic PCA, jitted (``lax.while_loop``), converging to the closed form
  :func:`dgmjax.models.ppca.ppca_ml`.

  Works from the sufficient statistics (``O(D^2 q)`` per iteration after one pass over the data).
  The log-likelihood never decreases (see :func:`ppca_em_step`); the fixed point spans the leading
  ``q`` principal subspace (up to a rotation ``R`` of ``W``'s columns).

  .. math:: \\theta^{t+1} = \\arg\\max_\\theta \\sum_n \\mathbb{E}_{p(z|x_n, \\theta^t)}[\\log p(x_n, z|\\theta)]

  Args:
    params: initial :class:`~dgmjax.models.linear_gaussian.Params` (``w`` of full column rank).
    x: data ``[N, D]``.
    max_iters: the most iterations (static).
    tol: tolerance on the change of the mean log-likelihood per example.

  Returns:
    :class:`EMResult`.

  Raises:
    ValueError: non-finite data, or data lying in a ``q``-dimensional subspace.

  References:
    Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999, Section 3.2.
  """
  data_matrix.check_data_matrix("x", x)
  _checks.check_nonnegative("tol", tol)
  x = jnp.asarray(x)
  d, q = jnp.shape(params.w)
  if x.shape[1] != d:
    raise ValueError(f"x has D={x.shape[1]}, params.w is [{d}, {q}]")
  if q >= d:
    raise ValueError(f"z_dim={q} must be < D={d}")
  if _checks.is_concrete(x):
    ev = np.asarray(ppca.covariance_eigenvalues(x))
    if not ev[q:].mean() > np.finfo(ev.dtype).eps * ev[0]:
      raise ValueError("the data lie in a subspace of dimension <= z_dim: the ML noise variance "
                       "is 0 and the PPCA likelihood is unbounded (singular covariance)")
  params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
  return _ppca_em(params, x, jnp.asarray(tol, x.dtype), max_iters=max_iters)
