"""The maths of the gradient estimators: the gradient views and the surrogate functions.

Each ``*_surrogate`` function maps log-weights ``[K, B]`` (under the stop-gradient views of
:class:`LogWeightTerms`) to a surrogate ``[B]`` whose value is the bound and whose ``jax.grad`` is
the estimator; the learning signals, the running-mean baseline and :func:`baseline_loss` serve the
score-function estimators. :mod:`dgmjax.estimators` explains the channels and the routing, and
re-exports every public name of this module.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, DTypeLike, Float, Real

from dgmjax import _checks, objectives

__all__ = [
    "BOUNDS", "LogWeightTerms", "RunningMean", "baseline_loss", "ciwae_surrogate",
    "dreg_surrogate", "elbo_surrogate", "iwae_surrogate", "learning_signal", "miwae_surrogate",
    "piwae_surrogate", "reinforce_surrogate", "renyi_dreg_surrogate", "running_mean_init",
    "running_mean_update", "rws_dreg_surrogate", "rws_surrogate", "stl_surrogate",
    "vimco_learning_signals", "vimco_surrogate", "zero_with_grad",
]

#: The bounds whose gradient the score-function and STL estimators take (``bound=``).
BOUNDS = ("iwae", "elbo")


# ----------------------------------------------------------------------------- gradient views


class LogWeightTerms(NamedTuple):
  """The log-weights ``[K, B]`` under the stop-gradient views the estimators need.

  All four share one set of samples; ``log_w``, ``log_w_theta`` and ``log_w_path`` have the same
  value ``log w_k`` and differ only in which gradient paths are live (see the module docstring).

  Attributes:
    log_w: ``log p(x, z; theta) - log q(z | x; phi)``, every path live.
    log_w_theta: only the direct ``theta`` dependence of ``log p`` is live.
    log_w_path: only the path through ``z = z(eps; phi)`` is live.
    log_q_score: ``log q(sg(z) | x; phi)``, only the direct ``phi`` dependence (value ``log q``).
  """
  log_w: Float[Array, "*shape"]
  log_w_theta: Float[Array, "*shape"]
  log_w_path: Float[Array, "*shape"]
  log_q_score: Float[Array, "*shape"]


# ----------------------------------------------------------------------------- helpers


def _to_front(x: Float[ArrayLike, "..."], axis: int, name: str) -> Float[Array, "K *batch"]:
  axis = _checks.check_num_samples(name, x, axis)
  return jnp.moveaxis(x, axis, 0)


def _check_same_shape(**arrays: Float[ArrayLike, "..."]) -> None:
  shapes = {k: jnp.shape(v) for k, v in arrays.items()}
  if len(set(shapes.values())) != 1:
    desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
    raise ValueError(f"the log-weight terms must share one shape [K, B]; got {desc}")


def zero_with_grad(t: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
  """Exactly zero in value, with the gradient of ``t`` (where ``t`` is finite).

  ``t - sg(t)`` would give ``nan`` for ``t = -inf`` (a sample of zero weight); such entries get a
  zero value and no gradient instead.

  .. math:: t - \\mathrm{sg}(t)
  """
  finite = jnp.isfinite(lax.stop_gradient(t))
  safe = jnp.where(finite, t, jnp.zeros((), t.dtype))
  return safe - lax.stop_gradient(safe)


def _route(coeff: Float[Array, "K *batch"],
           term: Float[Array, "K *batch"]) -> Float[Array, "*batch"]:
  """``sum_k sg(c_k) (t_k - sg t_k)``: value 0, gradient ``sum_k c_k grad t_k``. ``[K,B] -> [B]``."""
  coeff = lax.stop_gradient(coeff)
  coeff = jnp.where(jnp.isfinite(coeff), coeff, jnp.zeros((), coeff.dtype))
  return jnp.sum(coeff * zero_with_grad(term), axis=0)


def _baseline_like(baseline: Optional[Real[ArrayLike, "..."]],
                   like: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
  """Broadcasts a baseline (scalar or the non-sample shape) against ``like`` explicitly."""
  if baseline is None:
    return jnp.zeros(like.shape, like.dtype)
  b = lax.stop_gradient(jnp.asarray(baseline, like.dtype))
  if b.ndim == like.ndim + 1:
    raise ValueError(f"baseline of shape {b.shape} has a sample axis; a baseline must not depend "
                     f"on the samples it is subtracted from (shape () or {like.shape})")
  if b.shape not in ((), like.shape[-b.ndim:] if b.ndim else ()) or b.ndim > like.ndim:
    raise ValueError(f"baseline must be a scalar or one value per data point (broadcast "
                     f"against the learning signal of shape {like.shape} without changing it); "
                     f"got shape {b.shape}")
  return jnp.broadcast_to(b, like.shape)


def _bound_arg(bound: str) -> str:
  """The ``bound=`` setting, checked."""
  if bound not in BOUNDS:
    raise ValueError(f"bound must be {' or '.join(map(repr, BOUNDS))}, got {bound!r}")
  return bound


def _sample_weights(log_w: Float[Array, "K *batch"], bound: str) -> Float[Array, "K *batch"]:
  """``d bound / d log w_k``: ``w~_k`` for IWAE, ``1/K`` for the (K-sample) ELBO. ``[K, B]``."""
  if bound == "iwae":
    return objectives.importance_weights(log_w, axis=0)
  return jnp.full(log_w.shape, 1.0 / log_w.shape[0], log_w.dtype)


def _group_weights(log_w: Float[Array, "K *batch"], num_groups: int) -> Float[Array, "K *batch"]:
  """Importance weights normalised within each of ``M`` contiguous groups. ``[M K, B] -> [M K, B]``."""
  n = log_w.shape[0]
  if not isinstance(num_groups, int) or num_groups < 1 or n % num_groups:
    raise ValueError(f"num_groups must be a positive int dividing the {n} samples, got "
                     f"{num_groups!r}")
  grouped = log_w.reshape((num_groups, n // num_groups) + log_w.shape[1:])
  return objectives.importance_weights(grouped, axis=1).reshape(log_w.shape)


def _bound(log_w: Float[Array, "K *batch"], bound: str) -> Float[Array, "*batch"]:
  return objectives.iwae_bound(log_w, 0) if bound == "iwae" else objectives.elbo(log_w, 0)


# ----------------------------------------------------------------------------- reparametrization


def iwae_surrogate(log_w: Float[ArrayLike, "*shape"], axis: int = 0) -> Float[Array, "*batch"]:
  """Reparametrization estimator of the IWAE bound: the bound itself, every path live.

  .. math:: \\nabla \\mathcal{L}_K = \\sum_k \\tilde w_k \\nabla \\log w_k(\\epsilon_k)

  Args:
    log_w: ``[K, B]``, :attr:`LogWeightTerms.log_w`.
    axis: sample axis.

  Returns:
    ``[B]``, equal to ``iwae_bound(log_w)``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  """
  return objectives.iwae_bound(log_w, axis)


def elbo_surrogate(log_w: Float[ArrayLike, "*shape"], axis: int = 0) -> Float[Array, "*batch"]:
  """Reparametrization estimator of the ELBO averaged over ``K`` samples.

  .. math:: \\nabla \\mathcal{L}_1 \\approx \\frac1K \\sum_k \\nabla \\log w_k(\\epsilon_k)

  Args:
    log_w: ``[K, B]``, :attr:`LogWeightTerms.log_w`.
    axis: sample axis.

  Returns:
    ``[B]``, equal to ``elbo(log_w)``.

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  """
  return objectives.elbo(log_w, axis)


def miwae_surrogate(log_w: Float[ArrayLike, "*shape"], num_groups: int,
                    axis: int = 0) -> Float[Array, "*batch"]:
  """Reparametrization estimator of MIWAE(M, K) (``M = num_groups`` groups of ``K``).

  .. math:: \\mathcal{L}_{M,K} = \\frac1M \\sum_m \\log \\frac1K \\sum_k w_{m,k}

  Args:
    log_w: ``[M * K, B]``, :attr:`LogWeightTerms.log_w`.
    num_groups: ``M``.
    axis: sample axis.

  Returns:
    ``[B]``, equal to ``miwae_bound(log_w, num_groups)``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  return objectives.miwae_bound(log_w, num_groups, axis)


def ciwae_surrogate(log_w: Float[ArrayLike, "*shape"], beta: Real[ArrayLike, ""],
                    axis: int = 0) -> Float[Array, "*batch"]:
  """Reparametrization estimator of CIWAE(beta) = ``beta * ELBO + (1 - beta) * IWAE``.

  .. math:: \\mathcal{L}_\\beta = \\beta \\mathcal{L}_1 + (1-\\beta) \\mathcal{L}_K

  Args:
    log_w: ``[K, B]``, :attr:`LogWeightTerms.log_w`.
    beta: ELBO weight in ``[0, 1]``.
    axis: sample axis.

  Returns:
    ``[B]``, equal to ``ciwae_bound(log_w, beta)``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  return objectives.ciwae_bound(log_w, beta, axis)


# ----------------------------------------------------------------------------- STL / DReG


def stl_surrogate(log_w_theta: Float[ArrayLike, "..."], log_w_path: Float[ArrayLike, "..."],
                  axis: int = 0, *, bound: str = "iwae") -> Float[Array, "*batch"]:
  """Sticking the landing: the reparametrization estimator without the score term of ``q``.

  ``theta`` gets the usual gradient; ``phi`` only the path through ``z`` (``q``'s parameters are
  stopped inside ``log q``). Unbiased for the ELBO (``K = 1`` or ``bound='elbo'``), where the
  dropped term has mean zero; biased for IWAE with ``K > 1``. Zero variance for ``phi`` when ``q``
  is the exact posterior.

  .. math:: \\hat g_\\phi = \\sum_k \\tilde w_k \\frac{\\partial \\log w_k}{\\partial z_k} \\frac{\\partial z_k}{\\partial \\phi}

  Args:
    log_w_theta: ``[K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_w_path: ``[K, B]``, :attr:`LogWeightTerms.log_w_path`.
    axis: sample axis.
    bound: ``'iwae'`` (weights ``w~_k``) or ``'elbo'`` (weights ``1/K``).

  Returns:
    ``[B]``, equal to the bound.

  References:
    Roeder, Wu & Duvenaud, Sticking the Landing: Simple, Lower-Variance Gradient Estimators for
    Variational Inference, NeurIPS 2017.
  """
  bound = _bound_arg(bound)
  _check_same_shape(log_w_theta=log_w_theta, log_w_path=log_w_path)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lp = _to_front(log_w_path, axis, "log_w_path")
  return _bound(lw, bound) + _route(_sample_weights(lw, bound), lp)


def dreg_surrogate(log_w_theta: Float[ArrayLike, "..."], log_w_path: Float[ArrayLike, "..."],
                   axis: int = 0, *, num_groups: int = 1) -> Float[Array, "*batch"]:
  """Doubly reparametrized IWAE gradient (DReG) for ``phi``, IWAE for ``theta``.

  The score term of the IWAE ``phi`` gradient is rewritten by a second reparametrization, leaving
  an unbiased estimator with squared weights whose SNR grows with ``K``. With ``num_groups = M``
  it is DReG for MIWAE(M, K) (each group of ``K`` has its own weights, averaged over groups).

  .. math:: \\hat g_\\phi = \\sum_k \\tilde w_k^2 \\frac{\\partial \\log w_k}{\\partial z_k} \\frac{\\partial z_k}{\\partial \\phi}, \\quad \\hat g_\\theta = \\sum_k \\tilde w_k \\nabla_\\theta \\log w_k

  Args:
    log_w_theta: ``[M * K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_w_path: ``[M * K, B]``, :attr:`LogWeightTerms.log_w_path`.
    axis: sample axis.
    num_groups: ``M`` (default 1: IWAE).

  Returns:
    ``[B]``, equal to ``miwae_bound(log_w, num_groups)`` (the IWAE bound for ``M = 1``).

  References:
    Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives, ICLR 2019, eq. (5).
  """
  _check_same_shape(log_w_theta=log_w_theta, log_w_path=log_w_path)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lp = _to_front(log_w_path, axis, "log_w_path")
  coeff = jnp.square(_group_weights(lw, num_groups)) / num_groups
  return objectives.miwae_bound(lw, num_groups, 0) + _route(coeff, lp)


# ----------------------------------------------------------------------------- score function


def learning_signal(log_w: Float[ArrayLike, "..."], axis: int = 0, *, bound: str = "iwae") -> Float[Array, "..."]:
  """The learning signal that multiplies the score in REINFORCE.

  IWAE: the bound ``L_K`` itself, one per datapoint. ELBO: each sample's own ``log w_k`` (the
  samples are independent, so each is scored by its own signal).

  .. math:: \\ell = \\mathcal{L}_K = \\log \\frac1K \\sum_k w_k \\quad\\text{or}\\quad \\ell_k = \\log w_k

  Args:
    log_w: ``[K, B]``.
    axis: sample axis.
    bound: ``'iwae'`` or ``'elbo'``.

  Returns:
    ``[B]`` (IWAE) or ``[K, B]`` (ELBO), without gradient.
  """
  bound = _bound_arg(bound)
  log_w = lax.stop_gradient(log_w)
  if bound == "iwae":
    return objectives.iwae_bound(log_w, axis)
  _checks.check_num_samples("log_w", log_w, axis)
  return log_w


def reinforce_surrogate(log_w_theta: Float[ArrayLike, "..."], log_q_score: Float[ArrayLike, "..."],
                        baseline: Optional[Real[ArrayLike, "..."]] = None, axis: int = 0, *,
                        bound: str = "iwae", analytic_kl: bool = False) -> Float[Array, "*batch"]:
  """Score-function (REINFORCE, likelihood-ratio) estimator, for any latent.

  Needs no path through ``z``, so it serves discrete latents. ``theta`` gets the usual gradient.
  A baseline ``b`` that does not depend on the samples it multiplies (a running mean, an
  input-dependent ``b(x)`` as in NVIL) leaves the estimator unbiased and can cut its variance; it
  is stopped here, train it with :func:`baseline_loss`.

  .. math:: \\hat g_\\phi = \\sum_k \\big(\\mathrm{sg}(\\ell - b) - \\tilde w_k\\big) \\nabla_\\phi \\log q_\\phi(z_k|x)

  (IWAE, ``ell = L_K``; for the ELBO, ``(ell_k - b - 1) / K`` per sample with ``ell_k = log w_k``).

  Args:
    log_w_theta: ``[K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_q_score: ``[K, B]``, :attr:`LogWeightTerms.log_q_score`.
    baseline: ``None``, a scalar or ``[B]``; subtracted from the learning signal. A NaN entry
      makes its data point's value and gradient NaN.
    axis: sample axis.
    bound: ``'iwae'`` or ``'elbo'``.
    analytic_kl: the "log-weights" are the log-likelihoods ``log p(x | z_k)`` alone, the KL being
      analytic and differentiated apart (``bound='elbo'``): ``log q`` then does not appear in
      the signal, so its direct term ``-w~_k`` is dropped.

  Returns:
    ``[B]``, equal to the bound (the expected log-likelihood with ``analytic_kl``).

  References:
    Williams, Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
    Learning, Machine Learning 1992; Mnih & Gregor, Neural Variational Inference and Learning in
    Belief Networks, ICML 2014.
  """
  bound = _bound_arg(bound)
  _check_same_shape(log_w_theta=log_w_theta, log_q_score=log_q_score)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lq = _to_front(log_q_score, axis, "log_q_score")
  signal = learning_signal(lw, 0, bound=bound)
  b = _baseline_like(baseline, signal)
  centred = signal - b
  if bound == "iwae":
    centred = jnp.broadcast_to(centred[None], lw.shape)
  else:
    centred = centred / lw.shape[0]
  if analytic_kl and bound != "elbo":
    raise ValueError("analytic_kl needs bound='elbo' (the KL of the ELBO is analytic)")
  coeff = centred if analytic_kl else centred - _sample_weights(lw, bound)
  # _route drops non-finite coefficients (a sample of zero weight); a NaN baseline is invalid
  # input, not such a sample: its data point gets NaN in value and gradient, never a zero gradient.
  invalid = jnp.where(jnp.broadcast_to(jnp.isnan(b), lw.shape), jnp.nan, 0.0).astype(lw.dtype)
  return _bound(lw, bound) + _route(coeff, lq) + jnp.sum(invalid * zero_with_grad(lq), axis=0)


def vimco_learning_signals(log_w: Float[ArrayLike, "*shape"],
                           axis: int = 0) -> Float[Array, "*shape"]:
  """VIMCO's per-sample learning signals ``L_K - L_K^{(-k)}`` (leave-one-out baselines).

  ``L^{(-k)}`` replaces ``w_k`` by the geometric mean of the other weights; computed in log space
  on a ``[K, K, B]`` array (each row holds one leave-one-out set), so it is exact for any spread
  of the weights.

  .. math:: \\hat L^{(-k)} = \\log \\frac1K \\Big(\\sum_{j \\ne k} w_j + \\exp\\big(\\tfrac{1}{K-1} \\textstyle\\sum_{j\\ne k} \\log w_j\\big)\\Big)

  Args:
    log_w: ``[K, B]`` with ``K >= 2``.
    axis: sample axis.

  Returns:
    ``[K, B]``, without gradient; non-finite entries (all weights zero) are set to 0.

  References:
    Mnih & Rezende, Variational Inference for Monte Carlo Objectives, ICML 2016, eqs. (9)-(10).
  """
  lw = lax.stop_gradient(_to_front(log_w, axis, "log_w"))
  k = lw.shape[0]
  if k < 2:
    raise ValueError(f"VIMCO needs K >= 2 samples for its leave-one-out baselines, got K={k}")
  total = jnp.sum(lw, axis=0, keepdims=True)
  geo = (total - lw) / (k - 1)                              # [K, B]: mean of the others' log w
  eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (lw.ndim - 1))
  rows = jnp.where(eye, jnp.broadcast_to(geo[:, None], (k,) + lw.shape),
                   jnp.broadcast_to(lw[None], (k,) + lw.shape))  # [K(left out), K, B]
  loo = objectives.log_mean_exp(rows, axis=1)
  signals = objectives.iwae_bound(lw, 0)[None] - loo
  signals = jnp.where(jnp.isfinite(signals), signals, jnp.zeros((), signals.dtype))
  return jnp.moveaxis(signals, 0, axis)


def vimco_surrogate(log_w_theta: Float[ArrayLike, "..."], log_q_score: Float[ArrayLike, "..."],
                    axis: int = 0) -> Float[Array, "*batch"]:
  """VIMCO: the IWAE score-function estimator with per-sample leave-one-out baselines.

  .. math:: \\hat g_\\phi = \\sum_k \\big(\\mathcal{L}_K - \\hat L^{(-k)} - \\tilde w_k\\big) \\nabla_\\phi \\log q_\\phi(z_k|x)

  Args:
    log_w_theta: ``[K, B]`` (``K >= 2``), :attr:`LogWeightTerms.log_w_theta`.
    log_q_score: ``[K, B]``, :attr:`LogWeightTerms.log_q_score`.
    axis: sample axis.

  Returns:
    ``[B]``, equal to the IWAE bound.

  References:
    Mnih & Rezende, Variational Inference for Monte Carlo Objectives, ICML 2016.
  """
  _check_same_shape(log_w_theta=log_w_theta, log_q_score=log_q_score)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lq = _to_front(log_q_score, axis, "log_q_score")
  coeff = vimco_learning_signals(lw, 0) - objectives.importance_weights(lw, 0)
  return objectives.iwae_bound(lw, 0) + _route(coeff, lq)


class RunningMean(NamedTuple):
  """State of an exponential moving average with bias correction (a pytree).

  Attributes:
    average: the raw average ``a_t = d a_{t-1} + (1 - d) v_t``, ``a_0 = 0``.
    correction: ``1 - d^t`` (0 before the first update).
  """
  average: Float[Array, ""]
  correction: Float[Array, ""]

  @property
  def mean(self) -> Float[Array, ""]:
    """The bias-corrected mean ``a_t / (1 - d^t)`` (0 before any update)."""
    safe = jnp.where(self.correction > 0, self.correction, jnp.ones((), self.correction.dtype))
    return jnp.where(self.correction > 0, self.average / safe,
                     jnp.zeros((), self.average.dtype))


def running_mean_init(dtype: DTypeLike = jnp.float32) -> RunningMean:
  """The initial :class:`RunningMean` (mean 0)."""
  return RunningMean(jnp.zeros((), dtype), jnp.zeros((), dtype))


def running_mean_update(state: RunningMean, value: Real[ArrayLike, "..."],
                        decay: Real[ArrayLike, ""] = 0.9) -> RunningMean:
  """One pure update of the running-mean baseline with the batch mean of ``value``.

  .. math:: a_t = d\\, a_{t-1} + (1-d)\\, \\bar v_t, \\quad b_t = a_t / (1 - d^t)

  Args:
    state: the current state.
    value: the learning signal, any shape (averaged to a scalar; no gradient flows).
    decay: ``d`` in ``[0, 1)``.

  Returns:
    The new state.

  References:
    Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014.
  """
  if _checks.is_concrete(decay) and not 0.0 <= float(decay) < 1.0:
    raise ValueError(f"decay must lie in [0, 1), got {decay!r}")
  v = jnp.mean(lax.stop_gradient(value)).astype(state.average.dtype)
  return RunningMean(decay * state.average + (1.0 - decay) * v,
                     1.0 - decay * (1.0 - state.correction))


def baseline_loss(signal: Float[ArrayLike, "..."],
                  baseline: Real[ArrayLike, "..."]) -> Float[Array, "..."]:
  """Squared-error regression of a baseline on the (stopped) learning signal.

  For a per-sample signal ``[K, B]`` and a baseline ``[B]`` the error is averaged over samples.

  .. math:: \\tfrac12 (\\mathrm{sg}(\\ell) - b)^2

  Args:
    signal: learning signal, ``[B]`` or ``[K, B]`` (see :func:`learning_signal`).
    baseline: ``[B]`` (or scalar), differentiable in the baseline's parameters.

  Returns:
    ``[B]`` (scalar if both are scalars); minimise its mean.

  References:
    Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014.
  """
  signal = lax.stop_gradient(jnp.asarray(signal))
  baseline = jnp.asarray(baseline)
  if signal.ndim == baseline.ndim + 1:
    baseline = jnp.broadcast_to(baseline[None], signal.shape)
    return 0.5 * jnp.mean(jnp.square(signal - baseline), axis=0)
  signal, baseline = _checks.broadcast(signal=signal, baseline=baseline)
  return 0.5 * jnp.square(signal - baseline)


# ----------------------------------------------------------------------------- reweighted wake-sleep


def rws_surrogate(log_w_theta: Float[ArrayLike, "..."], log_q_score: Float[ArrayLike, "..."],
                  axis: int = 0) -> Float[Array, "*batch"]:
  """Reweighted wake-sleep: wake-theta (the IWAE gradient) and wake-phi for the encoder.

  Wake-phi ascends ``sum_k w~_k log q(z_k | x)`` with the samples stopped, a self-normalised
  estimate of ``-grad KL(p(z|x) || q(z|x))``; it is not the gradient of a bound, so the value of
  the surrogate is the IWAE bound (for monitoring). Needs no reparametrization.

  .. math:: \\hat g_\\phi = \\sum_k \\tilde w_k \\nabla_\\phi \\log q_\\phi(z_k | x)

  Args:
    log_w_theta: ``[K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_q_score: ``[K, B]``, :attr:`LogWeightTerms.log_q_score`.
    axis: sample axis.

  Returns:
    ``[B]``, equal to the IWAE bound.

  References:
    Bornschein & Bengio, Reweighted Wake-Sleep, ICLR 2015; Le et al., Revisiting Reweighted
    Wake-Sleep for Models with Stochastic Control Flow, UAI 2019.
  """
  _check_same_shape(log_w_theta=log_w_theta, log_q_score=log_q_score)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lq = _to_front(log_q_score, axis, "log_q_score")
  return objectives.iwae_bound(lw, 0) + _route(objectives.importance_weights(lw, 0), lq)


def rws_dreg_surrogate(log_w_theta: Float[ArrayLike, "..."], log_w_path: Float[ArrayLike, "..."],
                       axis: int = 0) -> Float[Array, "*batch"]:
  """RWS-DReG: the wake-phi gradient, doubly reparametrized (same mean, lower variance).

  .. math:: \\hat g_\\phi = \\sum_k (\\tilde w_k - \\tilde w_k^2) \\frac{\\partial \\log w_k}{\\partial z_k} \\frac{\\partial z_k}{\\partial \\phi}

  Args:
    log_w_theta: ``[K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_w_path: ``[K, B]``, :attr:`LogWeightTerms.log_w_path`.
    axis: sample axis.

  Returns:
    ``[B]``, equal to the IWAE bound.

  References:
    Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte Carlo
    Objectives, ICLR 2019, Section 4 (eq. for RWS).
  """
  _check_same_shape(log_w_theta=log_w_theta, log_w_path=log_w_path)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lp = _to_front(log_w_path, axis, "log_w_path")
  w = objectives.importance_weights(lw, 0)
  return objectives.iwae_bound(lw, 0) + _route(w - jnp.square(w), lp)


def renyi_dreg_surrogate(log_w_theta: Float[ArrayLike, "..."], log_w_path: Float[ArrayLike, "..."],
                         alpha: Real[ArrayLike, ""], axis: int = 0) -> Float[Array, "*batch"]:
  """The doubly reparametrized estimator of the variational Rényi bound ``L_alpha``.

  ``theta`` gets the gradient of ``L_alpha``; ``phi`` the path gradient with coefficients
  ``alpha w^_k + (1 - alpha) w^_k^2`` (``w^`` the normalised ``w^(1-alpha)``), which is DReG at
  ``alpha = 0`` and the sticking-the-landing ELBO gradient at ``alpha = 1``; unbiased for the
  gradient of ``L_alpha`` (the score term of ``q`` replaced by its reparametrized expectation).

  .. math:: \\hat g_\\phi = \\sum_k \\big(\\alpha \\hat w_k + (1-\\alpha) \\hat w_k^2\\big) \\frac{\\partial \\log w_k}{\\partial z_k} \\frac{\\partial z_k}{\\partial \\phi}, \\quad \\hat w_k = \\frac{w_k^{1-\\alpha}}{\\sum_j w_j^{1-\\alpha}}

  Args:
    log_w_theta: ``[K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_w_path: ``[K, B]``, :attr:`LogWeightTerms.log_w_path`.
    alpha: a finite real number.
    axis: sample axis.

  Returns:
    ``[B]``, equal to ``L_alpha``.

  References:
    Li & Turner, NeurIPS 2016; Tucker, Lawson, Gu & Maddison, ICLR 2019 (the DReG identity).
  """
  if _checks.is_concrete(alpha) and not np.isfinite(float(np.asarray(alpha))):
    raise ValueError(f"alpha must be finite for the DReG estimator of L_alpha, got {alpha!r}")
  _check_same_shape(log_w_theta=log_w_theta, log_w_path=log_w_path)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lp = _to_front(log_w_path, axis, "log_w_path")
  w = objectives.renyi_weights(lw, alpha, 0)
  return objectives.renyi_bound(lw, alpha, 0) + _route(alpha * w + (1.0 - alpha) * jnp.square(w),
                                                       lp)


# ----------------------------------------------------------------------------- PIWAE


def piwae_surrogate(log_w_theta: Float[ArrayLike, "..."], log_w_path: Float[ArrayLike, "..."],
                    log_q_score: Float[ArrayLike, "..."], num_groups: int, axis: int = 0, *,
                    dreg: bool = False) -> Float[Array, "*batch"]:
  """PIWAE(M, K): IWAE(M K) for ``theta``, MIWAE(M, K) for ``phi``, on the same ``M K`` samples.

  With ``dreg=True`` the ``phi`` part is the DReG estimator of MIWAE(M, K) instead of its
  reparametrization estimator (same mean, lower variance).

  .. math:: \\hat g_\\theta = \\nabla_\\theta \\mathcal{L}_{1, MK}, \\quad \\hat g_\\phi = \\nabla_\\phi \\mathcal{L}_{M, K}

  Args:
    log_w_theta: ``[M * K, B]``, :attr:`LogWeightTerms.log_w_theta`.
    log_w_path: ``[M * K, B]``, :attr:`LogWeightTerms.log_w_path`.
    log_q_score: ``[M * K, B]``, :attr:`LogWeightTerms.log_q_score`.
    num_groups: ``M``.
    axis: sample axis.
    dreg: use DReG for the ``phi`` part.

  Returns:
    ``[B]``, equal to the IWAE(M K) bound (the ``theta`` target; ``piwae_bounds`` gives both).

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018, Sec. 5.
  """
  _check_same_shape(log_w_theta=log_w_theta, log_w_path=log_w_path, log_q_score=log_q_score)
  lw = _to_front(log_w_theta, axis, "log_w_theta")
  lp = _to_front(log_w_path, axis, "log_w_path")
  lq = _to_front(log_q_score, axis, "log_q_score")
  w = _group_weights(lw, num_groups) / num_groups
  if dreg:
    phi_part = _route(num_groups * jnp.square(w), lp)
  else:
    phi_part = _route(w, lp) - _route(w, lq)
  return objectives.iwae_bound(lw, 0) + phi_part

