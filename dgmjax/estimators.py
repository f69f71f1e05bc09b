"""Gradient estimators for variational bounds, written as surrogate losses.

Each ``*_surrogate`` function returns, per datapoint (``[B]``), a surrogate whose **value equals the
bound** it stands for and whose ``jax.grad`` **is the estimator**. Training maximises
``mean(surrogate)`` (minimise its negative); :func:`dgmjax.diagnostics.gradient_snr` measures it.

Why surrogates need more than log-weights
-----------------------------------------
An estimator is a choice of which gradient paths to keep and how to weight them. Every path of
``log w_k = log p_theta(x, z_k) - log q_phi(z_k | x)``, with ``z_k = z(eps_k; phi)`` reparametrized,
falls in one of three channels, and :class:`LogWeightTerms` carries one ``[K, B]`` array per channel
(all with the value ``log w_k`` except the score term, whose value is ``log q``):

* ``log_w_theta`` = ``log p(x, sg z; theta) - sg(log q)``: only the model parameters ``theta``
  (the direct dependence of ``log p``);
* ``log_w_path`` = ``log p(x, z; sg theta) - log q(z | x; sg phi)``: only the path through the
  sample ``z`` into ``phi`` (zero for non-reparametrizable latents);
* ``log_q_score`` = ``log q(sg z | x; phi)``: the score function, the direct dependence of
  ``log q`` on ``phi`` (it enters ``log w`` with a minus sign).

plus ``log_w`` itself with every path live (the plain reparametrization estimator). The routing is
by *role*: ``theta`` is whatever ``log p`` depends on, ``phi`` whatever ``q`` depends on, so one
``params`` pytree serves (a parameter shared by both gets both gradients, as it should).
:func:`dgmjax.models.log_weight_terms` builds the four arrays from any model of the contract
(:mod:`dgmjax.models.base`); inside ``jit`` the arrays a surrogate does not use are dead code and
cost nothing.

A surrogate is the bound evaluated on ``log_w_theta`` (giving the ``theta`` gradient
``sum_k w~_k grad log p``) plus terms ``sum_k sg(c_k) (t_k - sg(t_k))`` with ``t`` one of the
``phi`` channels: such a term is exactly zero in value and has gradient ``sum_k c_k grad t_k``, so it
changes the estimator without changing the value. ``sg`` is ``jax.lax.stop_gradient`` and
``w~_k = w_k / sum_j w_j`` the normalised importance weights.

Importance samples live on ``axis`` (default 0): arrays are ``[K, B]`` and surrogates ``[B]``.

Estimators as objects
---------------------
Each estimator is also a small frozen object that carries and checks its settings when it is
built (``IWAE()``, ``DReG(num_groups=2)``, ``CIWAE(beta)``, ``Renyi(alpha)``,
``Reinforce(bound, baseline, kl)``, ...) and gives its surrogate over the views in one method,
``estimator.surrogate(terms, axis) -> [B]``. :data:`ESTIMATORS` is the one registry, name -> class,
that :func:`dgmjax.losses.make_loss` looks names up in; :func:`register` adds a class to it.

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  Williams, Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
  Learning, Machine Learning 1992 (REINFORCE).
  Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014 (NVIL).
  Mnih & Rezende, Variational Inference for Monte Carlo Objectives, ICML 2016 (VIMCO).
  Roeder, Wu & Duvenaud, Sticking the Landing, NeurIPS 2017 (STL).
  Bornschein & Bengio, Reweighted Wake-Sleep, ICLR 2015 (RWS).
  Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte Carlo
  Objectives, ICLR 2019 (DReG, RWS-DReG).
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018 (MIWAE,
  CIWAE, PIWAE).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, DTypeLike, Float, Real

from dgmjax import _checks, objectives

__all__ = [
    "BASELINES", "BOUNDS", "CIWAE", "DReG", "ELBO", "ESTIMATORS", "Estimator", "IWAE", "MIWAE",
    "LogWeightTerms", "PIWAE", "PIWAEDReG", "RWS", "RWSDReG", "Reinforce", "Renyi",
    "RenyiDReG", "RunningMean", "STL", "VIMCO", "baseline_loss", "ciwae_surrogate",
    "dreg_surrogate", "elbo_surrogate", "from_name", "iwae_surrogate", "learning_signal",
    "miwae_surrogate", "piwae_surrogate", "register", "reinforce_surrogate",
    "renyi_dreg_surrogate", "running_mean_init", "running_mean_update", "rws_dreg_surrogate",
    "rws_surrogate", "stl_surrogate", "vimco_learning_signals", "vimco_surrogate",
    "zero_with_grad",
]

Params = Any

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
    baseline: ``None``, a scalar or ``[B]``; subtracted from the learning signal.
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
  centred = signal - _baseline_like(baseline, signal)
  if bound == "iwae":
    centred = jnp.broadcast_to(centred[None], lw.shape)
  else:
    centred = centred / lw.shape[0]
  if analytic_kl and bound != "elbo":
    raise ValueError("analytic_kl needs bound='elbo' (the KL of the ELBO is analytic)")
  coeff = centred if analytic_kl else centred - _sample_weights(lw, bound)
  return _bound(lw, bound) + _route(coeff, lq)


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


# ----------------------------------------------------------------------------- estimators as objects


#: Baselines of :class:`Reinforce` by name (a function ``(params, x) -> [B]`` is NVIL's).
BASELINES = ("batch_mean",)


def _num_groups_arg(num_groups: Any) -> int:
  """The ``num_groups`` setting ``M``, checked (``bool`` is not an int here)."""
  if (isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer))
      or num_groups < 1):
    raise ValueError(f"num_groups must be a positive int (M), got {num_groups!r}")
  return int(num_groups)


def _check_groups_divide(num_groups: int, num_samples: int) -> None:
  if num_samples % num_groups:
    raise ValueError(f"num_groups must be a positive int dividing num_samples={num_samples}, got "
                     f"{num_groups!r}")


def _alpha_arg(alpha: Any, *, finite: bool) -> None:
  """The Rényi order: a real number (``-inf`` allowed unless ``finite``), checked when concrete."""
  if _checks.is_concrete(alpha):
    a = float(alpha)
    if np.isnan(a) or a == np.inf or (finite and not np.isfinite(a)):
      raise ValueError(f"alpha must be a real number{' (finite)' if finite else ''}, got "
                       f"{alpha!r}")


def _kl_arg(kl: Optional[str]) -> None:
  if kl not in (None, "analytic"):
    raise ValueError(f"kl must be None or 'analytic', got {kl!r}")


def _batch_mean_baseline(signal: Float[Array, "*shape"]) -> Float[Array, "B"]:
  """Leave-one-out minibatch mean of the learning signal ``[B]`` (or ``[K, B]``, averaged over
  ``K``): example ``i``'s baseline depends on the other examples only, so REINFORCE stays unbiased."""
  f = lax.stop_gradient(signal)
  if f.ndim == 2:
    f = jnp.mean(f, axis=0)
  b = f.shape[0]
  if b < 2:
    raise ValueError("baseline='batch_mean' needs a batch of at least 2 (the baseline of an example "
                     "is the mean signal of the others)")
  return (jnp.sum(f) - f) / (b - 1)


class Estimator:
  """A gradient estimator: its settings, checked when it is built, and its surrogate.

  A subclass is a frozen dataclass whose fields are its settings, checked in ``__post_init__``
  (an error naming the setting); :meth:`surrogate` maps the gradient views ``[K, B]`` to ``[B]``
  with the value of the bound and the estimator as ``jax.grad``. :func:`register` adds it to
  :data:`ESTIMATORS`, where :func:`dgmjax.losses.make_loss` looks names up; the oracle test of
  ``tests/test_model_contract.py`` needs one row per registered name.

  Attributes:
    name: the registry name (class level).
    views: the fields of :class:`LogWeightTerms` the surrogate reads (class level). ``('log_w',)``
      alone means the bound is differentiated as it is: losses then evaluate the plain
      log-weights (one pass) and fill only ``log_w``.
    kl: ``'analytic'`` where the loss adds the model's analytic KL (a setting of :class:`ELBO`
      and :class:`Reinforce`; ``None`` for the others).
  """
  name: str = ""
  views: tuple[str, ...] = ("log_w",)
  kl: Optional[str] = None

  def surrogate(self, terms: LogWeightTerms, axis: int = 0) -> Float[Array, "*batch"]:
    """``[K, B]`` views -> ``[B]``: the bound's value, the estimator's gradient."""
    raise NotImplementedError

  def check_num_samples(self, num_samples: int) -> None:
    """Raises ValueError if the estimator cannot use ``num_samples`` samples per datapoint."""
    del num_samples


ESTIMATORS: dict[str, type[Estimator]] = {}
"""The registry, name -> estimator class (:func:`register` adds one): the names configs and
:func:`dgmjax.losses.make_loss` use (:func:`from_name`). The first five differentiate their bound
as it is."""


def register(cls: type[Estimator]) -> type[Estimator]:
  """Adds an estimator class to :data:`ESTIMATORS` under its ``name`` (a class decorator).

  Raises:
    TypeError: ``cls`` is not a frozen dataclass subclass of :class:`Estimator`.
    ValueError: it has no ``name`` of its own, or another class holds the name.
  """
  if not (isinstance(cls, type) and issubclass(cls, Estimator) and dataclasses.is_dataclass(cls)
          and cls.__dataclass_params__.frozen):
    raise TypeError(f"register takes a frozen dataclass subclass of Estimator, got {cls!r}")
  name = cls.__dict__.get("name")
  if not isinstance(name, str) or not name:
    raise ValueError(f"{cls.__name__} needs a name of its own (a class attribute, a str)")
  if ESTIMATORS.get(name, cls) is not cls:
    raise ValueError(f"an estimator named {name!r} is registered already "
                     f"({ESTIMATORS[name].__name__})")
  ESTIMATORS[name] = cls
  return cls


@register
@dataclasses.dataclass(frozen=True)
class ELBO(Estimator):
  """The ``K``-sample ELBO average, reparametrized (:func:`elbo_surrogate`).

  Attributes:
    kl: ``None`` or ``'analytic'``: the ELBO as ``E_q[log p(x|z)] - KL`` with the model's analytic
      ``kl(params, x)`` (the views then hold ``log p(x | z_k)``; Jang et al.'s Gumbel-softmax
      objective).
  """
  name: ClassVar[str] = "elbo"
  kl: Optional[str] = None

  def __post_init__(self):
    _kl_arg(self.kl)

  def surrogate(self, terms, axis=0):
    return elbo_surrogate(terms.log_w, axis)


@register
@dataclasses.dataclass(frozen=True)
class IWAE(Estimator):
  """The IWAE bound, reparametrized (:func:`iwae_surrogate`)."""
  name: ClassVar[str] = "iwae"

  def surrogate(self, terms, axis=0):
    return iwae_surrogate(terms.log_w, axis)


@register
@dataclasses.dataclass(frozen=True)
class MIWAE(Estimator):
  """MIWAE(M, K), reparametrized (:func:`miwae_surrogate`); ``M K`` samples in all.

  Attributes:
    num_groups: ``M``, a positive int dividing the number of samples.
  """
  name: ClassVar[str] = "miwae"
  num_groups: int

  def __post_init__(self):
    object.__setattr__(self, "num_groups", _num_groups_arg(self.num_groups))

  def check_num_samples(self, num_samples):
    _check_groups_divide(self.num_groups, num_samples)

  def surrogate(self, terms, axis=0):
    return miwae_surrogate(terms.log_w, self.num_groups, axis)


@register
@dataclasses.dataclass(frozen=True)
class CIWAE(Estimator):
  """CIWAE(beta) = ``beta * ELBO + (1 - beta) * IWAE``, reparametrized (:func:`ciwae_surrogate`).

  Attributes:
    beta: the ELBO weight, in ``[0, 1]`` (checked when concrete; a traced one may be swept).
  """
  name: ClassVar[str] = "ciwae"
  beta: Real[ArrayLike, ""]

  def __post_init__(self):
    if _checks.is_concrete(self.beta):
      _checks.check_real("beta", self.beta, minimum=0.0, maximum=1.0)

  def surrogate(self, terms, axis=0):
    return ciwae_surrogate(terms.log_w, self.beta, axis)


@register
@dataclasses.dataclass(frozen=True)
class Renyi(Estimator):
  """The variational Rényi bound ``L_alpha``, reparametrized (:func:`objectives.renyi_bound`).

  Attributes:
    alpha: the order, a real number (0: IWAE, 1: ELBO, ``-inf``: VR-max).
  """
  name: ClassVar[str] = "renyi"
  alpha: Real[ArrayLike, ""]

  def __post_init__(self):
    _alpha_arg(self.alpha, finite=False)

  def surrogate(self, terms, axis=0):
    return objectives.renyi_bound(terms.log_w, self.alpha, axis)


@register
@dataclasses.dataclass(frozen=True)
class PIWAE(Estimator):
  """PIWAE(M, K): IWAE(M K) for ``p``, MIWAE(M, K) for ``q`` (:func:`piwae_surrogate`).

  Attributes:
    num_groups: ``M``, a positive int dividing the number of samples.
  """
  name: ClassVar[str] = "piwae"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_w_path", "log_q_score")
  num_groups: int

  def __post_init__(self):
    object.__setattr__(self, "num_groups", _num_groups_arg(self.num_groups))

  def check_num_samples(self, num_samples):
    _check_groups_divide(self.num_groups, num_samples)

  def surrogate(self, terms, axis=0):
    return piwae_surrogate(terms.log_w_theta, terms.log_w_path, terms.log_q_score,
                           self.num_groups, axis)


@register
@dataclasses.dataclass(frozen=True)
class PIWAEDReG(PIWAE):
  """PIWAE(M, K) with the DReG estimator of MIWAE(M, K) for ``q`` (:func:`piwae_surrogate`)."""
  name: ClassVar[str] = "piwae_dreg"

  def surrogate(self, terms, axis=0):
    return piwae_surrogate(terms.log_w_theta, terms.log_w_path, terms.log_q_score,
                           self.num_groups, axis, dreg=True)


@register
@dataclasses.dataclass(frozen=True)
class DReG(Estimator):
  """DReG for ``q``, IWAE for ``p`` (:func:`dreg_surrogate`); with groups, DReG of MIWAE(M, K).

  Attributes:
    num_groups: ``M`` (default 1: IWAE), a positive int dividing the number of samples.
  """
  name: ClassVar[str] = "dreg"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_w_path")
  num_groups: int = 1

  def __post_init__(self):
    object.__setattr__(self, "num_groups", _num_groups_arg(self.num_groups))

  def check_num_samples(self, num_samples):
    _check_groups_divide(self.num_groups, num_samples)

  def surrogate(self, terms, axis=0):
    return dreg_surrogate(terms.log_w_theta, terms.log_w_path, axis, num_groups=self.num_groups)


@register
@dataclasses.dataclass(frozen=True)
class STL(Estimator):
  """Sticking the landing: no score term for ``q`` (:func:`stl_surrogate`).

  Attributes:
    bound: ``'iwae'`` or ``'elbo'``, the bound whose gradient it takes.
  """
  name: ClassVar[str] = "stl"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_w_path")
  bound: str = "iwae"

  def __post_init__(self):
    _bound_arg(self.bound)

  def surrogate(self, terms, axis=0):
    return stl_surrogate(terms.log_w_theta, terms.log_w_path, axis, bound=self.bound)


@register
@dataclasses.dataclass(frozen=True)
class RWS(Estimator):
  """Reweighted wake-sleep: wake-theta and wake-phi (:func:`rws_surrogate`)."""
  name: ClassVar[str] = "rws"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_q_score")

  def surrogate(self, terms, axis=0):
    return rws_surrogate(terms.log_w_theta, terms.log_q_score, axis)


@register
@dataclasses.dataclass(frozen=True)
class RWSDReG(Estimator):
  """Reweighted wake-sleep with the doubly reparametrized wake-phi (:func:`rws_dreg_surrogate`)."""
  name: ClassVar[str] = "rws_dreg"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_w_path")

  def surrogate(self, terms, axis=0):
    return rws_dreg_surrogate(terms.log_w_theta, terms.log_w_path, axis)


@register
@dataclasses.dataclass(frozen=True)
class Reinforce(Estimator):
  """The score-function estimator, for any latent (:func:`reinforce_surrogate`).

  Attributes:
    bound: ``'iwae'`` or ``'elbo'``, the bound whose gradient it takes.
    baseline: ``None``; ``'batch_mean'`` (the leave-one-out minibatch mean of the learning
      signal); a fixed value (a scalar or ``[B]``); or a function ``(params, x) -> [B]`` reading
      its own entries of ``params`` (an input-dependent baseline, NVIL): the loss evaluates it,
      regresses it onto the learning signal with :func:`baseline_loss` and gives the surrogate
      its value (``dataclasses.replace(estimator, baseline=value)``).
    kl: ``None`` or ``'analytic'`` (with ``bound='elbo'``): the views hold ``log p(x | z_k)`` and
      the loss subtracts the model's analytic KL.
  """
  name: ClassVar[str] = "reinforce"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_q_score")
  bound: str = "iwae"
  baseline: Any = None
  kl: Optional[str] = None

  def __post_init__(self):
    _bound_arg(self.bound)
    b = self.baseline
    if isinstance(b, str):
      ok = b in BASELINES
    else:
      ok = b is None or callable(b) or (not isinstance(b, (bool, np.bool_)) and isinstance(
          b, (int, float, np.number, np.ndarray, jax.Array)))
    if not ok:
      raise ValueError(f"baseline must be None, one of {BASELINES}, a fixed value or a function "
                       f"(params, x) -> [B]; got {b!r}")
    _kl_arg(self.kl)
    if self.kl == "analytic" and self.bound != "elbo":
      raise ValueError("kl='analytic' with 'reinforce' needs bound='elbo'")

  def surrogate(self, terms, axis=0):
    if callable(self.baseline):
      raise ValueError("a baseline function (params, x) -> [B] is evaluated by the loss; give the "
                       "surrogate its value: dataclasses.replace(estimator, baseline=value)")
    lw = _to_front(terms.log_w_theta, axis, "log_w_theta")
    lq = _to_front(terms.log_q_score, axis, "log_q_score")
    b = self.baseline
    if isinstance(b, str):
      b = _batch_mean_baseline(learning_signal(lw, 0, bound=self.bound))
    return reinforce_surrogate(lw, lq, b, 0, bound=self.bound, analytic_kl=self.kl == "analytic")


@register
@dataclasses.dataclass(frozen=True)
class VIMCO(Estimator):
  """VIMCO: REINFORCE for IWAE, leave-one-out baselines (:func:`vimco_surrogate`); ``K >= 2``."""
  name: ClassVar[str] = "vimco"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_q_score")

  def check_num_samples(self, num_samples):
    if num_samples < 2:
      raise ValueError(f"estimator 'vimco' needs num_samples >= 2, got {num_samples}")

  def surrogate(self, terms, axis=0):
    return vimco_surrogate(terms.log_w_theta, terms.log_q_score, axis)


@register
@dataclasses.dataclass(frozen=True)
class RenyiDReG(Estimator):
  """The doubly reparametrized estimator of ``L_alpha`` (:func:`renyi_dreg_surrogate`).

  Attributes:
    alpha: the order, a finite real number.
  """
  name: ClassVar[str] = "renyi_dreg"
  views: ClassVar[tuple[str, ...]] = ("log_w_theta", "log_w_path")
  alpha: Real[ArrayLike, ""]

  def __post_init__(self):
    _alpha_arg(self.alpha, finite=True)

  def surrogate(self, terms, axis=0):
    return renyi_dreg_surrogate(terms.log_w_theta, terms.log_w_path, self.alpha, axis)


# ----------------------------------------------------------------------------- names


def _quoted(names: Sequence[str]) -> str:
  """``'a', 'b' and 'c'``."""
  names = [repr(n) for n in names]
  return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _owners(setting: str) -> list[str]:
  """The registered estimators with ``setting`` among their fields, in registry order."""
  return [n for n, c in ESTIMATORS.items()
          if setting in {f.name for f in dataclasses.fields(c)}]


def from_name(name: str, **settings: Any) -> Estimator:
  """The estimator registered as ``name``, built with ``settings`` (how configs name one).

  A setting given as ``None`` is no setting, and ``bound='iwae'`` is accepted by every estimator
  (the others name their bound); any other setting the class does not have is an error naming
  the estimators it applies to. The class checks the values.

  Args:
    name: a key of :data:`ESTIMATORS`.
    **settings: the fields of its class.

  Returns:
    ``ESTIMATORS[name](**settings)``; e.g. ``from_name('dreg', num_groups=2) == DReG(2)``.

  Raises:
    ValueError: an unknown name; a setting the estimator does not have, or one it needs missing.
    TypeError: a setting no registered estimator has.
  """
  if not isinstance(name, str) or name not in ESTIMATORS:
    raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, got {name!r}")
  cls = ESTIMATORS[name]
  fields = {f.name: f for f in dataclasses.fields(cls)}
  kwargs = {s: v for s, v in settings.items() if v is not None and s in fields}
  for s, v in settings.items():
    if v is None or s in fields:
      continue
    who = _owners(s)
    if not who:
      known = sorted({f.name for c in ESTIMATORS.values() for f in dataclasses.fields(c)})
      raise TypeError(f"{s!r} is a setting of no estimator (those of the registered ones: "
                      f"{known})")
    if s == "bound":
      _bound_arg(v)
      if v != "iwae":
        raise ValueError(f"bound= applies to estimators {_quoted(who)} only (the others name "
                         f"their bound), got estimator {name!r} with bound={v!r}")
    elif s == "kl" and v == "analytic":
      raise ValueError(f"kl='analytic' applies to the ELBO ({', '.join(map(repr, who))}), not "
                       f"{name!r}")
    else:
      raise ValueError(f"{s} applies to {'estimator ' if len(who) == 1 else ''}{_quoted(who)} "
                       f"only, got estimator {name!r}")
  missing = [f for f in fields if fields[f].default is dataclasses.MISSING and f not in kwargs]
  if missing:
    raise ValueError(f"estimator {name!r} needs {' and '.join(missing)}")
  return cls(**kwargs)
