"""The evaluation study on the MNIST models of the Table 1 section (VAE k=1, IWAE k=5, IWAE k=50).

``--config=experiments/evaluation/configs/default.py``

Each model is restored from ``runs_dir/<name>`` (a workdir of ``experiments.iwae`` with that
config string, e.g. ``runs/iwae-k50-l1-short``) when it holds checkpoints; otherwise it is
retrained into ``workdir/models/<name>`` with ``experiments.common.burda`` at the ``retrain``
budget. Then, on ``num_test`` fixed-binarization test images (the binarization of the
``experiments.iwae`` evaluation): the importance-sampled estimate ``L_k`` for each ``k`` of
``is_ks`` (k=5000: Burda et al.'s NLL), JVI when ``dgmjax.objectives.jackknife_bound`` exists,
AIS from ``q(z|x)`` at each ``T`` of ``ais.temps``; on ``bdmc.num_examples`` images simulated
from the model, the BDMC sandwich at each ``T`` of ``bdmc.temps`` beside ``L_5000`` of the same
images. The default budget is sized for an accelerator (or a few CPU hours); ``quick.py`` runs
end to end in under 5 minutes on 2 CPU cores.
"""

import ml_collections

MODELS = ("vae-k1-l1-short", "iwae-k5-l1-short", "iwae-k50-l1-short")


def get_config():
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = "mnist"             # the data the models were trained on (checked on restore)
  c.data_dir = ""                 # default: DGMJAX_DATA_DIR, then ../shared/data
  # the models: experiments.iwae config strings (experiments/iwae/configs/mnist.py)
  c.models = MODELS
  c.runs_dir = "runs"             # restore from runs_dir/<name> when it holds checkpoints
  c.retrain = ml_collections.ConfigDict()
  c.retrain.enabled = True        # retrain a model that is not in runs_dir (else: an error)
  c.retrain.num_epochs = 0.0      # 0 = the config string's budget ("short": 13 epochs)
  c.retrain.max_train_examples = 0   # 0 = all
  c.retrain.model = ""            # "" = the config string's (burda1 / burda2); e.g. "custom"
  c.retrain.latent_dims = ()      # for model="custom"
  c.retrain.hidden_dims = ()
  c.retrain.eval_num_examples = 100   # the retraining run's own evaluation (kept small)
  c.retrain.eval_num_samples = 500
  # importance sampling L_k (evaluation.log_likelihood)
  c.num_test = 500                # test images evaluated (the first of the fixed binarization)
  c.is_ks = (50, 500, 5000)
  c.is_sample_chunk = 250
  c.is_batch_size = 20
  # JVI (dgmjax.objectives.jackknife_bound, if present)
  c.jvi = ml_collections.ConfigDict()
  c.jvi.enabled = True
  c.jvi.num_samples = 5000
  c.jvi.order = 1
  c.jvi.batch_size = 5
  # AIS (dgmjax.inference.ais.ais) on the test images
  c.ais = ml_collections.ConfigDict()
  c.ais.temps = (10, 100, 1000, 10000)
  c.ais.num_chains = 16
  c.ais.init = "q"                # q (the encoder, Wu et al.'s 'recog') | prior
  c.ais.num_leapfrog = 10
  c.ais.step_size = 0.05
  c.ais.target_accept = 0.65
  c.ais.pilot_chains = 0          # 0: adapt within the run; P: exact (pilot-adapted) AIS
  c.ais.batch_size = 50
  # BDMC (dgmjax.inference.ais.bdmc) on data simulated from each model
  c.bdmc = ml_collections.ConfigDict()
  c.bdmc.num_examples = 100
  c.bdmc.temps = (10, 100, 1000, 10000)
  c.bdmc.num_chains = 16
  c.bdmc.pilot_chains = 4         # exact in expectation on both sides
  c.bdmc.batch_size = 50
  # speed: the AIS step beside the k=5000 IS evaluation (from the timings above)
  c.matmul_size = 1024            # the machine's matmul rate: a jitted [n, n] @ [n, n], float32
  c.progress = False
  return c
