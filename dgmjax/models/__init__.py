"""Latent-variable models on one contract (:mod:`dgmjax.models.base`).

A model is a few pure functions of ``(params, ...)``: ``sample_q``, ``log_q``, ``log_prior``,
``log_likelihood`` (and optional pieces). Every bound, estimator, evaluator and diagnostic of
dgmjax takes any such model: the library's own (:mod:`~dgmjax.models.vae`,
:mod:`~dgmjax.models.pixel_vae`, :mod:`~dgmjax.models.categorical_vae`,
:mod:`~dgmjax.models.prior_vae`) and yours (:func:`from_networks`, :func:`from_functions`, or a
subclass of :class:`LatentModel`).
"""

from dgmjax.models import base, linear_gaussian
from dgmjax.models.base import (
    DATA_SUPPORTS, LIKELIHOODS, Draws, FunctionModel, LatentModel, NetworkModel, as_network,
    check_data, check_log_weights, check_model, draws, from_functions, from_networks, has, log_weight_terms, log_weights,
    log_weights_from_keys, posterior_log_prob_cross, posterior_means, reconstruct, sample_x)
from dgmjax.models.prior_vae import PriorVAE

__all__ = [
    "DATA_SUPPORTS", "LIKELIHOODS", "Draws", "FunctionModel", "LatentModel", "NetworkModel",
    "PriorVAE", "as_network", "base", "check_data", "check_log_weights", "check_model", "draws",
    "from_functions", "from_networks", "has", "linear_gaussian", "log_weight_terms", "log_weights",
    "log_weights_from_keys", "posterior_log_prob_cross", "posterior_means", "reconstruct",
    "sample_x",
]
