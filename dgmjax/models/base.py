"""The model contract: a latent-variable model as a few pure functions of a params pytree.

Every bound, gradient estimator, training loss, evaluator and diagnostic of dgmjax is written once,
over this contract; a library model (Burda's VAE, PixelVAE, the categorical VAE, a prior VAE) and a
model built from a user's own networks or functions (:mod:`dgmjax.models.construct`:
:func:`~dgmjax.models.construct.from_networks`, :func:`~dgmjax.models.construct.from_functions`)
are the same kind of object.

The contract
------------
``x`` is a batch ``[B, ...]`` (any per-example shape); ``z`` is one latent draw per datapoint, an
array ``[B, ...]`` or a pytree of such arrays (several stochastic layers); ``params`` is any pytree,
handed whole to every function. Required:

=============================================  ==========================================  ======
function                                       meaning                                     returns
=============================================  ==========================================  ======
``sample_q(params, x, key) -> z``              one draw ``z ~ q(z|x)`` per datapoint,       ``z``
                                               reparametrized (differentiable in
                                               ``params``) where the latent is continuous
``log_q(params, x, z)``                        ``log q(z | x)``                             ``[B]``
``log_prior(params, z)``                       ``log p(z)``                                 ``[B]``
``log_likelihood(params, x, z)``               ``log p(x | z)``                             ``[B]``
=============================================  ==========================================  ======

Optional (used where present; the generic code says which it needs):

* ``sample_and_log_q(params, x, key) -> (z, [B])``: the two above in one pass (the default
  composes them; a model overrides it to share its encoder pass);
* ``posterior_mean(params, x, key) -> z``: ``E_q[z | x]`` (default: a Monte Carlo average);
* ``sample_prior(params, key, num) -> z`` (``[num, ...]``) and ``decode(params, z, key) -> x``
  (an image for each code: the mean of ``p(x|z)`` where it has one, else a draw): sampling and
  reconstructions;
* ``kl(params, x) -> [B, D]``: the analytic ``KL(q(z|x) || p(z))`` per latent dimension, for the
  KL-controlled losses (annealing, free bits);
* ``encode(params, x) -> (loc, log_scale)`` of a diagonal-Gaussian ``q`` (a VampPrior reads it)
  and ``features(params, x) -> [B, H]`` (the context of a conditional posterior flow);
* ``shard_keys(keys)`` and ``shard_log_weights(log_w)``: sharding constraints on the per-sample
  keys ``[K]`` and the log-weights ``[K, B]`` (:class:`dgmjax.parallel.SampleSharded`);
* the attribute ``data_support``: the support of ``p(x|z)``, one of :data:`DATA_SUPPORTS`
  (``"binary"`` for a Bernoulli likelihood, ``"unit_interval"`` for a discretized logistic over
  [0, 1], ``"real"``) or ``None`` (unknown: only finiteness is checked). Every entry point that
  receives data (:func:`check_data`: evaluation, ``training.fit``) checks it eagerly.
* the attributes ``latent`` (``'continuous'`` or ``'discrete'``; default: read from ``z``'s dtype,
  integer or boolean leaves being discrete, so a one-hot float draw must say ``'discrete'``) and
  ``reparametrized`` (``False`` for a continuous ``sample_q`` without a gradient path): the
  pathwise estimators (the reparametrized bounds, STL, DReG and their relatives) refuse a discrete
  or non-reparametrized latent with an error naming the score-function estimators that fit
  (:func:`dgmjax.estimators.latent_kind`, :meth:`dgmjax.estimators.Estimator.check_latent`).

Samplers draw one sample; ``K`` importance samples come from ``jax.vmap`` over ``split(key, K)``
with ``params`` and ``x`` unbatched, so everything a model computes from ``x`` alone (its encoder)
is traced once and runs once per image for all ``K`` samples. Log-weights live as ``[K, B]``
(samples on axis 0) and every generic function checks that shape.

Gradient views for the estimators are taken by **role**, never by parameter name: ``theta`` is
whatever ``log p`` reads, ``phi`` whatever ``q`` reads (see :func:`log_weight_terms`); a parameter
read by both (a VampPrior's encoder) gets both gradients.

References:
  Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dgmjax import _checks, estimators

Array = jax.Array
Params = Any

__all__ = [
    "DATA_SUPPORTS", "Draws", "LatentModel", "NonFiniteOutput", "batch_size_of", "check_contract",
    "check_data", "check_log_weights", "check_model", "check_num_samples", "check_output",
    "check_outputs", "draw_and_log_q", "draws", "find_nonfinite", "has", "require",
    "log_weight_terms", "log_weights", "log_weights_from_keys", "nonfinite_error",
    "posterior_log_prob_cross", "posterior_means", "q_function_name", "reconstruct", "sample_x",
]


class LatentModel(abc.ABC):
  """The model contract (see the module docstring for every function and its shapes).

  Subclass it and implement the four abstract methods (and any optional ones), or build one from
  functions (:func:`~dgmjax.models.construct.from_functions`) or from networks
  (:func:`~dgmjax.models.construct.from_networks`). Library models are
  frozen dataclasses, hashable, so a jitted evaluator is compiled once per model.
  """

  #: The support of ``p(x | z)`` (one of :data:`DATA_SUPPORTS`), checked by :func:`check_data`
  #: before any work; ``None``: unknown (only finiteness is checked). Override it in a subclass.
  data_support = None

  @abc.abstractmethod
  def sample_q(self, params: Params, x: Array, key: Array) -> Any:
    """One draw ``z ~ q(z | x)`` per datapoint: ``x`` ``[B, ...]`` -> ``z`` (``[B, ...]`` leaves)."""

  @abc.abstractmethod
  def log_q(self, params: Params, x: Array, z: Any) -> Array:
    """``log q(z | x)``: ``[B]``."""

  @abc.abstractmethod
  def log_prior(self, params: Params, z: Any) -> Array:
    """``log p(z)``: ``[B]``."""

  @abc.abstractmethod
  def log_likelihood(self, params: Params, x: Array, z: Any) -> Array:
    """``log p(x | z)``: ``[B]``."""

  def sample_and_log_q(self, params: Params, x: Array, key: Array) -> tuple[Any, Array]:
    """``(z, log q(z | x))`` for one draw per datapoint (override to share the encoder pass)."""
    z = self.sample_q(params, x, key)
    return z, self.log_q(params, x, z)


def has(model, name: str) -> bool:
  """Whether ``model`` provides the optional contract function ``name``."""
  return callable(getattr(model, name, None))


def require(model, name: str, purpose: str) -> None:
  """Raises ``TypeError`` unless ``model`` provides the optional contract function ``name``
  (``purpose`` names what needs it)."""
  if not has(model, name):
    raise TypeError(f"{purpose} needs the model to provide {name}(...); {type(model).__name__} "
                    f"does not (see dgmjax.models.base for the optional contract functions)")


def check_contract(model) -> None:
  """Raises ``TypeError`` naming the missing functions unless ``model`` provides the four
  required ones (``sample_q``, ``log_q``, ``log_prior``, ``log_likelihood``)."""
  missing = [n for n in ("sample_q", "log_q", "log_prior", "log_likelihood") if not has(model, n)]
  if missing:
    raise TypeError(f"model must follow the dgmjax model contract (sample_q, log_q, log_prior, "
                    f"log_likelihood); {type(model).__name__} lacks {missing}")


#: The values ``data_support`` may take, and what each admits.
DATA_SUPPORTS = {
    "binary": "binary values in {0, 1} (a Bernoulli likelihood; binarize grey levels first, "
              "e.g. with dgmjax.data.binarize)",
    "unit_interval": "values in [0, 1] (scale 8-bit images by 1/255)",
    "real": "finite real values",
}


def check_data(model, x, name: str = "images", *, support: str | None = None):
  """Checks data against ``model.data_support`` where it is concrete; returns ``x`` unchanged.

  Run before any work by the entry points that receive data (``evaluation.log_likelihood``,
  ``training.fit``, ...), so that 0..255 images or grey levels given to a Bernoulli model fail
  with a message instead of a plausible number. Values must be finite for every model; a model
  whose ``data_support`` is ``None`` gets only that check. Traced ``x`` (inside ``jit``) passes
  unchecked: the likelihood itself then returns NaN off its support.

  Args:
    model: a contract model (its ``data_support`` attribute, if any, is read).
    x: the data ``[N, ...]``.
    name: how ``x`` is named in the message.
    support: check this support instead of the model's (e.g. ``"unit_interval"`` for grey
      levels that are binarized later).

  Raises:
    ValueError: non-finite values, or values outside the model's support (the message says how
      many, the first and where, and how to fix a uint8 or grey-level array).
    ArgumentTypeError: a non-numeric dtype.
  """
  if not _checks.is_concrete(x):
    return x
  if support is None:
    support = getattr(model, "data_support", None)
  if support is not None and support not in DATA_SUPPORTS:
    raise ValueError(f"{type(model).__name__}.data_support must be one of "
                     f"{sorted(DATA_SUPPORTS)} or None, got {support!r}")
  dtype = np.asarray(x).dtype if not hasattr(x, "dtype") else np.dtype(x.dtype)
  if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
    raise _checks.ArgumentTypeError(f"{name} must be a numeric array, got dtype {dtype}")
  _checks.check_finite(name, x)
  if support is None or support == "real":
    return x
  hint = ""
  if dtype == np.uint8:
    hint = " (a uint8 array of 0..255 grey levels: scale it by 1/255"
    hint += " and binarize it)" if support == "binary" else ")"
  whose = f" for {type(model).__name__}" if model is not None else ""
  what = f"{DATA_SUPPORTS[support]}{whose}{hint}"
  if support == "binary":
    _checks.check_values(name, x, lambda a: (a == 0) | (a == 1), what)
  else:
    _checks.check_values(name, x, lambda a: (a >= 0) & (a <= 1), what)
  return x


def q_function_name(model) -> str:
  """The contract function that gives ``log q`` of a draw: ``"sample_and_log_q"`` where the model
  overrides it, else ``"log_q"`` (named in error messages)."""
  own = getattr(type(model), "sample_and_log_q", None)
  if not has(model, "sample_and_log_q") or own is LatentModel.sample_and_log_q:
    return "log_q"
  return "sample_and_log_q"


def draw_and_log_q(model, params, x, key):
  """One draw ``z ~ q(z|x)`` and ``log q(z|x)`` ``[B]``: the model's ``sample_and_log_q`` where it
  has one (one pass), else ``sample_q`` then ``log_q``."""
  if has(model, "sample_and_log_q"):
    return model.sample_and_log_q(params, x, key)
  z = model.sample_q(params, x, key)
  return z, model.log_q(params, x, z)


# ----------------------------------------------------------------------------- checks


def check_num_samples(num_samples, name: str = "num_samples") -> int:
  """``num_samples`` as an int >= 1 (numpy integers accepted, bools and floats refused)."""
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) \
      or num_samples < 1:
    raise ValueError(f"{name} must be an int >= 1, got {num_samples!r}")
  return int(num_samples)


def batch_size_of(x) -> int:
  """``B``, the leading axis of ``x`` (an array or a pytree of arrays); ``ValueError`` if none."""
  leaves = jax.tree.leaves(x)
  if not leaves or jnp.ndim(leaves[0]) < 1:
    raise ValueError(f"x must be a batch [B, ...] with the batch on axis 0, got "
                     f"{jax.tree.map(jnp.shape, x)}")
  return int(jnp.shape(leaves[0])[0])


def check_log_weights(log_w: Array, num_samples: int, batch_size: int | None = None, *,
                      name: str = "log-weights") -> Array:
  """Checks that ``log_w`` is ``[K, B]`` for the ``K`` (and ``B``) asked for; returns it.

  Shapes are static, so this check runs at trace time, inside ``jit`` too.

  Raises:
    ValueError: naming ``name``, the shape expected and the shape given (and saying so when the
      axes look transposed, ``[B, K]``).
  """
  shape = tuple(jnp.shape(log_w))
  want = (num_samples, batch_size if batch_size is not None else "B")
  ok = len(shape) == 2 and shape[0] == num_samples and (batch_size is None
                                                        or shape[1] == batch_size)
  if not ok:
    hint = ""
    if len(shape) == 2 and batch_size is not None and shape == (batch_size, num_samples):
      hint = " (it looks transposed: importance samples must be on axis 0)"
    raise ValueError(f"{name} must have shape [K, B] = {want}, got {shape}{hint}")
  return log_w


def check_output(model, name: str, value, batch_size: int | None = None):
  """Checks what the contract function ``name`` of ``model`` returned; returns ``value``.

  A log-density must be a floating array (an integer one is truncated, a complex one would lose
  its imaginary part, a bool is no log-density) with one value per datapoint, ``[B]``. Dtypes and
  shapes are static, so this runs at trace time, inside ``jit`` too, at no cost; it also accepts
  the ``jax.ShapeDtypeStruct`` of :func:`jax.eval_shape`.

  Args:
    model: the model (named in the message).
    name: the contract function, e.g. ``"log_likelihood"``.
    value: what it returned.
    batch_size: ``B`` (``None``: the shape is not checked).

  Raises:
    TypeError: a non-floating dtype (an :class:`~dgmjax._checks.ArgumentTypeError`, also a
      ``ValueError``).
    ValueError: a shape other than ``[B]``.
  """
  dtype = getattr(value, "dtype", None)
  dtype = np.asarray(value).dtype if dtype is None else dtype
  if not jnp.issubdtype(dtype, jnp.floating):
    why = ("an integer log-density is truncated" if jnp.issubdtype(dtype, jnp.integer)
           else "a complex one would lose its imaginary part"
           if jnp.issubdtype(dtype, jnp.complexfloating) else "it is no log-density")
    raise _checks.ArgumentTypeError(
        f"{type(model).__name__}.{name} must return a floating array (e.g. float32) of "
        f"log-densities, got dtype {dtype} ({why}): compute it in floating point and return it "
        f"without a cast")
  shape = tuple(jnp.shape(value))
  if batch_size is not None and shape != (batch_size,):
    raise ValueError(f"{type(model).__name__}.{name} must return one value per datapoint, shape "
                     f"[B] = ({batch_size},) for a batch of {batch_size}; got {shape}")
  return value


def _check_per_datapoint(name: str, model, value: Array, num_samples: int, batch_size: int):
  check_output(model, name, value)
  shape = tuple(jnp.shape(value))
  if shape != (num_samples, batch_size):
    raise ValueError(f"{type(model).__name__}.{name} must return one value per datapoint, shape "
                     f"[B] = ({batch_size},) for a batch of {batch_size}; got "
                     f"{shape[1:] if shape[:1] == (num_samples,) else shape}")


def _check_keys(keys: Array) -> Array:
  if not (jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) and keys.ndim == 1) \
      or keys.shape[0] < 1:
    raise ValueError(f"keys must be a 1-D array of K >= 1 typed PRNG keys (jax.random.split of a "
                     f"jax.random.key), got dtype {keys.dtype} and shape {keys.shape}")
  return keys


# ----------------------------------------------------------------------------- log-weights


class Draws(NamedTuple):
  """``K`` draws ``z_k ~ q(z | x)`` and the pieces of their log-weights, each ``[K, B]``.

  Attributes:
    z: the samples, leaves ``[K, B, ...]``.
    log_likelihood: ``log p(x | z_k)``.
    log_prior: ``log p(z_k)``.
    log_q: ``log q(z_k | x)``.
  """
  z: Any
  log_likelihood: Array
  log_prior: Array
  log_q: Array

  @property
  def log_weights(self) -> Array:
    """``log p(x | z_k) + log p(z_k) - log q(z_k | x)``, ``[K, B]``."""
    return self.log_likelihood + self.log_prior - self.log_q


def draws(model, params: Params, x: Array, keys: Array) -> Draws:
  """One importance sample per key and its log-weight pieces (:class:`Draws`, ``[K, B]`` each).

  Sample ``k`` depends on ``keys[k]`` only, so evaluating the keys in chunks gives exactly the
  log-weights of evaluating them at once (the chunked ``K = 5000`` estimator relies on this).

  Args:
    model: a contract model.
    params: its parameters.
    x: ``[B, ...]``.
    keys: ``[K]`` typed PRNG keys.
  """
  check_contract(model)
  keys = _check_keys(keys)
  if has(model, "shard_keys"):
    keys = model.shard_keys(keys)
  num, b = keys.shape[0], batch_size_of(x)
  z, lq = jax.vmap(lambda k: draw_and_log_q(model, params, x, k))(keys)
  ll = jax.vmap(lambda zk: model.log_likelihood(params, x, zk))(z)
  lp = jax.vmap(lambda zk: model.log_prior(params, zk))(z)
  for name, value in (("log_likelihood", ll), ("log_prior", lp), (q_function_name(model), lq)):
    _check_per_datapoint(name, model, value, num, b)
  return Draws(z, ll, lp, lq)


def log_weights_from_keys(model, params: Params, x: Array, keys: Array) -> Array:
  """``log w_k = log p(x, z_k) - log q(z_k | x)`` for one sample per key: ``[K, B]``.

  .. math:: \\log w_k = \\log p(x | z_k) + \\log p(z_k) - \\log q(z_k | x), \\quad z_k \\sim q(z|x)
  """
  lw = draws(model, params, x, keys).log_weights
  if has(model, "shard_log_weights"):
    lw = model.shard_log_weights(lw)
  return check_log_weights(lw, keys.shape[0], batch_size_of(x))


def log_weights(model, params: Params, x: Array, key: Array, num_samples: int) -> Array:
  """:func:`log_weights_from_keys` with ``jax.random.split(key, num_samples)``: ``[K, B]``.

  The input of every bound in :mod:`dgmjax.objectives` (``elbo``, ``iwae_bound``, ...).

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, eq. (8).
  """
  num_samples = check_num_samples(num_samples)
  return log_weights_from_keys(model, params, x, jax.random.split(key, num_samples))


def _sg(tree):
  return jax.tree.map(lax.stop_gradient, tree)


def log_weight_terms(model, params: Params, x: Array, key: Array, num_samples: int, *,
                     analytic_kl: bool = False) -> estimators.LogWeightTerms:
  """The log-weights ``[K, B]`` under the gradient views the estimators need, by role.

  With ``z_k = z(eps_k; params)`` drawn by ``sample_q`` and ``sg`` the stop-gradient:

  * ``log_w``: every path live (the reparametrization estimator);
  * ``log_w_theta = log p(x, sg z; params) - sg log q``: only what ``log p`` reads directly;
  * ``log_w_path = log p(x, z; sg params) - log q(z | x; sg params)``: only the path through the
    sample (zero for a discrete latent);
  * ``log_q_score = log q(sg z | x; params)``: the score function (value ``log q``).

  Inside ``jit`` the views a surrogate does not use are dead code; the forward passes of the
  others are shared (the stop-gradients change no value).

  .. math:: \\log w_k = \\log p_\\theta(x, z_k) - \\log q_\\phi(z_k | x)

  Args:
    model: a contract model.
    params: its parameters.
    x: ``[B, ...]``.
    key: PRNG key, split into ``num_samples`` sample keys.
    num_samples: ``K``.
    analytic_kl: the views of ``log p(x | z_k)`` alone instead of ``log w_k`` (for an ELBO whose
      KL is analytic and differentiated apart; ``log_q_score`` is unchanged).

  Returns:
    :class:`dgmjax.estimators.LogWeightTerms`, each field ``[K, B]`` (checked).
  """
  check_contract(model)
  num_samples = check_num_samples(num_samples)
  keys = jax.random.split(key, num_samples)
  if has(model, "shard_keys"):
    keys = model.shard_keys(keys)
  b = batch_size_of(x)
  if analytic_kl:
    z, lq = jax.vmap(lambda k: model.sample_q(params, x, k))(keys), None
  else:
    z, lq = jax.vmap(lambda k: draw_and_log_q(model, params, x, k))(keys)
    _check_per_datapoint(q_function_name(model), model, lq, num_samples, b)

  def ll(prm, zk):
    return check_output(model, "log_likelihood", model.log_likelihood(prm, x, zk), b)

  def log_p(prm, zz):
    if analytic_kl:
      return jax.vmap(lambda zk: ll(prm, zk))(zz)
    return jax.vmap(lambda zk: check_output(model, "log_prior", model.log_prior(prm, zk), b)
                    + ll(prm, zk))(zz)

  def log_qf(prm, zz):
    return jax.vmap(lambda zk: check_output(model, "log_q", model.log_q(prm, x, zk), b))(zz)

  z_sg, p_sg = _sg(z), _sg(params)
  if analytic_kl:
    terms = estimators.LogWeightTerms(
        log_w=log_p(params, z), log_w_theta=log_p(params, z_sg), log_w_path=log_p(p_sg, z),
        log_q_score=log_qf(params, z_sg))
  else:
    terms = estimators.LogWeightTerms(
        log_w=log_p(params, z) - lq,
        log_w_theta=log_p(params, z_sg) - lax.stop_gradient(lq),
        log_w_path=log_p(p_sg, z) - log_qf(p_sg, z),
        log_q_score=log_qf(params, z_sg))
  if has(model, "shard_log_weights"):
    terms = estimators.LogWeightTerms(*(model.shard_log_weights(t) for t in terms))
  for name, t in zip(terms._fields, terms):
    check_log_weights(t, num_samples, b, name=name)
  return terms


# ----------------------------------------------------------------------------- non-finite outputs


class NonFiniteOutput(NamedTuple):
  """Where a contract function returned a non-finite value (see :func:`find_nonfinite`).

  Attributes:
    function: the contract function (``"sample_q"`` for a non-finite draw, ``"log_q"`` or
      ``"sample_and_log_q"``, ``"log_prior"``, ``"log_likelihood"``).
    image: the row of ``x``.
    sample: the importance sample (or chain) at which it first happened.
    value: the value returned there (for ``sample_q``, the first non-finite entry of ``z``).
  """
  function: str
  image: int
  sample: int
  value: float


def _bad_rows(value, num: int, b: int) -> np.ndarray:
  """``[S, B]``: where a leaf ``[S, B, ...]`` holds a non-finite entry (integers never do)."""
  a = np.asarray(value)
  if not np.issubdtype(a.dtype, np.inexact):
    return np.zeros((num, b), bool)
  return ~np.isfinite(a.reshape(num, b, -1)).all(-1)


def _first_nonfinite(value, sample: int, image: int) -> float:
  a = np.asarray(value)[sample, image].ravel()
  return float(a[~np.isfinite(a)][0]) if a.size > 1 else float(a[0])


def _pieces_at(model, params, x, *, keys=None, z=None, functions=None):
  """The latents and the contract functions' outputs ``{name: [S, B]}`` at the draws of ``keys``
  or at the given latents ``z`` (leaves ``[S, B, ...]``), evaluated under ``jit``: invalid values
  propagate as NaN there, where an eager sampler would refuse its first NaN argument before the
  function that produced it is known."""
  if keys is not None:
    d = jax.jit(lambda p, xx, ks: draws(model, p, xx, ks))(params, x, keys)
    return d.z, {q_function_name(model): d.log_q, "log_prior": d.log_prior,
                 "log_likelihood": d.log_likelihood}
  functions = ("log_q", "log_prior", "log_likelihood") if functions is None else functions
  fns = {"log_q": lambda zk: model.log_q(params, x, zk),
         "log_prior": lambda zk: model.log_prior(params, zk),
         "log_likelihood": lambda zk: model.log_likelihood(params, x, zk)}
  return z, jax.jit(lambda zz: {name: jax.vmap(fns[name])(zz) for name in functions})(z)


def find_nonfinite(model, params: Params, x, image: int | None = None, *, keys: Array | None = None,
                   z: Any = None, functions: tuple[str, ...] | None = None,
                   chunk: int = 64) -> NonFiniteOutput | None:
  """The first non-finite output of the contract functions, re-evaluated.

  Run by the entry points whose concrete result is not finite (evaluation, AIS/BDMC, the gradient
  diagnostics, the first step of ``training.fit``) to say which function produced it. The
  functions are evaluated on the whole batch ``x`` either at the draws of ``keys`` (sample ``k``
  depends on ``keys[k]`` only, as in :func:`draws`, so these are the samples an evaluation
  drew), in chunks of ``chunk`` samples, or at given latents ``z``. The first sample at which one
  is non-finite for the image asked is reported, and there the first function in the order
  ``sample_q`` (a non-finite draw), ``log_q``, ``log_prior``, ``log_likelihood``.

  Args:
    model: a contract model.
    params: its parameters.
    x: the batch ``[B, ...]``.
    image: the row of ``x`` to look at (``None``: every row).
    keys: ``[K]`` PRNG keys of the draws, or
    z: latents, leaves ``[S, B, ...]`` (e.g. the states of AIS chains).
    functions: with ``z``, the functions to evaluate (default ``log_q``, ``log_prior``,
      ``log_likelihood``).
    chunk: samples evaluated at once.

  Returns:
    :class:`NonFiniteOutput`, or ``None`` when every output is finite.
  """
  if (keys is None) == (z is None):
    raise ValueError("find_nonfinite needs keys or z (one of them)")
  b = batch_size_of(x)
  num = keys.shape[0] if keys is not None else jax.tree.leaves(z)[0].shape[0]
  cols = np.arange(b) if image is None else np.asarray([image])
  for start in range(0, num, chunk):
    if keys is not None:
      zc, pieces = _pieces_at(model, params, x, keys=keys[start:start + chunk])
    else:
      zc, pieces = _pieces_at(model, params, x, functions=functions,
                              z=jax.tree.map(lambda a, s=start: a[s:s + chunk], z))
    c = jax.tree.leaves(zc)[0].shape[0]
    bad_z = np.zeros((c, b), bool)
    for leaf in jax.tree.leaves(zc):
      bad_z |= _bad_rows(leaf, c, b)
    masks = {"sample_q": (bad_z, None)}
    masks.update({n: (_bad_rows(v, c, b), v) for n, v in pieces.items()})
    any_bad = np.zeros((c, b), bool)
    for mask, _ in masks.values():
      any_bad |= mask
    hits = np.argwhere(any_bad[:, cols])
    if not hits.size:
      continue
    k, i = int(hits[0][0]), int(cols[hits[0][1]])
    for name, (mask, value) in masks.items():
      if mask[k, i]:
        if value is None:
          leaf = next(a for a in jax.tree.leaves(zc) if _bad_rows(a, c, b)[k, i])
          return NonFiniteOutput(name, i, start + k, _first_nonfinite(leaf, k, i))
        return NonFiniteOutput(name, i, start + k, _first_nonfinite(value, k, i))
  return None


def nonfinite_error(model, params: Params, where: str, bad: Sequence[int], total: int,
                    found: NonFiniteOutput | None, first: int, *,
                    images: str = "images") -> ValueError:
  """The error of an entry point whose concrete result is not finite for some images.

  Args:
    model: the model.
    params: its parameters (a non-finite leaf is named as the likely cause).
    where: what is not finite, e.g. ``"evaluation.log_likelihood's estimate"``.
    bad: the indices of the images whose result is not finite (as the user numbers them).
    total: the number of images.
    found: what :func:`find_nonfinite` found at the first of them (or ``None``).
    first: the index (as the user numbers them) of the image :func:`find_nonfinite` looked at.
    images: how the images are named.

  Returns:
    The ``ValueError`` to raise: it names the images, the contract function and the value it
    returned, and what to do.
  """
  bad = [int(i) for i in bad]
  shown = ", ".join(map(str, bad[:8])) + (", ..." if len(bad) > 8 else "")
  msg = f"{where} is not finite for {len(bad)} of {total} image(s) ({images} [{shown}]). "
  bad_params = [jax.tree_util.keystr(path) for path, leaf in
                jax.tree_util.tree_flatten_with_path(params)[0]
                if np.issubdtype(np.asarray(leaf).dtype, np.inexact)
                and not np.all(np.isfinite(np.asarray(leaf)))]
  if bad_params:
    msg += (f"The parameters hold non-finite values ({len(bad_params)} leaves, the first "
            f"{bad_params[0]!r}): restore finite ones (an earlier checkpoint). ")
  name = type(model).__name__
  if found is None:
    msg += (f"Re-evaluated eagerly, every contract function of {name} is finite at {images}"
            f"[{first}]'s samples: the non-finite value comes from combining them (e.g. "
            f"log p(x, z) - log q(z | x) = inf - inf) or from a draw that differs when re-run; "
            f"check the scale of the log-densities.")
  else:
    what = "a non-finite z" if found.function == "sample_q" else str(found.value)
    msg += (f"Re-evaluated eagerly, {name}.{found.function} returns {what} for {images}"
            f"[{first}] (sample {found.sample}): fix that function at this input (a log of 0, "
            f"0 / 0, an overflow, a NaN parameter); dgmjax.models.check_model(model, params, "
            f"{images}[{first}:{first + 1}]) runs every contract function on it.")
  return ValueError(msg)


def check_outputs(model, params: Params, x, key: Array, *, num_samples: int = 2,
                  where: str = "the model", index: Sequence[int] | None = None,
                  images: str = "images") -> None:
  """Checks what the contract functions return on the batch ``x``, eagerly, before any work.

  ``num_samples`` draws: the dtypes and shapes of every output (:func:`check_output`) and their
  finiteness for every image. Cheap: run once, on one batch (the first step of
  ``training.fit``).

  Args:
    model: a contract model.
    params: its parameters.
    x: ``[B, ...]``.
    key: PRNG key of the draws.
    num_samples: draws per image.
    where: the entry point, named in the message.
    index: the index of each row of ``x`` as the user numbers the images (default ``0 .. B-1``).
    images: how the images are named.

  Raises:
    TypeError: a non-floating output, naming the function.
    ValueError: a wrong shape, or a non-finite output, naming the function and the images.
  """
  keys = jax.random.split(key, check_num_samples(num_samples))
  again = jax.random.clone(keys)  # the same draws, re-evaluated only if one is not finite
  d = jax.jit(lambda p, xx, ks: draws(model, p, xx, ks))(params, x, keys)  # NaN propagates
  b = batch_size_of(x)
  index = np.arange(b) if index is None else np.asarray(index)
  bad = np.zeros((b,), bool)
  for leaf in (*jax.tree.leaves(d.z), d.log_q, d.log_prior, d.log_likelihood):
    bad |= _bad_rows(leaf, keys.shape[0], b).any(0)
  if bad.any():
    rows = np.flatnonzero(bad)
    found = find_nonfinite(model, params, x, int(rows[0]), keys=again)
    raise nonfinite_error(model, params, f"what {type(model).__name__} returns in {where}",
                          index[rows], b, found, int(index[rows[0]]), images=images)


# ----------------------------------------------------------------------------- posterior tools


def posterior_means(model, params: Params, x: Array, key: Array, num_samples: int = 100) -> list:
  """``E_q[z | x]`` per latent leaf (stochastic layer), each ``[B, ...]``.

  The model's ``posterior_mean(params, x, key)`` where it has one, else the average of
  ``num_samples`` draws of ``sample_q``.
  """
  if has(model, "posterior_mean"):
    means = model.posterior_mean(params, x, key)
  else:
    num_samples = check_num_samples(num_samples)
    zs = jax.vmap(lambda k: model.sample_q(params, x, k))(jax.random.split(key, num_samples))
    means = jax.tree.map(lambda a: jnp.mean(a.astype(jnp.result_type(a, jnp.float32)), 0), zs)
  return jax.tree.leaves(means)


def posterior_log_prob_cross(model, params: Params, z: Array, x: Array) -> Array:
  """``log q(z_s | x_n)`` for every pair: ``z`` ``[S, ...]``, ``x`` ``[N, ...]`` -> ``[S, N]``.

  ``vmap`` over the samples with ``x`` unbatched, so the encoder runs once for the ``N`` images.
  """
  n = batch_size_of(x)

  def one(zs):
    zz = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), zs)
    lq = model.log_q(params, x, zz)
    # A pair far outside q(.|x_n)'s support can overflow an inverted flow to +-inf: its density is
    # zero. A NaN stays NaN (a broken log_q, never a plausible "density 0").
    return jnp.where(jnp.isinf(lq), -jnp.inf, lq)

  return jax.vmap(one)(z)


def sample_x(model, params: Params, key: Array, num: int) -> Array:
  """``num`` samples of ``p(x)``: ``z ~ p(z)`` then the model's ``decode`` (``[num, ...]``)."""
  require(model, "sample_prior", "sampling x")
  require(model, "decode", "sampling x")
  num = _checks.check_int("num", num, minimum=1)
  k_z, k_x = jax.random.split(_checks.check_key("key", key))
  return model.decode(params, model.sample_prior(params, k_z, num), k_x)


def reconstruct(model, params: Params, x: Array, key: Array | None = None) -> Array:
  """``decode`` at the posterior mean (``key=None``) or at a draw of ``q(z|x)``."""
  require(model, "decode", "reconstruction")
  at_mean = key is None
  k_z, k_x = jax.random.split(jax.random.key(0) if at_mean else key)
  if at_mean and has(model, "posterior_mean"):
    z = model.posterior_mean(params, x, k_z)
  else:
    z = model.sample_q(params, x, k_z)
  return model.decode(params, z, k_x)


# ----------------------------------------------------------------------------- check_model


def _is_discrete(z) -> bool:
  """Whether a concrete draw looks discrete: integer or bool leaves, or floats all in {0, 1}
  (one-hot codes)."""
  for leaf in jax.tree.leaves(z):
    a = np.asarray(leaf)
    if np.issubdtype(a.dtype, np.floating) and not np.all((a == 0) | (a == 1)):
      return False
  return True


def _rows_differ(z1, z2, b: int) -> np.ndarray:
  """``[B]``: the rows where two draws differ."""
  out = np.zeros((b,), bool)
  for a1, a2 in zip(jax.tree.leaves(z1), jax.tree.leaves(z2)):
    out |= np.any(np.asarray(a1).reshape(b, -1) != np.asarray(a2).reshape(b, -1), axis=-1)
  return out


def _check_finite_rows(model, name: str, value, b: int, what: str = "") -> None:
  bad = _bad_rows(np.asarray(value)[None], 1, b)[0]
  if bad.any():
    rows = np.flatnonzero(bad)
    first = np.asarray(value)[rows[0]]
    first = first if np.ndim(first) == 0 else first.ravel()[~np.isfinite(first.ravel())][0]
    raise ValueError(
        f"{type(model).__name__}.{name} returns a non-finite value ({float(first)}) for "
        f"{len(rows)} of {b} image(s) (rows {rows[:8].tolist()}{' ...' if len(rows) > 8 else ''}"
        f" of x){what}: fix it at those inputs (a log of 0, 0 / 0, an overflow, a NaN "
        f"parameter); every bound and gradient of the model would be NaN there")


def check_model(model, params: Params, x, key: Array | None = None) -> dict:
  """Runs each contract function on ``x`` and checks what it returns; returns the shapes.

  Call it once on a new model, before training: every later error would surface inside a jitted
  step, or as a plausible wrong number. Checked, each error naming the function:

  * shapes: ``z`` with the batch first; ``log_q``, ``log_prior``, ``log_likelihood`` (and
    ``sample_and_log_q``) one value per datapoint, ``[B]``;
  * dtypes: floating log-densities (an integer one is truncated, a complex one loses its
    imaginary part);
  * values: finite draws and log-densities for every image (naming the rows of ``x``);
  * randomness: two keys give two different draws (a ``sample_q`` that ignores its key makes
    all ``K`` importance samples identical); for a discrete latent, where equal draws can happen
    by chance, up to eight keys, and an error only when the draws' ``log q`` makes equal draws
    that unlikely (below one in a million);
  * dependence on ``z``: at two different draws, ``log_q`` must differ for a continuous latent
    (an error: a ``log_q`` that evaluates a draw of its own biases every bound); ``log_prior``
    and ``log_likelihood`` (and ``log_q`` of a discrete latent) that ignore ``z`` get a
    ``RuntimeWarning`` naming them, since that is legitimate at some params (a uniform prior, a
    zero-initialised decoder layer) and a bug otherwise.

  Args:
    model: the model.
    params: its parameters (where the functions read ``z``: a zero-initialised output layer
      ignores it; check at the params you train from or at a random initialisation).
    x: a small batch ``[B, ...]`` (``B >= 2`` makes a transposed output detectable).
    key: PRNG key (default ``jax.random.key(0)``).

  Returns:
    ``{"z": shapes of one draw, "batch": B}``.

  Raises:
    TypeError: the model lacks a required function, or a function returns a non-floating dtype.
    ValueError: a function returns the wrong shape or a non-finite value, ``sample_q`` ignores
      its key, or a continuous ``log_q`` ignores ``z``; the message names the function (and the
      rows of ``x``) and what to do.

  Warns:
    RuntimeWarning: ``log_prior`` or ``log_likelihood`` (or a discrete ``log_q``) ignores ``z``.
  """
  check_contract(model)
  key = jax.random.key(0) if key is None else _checks.check_key("key", key)
  x = jax.tree.map(jnp.asarray, x)
  b = batch_size_of(x)
  name = type(model).__name__
  k_shape, k_z, k_joint, k_lw = jax.random.split(key, 4)
  z = jax.eval_shape(lambda p, xx, k: model.sample_q(p, xx, k), params, x, k_shape)
  for path, leaf in jax.tree_util.tree_flatten_with_path(z)[0]:
    if len(leaf.shape) < 1 or leaf.shape[0] != b:
      raise ValueError(f"{name}.sample_q must return z with the batch first "
                       f"([B, ...] with B={b}) for every leaf; leaf {jax.tree_util.keystr(path)!r}"
                       f" has shape {leaf.shape}")
  z_keys = jax.random.split(k_z, 8)
  z = model.sample_q(params, x, z_keys[0])
  checks = {"log_q": lambda zz: model.log_q(params, x, zz),
            "log_prior": lambda zz: model.log_prior(params, zz),
            "log_likelihood": lambda zz: model.log_likelihood(params, x, zz)}
  for fname, fn in checks.items():  # shapes and dtypes first: free, before any value is computed
    check_output(model, fname, jax.eval_shape(fn, z), b)
  check_output(model, "sample_and_log_q",
               jax.eval_shape(lambda: draw_and_log_q(model, params, x, k_joint)[1]), b)
  for path, leaf in jax.tree_util.tree_flatten_with_path(z)[0]:
    _check_finite_rows(model, "sample_q", leaf, b, f" in z leaf {jax.tree_util.keystr(path)!r}")
  values = {fname: fn(z) for fname, fn in checks.items()}
  for fname, v in values.items():
    _check_finite_rows(model, fname, v, b)
  _check_finite_rows(model, q_function_name(model), draw_and_log_q(model, params, x, k_joint)[1],
                     b)
  # a second draw: a sampler that ignores its key, functions that ignore z
  discrete = _is_discrete(z)
  lq = np.asarray(values["log_q"], np.float64)
  for tries, k in enumerate(z_keys[1:] if discrete else z_keys[1:2], start=1):
    z2 = model.sample_q(params, x, k)
    differ = _rows_differ(z, z2, b)
    if differ.any():
      break
  if not differ.any():
    # an honest sampler draws the same z again `tries` times with probability prod_i q(z_i)^tries
    if not discrete or tries * float(np.sum(lq)) < math.log(1e-6):
      raise ValueError(
          f"{name}.sample_q returns the same z for {tries + 1} different keys: it ignores its "
          f"key, so all K importance samples would be identical (a biased bound and a gradient "
          f"without noise). Draw from the key it is given (e.g. jax.random.normal(key, ...)); "
          f"never from a fixed or closed-over key")
  else:
    values2 = {fname: fn(z2) for fname, fn in checks.items()}
    for fname in ("log_q", "log_prior", "log_likelihood"):
      v1 = np.asarray(values[fname])[differ]
      v2 = np.asarray(values2[fname])[differ]
      if not np.array_equal(v1, v2):
        continue
      msg = (f"{name}.{fname} returns the same values at two different draws of z (rows "
             f"{np.flatnonzero(differ)[:8].tolist()} of x): it ignores z")
      if fname == "log_q" and not discrete:
        # a continuous q(z|x) whose density is constant in z is a bug (it evaluates a draw of
        # its own, or the entropy): every log-weight and bound built on it is wrong
        raise ValueError(f"{msg}, so every log-weight and bound built on it is wrong. It must "
                         f"evaluate the density of q at the z it is given, not at a draw of its "
                         f"own")
      # legitimate at some params: a uniform prior or q over a discrete latent, a flat prior,
      # a zero-initialised decoder layer; a bug otherwise
      warnings.warn(f"{msg}. Unless that is intended at these params (a uniform "
                    f"{'q' if fname == 'log_q' else 'prior' if fname == 'log_prior' else 'p(x|z)'}"
                    f", a zero-initialised output layer), it must evaluate its density at the z "
                    f"it is given: a function that ignores z gives wrong log-weights and bounds",
                    RuntimeWarning, stacklevel=2)
  lw = log_weights(model, params, x, k_lw, 3)
  check_log_weights(lw, 3, b)
  return {"z": jax.tree.map(lambda a: tuple(a.shape), z), "batch": b}
