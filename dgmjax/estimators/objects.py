"""Estimators as objects: the :class:`Estimator` base, one frozen class per estimator, the registry.

Each class carries and checks its settings when it is built and gives its surrogate (a function of
:mod:`dgmjax.estimators.surrogates`) over the gradient views in one method,
``estimator.surrogate(terms, axis) -> [B]``. :data:`ESTIMATORS` is the one registry, name -> class,
that :func:`dgmjax.losses.make_loss` looks names up in (:func:`from_name`); :func:`register` adds a
class to it. :mod:`dgmjax.estimators` re-exports every public name of this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Real

from dgmjax import _checks, objectives
from dgmjax.estimators.surrogates import (
    LogWeightTerms, _bound_arg, _to_front, ciwae_surrogate, dreg_surrogate, elbo_surrogate,
    iwae_surrogate, learning_signal, miwae_surrogate, piwae_surrogate, reinforce_surrogate,
    renyi_dreg_surrogate, rws_dreg_surrogate, rws_surrogate, stl_surrogate, vimco_surrogate)

__all__ = [
    "BASELINES", "CIWAE", "DReG", "ELBO", "ESTIMATORS", "Estimator", "IWAE", "MIWAE", "PIWAE",
    "LATENTS", "PIWAEDReG", "RWS", "RWSDReG", "Reinforce", "Renyi", "RenyiDReG", "STL", "VIMCO",
    "from_name", "latent_kind", "register",
]

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


#: The kinds of latent a model may declare (its optional attribute ``latent``; see
#: :func:`latent_kind`).
LATENTS = ("continuous", "discrete")


def latent_kind(z: Any, model: Any = None) -> str:
  """What a gradient estimator may do with a latent: ``'reparametrized'``, ``'discrete'`` or
  ``'not reparametrized'``.

  Discrete when ``model.latent == 'discrete'`` (a one-hot float draw, as the categorical VAE's,
  cannot be told from its dtype) or when a leaf of ``z`` has an integer or boolean dtype (whatever
  the model declares: no gradient flows through such an array); else not reparametrized when
  ``model.reparametrized is False`` (a continuous draw without a path to ``q``'s parameters);
  else reparametrized. A model that declares nothing is read from ``z``'s dtype.

  Args:
    z: one draw of ``sample_q``, array or ``jax.ShapeDtypeStruct`` leaves (a pytree).
    model: the model that drew it, or ``None``; its optional attributes ``latent`` (``None``,
      ``'continuous'`` or ``'discrete'``) and ``reparametrized`` (``None``, ``True`` or
      ``False``) are read.

  Raises:
    ValueError: an attribute with another value, naming it.
  """
  latent = getattr(model, "latent", None)
  reparametrized = getattr(model, "reparametrized", None)
  if latent is not None and latent not in LATENTS:
    raise ValueError(f"{type(model).__name__}.latent must be None, 'continuous' or 'discrete', got "
                     f"{latent!r}")
  if reparametrized is not None and not isinstance(reparametrized, (bool, np.bool_)):
    raise ValueError(f"{type(model).__name__}.reparametrized must be None, True or False, got "
                     f"{reparametrized!r}")
  integral = any(jnp.issubdtype(leaf.dtype, jnp.integer) or jnp.issubdtype(leaf.dtype, jnp.bool_)
                 for leaf in jax.tree.leaves(z))
  if latent == "discrete" or integral:
    return "discrete"
  return "not reparametrized" if reparametrized is False else "reparametrized"


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
    pathwise: whether the gradient runs through the sample ``z = z(eps; phi)`` (class level):
      such an estimator needs a continuous, reparametrized latent (:meth:`check_latent`). Read off
      :attr:`views` (``log_w`` or ``log_w_path`` among them) unless a class sets it; the
      score-function estimators (``'reinforce'``, ``'vimco'``, ``'rws'``) are not pathwise.
  """
  name: str = ""
  views: tuple[str, ...] = ("log_w",)
  kl: Optional[str] = None
  pathwise: bool = True

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if "pathwise" not in cls.__dict__:
      cls.pathwise = bool({"log_w", "log_w_path"} & set(cls.views))

  def check_latent(self, z: Any, model: Any = None) -> None:
    """Raises ValueError if this estimator cannot take its gradient through the latent ``z``.

    A pathwise estimator differentiates ``log w`` through the sample: on a discrete latent that
    path does not exist (the gradient silently misses the score term of ``q``), and on a sampler
    without a path it is not the estimator it claims to be. Score-function estimators accept every
    latent. ``z``'s dtype is static, so under ``jit`` the check runs at trace time.

    Args:
      z: one draw of ``sample_q`` (array leaves, or ``jax.ShapeDtypeStruct`` leaves from
        ``jax.eval_shape``).
      model: the model that drew it; its optional attributes ``latent`` and ``reparametrized`` are
        read (:func:`latent_kind`).

    Raises:
      ValueError: naming the estimator, the latent's kind and dtype, and the estimators that fit.
    """
    kind = latent_kind(z, model)
    if not self.pathwise or kind == "reparametrized":
      return
    dtypes = sorted({str(leaf.dtype) for leaf in jax.tree.leaves(z)})
    declared = [f"{a}={getattr(model, a)!r}" for a in ("latent", "reparametrized")
                if getattr(model, a, None) is not None]
    whose = f"{type(model).__name__}'s" if model is not None else "the"
    fit = _quoted([n for n, c in ESTIMATORS.items() if not c.pathwise])
    raise ValueError(
        f"estimator {self.name or type(self).__name__!r} takes its gradient through the sample z "
        f"and needs a continuous, reparametrized latent; {whose} latent is {kind} (z of dtype "
        f"{', '.join(dtypes)}{'; ' + ', '.join(declared) if declared else ''}). Estimators that "
        f"fit: the score-function ones, {fit} ('reinforce' with a baseline function is NVIL), or "
        f"a pathwise one on a continuous relaxation of the latent (e.g. "
        f"CategoricalVAE.relaxed(tau))")

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
