"""Full 2-D study: RealNVP, MAF, LU and QR flows on eight Gaussians, checkerboard and two moons."""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.targets = ("eight_gaussians", "checkerboard", "two_moons")
  c.models = ("real_nvp", "maf", "lu", "qr")
  c.batch_size = 512
  c.num_steps = 6000
  c.learning_rate = 2e-3
  c.linear_num_steps = 1000
  c.linear_learning_rate = 2e-2
  c.grad_clip = 10.0
  c.log_every = 500
  c.num_eval_samples = 50_000
  c.eval_chunk = 10_000  # rows per compiled log-density call

  c.real_nvp = ml_collections.ConfigDict(
      dict(num_layers=8, hidden_sizes=(64, 64), activation="relu", log_scale_clamp=3.0))
  c.maf = ml_collections.ConfigDict(
      dict(num_layers=8, hidden_sizes=(64, 64), activation="relu", log_scale_clamp=3.0))

  c.plot_limit = 3.5
  c.plot_grid_size = 200
  c.plot_num_samples = 4000
  c.plot_dpi = 110
  return c
