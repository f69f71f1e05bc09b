"""The study on the 13-epoch Table 1 models at a CPU-sized evaluation budget (42 minutes on
2 CPU cores): the models of ``default.py`` at their ``short`` budget (13 epochs, Burda et al.'s
schedule truncated), 100 test images, AIS at T = 10, 100, 1000, 10,000 with 4 chains per image,
BDMC on 10 simulated images per model at the same T with 4 chains (2 pilot chains).

``--config=experiments/evaluation/configs/cpu_short.py``
"""

from experiments.evaluation.configs import default


def get_config():
  c = default.get_config()
  c.retrain.num_epochs = 0.0          # the config strings' own budget: 13 epochs
  c.num_test = 100
  c.ais.temps = (10, 100, 1000, 10000)
  c.ais.num_chains = 4
  c.ais.batch_size = 50
  c.bdmc.num_examples = 10
  c.bdmc.temps = (10, 100, 1000, 10000)
  c.bdmc.num_chains = 4
  c.bdmc.pilot_chains = 2
  c.bdmc.batch_size = 10
  c.progress = True
  return c
