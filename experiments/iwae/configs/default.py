"""Defaults shared by every IWAE configuration (Burda et al.'s protocol where it applies)."""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  # data
  c.dataset = "mnist"             # digits | mnist | binarized_mnist | fashion_mnist (dgmjax.data)
  c.data_dir = ""                 # default: DGMJAX_DATA_DIR, then ../shared/data
  c.image_shape = ()              # () = take it from the data; else checked against the data
  c.max_train_examples = 0        # 0 = all
  c.dynamic_binarization = True   # fresh Bernoulli draw of each minibatch (grey-level data)
  c.shuffle = False               # Burda's code visits the training set in order
  # model
  c.model = "burda1"              # burda1 (784-200-200-50) | burda2 (two stochastic layers) | custom
  c.latent_dims = ()              # for model='custom'
  c.hidden_dims = ()              # for model='custom'
  c.init_output_bias = True       # decoder bias = logit(mean training image), as the reference code
  # training estimator (dgmjax.training.make_loss)
  c.estimator = "iwae"            # elbo (K-sample ELBO average) | iwae | dreg | miwae | ...
  c.num_samples = 5               # K
  # deprecated name of `estimator` (one release): when set, it is used as `estimator`, warning
  c.objective = ml_collections.config_dict.placeholder(str)
  # optimisation
  c.seed = 0
  c.batch_size = 20
  c.microbatch = "auto"           # auto (training.auto_microbatch: CPU cache-sized) | none | N
  c.optimizer = "adam"            # adam (b1=0.9, b2=0.999, eps=1e-4) | burda_adam (reference code)
  c.learning_rate = 1e-3
  c.schedule = "burda"            # burda (pass i: 3^i epochs at lr*10^(-i/7)) | constant
  c.num_passes = 8                # burda: 8 passes = 3280 epochs
  c.num_epochs = 0.0              # burda: 0 = sum of 3^i; else passes scaled to this budget
  c.reference_rounding = False    # burda: the reference code's rounded rates
  c.max_consecutive_nonfinite = 10
  # bookkeeping
  c.log_every_steps = 100
  c.checkpoint_every_epochs = 1.0
  c.validate_at_checkpoints = False
  c.progress = ml_collections.config_dict.placeholder(bool)  # None: when stderr is a terminal
  c.stop_after_steps = 0          # tests only: stop as if killed after this many steps
  # evaluation
  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 5000       # k of the test log-likelihood
  c.eval.sample_chunk = 250       # samples per chunk: peak memory ~ batch_size * sample_chunk
  c.eval.batch_size = 20
  c.eval.num_examples = 0         # 0 = the whole test split
  c.eval.bound_ks = (5, 50)       # test IWAE bounds L_k reported besides the ELBO (= L_1)
  c.eval.active_threshold = 1e-2
  return c
