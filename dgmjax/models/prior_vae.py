"""Any contract model with a chosen prior ``p(z)`` and, optionally, a flow posterior.

:class:`PriorVAE` wraps a model of the contract (:mod:`dgmjax.models.base`) with one latent array
``z`` ``[B, D]``: a library VAE, PixelVAE or a model from :func:`~dgmjax.models.from_networks`. It
replaces the prior by any of :mod:`dgmjax.priors` and pushes the base posterior's sample through a
bijector of :mod:`dgmjax.flows`:

.. math:: z = f(z_0; c(x)), \\quad z_0 \\sim q_0(z_0|x), \\quad \\log q(z|x) = \\log q_0(z_0|x) - \\log|\\det \\partial f / \\partial z_0|

The likelihood ``p(x|z)`` stays the base model's. A :class:`~dgmjax.priors.VampPrior` reads the
base model's Gaussian ``encode`` at its pseudo-inputs (same params); a conditional flow reads the
base model's ``features(params, x)`` as its context.

References:
  Tomczak & Welling, VAE with a VampPrior, AISTATS 2018.
  Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, Improved Variational Inference with
  Inverse Autoregressive Flow, NeurIPS 2016.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from dgmjax.models import base as base_lib

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PriorVAE(base_lib.LatentModel):
  """A contract model with prior ``prior`` and, optionally, posterior flow ``posterior_flow``.

  Params: ``{"base": <the base model's params>, "prior": <the prior's>, "posterior_flow": <the
  flow's, or {}>}``.

  Attributes:
    base: a contract model whose latent is one array ``[B, D]``.
    prior: a prior of :mod:`dgmjax.priors` with ``latent_dim = D`` (default: the standard Normal,
      i.e. the base model's own ``log_prior`` is not used either way).
    posterior_flow: ``None`` or a bijector with ``event_shape (D,)``; with ``context_size > 0`` it
      reads ``base.features(params, x)``.
  """
  base: Any
  prior: Any = None
  posterior_flow: Any = None

  @property
  def data_support(self):
    """The base model's (its likelihood is this model's)."""
    return getattr(self.base, "data_support", None)

  def __post_init__(self):
    from dgmjax import priors as priors_lib  # pylint: disable=import-outside-toplevel
    base_lib.check_contract(self.base)
    d = getattr(self.base, "latent_dim", None)
    if self.prior is None:
      if d is None:
        raise ValueError("PriorVAE needs a prior when the base model has no latent_dim")
      object.__setattr__(self, "prior", priors_lib.StandardNormal(d))
    for name, obj, needs in (("prior", self.prior, ("init", "log_prob", "sample")),
                             ("posterior_flow", self.posterior_flow,
                              ("init", "forward_and_log_det", "inverse_and_log_det"))):
      if obj is not None and not all(base_lib.has(obj, n) for n in needs):
        raise TypeError(f"{name} must provide {needs} (a dgmjax.priors prior / dgmjax.flows "
                        f"bijector), got {type(obj).__name__}")
    pd = getattr(self.prior, "latent_dim", None)
    if d is not None and pd != d:
      raise ValueError(f"prior must have latent_dim={d} (the base model's latent size), got {pd!r}")
    if isinstance(self.prior, priors_lib.VampPrior):
      base_lib.require(self.base, "encode", "a VampPrior")
      xd = getattr(self.base, "x_dim", None)
      if xd is not None and self.prior.x_dim != xd:
        raise ValueError(f"prior (VampPrior) must have x_dim={xd}, got {self.prior.x_dim}")
    f = self.posterior_flow
    if f is not None:
      if d is not None and tuple(f.event_shape) != (d,):
        raise ValueError(f"posterior_flow must have event_shape ({d},), got "
                         f"{tuple(f.event_shape)}")
      h = getattr(f, "context_size", 0)
      if h:
        base_lib.require(self.base, "features", "a conditional posterior_flow")
        fd = getattr(self.base, "feature_dim", None)
        if fd is not None and fd != h:
          raise ValueError(f"posterior_flow must have context_size {fd} (the base model's "
                           f"features), got {h}")

  def __getattr__(self, name):  # the base model's shape attributes (image_shape, x_dim, ...)
    if name.startswith("_") or name in ("base", "prior", "posterior_flow"):
      raise AttributeError(name)
    value = getattr(object.__getattribute__(self, "base"), name)
    if callable(value):
      raise AttributeError(name)  # only attributes: methods must not bypass the wrapper
    return value

  # ------------------------------------------------------------------------------ setup

  def init(self, key: Array, *args, **kwargs) -> dict:
    """``{"base", "prior", "posterior_flow"}``; ``args`` / ``kwargs`` go to ``base.init``."""
    k_base, k_prior, k_flow = jax.random.split(key, 3)
    return {"base": self.base.init(k_base, *args, **kwargs),
            "prior": self.prior.init(k_prior),
            "posterior_flow": ({} if self.posterior_flow is None
                               else self.posterior_flow.init(k_flow))}

  # ------------------------------------------------------------------------------ pieces

  def _encoder(self, params):
    if not base_lib.has(self.base, "encode"):
      return None
    return lambda u: self.base.encode(params["base"], u)

  def _context(self, params, x):
    if self.posterior_flow is None or not getattr(self.posterior_flow, "context_size", 0):
      return None
    return self.base.features(params["base"], x)

  def _flow(self, params, z, context, *, inverse: bool):
    f = self.posterior_flow
    fn = f.inverse_and_log_det if inverse else f.forward_and_log_det
    return fn(params["posterior_flow"], z, context)

  # ------------------------------------------------------------------------------ contract

  def sample_and_log_q(self, params, x, key):
    z0, lq = base_lib.draw_and_log_q(self.base, params["base"], x, key)
    if self.posterior_flow is None:
      return z0, lq
    z, log_det = self._flow(params, z0, self._context(params, x), inverse=False)
    return z, lq - log_det

  def sample_q(self, params, x, key):
    return self.sample_and_log_q(params, x, key)[0]

  def log_q(self, params, x, z):
    """``log q(z|x)``; with a flow this inverts it (``D`` sequential passes for an IAF)."""
    if self.posterior_flow is None:
      return self.base.log_q(params["base"], x, z)
    z0, log_det = self._flow(params, z, self._context(params, x), inverse=True)
    return self.base.log_q(params["base"], x, z0) + log_det

  def log_prior(self, params, z):
    return self.prior.log_prob(params["prior"], z, self._encoder(params))

  def log_likelihood(self, params, x, z):
    return self.base.log_likelihood(params["base"], x, z)

  # ------------------------------------------------------------------------------ optional

  def posterior_mean(self, params, x, key):
    """The base model's posterior mean, or a 100-sample average through the flow."""
    if self.posterior_flow is None:
      return base_lib.posterior_means(self.base, params["base"], x, key)[0]
    z = jax.vmap(lambda k: self.sample_q(params, x, k))(jax.random.split(key, 100))
    return jnp.mean(z, axis=0)

  def kl(self, params, x):
    """The base model's analytic ``KL(q(z|x) || N(0, I))`` per dimension, ``[B, D]``: defined for
    the standard Normal prior without a flow posterior (else no closed form: raises)."""
    from dgmjax import priors as priors_lib  # pylint: disable=import-outside-toplevel
    if self.posterior_flow is not None or not isinstance(self.prior, priors_lib.StandardNormal):
      raise ValueError("kl has a closed form only for the standard Normal prior without a "
                       "posterior flow; use a bound of the log-weights instead")
    base_lib.require(self.base, "kl", "PriorVAE.kl")
    return self.base.kl(params["base"], x)

  def sample_prior(self, params, key, num):
    return self.prior.sample(params["prior"], key, num, self._encoder(params))

  def decode(self, params, z, key=None):
    return self.base.decode(params["base"], z, key)

  def encode(self, params, x):
    """The base model's Gaussian ``q_0(z_0|x)`` (before the flow)."""
    return self.base.encode(params["base"], x)
