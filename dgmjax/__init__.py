"""dgmjax: deep latent-variable generative models in JAX.

The public API, like optax's: the bounds (reductions of log-weights ``[K, B]``, the core of the
library) at the top level, and every topic in its own subpackage, reachable from ``import
dgmjax`` (imported on first use, so ``import dgmjax`` stays light):

============================  ========================================================
``dgmjax.objectives``         the bounds: ``elbo``, ``iwae_bound``, MIWAE / CIWAE / PIWAE, Renyi,
                              JVI (also at the top level)
``dgmjax.estimators``         gradient estimators as surrogate losses (reparametrization, STL,
                              DReG, REINFORCE, VIMCO, RWS, ...)
``dgmjax.distributions``      log-densities, samplers, KL divergences
``dgmjax.gumbel``             Gumbel-max, Gumbel-softmax, straight-through, Concrete density
``dgmjax.vq``                 vector quantization, EMA codebooks
``dgmjax.flows``              bijectors and flow distributions
``dgmjax.priors``             learnable and flow priors
``dgmjax.models``             the model contract and the library's models
``dgmjax.losses``             training losses of any model: a bound and its gradient estimator
``dgmjax.training``           train step, ``fit``, schedules, checkpoints, run directories
``dgmjax.evaluation``         k=5000 log-likelihood, bounds
``dgmjax.numerics``           streaming log-mean-exp, matmul precision, memory budget
``dgmjax.inference``          EM, local variational fits, amortization gaps, AIS and BDMC
``dgmjax.diagnostics``        gradient SNR, ELBO surgery, active units, KL per dimension
``dgmjax.data``               datasets and binarization
``dgmjax.plotting``           figures (needs matplotlib)
``dgmjax.nn``                 the Flax modules: Burda's MLPs, PixelCNN, VQ codebook, NVIL baseline
``dgmjax.parallel``           sharding over devices
============================  ========================================================
"""

import importlib as _importlib

from dgmjax import objectives
from dgmjax.objectives import (
    beta_elbo,
    ciwae_bound,
    effective_sample_size,
    elbo,
    elbo_analytic_kl,
    free_bits,
    importance_weights,
    iwae_bound,
    jackknife_bound,
    log_mean_exp,
    miwae_bound,
    naive_log_likelihood,
    piwae_bounds,
    renyi_bound,
    renyi_weights,
)
from dgmjax._checks import ArgumentTypeError

__version__ = "0.1.0"

#: The subpackages, imported on first attribute access.
SUBPACKAGES = ("data", "diagnostics", "distributions", "estimators", "evaluation", "flows",
               "gumbel", "inference", "losses", "models", "nn", "numerics", "objectives",
               "parallel", "plotting", "priors", "training", "vq")

__all__ = [
    # subpackages
    "data", "diagnostics", "distributions", "estimators", "evaluation", "flows", "gumbel",
    "inference", "losses", "models", "nn", "numerics", "objectives", "parallel", "plotting",
    "priors", "training", "vq",
    # the bounds (dgmjax.objectives)
    "beta_elbo", "ciwae_bound", "effective_sample_size", "elbo", "elbo_analytic_kl", "free_bits",
    "importance_weights", "iwae_bound", "jackknife_bound", "log_mean_exp", "miwae_bound",
    "naive_log_likelihood", "piwae_bounds", "renyi_bound", "renyi_weights",
    # errors
    "ArgumentTypeError",
]


def __getattr__(name):
  if name in SUBPACKAGES:
    return _importlib.import_module(f"dgmjax.{name}")
  raise AttributeError(f"module 'dgmjax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
