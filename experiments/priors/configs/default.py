"""Defaults of the prior study: Burda et al.'s one-layer VAE with each prior at equal budget."""

import ml_collections

from experiments.common import burda

VARIANTS = ("standard", "mog", "vamp", "realnvp", "maf", "iaf")


def get_config():
  c = burda.default_config()   # data, optimiser, schedule and k=5000 evaluation fields
  c.estimator = "elbo"            # elbo (K-sample ELBO average) | iwae (dgmjax.losses.make_loss)
  c.num_samples = 1
  c.schedule = "burda"
  c.num_passes = 3
  c.num_epochs = 3.0
  c.checkpoint_every_epochs = 1.0
  # variants: prior names of dgmjax.priors, and 'iaf' (standard prior, IAF posterior)
  c.variants = VARIANTS
  c.num_components = 10           # MoG
  c.num_pseudo_inputs = 500       # VampPrior (Tomczak & Welling use 500 on MNIST)
  c.flow_layers = 4               # RealNVP / MAF prior, IAF posterior
  c.flow_hidden = (64, 64)
  # evaluation
  c.eval.random_subset = True     # eval on a seeded random subset of num_examples test images
  c.eval.bound_ks = (5,)
  c.surgery = ml_collections.ConfigDict()
  c.surgery.num_samples = 1       # z draws per test image
  c.surgery.batch_size = 50
  c.surgery.chunk_size = 250
  # 2-D figure: a 2-latent VAE per prior, aggregated posterior beside the prior
  c.two_d = ml_collections.ConfigDict()
  c.two_d.enabled = True
  c.two_d.priors = ("standard", "mog", "vamp", "realnvp")
  c.two_d.dataset = ""            # "" = the study's dataset
  c.two_d.hidden = (200, 200)
  c.two_d.num_epochs = 3.0
  c.two_d.num_examples = 1000     # data points of q_agg (and the scatter)
  c.two_d.grid_size = 80
  return c
