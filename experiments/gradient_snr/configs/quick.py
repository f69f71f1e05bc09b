"""Quick end-to-end check (about a minute on 2 CPU cores): fewer K values and draws."""

from experiments.gradient_snr.configs import toy


def get_config():
  c = toy.get_config()
  c.toy.num_draws = 2000
  c.toy.num_samples = (1, 10, 100)
  c.toy.estimators = ("iwae", "dreg", "stl")
  c.toy.direct.num_draws = 10_000
  c.toy.direct.num_samples = (1, 10)
  c.reinforce.num_samples = (10,)
  c.reinforce.num_draws = 2000
  c.reinforce.baseline_pilot_steps = 50
  return c
