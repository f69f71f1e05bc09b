"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for ``log p(x)``.

Any model of the contract (:mod:`dgmjax.models.base`) with a continuous latent ``z`` (a
``[B, ...]`` array or a pytree of them) can be evaluated. The path is geometric, from a
normalized start density ``f_0`` to the unnormalized posterior ``f_1(z) = p(x, z)``:

.. math:: \\log f_\\beta(z) = \\log f_0(z) + \\beta \\, \\ell(z), \\qquad \\ell(z) = \\log p(x, z) - \\log f_0(z)

with ``f_0 = q(z|x)`` (``init="q"``, the amortized posterior: Wu et al.'s ``recog`` start) or
``f_0 = p(z)`` (``init="prior"``, so ``l(z) = log p(x|z)``). For the schedule
``0 = beta_0 < beta_1 < ... < beta_T = 1`` each of the ``S`` chains per datapoint draws
``z_0 ~ f_0``, then alternates a weight increment and one HMC transition that leaves
``f_{beta_t}`` invariant:

.. math:: \\log w = \\sum_{t=1}^{T} (\\beta_t - \\beta_{t-1}) \\, \\ell(z_{t-1}), \\qquad z_t \\sim \\mathcal{K}_{\\beta_t}(z_{t-1}, \\cdot), \\quad t = 1, \\dots, T-1

and ``E[w] = p(x)``; the estimate is ``log (1/S) sum_s w_s``, a stochastic lower bound (Jensen).
``T = 1`` is plain importance sampling with ``S`` samples: with ``init="q"`` its log-weights are
exactly those of ``models.log_weights(model, params, x, init_key, S)``.

Design
------
* **One program.** The chains are a ``jax.vmap`` over ``S`` and over the ``B`` datapoints (each
  model call sees one datapoint, ``x[i][None]``, and the vmaps batch it back into ``[S, B]``-row
  matmuls); the temperatures are a ``lax.scan``. :func:`ais` and :func:`bdmc` are pure and
  jittable with the integer and string settings static (close over them, e.g. with
  ``functools.partial``, and jit the rest).
* **HMC kernel: blackjax** (``blackjax.mcmc.hmc.build_kernel``: velocity Verlet, identity mass
  matrix, Metropolis-Hastings on the joint energy; NaN or diverging proposals are rejected). It is
  a maintained, tested kernel whose per-chain state vmaps cleanly; one HMC step costs
  ``num_leapfrog`` gradient evaluations of ``log f_beta``, which any implementation pays, and
  blackjax's bookkeeping is compiled away. No hand-written kernel was benchmarked against it.
  blackjax is an optional dependency (``pip install blackjax``), imported when AIS runs.
* **Cost per temperature**: ``num_leapfrog + 1`` gradient evaluations of ``log f_beta`` per chain
  (the extra one re-evaluates the state at the new temperature; it also gives ``l(z)`` for the
  weight increment); the gradient is with respect to ``z`` only.
* **Step-size adaptation** (``adapt_step_size=True``): after each transition the log step size
  moves toward ``target_accept`` (0.65, Wu et al.; Neal 2011's optimum for HMC),
  ``log eps <- clip(log eps + adapt_rate * (a - target_accept))``, with ``a`` the mean
  Metropolis acceptance probability of the transition over the ``S`` chains of a datapoint
  (``step_size_sharing="datapoint"``, the default: posteriors differ in scale between datapoints)
  or over all chains of the batch (``"batch"``, one step size as in Wu et al.'s code, whose
  rule multiplies by 1.02 or 0.98 on a smoothed rate). The rule is traced, inside the scan. An
  adapted kernel depends on the chains' past, which strictly voids AIS's unbiasedness (in
  practice the effect is small: +0.008 +- 0.002 nats on the linear-Gaussian oracle at T = 1000,
  against a per-datapoint Monte Carlo error of about 0.05 nats with 16 chains; Wu et al. run
  such an adapted sampler). For the exact estimator
  pass ``pilot_chains=P``: a pilot run of ``P`` chains per datapoint (own keys) adapts the step
  sizes, and the ``S`` chains of the estimate then run at the pilot's step sizes, fixed (cost:
  ``1 + P / S`` times). The same by hand: ``adapt_step_size=False`` and
  ``step_size=result.step_size`` (the per-transition step sizes ``[T-1, B]`` of a run).
* **Schedules** (:func:`schedule`): ``"sigmoid"`` (Grosse et al. 2015; Wu et al. 2017: more
  temperatures near 0 and 1, where the distributions change fastest), ``"linear"``, or any
  increasing array from 0 to 1.

BDMC
----
On data simulated from the model, ``(z, x) ~ p(z) p(x|z)``, ``z`` is an exact sample of
``p(z|x)``. Running the chain in reverse from it (``beta`` from 1 to 0, at the forward chains'
step sizes, fixed) gives log-weights with ``E[w_rev] = 1 / p(x)``, so ``-log (1/S) sum_s w_rev``
is a stochastic upper bound. Forward AIS (lower) and reverse AIS (upper) sandwich ``log p(x)``; the gap bounds the
error of forward AIS on such data and closes as ``T`` grows (:func:`bdmc`, :func:`simulate`).

Example::

    from functools import partial
    run = jax.jit(partial(ais.ais, model, num_temps=1000, num_chains=16))
    res = run(params, x, key)          # res.log_marginal: [B], res.log_weights: [16, B]

References:
  Neal, Annealed Importance Sampling, Statistics and Computing 2001.
  Neal, MCMC Using Hamiltonian Dynamics, Handbook of MCMC 2011.
  Grosse, Ghahramani & Adams, Sandwiching the Marginal Likelihood Using Bidirectional Monte Carlo,
  arXiv:1511.02543, 2015.
  Wu, Burda, Salakhutdinov & Grosse, On the Quantitative Analysis of Decoder-Based Generative
  Models, ICLR 2017.
  Cabezas, Corenflos, Lao, Louf et al., BlackJAX: Composable Bayesian Inference in JAX, 2024.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import _checks, numerics
from dgmjax.models import base as models_base

Array = jax.Array

__all__ = ["AISResult", "BDMCResult", "INITS", "SCHEDULES", "STEP_SIZE_SHARING", "ais", "bdmc",
           "schedule", "simulate"]

#: Start densities ``f_0`` of the path.
INITS = ("q", "prior")
#: Named annealing schedules of :func:`schedule`.
SCHEDULES = ("sigmoid", "linear")
#: How the adapted step size is shared: by the chains of a datapoint, or by the whole batch.
STEP_SIZE_SHARING = ("datapoint", "batch")


class AISResult(NamedTuple):
  """The output of :func:`ais` (and each direction of :func:`bdmc`).

  Attributes:
    log_marginal: ``[B]`` the estimate of ``log p(x)``: ``log mean_s exp(log_weights[s])``
      (forward; a stochastic lower bound). For the reverse chain of :func:`bdmc`:
      ``-log mean_s exp(log_weights[s])`` (a stochastic upper bound).
    log_weights: ``[S, B]`` the AIS log-weights of the chains (chains on axis 0).
    log_weight_variance: ``[B]`` the variance of the log-weights over the chains (``ddof=0``);
      near 0 means the chains agree and the estimate has converged.
    acceptance: ``[T-1, B]`` the mean Metropolis acceptance probability of each transition
      over the chains of each datapoint (``[0, B]`` for ``T = 1``).
    step_size: ``[T-1, B]`` the HMC step size each transition used.
    betas: ``[T+1]`` the inverse temperatures, in the order the chain visited them.
    z: the final states, leaves ``[S, B, ...]`` (forward: approximate posterior samples).
  """
  log_marginal: Array
  log_weights: Array
  log_weight_variance: Array
  acceptance: Array
  step_size: Array
  betas: Array
  z: Any

  @property
  def mean_acceptance(self) -> Array:
    """The acceptance probability averaged over transitions, chains and datapoints (scalar)."""
    return jnp.mean(self.acceptance) if self.acceptance.size else jnp.asarray(jnp.nan)


class BDMCResult(NamedTuple):
  """The output of :func:`bdmc`: the sandwich ``lower <= log p(x) <= upper`` (in expectation).

  Attributes:
    lower: ``[B]`` forward AIS from ``f_0`` (stochastic lower bound).
    upper: ``[B]`` reverse AIS from the exact posterior sample (stochastic upper bound).
    forward: the forward :class:`AISResult`.
    reverse: the reverse :class:`AISResult` (``log_marginal`` is ``upper``).
  """
  lower: Array
  upper: Array
  forward: AISResult
  reverse: AISResult

  @property
  def gap(self) -> Array:
    """``upper - lower``, ``[B]``: a bound on the error of forward AIS on these data."""
    return self.upper - self.lower


# ----------------------------------------------------------------------------- settings


def _blackjax():
  try:
    import blackjax  # pylint: disable=import-outside-toplevel
  except ImportError as e:  # pragma: no cover - exercised only without blackjax
    raise ImportError("dgmjax.inference.ais needs blackjax for its HMC kernel: "
                      "pip install blackjax "
                      "(or pip install 'dgmjax[ais]')") from e
  return blackjax


def schedule(num_temps: int, kind: str = "sigmoid", *, delta: float = 4.0,
             dtype=jnp.float32) -> Array:
  """The inverse temperatures ``beta_0 = 0 < ... < beta_T = 1``: ``[T+1]``.

  ``"sigmoid"`` (Grosse et al. 2015, Wu et al. 2017, with ``delta = 4``):

  .. math:: \\gamma_t = \\sigma(\\delta (2t/T - 1)), \\quad \\beta_t = (\\gamma_t - \\gamma_0) / (\\gamma_T - \\gamma_0)

  ``"linear"``: ``beta_t = t / T``. ``T = 1`` gives ``[0, 1]`` (importance sampling).

  Args:
    num_temps: ``T >= 1``, the number of weight increments (``T - 1`` HMC transitions).
    kind: ``"sigmoid"`` or ``"linear"``.
    delta: the sigmoid's steepness (> 0).
    dtype: of the result.
  """
  num_temps = models_base.check_num_samples(num_temps, "num_temps")
  if kind not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES} or an array of betas, got {kind!r}")
  delta = _checks.check_real("delta", delta, minimum=0.0, strict_minimum=True)
  t = np.arange(num_temps + 1, dtype=np.float64) / num_temps
  if kind == "linear" or num_temps == 1:
    betas = t
  else:
    g = 1.0 / (1.0 + np.exp(-delta * (2.0 * t - 1.0)))
    betas = (g - g[0]) / (g[-1] - g[0])
  betas[0], betas[-1] = 0.0, 1.0
  return jnp.asarray(betas, dtype)


def _betas(sched, num_temps: int, dtype) -> Array:
  if isinstance(sched, str):
    return schedule(num_temps, sched, dtype=dtype)
  if not _checks.is_concrete(sched):
    b = jnp.asarray(sched, dtype)
    if b.shape != (num_temps + 1,):
      raise ValueError(f"schedule must have num_temps + 1 = {num_temps + 1} betas, got shape "
                       f"{b.shape}")
    # traced betas cannot be checked here: betas that do not rise from 0 to 1 become NaN, so the
    # estimate is NaN, never a plausible number
    valid = ((b[0] == 0) & (b[-1] == 1) & jnp.all(jnp.diff(b) >= 0)
             & jnp.all(jnp.isfinite(b)))
    return jnp.where(valid, b, jnp.nan)
  b = np.asarray(sched, np.float64)
  if b.shape != (num_temps + 1,):
    raise ValueError(f"schedule must be a name in {SCHEDULES} or an array of num_temps + 1 = "
                     f"{num_temps + 1} betas, got shape {b.shape}")
  if not (b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) >= 0) and np.all(np.isfinite(b))):
    raise ValueError(f"schedule must rise from 0 to 1 (non-decreasing), got {b.tolist()[:6]}"
                     f"{' ...' if b.size > 6 else ''}")
  return jnp.asarray(b, dtype)


# ----------------------------------------------------------------------------- settings


def _check_settings(model, params, x, *, num_temps, num_chains, init, num_leapfrog, step_size,
                    target_accept, adapt_rate, step_size_range, step_size_sharing):
  models_base.check_contract(model)
  num_temps = models_base.check_num_samples(num_temps, "num_temps")
  num_chains = models_base.check_num_samples(num_chains, "num_chains")
  num_leapfrog = models_base.check_num_samples(num_leapfrog, "num_leapfrog")
  if init not in INITS:
    raise ValueError(f"init must be one of {INITS}, got {init!r}")
  if init == "prior":
    models_base.require(model, "sample_prior", "AIS with init='prior'")
  if step_size_sharing not in STEP_SIZE_SHARING:
    raise ValueError(f"step_size_sharing must be one of {STEP_SIZE_SHARING}, got "
                     f"{step_size_sharing!r}")
  if _checks.is_concrete(target_accept):
    ta = np.asarray(target_accept)
    if ta.shape != () or not 0.0 < float(ta) < 1.0:
      raise ValueError(f"target_accept must be a number in (0, 1), got {target_accept!r}")
  if _checks.is_concrete(adapt_rate):
    if np.shape(adapt_rate) != () or not float(adapt_rate) >= 0.0:
      raise ValueError(f"adapt_rate must be a number >= 0, got {adapt_rate!r}")
  lo, hi = step_size_range
  if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= hi):
    raise ValueError(f"step_size_range must be (min, max) with 0 < min <= max, got "
                     f"{step_size_range!r}")
  b = models_base.batch_size_of(x)
  if _checks.is_concrete(step_size):
    s = np.asarray(step_size, np.float64)
    if s.ndim > 2 or not np.all(np.isfinite(s)) or not np.all(s > 0):
      raise ValueError(f"step_size must be > 0 and finite (a scalar, [B] or [T-1, B]), got "
                       f"{step_size!r}")
  if jnp.ndim(step_size) > 2:
    raise ValueError(f"step_size must be a scalar, [B] or [T-1, B], got shape "
                     f"{jnp.shape(step_size)}")
  if getattr(model, "latent", None) == "discrete":  # e.g. one-hot float draws
    raise ValueError(f"AIS with HMC needs a continuous latent; {type(model).__name__} declares "
                     f"latent='discrete'")
  z = jax.eval_shape(lambda p, xx, k: model.sample_q(p, xx, k), params, x, jax.random.key(0))
  for path, leaf in jax.tree_util.tree_flatten_with_path(z)[0]:
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      raise ValueError(f"AIS with HMC needs a continuous latent; {type(model).__name__}.sample_q "
                       f"returns leaf {jax.tree_util.keystr(path)!r} of dtype {leaf.dtype}")
  return num_temps, num_chains, num_leapfrog, b


# ----------------------------------------------------------------------------- the annealer


def _one(tree):
  return jax.tree.map(lambda a: a[None], tree)


def _scalar(name, model, value):
  return models_base.check_output(model, name, value, 1)[0]


def _pieces(model, params, init: str):
  """``(log f_0, l)`` of one datapoint: functions of ``(z_i, x_i)`` (no batch axis)."""

  def pieces(z, x):
    zz, xx = _one(z), _one(x)
    ll = _scalar("log_likelihood", model, model.log_likelihood(params, xx, zz))
    lp = _scalar("log_prior", model, model.log_prior(params, zz))
    if init == "prior":
      return lp, ll
    lq = _scalar("log_q", model, model.log_q(params, xx, zz))
    return lq, ll + lp - lq

  return pieces


def _anneal(model, params, x, z0, key, betas, *, init, num_leapfrog, step_size, target_accept,
            adapt_step_size, adapt_rate, step_size_range, step_size_sharing):
  """Runs ``S`` chains per datapoint along ``betas`` from ``z0`` (leaves ``[S, B, ...]``).

  Returns ``(log_w [S, B], acceptance [T-1, B], step sizes [T-1, B], final z)``.
  """
  blackjax = _blackjax()
  from blackjax.mcmc import hmc  # pylint: disable=import-outside-toplevel
  num_temps = betas.shape[0] - 1
  leaves = jax.tree.leaves(z0)
  num_chains, b = leaves[0].shape[:2]
  dtype = jnp.result_type(*leaves)
  dim = sum(int(np.prod(a.shape[2:])) for a in leaves)
  pieces = _pieces(model, params, init)
  kernel = hmc.build_kernel()
  inv_mass = jnp.ones((dim,), dtype)
  del blackjax

  def log_f(beta):
    def f(z, xi):
      base, inc = pieces(z, xi)
      return base + beta * inc, inc
    return f

  def vmap_sb(fn, in_axes):
    # inner vmap over the B datapoints, outer over the S chains (x unbatched across chains)
    inner = jax.vmap(fn, in_axes=tuple(0 if a in ("sb", "b") else None for a in in_axes))
    return jax.vmap(inner, in_axes=tuple(0 if a == "sb" else None for a in in_axes))

  def start(z, beta):
    """Value, gradient and ``l(z)`` of ``log f_beta`` at every chain: ``[S, B]`` each."""
    vg = jax.value_and_grad(log_f(beta), has_aux=True)
    (ld, inc), grad = vmap_sb(vg, ("sb", "b"))(z, x)
    return ld, inc, grad

  def transition(k, z, ld, grad, xi, beta, eps):
    state = hmc.HMCState(z, ld, grad)
    logdensity = lambda zz: log_f(beta)(zz, xi)[0]
    new, info = kernel(k, state, logdensity, eps, inv_mass, num_leapfrog)
    return new.position, info.acceptance_rate

  lo, hi = step_size_range
  log_lo, log_hi = math.log(lo), math.log(hi)
  eps_given = jnp.asarray(step_size, dtype)
  per_transition = eps_given.ndim == 2
  if per_transition and eps_given.shape != (num_temps - 1, b):
    raise ValueError(f"step_size of rank 2 must be [T-1, B] = ({num_temps - 1}, {b}), got "
                     f"{eps_given.shape}")
  if eps_given.ndim == 1 and eps_given.shape != (b,):
    raise ValueError(f"step_size of rank 1 must be [B] = ({b},), got {eps_given.shape}")
  log_eps0 = (jnp.zeros((b,), dtype) if per_transition
              else jnp.log(jnp.broadcast_to(eps_given, (b,))))
  if per_transition:
    eps_xs = eps_given
  else:
    eps_xs = jnp.zeros((num_temps - 1, b), dtype)  # unused: the carried step size is used

  def body(carry, xs):
    z, log_w, log_eps = carry
    b_prev, b_cur, k, eps_t = xs
    ld, inc, grad = start(z, b_cur)
    log_w = log_w + (b_cur - b_prev) * inc
    eps = eps_t if per_transition else jnp.exp(log_eps)
    keys = jax.random.split(k, num_chains * b).reshape(num_chains, b)
    z, acc = vmap_sb(transition, ("sb", "sb", "sb", "sb", "b", None, "b"))(
        keys, z, ld, grad, x, b_cur, eps)
    # a NaN acceptance (a proposal off the support) is a rejection; without this guard one such
    # chain would turn the adapted step size, and every later transition, into NaN
    acc = jnp.where(jnp.isnan(acc), 0.0, acc).astype(dtype)
    mean_acc = jnp.mean(acc, axis=0)
    if step_size_sharing == "batch":
      signal = jnp.broadcast_to(jnp.mean(acc), (b,))
    else:
      signal = mean_acc
    if adapt_step_size and not per_transition:
      log_eps = jnp.clip(log_eps + adapt_rate * (signal - target_accept), log_lo, log_hi)
    return (z, log_w, log_eps), (mean_acc, eps)

  log_w = jnp.zeros((num_chains, b), dtype)
  z = z0
  if num_temps > 1:
    keys = jax.random.split(key, num_temps - 1)
    (z, log_w, _), (acc, eps_used) = lax.scan(
        body, (z, log_w, log_eps0), (betas[:-2], betas[1:-1], keys, eps_xs))
  else:  # importance sampling: no transition
    acc = eps_used = jnp.zeros((0, b), dtype)
  _, inc = vmap_sb(lambda zz, xi: pieces(zz, xi), ("sb", "b"))(z, x)
  log_w = log_w + (betas[-1] - betas[-2]) * inc
  return log_w, acc, eps_used, z


def _log_mean_exp0(a: Array) -> Array:
  """``log mean_s exp(a[s])`` over the chains (axis 0), as one chunk of the library's log-mean-exp."""
  return numerics.streaming_log_mean_exp(lambda chunk: chunk, a[None], a.shape[0])


def _initial_draws(model, params, x, key, num_chains: int, init: str, b: int):
  keys = jax.random.split(key, num_chains)
  if init == "q":
    return models_base.draws(model, params, x, keys).z
  return jax.vmap(lambda k: model.sample_prior(params, k, b))(keys)


def _result(log_w, acc, eps, betas, z, *, reverse: bool = False) -> AISResult:
  lme = _log_mean_exp0(log_w)
  return AISResult(log_marginal=-lme if reverse else lme, log_weights=log_w,
                   log_weight_variance=jnp.var(log_w, axis=0), acceptance=acc, step_size=eps,
                   betas=betas, z=z)


# ----------------------------------------------------------------------------- public API


def ais(model, params, x, key: Array, *, num_temps: int, num_chains: int = 16,
        init: str = "q", schedule: str | Array = "sigmoid", num_leapfrog: int = 10,
        step_size=0.05, target_accept=0.65, adapt_step_size: bool = True, adapt_rate=0.5,
        step_size_range: tuple[float, float] = (1e-4, 0.5),
        step_size_sharing: str = "datapoint", pilot_chains: int | None = None) -> AISResult:
  """Annealed importance sampling estimate of ``log p(x)`` per datapoint (module docstring).

  .. math:: \\log \\hat p(x) = \\log \\frac1S \\sum_{s=1}^S \\exp \\sum_{t=1}^{T} (\\beta_t - \\beta_{t-1}) \\, \\ell(z^s_{t-1})

  Args:
    model: a contract model with a continuous latent (``init="prior"`` also needs
      ``sample_prior``).
    params: its parameters.
    x: ``[B, ...]`` the data.
    key: PRNG key, split into ``(init_key, transition_key)``: the initial draws are those of
      ``models.log_weights(model, params, x, init_key, num_chains)`` (``init="q"``).
    num_temps: ``T >= 1`` weight increments (``T - 1`` HMC transitions; ``T = 1`` is
      importance sampling with ``num_chains`` samples). Static.
    num_chains: ``S`` independent chains per datapoint. Static.
    init: ``"q"`` (start at ``q(z|x)``) or ``"prior"`` (start at ``p(z)``). Static.
    schedule: ``"sigmoid"``, ``"linear"`` or ``[T+1]`` betas rising from 0 to 1.
    num_leapfrog: leapfrog steps per HMC transition (10 in Wu et al.). Static.
    step_size: the initial leapfrog step size (> 0; scalar or ``[B]``), or with
      ``adapt_step_size=False`` a scalar, ``[B]`` or ``[T-1, B]`` of step sizes to use.
    target_accept: the acceptance probability the adaptation aims at, in (0, 1).
    adapt_step_size: adapt the step size after each transition (module docstring). Static.
    adapt_rate: the adaptation's gain on ``log eps`` (>= 0).
    step_size_range: ``(min, max)`` the adapted step size is clipped to.
    step_size_sharing: ``"datapoint"`` (one step size per datapoint, from its ``S`` chains) or
      ``"batch"`` (one for the batch). Static.
    pilot_chains: ``None`` (adapt within the run), or ``P >= 1``: adapt in a pilot run of ``P``
      chains per datapoint, then run the ``S`` chains at its step sizes, fixed (an exactly
      unbiased ``p(x)`` estimate). Needs ``adapt_step_size=True``. Static.

  Returns:
    :class:`AISResult`; ``log_marginal`` ``[B]`` is the estimate.

  Raises:
    ValueError: a setting out of range (naming it), a discrete latent, a contract function
      returning the wrong shape, or (called eagerly) an estimate that is not finite for some
      datapoint: the message names the datapoints and the contract function that returned a
      non-finite value at the chains' states. Under ``jit`` such an estimate is NaN.
    TypeError: ``init="prior"`` for a model without ``sample_prior``, or a contract function
      returning a non-floating dtype (named at trace time).
  """
  _checks.check_key("key", key)
  num_temps, num_chains, num_leapfrog, b = _check_settings(
      model, params, x, num_temps=num_temps, num_chains=num_chains, init=init,
      num_leapfrog=num_leapfrog, step_size=step_size, target_accept=target_accept,
      adapt_rate=adapt_rate, step_size_range=step_size_range,
      step_size_sharing=step_size_sharing)
  if jnp.ndim(step_size) == 2 and adapt_step_size:
    raise ValueError("step_size of shape [T-1, B] (a fixed step size per transition) needs "
                     "adapt_step_size=False")
  if pilot_chains is not None:
    pilot_chains = models_base.check_num_samples(pilot_chains, "pilot_chains")
    if not adapt_step_size:
      raise ValueError("pilot_chains adapts the step size in a pilot run: it needs "
                       "adapt_step_size=True")
  z_shape = jax.eval_shape(lambda p, xx, k: model.sample_q(p, xx, k), params, x,
                           jax.random.key(0))
  dtype = jnp.result_type(*jax.tree.leaves(z_shape))
  betas = _betas(schedule, num_temps, dtype)
  k_init, k_run = jax.random.split(key)
  z0 = _initial_draws(model, params, x, k_init, num_chains, init, b)
  settings = dict(init=init, num_leapfrog=num_leapfrog, target_accept=target_accept,
                  adapt_rate=adapt_rate, step_size_range=step_size_range,
                  step_size_sharing=step_size_sharing)
  if pilot_chains is not None:
    k_run, k_pilot = jax.random.split(k_run)
    k_pilot_init, k_pilot_run = jax.random.split(k_pilot)
    z_pilot = _initial_draws(model, params, x, k_pilot_init, pilot_chains, init, b)
    step_size = _anneal(model, params, x, z_pilot, k_pilot_run, betas, step_size=step_size,
                        adapt_step_size=True, **settings)[2]
    adapt_step_size = False
  log_w, acc, eps, z = _anneal(model, params, x, z0, k_run, betas, step_size=step_size,
                               adapt_step_size=adapt_step_size, **settings)
  result = _result(log_w, acc, eps, betas, z)
  _raise_if_nonfinite(model, params, x, result.log_marginal, (z0, z), init, "ais's estimate")
  return result


def _raise_if_nonfinite(model, params, x, estimate, states, init: str, where: str) -> None:
  """Where ``estimate`` ``[B]`` is concrete and not finite, raises ``ValueError`` naming the
  datapoints and the contract function that gave a non-finite value at the chains' start or
  final states (re-evaluated eagerly: :func:`dgmjax.models.base.find_nonfinite`). Under ``jit``
  nothing is checked: the NaN is the result."""
  if not _checks.is_concrete(estimate):
    return
  bad = np.flatnonzero(~np.isfinite(np.asarray(estimate)))
  if not bad.size:
    return
  functions = ("log_q", "log_prior", "log_likelihood") if init == "q" else (
      "log_prior", "log_likelihood")
  found = None
  for z in states:
    found = found or models_base.find_nonfinite(model, params, x, int(bad[0]), z=z,
                                                functions=functions)
  raise models_base.nonfinite_error(model, params, where, bad, np.size(estimate), found,
                                    int(bad[0]), images="x")


def simulate(model, params, key: Array, num: int, *,
             sample_x_given_z: str | Callable) -> tuple[Array, Any]:
  """Exact draws ``(x, z) ~ p(z) p(x|z)`` from the model's generative process: BDMC's data.

  ``z`` comes from the model's ``sample_prior(params, key, num)``; ``x`` from
  ``sample_x_given_z``:

  * ``"bernoulli"``: ``x ~ Bernoulli(decode(params, z))``, valid for a model whose ``decode``
    returns the means of a Bernoulli ``p(x|z)`` (dgmjax's VAEs on binarized images);
  * a function ``(params, z, key) -> x`` (``[num, ...]``) for any other likelihood.

  Args:
    model: a contract model with ``sample_prior`` (and ``decode`` for ``"bernoulli"``).
    params: its parameters.
    key: PRNG key.
    num: the number of pairs.
    sample_x_given_z: ``"bernoulli"`` or a function, as above (required: only the model knows
      its likelihood).

  Returns:
    ``(x [num, ...], z)``: ``z`` is an exact sample of ``p(z | x)`` for its ``x``.
  """
  num = models_base.check_num_samples(num, "num")
  models_base.require(model, "sample_prior", "simulate")
  k_z, k_x = jax.random.split(key)
  z = model.sample_prior(params, k_z, num)
  if isinstance(sample_x_given_z, str):
    if sample_x_given_z != "bernoulli":
      raise ValueError(f"sample_x_given_z must be 'bernoulli' or a function (params, z, key) -> "
                       f"x, got {sample_x_given_z!r}")
    models_base.require(model, "decode", "simulate with sample_x_given_z='bernoulli'")
    mean = model.decode(params, z, None)
    x = jax.random.bernoulli(k_x, mean).astype(mean.dtype)
  elif callable(sample_x_given_z):
    x = sample_x_given_z(params, z, k_x)
  else:
    raise ValueError(f"sample_x_given_z must be 'bernoulli' or a function (params, z, key) -> x, "
                     f"got {type(sample_x_given_z).__name__}")
  if models_base.batch_size_of(x) != num:
    raise ValueError(f"sample_x_given_z must return x with {num} rows, got "
                     f"{jax.tree.map(jnp.shape, x)}")
  return x, z


def bdmc(model, params, x, z, key: Array, *, num_temps: int, num_chains: int = 16,
         init: str = "q", schedule: str | Array = "sigmoid", num_leapfrog: int = 10,
         step_size=0.05, target_accept=0.65, adapt_step_size: bool = True, adapt_rate=0.5,
         step_size_range: tuple[float, float] = (1e-4, 0.5),
         step_size_sharing: str = "datapoint", pilot_chains: int | None = None) -> BDMCResult:
  """Bidirectional Monte Carlo: forward AIS (lower) and reverse AIS (upper) on simulated data.

  ``(x, z)`` must be exact joint draws from the model (:func:`simulate`), so that ``z[i]`` is an
  exact sample of ``p(z | x[i])``. The ``S`` reverse chains of a datapoint all start at its
  ``z[i]`` (each is marginally exact, which is all the bound needs) and anneal from ``beta = 1``
  to ``0`` along the same schedule, reversed, with HMC at the step sizes the forward chains used
  at each temperature (fixed: the reverse kernels do not adapt, so the upper bound carries no
  adaptation bias):

  .. math:: \\log \\hat p_{\\text{upper}}(x) = -\\log \\frac1S \\sum_{s=1}^S \\exp \\sum_{t=T}^{1} (\\beta_{t-1} - \\beta_t) \\, \\ell(z^s_t), \\quad z^s_T = z

  ``E[1/p_upper] = 1/p(x)``, so ``E[log p_upper] >= log p(x)``; with the forward estimate,
  ``E[lower] <= log p(x) <= E[upper]``.

  Args:
    model, params: as :func:`ais`.
    x: ``[B, ...]`` simulated data.
    z: the latents they were simulated from (leaves ``[B, ...]``).
    key: PRNG key, split into the forward and the reverse chains' keys.
    num_temps, num_chains, init, schedule, num_leapfrog, step_size, target_accept,
      adapt_step_size, adapt_rate, step_size_range, step_size_sharing, pilot_chains: as
      :func:`ais` (``pilot_chains`` makes the forward, lower, side exact too).

  Returns:
    :class:`BDMCResult` (``lower``, ``upper``, ``gap`` ``[B]``).
  """
  _checks.check_key("key", key)
  settings = dict(num_temps=num_temps, num_chains=num_chains, init=init, schedule=schedule,
                  num_leapfrog=num_leapfrog, step_size=step_size, target_accept=target_accept,
                  adapt_step_size=adapt_step_size, adapt_rate=adapt_rate,
                  step_size_range=step_size_range, step_size_sharing=step_size_sharing,
                  pilot_chains=pilot_chains)
  num_temps, num_chains, num_leapfrog, b = _check_settings(
      model, params, x, **{k: v for k, v in settings.items()
                           if k not in ("schedule", "adapt_step_size", "pilot_chains")})
  zs = jax.tree.leaves(z)
  if not zs or any(jnp.ndim(a) < 1 or jnp.shape(a)[0] != b for a in zs):
    raise ValueError(f"z must hold one exact latent per datapoint (leaves [B, ...] with B={b}), "
                     f"got {jax.tree.map(jnp.shape, z)}")
  want = jax.eval_shape(lambda p, xx, k: model.sample_q(p, xx, k), params, x, jax.random.key(0))
  if jax.tree.structure(want) != jax.tree.structure(z) or any(
      tuple(w.shape) != tuple(jnp.shape(a)) for w, a in zip(jax.tree.leaves(want), zs)):
    raise ValueError(f"z must have the structure and shapes of the model's latent "
                     f"{jax.tree.map(lambda a: tuple(a.shape), want)}, got "
                     f"{jax.tree.map(jnp.shape, z)}")
  k_fwd, k_rev = jax.random.split(key)
  forward = ais(model, params, x, k_fwd, **settings)
  dtype = jnp.result_type(*zs)
  betas = _betas(schedule, num_temps, dtype)[::-1]
  z0 = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a, dtype), (num_chains,) + a.shape), z)
  # The reverse chain meets the transitions in reverse order and uses, fixed, the step sizes the
  # forward chain used at each temperature: its kernels then do not depend on its own past, so
  # the upper bound carries no adaptation bias.
  step = forward.step_size[::-1]
  log_w, acc, eps, zf = _anneal(
      model, params, x, z0, k_rev, betas, init=init, num_leapfrog=num_leapfrog,
      step_size=step, target_accept=target_accept, adapt_step_size=False,
      adapt_rate=adapt_rate, step_size_range=step_size_range,
      step_size_sharing=step_size_sharing)
  reverse = _result(log_w, acc, eps, betas, zf, reverse=True)
  _raise_if_nonfinite(model, params, x, reverse.log_marginal, (z0, zf), init,
                      "bdmc's upper bound (reverse AIS)")
  return BDMCResult(lower=forward.log_marginal, upper=reverse.log_marginal, forward=forward,
                    reverse=reverse)
