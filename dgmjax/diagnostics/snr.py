"""Gradient diagnostics: moments of gradient draws, signal-to-noise ratio, bias and variance,
power laws.

A stochastic loss ``loss_fn(params, key) -> scalar`` defines a gradient estimator
``jax.grad(loss_fn)(params, key)``. These functions draw ``N`` independent gradients, one per key
of ``jax.random.split(key, N)``, with ``jax.vmap(jax.grad(loss_fn))`` over the keys, in chunks of
``chunk_size`` draws reduced by ``jax.lax.scan`` (so memory is ``O(chunk_size * |params|)`` for any
``N``), and combine the chunks' means and squared deviations with Chan et al.'s pairwise update,
which stays accurate in float32 when the mean dwarfs the spread.

Everything is jitted (``loss_fn``, ``num_draws`` and ``chunk_size`` are static; pass the same
``loss_fn`` object to reuse the compilation).

Compare estimators by a group's ``norm_snr``, the SNR of its gradient vector (:class:`GroupSNR`
says why; the per-parameter mean, median and root-mean-square can disagree with it and with each
other). Dead parameters (zero gradient mean and variance) are left out and counted; a summary
that is NaN, or an SNR at the ``1/sqrt(N)`` noise floor of the draws, is warned about, naming
the group; a non-finite gradient raises.

References:
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018 (SNR).
  Chan, Golub & LeVeque, Updating Formulae and a Pairwise Algorithm for Computing Sample
  Variances, 1979.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import warnings
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import _checks
from dgmjax.models import base as models_base

__all__ = [
    "BiasVariance", "GradientSNR", "GroupBias", "GroupSNR", "Moments", "estimator_snr",
    "fit_power_law", "gradient_bias_variance", "gradient_draws", "gradient_moments",
    "gradient_snr", "joint_loss", "snr_from_moments", "snr_summary",
]

Array = jax.Array
PyTree = Any
LossFn = Callable[[PyTree, Array], Array]


# ----------------------------------------------------------------------------- drawing gradients


class Moments(NamedTuple):
  """First two moments of ``N`` gradient draws.

  Attributes:
    mean: ``E[g]`` per parameter (pytree like ``params``).
    variance: unbiased ``Var[g]`` per parameter.
    num_draws: ``N``.
  """
  mean: PyTree
  variance: PyTree
  num_draws: int

  def select(self, spec) -> "Moments":
    """The moments of a sub-tree: ``spec`` a callable ``tree -> subtree`` or a ``'/'`` key path."""
    return Moments(_select(self.mean, spec), _select(self.variance, spec), self.num_draws)


def joint_loss(losses: Mapping[str, LossFn], *, common_random_numbers: bool = True) -> LossFn:
  """Several estimators as one loss over ``{name: params}``, to measure them in one compiled pass.

  The gradient of the returned loss with respect to ``params_by_name[name]`` is the gradient of
  ``losses[name]``, so one call of :func:`gradient_moments` on ``{name: params for name in losses}``
  gives the moments of every estimator (and compiles once instead of once per estimator).

  Args:
    losses: ``{name: loss_fn(params, key) -> scalar}``.
    common_random_numbers: if True every estimator sees a clone of the key (the same samples: their
      differences are less noisy, but their draws are correlated); if False each gets its own key
      (independent draws, as :func:`gradient_bias_variance` assumes).

  Returns:
    ``loss(params_by_name, key) -> scalar``.
  """
  names = tuple(losses)
  if not names:
    raise ValueError("joint_loss needs at least one loss")

  def loss(params_by_name, key):
    if common_random_numbers:  # clone: an intentional reuse, legal under jax_debug_key_reuse
      keys = [jax.random.clone(key) for _ in names]
    else:
      keys = list(jax.random.split(key, len(names)))
    return sum(losses[n](params_by_name[n], k) for n, k in zip(names, keys))

  return loss


def gradient_draws(loss_fn: LossFn, params: PyTree, key: Array, num_draws: int) -> PyTree:
  """``N`` independent gradient draws, stacked on a new leading axis (one vmapped ``jax.grad``).

  Args:
    loss_fn: ``(params, key) -> scalar``.
    params: the point at which gradients are taken.
    key: a JAX PRNG key, split into ``num_draws`` keys.
    num_draws: ``N``.

  Returns:
    A pytree like ``params`` with leaves ``[N, *leaf.shape]``.
  """
  _check_num_draws(num_draws)
  _checks.check_key("key", key)
  keys = jax.random.split(key, num_draws)
  return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, keys)


def _check_num_draws(num_draws) -> None:
  if not isinstance(num_draws, (int, np.integer)) or num_draws < 2:
    raise ValueError(f"num_draws must be an int >= 2 (a variance needs two draws), got "
                     f"{num_draws!r}")


def _chunk_moments(loss_fn, params, keys):
  """Mean and summed squared deviation of the gradients drawn with ``keys`` ``[c]``."""
  g = jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, keys)
  mean = jax.tree.map(lambda a: jnp.mean(a, axis=0), g)
  m2 = jax.tree.map(lambda a, m: jnp.sum(jnp.square(a - m[None]), axis=0), g, mean)
  return mean, m2


def _merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
  """Chan et al.'s pairwise combination of (count, mean, M2) summaries."""
  n = n_a + n_b

  def mean_fn(ma, mb):
    return ma + (mb - ma) * (n_b / n)

  def m2_fn(ma, mb, sa, sb):
    return sa + sb + jnp.square(mb - ma) * (n_a * n_b / n)

  return (n, jax.tree.map(mean_fn, mean_a, mean_b),
          jax.tree.map(m2_fn, mean_a, mean_b, m2_a, m2_b))


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _moments(loss_fn, params, key, num_draws, chunk_size):
  chunk = num_draws if chunk_size is None else max(1, min(int(chunk_size), num_draws))
  n_full, rem = divmod(num_draws, chunk)
  k_full, k_rem = jax.random.split(key)
  keys = jax.random.split(k_full, n_full * chunk).reshape((n_full, chunk))
  if n_full == 1:
    mean, m2 = _chunk_moments(loss_fn, params, keys[0])
  else:
    zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)), params)

    def body(carry, ks):
      n, mean, m2 = carry
      c_mean, c_m2 = _chunk_moments(loss_fn, params, ks)
      n, mean, m2 = _merge(n, mean, m2, float(chunk), c_mean, c_m2)
      return (n, mean, m2), None

    (_, mean, m2), _ = jax.lax.scan(body, (jnp.zeros((), jnp.float32), zeros, zeros), keys)
  if rem:
    r_mean, r_m2 = _chunk_moments(loss_fn, params, jax.random.split(k_rem, rem))
    _, mean, m2 = _merge(float(n_full * chunk), mean, m2, float(rem), r_mean, r_m2)
  variance = jax.tree.map(lambda s: s / (num_draws - 1), m2)
  return mean, variance


def gradient_moments(loss_fn: LossFn, params: PyTree, key: Array, num_draws: int, *,
                     chunk_size: int | None = None) -> Moments:
  """Mean and (unbiased) variance of ``N`` independent gradient draws, per parameter.

  .. math:: \\bar g = \\frac1N \\sum_n g_n, \\quad s^2 = \\frac{1}{N-1} \\sum_n (g_n - \\bar g)^2

  Args:
    loss_fn: ``(params, key) -> scalar``; its ``jax.grad`` is the estimator.
    params: the point at which gradients are taken.
    key: a JAX PRNG key.
    num_draws: ``N >= 2``.
    chunk_size: draws per vmapped batch (default: all at once); the chunks run under
      ``jax.lax.scan`` and the remainder, if any, as one more batch.

  Returns:
    :class:`Moments` (``mean`` and ``variance`` pytrees like ``params``).
  """
  _check_num_draws(num_draws)
  _checks.check_key("key", key)
  if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
  mean, variance = _moments(loss_fn, params, key, int(num_draws),
                            None if chunk_size is None else int(chunk_size))
  return Moments(mean, variance, int(num_draws))


# ----------------------------------------------------------------------------- groups


def _select(params: PyTree, spec) -> PyTree:
  if callable(spec):
    return spec(params)
  node, done = params, []
  for part in str(spec).split("/"):
    keys = list(node.keys()) if isinstance(node, Mapping) else None
    if keys is None or part not in keys:
      where = "/".join(done) or "the top level"
      raise ValueError(f"groups: {spec!r} names no parameters: {part!r} is not a key at {where} "
                       f"of params{f' (keys: {sorted(map(str, keys))})' if keys else ''}")
    node, done = node[part], done + [part]
  return node


def _resolve_groups(params: PyTree, groups) -> dict[str, Callable[[PyTree], PyTree]]:
  if groups is None:
    if isinstance(params, Mapping):
      return {str(k): (lambda t, k=k: t[k]) for k in params}
    return {"all": lambda t: t}
  if not isinstance(groups, Mapping):
    raise TypeError(f"groups must be a mapping from names to selectors (a callable or a '/' "
                    f"path of keys), got {type(groups).__name__}")
  return {str(name): (lambda t, s=spec: _select(t, s)) for name, spec in groups.items()}


def _flat(tree: PyTree) -> Array:
  leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree)]
  if not leaves:
    raise ValueError("a parameter group selects no parameters")
  return jnp.concatenate(leaves) if len(leaves) > 1 else leaves[0]


# ----------------------------------------------------------------------------- SNR


def _ratio(num: Array, den: Array) -> Array:
  """``num / den`` with ``0 / 0 = 0`` (a gradient that is identically zero has no signal)."""
  both_zero = (num == 0) & (den == 0)
  return jnp.where(both_zero, jnp.zeros((), num.dtype),
                   num / jnp.where(both_zero, jnp.ones((), den.dtype), den))


class GroupSNR(NamedTuple):
  """Summaries of a group of parameters (e.g. encoder ``phi``, decoder ``theta``).

  **Compare estimators by** ``norm_snr`` (:attr:`COMPARE_BY`), the SNR of the group's gradient
  vector, ``||E[g]|| / sqrt(E||g - E[g]||^2)``. It is what an SGD step sees: the expected
  decrease of the loss after a step along ``g`` at the best step size is proportional to
  ``||E[g]||^2 SNR^2 / (1 + SNR^2)`` with this SNR. It is a ratio of sums, so every parameter
  counts by the size of its gradient, a dead parameter adds nothing, and a few parameters whose
  gradient is nearly deterministic cannot dominate it. The per-parameter summaries
  (``mean_snr``, ``median_snr``, ``rms_snr``) weight every parameter equally whatever its scale
  and can rank estimators the other way: a score-function estimator whose encoder has a few
  saturated codes gets a large ``mean_snr`` / ``rms_snr`` from the parameters of those codes
  (their gradient is the deterministic KL term except on the rare draws of an unlikely class,
  which ``N`` draws can miss: their variance is underestimated, their SNR overestimated) while
  the median and ``norm_snr`` sit at the noise floor (docs/studies/gradient_snr.md works through
  such a case; :func:`snr_from_moments` warns when ``rms_snr`` exceeds ten times the median).

  Parameters without gradient signal, **dead** ones (zero mean and zero variance: a ReLU unit off
  for the whole batch, the weights of an input pixel that is 0 in every image, a parameter the
  loss does not use), are left out of every summary and counted in ``num_dead``. The
  per-parameter summaries run over the parameters whose SNR is finite, those with a nonzero
  variance; a deterministic gradient (zero variance, nonzero mean: SNR ``inf``) is counted in
  ``num_zero_variance`` and ``num_infinite_snr`` instead. A summary with no parameter to run
  over is NaN, and :func:`snr_from_moments` (hence :func:`gradient_snr` and
  :func:`estimator_snr`) then warns, naming the group and why; they also warn when a group's
  ``norm_snr`` or ``median_snr`` sits at the noise floor of the ``N`` draws (an unresolved
  signal: the value measures ``N``, not the estimator), and raise on a non-finite gradient.

  Attributes:
    mean_snr: mean of the per-parameter SNR over the parameters with nonzero variance.
    median_snr: median of the per-parameter SNR over the same parameters (floor ``~0.67 /
      sqrt(N)`` when the signal is unresolved).
    norm_snr: ``||mean|| / sqrt(total_variance)``, the SNR of the group's gradient vector: the
      summary to compare estimators by (floor ``~1 / sqrt(N)``).
    mean_abs_mean: mean over the parameters with gradient signal of ``|E[g]|`` (the signal).
    mean_std: mean over the same parameters of ``std[g]`` (the noise).
    total_variance: ``sum`` over parameters of ``Var[g]`` (trace of the covariance).
    num_params: number of scalar parameters in the group (dead ones included).
    rms_snr: ``sqrt(mean_i mean_i^2 / Var_i)``, the root-mean-square per-parameter SNR (over the
      parameters with nonzero variance).
    rms_snr_debiased: the same with ``mean_i^2`` replaced by ``mean_i^2 - Var_i / N``, which is
      unbiased for ``E[g_i]^2`` when the signal is the sample mean of the ``N`` draws themselves
      (clipped at 0; equal to ``rms_snr`` when no ``N`` is given). The plain estimate cannot fall
      below the noise floor ``~1/sqrt(N)``; this one can, on average over the group.
    num_zero_variance: parameters with zero gradient variance (dead ones included), left out of
      the per-parameter SNR summaries.
    num_infinite_snr: parameters whose SNR is ``inf`` (zero variance and a nonzero mean, or an
      overflow), also left out.
    num_dead: parameters without gradient signal (zero mean and zero variance), left out of every
      summary.
    norm_snr_debiased: ``norm_snr`` with ``||mean||^2`` replaced by ``||mean||^2 -
      total_variance / N`` (clipped at 0): resolves a group SNR below the floor ``1 / sqrt(N)``.
    noise_floor: ``1 / sqrt(N)``, the value the plain ``norm_snr`` takes for a gradient without
      signal (NaN when the signal does not come from the same ``N`` draws).
  """
  mean_snr: Array
  median_snr: Array
  norm_snr: Array
  mean_abs_mean: Array
  mean_std: Array
  total_variance: Array
  num_params: int
  rms_snr: Array | None = None
  rms_snr_debiased: Array | None = None
  num_zero_variance: Array | None = None
  num_infinite_snr: Array | None = None
  num_dead: Array | None = None
  norm_snr_debiased: Array | None = None
  noise_floor: Array | None = None

  #: The summary to compare estimators by (see the class docstring for why).
  COMPARE_BY = "norm_snr"


class GradientSNR(NamedTuple):
  """Per-parameter gradient statistics and per-group summaries.

  Attributes:
    mean: ``E[g]`` per parameter (pytree like ``params``).
    std: ``std[g]`` per parameter.
    variance: ``Var[g]`` per parameter (unbiased).
    snr: ``|E[g]| / std[g]`` per parameter (``inf`` where the variance is exactly zero and the mean
      is not; 0 where both are zero, as for a parameter the loss does not depend on). The group
      summaries leave both out (see :class:`GroupSNR`).
    groups: ``{name: GroupSNR}``.
    num_draws: ``N``.
  """
  mean: PyTree
  std: PyTree
  variance: PyTree
  snr: PyTree
  groups: dict
  num_draws: int


@jax.jit
def _snr_stats(mean: PyTree, variance: PyTree, inv_n):
  """Per-parameter std and SNR and the group statistics (one compiled call per tree structure)."""
  std = jax.tree.map(jnp.sqrt, variance)
  snr = jax.tree.map(_ratio, jax.tree.map(jnp.abs, mean), std)
  m, v, r, s = _flat(mean), _flat(variance), _flat(snr), _flat(std)
  total = jnp.sum(v)
  zero = jnp.zeros((), r.dtype)
  nan = jnp.asarray(jnp.nan, r.dtype)
  # Dead parameters (zero mean and variance) have no gradient signal: left out of every summary.
  alive = ~((v == 0) & (m == 0))
  n_alive = jnp.sum(alive)
  # Parameters with noise and a finite SNR; a noiseless one (0/0 for a dead unit, inf for a
  # deterministic gradient or an underflowed variance) has no finite SNR to average: it is
  # counted, not averaged. With none left the summaries are NaN (0 / 0 below). A NaN gradient
  # stays in, so that it shows as NaN.
  live = ~((v == 0) | jnp.isinf(r))
  n_live = jnp.sum(live)
  snr2 = jnp.where(live, jnp.square(m) / jnp.where(live, v, jnp.ones((), v.dtype)), zero)
  # mean_i (m_i^2 - v_i / N) / v_i is unbiased for mean_i E[g_i]^2 / Var_i when m is the sample
  # mean of the N draws (inv_n = 1/N; 0 gives the plain estimate). Clipped at 0, which only acts
  # where the group's signal is unresolved even on average.
  debiased = jnp.sum(jnp.where(live, snr2 - inv_n, zero)) / n_live
  # The same for the gradient vector: E||m||^2 = ||E g||^2 + tr(Cov) / N.
  sq = jnp.sum(jnp.square(m))
  norm = jnp.where(n_alive > 0, _ratio(jnp.sqrt(sq), jnp.sqrt(total)), nan)
  norm_debiased = jnp.where(
      total > 0, jnp.sqrt(jnp.maximum(sq - inv_n * total, zero) / jnp.where(total > 0, total, 1)),
      norm)
  stats = dict(
      mean_snr=jnp.sum(jnp.where(live, r, zero)) / n_live,
      median_snr=jnp.nanmedian(jnp.where(live, r, nan)),
      norm_snr=norm,
      mean_abs_mean=jnp.sum(jnp.where(alive, jnp.abs(m), zero)) / n_alive,
      mean_std=jnp.sum(jnp.where(alive, s, zero)) / n_alive, total_variance=total,
      rms_snr=jnp.sqrt(jnp.sum(snr2) / n_live),
      rms_snr_debiased=jnp.sqrt(jnp.maximum(debiased, zero)),
      num_zero_variance=jnp.sum(v == 0),
      num_infinite_snr=jnp.sum(jnp.isinf(r)),
      num_dead=jnp.sum(~alive),
      norm_snr_debiased=norm_debiased)
  return std, snr, stats


def snr_summary(mean: PyTree, variance: PyTree,
                num_draws: int | None = None) -> tuple[PyTree, PyTree, GroupSNR]:
  """Per-parameter std and SNR, and the :class:`GroupSNR` of the whole tree.

  .. math:: \\mathrm{SNR}(\\theta_i) = \\frac{|\\mathbb{E}[g_i]|}{\\sqrt{\\mathrm{Var}[g_i]}}

  Args:
    mean: the signal ``E[g]`` per parameter.
    variance: ``Var[g]`` per parameter.
    num_draws: ``N``, when ``mean`` is the sample mean of the same ``N`` draws: enables the
      debiased ``rms_snr_debiased`` (``E[mean^2] = E[g]^2 + Var[g] / N``).
  """
  inv_n = 0.0 if num_draws is None else 1.0 / float(num_draws)
  std, snr, stats = _snr_stats(mean, variance, inv_n)
  floor = float("nan") if num_draws is None else 1.0 / math.sqrt(float(num_draws))
  summary = GroupSNR(**stats, num_params=int(sum(np.size(a) for a in jax.tree.leaves(mean))),
                     noise_floor=floor)
  return std, snr, summary


def gradient_snr(loss_fn: LossFn, params: PyTree, key: Array, num_draws: int, *,
                 chunk_size: int | None = None, groups=None) -> GradientSNR:
  """Signal-to-noise ratio of a gradient estimator, per parameter and per group.

  Draws ``N`` independent gradients ``jax.grad(loss_fn)(params, key_n)`` (vmapped over split keys,
  chunked when ``chunk_size`` is given) and returns their mean, standard deviation, variance and
  the SNR ``|mean| / std`` of every parameter, with summaries per group. The SNR of an estimate
  from ``N`` draws has a floor near ``1 / sqrt(N)`` (the standard error of the mean); the groups'
  ``rms_snr_debiased`` subtracts that bias from the squared means and resolves group SNRs below it,
  and :func:`snr_from_moments` accepts the signal from a lower-variance unbiased estimator.

  .. math:: \\mathrm{SNR}(\\theta_i) = \\frac{|\\mathbb{E}[\\hat g_i]|}{\\sigma[\\hat g_i]}

  Args:
    loss_fn: ``(params, key) -> scalar``; the estimator is its ``jax.grad`` in ``params``.
    params: the point at which gradients are measured.
    key: a JAX PRNG key.
    num_draws: ``N >= 2``.
    chunk_size: draws per vmapped batch (default all ``N`` at once).
    groups: ``None`` (one group per top-level key of a mapping ``params``, else ``'all'``) or a
      mapping ``name -> selector`` with a selector a callable ``params -> subtree`` or a string
      path of keys such as ``'phi'`` or ``'params/encoder'``.

  Returns:
    :class:`GradientSNR`. Compare estimators by each group's ``norm_snr``
    (:attr:`GroupSNR.COMPARE_BY`; :class:`GroupSNR` says why).

  Raises:
    ValueError: a gradient draw that is not finite (naming the parameter leaves).

  Warns:
    RuntimeWarning: a group whose per-parameter summaries are NaN (no parameter with gradient
      noise: naming the group, its dead and deterministic parameters), or whose ``norm_snr`` or
      ``median_snr`` sits at the noise floor of the ``N`` draws.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018, eq. (1).
  """
  return snr_from_moments(gradient_moments(loss_fn, params, key, num_draws,
                                          chunk_size=chunk_size), groups=groups)


def estimator_snr(model, params: PyTree, x: Array, estimator: str, num_samples: int,
                  key: Array, num_draws: int, *, chunk_size: int | None = None, groups=None,
                  **loss_kwargs) -> GradientSNR:
  """:func:`gradient_snr` of a contract model's training estimator on a fixed batch ``x``.

  The loss is ``losses.make_loss(model, estimator, num_samples, **loss_kwargs)`` evaluated at
  ``(params, x, key_n, 0)`` (step 0, for an estimator with a schedule); each draw redraws the
  ``K`` importance samples only (the batch is fixed), which is the gradient noise Rainforth et
  al. study.

  Args:
    model: a contract model (:mod:`dgmjax.models.base`).
    params: its parameters (the point at which gradients are measured).
    x: a batch ``[B, ...]``.
    estimator: an estimator of :func:`dgmjax.losses.make_loss` (``'iwae'``, ``'dreg'``, ...).
    num_samples: ``K``.
    key: PRNG key.
    num_draws: ``N >= 2`` gradient draws.
    chunk_size: draws per vmapped batch.
    groups: as :func:`gradient_snr` (default: one group per top-level key of ``params``, e.g.
      ``'encoder'`` and ``'decoder'`` of a :func:`~dgmjax.models.from_networks` model).
    **loss_kwargs: ``num_groups``, ``beta``, ``bound``, ``baseline``, ``kl`` of ``make_loss``.

  Returns:
    :class:`GradientSNR` (compare estimators by each group's ``norm_snr``; for a Flax model whose
    params are ``{"params": {...}}`` pass ``groups``, e.g. ``{"encoder": "params/encoder",
    "decoder": "params/decoder"}``, or the encoder and decoder share one group).

  Raises:
    ValueError: a gradient draw that is not finite: the message names the parameter leaves and
      the contract function that returns a non-finite value on ``x`` (re-evaluated eagerly) and
      the image.

  Warns:
    RuntimeWarning: as :func:`gradient_snr`.

  References:
    Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  """
  from dgmjax import losses  # pylint: disable=import-outside-toplevel
  models_base.check_data(model, x, "x")  # the likelihood's support, before any work
  x = jnp.asarray(x)
  loss = losses.make_loss(model, estimator, num_samples, **loss_kwargs)
  # what the model returns on x, once: a non-finite value (+inf too, whose gradient a model's
  # guard may zero) is named with its image before any draw
  models_base.check_outputs(model, params, x, jax.random.fold_in(key, 1), where="estimator_snr",
                            images="x")
  key_hint = jax.random.clone(key)  # re-draws samples only if a gradient is not finite
  moments = gradient_moments(_FixedBatchLoss(loss, x), params, key, num_draws,
                             chunk_size=chunk_size)
  if _nonfinite_leaves(moments):
    _check_finite_gradients(moments, _model_hint(model, params, x, key_hint, num_samples))
  return snr_from_moments(moments, groups=groups)


def _model_hint(model, params, x, key, num_samples: int) -> str:
  """Which contract function gives a non-finite value on ``x`` (re-evaluated eagerly at
  ``max(num_samples, 16)`` draws), for the error of a non-finite gradient."""
  keys = jax.random.split(key, max(int(num_samples), 16))
  found = models_base.find_nonfinite(model, params, x, keys=keys)
  if found is None:
    return (f"Every contract function of {type(model).__name__} is finite at "
            f"{keys.shape[0]} re-drawn samples of x: the NaN comes from the estimator's "
            f"arithmetic or a rarer draw (jax.debug_nans finds the operation).")
  what = "a non-finite z" if found.function == "sample_q" else found.value
  return (f"Re-evaluated eagerly, {type(model).__name__}.{found.function} returns {what} for "
          f"x[{found.image}] (sample {found.sample}): fix that function at this input; "
          f"dgmjax.models.check_model(model, params, x[{found.image}:{found.image + 1}]) runs "
          f"every contract function on it.")


class _FixedBatchLoss:
  """``(params, key) -> loss`` of a training loss at a fixed batch and step 0 (hashable by
  identity)."""

  def __init__(self, loss, x):
    self.loss, self.x = loss, x

  def __call__(self, params, key):
    return self.loss(params, self.x, key, 0)[0]


def snr_from_moments(moments: Moments, *, groups=None, signal: PyTree | None = None) -> GradientSNR:
  """:class:`GradientSNR` from precomputed :class:`Moments` (e.g. one estimator of a joint loss).

  Args:
    moments: the estimator's moments.
    groups: as in :func:`gradient_snr` (resolved against ``moments.mean``).
    signal: optional pytree replacing ``moments.mean`` as the signal ``E[g]``: the exact gradient,
      or the mean of a lower-variance estimator that is unbiased for the same gradient (for
      example DReG for the IWAE ``phi`` gradient), which resolves SNRs below the ``1/sqrt(N)``
      floor. The noise is always the estimator's own ``std``.

  Returns:
    :class:`GradientSNR`.

  Raises:
    ValueError: a non-finite mean, signal or variance (naming the parameter leaves).

  Warns:
    RuntimeWarning: as :func:`gradient_snr` (the noise floor only where the signal is the
      moments' own mean).
  """
  mean = moments.mean if signal is None else signal
  n = int(moments.num_draws) if signal is None else None
  _check_finite_gradients(moments if signal is None else Moments(signal, moments.variance,
                                                                 moments.num_draws))
  std, snr, _ = snr_summary(mean, moments.variance)
  summaries = {}
  for name, select in _resolve_groups(mean, groups).items():
    summaries[name] = snr_summary(select(mean), select(moments.variance), n)[2]
  _warn_about_groups(summaries, n)
  return GradientSNR(mean, std, moments.variance, snr, summaries, int(moments.num_draws))


def _nonfinite_leaves(moments: Moments) -> list[str]:
  """The parameter leaves whose gradient mean or variance is not finite (concrete only)."""
  bad = []
  for part in (moments.mean, moments.variance):
    for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
      if _checks.is_concrete(leaf) and not np.all(np.isfinite(np.asarray(leaf))):
        name = jax.tree_util.keystr(path)
        if name not in bad:
          bad.append(name)
  return bad


def _check_finite_gradients(moments: Moments, hint: str = "") -> None:
  """Raises ``ValueError`` naming the parameter leaves of a non-finite gradient mean or variance
  (``hint`` says where it came from)."""
  bad = _nonfinite_leaves(moments)
  if not bad:
    return
  more = f" (also {', '.join(bad[1:4])}{', ...' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
  raise ValueError(
      f"the gradient draws are not finite (NaN or inf) for {len(bad)} parameter leaves, the first "
      f"{bad[0]}{more}: no SNR can be computed from them. "
      + (hint or "Check loss_fn at these params for a NaN or an overflow (jax.grad(loss_fn)"
                 "(params, key) for one key reproduces it; jax.debug_nans finds the operation)."))


def _caller_level() -> int:
  """The ``stacklevel`` of a warning that points at the first frame outside dgmjax."""
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  frame, level = inspect.currentframe().f_back, 1
  while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
    frame, level = frame.f_back, level + 1
  return level


def _warn_about_groups(summaries: dict, num_draws: int | None) -> None:
  """Warns, naming the group, where a summary is NaN (no parameter to summarise) or where the
  group's SNR sits at the noise floor of the draws (concrete values only)."""
  for name, g in summaries.items():
    if not _checks.is_concrete(g.norm_snr):
      return
    dead, zero_var, n = int(g.num_dead), int(g.num_zero_variance), g.num_params
    if not np.isfinite(float(g.mean_snr)):
      why = (f"all {n} of its parameters are dead (zero gradient mean and variance: the loss "
             f"does not reach them at these params and data)" if dead == n else
             f"none of its {n} parameters has gradient noise ({dead} dead, "
             f"{zero_var - dead} with a deterministic gradient, SNR inf)")
      warnings.warn(f"gradient SNR of group {name!r}: mean_snr, median_snr and rms_snr are NaN "
                    f"because {why}; norm_snr is {float(g.norm_snr)}", RuntimeWarning,
                    stacklevel=_caller_level())
      continue
    rms, median = float(g.rms_snr), float(g.median_snr)
    if rms > 10.0 * median:
      warnings.warn(
          f"gradient SNR of group {name!r}: rms_snr {rms:.3g} is {rms / median:.0f}x its "
          f"median_snr {median:.3g}: a few parameters dominate the mean and root-mean-square "
          f"SNR (gradients that are nearly deterministic in these draws; with rare large draws "
          f"their variance is underestimated), so those summaries can rank estimators unlike "
          f"the median. Compare estimators by norm_snr (GroupSNR.COMPARE_BY)",
          RuntimeWarning, stacklevel=_caller_level())
    if num_draws is None:
      continue
    floor = 1.0 / math.sqrt(num_draws)
    low = []
    if float(g.norm_snr) < 2.0 * floor:
      low.append(f"norm_snr {float(g.norm_snr):.3g}")
    if float(g.median_snr) < 2.0 * 0.674 * floor:
      low.append(f"median_snr {float(g.median_snr):.3g}")
    if low:
      warnings.warn(
          f"gradient SNR of group {name!r}: {' and '.join(low)} {'is' if len(low) == 1 else 'are'} "
          f"within 2x of the noise floor of "
          f"N = {num_draws} draws (1/sqrt(N) = {floor:.3g} for norm_snr, 0.67/sqrt(N) = "
          f"{0.674 * floor:.3g} for the median): the gradient's mean is not resolved from its "
          f"noise, so these values measure N, not the estimator. Use more draws (a SNR s needs "
          f"N >> 1/s^2), norm_snr_debiased / rms_snr_debiased, or a lower-variance signal "
          f"(snr_from_moments(signal=...))", RuntimeWarning, stacklevel=_caller_level())


# ----------------------------------------------------------------------------- bias and variance


class GroupBias(NamedTuple):
  """Bias and variance summaries of a group of parameters.

  Attributes:
    max_abs_z: largest ``|bias / standard error|`` over the group (about 3-4 for an unbiased
      estimator with a few hundred parameters).
    mean_abs_z: mean ``|z|`` (about 0.8 for an unbiased estimator).
    bias_norm: ``||E[g] - E[g_ref]||``.
    relative_bias: ``bias_norm / ||E[g_ref]||``.
    total_variance: trace of the estimator's covariance.
    reference_total_variance: trace of the reference's covariance.
    variance_ratio: ``total_variance / reference_total_variance``.
  """
  max_abs_z: Array
  mean_abs_z: Array
  bias_norm: Array
  relative_bias: Array
  total_variance: Array
  reference_total_variance: Array
  variance_ratio: Array


class BiasVariance(NamedTuple):
  """Bias and variance of an estimator against a reference, per parameter and per group.

  Attributes:
    bias: ``E[g] - E[g_ref]`` per parameter.
    bias_se: standard error of ``bias``.
    z_score: ``bias / bias_se`` (0 where both are exactly 0).
    variance: ``Var[g]`` per parameter.
    reference_variance: ``Var[g_ref]`` (0 for an exact reference).
    mse: ``bias^2 + Var[g]``, the mean squared error of one draw per parameter.
    mean: ``E[g]``.
    reference_mean: ``E[g_ref]`` (or the exact reference).
    groups: ``{name: GroupBias}``.
  """
  bias: PyTree
  bias_se: PyTree
  z_score: PyTree
  variance: PyTree
  reference_variance: PyTree
  mse: PyTree
  mean: PyTree
  reference_mean: PyTree
  groups: dict


def gradient_bias_variance(estimator_fn: LossFn, reference, params: PyTree, key: Array,
                           num_draws: int, *, reference_draws: int | None = None,
                           chunk_size: int | None = None, groups=None) -> BiasVariance:
  """Bias and variance of a gradient estimator against a reference estimator or exact gradient.

  Estimator and reference are drawn with independent keys; the bias is the difference of their
  means with standard error ``sqrt(Var[g] / N + Var[g_ref] / N_ref)``.

  .. math:: \\mathrm{bias} = \\mathbb{E}[\\hat g] - \\mathbb{E}[\\hat g_{\\mathrm{ref}}], \\quad z = \\mathrm{bias} / \\sqrt{s^2/N + s_{\\mathrm{ref}}^2/N_{\\mathrm{ref}}}

  Args:
    estimator_fn: ``(params, key) -> scalar``, the estimator under test, or its precomputed
      :class:`Moments` (then ``params`` only names the groups and ``num_draws`` is ignored).
    reference: a loss function ``(params, key) -> scalar`` whose gradient is the reference
      estimator (e.g. the reparametrization gradient of the same bound), its :class:`Moments`
      (drawn independently of the estimator's), or a pytree like ``params`` holding the exact
      gradient.
    params: the point at which gradients are compared.
    key: a JAX PRNG key (unused, and may be ``None``, when both are precomputed moments or an
      exact gradient).
    num_draws: draws of the estimator.
    reference_draws: draws of the reference (default ``num_draws``).
    chunk_size: draws per vmapped batch.
    groups: as in :func:`gradient_snr`.

  Returns:
    :class:`BiasVariance`.
  """
  draws_est = not isinstance(estimator_fn, Moments)
  draws_ref = callable(reference) and not isinstance(reference, Moments)
  if draws_est or draws_ref:  # the key is only consumed when something is drawn
    k_est, k_ref = jax.random.split(key)
  if isinstance(estimator_fn, Moments):
    mean, var, num_draws = estimator_fn
  else:
    mean, var, num_draws = gradient_moments(estimator_fn, params, k_est, num_draws,
                                            chunk_size=chunk_size)
  if isinstance(reference, Moments) or callable(reference):
    if isinstance(reference, Moments):
      ref_mean, ref_var, n_ref = reference
    else:
      n_ref = num_draws if reference_draws is None else reference_draws
      ref_mean, ref_var, n_ref = gradient_moments(reference, params, k_ref, n_ref,
                                                  chunk_size=chunk_size)
    ref_se2 = jax.tree.map(lambda v: v / n_ref, ref_var)
  else:
    ref_mean = jax.tree.map(jnp.asarray, reference)
    ref_var = jax.tree.map(jnp.zeros_like, ref_mean)
    ref_se2 = ref_var
  bias, se, z, mse = _bias_stats(mean, var, 1.0 / num_draws, ref_mean, ref_se2)
  summaries = {}
  for name, select in _resolve_groups(bias, groups).items():
    summaries[name] = GroupBias(**_group_bias(select(bias), select(z), select(ref_mean),
                                              select(var), select(ref_var)))
  return BiasVariance(bias, se, z, var, ref_var, mse, mean, ref_mean, summaries)


@jax.jit
def _bias_stats(mean, var, inv_n, ref_mean, ref_se2):
  bias = jax.tree.map(jnp.subtract, mean, ref_mean)
  se = jax.tree.map(lambda v, r: jnp.sqrt(v * inv_n + r), var, ref_se2)
  z = jax.tree.map(_ratio, bias, se)  # 0/0 -> 0: both means exactly equal
  mse = jax.tree.map(lambda b, v: jnp.square(b) + v, bias, var)
  return bias, se, z, mse


@jax.jit
def _group_bias(bias, z, ref_mean, var, ref_var) -> dict:
  b, zz, rm, v, rv = (_flat(t) for t in (bias, z, ref_mean, var, ref_var))
  bias_norm = jnp.sqrt(jnp.sum(jnp.square(b)))
  return dict(max_abs_z=jnp.max(jnp.abs(zz)), mean_abs_z=jnp.mean(jnp.abs(zz)),
              bias_norm=bias_norm,
              relative_bias=_ratio(bias_norm, jnp.sqrt(jnp.sum(jnp.square(rm)))),
              total_variance=jnp.sum(v), reference_total_variance=jnp.sum(rv),
              variance_ratio=_ratio(jnp.sum(v), jnp.sum(rv)))


# ----------------------------------------------------------------------------- power laws


def fit_power_law(x, y) -> tuple[float, float]:
  """Least-squares fit of ``log y = slope * log x + intercept`` (e.g. SNR against K).

  Non-finite or non-positive points are dropped.

  Args:
    x: positive abscissae, ``[n]``.
    y: positive ordinates, ``[n]``.

  Returns:
    ``(slope, intercept)`` as Python floats (natural logs; the slope is base-independent).
  """
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
  if ok.sum() < 2:
    raise ValueError("fit_power_law needs at least two positive, finite points")
  slope, intercept = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)
  return float(slope), float(intercept)
