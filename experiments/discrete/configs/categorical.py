"""Jang et al. (2017)'s categorical VAE on fixed-binarization MNIST, one run per estimator.

``--config=experiments/discrete/configs/categorical.py[:<epochs>]`` (default 10 epochs; the paper's
code trains 100 epochs: 50,000 steps of batch 100). Temperature: tau = max(0.5, exp(-3e-5 t)),
updated every 1000 steps, as the paper's code.

Estimators (``config.estimators``, any of ``experiments.discrete.train.ESTIMATORS``): ``gumbel``,
``st`` (straight-through), ``reinforce`` (leave-one-out minibatch baseline), ``vimco``
(``vimco_num_samples`` samples per image: it trains the IWAE bound L_K) and ``nvil`` (REINFORCE
with a learned input-dependent baseline, an MLP of ``nvil.hidden`` tanh units whose output is
scaled by ``nvil.output_scale`` nats). Every run has the same steps, batch and initial model
weights; the default is Jang et al.'s three, e.g. ``--config.estimators="('vimco','nvil')"`` for
the others.
"""

import ml_collections

from experiments.common import config as common

FORMS = "a number of epochs > 0, e.g. '10'"


def get_config(arg: str = "10"):
  c = ml_collections.ConfigDict()
  c.study = "categorical"
  c.dataset = "binarized_mnist"
  c.data_dir = ""
  c.max_train_examples = 0
  c.estimators = ("gumbel", "st", "reinforce")
  c.vimco_num_samples = 5       # K of VIMCO (Mnih & Rezende 2016 use 2 to 50)
  c.nvil = ml_collections.ConfigDict()
  c.nvil.hidden = (100,)        # Mnih & Gregor's input-dependent baseline: one layer of 100
  c.nvil.output_scale = 100.0
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
  c.num_epochs = common.parse_epochs(arg, arg=arg, forms=FORMS)
  c.log_every_steps = 100
  c.progress = ml_collections.config_dict.placeholder(bool)
  c.stop_after_steps = 0
  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 1000     # k of the importance-sampled NLL
  c.eval.sample_chunk = 250
  c.eval.batch_size = 100
  c.eval.num_examples = 0       # 0: the whole test split
  return c
