"""Posterior collapse on fixed-binarization MNIST: a deep PixelCNN decoder with and without remedies.

``--config=experiments/posterior_collapse/configs/default.py[:<runs>]`` where ``runs`` is ``all``
(the table's five runs) or a comma-separated subset of :data:`RUNS`.

Every run has the same Gaussian encoder (784-200-200-32, tanh), standard Normal prior, optimiser,
data and budget; only the decoder and the KL treatment change:

=============  =============================================  ==========================
run            decoder                                        KL treatment
=============  =============================================  ==========================
mlp            factorised Bernoulli MLP (32-200-200-784)      plain ELBO
deep           PixelCNN 7x7 mask A + 5 gated 3x3 (16 ch.)     plain ELBO
deep_anneal    same                                           beta 0 -> 1, linear
deep_cyclical  same                                           beta cyclical (4 cycles)
deep_freebits  same                                           free bits, 0.25 nat / dim
weak           PixelCNN 3x3 mask A + 1 gated 3x3 (16 ch.)     plain ELBO
=============  =============================================  ==========================

The default budget (3 epochs of a random 16,000-image training subset, batch 32) fits a 2-core
CPU in about an hour for the five table runs; raise ``max_train_examples`` / ``num_epochs`` on
an accelerator.
"""

import ml_collections

from experiments.common import config as common

RUNS = ("mlp", "deep", "deep_anneal", "deep_cyclical", "deep_freebits", "weak")
TABLE_RUNS = ("mlp", "deep", "deep_anneal", "deep_freebits", "weak")
FORMS = (f"'all' (the table's runs {TABLE_RUNS}) or a comma-separated list of distinct runs "
         f"from {RUNS}, e.g. 'mlp,deep'")

DEEP = dict(num_layers=5, features=16, kernel_size=3, first_kernel_size=7)
WEAK = dict(num_layers=1, features=16, kernel_size=3, first_kernel_size=3)


def _run(decoder, schedule="constant", free_bits=0.0, **pixelcnn):
  r = ml_collections.ConfigDict()
  r.decoder = decoder
  r.pixelcnn = ml_collections.ConfigDict(pixelcnn or DEEP)
  r.kl_schedule = schedule       # constant | linear | cyclical
  r.free_bits = free_bits        # lambda in nats per dimension (0: off)
  return r


def get_config(arg: str = "all"):
  c = ml_collections.ConfigDict()
  c.dataset = "binarized_mnist"
  c.data_dir = ""
  c.max_train_examples = 16000   # a seeded random subset of the training split (0: all)
  c.latent_dim = 32
  c.hidden = (200, 200)
  c.cond_channels = 4
  c.bound = "elbo"               # elbo | iwae (dgmjax.losses.KLControlled)
  c.num_samples = 1              # K of the training bound
  c.seed = 0
  c.batch_size = 32
  c.learning_rate = 1e-3
  c.num_epochs = 3.0
  c.warmup_fraction = 1.0 / 3.0  # linear annealing: beta reaches 1 after this share of training
  c.num_cycles = 4               # cyclical annealing
  c.cycle_ramp = 0.5             # share of each cycle spent rising
  c.log_every_steps = 50
  c.diagnostics_per_epoch = 4    # KL per dimension, AU, MI on the diagnostics images
  c.progress = ml_collections.config_dict.placeholder(bool)
  c.stop_after_steps = 0
  c.runs = ml_collections.ConfigDict({
      "mlp": _run("mlp"),
      "deep": _run("pixelcnn"),
      "deep_anneal": _run("pixelcnn", "linear"),
      "deep_cyclical": _run("pixelcnn", "cyclical"),
      "deep_freebits": _run("pixelcnn", free_bits=0.25),
      "weak": _run("pixelcnn", **WEAK),
  })
  c.selected = common.parse_names(arg, RUNS, all_names=TABLE_RUNS, forms=FORMS, what="run")
  c.eval = ml_collections.ConfigDict()
  c.eval.num_examples = 200      # seeded random test images for the k-sample NLL (paired runs)
  c.eval.num_samples = 1000      # k
  c.eval.sample_chunk = 100
  c.eval.batch_size = 10
  c.eval.diagnostics_examples = 1000  # test images for KL per dim, AU, MI (encoder only)
  c.eval.num_model_samples = 36
  return c
