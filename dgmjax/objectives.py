"""Variational bounds as reductions of log-weights.

Every bound here takes log-weights ``log w_k = log p(x, z_k) - log q(z_k | x)``, importance samples on
``axis`` (default 0, so ``[K, B]``), and returns one value per remaining index (``[B]``). Models
build log-weights; these functions reduce them, so one implementation serves every model.
Averaging over the batch is left to the caller.

Bad input: integer settings (``num_groups``, ``axis``) are Python or NumPy ints; bools, floats
and traced values raise :class:`~dgmjax._checks.ArgumentTypeError` (a ``TypeError`` that is also a
``ValueError``) naming the argument, out-of-range ones ``ValueError``. Weights (``beta``,
``lam``) are checked when concrete (``ValueError``) and, when traced (annealed inside ``jit``),
make the result NaN if they are out of range. Log-weights are not checked: ``-inf`` is a valid
log-weight (handled exactly), and NaN in gives NaN out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import numpy as np

from dgmjax import _checks

Array = jax.Array


def _traced_in_range(value, lo, hi):
  """``value`` itself when concrete (already checked); when traced, NaN where outside [lo, hi]."""
  if _checks.is_concrete(value):
    return value
  ok = jnp.isfinite(value) & (value >= lo)
  if hi is not None:
    ok = ok & (value <= hi)
  return jnp.where(ok, value, jnp.nan)


def _all_neg_inf(x: Array, axis: int) -> Array:
  return jnp.all(x == -jnp.inf, axis=axis, keepdims=True)


def log_mean_exp(x: Array, axis: int = 0) -> Array:
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


def _log_mean_exp(x: Array, axis: int, name: str) -> Array:
  x = jnp.asarray(x)
  axis = _checks.check_num_samples(name, x, axis)
  dead = _all_neg_inf(x, axis)
  safe = jnp.where(dead, jnp.zeros((), x.dtype), x)
  out = jax.nn.logmeanexp(safe, axis=axis, keepdims=True)
  out = jnp.where(dead, jnp.full((), -jnp.inf, out.dtype), out)
  return jnp.squeeze(out, axis=axis)


def elbo(log_weights: Array, axis: int = 0) -> Array:
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


def iwae_bound(log_weights: Array, axis: int = 0) -> Array:
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


def importance_weights(log_weights: Array, axis: int = 0) -> Array:
  """Self-normalised importance weights ``w_k / sum_j w_j`` (softmax over samples).

  A slice whose log-weights are all ``-inf`` has no normalisable weights; it gets zeros.

  .. math:: \\tilde w_k = \\frac{w_k}{\\sum_j w_j}

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[K, B]``, summing to 1 over ``axis``.
  """
  log_weights = jnp.asarray(log_weights)
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  dead = _all_neg_inf(log_weights, axis)
  safe = jnp.where(dead, jnp.zeros((), log_weights.dtype), log_weights)
  return jnp.where(dead, jnp.zeros((), log_weights.dtype), jax.nn.softmax(safe, axis=axis))


def effective_sample_size(log_weights: Array, axis: int = 0) -> Array:
  """Kish's effective sample size of the importance weights, in ``[1, K]`` (0 if all are zero).

  .. math:: \\mathrm{ESS} = \\frac{(\\sum_k w_k)^2}{\\sum_k w_k^2}

  Args:
    log_weights: ``[K, B]``.
    axis: sample axis.

  Returns:
    ``[B]``.
  """
  log_weights = jnp.asarray(log_weights)
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  dead = jnp.all(log_weights == -jnp.inf, axis=axis)
  safe = jnp.where(_all_neg_inf(log_weights, axis), jnp.zeros((), log_weights.dtype),
                   log_weights)
  log_ess = (2.0 * jax.nn.logsumexp(safe, axis=axis)
             - jax.nn.logsumexp(2.0 * safe, axis=axis))
  return jnp.where(dead, jnp.zeros((), log_ess.dtype), jnp.exp(log_ess))


def _mean_over_samples(term: Array, like: Array, axis: int, name: str) -> Array:
  """``term`` averaged over ``axis`` if it carries the sample axis, else returned as is."""
  if jnp.ndim(term) == jnp.ndim(like):
    return jnp.mean(term, axis=axis)
  return term


def elbo_analytic_kl(log_likelihood: Array, kl: Array, axis: int = 0) -> Array:
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


def beta_elbo(log_likelihood: Array, kl: Array, beta=1.0, axis: int = 0) -> Array:
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
  _checks.check_values("beta", beta, lambda a: np.isfinite(a) & (a >= 0), "finite and >= 0")
  ll = jnp.mean(log_likelihood, axis=axis)
  kl = _mean_over_samples(kl, log_likelihood, axis, "kl")
  _checks.check_broadcast(log_likelihood_reduced=ll, kl=kl)
  return ll - _traced_in_range(beta, 0.0, None) * kl


def free_bits(kl: Array, lam, axis: int = 0, *, num_groups: int | None = None) -> Array:
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


def _split_groups(log_weights: Array, num_groups: int, axis: int) -> tuple[Array, int]:
  log_weights = jnp.asarray(log_weights)
  axis = _checks.check_num_samples("log_weights", log_weights, axis)
  n = jnp.shape(log_weights)[axis]
  num_groups = _checks.check_int("num_groups", num_groups)
  if num_groups < 1 or n % num_groups:
    raise ValueError(f"num_groups must be a positive int dividing the {n} samples on axis "
                     f"{axis} of log_weights, got {num_groups!r}")
  shape = jnp.shape(log_weights)
  grouped = log_weights.reshape(shape[:axis] + (num_groups, n // num_groups) + shape[axis + 1:])
  return grouped, axis


def miwae_bound(log_weights: Array, num_groups: int, axis: int = 0) -> Array:
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


def ciwae_bound(log_weights: Array, beta, axis: int = 0) -> Array:
  """CIWAE(beta): a convex combination of the ELBO and the IWAE bound on the same samples.

  .. math:: \\mathcal{L}_\\beta = \\beta\\, \\mathcal{L}_1 + (1 - \\beta)\\, \\mathcal{L}_K

  Args:
    log_weights: ``[K, B]``.
    beta: weight of the ELBO, in ``[0, 1]`` (a traced value outside gives NaN).
    axis: sample axis.

  Returns:
    ``[B]``.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  _checks.check_values("beta", beta, lambda a: (a >= 0) & (a <= 1), "in [0, 1]")
  beta = _traced_in_range(beta, 0.0, 1.0)
  return beta * elbo(log_weights, axis) + (1.0 - beta) * iwae_bound(log_weights, axis)


def piwae_bounds(log_weights: Array, num_groups: int, axis: int = 0) -> tuple[Array, Array]:
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


def naive_log_likelihood(log_likelihood: Array, axis: int = 0) -> Array:
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
