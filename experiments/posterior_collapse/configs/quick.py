"""The study end to end in a minute or two on 2 CPU cores (tiny networks and budgets; smoke runs).

``--config=experiments/posterior_collapse/configs/quick.py``
"""

from experiments.posterior_collapse.configs import default


def get_config(arg: str = "mlp,deep,deep_anneal,deep_cyclical,deep_freebits,weak"):
  c = default.get_config(arg)
  c.max_train_examples = 256
  c.latent_dim = 4
  c.hidden = (32,)
  c.cond_channels = 2
  c.batch_size = 16
  c.num_epochs = 2.0
  c.log_every_steps = 4
  c.diagnostics_per_epoch = 2
  for name in default.RUNS:
    r = c.runs[name]
    r.pixelcnn.features = 4
    r.pixelcnn.num_layers = min(r.pixelcnn.num_layers, 1)
  c.eval.num_examples = 8
  c.eval.num_samples = 8
  c.eval.sample_chunk = 4
  c.eval.batch_size = 4
  c.eval.diagnostics_examples = 64
  c.eval.num_model_samples = 4
  c.progress = False
  return c
