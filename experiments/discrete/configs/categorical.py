"""Jang et al. (2017)'s categorical VAE on fixed-binarization MNIST, three estimators.

``--config=experiments/discrete/configs/categorical.py[:<epochs>]`` (default 10 epochs; the paper's
code trains 100 epochs: 50,000 steps of batch 100). Temperature: tau = max(0.5, exp(-3e-5 t)),
updated every 1000 steps, as the paper's code.
"""

import ml_collections


def get_config(arg: str = "10"):
  c = ml_collections.ConfigDict()
  c.study = "categorical"
  c.dataset = "binarized_mnist"
  c.data_dir = ""
  c.max_train_examples = 0
  c.estimators = ("gumbel", "st", "reinforce")
  c.num_vars = 20
  c.num_classes = 10
  c.hidden_dims = (512, 256)
  c.codebook_dim = 0            # > 0: learned code vectors (dVAE)
  c.tau_initial = 1.0
  c.tau_min = 0.5
  c.tau_rate = 3e-5
  c.tau_every = 1000
  c.seed = 0
  c.batch_size = 100
  c.learning_rate = 1e-3
  c.num_epochs = float(arg)
  c.log_every_steps = 100
  c.progress = ml_collections.config_dict.placeholder(bool)
  c.stop_after_steps = 0
  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 1000     # k of the importance-sampled NLL
  c.eval.sample_chunk = 250
  c.eval.batch_size = 100
  c.eval.num_examples = 0       # 0: the whole test split
  return c
