"""Posterior collapse with autoregressive decoders, and its remedies, on fixed-binarization MNIST.

Each run of ``config.selected`` trains a :class:`dgmjax.models.pixel_vae.PixelVAE` (same encoder,
prior, data and budget) with the loss of :class:`dgmjax.losses.KLControlled`. During
training, ``config.diagnostics_per_epoch`` times an epoch, the collapse diagnostics on held-out
test images enter the metrics log: total KL, KL per latent dimension, active units (Burda et al.'s
covariance test), and the mutual information ``I_q[x; z]`` with the marginal KL from ELBO surgery.
At the end: the k-sample NLL (paired: the same random test images and keys for every run), ELBO,
KL, AU, MI; samples and reconstructions per run; and for the study, figures of KL / AU / MI
against the epoch and of the final KL per dimension, ``summary.json`` and a table.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import optax

from dgmjax import diagnostics, evaluation, losses, models, plotting, training
from dgmjax.models import pixel_vae
from experiments.common import config as common
from experiments.common import data as data_lib
from experiments.common import figures as figures_lib
from experiments.common import resume as resume_lib
from experiments.common import results as results_lib
from experiments.common import run as run_lib

#: Numeric settings, checked before any data is loaded.
FIELDS = {
    "seed": "int>=0",
    "max_train_examples": "int>=0", "latent_dim": "int>0", "hidden": "ints>0",
    "cond_channels": "int>0", "num_samples": "int>0", "batch_size": "int>0",
    "learning_rate": "float>0", "num_epochs": "float>0", "warmup_fraction": "fraction",
    "num_cycles": "int>0", "cycle_ramp": "fraction", "log_every_steps": "int>0",
    "diagnostics_per_epoch": "int>0", "stop_after_steps": "int>=0",
    "runs.*.free_bits": "float>=0", "runs.*.pixelcnn.*": "int>0",
    "eval.num_examples": "int>=0", "eval.num_samples": "int>0", "eval.sample_chunk": "int>0",
    "eval.batch_size": "int>0", "eval.diagnostics_examples": "int>=0",
    "eval.num_model_samples": "int>0",
}

# Published binarized-MNIST NLLs with PixelCNN-type decoders, for orientation (different, much
# larger models and budgets): Gulrajani et al. 2017 (PixelVAE, Table 1) 79.02 (bound: <= 79.66);
# Chen et al. 2017 (VLAE) 79.03; van den Oord et al. 2016 (PixelCNN alone, dynamic binarization
# of a different protocol) 81.30.
PUBLISHED = {"PixelVAE (Gulrajani et al. 2017)": 79.02, "VLAE (Chen et al. 2017)": 79.03}

DIAGNOSTIC_KEYS = ("diag_kl", "diag_au", "diag_mi", "diag_marginal_kl", "diag_dims_above_0.1")


def _load(config, split: str) -> np.ndarray:
  """A validated split (:func:`experiments.common.data.load_images`) that must be binary."""
  x = data_lib.load_images(config, split)
  if not np.all((x == 0) | (x == 1)):
    raise ValueError(f"{config.dataset}/{split}: the posterior-collapse study needs fixed-"
                     "binarization images (e.g. binarized_mnist); got grey levels")
  return x


def make_model(config, run) -> pixel_vae.PixelVAE:
  return pixel_vae.make(run.decoder, image_shape=(28, 28, 1), latent_dim=config.latent_dim,
                        hidden=tuple(config.hidden), cond_channels=config.cond_channels,
                        **dict(run.pixelcnn))


def make_schedule(config, run, num_steps: int):
  if run.kl_schedule == "linear":
    return losses.kl_weight_schedule(
        "linear", warmup_steps=max(1, int(round(config.warmup_fraction * num_steps))))
  if run.kl_schedule == "cyclical":
    return losses.kl_weight_schedule(
        "cyclical", cycle_steps=max(1, num_steps // config.num_cycles),
        ramp_fraction=config.cycle_ramp)
  return losses.kl_weight_schedule(run.kl_schedule)


def collapse_diagnostics(model, params, images, key) -> dict:
  """KL per dimension, active units and ELBO surgery (MI, marginal KL) over ``images``."""
  kl = diagnostics.kl_per_dimension(model, params, images)
  au = diagnostics.active_units(model, params, images, key)["active"][0]
  s = diagnostics.elbo_surgery(model, params, images, jax.random.fold_in(key, 1), num_samples=1,
                               batch_size=250, chunk_size=500)
  return {"kl_per_dimension": kl.tolist(), "kl": float(kl.sum()), "active_units": int(au),
          "dims_above_0.1": int((kl > 0.1).sum()), "mutual_information": s.mutual_information,
          "marginal_kl": s.marginal_kl, "surgery_average_kl": s.average_kl,
          "log_num_examples": s.log_num_examples}


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]


def run_one(name: str, config, train_x, test_x, diag_x, workdir: str, resume: bool) -> dict:
  """Trains and evaluates one run in ``workdir/name``; returns its row."""
  run = config.runs[name]
  d = os.path.join(workdir, name)
  os.makedirs(d, exist_ok=True)
  model = make_model(config, run)
  steps_per_epoch = run_lib.steps_per_epoch(train_x.shape[0], config.batch_size)
  num_steps = run_lib.epochs_to_steps(config.num_epochs, steps_per_epoch)
  log_every = max(1, min(config.log_every_steps, num_steps))
  eval_every = max(log_every, (steps_per_epoch // max(1, config.diagnostics_per_epoch))
                   // log_every * log_every)
  checkpoint_every = eval_every * max(1, config.diagnostics_per_epoch)
  beta = make_schedule(config, run, num_steps)
  loss_fn = losses.make_loss(model, losses.KLControlled(
      config.bound, kl_weight=beta, free_bits=run.free_bits or None), config.num_samples)
  opt = optax.adam(config.learning_rate)
  step = training.make_train_step(loss_fn, opt, seed=config.seed)
  diag_key = jax.random.fold_in(jax.random.key(config.seed), 11)
  kl_log = os.path.join(d, "kl_per_dimension.jsonl")
  if not resume and os.path.exists(kl_log):
    os.remove(kl_log)

  def eval_fn(params, done):
    r = collapse_diagnostics(model, params, diag_x, diag_key)
    with open(kl_log, "a") as f:
      f.write(json.dumps({"step": done, "epoch": done / steps_per_epoch,
                          "kl_per_dimension": r["kl_per_dimension"]}) + "\n")
    return {"diag_kl": r["kl"], "diag_au": r["active_units"], "diag_mi": r["mutual_information"],
            "diag_marginal_kl": r["marginal_kl"], "diag_dims_above_0.1": r["dims_above_0.1"],
            "beta_now": float(beta(done - 1))}

  t0 = time.time()
  state, summary = run_lib.fit(
      config, loss_fn, model.init(jax.random.key(config.seed)), train_x, d, resume=resume,
      optimizer=opt, num_steps=num_steps, shuffle=True, checkpoint_every=checkpoint_every,
      log_every=log_every, train_step=step, eval_every=eval_every, eval_fn=eval_fn)
  if "stopped_at" in summary:
    return {"stopped_at": summary["stopped_at"]}
  train_seconds = time.time() - t0
  params = state.params

  keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 7), 4)
  t1 = time.time()
  ll = evaluation.log_likelihood(model, params, test_x, keys[0],
                                 num_samples=config.eval.num_samples,
                                 sample_chunk=config.eval.sample_chunk,
                                 batch_size=config.eval.batch_size,
                                 progress=run_lib.show_progress(config))
  elbo = _analytic_elbo(model, params, test_x, keys[1], config.eval.batch_size)
  final = collapse_diagnostics(model, params, diag_x, diag_key)
  eval_seconds = time.time() - t1
  samples = np.asarray(jax.jit(lambda p, k: model_samples(model, p, k,
                                                         config.eval.num_model_samples))(
                                                             params, keys[2]))
  shown = test_x[np.linspace(0, len(test_x) - 1, min(16, len(test_x))).astype(int)]  # all classes
  recon = np.asarray(jax.jit(lambda p, x, k: reconstructions(model, p, x, k))(params, shown,
                                                                              keys[3]))
  figs = {
      "samples": os.path.basename(plotting.save_image_grid(
          os.path.join(d, "samples.png"), samples, title=f"{name}: samples x ~ p(x|z), z ~ p(z)")),
      "reconstructions": os.path.basename(plotting.save_reconstructions(
          os.path.join(d, "reconstructions.png"), shown, recon)),
  }
  rf = model.receptive_field((14, 14)) if run.decoder == "pixelcnn" else None
  row = {
      "run": name, "decoder": run.decoder,
      "pixelcnn": dict(run.pixelcnn) if run.decoder == "pixelcnn" else None,
      "receptive_field_pixels": int(rf.sum()) if rf is not None else 0,
      "receptive_field_rows_above": int(14 - np.nonzero(rf.any(1))[0].min()) if rf is not None
                                    else 0,
      "kl_schedule": run.kl_schedule, "free_bits": run.free_bits,
      "bound": config.bound, "k_train": config.num_samples,
      "num_params": int(sum(a.size for a in jax.tree.leaves(params))),
      "epochs": summary["steps"] / summary["steps_per_epoch"], "steps": summary["steps"],
      "train_examples": int(train_x.shape[0]), "test_examples": int(test_x.shape[0]),
      f"test_nll_k{config.eval.num_samples}": float(-ll.mean()),
      "test_nll": float(-ll.mean()), "test_nll_stderr": results_lib.stderr(ll),
      "test_elbo": elbo["elbo"], "test_reconstruction": elbo["log_px_given_z"],
      "test_kl": elbo["kl"], "eval_num_samples": config.eval.num_samples,
      "diagnostics_examples": int(diag_x.shape[0]),
      "kl": final["kl"], "active_units": final["active_units"],
      "dims_above_0.1": final["dims_above_0.1"], "mutual_information": final["mutual_information"],
      "marginal_kl": final["marginal_kl"], "log_num_examples": final["log_num_examples"],
      "kl_per_dimension": final["kl_per_dimension"],
      "nonfinite_steps": summary["nonfinite_total"], "train_seconds": train_seconds,
      "eval_seconds": eval_seconds, "figures": figs,
  }
  with open(os.path.join(d, "results.json"), "w") as f:
    json.dump(row, f, indent=2)
  return row


def model_samples(model, params, key, num: int):
  """``num`` binary draws of ``p(x)``: ``z ~ p(z)``, then ``x ~ p(x|z)``.

  :func:`dgmjax.models.sample_x` with the same keys, except that the MLP decoder's images are
  Bernoulli draws rather than means (the PixelCNN's are draws either way), so every run's samples
  are binary images like the data.
  """
  k_z, k_x = jax.random.split(key)
  return model.decode_sample(params, k_x, model.sample_prior(params, k_z, num), binary=True)


def reconstructions(model, params, x, key):
  """A draw of ``p(x | z)`` at one ``z ~ q(z|x)`` per image (``z`` from the first half of ``key``,
  the decoder's draw from the second)."""
  k_z, k_x = jax.random.split(key)
  return model.decode(params, model.sample_q(params, x, k_z), k_x)


def _analytic_elbo(model, params, images, key, batch_size: int) -> dict:
  """Test ELBO with the analytic KL, split into ``E_q log p(x|z)`` (one draw) and KL: nats."""

  @jax.jit
  def fn(p, x, k):
    d = models.draws(model, p, x, jax.random.split(k, 1))
    kl = model.kl(p, x).sum(-1)
    return d.log_likelihood[0], kl

  lls, kls = [], []
  for i in range(0, images.shape[0], batch_size):
    ll, kl = fn(params, images[i:i + batch_size], jax.random.fold_in(key, i))
    lls.append(np.asarray(ll, np.float64))
    kls.append(np.asarray(kl, np.float64))
  ll, kl = np.concatenate(lls), np.concatenate(kls)
  return {"elbo": float(np.mean(ll - kl)), "log_px_given_z": float(ll.mean()),
          "kl": float(kl.mean())}


# ----------------------------------------------------------------------------- figures


def kl_curves_figure(workdir: str, names) -> str:
  """KL, active units and MI on the diagnostics images against the epoch, one line per run."""
  plt = figures_lib.pyplot()
  fig, axes = plt.subplots(1, 4, figsize=(18, 4))
  for i, name in enumerate(names):
    rows = [r for r in _read_jsonl(os.path.join(workdir, name, "metrics.jsonl")) if "diag_kl" in r]
    train = [r for r in _read_jsonl(os.path.join(workdir, name, "metrics.jsonl")) if "beta" in r]
    if not rows:
      continue
    ep = [r["epoch"] for r in rows]
    c = f"C{i}"
    axes[0].plot(ep, [r["diag_kl"] for r in rows], "o-", color=c, label=name)
    axes[1].plot(ep, [r["diag_dims_above_0.1"] for r in rows], "o-", color=c, label=name)
    axes[1].plot(ep, [r["diag_au"] for r in rows], ":", color=c)
    axes[2].plot(ep, [r["diag_mi"] for r in rows], "o-", color=c, label=name)
    axes[3].plot([r["epoch"] for r in train], [r["beta"] for r in train], "-", color=c, label=name)
  axes[0].set_ylabel("KL(q(z|x) || p(z)) (nats)")
  axes[1].set_ylabel("dims with KL > 0.1 nat (o-); Burda AU (:)")
  axes[2].set_ylabel("I_q[x; z] (nats, ELBO surgery)")
  axes[3].set_ylabel("KL weight beta (training)")
  for ax in axes:
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
  axes[0].set_ylim(bottom=0)
  axes[0].legend(fontsize=8)
  fig.suptitle("Collapse diagnostics on held-out test images")
  path = os.path.join(workdir, "kl_per_epoch.png")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


def kl_dims_figure(workdir: str, rows: dict) -> str:
  """Final KL per latent dimension (sorted, largest first), one line per run."""
  plt = figures_lib.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4))
  for i, (name, r) in enumerate(rows.items()):
    kl = np.sort(np.asarray(r["kl_per_dimension"]))[::-1]
    ax.plot(np.arange(1, kl.size + 1), kl, "o-", ms=3, color=f"C{i}", label=name)
  fb = [r["free_bits"] for r in rows.values() if r["free_bits"]]
  if fb:
    ax.axhline(fb[0], color="k", ls=":", lw=1, label=f"free bits lambda = {fb[0]}")
  ax.set_yscale("symlog", linthresh=1e-2)
  ax.set_xlabel("latent dimension (sorted)")
  ax.set_ylabel("KL per dimension (nats)")
  ax.grid(alpha=0.3)
  ax.legend()
  path = os.path.join(workdir, "kl_per_dimension.png")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


def samples_figure(workdir: str, names) -> str:
  """One row of model samples per run."""
  plt = figures_lib.pyplot()
  fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.3 * len(names) + 0.3), squeeze=False)
  for ax, name in zip(axes[:, 0], names):
    path = os.path.join(workdir, name, "samples.png")
    ax.axis("off")
    if os.path.exists(path):
      ax.imshow(plt.imread(path))
  path = os.path.join(workdir, "samples.png")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- study


def train_and_evaluate(config, workdir: str, resume: bool = False,
                       allow_config_change=False) -> dict:
  """Runs ``config.selected`` (resuming each from its checkpoints if ``resume``) and writes the
  study's ``summary.json`` and figures.

  Settings are checked first (``ValueError`` naming the field), before any data is loaded.
  """
  common.check_fields(config, FIELDS)
  common.check_choice("bound", config.bound, losses.KL_BOUNDS)
  for name in config.selected:
    if name not in config.runs:
      raise ValueError(f"unknown run {name!r}; runs: {sorted(config.runs)}")
  os.makedirs(workdir, exist_ok=True)
  train_x = data_lib.random_subset(_load(config, "train"), config.max_train_examples, config.seed)
  test_all = _load(config, "test")
  test_x = data_lib.random_subset(test_all, config.eval.num_examples, config.seed)
  diag_x = data_lib.random_subset(test_all, config.eval.diagnostics_examples, config.seed + 1)
  # a resumed run continues what was trained: a changed training setting is refused
  resume_lib.record_config(workdir, json.loads(config.to_json_best_effort()), resume=resume,
                           allow_changes=allow_config_change)
  rows = {}
  for name in config.selected:
    row = run_one(name, config, train_x, test_x, diag_x, workdir, resume)
    if "stopped_at" in row:
      return {"stopped_at": row["stopped_at"], "run": name}
    rows[name] = row
  # runs of this workdir from earlier invocations join the table
  for name in sorted(os.listdir(workdir)):
    p = os.path.join(workdir, name, "results.json")
    if name not in rows and os.path.exists(p):
      with open(p) as f:
        rows[name] = json.load(f)
  names = list(rows)
  figures = {"kl_per_epoch": os.path.basename(kl_curves_figure(workdir, names)),
             "kl_per_dimension": os.path.basename(kl_dims_figure(workdir, rows)),
             "samples": os.path.basename(samples_figure(workdir, names))}
  out = {"dataset": config.dataset, "runs": rows, "figures": figures, "published_nll": PUBLISHED}
  results_lib.write_json(os.path.join(workdir, "summary.json"), out)
  return out


def format_table(out: dict) -> str:
  rows = out["runs"]
  k = next(iter(rows.values()))["eval_num_samples"] if rows else 0
  lines = [f"{'run':15s} {'decoder':26s} {'KL sched.':10s} {'free bits':>9s} "
           f"{'NLL(k=' + str(k) + ')':>15s} {'-ELBO':>8s} {'KL':>7s} {'AU':>4s} {'MI':>6s} "
           f"{'marg.KL':>8s}"]
  for name, r in rows.items():
    dec = ("MLP" if r["decoder"] == "mlp" else
           f"PixelCNN {r['pixelcnn']['num_layers']}L, RF {r['receptive_field_pixels']} px")
    lines.append(f"{name:15s} {dec:26s} {r['kl_schedule']:10s} {r['free_bits'] or 0:9.2f} "
                 f"{r['test_nll']:9.2f}+-{r['test_nll_stderr']:4.2f} {-r['test_elbo']:8.2f} "
                 f"{r['kl']:7.2f} {r['active_units']:4d} {r['mutual_information']:6.2f} "
                 f"{r['marginal_kl']:8.2f}")
  return "\n".join(lines)
