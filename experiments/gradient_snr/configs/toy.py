"""The toy study: Rainforth et al. (2018)'s Gaussian model, SNR for K in {1, ..., 1000}.

A few minutes on 2 CPU cores. Set ``toy.batch_size`` to measure the gradient of the bound averaged
over a minibatch of the 1024 datapoints instead of one datapoint (cost grows linearly).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.study = "toy"
  c.seed = 0
  # Elements (draws * K * B * D) per vmapped chunk of gradient draws: bounds memory.
  c.chunk_elements = 4_000_000

  c.toy = ml_collections.ConfigDict()
  c.toy.dim = 20                      # D
  c.toy.num_data = 1024               # datapoints drawn from the true model
  c.toy.perturbation = 0.01           # sigma of the N(0, sigma^2) noise on (mu*, A*, b*)
  c.toy.batch_size = 1                # datapoints the gradient is taken on (one, as Rainforth)
  c.toy.num_draws = 10_000            # N independent gradient draws per (estimator, K)
  c.toy.num_samples = (1, 3, 10, 30, 100, 300, 1000)
  c.toy.estimators = ("iwae", "dreg", "stl", "elbo_m")
  # Signal of the IWAE phi SNR: 'dreg' (control variate: the mean of DReG draws, unbiased for
  # grad_phi L_K) or 'self' (IWAE's own sample mean, floor-limited at large K).
  c.toy.phi_signal = "dreg"
  c.toy.asymptotic_min_k = 10         # slopes are also fitted on K >= this (large-K regime)
  # IWAE alone, signal from its own draws, debiased: an independent check of the phi slope.
  c.toy.direct = ml_collections.ConfigDict()
  c.toy.direct.enabled = True
  c.toy.direct.num_draws = 100_000
  c.toy.direct.num_samples = (1, 3, 10, 30, 100)

  c.reinforce = ml_collections.ConfigDict()
  c.reinforce.enabled = True
  c.reinforce.num_samples = (1, 10, 100)
  c.reinforce.objectives = ("elbo", "iwae")
  c.reinforce.num_draws = 10_000
  c.reinforce.baseline_pilot_steps = 200
  c.reinforce.baseline_decay = 0.9
  return c
