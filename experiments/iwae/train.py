"""``train_and_evaluate(config, workdir)``: train a VAE or an IWAE, then measure it as Burda et al.

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
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np

from dgmjax import data, diagnostics, evaluation, plotting, training
from dgmjax.models import vae
from experiments.common import config as common

BURDA_NUM_PASSES = 8

#: Config keys renamed with the bound / estimator vocabulary (old -> new), for one release.
RENAMED = {"objective": "estimator"}

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


def prepare_config(config, fields=None):
  """The config checked and in the current vocabulary, before anything is loaded or written.

  A deprecated ``config.objective`` is moved into ``config.estimator`` and the value ``'vae'``
  becomes ``'elbo'`` (with a ``DeprecationWarning``; :func:`experiments.common.config.resolve_renamed`);
  the numeric fields are checked (``ValueError`` naming the field). Returns a new config.
  """
  config = common.resolve_renamed(config, RENAMED)
  common.check_fields(config, FIELDS if fields is None else fields)
  common.check_choice("estimator", config.estimator,
                      training.BOUND_ESTIMATORS + training.SURROGATE_ESTIMATORS)
  if config.get("schedule") is not None:
    common.check_choice("schedule", config.schedule, ("burda", "constant"))
  return config


# ----------------------------------------------------------------------------- data


def default_data_dir() -> str | None:
  """``DGMJAX_DATA_DIR`` if set, else ``../shared/data`` next to the repository if it exists."""
  env = os.environ.get("DGMJAX_DATA_DIR")
  if env:
    return env
  staged = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                        "data"))
  return staged if os.path.isdir(staged) else None


def load_images(config, split: str, image_shape=None) -> np.ndarray:
  """Loads and validates one split: float32 ``[N, H, W, C]`` in [0, 1] (raises ValueError)."""
  name = f"{config.dataset}/{split} image"
  ds = data.load(config.dataset, split, data_dir=config.get("data_dir") or default_data_dir())
  images = np.asarray(ds["image"])
  if images.ndim == 3:  # [N, H, W] -> [N, H, W, 1]
    images = images[..., None]
  return data.check_images(images, name=name, image_shape=image_shape,
                           binary_likelihood=True)


def binarize_fixed(images: np.ndarray, seed: int) -> np.ndarray:
  """One stochastic binarization of an evaluation split (a fixed draw, as the reference code)."""
  key = jax.random.fold_in(jax.random.key(seed), 0x5EED)
  return np.asarray(data.binarize(key, jax.numpy.asarray(images)))


# ----------------------------------------------------------------------------- optimiser


def make_optimizer(config, steps_per_epoch: int):
  """``(optimizer, schedule, num_steps)`` from the config."""
  if config.schedule == "burda":
    schedule = training.burda_schedule(
        steps_per_epoch, config.num_passes, num_epochs=config.get("num_epochs") or None,
        base_learning_rate=config.learning_rate, reference_rounding=config.reference_rounding)
    num_steps = training.burda_num_steps(steps_per_epoch, config.num_passes,
                                         num_epochs=config.get("num_epochs") or None)
  elif config.schedule == "constant":
    if not config.get("num_epochs"):
      raise ValueError("schedule='constant' needs num_epochs")
    schedule = lambda step: config.learning_rate
    num_steps = int(round(config.num_epochs * steps_per_epoch))
  else:
    raise ValueError(f"schedule must be 'burda' or 'constant', got {config.schedule!r}")
  return training.make_optimizer(config.optimizer, schedule), schedule, num_steps


# ----------------------------------------------------------------------------- main entry


def _show_progress(config) -> bool:
  p = config.get("progress")
  return sys.stderr.isatty() if p is None else bool(p)


def _round_up(n: int, multiple: int) -> int:
  return max(multiple, int(math.ceil(n / multiple)) * multiple)


def train_and_evaluate(config, workdir: str, *, resume: bool = False,
                       allow_config_change=False) -> dict:
  """Trains the configured model, evaluates it on the test split, writes results and figures.

  All data checks run before any training: an empty split, images outside [0, 1] (the decoder is a
  Bernoulli) or of the wrong size raise ``ValueError``.

  Args:
    config: an ``ml_collections.ConfigDict`` (see ``configs/``).
    workdir: output directory.
    resume: continue from the latest checkpoint in ``workdir`` (exactly, as if never stopped).
    allow_config_change: on resume, allow training settings that differ from the saved
      ``config.json`` (``True`` or key globs; see :func:`dgmjax.training.record_config`).

  Returns:
    The results dictionary (also written to ``workdir/results.json``).
  """
  t_start = time.time()
  config = prepare_config(config)  # bad settings fail here, before anything is loaded or written
  os.makedirs(workdir, exist_ok=True)
  # a resumed run continues what was trained: a changed training setting is refused (a run saved
  # with the old key `objective` compares equal to the same setting as `estimator`)
  common.record_config(workdir, json.loads(config.to_json_best_effort()), resume=resume,
                       allow_changes=allow_config_change, renamed=RENAMED)

  # a bad setting fails here, before anything is loaded
  microbatch = training.resolve_microbatch(config.get("microbatch"), config.batch_size,
                                           config.num_samples, name="config.microbatch",
                                           batch_name="config.batch_size")

  # -- data, validated before anything else
  image_shape = tuple(config.image_shape) if config.get("image_shape") else None
  train_images = load_images(config, "train", image_shape)
  image_shape = train_images.shape[1:]
  test_images = load_images(config, "test", image_shape)
  if config.get("max_train_examples"):
    train_images = train_images[:config.max_train_examples]
  val_images = None
  if config.get("validate_at_checkpoints"):
    val_images = load_images(config, "validation", image_shape)

  # -- model and optimiser
  model = vae.make(config.model, image_shape,
                   latent_dims=config.get("latent_dims"), hidden_dims=config.get("hidden_dims"))
  root = jax.random.key(config.seed)
  init_key, eval_key = jax.random.split(jax.random.fold_in(root, 1))
  data_mean = train_images.mean(axis=0) if config.init_output_bias else None
  params = model.init(init_key, data_mean=data_mean)
  steps_per_epoch = train_images.shape[0] // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size={config.batch_size} exceeds the {train_images.shape[0]} "
                     f"training images of {config.dataset}")
  optimizer, schedule, num_steps = make_optimizer(config, steps_per_epoch)
  loss_kwargs = {k: config[k] for k in ("num_groups", "beta") if config.get(k) is not None}
  loss_fn = training.make_loss(model, config.estimator, config.num_samples, **loss_kwargs)
  log_every = max(1, min(config.log_every_steps, num_steps))
  checkpoint_every = _round_up(int(round(config.checkpoint_every_epochs * steps_per_epoch)),
                               log_every)

  eval_fn = None
  if val_images is not None:
    val_binary = (binarize_fixed(val_images, config.seed) if config.dynamic_binarization
                  else val_images)

    def eval_fn(p, step):
      b = evaluation.bounds(model, p, val_binary,
                            jax.random.fold_in(jax.random.fold_in(root, 3), step),
                            ks=(1, config.num_samples), batch_size=config.eval.batch_size)
      return {f"validation_{k}": v for k, v in b.items()}

  # -- train
  state, summary = training.fit(
      loss_fn, params, train_images, optimizer=optimizer, num_steps=num_steps,
      batch_size=config.batch_size, seed=config.seed, workdir=workdir,
      dynamic_binarization=config.dynamic_binarization, shuffle=config.shuffle,
      checkpoint_every=checkpoint_every, log_every=log_every,
      max_consecutive_nonfinite=config.max_consecutive_nonfinite, resume=resume,
      progress=_show_progress(config), learning_rate_fn=schedule,
      eval_every=checkpoint_every if eval_fn else 0, eval_fn=eval_fn,
      stop_after=config.get("stop_after_steps") or None, microbatch=microbatch)
  if "stopped_at" in summary:
    return {"stopped_at": summary["stopped_at"]}
  params = state.params

  # -- evaluate
  t_eval = time.time()
  test_x = (binarize_fixed(test_images, config.seed) if config.dynamic_binarization
            else test_images)
  if config.eval.get("num_examples"):
    test_x = test_x[:config.eval.num_examples]
  k_bounds, k_nll, k_au, k_fig = jax.random.split(eval_key, 4)
  bounds = evaluation.bounds(model, params, test_x, k_bounds,
                             ks=tuple(config.eval.bound_ks), batch_size=config.eval.batch_size)
  ll = evaluation.log_likelihood(
      model, params, test_x, k_nll, num_samples=config.eval.num_samples,
      sample_chunk=config.eval.sample_chunk, batch_size=config.eval.batch_size,
      progress=_show_progress(config))
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
      "test_nll_stderr": float(ll.std(ddof=1) / math.sqrt(ll.size)) if ll.size > 1 else 0.0,
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
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  np.save(os.path.join(workdir, "test_log_likelihoods.npy"), ll)  # per image, for paired tests
  with open(os.path.join(workdir, "active_unit_variances.json"), "w") as f:
    json.dump(au["variances"], f)
  return results


def format_results(r: dict) -> str:
  """A short human-readable summary of :func:`train_and_evaluate`'s results."""
  ks = [k for k in r if k.startswith("test_iwae_")]
  lines = [
      f"{r['dataset']}: {common.estimator_of(r).upper()} k={r['k']}, {r['num_layers']} stochastic "
      f"layer(s), {r['epochs']:g} epochs ({r['steps']} steps, {r['train_seconds']:.0f}s)",
      f"  test ELBO            {r['test_elbo']:.3f}",
      *[f"  test IWAE L_{k[len('test_iwae_'):]:<12s} {r[k]:.3f}" for k in ks],
      f"  test NLL (k={r['eval_num_samples']})   {r['test_nll']:.3f} +- {r['test_nll_stderr']:.3f} "
      f"on {r['test_examples']} images",
      f"  active units         {'+'.join(map(str, r['active_units']))}",
  ]
  return "\n".join(lines)
