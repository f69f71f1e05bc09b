"""The linear VAE: a linear Gaussian encoder and a PPCA decoder, as a contract model.

:class:`LinearVAE` (parameters :class:`LinearVAEParams`, built by :func:`linear_vae_init`) is a
model of the contract (:mod:`dgmjax.models.base`) with ``encode``, so every bound, evaluator and
the amortization gaps (:func:`dgmjax.inference.gaps.amortization_gaps`) apply to it. Trained on
the ELBO (:func:`fit_linear_vae`), its optimum is the PPCA maximum-likelihood solution
(:func:`dgmjax.models.ppca.ppca_ml`) and its latent dimensions collapse where the data eigenvalues
fall below ``s^2``; its ELBO is exact in closed form (:func:`linear_vae_elbo`), and so are its
inference gaps (:func:`dgmjax.inference.gaps.linear_vae_exact_gaps`).

References:
  Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on Posterior
  Collapse, NeurIPS 2019.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from dgmjax import _checks
from dgmjax import distributions
from dgmjax import objectives
from dgmjax.models import base as models_base
from dgmjax.models import data_matrix, linear_gaussian

Array = jax.Array

__all__ = ["LinearVAE", "LinearVAEParams", "fit_linear_vae", "linear_vae_elbo", "linear_vae_init"]


class LinearVAEParams(NamedTuple):
  """A linear VAE: PPCA decoder and a linear Gaussian encoder with input-independent variances.

  ``q(z|x) = N(x V + c, diag(exp(2 log_sigma)))``: the exact PPCA posterior has this form (linear
  mean, covariance independent of ``x``), diagonal when ``W``'s columns are orthogonal.

  Attributes:
    decoder: :class:`~dgmjax.models.linear_gaussian.Params` ``(w [D_x, D_z], b [D_x], log_scale)``.
    enc_w: ``V``, ``[D_x, D_z]``.
    enc_b: ``c``, ``[D_z]``.
    enc_log_scale: ``log sigma``, ``[D_z]``.
  """
  decoder: linear_gaussian.Params
  enc_w: Array
  enc_b: Array
  enc_log_scale: Array


def linear_vae_init(key: Array, x_dim: int, z_dim: int, *, mean: Array | None = None,
                    noise_scale: float = 1.0, dtype=jnp.float32) -> LinearVAEParams:
  """Small random linear VAE; ``mean`` (the data mean ``[D_x]``) centres decoder and encoder.

  Args:
    key: a JAX PRNG key.
    x_dim: ``D_x``.
    z_dim: ``D_z``.
    mean: optional data mean ``[D_x]`` (default 0).
    noise_scale: initial decoder noise ``s``.
    dtype: parameter dtype.

  Returns:
    :class:`LinearVAEParams`.

  Raises:
    ValueError: ``x_dim`` or ``z_dim`` not an int >= 1, a concrete ``noise_scale`` not finite
      and > 0.
  """
  x_dim = _checks.check_int("x_dim", x_dim, minimum=1)
  z_dim = _checks.check_int("z_dim", z_dim, minimum=1)
  _checks.check_finite("noise_scale", noise_scale)
  _checks.check_positive("noise_scale", noise_scale)
  kd, ke = jax.random.split(key)
  w = 0.1 * jax.random.normal(kd, (x_dim, z_dim), dtype)
  v = 0.1 * jax.random.normal(ke, (x_dim, z_dim), dtype)
  b = jnp.zeros((x_dim,), dtype) if mean is None else jnp.asarray(mean, dtype)
  dec = linear_gaussian.Params(w, b, jnp.log(jnp.asarray(noise_scale, dtype)))
  return LinearVAEParams(dec, v, -(b @ v), jnp.zeros((z_dim,), dtype))


@dataclasses.dataclass(frozen=True)
class LinearVAE(models_base.LatentModel):
  """The linear VAE as a contract model (:mod:`dgmjax.models.base`), of :class:`LinearVAEParams`.

  A PPCA decoder ``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, s^2 I)`` and a linear Gaussian encoder
  ``q(z|x) = N(x V + c, diag sigma^2)``. Besides the four contract functions it provides
  ``encode`` (so :func:`dgmjax.inference.gaps.amortization_gaps` applies), ``posterior_mean``,
  ``sample_prior`` and ``decode``. Frozen and field-free: every instance is equal, so a jitted
  function of the model compiles once.

  .. math:: \\log w = \\log N(z; 0, I) + \\log N(x; Wz + b, s^2 I) - \\log N(z; xV + c, \\mathrm{diag}\\,\\sigma^2)
  """

  data_support = "real"

  def encode(self, params: LinearVAEParams, x: Array) -> tuple[Array, Array]:
    """Encoder ``q(z|x)``: ``(loc [B, D_z], log_scale [B, D_z])`` for ``x`` ``[B, D_x]``.

    .. math:: q(z|x) = N(z; x V + c, \\mathrm{diag}\\,\\sigma^2)
    """
    loc = x @ params.enc_w + params.enc_b[None, :]
    return loc, jnp.broadcast_to(params.enc_log_scale[None, :], loc.shape)

  def sample_q(self, params: LinearVAEParams, x: Array, key: Array) -> Array:
    """One reparametrized draw ``z ~ q(z|x)``, ``[B, D_z]``."""
    loc, log_scale = self.encode(params, x)
    return distributions.sample_normal(key, loc, log_scale)

  def log_q(self, params: LinearVAEParams, x: Array, z: Array) -> Array:
    """``log q(z|x)``, ``[B]``."""
    loc, log_scale = self.encode(params, x)
    return distributions.normal_log_prob(z, loc, log_scale)

  def sample_and_log_q(self, params: LinearVAEParams, x: Array, key: Array) -> tuple[Array, Array]:
    """``(z, log q(z|x))`` from one encoder pass."""
    loc, log_scale = self.encode(params, x)
    z = distributions.sample_normal(key, loc, log_scale)
    return z, distributions.normal_log_prob(z, loc, log_scale)

  def log_prior(self, params: LinearVAEParams, z: Array) -> Array:
    """``log N(z; 0, I)``, ``[B]``."""
    return distributions.standard_normal_log_prob(z)

  def log_likelihood(self, params: LinearVAEParams, x: Array, z: Array) -> Array:
    """``log N(x; Wz + b, s^2 I)`` of the PPCA decoder, ``[B]``."""
    return linear_gaussian.log_likelihood(params.decoder, x, z)

  def posterior_mean(self, params: LinearVAEParams, x: Array, key: Array = None) -> Array:
    """``E_q[z|x] = x V + c``, ``[B, D_z]`` (exact; ``key`` is not used)."""
    return self.encode(params, x)[0]

  def sample_prior(self, params: LinearVAEParams, key: Array, num: int) -> Array:
    """``num`` draws of ``N(0, I)``, ``[num, D_z]``."""
    return jax.random.normal(key, (num, params.enc_b.shape[0]), params.enc_b.dtype)

  def decode(self, params: LinearVAEParams, z: Array, key: Array = None) -> Array:
    """The mean ``Wz + b`` of ``p(x|z)``, ``[B, D_x]`` (``key`` is not used)."""
    y = z @ params.decoder.w.T
    return y + jnp.broadcast_to(params.decoder.b, y.shape)


def linear_vae_elbo(params: LinearVAEParams, x: Array) -> Array:
  """The linear VAE's ELBO in closed form (no sampling), ``[B]``.

  With ``q = N(m, diag sigma^2)``, the expected log-likelihood of a linear-Gaussian decoder is exact:

  .. math:: \\mathcal{L} = \\log N(x; Wm + b, s^2 I) - \\frac{\\sum_j \\|w_j\\|^2 \\sigma_j^2}{2 s^2} - KL(q \\| N(0, I))

  References:
    Lucas, Tucker, Grosse & Norouzi, NeurIPS 2019, Appendix C (the analytic linear-VAE ELBO).
  """
  loc, log_scale = LinearVAE().encode(params, x)
  dec = params.decoder
  rec = linear_gaussian.log_likelihood(dec, x, loc)
  col_sq = jnp.sum(jnp.square(dec.w), axis=0)  # [D_z]
  var_term = jnp.sum(col_sq[None, :] * jnp.exp(2.0 * log_scale), axis=-1)
  var_term = 0.5 * var_term * jnp.exp(-2.0 * dec.log_scale)
  return rec - var_term - distributions.kl_normal_standard_normal(loc, log_scale)


def fit_linear_vae(key: Array, x: Array, z_dim: int, *, num_steps: int = 2000,
                   learning_rate: float = 1e-2, num_samples: int = 1,
                   batch_size: int | None = None, noise_variance=None,
                   params: LinearVAEParams | None = None) -> tuple[LinearVAEParams, Array]:
  """Trains a linear VAE by maximising the Monte Carlo ELBO (:func:`dgmjax.objectives.elbo`).

  Adam with a cosine decay to ``learning_rate / 100``, jitted as one ``lax.scan``. At the optimum
  the decoder is the PPCA maximum-likelihood solution (:func:`dgmjax.models.ppca.ppca_ml`, with
  the same fixed noise variance if one is given) and the encoder its exact posterior; latent dimensions whose data
  eigenvalue is below ``s^2`` collapse (``w_j = 0``, ``q(z_j|x) = p(z_j)``).

  .. math:: \\max_{\\theta, \\phi} \\frac1N \\sum_n \\mathbb{E}_{q_\\phi(z|x_n)}[\\log p_\\theta(x_n, z) - \\log q_\\phi(z|x_n)]

  Args:
    key: a JAX PRNG key.
    x: data ``[N, D_x]``.
    z_dim: ``D_z`` (static).
    num_steps: optimisation steps (static).
    learning_rate: peak Adam learning rate.
    num_samples: reparametrized samples per step (static).
    batch_size: minibatch size (drawn with replacement each step); ``None`` for full batch.
    noise_variance: optional fixed decoder variance ``s^2`` (then not trained).
    params: initial parameters (default :func:`linear_vae_init` centred at the data mean, with
      ``s^2`` the mean data variance or the fixed value).

  Returns:
    ``(params, elbo_trace [num_steps])``: the trace holds the minibatch mean ELBO per example.

  References:
    Lucas, Tucker, Grosse & Norouzi, Don't Blame the ELBO! A Linear VAE Perspective on Posterior
    Collapse, NeurIPS 2019.
  """
  data_matrix.check_data_matrix("x", x)
  x = jnp.asarray(x)
  if noise_variance is not None:
    _checks.check_positive("noise_variance", noise_variance)
  z_dim = _checks.check_int("z_dim", z_dim, minimum=1)
  num_steps = _checks.check_int("num_steps", num_steps, minimum=1)
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  if batch_size is not None:
    batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  _checks.check_real("learning_rate", learning_rate, minimum=0.0, strict_minimum=True)
  k_init, k_train = jax.random.split(key)
  # One compiled program serves both cases: the noise variance is a traced value, "free" if <= 0.
  noise = jnp.asarray(-1.0 if noise_variance is None else noise_variance, x.dtype)
  if params is None:
    params = _linear_vae_start(k_init, x, noise, z_dim=z_dim)
  return _fit_linear_vae(params, x, k_train, noise, jnp.asarray(learning_rate, x.dtype),
                         num_steps=num_steps, num_samples=num_samples, batch_size=batch_size)


@functools.partial(jax.jit, static_argnames=("z_dim",))
def _linear_vae_start(key, x, noise_variance, z_dim):
  """:func:`linear_vae_init` centred at the data mean, with ``s^2`` the fixed noise variance (if
  ``> 0``) or the mean data variance; jitted as one program."""
  mean = jnp.mean(x, axis=0)
  s2 = jnp.where(noise_variance > 0, noise_variance, jnp.mean(jnp.var(x, axis=0)))
  params = linear_vae_init(key, x.shape[1], z_dim, mean=mean, dtype=x.dtype)
  return params._replace(decoder=params.decoder._replace(log_scale=0.5 * jnp.log(s2)))


@functools.partial(jax.jit, static_argnames=("num_steps", "num_samples", "batch_size"))
def _fit_linear_vae(params, x, key, noise_variance, learning_rate, *, num_steps, num_samples,
                    batch_size):
  n = x.shape[0]
  fix_noise = noise_variance > 0
  # The where inside the log keeps the unused branch finite (log of a negative number is NaN).
  fixed_log_scale = jnp.where(fix_noise, 0.5 * jnp.log(jnp.where(fix_noise, noise_variance, 1.0)),
                              params.decoder.log_scale)
  schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
  opt = optax.adam(schedule)

  def with_noise(p):
    # With a fixed noise the gradient in log_scale is exactly 0, so Adam never moves it.
    log_scale = jnp.where(fix_noise, fixed_log_scale, p.decoder.log_scale)
    return p._replace(decoder=p.decoder._replace(log_scale=log_scale))

  def loss(p, key, xb):
    lw = models_base.log_weights(LinearVAE(), with_noise(p), xb, key, num_samples)
    return -jnp.mean(objectives.elbo(lw))

  def step(carry, key):
    p, s = carry
    kb, ks = jax.random.split(key)
    xb = x if batch_size is None else x[jax.random.randint(kb, (batch_size,), 0, n)]
    val, g = jax.value_and_grad(loss)(p, ks, xb)
    updates, s = opt.update(g, s, p)
    return (optax.apply_updates(p, updates), s), -val

  params = with_noise(params)
  (params, _), trace = lax.scan(step, (params, opt.init(params)), jax.random.split(key, num_steps))
  return with_noise(params), trace
