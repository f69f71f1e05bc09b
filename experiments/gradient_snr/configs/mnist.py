"""SNR against K on Burda et al.'s one-layer MNIST VAE / IWAE at several points of training.

Reads the workdirs of ``experiments.iwae`` runs (never writes to them)::

  python -m experiments.gradient_snr.main --config=experiments/gradient_snr/configs/mnist.py \\
      --workdir=/tmp/gradient_snr_mnist --config.mnist.runs_dir=DIR

where ``DIR`` holds the runs named in ``mnist.points`` (``label, run, step``; step 0 is the
initialisation of that run's seed, ``'latest'`` its last checkpoint). A few minutes on 2 CPU cores.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.study = "mnist"
  c.seed = 0
  c.chunk_elements = 8_000_000     # draws * K * B * 784 per vmapped chunk: bounds memory
  c.mnist = ml_collections.ConfigDict()
  c.mnist.runs_dir = ""
  c.mnist.points = (
      ("IWAE k=5, init", "iwae-k5-l1-short", 0),
      ("IWAE k=5, 5 epochs", "iwae-k5-l1-e5", 14900),
      ("IWAE k=5, 13 epochs", "iwae-k5-l1-short", 38740),
      ("VAE k=1, 13 epochs", "vae-k1-l1-short", 38740),
  )
  c.mnist.batch_size = 4           # test images the minibatch gradient is taken on
  c.mnist.num_samples = (1, 10, 100)
  c.mnist.num_draws = 500
  c.mnist.estimators = ("iwae", "dreg", "stl", "reinforce")  # reinforce: no baseline
  return c
