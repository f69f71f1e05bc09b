"""Quick end-to-end check (under 5 minutes on 2 CPU cores): the same code path and outputs.

The three Table 1 models are restored from ``runs/`` when present; otherwise each is retrained
for 0.5 epoch on 1000 MNIST images (so the numbers describe barely trained models). Evaluated:
20 test images (L_50, L_500, L_5000, JVI, AIS at T = 10, 100, 300) and 10 simulated ones (BDMC at
T = 10, 100, 300).
"""

from experiments.evaluation.configs import default


def get_config():
  c = default.get_config()
  c.retrain.num_epochs = 0.5
  c.retrain.max_train_examples = 1000
  c.retrain.eval_num_examples = 10
  c.retrain.eval_num_samples = 50
  c.num_test = 20
  c.jvi.batch_size = 4
  c.ais.temps = (10, 100, 300)
  c.ais.batch_size = 20
  c.bdmc.num_examples = 10
  c.bdmc.temps = (10, 100, 300)
  c.bdmc.num_chains = 8
  c.bdmc.pilot_chains = 2
  c.bdmc.batch_size = 10
  return c
