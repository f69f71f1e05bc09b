"""Latent-variable models on one contract (:mod:`dgmjax.models.base`).

A model is a few pure functions of ``(params, ...)``: ``sample_q``, ``log_q``, ``log_prior``,
``log_likelihood`` (and optional pieces). Every bound, estimator, evaluator and diagnostic of
dgmjax takes any such model: the library's own (:mod:`~dgmjax.models.vae`,
:mod:`~dgmjax.models.pixel_vae`, :mod:`~dgmjax.models.categorical_vae`,
:mod:`~dgmjax.models.prior_vae`) and yours (:func:`from_networks`, :func:`from_functions` of
:mod:`~dgmjax.models.construct`, or a subclass of :class:`LatentModel`).

``import dgmjax.models`` loads no Flax: the models built from Flax networks (``vae``,
``pixel_vae``, ``categorical_vae``, ``vqvae``) are imported on first use
(``dgmjax.models.vae``).
"""

import importlib as _importlib

from dgmjax.models import base, construct, linear_gaussian
from dgmjax.models.base import (
    DATA_SUPPORTS, Draws, LatentModel, check_data, check_log_weights, check_model, draws, has,
    log_weight_terms, log_weights, log_weights_from_keys, posterior_log_prob_cross,
    posterior_means, reconstruct, sample_x)
from dgmjax.models.construct import (
    LIKELIHOODS, FunctionModel, NetworkModel, as_network, from_functions, from_networks)
from dgmjax.models.prior_vae import PriorVAE

#: The library models built from Flax networks, imported on first attribute access.
FLAX_MODELS = ("categorical_vae", "pixel_vae", "vae", "vqvae")

__all__ = [
    "DATA_SUPPORTS", "LIKELIHOODS", "Draws", "FunctionModel", "LatentModel", "NetworkModel",
    "PriorVAE", "as_network", "base", "check_data", "check_log_weights", "check_model",
    "construct", "draws", "from_functions", "from_networks", "has", "linear_gaussian",
    "log_weight_terms", "log_weights", "log_weights_from_keys", "posterior_log_prob_cross",
    "posterior_means", "reconstruct", "sample_x",
]


def __getattr__(name):
  if name in FLAX_MODELS:
    return _importlib.import_module(f"dgmjax.models.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__) | set(FLAX_MODELS))
