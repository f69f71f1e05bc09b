"""Each study in a minute or two on 2 CPU cores: small subsets and budgets (smoke runs, tests).

``--config=experiments/discrete/configs/quick.py:<categorical|vqvae|codebook>``
"""

from experiments.common import config as common
from experiments.discrete.configs import categorical, codebook, vqvae


def get_config(arg: str = "categorical"):
  if arg == "categorical":
    c = categorical.get_config("1")
    c.max_train_examples = 2000
    c.eval.num_examples = 200
    c.eval.num_samples = 100
    c.eval.sample_chunk = 50
  elif arg in ("vqvae", "codebook"):
    c = (vqvae if arg == "vqvae" else codebook).get_config("1")
    c.max_train_examples = 640
    c.features, c.hidden, c.num_blocks, c.embedding_dim, c.num_codes = 16, 8, 1, 8, 16
    c.restart_every = 0 if arg == "codebook" else 5
    if arg == "codebook":
      c.variants.bad_init_restarts.restart_every = 5
      c.variants.bad_init_ema_restarts.restart_every = 5
    c.prior.num_layers, c.prior.features, c.prior.num_epochs = 1, 8, 1.0
    c.eval.num_examples = 200
    c.num_prior_samples = 4
  else:
    raise common.config_string_error(arg, "'categorical', 'vqvae' or 'codebook'",
                                     "unknown study")
  c.log_every_steps = 5
  c.progress = False
  return c
