"""Diagnostics: of gradient estimators (:mod:`~dgmjax.diagnostics.snr`), of the ELBO's KL term
(:mod:`~dgmjax.diagnostics.surgery`) and of the latent units (:mod:`~dgmjax.diagnostics.units`).

=========================================  =====================================================
:mod:`dgmjax.diagnostics.snr`              moments of gradient draws, signal-to-noise ratio,
                                           bias and variance against a reference, power laws
:mod:`dgmjax.diagnostics.surgery`          ELBO surgery: mutual information and marginal KL,
                                           the aggregate posterior
:mod:`dgmjax.diagnostics.units`            active units, KL per latent dimension
=========================================  =====================================================

Every public name is also reachable here, as ``dgmjax.diagnostics.<name>``.
"""

from dgmjax.diagnostics import snr, surgery, units
from dgmjax.diagnostics.snr import (
    BiasVariance, GradientSNR, GroupBias, GroupSNR, Moments, estimator_snr, fit_power_law,
    gradient_bias_variance, gradient_draws, gradient_moments, gradient_snr, joint_loss,
    snr_from_moments, snr_summary)
from dgmjax.diagnostics.surgery import SurgeryResult, aggregate_posterior_log_prob, elbo_surgery
from dgmjax.diagnostics.units import active_units, kl_per_dimension

__all__ = [
    "BiasVariance", "GradientSNR", "GroupBias", "GroupSNR", "Moments", "SurgeryResult",
    "active_units", "aggregate_posterior_log_prob", "elbo_surgery", "estimator_snr",
    "fit_power_law", "gradient_bias_variance", "gradient_draws", "gradient_moments",
    "gradient_snr", "joint_loss", "kl_per_dimension", "snr", "snr_from_moments", "snr_summary",
    "surgery", "units",
]
