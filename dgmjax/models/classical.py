"""Classical latent-variable models solvable in closed form, EM, variational EM and inference gaps.

Two exactly solvable models open the study of latent-variable models:

* the Gaussian mixture (GMM): ``p(z) = Cat(softmax(logits))``, ``p(x|z) = N(mu_z, Sigma_z)``;
* probabilistic PCA (PPCA): ``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, s^2 I)``.

For both, ``log p(x)`` and ``p(z|x)`` are exact, so the EM algorithm (E-step: ``q = p(z|x)``; M-step:
maximise the ELBO in ``theta``) runs with closed-form steps and never decreases the likelihood.
PPCA is :mod:`dgmjax.models.linear_gaussian` (``log_marginal``, ``posterior``, ``log_joint``,
``sample``, parameters :class:`~dgmjax.models.linear_gaussian.Params`); this module adds its
closed-form maximum-likelihood fit :func:`ppca_ml` and its EM :func:`ppca_em`.

On top of those oracles sit the variational code paths that every deep model uses:

* :func:`gaussian_log_weights`, :func:`fit_local_gaussians` and :func:`variational_em`: a
  per-datapoint (non-amortized) diagonal Gaussian ``q_i`` fitted by gradient steps (the variational
  E-step), alternating with gradient steps on ``theta`` (the M-step);
* :func:`amortization_gaps`: ``log p(x) - ELBO`` of an encoder split into the approximation gap and
  the amortization gap (Cremer et al. 2018), for any model given as ``log_joint(params, x, z)``;
* the linear VAE (:func:`linear_vae_init`, :func:`fit_linear_vae`): a linear encoder and a PPCA
  decoder trained on :func:`dgmjax.objectives.elbo`, whose optimum is the PPCA maximum-likelihood
  solution and whose latent dimensions collapse where the data eigenvalues fall below ``s^2``
  (Lucas et al. 2019); its inference gaps are exact (:func:`linear_vae_exact_gaps`).

Conventions: data are ``[N, D]`` (one example per row); log-likelihoods returned by the EM loops are
averages per example; keys are typed (``jax.random.key``) and come first. Checks on concrete inputs
(non-finite data, singular covariances) raise ``ValueError`` before any work is done; traced values
cannot be checked and pass.

References:
  Dempster, Laird & Rubin, Maximum Likelihood from Incomplete Data via the EM Algorithm, JRSS B 1977.
  Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999.
  Cremer, Li & Duvenaud, Inference Suboptimality in Variational Autoencoders, ICML 2018.
  Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on Posterior
  Collapse, NeurIPS 2019.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dgmjax import _checks, _deprecation
from dgmjax import distributions
from dgmjax import objectives
from dgmjax.models import linear_gaussian

Array = jax.Array
LogJoint = Callable[[Any, Array, Array], Array]
Encoder = Callable[[Any, Array], tuple[Array, Array]]

_LOG_2PI = math.log(2.0 * math.pi)

__all__ = [
    # Gaussian mixture
    "GMMParams", "gmm_params", "gmm_covariances", "gmm_init", "gmm_component_log_probs",
    "gmm_log_prob", "gmm_posterior", "gmm_log_joint", "gmm_elbo", "gmm_sample", "gmm_e_step",
    "gmm_m_step", "gmm_em_step", "gmm_em",
    # PPCA
    "covariance_eigenvalues", "ppca_ml", "ppca_mean_log_likelihood", "ppca_em_step", "ppca_em",
    "subspace_angles",
    # EM result
    "EMResult",
    # variational EM and gaps
    "gaussian_log_weights", "fit_local_gaussians", "VEMResult", "variational_em",
    "AmortizationGaps", "amortization_gaps", "linear_vae_exact_gaps",
    # linear VAE
    "LinearVAEParams", "linear_vae_init", "linear_vae_encode", "linear_vae_log_joint",
    "linear_vae_log_weights",
    "linear_vae_elbo", "fit_linear_vae",
]


# ----------------------------------------------------------------------------- input checks


def _check_data(name: str, x, *, ndim: int | None = 2) -> None:
  """Rank and finiteness of concrete data (a clear ValueError instead of a NaN later)."""
  if ndim is not None and jnp.ndim(x) != ndim:
    raise ValueError(f"{name} must be [N, D] (rank {ndim}), got shape {jnp.shape(x)}")
  if ndim is None and jnp.ndim(x) < 1:
    raise ValueError(f"{name} must be [..., D], got shape {jnp.shape(x)}")
  if _checks.is_concrete(x):
    arr = np.asarray(x)
    finite = np.isfinite(arr)
    if not finite.all():
      if arr.ndim == 1:
        where = f"at entry {int(np.argwhere(~finite)[0, 0])}"
      else:
        rows = np.argwhere(~finite.reshape(-1, arr.shape[-1]).all(axis=-1))[:, 0]
        where = (f"in {len(rows)} data point(s), the first {name}[{int(rows[0])}]" if arr.ndim == 2
                 else f"in {len(rows)} data point(s) (rows of the [-1, D] view), the first at "
                      f"row {int(rows[0])}")
      raise ValueError(f"{name} has non-finite entries (NaN or inf) {where}")


def _check_scale_tril(name: str, scale_tril) -> None:
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


# ----------------------------------------------------------------------------- Gaussian mixture


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


def _check_gmm(params: GMMParams) -> None:
  c = jnp.shape(params.logits)
  if len(c) != 1 or jnp.shape(params.means)[:1] != c or jnp.ndim(params.means) != 2:
    raise ValueError(f"GMMParams: logits must be [C] and means [C, D], got {jnp.shape(params.logits)}"
                     f" and {jnp.shape(params.means)}")
  d = jnp.shape(params.means)[1]
  if jnp.shape(params.scale_tril) != c + (d, d):
    raise ValueError(f"GMMParams: scale_tril must be [C, D, D] = {c + (d, d)}, got "
                     f"{jnp.shape(params.scale_tril)}")
  _check_scale_tril("GMMParams.scale_tril", params.scale_tril)


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
  _check_gmm(params)
  return params


def gmm_covariances(params: GMMParams) -> Array:
  """The covariances ``L_c L_c^T``, ``[C, D, D]``."""
  return params.scale_tril @ jnp.swapaxes(params.scale_tril, -1, -2)


def gmm_component_log_probs(params: GMMParams, x: Array) -> Array:
  """``log pi_c + log N(x; mu_c, Sigma_c)`` for every component: ``[..., D] -> [..., C]``.

  .. math:: \\log p(x, z=c) = \\log \\pi_c + \\log N(x; \\mu_c, \\Sigma_c)
  """
  _check_gmm(params)
  _check_data("x", x, ndim=None)
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
  _check_gmm(params)
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
    key: a JAX PRNG key (the old order ``gmm_sample(key, params, num)`` works for one release,
      with a ``DeprecationWarning``).
    num: number of draws.

  Returns:
    ``(x [num, D], z [num])`` with integer components ``z``.
  """
  params, key = _deprecation.key_last("gmm_sample", params, key)
  _check_gmm(params)
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
  _check_data("x", x)
  x = jnp.asarray(x)
  n, d = x.shape
  if not 1 <= num_components <= n:
    raise ValueError(f"num_components must be in [1, N={n}], got {num_components}")
  _checks.check_nonnegative("reg_covar", reg_covar)
  return _gmm_init(key, x, jnp.asarray(reg_covar, x.dtype), num_components=num_components)


@functools.partial(jax.jit, static_argnames=("num_components",))
def _gmm_init(key, x, reg_covar, num_components):
  n, d = x.shape
  idx = jax.random.choice(key, n, (num_components,), replace=False)
  _, cov = _moments(x)
  cov = cov + reg_covar * jnp.eye(d, dtype=x.dtype)
  chol = jnp.broadcast_to(jnp.linalg.cholesky(cov), (num_components, d, d))
  return GMMParams(jnp.zeros((num_components,), x.dtype), x[idx], chol)


def gmm_e_step(params: GMMParams, x: Array) -> tuple[Array, Array]:
  """E-step: log responsibilities ``log p(z|x_n)`` ``[N, C]`` and the mean ``log p(x_n)`` (scalar).

  .. math:: r_{nc} = p(z=c|x_n), \\quad \\bar\\ell = \\frac1N \\sum_n \\log p(x_n)
  """
  comp = gmm_component_log_probs(params, x)
  ll = jax.nn.logsumexp(comp, axis=-1, keepdims=True)
  return comp - ll, jnp.mean(ll)


def gmm_m_step(x: Array, log_resp: Array, params: GMMParams, *, reg_covar: float = 1e-6) -> GMMParams:
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
    The new :class:`GMMParams`.
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
  return GMMParams(logits.astype(dtype), means, chol)


def gmm_em_step(params: GMMParams, x: Array, *, reg_covar: float = 1e-6) -> tuple[GMMParams, Array]:
  """One EM iteration (E-step at ``params``, then M-step).

  Returns:
    ``(new_params, mean log p(x) at the old params)``.
  """
  log_resp, ll = gmm_e_step(params, x)
  return gmm_m_step(x, log_resp, params, reg_covar=reg_covar), ll


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


@functools.partial(jax.jit, static_argnames=("max_iters",))
def _gmm_em(params, x, tol, reg_covar, max_iters):
  log_resp, ll0 = gmm_e_step(params, x)

  def step(params, log_resp):
    params = gmm_m_step(x, log_resp, params, reg_covar=reg_covar)
    log_resp, ll = gmm_e_step(params, x)
    return params, log_resp, ll

  return _em_loop(step, params, log_resp, ll0, max_iters, tol)


def gmm_em(params: GMMParams, x: Array, *, max_iters: int = 100, tol: float = 1e-6,
           reg_covar: float = 1e-6) -> EMResult:
  """Expectation-maximisation for the Gaussian mixture, jitted, with a ``lax.while_loop``.

  Each iteration sets ``q(z|x_n) = p(z|x_n)`` (E-step, :func:`gmm_e_step`), which makes the ELBO
  equal to ``log p(x)``, then maximises the ELBO in ``theta`` in closed form (M-step,
  :func:`gmm_m_step`), so ``log p(x)`` never decreases (exactly so for ``reg_covar = 0``).
  Stops when the mean log-likelihood changes by ``tol`` or less, or after ``max_iters`` iterations.

  .. math:: \\theta^{t+1} = \\arg\\max_\\theta \\sum_n \\mathbb{E}_{p(z|x_n, \\theta^t)}[\\log p(x_n, z|\\theta)]

  Args:
    params: initial parameters (e.g. :func:`gmm_init`).
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
  _check_data("x", x)
  _check_gmm(params)
  _checks.check_nonnegative("reg_covar", reg_covar)
  _checks.check_nonnegative("tol", tol)
  if jnp.shape(params.means)[1] != jnp.shape(x)[1]:
    raise ValueError(f"x has D={jnp.shape(x)[1]}, params have D={jnp.shape(params.means)[1]}")
  x = jnp.asarray(x)
  params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
  return _gmm_em(params, x, jnp.asarray(tol, x.dtype), jnp.asarray(reg_covar, x.dtype),
                 max_iters=max_iters)


# ----------------------------------------------------------------------------- PPCA


def _moments(x: Array) -> tuple[Array, Array]:
  """Sample mean ``[D]`` and (biased, ``1/N``) sample covariance ``[D, D]``."""
  mean = jnp.mean(x, axis=0)
  xc = x - mean[None, :]
  return mean, xc.T @ xc / x.shape[0]


def covariance_eigenvalues(x: Array) -> Array:
  """Eigenvalues of the sample covariance ``S = (1/N) sum_n (x_n - xbar)(x_n - xbar)^T``, descending.

  These decide PPCA: the ML noise variance is the mean of the discarded ones, and a linear VAE with
  noise variance ``s^2`` keeps exactly the directions with eigenvalue above ``s^2``.

  Args:
    x: ``[N, D]``.

  Returns:
    ``[D]``, descending, clipped at 0.
  """
  _check_data("x", x)
  return _covariance_eigenvalues(jnp.asarray(x))


@jax.jit
def _covariance_eigenvalues(x):
  _, cov = _moments(x)
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
  _check_data("x", x)
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
  mean, cov = _moments(x)
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
  mean, cov = _moments(x)
  ll0 = ppca_mean_log_likelihood(params, mean, cov)

  def step(params, aux):
    params = ppca_em_step(params, mean, cov)
    return params, aux, ppca_mean_log_likelihood(params, mean, cov)

  return _em_loop(step, params, None, ll0, max_iters, tol)


def ppca_em(params: linear_gaussian.Params, x: Array, *, max_iters: int = 1000,
            tol: float = 1e-8) -> EMResult:
  """EM for probabilistic PCA, jitted (``lax.while_loop``), converging to :func:`ppca_ml`.

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
  _check_data("x", x)
  _checks.check_nonnegative("tol", tol)
  x = jnp.asarray(x)
  d, q = jnp.shape(params.w)
  if x.shape[1] != d:
    raise ValueError(f"x has D={x.shape[1]}, params.w is [{d}, {q}]")
  if q >= d:
    raise ValueError(f"z_dim={q} must be < D={d}")
  if _checks.is_concrete(x):
    ev = np.asarray(covariance_eigenvalues(x))
    if not ev[q:].mean() > np.finfo(ev.dtype).eps * ev[0]:
      raise ValueError("the data lie in a subspace of dimension <= z_dim: the ML noise variance "
                       "is 0 and the PPCA likelihood is unbounded (singular covariance)")
  params = jax.tree.map(lambda a: jnp.asarray(a, x.dtype), params)
  return _ppca_em(params, x, jnp.asarray(tol, x.dtype), max_iters=max_iters)


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


# ----------------------------------------------------------------------------- variational EM


def gaussian_log_weights(log_joint: LogJoint, params, x: Array, loc: Array, log_scale: Array,
                         key: Array, num_samples: int) -> Array:
  """Log-weights ``log p(x, z_k) - log q(z_k)`` for a diagonal Gaussian ``q`` per data point.

  Samples are reparametrized, so the result is differentiable in ``(loc, log_scale)`` and in
  ``params``; reduce it with :func:`dgmjax.objectives.elbo` or :func:`~dgmjax.objectives.iwae_bound`.

  .. math:: \\log w_k = \\log p(x, z_k) - \\log N(z_k; \\mu, \\mathrm{diag}\\,\\sigma^2), \\quad z_k = \\mu + \\sigma \\epsilon_k

  Args:
    log_joint: ``log_joint(params, x, z) -> [B]`` for ``x`` ``[B, ...]`` and ``z`` ``[B, D_z]``.
    params: model parameters passed through to ``log_joint``.
    x: data ``[B, ...]``.
    loc: ``[B, D_z]``.
    log_scale: ``[B, D_z]`` (broadcastable).
    key: a JAX PRNG key (the old order with the key first works for one release, with a
      ``DeprecationWarning``).
    num_samples: ``K`` (static).

  Returns:
    ``[K, B]``.
  """
  log_joint, params, x, loc, log_scale, key = _deprecation.key_last(
      "gaussian_log_weights", log_joint, params, x, loc, log_scale, key)
  keys = jax.random.split(key, num_samples)
  z = jax.vmap(lambda k: distributions.sample_normal(k, loc, log_scale))(keys)
  log_q = distributions.normal_log_prob(z, loc, log_scale)
  log_p = jax.vmap(lambda zk: log_joint(params, x, zk))(z)
  return log_p - log_q


def _local_steps(keys, log_joint, params, x, q, opt_state, optimizer, num_samples):
  """Gradient ascent on the sum over data of each point's ELBO in its own ``q_i``."""

  def loss(q, key):
    lw = gaussian_log_weights(log_joint, params, x, q[0], q[1], key, num_samples)
    # Sum, not mean: each q_i only enters its own ELBO, so the sum gives every q_i its own gradient.
    return -jnp.sum(objectives.elbo(lw))

  def step(carry, key):
    q, s = carry
    val, g = jax.value_and_grad(loss)(q, key)
    updates, s = optimizer.update(g, s, q)
    return (optax.apply_updates(q, updates), s), -val / x.shape[0]

  return lax.scan(step, (q, opt_state), keys)


def fit_local_gaussians(log_joint: LogJoint, params, x: Array, loc: Array, log_scale: Array,
                        key: Array, *, num_steps: int, num_samples: int = 1,
                        optimizer: optax.GradientTransformation | None = None
                        ) -> tuple[Array, Array, Array]:
  """Variational E-step: fits a separate diagonal Gaussian ``q_i`` to each data point by gradient steps.

  Non-amortized inference: ``(mu_i, log sigma_i)`` are free parameters, optimised with reparametrized
  ELBO gradients (``num_samples`` samples per step) from the given starting point. The optimum is the
  best ``q`` in the family, so ``log p(x) - ELBO(q*)`` is the approximation gap.

  Jitted; ``log_joint``, the optimiser(s) and the integer arguments are static (hashed by identity),
  so a new closure or optimiser object compiles anew: define them once and reuse them.

  .. math:: q_i^* = \\arg\\max_{\\mu_i, \\sigma_i} \\mathbb{E}_{N(z; \\mu_i, \\sigma_i^2)}[\\log p(x_i, z) - \\log q_i(z)]

  Args:
    log_joint: ``log_joint(params, x, z) -> [B]``.
    params: model parameters (held fixed).
    x: data ``[B, ...]``.
    loc: initial means ``[B, D_z]`` (e.g. an encoder's output).
    log_scale: initial log standard deviations ``[B, D_z]``.
    key: a JAX PRNG key (the old order with the key first works for one release, with a
      ``DeprecationWarning``).
    num_steps: gradient steps (static).
    num_samples: samples per gradient estimate (static).
    optimizer: an optax transformation (default Adam with a cosine decay from ``1e-2`` to
      ``1e-4`` over ``num_steps``: a constant step leaves ``q`` jittering around its optimum, which
      costs ELBO when the posterior is narrow).

  Returns:
    ``(loc [B, D_z], log_scale [B, D_z], elbo_trace [num_steps])``: the trace holds the mean ELBO
    per example estimated at each step (before its update).

  References:
    Hoffman, Blei, Wang & Paisley, Stochastic Variational Inference, JMLR 2013; Cremer, Li &
    Duvenaud, ICML 2018, Section 3 (local optimisation of q).
  """
  log_joint, params, x, loc, log_scale, key = _deprecation.key_last(
      "fit_local_gaussians", log_joint, params, x, loc, log_scale, key)
  return _fit_local_gaussians(log_joint, params, x, loc, log_scale, key, num_steps=num_steps,
                              num_samples=num_samples, optimizer=optimizer)


@functools.partial(jax.jit, static_argnames=("log_joint", "num_steps", "num_samples", "optimizer"))
def _fit_local_gaussians(log_joint, params, x, loc, log_scale, key, *, num_steps, num_samples,
                         optimizer):
  if optimizer is None:
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps, alpha=0.01))
  loc = jnp.asarray(loc)
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, loc.dtype), loc.shape)
  q = (loc, log_scale)
  (q, _), trace = _local_steps(jax.random.split(key, num_steps), log_joint, params, x, q,
                               optimizer.init(q), optimizer, num_samples)
  return q[0], q[1], trace


class VEMResult(NamedTuple):
  """Result of :func:`variational_em`.

  Attributes:
    params: the model parameters after the last M-step.
    loc: per-datapoint variational means ``[N, D_z]``.
    log_scale: per-datapoint variational log standard deviations ``[N, D_z]``.
    elbo: ``[num_iters]`` mean ELBO per example estimated in each iteration's last M-step.
  """
  params: Any
  loc: Array
  log_scale: Array
  elbo: Array


def variational_em(log_joint: LogJoint, params, x: Array, key: Array, *, z_dim: int,
                   num_iters: int, e_steps: int = 5, m_steps: int = 1, num_samples: int = 1,
                   e_optimizer: optax.GradientTransformation | None = None,
                   m_optimizer: optax.GradientTransformation | None = None,
                   loc: Array | None = None, log_scale: Array | None = None) -> VEMResult:
  """Variational EM with a non-amortized diagonal Gaussian ``q_i`` per data point.

  The lectures' generalisation of EM when ``p(z|x)`` is intractable: the E-step takes ``e_steps``
  gradient steps on every ``q_i`` (:func:`fit_local_gaussians`), the M-step ``m_steps`` gradient
  steps on ``theta``, both ascending the reparametrized Monte Carlo ELBO. Optimiser states persist
  across iterations. For PPCA (``log_joint = linear_gaussian.log_joint``) the result can be checked
  against :func:`ppca_ml`.

  Jitted; ``log_joint``, the optimiser(s) and the integer arguments are static (hashed by identity),
  so a new closure or optimiser object compiles anew: define them once and reuse them.

  .. math:: \\text{E: } \\phi_i \\leftarrow \\phi_i + \\eta \\nabla_{\\phi_i} \\mathcal{L}(x_i; \\theta, \\phi_i), \\quad \\text{M: } \\theta \\leftarrow \\theta + \\eta \\nabla_\\theta \\tfrac1N \\sum_i \\mathcal{L}(x_i; \\theta, \\phi_i)

  Args:
    log_joint: ``log_joint(params, x, z) -> [N]``.
    params: initial model parameters (a pytree of float arrays, all trained).
    x: data ``[N, ...]`` (full batch).
    key: a JAX PRNG key (the old order with the key first works for one release, with a
      ``DeprecationWarning``).
    z_dim: latent dimension (static).
    num_iters: outer iterations (static).
    e_steps: gradient steps on ``q`` per iteration.
    m_steps: gradient steps on ``theta`` per iteration.
    num_samples: reparametrized samples per gradient estimate.
    e_optimizer: optax transformation for ``q`` (default ``adam(1e-2)``).
    m_optimizer: optax transformation for ``theta`` (default ``adam(1e-2)``).
    loc: initial ``q`` means ``[N, D_z]`` (default 0).
    log_scale: initial ``q`` log standard deviations ``[N, D_z]`` (default 0).

  Returns:
    :class:`VEMResult`.

  References:
    Neal & Hinton, A View of the EM Algorithm that Justifies Incremental, Sparse, and other
    Variants, 1998; Jordan, Ghahramani, Jaakkola & Saul, An Introduction to Variational Methods for
    Graphical Models, 1999.
  """
  log_joint, params, x, key = _deprecation.key_last("variational_em", log_joint, params, x, key)
  return _variational_em(log_joint, params, x, key, z_dim=z_dim, num_iters=num_iters,
                         e_steps=e_steps, m_steps=m_steps, num_samples=num_samples,
                         e_optimizer=e_optimizer, m_optimizer=m_optimizer, loc=loc,
                         log_scale=log_scale)


@functools.partial(jax.jit, static_argnames=("log_joint", "z_dim", "num_iters", "e_steps",
                                             "m_steps", "num_samples", "e_optimizer",
                                             "m_optimizer"))
def _variational_em(log_joint, params, x, key, *, z_dim, num_iters, e_steps, m_steps,
                    num_samples, e_optimizer, m_optimizer, loc, log_scale):
  if e_steps < 1 or m_steps < 1 or num_iters < 1:
    raise ValueError("num_iters, e_steps and m_steps must be >= 1")
  x = jnp.asarray(x)
  n = x.shape[0]
  dtype = x.dtype
  loc = jnp.zeros((n, z_dim), dtype) if loc is None else jnp.asarray(loc, dtype)
  log_scale = (jnp.zeros((n, z_dim), dtype) if log_scale is None
               else jnp.broadcast_to(jnp.asarray(log_scale, dtype), (n, z_dim)))
  e_opt = e_optimizer if e_optimizer is not None else optax.adam(1e-2)
  m_opt = m_optimizer if m_optimizer is not None else optax.adam(1e-2)

  def m_loss(theta, q, key):
    lw = gaussian_log_weights(log_joint, theta, x, q[0], q[1], key, num_samples)
    return -jnp.mean(objectives.elbo(lw))

  def m_step(carry, key):
    theta, s, q = carry
    val, g = jax.value_and_grad(m_loss)(theta, q, key)
    updates, s = m_opt.update(g, s, theta)
    return (optax.apply_updates(theta, updates), s, q), -val

  def iteration(carry, key):
    theta, q, e_state, m_state = carry
    ke, km = jax.random.split(key)
    (q, e_state), _ = _local_steps(jax.random.split(ke, e_steps), log_joint, theta, x, q,
                                   e_state, e_opt, num_samples)
    (theta, m_state, _), vals = lax.scan(m_step, (theta, m_state, q),
                                         jax.random.split(km, m_steps))
    return (theta, q, e_state, m_state), vals[-1]

  q = (loc, log_scale)
  init = (params, q, e_opt.init(q), m_opt.init(params))
  (params, q, _, _), trace = lax.scan(iteration, init, jax.random.split(key, num_iters))
  return VEMResult(params, q[0], q[1], trace)


# ----------------------------------------------------------------------------- inference gaps


class AmortizationGaps(NamedTuple):
  """Per-example decomposition of the inference gap (all ``[B]``, in nats).

  ``inference_gap = approximation_gap + amortization_gap = log_px - elbo_amortized``.

  Attributes:
    log_px: ``log p(x)`` (exact if given, else the importance-weighted estimate).
    elbo_amortized: ELBO of the encoder's ``q(z|x)``.
    elbo_local: ELBO of the best per-datapoint ``q*`` in the same family.
    approximation_gap: ``log p(x) - ELBO(q*)``: the cost of the variational family.
    amortization_gap: ``ELBO(q*) - ELBO(q_encoder)``: the cost of sharing one encoder.
    inference_gap: ``log p(x) - ELBO(q_encoder)``.
  """
  log_px: Array
  elbo_amortized: Array
  elbo_local: Array
  approximation_gap: Array
  amortization_gap: Array
  inference_gap: Array


def _chunked_elbo_pair(key, log_joint, params, x, q_a, q_b, num_samples, chunk_size):
  """Monte Carlo ELBOs ``([B], [B])`` of two diagonal Gaussians on common random numbers.

  Both reparametrize the same standard-normal draws (drawn once per chunk of ``chunk_size``), so
  the difference of the two estimates has far less variance than either.
  """
  num_chunks = _num_chunks(num_samples, chunk_size)
  shape = (num_samples // num_chunks,) + jnp.shape(q_a[0])

  def log_weights(q, eps):
    z = q[0][None] + jnp.exp(q[1])[None] * eps  # [K, B, D_z]
    log_p = jax.vmap(lambda zk: log_joint(params, x, zk))(z)
    return log_p - distributions.normal_log_prob(z, q[0], q[1])

  def one(k):
    eps = jax.random.normal(k, shape, jnp.result_type(q_a[0]))
    return jnp.sum(log_weights(q_a, eps), axis=0), jnp.sum(log_weights(q_b, eps), axis=0)

  sum_a, sum_b = lax.map(one, jax.random.split(key, num_chunks))
  return jnp.sum(sum_a, axis=0) / num_samples, jnp.sum(sum_b, axis=0) / num_samples


def _num_chunks(num_samples: int, chunk_size: int) -> int:
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f"num_samples={num_samples} must be a multiple of chunk_size={chunk}")
  return num_samples // chunk


def _chunked_mixture_iwae(key, log_joint, params, x, q_a, q_b, num_samples, chunk_size):
  """IWAE estimate of ``log p(x)`` with the defensive mixture proposal ``(q_a + q_b) / 2``.

  ``num_samples`` draws come from each of ``q_a`` and ``q_b`` and are all weighted by the mixture
  density (deterministic-mixture importance sampling: unbiased for ``p(x)``, so the log is a
  stochastic lower bound); each weight is at most twice that of either proposal alone, so the
  estimator is never much worse than the better of the two. ``[B]``.
  """
  num_chunks = _num_chunks(num_samples, chunk_size)
  chunk = num_samples // num_chunks

  def draw(k, q):
    keys = jax.random.split(k, chunk)
    return jax.vmap(lambda kk: distributions.sample_normal(kk, q[0], q[1]))(keys)

  def one(k):
    ka, kb = jax.random.split(k)
    z = jnp.concatenate([draw(ka, q_a), draw(kb, q_b)], axis=0)  # [2 * chunk, B, D_z]
    log_q = jnp.logaddexp(distributions.normal_log_prob(z, q_a[0], q_a[1]),
                          distributions.normal_log_prob(z, q_b[0], q_b[1])) - math.log(2.0)
    log_p = jax.vmap(lambda zk: log_joint(params, x, zk))(z)
    return jax.nn.logsumexp(log_p - log_q, axis=0)

  parts = lax.map(one, jax.random.split(key, num_chunks))
  return jax.nn.logsumexp(parts, axis=0) - math.log(2 * num_samples)


def amortization_gaps(log_joint: LogJoint, encoder: Encoder, params, x: Array, key: Array, *,
                      num_steps: int = 500, num_samples: int = 1, num_elbo_samples: int = 100,
                      num_iwae_samples: int = 1000, chunk_size: int = 100,
                      optimizer: optax.GradientTransformation | None = None,
                      log_px: Array | None = None) -> AmortizationGaps:
  """Splits ``log p(x) - ELBO`` of an amortized Gaussian encoder into approximation and amortization gaps.

  Works for any model with a continuous latent: give ``log_joint(params, x, z) -> [B]`` and
  ``encoder(params, x) -> (loc [B, D_z], log_scale [B, D_z])``, both pure functions of the same
  parameter pytree (e.g. :func:`linear_vae_log_joint` and :func:`linear_vae_encode`, or a
  :class:`dgmjax.models.vae.VAE`'s ``encode`` and a log-joint built from its ``decode``). The
  best per-datapoint diagonal Gaussian ``q*`` is found by :func:`fit_local_gaussians` *starting
  from the encoder's output* (so ``ELBO(q*) >= ELBO(q_encoder)`` up to optimisation and Monte Carlo
  noise). ``log p(x)`` is estimated, unless given exactly, by an importance-weighted (IWAE) bound
  whose proposal is the defensive mixture ``(q* + q_encoder) / 2``, with ``num_iwae_samples`` draws
  from each: a stochastic lower bound about as tight as with the better of the two proposals,
  without the upward bias of taking the maximum of two noisy estimates. Both ELBOs use the same
  ``num_elbo_samples`` standard-normal draws (common random numbers), which makes their
  difference, the amortization gap, much less noisy than either.

  Jitted. ``log_joint``, ``encoder``, the optimiser and the integer arguments are static (hashed):
  pass module-level functions or bound methods of hashable models, not fresh closures, to
  compile once; parameters go in ``params`` (traced), never in a closure, which would bake them
  into the program as constants.

  .. math:: \\log p(x) - \\mathcal{L}[q_\\phi] = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation}} + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]}_{\\text{amortization}}

  Args:
    log_joint: ``log_joint(params, x, z) -> [B]``.
    encoder: ``encoder(params, x) -> (loc, log_scale)``, each ``[B, D_z]``.
    params: model parameters (a pytree holding both the encoder's and the model's).
    x: data ``[B, ...]``.
    key: a JAX PRNG key (the old order with the key first works for one release, with a
      ``DeprecationWarning``).
    num_steps: gradient steps of the local optimisation.
    num_samples: samples per local gradient step.
    num_elbo_samples: samples for each ELBO estimate (a multiple of ``chunk_size`` if larger).
    num_iwae_samples: draws from each mixture component for the estimate of ``log p(x)`` (``2K``
      importance samples in all).
    chunk_size: samples evaluated at once (memory ``~ chunk_size * B``).
    optimizer: optax transformation for the local optimisation (default: the cosine-decayed Adam
      of :func:`fit_local_gaussians`).
    log_px: exact ``log p(x)`` ``[B]`` when known (e.g. PPCA), replacing the IWAE estimate.

  Returns:
    :class:`AmortizationGaps` of per-example values ``[B]``; average them over a data set.

  References:
    Cremer, Li & Duvenaud, Inference Suboptimality in Variational Autoencoders, ICML 2018.
  """
  log_joint, encoder, params, x, key = _deprecation.key_last(
      "amortization_gaps", log_joint, encoder, params, x, key)
  return _amortization_gaps(log_joint, encoder, params, x, key, num_steps=num_steps,
                            num_samples=num_samples, num_elbo_samples=num_elbo_samples,
                            num_iwae_samples=num_iwae_samples, chunk_size=chunk_size,
                            optimizer=optimizer, log_px=log_px)


@functools.partial(jax.jit, static_argnames=(
    "log_joint", "encoder", "num_steps", "num_samples", "num_elbo_samples", "num_iwae_samples",
    "chunk_size", "optimizer"))
def _amortization_gaps(log_joint, encoder, params, x, key, *, num_steps, num_samples,
                       num_elbo_samples, num_iwae_samples, chunk_size, optimizer, log_px):
  k_opt, k_elbo, k_iw = jax.random.split(key, 3)
  loc_e, log_scale_e = encoder(params, x)
  log_scale_e = jnp.broadcast_to(log_scale_e, jnp.shape(loc_e))
  loc_l, log_scale_l, _ = fit_local_gaussians(
      log_joint, params, x, lax.stop_gradient(loc_e), lax.stop_gradient(log_scale_e), k_opt,
      num_steps=num_steps, num_samples=num_samples, optimizer=optimizer)
  # Common random numbers: both ELBOs reparametrize the same standard-normal draws, so their
  # difference (the amortization gap) is far less noisy than either estimate.
  elbo_a, elbo_l = _chunked_elbo_pair(k_elbo, log_joint, params, x, (loc_e, log_scale_e),
                                      (loc_l, log_scale_l), num_elbo_samples, chunk_size)
  if log_px is None:
    log_px = _chunked_mixture_iwae(k_iw, log_joint, params, x, (loc_l, log_scale_l),
                                   (loc_e, log_scale_e), num_iwae_samples, chunk_size)
  return AmortizationGaps(log_px, elbo_a, elbo_l, log_px - elbo_l, elbo_l - elbo_a,
                          log_px - elbo_a)


@jax.jit
def linear_vae_exact_gaps(params: "LinearVAEParams", x: Array) -> AmortizationGaps:
  """The inference gaps of a linear VAE in closed form (no sampling, no optimisation).

  The decoder's posterior is Gaussian, ``p(z|x) = N(m(x), M^{-1})`` with ``M = I + W^T W / s^2``,
  so every term of :class:`AmortizationGaps` is exact: the best diagonal Gaussian ``q*`` in
  ``KL(q || p(z|x))`` has mean ``m(x)`` and precisions ``diag(M)`` (for every ``x``), and the
  ELBO of the encoder's ``q = N(mu, diag sigma^2)`` is ``log p(x) - KL(q || p(z|x))``. This is
  the oracle for :func:`amortization_gaps` applied to a linear VAE.

  .. math:: \\text{approx.} = \\tfrac12\\big(\\textstyle\\sum_j \\log M_{jj} - \\log|M|\\big), \\quad \\text{inference} = \\tfrac12\\big(\\mathrm{tr}(M \\Sigma_q) + (\\mu - m)^T M (\\mu - m) - D_z - \\log|M| - \\log|\\Sigma_q|\\big)

  Args:
    params: :class:`LinearVAEParams`.
    x: data ``[B, D_x]``.

  Returns:
    :class:`AmortizationGaps` of per-example values ``[B]``.

  References:
    Cremer, Li & Duvenaud, ICML 2018; Lucas, Tucker, Grosse & Norouzi, NeurIPS 2019.
  """
  dec = params.decoder
  d_z = dec.w.shape[1]
  m = jnp.eye(d_z, dtype=dec.w.dtype) + jnp.exp(-2.0 * dec.log_scale) * dec.w.T @ dec.w
  chol = jnp.linalg.cholesky(m)
  log_det_m = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
  loc_post, _ = linear_gaussian.posterior(dec, x)
  loc, log_scale = linear_vae_encode(params, x)
  diff = loc - loc_post
  kl_enc = 0.5 * (jnp.sum(jnp.diagonal(m)[None, :] * jnp.exp(2.0 * log_scale), axis=-1)
                  + jnp.einsum("bi,ij,bj->b", diff, m, diff) - d_z - log_det_m
                  - 2.0 * jnp.sum(log_scale, axis=-1))
  approx = 0.5 * (jnp.sum(jnp.log(jnp.diagonal(m))) - log_det_m)
  approx = jnp.broadcast_to(approx, kl_enc.shape)
  log_px = linear_gaussian.log_marginal(dec, x)
  return AmortizationGaps(log_px, log_px - kl_enc, log_px - approx, approx, kl_enc - approx, kl_enc)


# ----------------------------------------------------------------------------- linear VAE


class LinearVAEParams(NamedTuple):
  """A linear VAE: PPCA decoder and a linear Gaussian encoder with input-independent variances.

  ``q(z|x) = N(x V + c, diag(exp(2 log_sigma)))``: the exact PPCA posterior has this form (linear
  mean, covariance independent of ``x``), diagonal when ``W``'s columns are orthogonal.

  Attributes:
    decoder: :class:`~dgmjax.models.linear_gaussian.Params` ``(w [D_x, D_z], b [D_x], log_scale)``.
    enc_w: ``V``, ``[D_x, D_z]``.
    enc_b: ``c``, ``[D_z]``.
    enc_log_scale: ``log sigma``, ``[D_z]``.
  """
  decoder: linear_gaussian.Params
  enc_w: Array
  enc_b: Array
  enc_log_scale: Array


def linear_vae_init(key: Array, x_dim: int, z_dim: int, *, mean: Array | None = None,
                    noise_scale: float = 1.0, dtype=jnp.float32) -> LinearVAEParams:
  """Small random linear VAE; ``mean`` (the data mean ``[D_x]``) centres decoder and encoder.

  Args:
    key: a JAX PRNG key.
    x_dim: ``D_x``.
    z_dim: ``D_z``.
    mean: optional data mean ``[D_x]`` (default 0).
    noise_scale: initial decoder noise ``s``.
    dtype: parameter dtype.

  Returns:
    :class:`LinearVAEParams`.
  """
  kd, ke = jax.random.split(key)
  w = 0.1 * jax.random.normal(kd, (x_dim, z_dim), dtype)
  v = 0.1 * jax.random.normal(ke, (x_dim, z_dim), dtype)
  b = jnp.zeros((x_dim,), dtype) if mean is None else jnp.asarray(mean, dtype)
  dec = linear_gaussian.Params(w, b, jnp.log(jnp.asarray(noise_scale, dtype)))
  return LinearVAEParams(dec, v, -(b @ v), jnp.zeros((z_dim,), dtype))


def linear_vae_encode(params: LinearVAEParams, x: Array) -> tuple[Array, Array]:
  """Encoder ``q(z|x)``: ``(loc [B, D_z], log_scale [B, D_z])`` for ``x`` ``[B, D_x]``.

  .. math:: q(z|x) = N(z; x V + c, \\mathrm{diag}\\,\\sigma^2)
  """
  loc = x @ params.enc_w + params.enc_b[None, :]
  return loc, jnp.broadcast_to(params.enc_log_scale[None, :], loc.shape)


def linear_vae_log_joint(params: LinearVAEParams, x: Array, z: Array) -> Array:
  """``log p(x, z)`` of the linear VAE's decoder (a PPCA model). ``-> [...]``.

  The log-joint of :func:`amortization_gaps` and :func:`gaussian_log_weights` for the linear VAE,
  paired with :func:`linear_vae_encode`.

  .. math:: \\log p(x, z) = \\log N(z; 0, I) + \\log N(x; Wz + b, s^2 I)
  """
  return linear_gaussian.log_joint(params.decoder, x, z)


def linear_vae_log_weights(params: LinearVAEParams, x: Array, key: Array,
                           num_samples: int) -> Array:
  """Log-weights ``[K, B]`` of the linear VAE, for :func:`dgmjax.objectives.elbo` / ``iwae_bound``.

  The old order ``linear_vae_log_weights(key, params, x, K)`` works for one release, with a
  ``DeprecationWarning``.

  .. math:: \\log w_k = \\log N(z_k; 0, I) + \\log N(x; W z_k + b, s^2 I) - \\log q(z_k|x)
  """
  params, x, key = _deprecation.key_last("linear_vae_log_weights", params, x, key)
  loc, log_scale = linear_vae_encode(params, x)
  return gaussian_log_weights(linear_gaussian.log_joint, params.decoder, x, loc, log_scale, key,
                              num_samples)


def linear_vae_elbo(params: LinearVAEParams, x: Array) -> Array:
  """The linear VAE's ELBO in closed form (no sampling), ``[B]``.

  With ``q = N(m, diag sigma^2)``, the expected log-likelihood of a linear-Gaussian decoder is exact:

  .. math:: \\mathcal{L} = \\log N(x; Wm + b, s^2 I) - \\frac{\\sum_j \\|w_j\\|^2 \\sigma_j^2}{2 s^2} - KL(q \\| N(0, I))

  References:
    Lucas, Tucker, Grosse & Norouzi, NeurIPS 2019, Appendix C (the analytic linear-VAE ELBO).
  """
  loc, log_scale = linear_vae_encode(params, x)
  dec = params.decoder
  rec = linear_gaussian.log_likelihood(dec, x, loc)
  col_sq = jnp.sum(jnp.square(dec.w), axis=0)  # [D_z]
  var_term = jnp.sum(col_sq[None, :] * jnp.exp(2.0 * log_scale), axis=-1)
  var_term = 0.5 * var_term * jnp.exp(-2.0 * dec.log_scale)
  return rec - var_term - distributions.kl_normal_standard_normal(loc, log_scale)


def fit_linear_vae(key: Array, x: Array, z_dim: int, *, num_steps: int = 2000,
                   learning_rate: float = 1e-2, num_samples: int = 1,
                   batch_size: int | None = None, noise_variance=None,
                   params: LinearVAEParams | None = None) -> tuple[LinearVAEParams, Array]:
  """Trains a linear VAE by maximising the Monte Carlo ELBO (:func:`dgmjax.objectives.elbo`).

  Adam with a cosine decay to ``learning_rate / 100``, jitted as one ``lax.scan``. At the optimum
  the decoder is the PPCA maximum-likelihood solution (:func:`ppca_ml`, with the same fixed noise
  variance if one is given) and the encoder its exact posterior; latent dimensions whose data
  eigenvalue is below ``s^2`` collapse (``w_j = 0``, ``q(z_j|x) = p(z_j)``).

  .. math:: \\max_{\\theta, \\phi} \\frac1N \\sum_n \\mathbb{E}_{q_\\phi(z|x_n)}[\\log p_\\theta(x_n, z) - \\log q_\\phi(z|x_n)]

  Args:
    key: a JAX PRNG key.
    x: data ``[N, D_x]``.
    z_dim: ``D_z`` (static).
    num_steps: optimisation steps (static).
    learning_rate: peak Adam learning rate.
    num_samples: reparametrized samples per step (static).
    batch_size: minibatch size (drawn with replacement each step); ``None`` for full batch.
    noise_variance: optional fixed decoder variance ``s^2`` (then not trained).
    params: initial parameters (default :func:`linear_vae_init` centred at the data mean, with
      ``s^2`` the mean data variance or the fixed value).

  Returns:
    ``(params, elbo_trace [num_steps])``: the trace holds the minibatch mean ELBO per example.

  References:
    Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on Posterior
    Collapse, NeurIPS 2019.
  """
  _check_data("x", x)
  x = jnp.asarray(x)
  if noise_variance is not None:
    _checks.check_positive("noise_variance", noise_variance)
  k_init, k_train = jax.random.split(key)
  # One compiled program serves both cases: the noise variance is a traced value, "free" if <= 0.
  noise = jnp.asarray(-1.0 if noise_variance is None else noise_variance, x.dtype)
  if params is None:
    params = _linear_vae_start(k_init, x, noise, z_dim=z_dim)
  return _fit_linear_vae(params, x, k_train, noise, jnp.asarray(learning_rate, x.dtype),
                         num_steps=num_steps, num_samples=num_samples, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("z_dim",))
def _linear_vae_start(key, x, noise_variance, z_dim):
  """:func:`linear_vae_init` centred at the data mean, with ``s^2`` the fixed noise variance (if
  ``> 0``) or the mean data variance; jitted as one program."""
  mean = jnp.mean(x, axis=0)
  s2 = jnp.where(noise_variance > 0, noise_variance, jnp.mean(jnp.var(x, axis=0)))
  params = linear_vae_init(key, x.shape[1], z_dim, mean=mean, dtype=x.dtype)
  return params._replace(decoder=params.decoder._replace(log_scale=0.5 * jnp.log(s2)))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_samples", "batch_size"))
def _fit_linear_vae(params, x, key, noise_variance, learning_rate, *, num_steps, num_samples,
                    batch_size):
  n = x.shape[0]
  fix_noise = noise_variance > 0
  # The where inside the log keeps the unused branch finite (log of a negative number is NaN).
  fixed_log_scale = jnp.where(fix_noise, 0.5 * jnp.log(jnp.where(fix_noise, noise_variance, 1.0)),
                              params.decoder.log_scale)
  schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
  opt = optax.adam(schedule)

  def with_noise(p):
    # With a fixed noise the gradient in log_scale is exactly 0, so Adam never moves it.
    log_scale = jnp.where(fix_noise, fixed_log_scale, p.decoder.log_scale)
    return p._replace(decoder=p.decoder._replace(log_scale=log_scale))

  def loss(p, key, xb):
    lw = linear_vae_log_weights(with_noise(p), xb, key, num_samples)
    return -jnp.mean(objectives.elbo(lw))

  def step(carry, key):
    p, s = carry
    kb, ks = jax.random.split(key)
    xb = x if batch_size is None else x[jax.random.randint(kb, (batch_size,), 0, n)]
    val, g = jax.value_and_grad(loss)(p, ks, xb)
    updates, s = opt.update(g, s, p)
    return (optax.apply_updates(p, updates), s), -val

  params = with_noise(params)
  (params, _), trace = lax.scan(step, (params, opt.init(params)), jax.random.split(key, num_steps))
  return with_noise(params), trace
