"""Quick end-to-end run (well under 2 minutes on 2 CPU cores): same outputs, fewer steps."""

from experiments.flows.configs import two_d


def get_config():
  c = two_d.get_config()
  c.num_steps = 1000
  c.linear_num_steps = 200
  c.batch_size = 256
  c.log_every = 250
  c.num_eval_samples = 10_000
  c.eval_chunk = 10_000
  c.learning_rate = 3e-3
  c.real_nvp.num_layers = 6
  c.real_nvp.hidden_sizes = (32, 32)
  c.maf.num_layers = 6
  c.maf.hidden_sizes = (32, 32)
  c.plot_grid_size = 100
  c.plot_num_samples = 2000
  c.plot_dpi = 80
  return c
