"""Inference gaps: ``log p(x) - ELBO`` of an amortized encoder, split into approximation and
amortization gaps (Cremer et al. 2018), over any contract model with ``encode``.

.. math:: \\log p(x) - \\mathcal{L}[q_\\phi] = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation}} + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]}_{\\text{amortization}}

:func:`amortization_gaps` estimates them for any model; :func:`linear_vae_exact_gaps` gives them in
closed form for the linear VAE (its oracle).

References:
  Cremer, Li & Duvenaud, Inference Suboptimality in Variational Autoencoders, ICML 2018.
  Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on Posterior
  Collapse, NeurIPS 2019.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from dgmjax import distributions, numerics
from dgmjax.inference import local
from dgmjax.models import base as models_base
from dgmjax.models import linear_gaussian, linear_vae

Array = jax.Array

__all__ = ["AmortizationGaps", "amortization_gaps", "linear_vae_exact_gaps"]


class AmortizationGaps(NamedTuple):
  """Per-example decomposition of the inference gap (all ``[B]``, in nats).

  ``inference_gap = approximation_gap + amortization_gap = log_px - elbo_amortized``.

  Attributes:
    log_px: ``log p(x)`` (exact if given, else the importance-weighted estimate).
    elbo_amortized: ELBO of the encoder's ``q(z|x)``.
    elbo_local: ELBO of the best per-datapoint ``q*`` in the same family.
    approximation_gap: ``log p(x) - ELBO(q*)``: the cost of the variational family.
    amortization_gap: ``ELBO(q*) - ELBO(q_encoder)``: the cost of sharing one encoder.
    inference_gap: ``log p(x) - ELBO(q_encoder)``.
  """
  log_px: Array
  elbo_amortized: Array
  elbo_local: Array
  approximation_gap: Array
  amortization_gap: Array
  inference_gap: Array


def _chunked_elbo_pair(key, model, params, x, q_a, q_b, num_samples, chunk_size):
  """Monte Carlo ELBOs ``([B], [B])`` of two diagonal Gaussians on common random numbers.

  Both reparametrize the same standard-normal draws (drawn once per chunk of ``chunk_size``), so
  the difference of the two estimates has far less variance than either.
  """
  num_chunks = _num_chunks(num_samples, chunk_size)
  shape = (num_samples // num_chunks,) + jnp.shape(q_a[0])

  def log_weights(q, eps):
    z = q[0][None] + jnp.exp(q[1])[None] * eps  # [K, B, D_z]
    log_p = jax.vmap(lambda zk: local.log_joint(model, params, x, zk))(z)
    return log_p - distributions.normal_log_prob(z, q[0], q[1])

  def one(k):
    eps = jax.random.normal(k, shape, jnp.result_type(q_a[0]))
    return jnp.sum(log_weights(q_a, eps), axis=0), jnp.sum(log_weights(q_b, eps), axis=0)

  sum_a, sum_b = lax.map(one, jax.random.split(key, num_chunks))
  return jnp.sum(sum_a, axis=0) / num_samples, jnp.sum(sum_b, axis=0) / num_samples


def _num_chunks(num_samples: int, chunk_size: int) -> int:
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f"num_samples={num_samples} must be a multiple of chunk_size={chunk}")
  return num_samples // chunk


def _chunked_mixture_iwae(key, model, params, x, q_a, q_b, num_samples, chunk_size):
  """IWAE estimate of ``log p(x)`` with the defensive mixture proposal ``(q_a + q_b) / 2``.

  ``num_samples`` draws come from each of ``q_a`` and ``q_b`` and are all weighted by the mixture
  density (deterministic-mixture importance sampling: unbiased for ``p(x)``, so the log is a
  stochastic lower bound); each weight is at most twice that of either proposal alone, so the
  estimator is never much worse than the better of the two. Chunks of ``2 * chunk_size`` draws
  are reduced by :func:`dgmjax.numerics.streaming_log_mean_exp`. ``[B]``.
  """
  num_chunks = _num_chunks(num_samples, chunk_size)
  chunk = num_samples // num_chunks

  def draw(k, q):
    keys = jax.random.split(k, chunk)
    return jax.vmap(lambda kk: distributions.sample_normal(kk, q[0], q[1]))(keys)

  def log_w(k):
    ka, kb = jax.random.split(k)
    z = jnp.concatenate([draw(ka, q_a), draw(kb, q_b)], axis=0)  # [2 * chunk, B, D_z]
    log_q = jnp.logaddexp(distributions.normal_log_prob(z, q_a[0], q_a[1]),
                          distributions.normal_log_prob(z, q_b[0], q_b[1])) - math.log(2.0)
    log_p = jax.vmap(lambda zk: local.log_joint(model, params, x, zk))(z)
    return log_p - log_q

  return numerics.streaming_log_mean_exp(log_w, jax.random.split(key, num_chunks),
                                         2 * num_samples)


def amortization_gaps(model, params, x: Array, key: Array, *,
                      num_steps: int = 500, num_samples: int = 1, num_elbo_samples: int = 100,
                      num_iwae_samples: int = 1000, chunk_size: int = 100,
                      optimizer: optax.GradientTransformation | None = None,
                      log_px: Array | None = None) -> AmortizationGaps:
  """Splits ``log p(x) - ELBO`` of an amortized Gaussian encoder into approximation and amortization gaps.

  Works for any contract model (:mod:`dgmjax.models.base`) with a continuous latent ``z``
  ``[B, D_z]`` and the optional ``encode(params, x) -> (loc [B, D_z], log_scale [B, D_z])`` of a
  diagonal-Gaussian ``q`` (a library VAE with one stochastic layer, a
  :class:`~dgmjax.models.linear_vae.LinearVAE`, a model of
  :func:`~dgmjax.models.from_networks`); the log-joint is the model's
  ``log_prior + log_likelihood``. The best per-datapoint diagonal Gaussian ``q*`` is found by
  :func:`~dgmjax.inference.local.fit_local_gaussians` *starting from the encoder's output* (so
  ``ELBO(q*) >= ELBO(q_encoder)`` up to optimisation and Monte Carlo noise). ``log p(x)`` is
  estimated, unless given exactly, by an importance-weighted (IWAE) bound whose proposal is the
  defensive mixture ``(q* + q_encoder) / 2``, with ``num_iwae_samples`` draws from each: a
  stochastic lower bound about as tight as with the better of the two proposals, without the
  upward bias of taking the maximum of two noisy estimates. Both ELBOs use the same
  ``num_elbo_samples`` standard-normal draws (common random numbers), which makes their
  difference, the amortization gap, much less noisy than either.

  Jitted. The model, the optimiser and the integer arguments are static (hashed): pass a frozen
  (hashable) model, e.g. a library model, and one optimiser object per setting, to compile once;
  parameters go in ``params`` (traced), never in the model, which would bake them into the
  program as constants.

  .. math:: \\log p(x) - \\mathcal{L}[q_\\phi] = \\underbrace{\\log p(x) - \\mathcal{L}[q^*]}_{\\text{approximation}} + \\underbrace{\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]}_{\\text{amortization}}

  Args:
    model: a contract model with ``encode``.
    params: model parameters (a pytree holding both the encoder's and the decoder's).
    x: data ``[B, ...]``.
    key: a JAX PRNG key.
    num_steps: gradient steps of the local optimisation.
    num_samples: samples per local gradient step.
    num_elbo_samples: samples for each ELBO estimate (a multiple of ``chunk_size`` if larger).
    num_iwae_samples: draws from each mixture component for the estimate of ``log p(x)`` (``2K``
      importance samples in all).
    chunk_size: samples evaluated at once (memory ``~ chunk_size * B``).
    optimizer: optax transformation for the local optimisation (default: the cosine-decayed Adam
      of :func:`~dgmjax.inference.local.fit_local_gaussians`).
    log_px: exact ``log p(x)`` ``[B]`` when known (e.g. PPCA), replacing the IWAE estimate.

  Returns:
    :class:`AmortizationGaps` of per-example values ``[B]``; average them over a data set.

  References:
    Cremer, Li & Duvenaud, Inference Suboptimality in Variational Autoencoders, ICML 2018.
  """
  if not models_base.has(model, "encode"):
    raise TypeError(f"amortization_gaps needs the model to provide encode(...); "
                    f"{type(model).__name__} does not (see dgmjax.models.base for the optional "
                    "contract functions)")
  return _amortization_gaps(model, params, x, key, num_steps=num_steps,
                            num_samples=num_samples, num_elbo_samples=num_elbo_samples,
                            num_iwae_samples=num_iwae_samples, chunk_size=chunk_size,
                            optimizer=optimizer, log_px=log_px)


@functools.partial(jax.jit, static_argnames=(
    "model", "num_steps", "num_samples", "num_elbo_samples", "num_iwae_samples",
    "chunk_size", "optimizer"))
def _amortization_gaps(model, params, x, key, *, num_steps, num_samples,
                       num_elbo_samples, num_iwae_samples, chunk_size, optimizer, log_px):
  k_opt, k_elbo, k_iw = jax.random.split(key, 3)
  loc_e, log_scale_e = model.encode(params, x)
  log_scale_e = jnp.broadcast_to(log_scale_e, jnp.shape(loc_e))
  loc_l, log_scale_l, _ = local.fit_local_gaussians(
      model, params, x, lax.stop_gradient(loc_e), lax.stop_gradient(log_scale_e), k_opt,
      num_steps=num_steps, num_samples=num_samples, optimizer=optimizer)
  # Common random numbers: both ELBOs reparametrize the same standard-normal draws, so their
  # difference (the amortization gap) is far less noisy than either estimate.
  elbo_a, elbo_l = _chunked_elbo_pair(k_elbo, model, params, x, (loc_e, log_scale_e),
                                      (loc_l, log_scale_l), num_elbo_samples, chunk_size)
  if log_px is None:
    log_px = _chunked_mixture_iwae(k_iw, model, params, x, (loc_l, log_scale_l),
                                   (loc_e, log_scale_e), num_iwae_samples, chunk_size)
  return AmortizationGaps(log_px, elbo_a, elbo_l, log_px - elbo_l, elbo_l - elbo_a,
                          log_px - elbo_a)


@jax.jit
def linear_vae_exact_gaps(params: linear_vae.LinearVAEParams, x: Array) -> AmortizationGaps:
  """The inference gaps of a linear VAE in closed form (no sampling, no optimisation).

  The decoder's posterior is Gaussian, ``p(z|x) = N(m(x), M^{-1})`` with ``M = I + W^T W / s^2``,
  so every term of :class:`AmortizationGaps` is exact: the best diagonal Gaussian ``q*`` in
  ``KL(q || p(z|x))`` has mean ``m(x)`` and precisions ``diag(M)`` (for every ``x``), and the
  ELBO of the encoder's ``q = N(mu, diag sigma^2)`` is ``log p(x) - KL(q || p(z|x))``. This is
  the oracle for :func:`amortization_gaps` applied to a linear VAE.

  .. math:: \\text{approx.} = \\tfrac12\\big(\\textstyle\\sum_j \\log M_{jj} - \\log|M|\\big), \\quad \\text{inference} = \\tfrac12\\big(\\mathrm{tr}(M \\Sigma_q) + (\\mu - m)^T M (\\mu - m) - D_z - \\log|M| - \\log|\\Sigma_q|\\big)

  Args:
    params: :class:`~dgmjax.models.linear_vae.LinearVAEParams`.
    x: data ``[B, D_x]``.

  Returns:
    :class:`AmortizationGaps` of per-example values ``[B]``.

  References:
    Cremer, Li & Duvenaud, ICML 2018; Lucas, Tucker, Grosse & Norouzi, NeurIPS 2019.
  """
  dec = params.decoder
  d_z = dec.w.shape[1]
  m = jnp.eye(d_z, dtype=dec.w.dtype) + jnp.exp(-2.0 * dec.log_scale) * dec.w.T @ dec.w
  chol = jnp.linalg.cholesky(m)
  log_det_m = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
  loc_post, _ = linear_gaussian.posterior(dec, x)
  loc, log_scale = linear_vae.LinearVAE().encode(params, x)
  diff = loc - loc_post
  kl_enc = 0.5 * (jnp.sum(jnp.diagonal(m)[None, :] * jnp.exp(2.0 * log_scale), axis=-1)
                  + jnp.einsum("bi,ij,bj->b", diff, m, diff) - d_z - log_det_m
                  - 2.0 * jnp.sum(log_scale, axis=-1))
  approx = 0.5 * (jnp.sum(jnp.log(jnp.diagonal(m))) - log_det_m)
  approx = jnp.broadcast_to(approx, kl_enc.shape)
  log_px = linear_gaussian.log_marginal(dec, x)
  return AmortizationGaps(log_px, log_px - kl_enc, log_px - approx, approx, kl_enc - approx, kl_enc)
