"""The Gaussian toy model of Rainforth et al. (2018), where every quantity is known.

.. math:: p_\\theta(z) = N(z; \\mu, I), \\quad p(x|z) = N(x; z, I), \\quad q_\\phi(z|x) = N(z; Ax + b, \\tfrac23 I), \\quad x, z \\in \\mathbb{R}^{D}

so ``p(x) = N(x; mu, 2I)`` and ``p(z|x) = N(z; (x + mu) / 2, I / 2)``. ``theta = mu``,
``phi = (A, b)``; the best ``q`` of this family has ``A* = I / 2``, ``b* = mu* / 2`` (its variance
stays 2/3, so it is not the exact posterior). Data are drawn with ``mu* ~ N(0, I)``; the gradients
are measured at ``(mu*, A*, b*)`` perturbed by ``N(0, sigma^2)`` noise per entry.

References:
  Rainforth, Kosiorek, Le, Maddison, Igl, Wood & Teh, Tighter Variational Bounds are Not
  Necessarily Better, ICML 2018, Section 4.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dgmjax import distributions, estimators, models

Array = jax.Array

Q_VARIANCE = 2.0 / 3.0
_Q_LOG_SCALE = 0.5 * math.log(Q_VARIANCE)


class Problem(NamedTuple):
  """A toy dataset and the point at which gradients are measured.

  Attributes:
    data: ``[num_data, D]`` draws from the true model.
    true_mu: ``mu*`` ``[D]``.
    params: perturbed parameters ``{'theta': {'mu'}, 'phi': {'A', 'b'}}``.
    optimum: the unperturbed ``{'theta': {'mu': mu*}, 'phi': {'A': I/2, 'b': mu*/2}}``.
  """
  data: Array
  true_mu: Array
  params: dict
  optimum: dict


def make_problem(key: Array, dim: int = 20, num_data: int = 1024,
                 perturbation: float = 0.01) -> Problem:
  """Draws ``mu*``, a dataset, and the perturbed evaluation point.

  Args:
    key: PRNG key.
    dim: ``D``.
    num_data: number of datapoints.
    perturbation: standard deviation ``sigma`` of the noise added to every parameter.

  Returns:
    :class:`Problem` (float32).
  """
  k_mu, k_z, k_x, k_p = jax.random.split(key, 4)
  mu = jax.random.normal(k_mu, (dim,))
  z = mu[None] + jax.random.normal(k_z, (num_data, dim))
  x = z + jax.random.normal(k_x, (num_data, dim))
  optimum = {"theta": {"mu": mu}, "phi": {"A": 0.5 * jnp.eye(dim), "b": 0.5 * mu}}
  leaves, treedef = jax.tree.flatten(optimum)
  keys = jax.random.split(k_p, len(leaves))
  noisy = [leaf + perturbation * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
  return Problem(x, mu, jax.tree.unflatten(treedef, noisy), optimum)


def _q_loc(params, x: Array) -> Array:
  phi = params["phi"]
  return x @ phi["A"].T + phi["b"][None]


def sample_q(params, x: Array, key: Array) -> Array:
  """One reparametrized draw ``z = Ax + b + sqrt(2/3) eps``, ``[B, D]``."""
  loc = _q_loc(params, x)
  return distributions.sample_normal(key, loc, jnp.full(loc.shape, _Q_LOG_SCALE, loc.dtype))


def log_q(params, x: Array, z: Array) -> Array:
  """``log q_phi(z | x)``, ``[B]``."""
  return distributions.normal_log_prob(z, _q_loc(params, x), _Q_LOG_SCALE)


def log_prior(params, z: Array) -> Array:
  """``log p_theta(z) = log N(z; mu, I)``, ``[B]``."""
  return distributions.normal_log_prob(z, params["theta"]["mu"][None], 0.0)


def log_likelihood(params, x: Array, z: Array) -> Array:
  """``log p(x | z) = log N(x; z, I)``, ``[B]``."""
  del params
  return distributions.normal_log_prob(x, z, 0.0)


def log_p(params, x: Array, z: Array) -> Array:
  """``log p_theta(x, z) = log N(z; mu, I) + log N(x; z, I)``, ``[B]``."""
  return log_prior(params, z) + log_likelihood(params, x, z)


#: The toy model on the contract of :mod:`dgmjax.models.base`.
MODEL = models.from_functions(sample_q=sample_q, log_q=log_q, log_prior=log_prior,
                              log_likelihood=log_likelihood)


def log_marginal(params, x: Array) -> Array:
  """Exact ``log p_theta(x) = log N(x; mu, 2I)``, ``[B]``."""
  return distributions.normal_log_prob(x, params["theta"]["mu"][None], 0.5 * math.log(2.0))


def make_loss(estimator: str, x: Array, num_samples: int, *, num_groups: int | None = None,
              baseline=None, bound: str = "iwae"):
  """``loss(params, key) -> scalar``: minus the mean surrogate of ``estimator`` over ``x``.

  Args:
    estimator: a name from :data:`dgmjax.estimators.ESTIMATORS` (:func:`dgmjax.estimators.from_name`).
    x: the datapoints ``[B, D]`` the gradient is taken on.
    num_samples: total samples per datapoint (``M * K`` for grouped estimators).
    num_groups: ``M``.
    baseline: REINFORCE baseline (scalar or ``[B]``).
    bound: ``'iwae'`` or ``'elbo'``, the bound of ``reinforce`` and ``stl``.
  """

  est = estimators.from_name(estimator, num_groups=num_groups, baseline=baseline, bound=bound)

  def loss(params, key):
    terms = models.log_weight_terms(MODEL, params, x, key, num_samples)
    return -jnp.mean(est.surrogate(terms))

  return loss
