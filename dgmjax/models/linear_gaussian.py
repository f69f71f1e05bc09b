"""The linear-Gaussian latent-variable model (probabilistic PCA), solvable in closed form.

.. math:: p(z) = N(0, I_{D_z}), \\quad p(x|z) = N(Wz + b, s^2 I_{D_x})

The marginal ``p(x) = N(b, W W^T + s^2 I)`` and the posterior
``p(z|x) = N(M^{-1} W^T (x - b) / s^2, M^{-1})`` with ``M = I + W^T W / s^2`` are exact, which makes
this model the oracle against which the variational code paths are tested.

References:
  Tipping & Bishop, Probabilistic Principal Component Analysis, JRSS B 1999.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import _checks, distributions

Array = jax.Array


class Params(NamedTuple):
  """Parameters: ``w`` ``[D_x, D_z]``, ``b`` ``[D_x]``, ``log_scale`` (scalar ``log s``)."""
  w: Array
  b: Array
  log_scale: Array


def _check(params: Params, x: Array) -> None:
  if jnp.ndim(params.w) != 2:
    raise ValueError(f"params.w must be [D_x, D_z], got shape {jnp.shape(params.w)}")
  if jnp.shape(x)[-1:] != jnp.shape(params.w)[:1]:
    raise ValueError(f"x must have event size D_x={jnp.shape(params.w)[0]}, got shape "
                     f"{jnp.shape(x)}")


def _affine(params: Params, z: Array) -> Array:
  """``W z + b`` for ``z`` of shape ``[..., D_z]``, broadcasting ``b`` explicitly."""
  y = z @ params.w.T
  return y + jnp.broadcast_to(params.b, y.shape)


def marginal_cov(params: Params) -> Array:
  """``W W^T + s^2 I``, ``[D_x, D_x]``."""
  d = params.w.shape[0]
  return params.w @ params.w.T + jnp.exp(2.0 * params.log_scale) * jnp.eye(d, dtype=params.w.dtype)


def log_marginal(params: Params, x: Array) -> Array:
  """Exact ``log p(x)``. ``x``: ``[..., D_x]`` -> ``[...]``.

  .. math:: \\log p(x) = \\log N(x; b, W W^T + s^2 I)
  """
  _check(params, x)
  chol = jnp.linalg.cholesky(marginal_cov(params))
  return distributions.mvn_log_prob(x, params.b, chol)


def posterior(params: Params, x: Array) -> tuple[Array, Array]:
  """Exact posterior ``p(z|x)`` as ``(loc [..., D_z], scale_tril [D_z, D_z])``.

  .. math:: p(z|x) = N(M^{-1} W^T (x-b)/s^2, M^{-1}), \\quad M = I + W^T W / s^2
  """
  _check(params, x)
  inv_var = jnp.exp(-2.0 * params.log_scale)
  dz = params.w.shape[1]
  m = jnp.eye(dz, dtype=params.w.dtype) + inv_var * params.w.T @ params.w
  cov = jnp.linalg.inv(m)
  cov = 0.5 * (cov + cov.T)
  loc = inv_var * (x - jnp.broadcast_to(params.b, jnp.shape(x))) @ params.w @ cov
  return loc, jnp.linalg.cholesky(cov)


def log_likelihood(params: Params, x: Array, z: Array) -> Array:
  """``log p(x|z)``. ``x``: ``[..., D_x]``, ``z``: ``[..., D_z]`` -> ``[...]``."""
  _check(params, x)
  return distributions.normal_log_prob(x, _affine(params, z), params.log_scale)


def log_joint(params: Params, x: Array, z: Array) -> Array:
  """``log p(x, z) = log p(z) + log p(x|z)``. -> ``[...]``."""
  return distributions.standard_normal_log_prob(z) + log_likelihood(params, x, z)


def sample(params: Params, key: Array, num: int) -> tuple[Array, Array]:
  """Draws ``num`` pairs ``(x [num, D_x], z [num, D_z])`` from the model (``num``: an int >= 1)."""
  num = _checks.check_int("num", num, minimum=1)
  kz, kx = jax.random.split(key)
  dx, dz = params.w.shape
  z = jax.random.normal(kz, (num, dz), params.w.dtype)
  loc = _affine(params, z)
  x = distributions.sample_normal(kx, loc, jnp.broadcast_to(params.log_scale, loc.shape))
  return x, z


def init(key: Array, x_dim: int, z_dim: int, *, noise_scale: float = 0.5,
         dtype=jnp.float32) -> Params:
  """Random parameters with ``W ~ N(0, 1/D_z)``, ``b ~ N(0, 1)`` and ``s = noise_scale``.

  Raises:
    ValueError: ``x_dim`` or ``z_dim`` not an int >= 1, a concrete ``noise_scale`` not finite
      and > 0.
  """
  x_dim = _checks.check_int("x_dim", x_dim, minimum=1)
  z_dim = _checks.check_int("z_dim", z_dim, minimum=1)
  _checks.check_finite("noise_scale", noise_scale)
  _checks.check_positive("noise_scale", noise_scale)
  kw, kb = jax.random.split(key)
  w = jax.random.normal(kw, (x_dim, z_dim), dtype) / jnp.sqrt(jnp.asarray(z_dim, dtype))
  b = jax.random.normal(kb, (x_dim,), dtype)
  return Params(w, b, jnp.log(jnp.asarray(noise_scale, dtype)))
