"""VQ-VAE and VQ-VAE-2 on Fashion-MNIST with PixelCNN priors over the codes.

``--config=experiments/discrete/configs/vqvae.py[:<epochs>]`` (default 3 epochs of the VQ-VAEs).
"""

import ml_collections

from experiments.common import config as common

FORMS = "a number of epochs > 0, e.g. '3'"


def get_config(arg: str = "3"):
  c = ml_collections.ConfigDict()
  c.study = "vqvae"
  c.dataset = "fashion_mnist"
  c.data_dir = ""
  c.max_train_examples = 0
  c.level_list = (1, 2)         # 1: VQ-VAE (7x7 codes); 2: VQ-VAE-2 (14x14 bottom, 7x7 top)
  c.num_codes = 64
  c.embedding_dim = 16
  c.features = 64
  c.hidden = 32
  c.num_blocks = 2
  c.beta = 0.25
  c.ema = True                  # EMA codebook (decay 0.99, Laplace smoothing)
  c.restart_every = 500         # dead-code restarts every 500 steps (0: never)
  c.init_scale = 1.0
  c.init_offset = 0.0
  c.seed = 0
  c.batch_size = 64
  c.learning_rate = 3e-4
  c.num_epochs = common.parse_epochs(arg, arg=arg, forms=FORMS)
  c.log_every_steps = 100
  c.num_prior_samples = 64
  c.progress = ml_collections.config_dict.placeholder(bool)
  c.stop_after_steps = 0
  c.prior = ml_collections.ConfigDict()
  c.prior.num_layers = 6
  c.prior.features = 64
  c.prior.kernel_size = 3
  c.prior.first_kernel_size = 5
  c.prior.batch_size = 64
  c.prior.learning_rate = 1e-3
  c.prior.num_epochs = 2.0
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 250
  c.eval.num_examples = 0
  return c
