"""Variational bounds as reductions of log-weights.

Every bound here takes log-weights ``log w_k = log p(x, z_k) - log q(z_k | x)``, importance samples on
``axis`` (default 0, so ``[K, B]``), and returns one value per remaining index (``[B]``). Models
build log-weights; these functions reduce them, so one implementation serves every model.
Averaging over the batch is left to the caller.

Bad input: integer settings (``num_groups``, ``axis``) are Python or NumPy ints; bools, floats
and traced values raise :class:`~dgmjax._checks.ArgumentTypeError` (a ``TypeError`` that is also a
``ValueError``) naming the argument, out-of-range ones ``ValueError``. Weights (``beta``,
``lam``) are checked when concrete (``ValueError``) and, when traced (annealed inside ``jit``),
make the result NaN if they are out of range; they are scalars, and an array of another shape
raises ``ValueError`` naming them and the shape expected (never a broadcasting error, nor a
result broadcast against them). Log-weights are real arrays (a complex, bool or text array raises
:class:`~dgmjax._checks.ArgumentTypeError` naming it, also under ``jit``); their values are not
checked: ``-inf`` is a valid log-weight (handled exactly), and NaN in gives NaN out.

Which axis holds the samples: these functions reduce ``axis`` (default 0) of whatever array they
are given. A ``[B, K]`` array passed as ``[K, B]`` log-weights is reduced over the batch, and
nothing here can tell: both are plausible real matrices and no function of this module knows
``K``. It is caught where ``K`` is known: :func:`dgmjax.models.base.log_weights` builds the
array as ``[K, B]`` from ``num_samples`` itself, and
:func:`dgmjax.models.base.check_log_weights` checks a user-built one against ``num_samples``
(and says when it looks transposed). Build log-weights with ``jax.vmap`` over the ``K`` keys
(which puts samples on axis 0), or pass ``axis=1`` for ``[B, K]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, Real

from dgmjax import _checks

__all__ = [
    "beta_elbo", "ciwae_bound", "effective_sample_size", "elbo", "elbo_analytic_kl", "free_bits",
    "importance_weights", "iwae_bound", "jackknife_bound", "log_mean_exp", "miwae_bound",
    "naive_log_likelihood", "piwae_bounds", "renyi_bound", "renyi_weights",
]


def _traced_in_range(value: Real[ArrayLike, "*shape"], lo: float,
                     hi: float | None) -> Real[ArrayLike, "*shape"]:
  """``value`` itself when concrete (already checked); when traced, NaN where outside [lo, hi]."""
  if _checks.is_concrete(value):
    return value
  ok = jnp.isfinite(value) & (value >= lo)
  if hi is not None:
    ok = ok & (value <= hi)
  return jnp.where(ok, value, jnp.nan)


def _all_neg_inf(x: Float[Array, "..."], axis: int) -> Bool[Array, "..."]:
  return jnp.all(x == -jnp.inf, axis=axis, keepdims=True)


def log_mean_exp(x: Float[ArrayLike, "*shape"], axis: int = 0) -> Float[Array, "*reduced"]:
  """Numerically stable ``log(mean(exp(x)))`` along ``axis``.

  Built on ``jax.nn.logmeanexp``. Slices where every entry is ``-inf`` give ``-inf`` with a zero
  gradient (rather than the ``0/0`` NaN of the plain softmax gradient); slices with any finite
  entry give the usual value and gradient (the softmax of ``x``, divided by nothing else).

  .. math:: \\mathrm{LME}(x) = \\log \\frac1K \\sum_{k=1}^K e^{x_k}

  Args:
    x: ``[K, ...]`` with the reduced axis at ``axis``.
    axis: the axis to reduce.

  Returns:
    ``x`` without ``axis``.
  """
  return _log_mean_exp(x, axis, "x")


def _log_mean_exp(x: Float[ArrayLike, "*shape"], axis: int,
                  name: str) -> Float[Array, "*reduced"]:
  axis = _checks.check_num_samples(name, x, axis)
  x = jnp.asarray(x)
  dead = _all_neg_inf(x, axis)
  safe = jnp.where(dead, jnp.zeros((), x.dtype), x)
  out = jax.nn.logmeanexp(safe, axis=axis, keepdims=True)
  out = jnp.where(dead, jnp.full((), -jnp.inf, out.dtype), out)
  return jnp.squeeze(out, axis=axis)


def elbo(log_weights: Float[ArrayLike, "*shape"], axis: int = 0) -> Float[Array, "*batch"]:
  """Monte Carlo ELBO: the mean of the log-weights over importance samples.

  .. math:: \\mathcal{L}_1 = \\frac1K \\sum_{k=1}^K \\log w_k, \\quad \\log w_k = \\log p(x, z_k) - \\log q(z_k|x)

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  """
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  return jnp.mean(log_weights, axis=axis)


def iwae_bound(log_weights: Float[ArrayLike, "*shape"], axis: int = 0) -> Float[Array, "*batch"]:
  """The importance-weighted bound ``L_K`` (IWAE).

  ``L_1 <= L_K <= L_{K+1} <= log p(x)``; with ``K = 1`` it equals the ELBO exactly.

  .. math:: \\mathcal{L}_K = \\log \\frac1K \\sum_{k=1}^K w_k

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  """
  return _log_mean_exp(log_weights, axis, "log_weights")


def importance_weights(log_weights: Float[ArrayLike, "*shape"],
                       axis: int = 0) -> Float[Array, "*shape"]:
  """Self-normalised importance weights ``w_k / sum_j w_j`` (softmax over samples).

  A slice whose log-weights are all ``-inf`` has no normalisable weights; it gets zeros.

  .. math:: \\tilde w_k = \\frac{w_k}{\\sum_j w_j}

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[K, B]``, summing to 1 over ``axis``.
  """
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  log_weights = jnp.asarray(log_weights)
  dead = _all_neg_inf(log_weights, axis)
  safe = jnp.where(dead, jnp.zeros((), log_weights.dtype), log_weights)
  return jnp.where(dead, jnp.zeros((), log_weights.dtype), jax.nn.softmax(safe, axis=axis))


def effective_sample_size(log_weights: Float[ArrayLike, "*shape"],
                          axis: int = 0) -> Float[Array, "*batch"]:
  """Kish's effective sample size of the importance weights, in ``[1, K]`` (0 if all are zero).

  .. math:: \\mathrm{ESS} = \\frac{(\\sum_k w_k)^2}{\\sum_k w_k^2}

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[B]``.
  """
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  log_weights = jnp.asarray(log_weights)
  dead = jnp.all(log_weights == -jnp.inf, axis=axis)
  safe = jnp.where(_all_neg_inf(log_weights, axis), jnp.zeros((), log_weights.dtype),
                   log_weights)
  log_ess = (2.0 * jax.nn.logsumexp(safe, axis=axis)
             - jax.nn.logsumexp(2.0 * safe, axis=axis))
  return jnp.where(dead, jnp.zeros((), log_ess.dtype), jnp.exp(log_ess))


def _mean_over_samples(term: Float[ArrayLike, "..."], like: Float[ArrayLike, "..."], axis: int,
                       name: str) -> Float[ArrayLike, "..."]:
  """``term`` averaged over ``axis`` if it carries the sample axis, else returned as is."""
  if jnp.ndim(term) == jnp.ndim(like):
    return jnp.mean(term, axis=axis)
  return term


def elbo_analytic_kl(log_likelihood: Float[ArrayLike, "*shape"], kl: Float[ArrayLike, "..."],
                     axis: int = 0) -> Float[Array, "*batch"]:
  """ELBO with the KL term in closed form (the VAE paper's lower-variance estimator).

  .. math:: \\mathcal{L} = \\frac1K \\sum_k \\log p(x|z_k) - KL(q(z|x) \\| p(z))

  Args:
    log_likelihood: ``log p(x | z_k)``, ``[K, B]``.
    kl: analytic ``KL(q(z|x) || p(z))``, ``[B]``.
    axis: sample axis of ``log_likelihood``.

  Returns:
    ``[B]``.

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014, eq. (7).
  """
  return beta_elbo(log_likelihood, kl, 1.0, axis=axis)


def beta_elbo(log_likelihood: Float[ArrayLike, "*shape"], kl: Float[ArrayLike, "..."],
              beta: Real[ArrayLike, ""] = 1.0, axis: int = 0) -> Float[Array, "*batch"]:
  """ELBO with a weight ``beta`` on the KL term (KL annealing, beta-VAE).

  .. math:: \\mathcal{L}_\\beta = \\mathbb{E}_q[\\log p(x|z)] - \\beta\\, KL(q(z|x) \\| p(z))

  Args:
    log_likelihood: ``log p(x | z_k)``, ``[K, B]``.
    kl: ``[B]`` (analytic) or ``[K, B]`` (single-sample ``log q - log p``, averaged over ``axis``).
    beta: KL weight, finite and ``>= 0`` (may be traced for annealing; a traced negative or
      non-finite ``beta`` gives NaN).
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Higgins et al., beta-VAE, ICLR 2017; Bowman et al., Generating Sentences from a Continuous
    Space, CoNLL 2016 (annealing).
  """
  axis = _checks.check_num_samples("log_likelihood", log_likelihood, axis)
  _checks.check_numeric("kl", kl)
  _checks.check_values("beta", beta, lambda a: np.isfinite(a) & (a >= 0), "finite and >= 0")
  _checks.check_scalar("beta", beta)
  ll = jnp.mean(log_likelihood, axis=axis)
  kl = _mean_over_samples(kl, log_likelihood, axis, "kl")
  if jnp.shape(kl) not in ((), jnp.shape(ll)):
    # never broadcast: a [B, 1] KL against [B] would pair every data point with every KL
    raise ValueError(f"kl must have one value per data point, shape {jnp.shape(ll)} (that of "
                     f"log_likelihood without its sample axis {axis}), or be a scalar; got "
                     f"{jnp.shape(kl)}")
  return ll - _traced_in_range(beta, 0.0, None) * kl


def free_bits(kl: Float[ArrayLike, "..."], lam: Real[ArrayLike, ""], axis: int = 0, *,
              num_groups: int | None = None) -> Float[Array, ""]:
  """The free-bits KL penalty: each latent dimension (or group) pays at least ``lam`` nats.

  The KL of each dimension (or group of dimensions) is averaged over the minibatch on ``axis``
  and then floored at ``lam``; a dimension whose average KL is below ``lam`` gets no gradient, so
  the optimiser has no incentive to push it further to zero.

  .. math:: \\sum_{j} \\max\\big(\\lambda, \\mathbb{E}_{x \\in \\text{batch}}[KL(q(z_j|x) \\| p(z_j))]\\big)

  Args:
    kl: per-dimension KL, ``[B, D]`` (latent dimensions last, batch on ``axis``).
    lam: the floor ``lambda >= 0`` in nats per dimension (or per group); a traced negative or
      non-finite ``lam`` gives NaN.
    axis: the minibatch axis averaged over.
    num_groups: if given (a Python or NumPy int), the ``D`` dimensions are split into this many
      equal contiguous groups and the floor applies to each group's summed KL.

  Returns:
    A scalar: the penalty replacing ``mean_batch(sum_j KL_j)`` in the negative ELBO.

  References:
    Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS 2016,
    Appendix C.8.
  """
  _checks.check_numeric("kl", kl)
  _checks.check_scalar("lam", lam)
  _checks.check_values("lam", lam, lambda a: np.isfinite(a) & (a >= 0), "finite and >= 0")
  if jnp.ndim(kl) < 1:
    raise ValueError(f"kl must have a latent-dimension axis last, got shape {jnp.shape(kl)}")
  axis = _checks.normalize_axis("kl", axis, jnp.ndim(kl))
  if axis == jnp.ndim(kl) - 1:
    raise ValueError("axis (the minibatch axis) must not be the last axis of kl, which holds "
                     "latent dimensions")
  per_dim = jnp.mean(kl, axis=axis)
  if num_groups is not None:
    d = jnp.shape(per_dim)[-1]
    num_groups = _checks.check_int("num_groups", num_groups)
    if num_groups < 1 or d % num_groups:
      raise ValueError(f"num_groups={num_groups} must be >= 1 and divide the {d} latent "
                       "dimensions of kl")
    per_dim = jnp.sum(per_dim.reshape(per_dim.shape[:-1] + (num_groups, d // num_groups)),
                      axis=-1)
  lam = _traced_in_range(lam, 0.0, None)
  return jnp.sum(jnp.maximum(per_dim, jnp.asarray(lam, per_dim.dtype)))


def _split_groups(log_weights: Float[ArrayLike, "..."], num_groups: int,
                  axis: int) -> tuple[Float[Array, "..."], int]:
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  log_weights = jnp.asarray(log_weights)
  n = jnp.shape(log_weights)[axis]
  num_groups = _checks.check_int("num_groups", num_groups)
  if num_groups < 1 or n % num_groups:
    raise ValueError(f"num_groups must be a positive int dividing the {n} samples on axis "
                     f"{axis} of log_weights, got {num_groups!r}")
  shape = jnp.shape(log_weights)
  grouped = log_weights.reshape(shape[:axis] + (num_groups, n // num_groups) + shape[axis + 1:])
  return grouped, axis


def miwae_bound(log_weights: Float[ArrayLike, "*shape"], num_groups: int,
                axis: int = 0) -> Float[Array, "*batch"]:
  """MIWAE(M, K): the average of ``M`` independent IWAE bounds with ``K`` samples each.

  The ``M * K`` samples on ``axis`` are split into ``M = num_groups`` contiguous groups of ``K``.
  ``M = 1`` is IWAE(K); ``K = 1`` is the ELBO averaged over ``M`` samples.

  .. math:: \\mathcal{L}_{M,K} = \\frac1M \\sum_{m=1}^M \\log \\frac1K \\sum_{k=1}^K w_{m,k}

  Args:
    log_weights: ``[M * K, B]``.
    num_groups: ``M``, a Python or NumPy int ``>= 1`` dividing the number of samples.
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  grouped, axis = _split_groups(log_weights, num_groups, axis)
  return jnp.mean(_log_mean_exp(grouped, axis + 1, "log_weights"), axis=axis)


def ciwae_bound(log_weights: Float[ArrayLike, "*shape"], beta: Real[ArrayLike, ""],
                axis: int = 0) -> Float[Array, "*batch"]:
  """CIWAE(beta): a convex combination of the ELBO and the IWAE bound on the same samples.

  .. math:: \\mathcal{L}_\\beta = \\beta\\, \\mathcal{L}_1 + (1 - \\beta)\\, \\mathcal{L}_K

  Args:
    log_weights: ``[K, B]``.
    beta: weight of the ELBO, a scalar in ``[0, 1]`` (a traced value outside gives NaN).
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  _checks.check_num_samples("log_weights", log_weights, axis)
  _checks.check_scalar("beta", beta)
  _checks.check_values("beta", beta, lambda a: (a >= 0) & (a <= 1), "in [0, 1]")
  beta = _traced_in_range(beta, 0.0, 1.0)
  return beta * elbo(log_weights, axis) + (1.0 - beta) * iwae_bound(log_weights, axis)


def piwae_bounds(log_weights: Float[ArrayLike, "*shape"], num_groups: int,
                 axis: int = 0) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
  """PIWAE(M, K): the two targets of partially importance-weighted training.

  The decoder (theta) ascends IWAE(M * K) and the encoder (phi) ascends MIWAE(M, K), both on the
  same ``M * K`` samples. A training loss combines them by routing gradients (see the surrogate
  losses of the gradient-estimator module); this function returns both values.

  Args:
    log_weights: ``[M * K, B]``.
    num_groups: ``M``.
    axis: sample axis.

  Returns:
    ``(theta_bound, phi_bound)``, each ``[B]``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  return iwae_bound(log_weights, axis), miwae_bound(log_weights, num_groups, axis)


def renyi_bound(log_weights: Float[ArrayLike, "*shape"], alpha: Real[ArrayLike, ""],
                axis: int = 0) -> Float[Array, "*batch"]:
  """The variational Rényi bound ``L_alpha`` on the ``K`` samples (Li & Turner 2016).

  ``alpha = 0`` is the IWAE bound, ``alpha -> 1`` the ELBO (returned exactly at ``alpha = 1``),
  ``alpha -> -inf`` VR-max, ``max_k log w_k`` (returned at ``alpha = -inf``). For ``alpha < 0``
  it is no longer a lower bound of ``log p(x)`` in expectation once ``K`` is large enough;
  ``L_alpha`` is non-increasing in ``alpha``.

  .. math:: \\mathcal{L}_\\alpha = \\frac{1}{1-\\alpha} \\log \\frac1K \\sum_{k=1}^K w_k^{1-\\alpha}

  Args:
    log_weights: ``[K, B]``.
    alpha: a real scalar or ``-inf`` (a Python float, or a traced scalar: then ``alpha = 1`` is
      not special-cased and gives NaN; a traced non-finite value gives NaN). An array of another
      shape raises ``ValueError`` (sweep several alphas with ``jax.vmap``).
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Li & Turner, Rényi Divergence Variational Inference, NeurIPS 2016, eq. (9) (VR bound) and
    Section 4.1 (VR-max).
  """
  alpha = _check_alpha(alpha)
  _checks.check_num_samples("log_weights", log_weights, axis)
  lw = jnp.asarray(log_weights)
  if _checks.is_concrete(alpha):
    a = float(np.asarray(alpha))
    if a == 1.0:
      return elbo(lw, axis)
    if a == -np.inf:
      axis = _checks.check_num_samples("log_weights", lw, axis)
      return jnp.max(lw, axis=axis)
  one_minus = (1.0 - jnp.asarray(alpha, lw.dtype))
  return _log_mean_exp(one_minus * lw, axis, "log_weights") / one_minus


def _check_alpha(alpha: Real[ArrayLike, ""]) -> Real[ArrayLike, ""]:
  """A Rényi ``alpha``: a real scalar, concrete ones not NaN or ``+inf`` (``ValueError``), traced
  non-finite ones NaN."""
  _checks.check_numeric("alpha", alpha)
  _checks.check_scalar("alpha", alpha)
  if _checks.is_concrete(alpha):
    a = float(np.asarray(alpha))
    if np.isnan(a) or a == np.inf:
      raise ValueError(f"alpha must be a real number or -inf, got {alpha!r}")
    return alpha
  return jnp.where(jnp.isfinite(alpha), alpha, jnp.nan)


def renyi_weights(log_weights: Float[ArrayLike, "*shape"], alpha: Real[ArrayLike, ""],
                  axis: int = 0) -> Float[Array, "*shape"]:
  """``w_k^(1-alpha) / sum_j w_j^(1-alpha)``: ``d L_alpha / d log w_k`` (``[K, B]``).

  ``alpha`` as for :func:`renyi_bound` (a real scalar or ``-inf``; traced non-finite ones give
  NaN).
  """
  alpha = _check_alpha(alpha)
  _checks.check_num_samples("log_weights", log_weights, axis)
  lw = jnp.asarray(log_weights)
  if _checks.is_concrete(alpha) and float(np.asarray(alpha)) == -np.inf:
    axis = _checks.check_num_samples("log_weights", lw, axis)
    return jax.nn.one_hot(jnp.argmax(lw, axis=axis), lw.shape[axis], dtype=lw.dtype, axis=axis)
  return importance_weights((1.0 - jnp.asarray(alpha, lw.dtype)) * lw, axis)


def _loo_logsumexp(lw: Float[Array, "K *batch"]) -> Float[Array, "K *batch"]:
  """``log sum_{j != k} exp(lw_j)`` for every ``k``: ``[K, B] -> [K, B]``, without cancellation.

  For ``k`` other than the largest entry, ``w_k <= S / 2`` and ``log S + log1p(-w_k / S)`` is
  accurate; for the largest entry the sum over the others is taken directly.
  """
  k = lw.shape[0]
  total = jax.nn.logsumexp(lw, axis=0)                                      # [B]
  top = jnp.argmax(lw, axis=0)                                              # [B]
  is_top = jnp.arange(k)[:, None] == top[None]
  others_of_top = jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, lw), axis=0)  # [B]
  frac = jnp.exp(lw - total[None])
  loo = total[None] + jnp.log1p(-jnp.minimum(frac, 0.5))
  return jnp.where(is_top, others_of_top[None], loo)


def jackknife_bound(log_weights: Float[ArrayLike, "*shape"], order: int = 1,
                    axis: int = 0) -> Float[Array, "*batch"]:
  """Jackknife variational inference (JVI): the IWAE estimate with its bias removed to ``O(K^-m)``.

  The IWAE bound ``L_K`` has bias ``b_1 / K + b_2 / K^2 + ...`` in ``log p(x)``. The generalised
  jackknife of order ``m`` combines the bounds on every subset of ``K - j`` of the same ``K``
  samples, ``j = 0..m``, so that the first ``m`` terms cancel (Nowozin 2018, eq. (11)). It is not
  a bound: its expectation can exceed ``log p(x)``; it is a less biased estimate of it. Order 1
  costs ``O(K B)``, order 2 ``O(K^2 B)`` (a ``lax.map`` over samples, memory ``O(K B)``).

  .. math:: \\hat L^J_{K,m} = \\sum_{j=0}^m c(K, m, j)\\, \\bar L_{K-j}, \\quad c(K, m, j) = (-1)^j \\frac{(K-j)^m}{(m-j)!\\, j!}

  with ``bar L_{K-j}`` the mean of the IWAE bound over all subsets of ``K - j`` samples.

  Args:
    log_weights: ``[K, B]`` with ``K > order``.
    order: ``m``, 0 (plain IWAE), 1 or 2.
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Nowozin, Debiasing Evidence Approximations: On Importance-weighted Autoencoders and
    Jackknife Variational Inference, ICLR 2018.
  """
  order = _checks.check_int("order", order)
  if order not in (0, 1, 2):
    raise ValueError(f"order must be 0, 1 or 2, got {order}")
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  lw = jnp.moveaxis(jnp.asarray(log_weights), axis, 0)
  k = lw.shape[0]
  if k <= order:
    raise ValueError(f"a jackknife of order {order} needs K > {order} samples, got K={k}")
  bars = [iwae_bound(lw, 0)]
  if order >= 1:
    bars.append(jnp.mean(_loo_logsumexp(lw), axis=0) - jnp.log(float(k - 1)))
  if order >= 2:
    idx = jnp.arange(k)

    def leave_two(i: Int[Array, ""]) -> Float[Array, "*batch"]:  # log sum_{j!=i, l!=i, l!=j} w_l
      lw_i = jnp.where((idx == i)[:, None], -jnp.inf, lw)
      out = _loo_logsumexp(lw_i)
      return jnp.sum(jnp.where((idx == i)[:, None], 0.0, out), axis=0)

    pair_sum = jnp.sum(jax.lax.map(leave_two, idx), axis=0)                 # over i != j
    bars.append(pair_sum / (k * (k - 1)) - jnp.log(float(k - 2)))
  coeff = [(-1) ** j * (k - j) ** order / (math.factorial(order - j) * math.factorial(j))
           for j in range(order + 1)]
  return sum(c * b for c, b in zip(coeff, bars))


def naive_log_likelihood(log_likelihood: Float[ArrayLike, "*shape"],
                         axis: int = 0) -> Float[Array, "*batch"]:
  """Naive Monte Carlo estimate of ``log p(x)`` from samples of the prior.

  With ``z_k ~ p(z)``, ``(1/K) sum_k p(x|z_k)`` is unbiased for ``p(x)``; its log is a
  (downward-biased) estimate of ``log p(x)`` whose variance explodes in high dimension because
  prior samples rarely explain ``x``. This is IWAE with ``q = p``.

  .. math:: \\log \\hat p(x) = \\log \\frac1K \\sum_{k=1}^K p(x | z_k), \\quad z_k \\sim p(z)

  Args:
    log_likelihood: ``log p(x | z_k)`` for prior samples ``z_k``, ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[B]``.
  """
  return _log_mean_exp(log_likelihood, axis, "log_likelihood")
