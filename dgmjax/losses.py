"""Training losses over the model contract: a bound and the estimator of its gradient.

:func:`make_loss` builds ``loss(params, x, key, step) -> (loss, metrics)`` for any contract model
from an estimator (an object of :mod:`dgmjax.estimators`, or its name). Every loss has this one
signature: ``step`` is the integer training step (traced inside the train step), read by the
losses with a schedule and ignored by the others. The loss's value is the negative bound, its
gradient the estimator's (the surrogates of :mod:`dgmjax.estimators`).

Two estimators build their whole loss over the model (:class:`ModelLoss`): :class:`KLControlled`,
the ELBO / IWAE loss with a KL weight schedule (annealing) and free bits, registered as
``'kl_controlled'``, and :class:`Relaxed`, the Gumbel-softmax relaxation of a model with
categorical latents at a temperature schedule ``tau(step)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import _checks, estimators, objectives

Array = jax.Array
LossFn = Callable[..., tuple[Array, dict]]


#: The estimators of :func:`make_loss` that differentiate their bound as it is (the
#: reparametrization estimator of the ELBO, IWAE, MIWAE, CIWAE, Renyi bounds), read off the
#: registry when this module is imported.
BOUND_ESTIMATORS = tuple(n for n, c in estimators.ESTIMATORS.items() if c.views == ("log_w",))
#: The estimators whose surrogate reads the gradient views of :func:`dgmjax.models.log_weight_terms`
#: (routing by role: what ``q`` reads vs what ``p`` reads): the rest of the registry's surrogates.
SURROGATE_ESTIMATORS = tuple(n for n, c in estimators.ESTIMATORS.items()
                             if c.views and n not in BOUND_ESTIMATORS)
#: Baselines of ``'reinforce'`` by name (a function ``(params, x) -> [B]`` is NVIL's).
BASELINES = estimators.BASELINES


def _for_model(loss: Callable, model) -> Callable:
  """Tags a loss with its model, so that :func:`fit` checks the training data against the
  model's likelihood support (:func:`dgmjax.models.check_data`) before it starts."""
  loss.model = model
  return loss


def make_loss(model, estimator: str | estimators.Estimator, num_samples: int,
              **settings) -> LossFn:
  """The training loss of any contract model: the negative bound, with ``estimator``'s gradient.

  The bound estimators (:data:`BOUND_ESTIMATORS`) differentiate the bound itself
  (reparametrization, one pass of the log-weights). The others evaluate the gradient views of
  :func:`dgmjax.models.log_weight_terms` and the estimator's surrogate: the loss has the value of
  the negative bound and ``jax.grad`` of it is the estimator. Gradients are routed by role (what
  ``q`` reads vs what ``p`` reads), never by parameter names, so a model with its encoder under
  any name gets the estimator it asked for.

  Args:
    model: a model of the contract (:mod:`dgmjax.models.base`).
    estimator: an estimator object (``estimators.DReG(num_groups=2)``, ...), which carries its
      settings, or a name of :data:`dgmjax.estimators.ESTIMATORS` with its settings as keywords
      (:func:`dgmjax.estimators.from_name`):
      ``'elbo'`` (the ``K``-sample ELBO average; ``kl``), ``'iwae'``, ``'miwae'``
      (``num_groups``), ``'ciwae'`` (``beta``); ``'dreg'`` (DReG for ``q``, IWAE for ``p``; with
      ``num_groups`` DReG of MIWAE), ``'piwae'`` / ``'piwae_dreg'`` (``num_groups``: IWAE(M K) for
      ``p``, MIWAE(M, K) for ``q``), ``'stl'`` (``bound``), ``'rws'``, ``'rws_dreg'``,
      ``'reinforce'`` (``bound``, ``baseline``, ``kl``), ``'vimco'`` (``K >= 2``); ``'renyi'``
      (the variational Rényi bound of order ``alpha``, reparametrized) and ``'renyi_dreg'`` (its
      doubly reparametrized estimator, finite ``alpha``); ``'kl_controlled'``
      (:class:`KLControlled`: ``bound``, ``kl_weight``, ``free_bits``, ``free_bits_groups``). An estimator object that is
      not registered works as well, e.g. :class:`Relaxed` (a Gumbel-softmax temperature schedule).
    num_samples: ``K`` (``M * K`` for MIWAE and PIWAE).
    **settings: with a name, the settings of its estimator class (``None`` is no setting). Those
      of the library's estimators: ``num_groups`` (``M``); ``beta`` (the ELBO weight of CIWAE, in
      [0, 1]); ``bound`` (``'iwae'``, the default, or ``'elbo'``: the target of ``'stl'`` and
      ``'reinforce'``); ``baseline`` (of ``'reinforce'``: ``None``, ``'batch_mean'``, the
      leave-one-out minibatch mean, or a function ``(params, x) -> [B]`` reading its own entries
      of ``params``, an input-dependent baseline as NVIL's: it is regressed onto the learning
      signal by :func:`dgmjax.estimators.baseline_loss`, added to the loss, its gradient reaching
      only the baseline's parameters); ``kl`` (``None`` or ``'analytic'``: the ELBO as
      ``E_q[log p(x|z)] - KL`` with the model's analytic ``kl(params, x)``, for ``'elbo'`` and
      ``'reinforce'`` with ``bound='elbo'``; Jang et al.'s Gumbel-softmax objective); ``alpha``
      (the order of ``'renyi'`` / ``'renyi_dreg'``; 0: IWAE, 1: ELBO, ``-inf``: VR-max).

  Returns:
    ``loss(params, x, key, step) -> (loss, metrics)`` (``step``, the training step, is read by
    the estimators with a schedule only); ``metrics['bound']`` is the bound whose negative the
    loss equals (IWAE(M K) for PIWAE, MIWAE(M, K) for DReG with groups), ``metrics['elbo']`` the
    ELBO of the same samples.

  Raises:
    ValueError: an unknown estimator or setting, naming it and the valid ones; a setting passed
      with an estimator object (the object carries its own).
  """
  from dgmjax.models import base  # pylint: disable=import-outside-toplevel

  if isinstance(estimator, estimators.Estimator):
    given = [s for s, v in settings.items() if v is not None]
    if given:
      raise ValueError(f"{type(estimator).__name__} carries its own settings: make_loss takes "
                       f"{', '.join(given)} with an estimator name only")
    est = estimator
  else:
    est = estimators.from_name(estimator, **settings)
  base.check_contract(model)
  num_samples = base.check_num_samples(num_samples)
  est.check_num_samples(num_samples)
  if isinstance(est, ModelLoss):  # a loss of its own over the model (KL control, a schedule)
    return _for_model(est.loss(model, num_samples), model)
  analytic = est.kl == "analytic"
  if analytic:
    base.require(model, "kl", "kl='analytic'")

  def analytic_kl(params, x):
    kls = model.kl(params, x)
    return jnp.sum(kls.reshape(kls.shape[0], -1), axis=-1)

  if est.views == ("log_w",) and analytic:
    def loss(params, x, key, step):
      del step  # no schedule
      est.check_latent(jax.eval_shape(model.sample_q, params, x, key), model)
      keys = jax.random.split(key, num_samples)
      z = jax.vmap(lambda k: model.sample_q(params, x, k))(keys)
      ll = jax.vmap(lambda zk: model.log_likelihood(params, x, zk))(z)
      base.check_log_weights(ll, num_samples, base.batch_size_of(x),
                             name="log_likelihood")
      kl_b = analytic_kl(params, x)
      value = jnp.mean(est.surrogate(_log_w_only(ll)) - kl_b)
      return -value, {"bound": value, "elbo": value, "kl": jnp.mean(kl_b),
                      "recon": jnp.mean(ll)}

    return _for_model(loss, model)

  if est.views == ("log_w",):
    def loss(params, x, key, step):
      del step  # no schedule
      est.check_latent(jax.eval_shape(model.sample_q, params, x, key), model)
      lw = base.log_weights(model, params, x, key, num_samples)
      value = jnp.mean(est.surrogate(_log_w_only(lw)))
      return -value, {"bound": value, "elbo": jnp.mean(objectives.elbo(lw))}

    return _for_model(loss, model)

  def loss(params, x, key, step):
    del step  # no schedule
    est.check_latent(jax.eval_shape(model.sample_q, params, x, key), model)
    terms = base.log_weight_terms(model, params, x, key, num_samples, analytic_kl=analytic)
    metrics = {}
    batch_est = est
    if callable(getattr(est, "baseline", None)):  # an input-dependent baseline, trained here
      signal = estimators.learning_signal(terms.log_w_theta, bound=est.bound)
      b = est.baseline(params, x)
      base.check_log_weights(jnp.asarray(b)[None], 1, base.batch_size_of(x),
                             name="baseline(params, x)")
      metrics["baseline_loss"] = jnp.mean(estimators.baseline_loss(signal, b))
      batch_est = dataclasses.replace(est, baseline=b)
    value = jnp.mean(batch_est.surrogate(terms))
    lw = jax.lax.stop_gradient(terms.log_w)
    if analytic:
      kl_b = analytic_kl(params, x)
      value = value - jnp.mean(kl_b)
      metrics.update(elbo=jax.lax.stop_gradient(value), kl=jax.lax.stop_gradient(jnp.mean(kl_b)))
    else:
      metrics["elbo"] = jnp.mean(objectives.elbo(lw))
    total = -value + metrics.get("baseline_loss", 0.0)
    return total, dict(metrics, bound=value)

  return _for_model(loss, model)


def _log_w_only(log_w: Array) -> estimators.LogWeightTerms:
  """The views of an estimator that reads ``log_w`` alone (the others are not evaluated)."""
  return estimators.LogWeightTerms(log_w, None, None, None)


# ----------------------------------------------------------------------------- KL control

KL_SCHEDULES = ("constant", "linear", "cyclical")


def kl_weight_schedule(kind: str = "constant", *, warmup_steps: int = 0, cycle_steps: int = 0,
                       ramp_fraction: float = 0.5) -> Callable[[Array], Array]:
  """The KL weight ``beta(step)`` of KL annealing: constant 1, a linear warm-up, or cyclical.

  ``'linear'`` rises from 0 to 1 over ``warmup_steps`` and stays at 1 (Bowman et al. 2016);
  ``'cyclical'`` repeats cycles of ``cycle_steps``, each rising linearly from 0 to 1 over the first
  ``ramp_fraction`` of the cycle and then held at 1 (Fu et al. 2019). Built on
  ``optax.linear_schedule``; jittable in ``step``.

  .. math:: \\beta_{\\text{cyc}}(t) = \\min\\big(1, \\tfrac{t \\bmod T}{R\\,T}\\big)

  Args:
    kind: ``'constant'``, ``'linear'`` or ``'cyclical'``.
    warmup_steps: length of the linear warm-up (``'linear'``), ``>= 1``.
    cycle_steps: ``T`` (``'cyclical'``), ``>= 1``.
    ramp_fraction: ``R`` in (0, 1] (``'cyclical'``).

  Returns:
    ``step -> beta`` (float32 scalar).

  References:
    Bowman et al., Generating Sentences from a Continuous Space, CoNLL 2016;
    Fu et al., Cyclical Annealing Schedule: A Simple Approach to Mitigating KL Vanishing, NAACL 2019.
  """
  if kind not in KL_SCHEDULES:
    raise ValueError(f"kind must be one of {KL_SCHEDULES}, got {kind!r}")
  if kind == "constant":
    return lambda step: jnp.ones([], jnp.float32)
  if kind == "linear":
    if not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 1:
      raise ValueError(f"warmup_steps must be an int >= 1 for a linear schedule, got "
                       f"{warmup_steps!r}")
    ramp = optax.linear_schedule(0.0, 1.0, int(warmup_steps))
    return lambda step: jnp.asarray(ramp(step), jnp.float32)
  if not isinstance(cycle_steps, (int, np.integer)) or cycle_steps < 1:
    raise ValueError(f"cycle_steps must be an int >= 1 for a cyclical schedule, got "
                     f"{cycle_steps!r}")
  if not 0.0 < ramp_fraction <= 1.0:
    raise ValueError(f"ramp_fraction must be in (0, 1], got {ramp_fraction!r}")
  ramp = optax.linear_schedule(0.0, 1.0, max(1, int(round(ramp_fraction * cycle_steps))))
  return lambda step: jnp.asarray(ramp(jnp.mod(step, int(cycle_steps))), jnp.float32)


# ----------------------------------------------------------------------------- losses of their own


class ModelLoss(estimators.Estimator):
  """An estimator that builds its whole loss over the model, not a surrogate of the log-weights.

  Its loss reads more than the gradient views of :class:`~dgmjax.estimators.LogWeightTerms`
  (the model's analytic KL per dimension, a relaxation of the model, the training step), so it
  has no views; :func:`make_loss` checks the model and ``num_samples`` as for every estimator and
  returns :meth:`loss`. A subclass is a frozen dataclass that checks its settings in
  ``__post_init__``, as every estimator.
  """
  views: tuple[str, ...] = ()

  def loss(self, model, num_samples: int) -> LossFn:
    """``loss(params, x, key, step) -> (loss, metrics)`` of ``model`` with ``num_samples``
    samples per datapoint (both checked by :func:`make_loss`; the model's own needs here)."""
    raise NotImplementedError

  def surrogate(self, terms, axis=0):
    raise TypeError(f"{type(self).__name__} has no surrogate of the log-weights: its loss reads "
                    f"the model (make_loss(model, {type(self).__name__}(...), K))")


def _schedule_arg(name: str, value, *, positive: bool) -> None:
  """A schedule setting: a function of the step, or a finite number (``> 0`` if ``positive``,
  else ``>= 0``; checked when concrete, a traced one may be swept)."""
  if callable(value) or (value is not None and not _checks.is_concrete(value)):
    return
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.number, np.ndarray, jax.Array)) or np.ndim(value) != 0 \
      or not np.isfinite(float(value)) or (float(value) <= 0 if positive else float(value) < 0):
    raise ValueError(f"{name} must be a function step -> {name} or a finite number "
                     f"{'> 0' if positive else '>= 0'}, got {value!r}")


#: The bounds of :class:`KLControlled`.
KL_BOUNDS = ("elbo", "iwae")


@estimators.register
@dataclasses.dataclass(frozen=True)
class KLControlled(ModelLoss):
  """The ELBO or IWAE loss with a KL weight schedule (annealing) and / or free bits.

  For any contract model with an analytic ``kl(params, x) -> [B, D]`` (the KL of each latent
  dimension, e.g. a diagonal-Gaussian ``q`` and a standard Normal prior:
  :class:`~dgmjax.models.vae.VAE` with one stochastic layer,
  :class:`~dgmjax.models.pixel_vae.PixelVAE`, a model of :func:`~dgmjax.models.from_networks`).
  ``beta = kl_weight(step)`` is read at the traced training step, so a schedule does not retrace.

  - ``'elbo'``: ``E_q[log p(x|z)] - beta * R`` with ``R`` the analytic KL summed over dimensions,
    or, with free bits, ``objectives.free_bits(KL_dims, lambda)`` (each dimension, or group,
    pays at least ``lambda`` nats averaged over the minibatch: below it, no KL gradient).
  - ``'iwae'``: the IWAE bound of the tempered weights ``log p(x|z) + beta (log p(z) - log q(z|x))``
    (IWAE at ``beta = 1``), minus ``beta`` times the free-bits shortfall
    ``sum_j max(lambda - KL_j, 0)``. For ``K = 1`` this has the expected gradient of the free-bits
    ELBO; for ``K > 1`` the shortfall term pushes collapsed dimensions back up to ``lambda``.

  .. math:: \\mathcal{L}_{FB} = \\mathbb{E}_q[\\log p(x|z)] - \\beta \\sum_j \\max\\big(\\lambda, \\mathbb{E}_{batch} KL(q(z_j|x) \\| p(z_j))\\big)

  ``make_loss(model, KLControlled('iwae', free_bits=0.1), K)`` is
  ``make_loss(model, 'kl_controlled', K, bound='iwae', free_bits=0.1)``. The loss's ``metrics``
  have ``bound`` (the unmodified ELBO or IWAE bound being approached), ``elbo`` (analytic KL),
  ``kl`` (batch mean of the total KL), ``beta``, ``kl_below_free_bits`` (dimensions or groups
  under ``lambda``) and ``au_batch`` (units whose encoder mean varies by more than 0.01 over the
  minibatch, Burda et al.'s test).

  Attributes:
    bound: ``'elbo'`` or ``'iwae'``.
    kl_weight: ``step -> beta`` (e.g. :func:`kl_weight_schedule`); ``None``: 1.
    free_bits: ``lambda`` in nats per dimension (or per group), a finite number ``>= 0``, or None.
    free_bits_groups: split the latent dimensions into this many groups for free bits (a
      positive int dividing the latent dimensions; needs ``free_bits``).

  References:
    Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS 2016
    (free bits); Bowman et al., CoNLL 2016 (annealing); Burda et al., ICLR 2016 (active units).
  """
  name: ClassVar[str] = "kl_controlled"
  pathwise: ClassVar[bool] = True  # reparametrized draws, the analytic KL
  bound: str
  kl_weight: Optional[Callable[[Array], Array]] = None
  free_bits: Optional[float] = None
  free_bits_groups: Optional[int] = None

  def __post_init__(self):
    if self.bound not in KL_BOUNDS:
      raise ValueError(f"bound must be one of {KL_BOUNDS}, got {self.bound!r}")
    if self.kl_weight is not None and not callable(self.kl_weight):
      raise ValueError(f"kl_weight must be None or a function step -> beta (e.g. "
                       f"kl_weight_schedule('linear', warmup_steps=...)), got {self.kl_weight!r}")
    fb = self.free_bits
    if fb is not None and (isinstance(fb, (bool, np.bool_)) or not isinstance(
        fb, (int, float, np.number)) or not np.isfinite(fb) or fb < 0):
      raise ValueError(f"free_bits must be None or a finite lambda >= 0 (nats), got {fb!r}")
    groups = self.free_bits_groups
    if groups is not None and fb is None:
      raise ValueError("free_bits_groups needs free_bits (lambda)")
    if groups is not None and (isinstance(groups, bool) or not isinstance(
        groups, (int, np.integer)) or groups < 1):
      raise ValueError(f"free_bits_groups must be a positive int dividing the latent "
                       f"dimensions, got {groups!r}")

  def loss(self, model, num_samples):
    from dgmjax.models import base  # pylint: disable=import-outside-toplevel

    base.require(model, "kl", "a KL-controlled loss")
    groups, free_bits, bound = self.free_bits_groups, self.free_bits, self.bound
    d = getattr(model, "latent_dim", None)
    if groups is not None and d and d % groups:
      raise ValueError(f"free_bits_groups must be a positive int dividing the {d} latent "
                       f"dimensions, got {groups!r}")
    kl_weight = self.kl_weight or kl_weight_schedule("constant")

    def loss(params, x, key, step):
      self.check_latent(jax.eval_shape(model.sample_q, params, x, key), model)
      beta = kl_weight(step)
      kl_dims = model.kl(params, x)
      kl_dims = kl_dims.reshape(kl_dims.shape[0], -1)                             # [B, D]
      if groups is not None and kl_dims.shape[-1] % groups:
        raise ValueError(f"free_bits_groups={groups} must divide the "
                         f"{kl_dims.shape[-1]} latent dimensions")
      kl_total = jnp.mean(jnp.sum(kl_dims, axis=-1))
      if free_bits is None:
        penalty, below = kl_total, jnp.zeros([], jnp.int32)
      else:
        penalty = objectives.free_bits(kl_dims, free_bits, axis=0, num_groups=groups)
        per = jnp.mean(kl_dims, axis=0)
        if groups is not None:
          per = jnp.sum(per.reshape(groups, -1), axis=-1)
        below = jnp.sum(per < free_bits)
      dr = base.draws(model, params, x, jax.random.split(key, num_samples))
      ll = jnp.mean(dr.log_likelihood)
      elbo = ll - kl_total
      if bound == "elbo":
        value = ll - beta * penalty
        bound_value = elbo
      else:
        tempered = dr.log_likelihood + beta * (dr.log_prior - dr.log_q)
        value = jnp.mean(objectives.iwae_bound(tempered)) - beta * (penalty - kl_total)
        bound_value = jnp.mean(objectives.iwae_bound(jax.lax.stop_gradient(dr.log_weights)))
      mean = jax.lax.stop_gradient(
          base.posterior_means(model, params, x, jax.random.fold_in(key, 1))[0])
      au = jnp.sum(jnp.var(mean.reshape(mean.shape[0], -1), axis=0) > 1e-2)
      return -value, {"bound": jax.lax.stop_gradient(bound_value),
                      "elbo": jax.lax.stop_gradient(elbo),
                      "kl": jax.lax.stop_gradient(kl_total), "beta": beta,
                      "kl_below_free_bits": below, "au_batch": au}

    return loss


@dataclasses.dataclass(frozen=True)
class Relaxed(ModelLoss):
  """The Gumbel-softmax (Concrete) relaxation of a discrete model at a temperature ``tau(step)``.

  For a model with ``relaxed(tau, *, hard) -> contract model`` (the categorical VAE,
  :meth:`~dgmjax.models.categorical_vae.CategoricalVAE.relaxed`): the loss at step ``t`` is
  ``make_loss(model.relaxed(tau(t), hard=hard), ELBO(kl=kl), K)``, with ``metrics['temperature']
  = tau(t)``. ``kl='analytic'`` is Jang et al.'s objective, the relaxed reconstruction with the
  exact categorical KL; ``kl=None`` the relaxed ELBO with the Concrete densities of ``q`` and of
  the prior (Maddison et al.; not with ``hard``, whose one-hot samples have no density). The
  temperature is read at the traced training step, so a schedule does not retrace.

  Not in the registry (its models are those with a relaxation, not every contract model): pass
  the object, ``make_loss(model, Relaxed(schedule, hard=True), 1)``.

  Attributes:
    temperature: ``tau > 0``, a number or a function ``step -> tau`` (e.g.
      :func:`~dgmjax.models.categorical_vae.jang_temperature` with its settings bound).
    hard: straight-through (the one-hot ``argmax`` forward, the relaxed gradient backward).
    kl: ``'analytic'`` (default) or ``None``.

  References:
    Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017;
    Maddison, Mnih & Teh, The Concrete Distribution, ICLR 2017.
  """
  pathwise: ClassVar[bool] = True  # through the relaxed sample
  temperature: Any
  hard: bool = False
  kl: Optional[str] = "analytic"

  def __post_init__(self):
    _schedule_arg("temperature", self.temperature, positive=True)
    if not isinstance(self.hard, (bool, np.bool_)):
      raise ValueError(f"hard must be a bool, got {self.hard!r}")
    if self.kl not in (None, "analytic"):
      raise ValueError(f"kl must be None or 'analytic', got {self.kl!r}")
    if self.hard and self.kl is None:
      raise ValueError("hard=True (straight-through) needs kl='analytic': its one-hot samples "
                       "have no Concrete density")

  def loss(self, model, num_samples):
    from dgmjax.models import base  # pylint: disable=import-outside-toplevel

    base.require(model, "relaxed", "a Gumbel-softmax relaxation (Relaxed)")
    temperature, hard = self.temperature, bool(self.hard)
    inner = estimators.ELBO(kl=self.kl)
    schedule = temperature if callable(temperature) else lambda step: temperature

    def loss(params, x, key, step):
      tau = schedule(step)
      relaxed = make_loss(model.relaxed(tau, hard=hard), inner, num_samples)
      value, metrics = relaxed(params, x, key, step)
      return value, dict(metrics, temperature=tau)

    return loss


#: The public API of this module.
__all__ = [
    "LossFn", "BOUND_ESTIMATORS", "SURROGATE_ESTIMATORS", "BASELINES", "make_loss", "ModelLoss",
    "KL_SCHEDULES", "kl_weight_schedule", "KL_BOUNDS", "KLControlled", "Relaxed",
]
