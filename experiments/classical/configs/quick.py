"""Quick end-to-end run (a few minutes on 2 CPU cores): same outputs, fewer steps and examples."""

from experiments.classical.configs import default


def get_config():
  c = default.get_config()
  c.gmm.num_points = 300
  c.gmm.max_iters = 100
  c.gmm.snapshot_iters = (0, 1, 3, 10)
  c.ppca.latent_dims = (8,)             # one compiled fit, shared with the collapse runs
  c.ppca.em_max_iters = 2000
  c.ppca.vae_steps = 1500
  c.ppca.collapse_latent_dim = 8
  c.ppca.collapse_noise_variances = (0.1, 0.3)
  c.gaps.num_examples = 100
  c.gaps.num_steps = 300
  c.gaps.num_elbo_samples = 200
  c.gaps.num_iwae_samples = 500
  c.gaps.chunk_size = 100
  c.gaps.vae_steps = 1000
  c.gaps.runs_num_examples = 20
  c.gaps.runs_batch_size = 20
  c.gaps.convergence_check_steps = 0
  return c
