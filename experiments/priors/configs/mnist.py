"""Burda et al.'s one-layer VAE (784-200-200-50) on MNIST with one prior / posterior per run.

``--config=experiments/priors/configs/mnist.py:<variant>`` with ``variant`` one of
``standard``, ``mog``, ``vamp``, ``realnvp``, ``maf``, ``iaf`` (IAF posterior, standard prior),
or ``all`` (every variant in one process), and ``twod`` (only the 2-D figure). Each variant
trains 3 epochs (the first 3 passes of Burda's schedule scaled to 3 epochs, dynamic
binarization) and is evaluated on a seeded random subset of 1000 test images (k=5000 NLL,
ELBO, ELBO surgery). Runs sharing a ``--workdir`` add up to one comparison table.
"""

from experiments.common import config as common
from experiments.priors.configs import default


def get_config(arg: str = "all"):
  c = default.get_config()
  c.dataset = "mnist"
  c.model = "burda1"
  c.eval.num_examples = 1000
  c.eval.batch_size = 20
  c.eval.sample_chunk = 250
  c.surgery.num_samples = 1
  if arg == "all":
    c.variants = default.VARIANTS
  elif arg == "twod":
    c.variants = ()
  elif arg in default.VARIANTS:
    c.variants = (arg,)
    c.two_d.enabled = False
  else:
    raise common.config_string_error(
        arg, f"'all', 'twod' or one variant of {default.VARIANTS}", "unknown variant")
  return c
