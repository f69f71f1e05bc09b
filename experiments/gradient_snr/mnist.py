"""Gradient SNR of an MNIST VAE / IWAE (Burda et al.'s one-layer model) at points of training.

For each checkpoint (or the initialisation) and each ``K``, draws ``N`` independent gradients of
the minibatch loss of every estimator (IWAE, DReG, STL, ...) with
:func:`dgmjax.diagnostics.gradient_moments`, and summarises the SNR of the encoder (``phi``: the
``encoders_*`` networks) and of the decoder (``theta``: ``decoder`` and ``priors_*``). As on the
toy model, the IWAE encoder's signal is also measured with DReG's mean as a control variate, and
every SNR is reported both as the mean per-parameter ``|mean| / std`` and as the debiased
root-mean-square SNR (see :class:`dgmjax.diagnostics.GroupSNR`).

Checkpoints are read, never written.

References:
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018, Section 6.
  Tucker et al., Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, ICLR 2019.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import ml_collections
import numpy as np

from dgmjax import diagnostics, losses, training
from dgmjax.models import vae
from experiments.common import data as data_lib
from experiments.common import figures as figures_lib
from experiments.common import results as results_lib


def is_encoder(path: str) -> bool:
  return path.startswith("encoders")


def groups() -> dict:
  """``phi``: the inference networks; ``theta``: the generative networks (Flax VAE params)."""
  return {
      "phi": lambda t: {k: v for k, v in t["params"].items() if is_encoder(k)},
      "theta": lambda t: {k: v for k, v in t["params"].items() if not is_encoder(k)},
  }


def load_point(run_dir: str, step, model: vae.VAE, data_mean: np.ndarray, seed: int):
  """Parameters of ``run_dir`` at checkpoint ``step`` (``'latest'``), or the initialisation
  of ``train_and_evaluate`` for ``step = 0`` (same seed, same output bias). Read-only
  (:func:`dgmjax.training.restore`, checked against the model's parameter shapes)."""
  init_key, _ = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1))
  if step == 0:
    return model.init(init_key, data_mean=data_mean), 0
  like = jax.eval_shape(lambda k: model.init(k, data_mean=data_mean), init_key)
  params, _, step = training.restore(run_dir, like=like,
                                     step=step if step == "latest" else int(step))
  return params, int(step)


def _summary(s: diagnostics.GroupSNR) -> dict:
  return {"mean_snr": float(s.mean_snr), "rms_snr": float(s.rms_snr),
          "rms_snr_debiased": float(s.rms_snr_debiased), "norm_snr": float(s.norm_snr),
          "total_variance": float(s.total_variance)}


def measure(config, workdir: str, *, resume: bool = False) -> dict:
  """Runs the MNIST SNR study of ``config.mnist``; writes ``mnist_snr.json`` and
  ``mnist_snr_vs_k.png`` into ``workdir`` and returns the results.

  Each point of training is saved as ``parts/mnist_point_<i>.json`` when measured; with
  ``resume`` the saved points are reused (``experiments.gradient_snr.run`` checks first that the
  settings are those of the saved ``config.json``).
  """

  mc = config.mnist
  os.makedirs(workdir, exist_ok=True)
  if not mc.runs_dir:
    raise ValueError("config.mnist.runs_dir is empty: the directory holding the training runs "
                     "(workdirs of experiments.iwae) named in config.mnist.points")
  points = [{"label": label, "run_dir": os.path.join(mc.runs_dir, run), "step": step}
            for label, run, step in mc.points]
  if not points:
    raise ValueError("config.mnist.points is empty: name (label, run, step) triples")
  with open(os.path.join(points[0]["run_dir"], "config.json")) as fh:
    run_cfg = json.load(fh)
  data_cfg = ml_collections.ConfigDict({"dataset": run_cfg["dataset"],
                                        "data_dir": run_cfg.get("data_dir", "")})
  train_images = data_lib.load_images(data_cfg, "train")
  if run_cfg.get("max_train_examples"):
    train_images = train_images[:run_cfg["max_train_examples"]]
  steps_per_epoch = train_images.shape[0] // int(run_cfg["batch_size"])
  model = vae.make(run_cfg["model"], train_images.shape[1:],
                   latent_dims=run_cfg.get("latent_dims") or None,
                   hidden_dims=run_cfg.get("hidden_dims") or None)
  data_mean = train_images.mean(axis=0)
  test = data_lib.load_images(data_cfg, "test")
  x = data_lib.binarize_fixed(test[:int(mc.batch_size)], int(config.seed))
  ks = [int(k) for k in mc.num_samples]
  names = list(mc.estimators)
  n = int(mc.num_draws)
  key = jax.random.key(int(config.seed))
  results = {"points": [], "num_samples": ks, "num_draws": n, "batch_size": int(mc.batch_size),
             "estimators": names, "noise_floor": 1.0 / math.sqrt(n)}
  t_start = time.perf_counter()
  joints = {}  # one loss object per K, reused for every point: compiled once per K
  for k in ks:
    loss_fns = {}
    for name in names:
      f = losses.make_loss(model, name, k)
      loss_fns[name] = (lambda f: lambda p, kk: f(p, x, kk, 0)[0])(f)
    joints[k] = diagnostics.joint_loss(loss_fns, common_random_numbers=False)

  def measure_point(pi, point):
    params, step = load_point(point["run_dir"], point["step"], model, data_mean,
                              int(run_cfg.get("seed", 0)))
    rows = {name: {"phi": [], "theta": []} for name in names}
    rows["iwae_cv"] = {"phi": []}
    for ki, k in enumerate(ks):
      chunk = max(1, int(config.chunk_elements) // (k * x.shape[0] * 784 * len(names)))
      moments = diagnostics.gradient_moments(
          joints[k], {name: params for name in names},
          jax.random.fold_in(jax.random.fold_in(key, pi), ki), n, chunk_size=min(chunk, n))
      for name in names:
        r = diagnostics.snr_from_moments(moments.select(name), groups=groups())
        for g in ("phi", "theta"):
          rows[name][g].append(_summary(r.groups[g]))
      if "iwae" in names and "dreg" in names:
        r = diagnostics.snr_from_moments(moments.select("iwae"), groups=groups(),
                                         signal=moments.select("dreg").mean)
        rows["iwae_cv"]["phi"].append(_summary(r.groups["phi"]))
    variance_vs_reparam = {}
    for name in names:
      if name != "iwae" and "iwae" in names:
        variance_vs_reparam[name] = [
            row["total_variance"] / ref["total_variance"]
            for row, ref in zip(rows[name]["phi"], rows["iwae"]["phi"])]
    slopes = {}
    for name, by_group in rows.items():
      for g, vals in by_group.items():
        for field in ("mean_snr", "rms_snr_debiased"):
          try:
            slopes[f"{name}_{g}_{field}"] = diagnostics.fit_power_law(
                ks, [v[field] for v in vals])[0]
          except ValueError:
            slopes[f"{name}_{g}_{field}"] = None
    entry = {"label": point["label"], "run_dir": point["run_dir"], "step": step,
             "epoch": step / steps_per_epoch, "curves": rows,
             "phi_variance_over_iwae": variance_vs_reparam, "slopes": slopes}
    print(f"  {point['label']}: " + ", ".join(
        f"{k} {v:+.2f}" for k, v in slopes.items() if v is not None and "mean_snr" in k),
        flush=True)
    return entry

  for pi, point in enumerate(points):
    entry, _ = results_lib.part(workdir, f"mnist_point_{pi}", resume,
                            lambda pi=pi, point=point: measure_point(pi, point))
    results["points"].append(entry)
  results["seconds"] = time.perf_counter() - t_start
  results["figure"] = os.path.basename(plot(os.path.join(workdir, "mnist_snr_vs_k.png"), results))
  results_lib.write_json(os.path.join(workdir, "mnist_snr.json"), results)
  return results


_NAMES = {"iwae": "IWAE", "iwae_cv": "IWAE (DReG control variate)", "dreg": "DReG",
          "stl": "STL", "reinforce": "REINFORCE"}
_STYLE = {"iwae": ("C0", "o-"), "iwae_cv": ("C0", "o--"), "dreg": ("C2", "s-"),
          "stl": ("C1", "^-"), "reinforce": ("C3", "v-")}


def plot(path: str, results: dict) -> str:
  """SNR against K, one column per point of training, rows: encoder and decoder."""
  plt = figures_lib.pyplot()
  ks = np.asarray(results["num_samples"], np.float64)
  pts = results["points"]
  fig, axes = plt.subplots(2, len(pts), figsize=(4.2 * len(pts), 7), squeeze=False,
                           sharey="row")
  for j, point in enumerate(pts):
    for i, g in enumerate(("phi", "theta")):
      ax = axes[i][j]
      for name, by_group in point["curves"].items():
        if g not in by_group:
          continue
        color, style = _STYLE.get(name, ("k", "x-"))
        vals = np.asarray([v["rms_snr_debiased"] for v in by_group[g]])
        slope = point["slopes"].get(f"{name}_{g}_rms_snr_debiased")
        label = _NAMES.get(name, name.upper())
        if slope is not None:
          label += f", slope {slope:+.2f}"
        ok = vals > 0
        ax.loglog(ks[ok], vals[ok], style, color=color, label=label)
      if g == "phi":
        ax.axhline(results["noise_floor"], color="gray", ls="--", lw=1,
                   label=r"$1/\sqrt{N}$ (missing points: unresolved)")
      ax.set_title(f"{point['label']}: {'encoder phi' if g == 'phi' else 'decoder theta'}",
                   fontsize=9)
      ax.set_xlabel("K")
      if j == 0:
        ax.set_ylabel("debiased rms SNR")
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=7)
  fig.suptitle(f"MNIST VAE gradient SNR (batch of {results['batch_size']}, "
               f"N = {results['num_draws']} draws)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
