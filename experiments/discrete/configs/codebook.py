"""Codebook health on Fashion-MNIST: a bad initialisation, without and with dead-code restarts.

The codes start at ``init_offset = 5`` (uniform in [4.9, 5.1]^D), far from the encoder outputs, so a
handful of codes win every assignment; the codebook loss alone cannot pull unused codes back.
"""

import ml_collections

from experiments.discrete.configs import vqvae


def get_config(arg: str = "1"):
  c = vqvae.get_config(arg)
  c.study = "codebook"
  c.init_scale = 0.1
  c.init_offset = 5.0
  c.ema = False
  c.restart_every = 0
  c.variants = ml_collections.ConfigDict({
      "bad_init": {"ema": False, "restart_every": 0},
      "bad_init_ema": {"ema": True, "restart_every": 0},
      "bad_init_restarts": {"ema": False, "restart_every": 50},
      "bad_init_ema_restarts": {"ema": True, "restart_every": 50},
  })
  return c
