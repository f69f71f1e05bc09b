"""Per-datapoint (non-amortized) variational inference: local Gaussian fits and variational EM.

A separate diagonal Gaussian ``q_i`` per data point, fitted by reparametrized ELBO gradients
(:func:`fit_local_gaussians`, the variational E-step), alternating with gradient steps on the
model's parameters (:func:`variational_em`, the M-step). Both take a model of the contract
(:mod:`dgmjax.models.base`) and read its log-joint ``log p(z) + log p(x|z)`` (:func:`log_joint`);
the model's own ``q`` is not used.

Conventions: data are ``[B, ...]`` (or ``[N, ...]``, full batch); keys are typed and come after
the data (``params`` first).

References:
  Hoffman, Blei, Wang & Paisley, Stochastic Variational Inference, JMLR 2013.
  Neal & Hinton, A View of the EM Algorithm that Justifies Incremental, Sparse, and other
  Variants, 1998.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from dgmjax import distributions
from dgmjax import objectives

Array = jax.Array

__all__ = ["VEMResult", "fit_local_gaussians", "gaussian_log_weights", "log_joint",
           "variational_em"]


def log_joint(model, params, x: Array, z: Array) -> Array:
  """``log p(x, z) = log p(z) + log p(x | z)`` of a contract model: ``[B]``.

  .. math:: \\log p(x, z) = \\log p(z) + \\log p(x | z)
  """
  return model.log_prior(params, z) + model.log_likelihood(params, x, z)


def gaussian_log_weights(model, params, x: Array, loc: Array, log_scale: Array,
                         key: Array, num_samples: int) -> Array:
  """Log-weights ``log p(x, z_k) - log q(z_k)`` for a diagonal Gaussian ``q`` per data point.

  Samples are reparametrized, so the result is differentiable in ``(loc, log_scale)`` and in
  ``params``; reduce it with :func:`dgmjax.objectives.elbo` or :func:`~dgmjax.objectives.iwae_bound`.

  .. math:: \\log w_k = \\log p(x, z_k) - \\log N(z_k; \\mu, \\mathrm{diag}\\,\\sigma^2), \\quad z_k = \\mu + \\sigma \\epsilon_k

  Args:
    model: a contract model (its ``log_prior`` and ``log_likelihood``, :func:`log_joint`), for
      ``x`` ``[B, ...]`` and ``z`` ``[B, D_z]``; its ``q`` is not used.
    params: model parameters.
    x: data ``[B, ...]``.
    loc: ``[B, D_z]``.
    log_scale: ``[B, D_z]`` (broadcastable).
    key: a JAX PRNG key.
    num_samples: ``K`` (static).

  Returns:
    ``[K, B]``.
  """
  keys = jax.random.split(key, num_samples)
  z = jax.vmap(lambda k: distributions.sample_normal(k, loc, log_scale))(keys)
  log_q = distributions.normal_log_prob(z, loc, log_scale)
  log_p = jax.vmap(lambda zk: log_joint(model, params, x, zk))(z)
  return log_p - log_q


def _local_steps(keys, model, params, x, q, opt_state, optimizer, num_samples):
  """Gradient ascent on the sum over data of each point's ELBO in its own ``q_i``."""

  def loss(q, key):
    lw = gaussian_log_weights(model, params, x, q[0], q[1], key, num_samples)
    # Sum, not mean: each q_i only enters its own ELBO, so the sum gives every q_i its own gradient.
    return -jnp.sum(objectives.elbo(lw))

  def step(carry, key):
    q, s = carry
    val, g = jax.value_and_grad(loss)(q, key)
    updates, s = optimizer.update(g, s, q)
    return (optax.apply_updates(q, updates), s), -val / x.shape[0]

  return lax.scan(step, (q, opt_state), keys)


def fit_local_gaussians(model, params, x: Array, loc: Array, log_scale: Array,
                        key: Array, *, num_steps: int, num_samples: int = 1,
                        optimizer: optax.GradientTransformation | None = None
                        ) -> tuple[Array, Array, Array]:
  """Variational E-step: fits a separate diagonal Gaussian ``q_i`` to each data point by gradient steps.

  Non-amortized inference: ``(mu_i, log sigma_i)`` are free parameters, optimised with reparametrized
  ELBO gradients (``num_samples`` samples per step) from the given starting point. The optimum is the
  best ``q`` in the family, so ``log p(x) - ELBO(q*)`` is the approximation gap.

  Jitted; ``model``, the optimiser(s) and the integer arguments are static (hashed): pass a frozen
  (hashable) model and one optimiser object per setting, so that repeated calls compile once.

  .. math:: q_i^* = \\arg\\max_{\\mu_i, \\sigma_i} \\mathbb{E}_{N(z; \\mu_i, \\sigma_i^2)}[\\log p(x_i, z) - \\log q_i(z)]

  Args:
    model: a contract model (its :func:`log_joint`; its ``q`` is not used).
    params: model parameters (held fixed).
    x: data ``[B, ...]``.
    loc: initial means ``[B, D_z]`` (e.g. an encoder's output).
    log_scale: initial log standard deviations ``[B, D_z]``.
    key: a JAX PRNG key.
    num_steps: gradient steps (static).
    num_samples: samples per gradient estimate (static).
    optimizer: an optax transformation (default Adam with a cosine decay from ``1e-2`` to
      ``1e-4`` over ``num_steps``: a constant step leaves ``q`` jittering around its optimum, which
      costs ELBO when the posterior is narrow).

  Returns:
    ``(loc [B, D_z], log_scale [B, D_z], elbo_trace [num_steps])``: the trace holds the mean ELBO
    per example estimated at each step (before its update).

  References:
    Hoffman, Blei, Wang & Paisley, Stochastic Variational Inference, JMLR 2013; Cremer, Li &
    Duvenaud, ICML 2018, Section 3 (local optimisation of q).
  """
  return _fit_local_gaussians(model, params, x, loc, log_scale, key, num_steps=num_steps,
                              num_samples=num_samples, optimizer=optimizer)


@functools.partial(jax.jit, static_argnames=("model", "num_steps", "num_samples", "optimizer"))
def _fit_local_gaussians(model, params, x, loc, log_scale, key, *, num_steps, num_samples,
                         optimizer):
  if optimizer is None:
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, num_steps, alpha=0.01))
  loc = jnp.asarray(loc)
  log_scale = jnp.broadcast_to(jnp.asarray(log_scale, loc.dtype), loc.shape)
  q = (loc, log_scale)
  (q, _), trace = _local_steps(jax.random.split(key, num_steps), model, params, x, q,
                               optimizer.init(q), optimizer, num_samples)
  return q[0], q[1], trace


class VEMResult(NamedTuple):
  """Result of :func:`variational_em`.

  Attributes:
    params: the model parameters after the last M-step.
    loc: per-datapoint variational means ``[N, D_z]``.
    log_scale: per-datapoint variational log standard deviations ``[N, D_z]``.
    elbo: ``[num_iters]`` mean ELBO per example estimated in each iteration's last M-step.
  """
  params: Any
  loc: Array
  log_scale: Array
  elbo: Array


def variational_em(model, params, x: Array, key: Array, *, z_dim: int,
                   num_iters: int, e_steps: int = 5, m_steps: int = 1, num_samples: int = 1,
                   e_optimizer: optax.GradientTransformation | None = None,
                   m_optimizer: optax.GradientTransformation | None = None,
                   loc: Array | None = None, log_scale: Array | None = None) -> VEMResult:
  """Variational EM with a non-amortized diagonal Gaussian ``q_i`` per data point.

  The lectures' generalisation of EM when ``p(z|x)`` is intractable: the E-step takes ``e_steps``
  gradient steps on every ``q_i`` (:func:`fit_local_gaussians`), the M-step ``m_steps`` gradient
  steps on ``theta``, both ascending the reparametrized Monte Carlo ELBO. Optimiser states persist
  across iterations. For PPCA (the decoder of a :class:`~dgmjax.models.linear_vae.LinearVAE`) the
  result can be checked against :func:`dgmjax.models.ppca.ppca_ml`.

  Jitted; ``model``, the optimiser(s) and the integer arguments are static (hashed): pass a frozen
  (hashable) model and one optimiser object per setting, so that repeated calls compile once.

  .. math:: \\text{E: } \\phi_i \\leftarrow \\phi_i + \\eta \\nabla_{\\phi_i} \\mathcal{L}(x_i; \\theta, \\phi_i), \\quad \\text{M: } \\theta \\leftarrow \\theta + \\eta \\nabla_\\theta \\tfrac1N \\sum_i \\mathcal{L}(x_i; \\theta, \\phi_i)

  Args:
    model: a contract model (its :func:`log_joint`; its ``q`` is not used).
    params: initial model parameters (a pytree of float arrays, all trained).
    x: data ``[N, ...]`` (full batch).
    key: a JAX PRNG key.
    z_dim: latent dimension (static).
    num_iters: outer iterations (static).
    e_steps: gradient steps on ``q`` per iteration.
    m_steps: gradient steps on ``theta`` per iteration.
    num_samples: reparametrized samples per gradient estimate.
    e_optimizer: optax transformation for ``q`` (default ``adam(1e-2)``).
    m_optimizer: optax transformation for ``theta`` (default ``adam(1e-2)``).
    loc: initial ``q`` means ``[N, D_z]`` (default 0).
    log_scale: initial ``q`` log standard deviations ``[N, D_z]`` (default 0).

  Returns:
    :class:`VEMResult`.

  References:
    Neal & Hinton, A View of the EM Algorithm that Justifies Incremental, Sparse, and other
    Variants, 1998; Jordan, Ghahramani, Jaakkola & Saul, An Introduction to Variational Methods for
    Graphical Models, 1999.
  """
  return _variational_em(model, params, x, key, z_dim=z_dim, num_iters=num_iters,
                         e_steps=e_steps, m_steps=m_steps, num_samples=num_samples,
                         e_optimizer=e_optimizer, m_optimizer=m_optimizer, loc=loc,
                         log_scale=log_scale)


@functools.partial(jax.jit, static_argnames=("model", "z_dim", "num_iters", "e_steps",
                                             "m_steps", "num_samples", "e_optimizer",
                                             "m_optimizer"))
def _variational_em(model, params, x, key, *, z_dim, num_iters, e_steps, m_steps,
                    num_samples, e_optimizer, m_optimizer, loc, log_scale):
  if e_steps < 1 or m_steps < 1 or num_iters < 1:
    raise ValueError("num_iters, e_steps and m_steps must be >= 1")
  x = jnp.asarray(x)
  n = x.shape[0]
  dtype = x.dtype
  loc = jnp.zeros((n, z_dim), dtype) if loc is None else jnp.asarray(loc, dtype)
  log_scale = (jnp.zeros((n, z_dim), dtype) if log_scale is None
               else jnp.broadcast_to(jnp.asarray(log_scale, dtype), (n, z_dim)))
  e_opt = e_optimizer if e_optimizer is not None else optax.adam(1e-2)
  m_opt = m_optimizer if m_optimizer is not None else optax.adam(1e-2)

  def m_loss(theta, q, key):
    lw = gaussian_log_weights(model, theta, x, q[0], q[1], key, num_samples)
    return -jnp.mean(objectives.elbo(lw))

  def m_step(carry, key):
    theta, s, q = carry
    val, g = jax.value_and_grad(m_loss)(theta, q, key)
    updates, s = m_opt.update(g, s, theta)
    return (optax.apply_updates(theta, updates), s, q), -val

  def iteration(carry, key):
    theta, q, e_state, m_state = carry
    ke, km = jax.random.split(key)
    (q, e_state), _ = _local_steps(jax.random.split(ke, e_steps), model, theta, x, q,
                                   e_state, e_opt, num_samples)
    (theta, m_state, _), vals = lax.scan(m_step, (theta, m_state, q),
                                         jax.random.split(km, m_steps))
    return (theta, q, e_state, m_state), vals[-1]

  q = (loc, log_scale)
  init = (params, q, e_opt.init(q), m_opt.init(params))
  (params, q, _, _), trace = lax.scan(iteration, init, jax.random.split(key, num_iters))
  return VEMResult(params, q[0], q[1], trace)
