"""dgmjax: deep latent-variable generative models in JAX."""

from dgmjax import distributions, gumbel, objectives, vq
from dgmjax.distributions import (
    bernoulli_log_prob,
    categorical_entropy,
    categorical_log_prob,
    categorical_log_prob_one_hot,
    kl_categorical_categorical,
    kl_categorical_uniform,
    kl_normal_normal,
    kl_normal_standard_normal,
    mvn_log_prob,
    normal_entropy,
    normal_log_prob,
    sample_bernoulli,
    sample_categorical,
    sample_mvn,
    sample_normal,
    standard_normal_log_prob,
)
from dgmjax.gumbel import (
    concrete_log_prob,
    gumbel_max,
    gumbel_softmax,
    sample_gumbel,
    straight_through,
)
from dgmjax.objectives import (
    beta_elbo,
    ciwae_bound,
    effective_sample_size,
    elbo,
    elbo_analytic_kl,
    free_bits,
    importance_weights,
    iwae_bound,
    log_mean_exp,
    miwae_bound,
    naive_log_likelihood,
    piwae_bounds,
)

from dgmjax.vq import (
    code_counts,
    ema_update,
    nearest_code,
    perplexity,
    quantize,
    restart_dead_codes,
)

__version__ = "0.1.0"

__all__ = [
    "distributions", "gumbel", "objectives", "vq",
    "code_counts", "ema_update", "nearest_code", "perplexity", "quantize", "restart_dead_codes",
    "bernoulli_log_prob", "categorical_entropy", "categorical_log_prob",
    "categorical_log_prob_one_hot", "kl_categorical_categorical", "kl_categorical_uniform",
    "kl_normal_normal", "kl_normal_standard_normal", "mvn_log_prob", "normal_entropy",
    "normal_log_prob", "sample_bernoulli", "sample_categorical", "sample_mvn", "sample_normal",
    "standard_normal_log_prob",
    "concrete_log_prob", "gumbel_max", "gumbel_softmax", "sample_gumbel", "straight_through",
    "beta_elbo", "ciwae_bound", "effective_sample_size", "elbo", "elbo_analytic_kl", "free_bits",
    "importance_weights", "iwae_bound", "log_mean_exp", "miwae_bound", "naive_log_likelihood",
    "piwae_bounds",
]
