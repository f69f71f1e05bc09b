"""Quickstart: an IWAE (k=5) on sklearn's 8x8 digits, offline, about a minute on 2 CPU cores.

python -m experiments.iwae.main --config=experiments/iwae/configs/quickstart.py --workdir=/tmp/qs
"""

from experiments.iwae.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "digits"
  c.model = "burda1"              # 64-200-200-50 on 8x8 images
  c.estimator = "iwae"
  c.num_samples = 5
  c.batch_size = 20
  c.shuffle = True
  c.schedule = "burda"
  c.num_passes = 4                # the first 4 passes of Burda's schedule, scaled to num_epochs
  c.num_epochs = 100.0
  c.log_every_steps = 50
  c.checkpoint_every_epochs = 25.0
  return c
