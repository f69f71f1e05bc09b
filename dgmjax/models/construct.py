"""Contract models from your own pieces: plain functions (:func:`from_functions`) or networks
(:func:`from_networks`: a Flax Linen or NNX module, or a function of ``(params, *inputs)``).

Both return a :class:`~dgmjax.models.base.LatentModel`, so every bound, estimator, evaluator and
diagnostic of dgmjax takes them as it takes a library model. Nothing here imports Flax: a network
is recognised as a Linen or NNX module only when Flax is already loaded (a Flax module cannot
exist otherwise).

References:
  Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import distributions
from dgmjax.models.base import DATA_SUPPORTS, LatentModel
from dgmjax.models.prior_vae import PriorVAE

Array = jax.Array

__all__ = [
    "FunctionModel", "FusedFunctionModel", "LIKELIHOODS", "Network", "NetworkModel", "as_network",
    "from_functions", "from_networks",
]


# ----------------------------------------------------------------------------- from functions


@dataclasses.dataclass(frozen=True)
class FunctionModel(LatentModel):
  """A contract model from plain functions (see :func:`from_functions`)."""
  sample_q_fn: Callable
  log_q_fn: Callable
  log_prior_fn: Callable
  log_likelihood_fn: Callable
  extras: tuple = ()
  data_support: str | None = None
  latent: str | None = None
  reparametrized: bool | None = None

  def sample_q(self, params, x, key):
    return self.sample_q_fn(params, x, key)

  def log_q(self, params, x, z):
    return self.log_q_fn(params, x, z)

  def log_prior(self, params, z):
    return self.log_prior_fn(params, z)

  def log_likelihood(self, params, x, z):
    return self.log_likelihood_fn(params, x, z)

  def __getattr__(self, name):
    for k, fn in object.__getattribute__(self, "extras"):
      if k == name:
        return fn
    raise AttributeError(name)


@dataclasses.dataclass(frozen=True)
class FusedFunctionModel(FunctionModel):
  """A :class:`FunctionModel` with the user's fused ``sample_and_log_q`` (which overrides the
  contract's default, ``sample_q`` then ``log_q``)."""

  def sample_and_log_q(self, params, x, key):
    return dict(self.extras)["sample_and_log_q"](params, x, key)


_OPTIONAL = ("sample_and_log_q", "posterior_mean", "sample_prior", "decode", "kl", "encode",
             "features")


def from_functions(*, sample_q: Callable, log_q: Callable, log_prior: Callable,
                   log_likelihood: Callable, data_support: str | None = None,
                   latent: str | None = None, reparametrized: bool | None = None,
                   **optional: Callable) -> FunctionModel:
  """A contract model from four pure functions (and any optional ones, by name).

  Any framework's networks fit: write the functions over its params pytree (an equinox model
  split with ``eqx.partition``, a Haiku ``transform``, hand-written ``jnp``).

  Args:
    sample_q: ``(params, x, key) -> z``.
    log_q: ``(params, x, z) -> [B]``.
    log_prior: ``(params, z) -> [B]``.
    log_likelihood: ``(params, x, z) -> [B]``.
    data_support: the support of ``p(x|z)`` (a key of
      :data:`~dgmjax.models.base.DATA_SUPPORTS`, e.g. ``"binary"``), checked eagerly by the entry
      points that receive data; ``None``: only finiteness.
    latent: ``'continuous'`` or ``'discrete'`` (``None``: read from the dtype of ``z``; a discrete
      latent drawn as float one-hot vectors must say so), for the estimators' check of the latent
      (:meth:`dgmjax.estimators.Estimator.check_latent`).
    reparametrized: ``False`` for a continuous ``sample_q`` without a gradient path.
    **optional: any of ``sample_and_log_q``, ``posterior_mean``, ``sample_prior``, ``decode``,
      ``kl``, ``encode``, ``features``.
  """
  unknown = sorted(set(optional) - set(_OPTIONAL))
  if unknown:
    raise TypeError(f"unknown optional contract functions {unknown}; expected among {_OPTIONAL}")
  for name, fn in dict(sample_q=sample_q, log_q=log_q, log_prior=log_prior,
                       log_likelihood=log_likelihood, **optional).items():
    if not callable(fn):
      raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
  if data_support is not None and data_support not in DATA_SUPPORTS:
    raise ValueError(f"data_support must be one of {sorted(DATA_SUPPORTS)} or None, "
                     f"got {data_support!r}")
  if latent is not None and latent not in ("continuous", "discrete"):
    raise ValueError(f"latent must be None, 'continuous' or 'discrete', got {latent!r}")
  if reparametrized is not None and not isinstance(reparametrized, (bool, np.bool_)):
    raise ValueError(f"reparametrized must be None or a bool, got {reparametrized!r}")
  cls = FusedFunctionModel if "sample_and_log_q" in optional else FunctionModel
  return cls(sample_q, log_q, log_prior, log_likelihood,
                       tuple(sorted(optional.items())), data_support, latent, reparametrized)


# ----------------------------------------------------------------------------- from networks


@dataclasses.dataclass(frozen=True)
class Network:
  """A network as ``apply(params, *inputs)`` and, where it can make them, ``init(key, *inputs)``."""
  apply: Callable
  init: Callable | None = None
  kind: str = "function"


def as_network(net, name: str = "network") -> Network:
  """Adapts a Flax Linen module, a Flax NNX module or a function ``(params, *inputs)``.

  * Linen: ``apply = module.apply``, ``init = module.init``.
  * NNX: the module is split once (``nnx.split``); its params are the state as a pure dict
    (``state.to_pure_dict()``, what ``init`` returns) and ``apply`` merges them back.
  * A function of ``(params, *inputs)``: used as is; its params come from the user.
  """
  # A Flax module exists only once its Flax package is loaded: look it up, never import it.
  linen, nnx = sys.modules.get("flax.linen"), sys.modules.get("flax.nnx")
  if isinstance(net, Network):
    return net
  if linen is not None and isinstance(net, linen.Module):
    return Network(net.apply, net.init, "linen")
  if nnx is not None and isinstance(net, nnx.Module):
    graphdef, state = nnx.split(net)
    pure = state.to_pure_dict()

    def apply(params, *inputs):
      st = jax.tree.map(lambda a: a, state)
      nnx.replace_by_pure_dict(st, params)
      return nnx.merge(graphdef, st)(*inputs)

    return Network(apply, lambda key, *inputs: pure, "nnx")
  if callable(net):
    return Network(net, None, "function")
  raise TypeError(f"{name} must be a Flax Linen module, a Flax NNX module or a function "
                  f"(params, *inputs); got {type(net).__name__}")


def _check_decoder_output(x, out, what: str, *, exact: bool = True) -> None:
  """A decoder output must have the shape of the data batch ``x`` (``exact``), or broadcast to it
  without changing it (a shared ``log_scale``): never broadcast the data. Shapes are static, so
  this raises under ``jit`` too."""
  xs, os = tuple(jnp.shape(x)), tuple(jnp.shape(out))
  try:
    ok = os == xs if exact else jnp.broadcast_shapes(xs, os) == xs
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
        f"the decoder's {what} must have the shape of the data x, {xs}"
        f"{'' if exact else ' (or broadcast to it)'}; got {os}. A decoder must map z [B, ...] to "
        "one output per data point and pixel: check that it keeps the batch axis and reshapes "
        "to the image shape")


def _bernoulli(x, logits):
  _check_decoder_output(x, logits, "logits")
  return distributions.bernoulli_log_prob(x, logits, event_ndims=jnp.ndim(x) - 1)


def _gaussian(x, out):
  loc, log_scale = out
  _check_decoder_output(x, loc, "loc")
  _check_decoder_output(x, log_scale, "log_scale", exact=False)
  return distributions.normal_log_prob(x, loc, log_scale, event_ndims=jnp.ndim(x) - 1)


def _discretized_logistic(x, out):
  loc, log_scale = out
  _check_decoder_output(x, loc, "loc")
  _check_decoder_output(x, log_scale, "log_scale", exact=False)
  return distributions.discretized_logistic_log_prob(x, loc, log_scale,
                                                     event_ndims=jnp.ndim(x) - 1)


#: Likelihoods of :func:`from_networks`: ``(log_prob(x, decoder_output) -> [B], mean(output))``.
#: Bernoulli reads logits; Gaussian and discretized logistic read ``(loc, log_scale)``.
LIKELIHOODS = {
    "bernoulli": (_bernoulli, jax.nn.sigmoid),
    "gaussian": (_gaussian, lambda out: out[0]),
    "discretized_logistic": (_discretized_logistic, lambda out: jnp.clip(out[0], 0.0, 1.0)),
}
_LIKELIHOOD_SUPPORT = {"bernoulli": "binary", "gaussian": "real",
                       "discretized_logistic": "unit_interval"}


@dataclasses.dataclass(frozen=True)
class NetworkModel(LatentModel):
  """A VAE from a user's encoder and decoder networks, standard Normal prior (see
  :func:`from_networks`). Params: ``{"encoder": ..., "decoder": ...}``."""
  encoder: Network
  decoder: Network
  likelihood: str | Callable = "bernoulli"

  @property
  def data_support(self):
    """From the named likelihood (``None`` for a likelihood given as a function)."""
    return _LIKELIHOOD_SUPPORT.get(self.likelihood) if isinstance(self.likelihood, str) else None

  def _encode(self, params, x):
    out = self.encoder.apply(params["encoder"], x)
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
      raise ValueError(f"encoder must return (loc, log_scale) or (loc, log_scale, features) of a "
                       f"diagonal Gaussian q(z|x); got {type(out).__name__}")
    return out

  def encode(self, params, x):
    """``(loc, log_scale)`` of ``q(z|x)``, ``[B, ...]`` each."""
    loc, log_scale = self._encode(params, x)[:2]
    return loc, log_scale

  def features(self, params, x):
    """The encoder's third output ``[B, H]`` (the context of a conditional posterior flow)."""
    out = self._encode(params, x)
    if len(out) != 3:
      raise ValueError("a conditional posterior_flow needs the encoder to return "
                       "(loc, log_scale, features)")
    return out[2]

  def sample_and_log_q(self, params, x, key):
    loc, log_scale = self.encode(params, x)
    z = distributions.sample_normal(key, loc, log_scale)
    return z, distributions.normal_log_prob(z, loc, log_scale, event_ndims=z.ndim - 1)

  def sample_q(self, params, x, key):
    loc, log_scale = self.encode(params, x)
    return distributions.sample_normal(key, loc, log_scale)

  def log_q(self, params, x, z):
    loc, log_scale = self.encode(params, x)
    return distributions.normal_log_prob(z, loc, log_scale, event_ndims=z.ndim - 1)

  def log_prior(self, params, z):
    del params
    return distributions.standard_normal_log_prob(z, event_ndims=z.ndim - 1)

  def _log_prob(self):
    return LIKELIHOODS[self.likelihood][0] if isinstance(self.likelihood, str) \
        else self.likelihood

  def log_likelihood(self, params, x, z):
    return self._log_prob()(x, self.decoder.apply(params["decoder"], z))

  def posterior_mean(self, params, x, key):
    del key
    return self.encode(params, x)[0]

  def decode(self, params, z, key=None):
    del key
    if not isinstance(self.likelihood, str):
      raise ValueError("decode needs a named likelihood (its mean); got a function")
    return LIKELIHOODS[self.likelihood][1](self.decoder.apply(params["decoder"], z))

  def kl(self, params, x):
    """Analytic ``KL(q(z|x) || N(0, I))`` per latent dimension, ``[B, ...]``."""
    loc, log_scale = self.encode(params, x)
    return distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0)

  def init(self, key: Array, x: Array, *, encoder_params=None, decoder_params=None) -> dict:
    """Parameters of both networks, from their own ``init`` (Linen, NNX) or as given.

    Args:
      key: PRNG key.
      x: an example batch ``[B, ...]`` (its shape only).
      encoder_params, decoder_params: the params of networks given as plain functions.
    """
    k_enc, k_dec = jax.random.split(key)
    x = jnp.asarray(x)

    def make(net, k, given, inp, name):
      if given is not None:
        return given
      if net.init is None:
        raise ValueError(f"the {name} is a plain function: pass {name}_params to init")
      return net.init(k, inp)

    enc = make(self.encoder, k_enc, encoder_params, x, "encoder")
    loc = self.encoder.apply(enc, x)[0]
    return {"encoder": enc, "decoder": make(self.decoder, k_dec, decoder_params, loc, "decoder")}


def from_networks(encoder, decoder, *, likelihood: str | Callable = "bernoulli", prior=None,
                  posterior_flow=None) -> LatentModel:
  """A contract model (a VAE) from your own encoder and decoder networks.

  .. math:: q(z|x) = f_\\#N(\\mu(x), \\mathrm{diag}\\,\\sigma(x)^2), \\quad p(z) \\text{ any prior}, \\quad p(x|z) = \\text{likelihood}(x; \\mathrm{dec}(z))

  Args:
    encoder: a Flax Linen or NNX module, or a function ``(params, x)``, returning ``(loc,
      log_scale)`` of a diagonal Gaussian over ``z`` (``[B, D]`` each), or ``(loc, log_scale,
      features)`` when a conditional ``posterior_flow`` reads ``features`` ``[B, H]``.
    decoder: the same kinds, ``(params, z) -> output`` of ``likelihood``.
    likelihood: ``'bernoulli'`` (decoder returns logits shaped like ``x``), ``'gaussian'`` or
      ``'discretized_logistic'`` (decoder returns ``(loc, log_scale)``), or a function
      ``(x, output) -> [B]``. All sum over every non-batch axis.
    prior: ``None`` (standard Normal) or any prior of :mod:`dgmjax.priors` (a
      :class:`~dgmjax.priors.VampPrior` reads this encoder).
    posterior_flow: ``None`` or a bijector of :mod:`dgmjax.flows` applied to the Gaussian sample
      (e.g. ``flows.inverse_autoregressive_flow(D, L, context_size=H)``).

  Returns:
    A :class:`NetworkModel` (wrapped in a :class:`~dgmjax.models.prior_vae.PriorVAE` when a
    prior or a posterior flow is given); ``model.init(key, x)`` makes its params.
  """
  if isinstance(likelihood, str) and likelihood not in LIKELIHOODS:
    raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)} or a function (x, output) "
                     f"-> [B]; got {likelihood!r}")
  if not isinstance(likelihood, str) and not callable(likelihood):
    raise TypeError(f"likelihood must be a name or a function, got {type(likelihood).__name__}")
  model = NetworkModel(as_network(encoder, "encoder"), as_network(decoder, "decoder"), likelihood)
  if prior is None and posterior_flow is None:
    return model
  return PriorVAE(model, prior, posterior_flow)
