"""Latent-variable models: networks + distributions + priors, as pure functions returning log-weights."""

from dgmjax.models import linear_gaussian

__all__ = ["linear_gaussian"]
