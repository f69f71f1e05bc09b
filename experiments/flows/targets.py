"""Generated 2-D targets with samplers and log-densities (pure JAX, jittable).

* ``eight_gaussians``: an equal mixture of 8 isotropic Gaussians on a circle (closed form).
* ``checkerboard``: uniform on the 8 dark squares of a 4x4 board on ``[-2, 2]^2`` (closed form:
  ``log(1/8)`` on the support, ``-inf`` off it).
* ``two_moons``: two noisy half circles. The density is a Gaussian smoothing of the uniform law on
  two arcs; it has no closed form, so ``log_prob`` integrates over the arc parameter numerically
  (midpoint rule with ``num_quadrature`` nodes per arc; the node spacing is ~0.003, far below the
  noise scale 0.2, so the quadrature error is negligible against Monte Carlo error).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

from dgmjax import distributions

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Target:
  """A 2-D target: ``sample(key, n) -> [n, 2]``, ``log_prob(x [..., 2]) -> [...]``."""
  name: str
  sample: Callable[[Array, int], Array]
  log_prob: Callable[[Array], Array]
  density_note: str


# ----------------------------------------------------------------------------- eight Gaussians

_RADIUS = 2.0
_STD = 0.3


def _centers(dtype) -> Array:
  angles = jnp.arange(8, dtype=dtype) * (2.0 * math.pi / 8)
  return _RADIUS * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def eight_gaussians_sample(key: Array, n: int) -> Array:
  k_comp, k_noise = jax.random.split(key)
  comp = jax.random.randint(k_comp, (n,), 0, 8)
  return _centers(jnp.float32)[comp] + _STD * jax.random.normal(k_noise, (n, 2))


def eight_gaussians_log_prob(x: Array) -> Array:
  """``log (1/8) sum_k N(x; c_k, 0.3^2 I)``. ``[..., 2] -> [...]``."""
  c = _centers(x.dtype)
  lp = distributions.normal_log_prob(x[..., None, :], jnp.broadcast_to(c, x.shape[:-1] + c.shape),
                                     math.log(_STD))
  return jax.nn.logsumexp(lp, axis=-1) - math.log(8.0)


# ----------------------------------------------------------------------------- checkerboard


def checkerboard_sample(key: Array, n: int) -> Array:
  k1, k2, k3 = jax.random.split(key, 3)
  x1 = jax.random.uniform(k1, (n,), minval=-2.0, maxval=2.0)
  x2 = (jax.random.uniform(k2, (n,)) - 2.0 * jax.random.randint(k3, (n,), 0, 2)
        + jnp.mod(jnp.floor(x1), 2.0))
  return jnp.stack([x1, x2], axis=-1)


def checkerboard_log_prob(x: Array) -> Array:
  """``log(1/8)`` on the dark squares (``floor(x1) + floor(x2)`` even, inside ``[-2, 2)^2``)."""
  inside = jnp.all((x >= -2.0) & (x < 2.0), axis=-1)
  dark = jnp.mod(jnp.sum(jnp.floor(x), axis=-1), 2.0) == 0.0
  return jnp.where(inside & dark, jnp.asarray(-math.log(8.0), x.dtype),
                   jnp.asarray(-jnp.inf, x.dtype))


# ----------------------------------------------------------------------------- two moons

_MOON_NOISE = 0.1
_MOON_SCALE = 2.0
_MOON_SHIFT = (-0.5, -0.25)


def _moon_points(t: Array, lower: Array) -> Array:
  """Points on the arcs at angle ``t`` in ``[0, pi]``, standardised to about ``[-3, 3]^2``."""
  upper_pt = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=-1)
  lower_pt = jnp.stack([1.0 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=-1)
  pt = jnp.where(lower[..., None], lower_pt, upper_pt)
  shift = jnp.reshape(jnp.asarray(_MOON_SHIFT, t.dtype), (1,) * (pt.ndim - 1) + (2,))
  return _MOON_SCALE * (pt + shift)


def two_moons_sample(key: Array, n: int) -> Array:
  k1, k2, k3 = jax.random.split(key, 3)
  t = jax.random.uniform(k1, (n,), maxval=math.pi)
  lower = jax.random.bernoulli(k2, 0.5, (n,))
  noise = _MOON_SCALE * _MOON_NOISE * jax.random.normal(k3, (n, 2))
  return _moon_points(t, lower) + noise


def make_two_moons_log_prob(num_quadrature: int = 2000) -> Callable[[Array], Array]:
  """``log p(x)`` of the two moons by midpoint quadrature over the arc angle."""
  def log_prob(x: Array) -> Array:
    t = (jnp.arange(num_quadrature, dtype=x.dtype) + 0.5) * (math.pi / num_quadrature)
    pts = jnp.concatenate([_moon_points(t, jnp.zeros(t.shape, bool)),
                           _moon_points(t, jnp.ones(t.shape, bool))], axis=0)  # [2T, 2]
    lp = distributions.normal_log_prob(
        x[..., None, :], jnp.broadcast_to(pts, x.shape[:-1] + pts.shape),
        math.log(_MOON_SCALE * _MOON_NOISE))
    return jax.nn.logsumexp(lp, axis=-1) - math.log(2 * num_quadrature)
  return log_prob


TARGETS = {
    "eight_gaussians": Target("eight_gaussians", eight_gaussians_sample, eight_gaussians_log_prob,
                              "closed form"),
    "checkerboard": Target("checkerboard", checkerboard_sample, checkerboard_log_prob,
                           "closed form"),
    "two_moons": Target("two_moons", two_moons_sample, make_two_moons_log_prob(),
                        "numerical quadrature (no closed form)"),
}


def get_target(name: str) -> Target:
  if name not in TARGETS:
    raise ValueError(f"unknown target {name!r}; choose from {sorted(TARGETS)}")
  return TARGETS[name]
