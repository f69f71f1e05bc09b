"""Burda et al.'s VAE run, shared by the studies that train or read such runs.

* :func:`default_config`: the settings of a run (Burda et al.'s protocol where it applies);
* :func:`named_config`: the config strings of their MNIST experiments (Table 1) and Rainforth et
  al.'s objectives (``iwae-k50-l1-short``, ``miwae-m8-k8-l1-e3``, ...);
* :func:`train_and_evaluate`: train a VAE or an IWAE, then measure it as Burda et al. (the IWAE
  study's driver; the evaluation study retrains its models with it).

Writes into ``workdir``:
  ``config.json``          the configuration;
  ``metrics.jsonl``        training metrics (and validation bounds at checkpoints);
  ``checkpoints/``         orbax checkpoints (``--resume`` continues from the latest);
  ``results.json``         test ELBO, IWAE bounds, the k=5000 NLL, active units, timings;
  ``test_log_likelihoods.npy``  the per-image k=5000 estimates (runs share the test binarization
                           for a given seed, so two runs can be compared image by image);
  ``samples.png``, ``reconstructions.png``, ``training_curve.png``.

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections
import numpy as np

from dgmjax import diagnostics, evaluation, losses, plotting, training
from dgmjax.models import vae
from experiments.common import config as common
from experiments.common import data, resume as resume_lib, results as results_lib, run

#: Numeric settings, checked before any data is loaded (:func:`experiments.common.config.check_fields`).
FIELDS = {
    "seed": "int>=0",
    "max_train_examples": "int>=0", "num_samples": "int>0", "num_groups": "int>0",
    "beta": "fraction", "batch_size": "int>0", "learning_rate": "float>0", "num_passes": "int>0",
    "num_epochs": "float>=0", "max_consecutive_nonfinite": "int>0", "log_every_steps": "int>0",
    "checkpoint_every_epochs": "float>0", "stop_after_steps": "int>=0",
    "eval.num_samples": "int>0", "eval.sample_chunk": "int>0", "eval.batch_size": "int>0",
    "eval.num_examples": "int>=0", "eval.bound_ks": "ints>0", "eval.active_threshold": "float>=0",
}


# ----------------------------------------------------------------------------- configs


def default_config():
  """The settings of a run (Burda et al.'s protocol where it applies)."""
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
  # training estimator (dgmjax.losses.make_loss)
  c.estimator = "iwae"            # elbo (K-sample ELBO average) | iwae | dreg | miwae | ...
  c.num_samples = 5               # K
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


#: Run names of the config strings; each names the training estimator (``vae``: ``elbo``).
RUN_NAMES = ("vae", "iwae", "dreg", "miwae", "piwae", "piwae_dreg", "ciwae", "stl", "rws",
             "rws_dreg")
GROUPED = ("miwae", "piwae", "piwae_dreg")
#: The estimator each run name trains with (``dgmjax.losses.make_loss``): Burda et al.'s VAE
#: row trains the ``K``-sample ELBO.
ESTIMATOR_OF = {**{name: name for name in RUN_NAMES}, "vae": "elbo"}

FORMS = (f"'<name>[-m<M>][-b<beta>]-k<K>-l<1|2>-<full|short|e<N>>[-ref]' with name in "
         f"{RUN_NAMES}, K >= 1, m<M> (M >= 1) for {GROUPED} only, b<beta> (beta in [0, 1]) for "
         f"ciwae only, N > 0 epochs; e.g. 'iwae-k50-l1-short', 'miwae-m8-k8-l1-e3', "
         f"'ciwae-b0.05-k64-l1-e3', 'vae-k1-l2-full-ref'")


def _error(arg: str, why: str) -> ValueError:
  return common.config_string_error(arg, FORMS, why)


def named_config(arg: str = "iwae-k5-l1-short"):
  """The config of ``<name>[-m<M>|-b<beta>]-k<K>-l<layers>-<budget>[-ref]`` on MNIST.

  ``name`` sets ``config.estimator`` (:data:`ESTIMATOR_OF`); ``m<M>`` (``M`` groups of ``K``)
  for the grouped estimators, ``b<beta>`` for ``ciwae``; ``budget`` is ``full`` (Burda's 3280
  epochs), ``short`` (the first 3 passes: 13 epochs) or ``e<N>`` (the first 3 passes' shape
  scaled to N epochs); ``-ref`` selects the reference code's Adam and rounded rates. Parsed
  strictly: an unknown or malformed part raises ``ValueError`` listing the valid forms.
  """
  parts = arg.split("-")
  ref = parts[-1] == "ref"
  if ref:
    parts = parts[:-1]
  if len(parts) < 4:
    raise _error(arg, "too few parts")
  name, extra, layers, budget = parts[0], parts[1:-2], parts[-2], parts[-1]
  if name not in RUN_NAMES:
    raise _error(arg, f"unknown name {name!r}")
  if layers not in ("l1", "l2"):
    raise _error(arg, f"the number of stochastic layers must be l1 or l2, got {layers!r}")
  m = beta = k = None
  for token in extra:
    if token.startswith("k") and k is None:
      k = common.parse_number(token[1:], int, what="K in k<K>", arg=arg, forms=FORMS, minimum=0)
    elif token.startswith("m") and m is None and name in GROUPED:
      m = common.parse_number(token[1:], int, what="M in m<M>", arg=arg, forms=FORMS, minimum=0)
    elif token.startswith("b") and beta is None and name == "ciwae":
      beta = common.parse_number(token[1:], float, what="beta in b<beta>", arg=arg, forms=FORMS,
                                 minimum=0.0, strict=False)
      if beta > 1.0:
        raise _error(arg, f"beta in b<beta> must be in [0, 1], got {token[1:]!r}")
    else:
      raise _error(arg, f"unexpected {token!r} for {name!r} (a repeated or misplaced part)")
  if k is None:
    raise _error(arg, "the number of samples k<K> is missing")
  if name in GROUPED and m is None:
    raise _error(arg, f"{name!r} needs the number of groups m<M>")
  if name == "ciwae" and beta is None:
    raise _error(arg, "'ciwae' needs b<beta>")
  if budget not in ("full", "short") and not budget.startswith("e"):
    raise _error(arg, f"the budget must be full, short or e<N>, got {budget!r}")
  num_epochs = (common.parse_epochs(budget[1:], arg=arg, forms=FORMS, what="N in e<N>")
                if budget.startswith("e") else 0.0)

  c = default_config()
  c.dataset = "mnist"
  c.estimator = ESTIMATOR_OF[name]
  c.num_samples = k * (m or 1)    # M * K samples in all for the grouped estimators
  c.num_groups = ml_collections.config_dict.placeholder(int)
  c.beta = ml_collections.config_dict.placeholder(float)
  if m is not None:
    c.num_groups = m
  if beta is not None:
    c.beta = beta
  c.model = "burda1" if layers == "l1" else "burda2"
  c.schedule = "burda"
  if budget == "full":
    c.num_passes = 8
    c.num_epochs = 0.0
    c.checkpoint_every_epochs = 9.0
    c.validate_at_checkpoints = True
  elif budget == "short":
    c.num_passes = 3
    c.num_epochs = 0.0
    c.checkpoint_every_epochs = 1.0
  else:  # e<N>
    c.num_passes = 3
    c.num_epochs = num_epochs
    c.checkpoint_every_epochs = 1.0
  c.log_every_steps = 298          # 10 lines per epoch of 2980 steps
  if ref:
    c.optimizer = "burda_adam"
    c.reference_rounding = True
  return c


def prepare_config(config, fields=None):
  """The config checked before anything is loaded or written: the numeric fields
  (``ValueError`` naming the field), the estimator and the schedule. Returns a new config."""
  config = config.copy_and_resolve_references()
  common.check_fields(config, FIELDS if fields is None else fields)
  common.check_choice("estimator", config.estimator,
                      losses.BOUND_ESTIMATORS + losses.SURROGATE_ESTIMATORS)
  if config.get("schedule") is not None:
    common.check_choice("schedule", config.schedule, ("burda", "constant"))
  return config


# ----------------------------------------------------------------------------- the run


def train_and_evaluate(config, workdir: str, *, resume: bool = False,
                       allow_config_change=False) -> dict:
  """Trains the configured model, evaluates it on the test split, writes results and figures.

  All data checks run before any training: an empty split, images outside [0, 1] (the decoder is a
  Bernoulli) or of the wrong size raise ``ValueError``.

  Args:
    config: an ``ml_collections.ConfigDict`` (:func:`default_config`, :func:`named_config`).
    workdir: output directory.
    resume: continue from the latest checkpoint in ``workdir`` (exactly, as if never stopped).
    allow_config_change: on resume, allow training settings that differ from the saved
      ``config.json`` (``True`` or key globs; see :func:`experiments.common.resume.record_config`).

  Returns:
    The results dictionary (also written to ``workdir/results.json``).
  """
  t_start = time.time()
  config = prepare_config(config)  # bad settings fail here, before anything is loaded or written
  os.makedirs(workdir, exist_ok=True)
  # a resumed run continues what was trained: a changed training setting is refused
  resume_lib.record_config(workdir, json.loads(config.to_json_best_effort()), resume=resume,
                           allow_changes=allow_config_change)

  # a bad setting fails here, before anything is loaded
  microbatch = training.resolve_microbatch(config.get("microbatch"), config.batch_size,
                                           config.num_samples, name="config.microbatch",
                                           batch_name="config.batch_size")

  # -- data, validated before anything else
  image_shape = tuple(config.image_shape) if config.get("image_shape") else None
  train_images = data.load_images(config, "train", image_shape)
  image_shape = train_images.shape[1:]
  test_images = data.load_images(config, "test", image_shape)
  if config.get("max_train_examples"):
    train_images = train_images[:config.max_train_examples]
  val_images = None
  if config.get("validate_at_checkpoints"):
    val_images = data.load_images(config, "validation", image_shape)

  # -- model and optimiser
  model = vae.make(config.model, image_shape,
                   latent_dims=config.get("latent_dims"), hidden_dims=config.get("hidden_dims"))
  root = jax.random.key(config.seed)
  init_key, eval_key = jax.random.split(jax.random.fold_in(root, 1))
  data_mean = train_images.mean(axis=0) if config.init_output_bias else None
  params = model.init(init_key, data_mean=data_mean)
  steps_per_epoch = run.steps_per_epoch(train_images.shape[0], config.batch_size,
                                        what=f"training images of {config.dataset}")
  optimizer, schedule, num_steps = run.make_optimizer(config, steps_per_epoch)
  loss_kwargs = {k: config[k] for k in ("num_groups", "beta") if config.get(k) is not None}
  loss_fn = losses.make_loss(model, config.estimator, config.num_samples, **loss_kwargs)
  log_every = max(1, min(config.log_every_steps, num_steps))
  checkpoint_every = run.round_up(int(round(config.checkpoint_every_epochs * steps_per_epoch)),
                                  log_every)

  eval_fn = None
  if val_images is not None:
    val_binary = (data.binarize_fixed(val_images, config.seed) if config.dynamic_binarization
                  else val_images)

    def eval_fn(p, step):
      b = evaluation.bounds(model, p, val_binary,
                            jax.random.fold_in(jax.random.fold_in(root, 3), step),
                            ks=(1, config.num_samples), batch_size=config.eval.batch_size)
      return {f"validation_{k}": v for k, v in b.items()}

  # -- train
  state, summary = run.fit(
      config, loss_fn, params, train_images, workdir, resume=resume, optimizer=optimizer,
      num_steps=num_steps, dynamic_binarization=config.dynamic_binarization,
      shuffle=config.shuffle, checkpoint_every=checkpoint_every, log_every=log_every,
      max_consecutive_nonfinite=config.max_consecutive_nonfinite, learning_rate_fn=schedule,
      eval_every=checkpoint_every if eval_fn else 0, eval_fn=eval_fn, microbatch=microbatch)
  if "stopped_at" in summary:
    return {"stopped_at": summary["stopped_at"]}
  params = state.params

  # -- evaluate
  t_eval = time.time()
  test_x = (data.binarize_fixed(test_images, config.seed) if config.dynamic_binarization
            else test_images)
  if config.eval.get("num_examples"):
    test_x = test_x[:config.eval.num_examples]
  k_bounds, k_nll, k_au, k_fig = jax.random.split(eval_key, 4)
  bounds = evaluation.bounds(model, params, test_x, k_bounds,
                             ks=tuple(config.eval.bound_ks), batch_size=config.eval.batch_size)
  ll = evaluation.log_likelihood(
      model, params, test_x, k_nll, num_samples=config.eval.num_samples,
      sample_chunk=config.eval.sample_chunk, batch_size=config.eval.batch_size,
      progress=run.show_progress(config))
  au = diagnostics.active_units(model, params, test_x, k_au,
                               threshold=config.eval.active_threshold)
  eval_seconds = time.time() - t_eval
  figures = evaluation.write_sample_figures(model, params, test_x, k_fig, workdir)
  figures["training_curve"] = plotting.save_training_curve(
      os.path.join(workdir, "training_curve.png"), os.path.join(workdir, "metrics.jsonl"))

  results = {
      "dataset": config.dataset,
      "model": config.model,
      "num_layers": model.num_layers,
      "estimator": config.estimator,
      "k": config.num_samples,
      **{k: v for k, v in loss_kwargs.items()},
      "optimizer": config.optimizer,
      "schedule": config.schedule,
      "batch_size": config.batch_size,
      "microbatch": microbatch or config.batch_size,
      "epochs": num_steps / steps_per_epoch,
      "steps": num_steps,
      "seed": config.seed,
      "train_examples": int(train_images.shape[0]),
      "test_examples": int(test_x.shape[0]),
      "test_elbo": bounds["elbo"],
      **{f"test_iwae_{k}": bounds[f"iwae_{k}"] for k in config.eval.bound_ks},
      f"test_log_likelihood_{config.eval.num_samples}": float(ll.mean()),
      "test_nll": float(-ll.mean()),
      "test_nll_stderr": results_lib.stderr(ll),
      "eval_num_samples": config.eval.num_samples,
      "active_units": au["active"],
      "active_units_total": int(sum(au["active"])),
      "nonfinite_steps": summary["nonfinite_total"],
      "train_seconds": summary["train_seconds"],
      "resumed_from": summary["resumed_from"],
      "eval_seconds": eval_seconds,
      "total_seconds": time.time() - t_start,
      "figures": {k: os.path.basename(v) for k, v in figures.items()},
  }
  results_lib.write_json(os.path.join(workdir, "results.json"), results)
  np.save(os.path.join(workdir, "test_log_likelihoods.npy"), ll)  # per image, for paired tests
  with open(os.path.join(workdir, "active_unit_variances.json"), "w") as f:
    json.dump(au["variances"], f)
  return results
