"""The full classical study (a few minutes on 2 CPU cores).

1. EM on a 2-D Gaussian mixture: fitted components per iteration and the log-likelihood curve.
2. PPCA (closed form and EM) against a linear VAE trained on the ELBO, on the 8x8 digits, and the
   collapse of the linear VAE's latent dimensions at fixed noise variances.
3. Amortization gaps (Cremer et al. 2018) of the linear VAE and of a small Bernoulli VAE / IWAE
   trained here on binarized digits.
4. The same gaps for the MNIST VAE / IWAE runs of experiments/iwae, restored from their
   checkpoints under ``gaps.runs_root`` (missing or unfinished runs are skipped and listed).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  # JAX's non-partitionable threefry PRNG: random numbers of the same quality (a different
  # stream), and XLA compiles random-drawing programs about 5x faster on CPU. The partitionable
  # default matters only for sharded arrays; set True to reproduce JAX-default streams.
  c.threefry_partitionable = False

  # ------------------------------------------------------------ 1. GMM EM on 2-D data
  c.gmm = ml_collections.ConfigDict()
  c.gmm.num_points = 600
  c.gmm.num_components = 3
  c.gmm.max_iters = 200
  c.gmm.tol = 1e-7                      # on the mean log-likelihood per point
  c.gmm.reg_covar = 1e-6
  c.gmm.snapshot_iters = (0, 1, 2, 5, 10, 20)   # panels of the figure (plus the final fit)

  # ------------------------------------------------------------ 2. PPCA vs linear VAE
  c.ppca = ml_collections.ConfigDict()
  c.ppca.dataset = "digits"             # dgmjax.data.load: 8x8 grey levels in [0, 1], D = 64
  c.ppca.latent_dims = (2, 4, 8, 16, 32)
  c.ppca.em_max_iters = 5000
  c.ppca.em_tol = 1e-7
  c.ppca.vae_steps = 4000
  c.ppca.vae_learning_rate = 3e-2
  c.ppca.vae_num_samples = 1
  c.ppca.vae_batch_size = 0             # 0: full batch
  # Linear VAE with a fixed decoder variance s^2: dimensions with eigenvalue < s^2 collapse.
  c.ppca.collapse_latent_dim = 16
  c.ppca.collapse_noise_variances = (0.05, 0.1, 0.2, 0.5)
  c.ppca.collapse_kl_threshold = 0.01   # nats: a latent dimension is active above this mean KL

  # ------------------------------------------------------------ 3. Amortization gaps
  c.gaps = ml_collections.ConfigDict()
  c.gaps.num_examples = 300             # held-out examples the gaps are averaged over
  c.gaps.num_steps = 1000               # local (per-datapoint) optimisation of q
  c.gaps.learning_rate = 1e-2
  c.gaps.num_samples = 4                # samples per local gradient step
  c.gaps.num_elbo_samples = 500
  c.gaps.num_iwae_samples = 2500        # per mixture component: 5000 importance samples in all
  c.gaps.chunk_size = 250
  c.gaps.linear_latent_dim = 8          # the linear VAE of part 2 with this latent size
  # A small Bernoulli VAE (dgmjax.models.vae) on digits binarized at 0.5, trained on the ELBO
  # (bound 'elbo', K = 1) and on the IWAE bound (bound 'iwae', K = iwae_k).
  c.gaps.vae_enabled = True
  c.gaps.vae_latent_dim = 8
  c.gaps.vae_hidden = (128, 128)
  c.gaps.vae_steps = 10000
  c.gaps.vae_batch_size = 100
  c.gaps.vae_learning_rate = 1e-3
  c.gaps.iwae_k = 5
  # Trained experiments/iwae runs (workdirs <runs_root>/<name>, as in the README's commands).
  c.gaps.runs_root = "runs"
  c.gaps.runs = ("vae-k1-l1-short", "iwae-k5-l1-short", "iwae-k50-l1-short")
  c.gaps.runs_num_examples = 200        # the first test images, in the runs' fixed binarization
  c.gaps.runs_batch_size = 100          # images per call of amortization_gaps (memory)
  c.gaps.convergence_check_steps = 3000  # refit q* of the first run's first batch (0: off)
  return c
