"""Quick end-to-end check (well under 5 minutes on 2 CPU cores): digits, a few epochs, k=5000 eval."""

from experiments.iwae.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "digits"
  c.model = "burda1"
  c.estimator = "iwae"
  c.num_samples = 5
  c.shuffle = True
  c.schedule = "burda"
  c.num_passes = 2
  c.num_epochs = 4.0
  c.log_every_steps = 10
  c.checkpoint_every_epochs = 2.0
  c.eval.num_examples = 100
  c.eval.batch_size = 50
  return c
