"""Quick end-to-end check (a few minutes on 2 CPU cores): digits, every prior, small budget."""

from experiments.priors.configs import default


def get_config():
  c = default.get_config()
  c.dataset = "digits"
  c.model = "custom"
  c.latent_dims = (8,)
  c.hidden_dims = ((64, 64),)
  c.batch_size = 50
  c.shuffle = True
  c.num_passes = 2
  c.num_epochs = 20.0
  c.log_every_steps = 25
  c.checkpoint_every_epochs = 20.0
  c.num_pseudo_inputs = 50
  c.flow_layers = 2
  c.flow_hidden = (32, 32)
  c.eval.num_examples = 200
  c.eval.batch_size = 100
  c.eval.num_samples = 5000
  c.eval.sample_chunk = 500
  c.surgery.num_samples = 4
  c.surgery.batch_size = 100
  c.surgery.chunk_size = 200
  c.two_d.priors = ("standard", "vamp", "realnvp")
  c.two_d.hidden = (64, 64)
  c.two_d.num_epochs = 20.0
  c.two_d.num_examples = 300
  c.two_d.grid_size = 60
  return c
