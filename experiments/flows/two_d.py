"""2-D density estimation with normalizing flows: RealNVP, MAF and LU / QR linear flows.

Each flow is fitted by maximum likelihood to fresh samples of a generated target (eight Gaussians,
checkerboard, two moons) and evaluated on held-out target samples by

* ``nll``: ``-E_target[log q(x)]`` (nats);
* ``kl``: ``KL(target || q) = E_target[log p(x) - log q(x)]`` by Monte Carlo, with its standard
  error. Eight Gaussians and checkerboard have closed-form densities; the two-moons density is
  computed by numerical quadrature (see :mod:`experiments.flows.targets`);
* ``gaussian_kl``: the KL of the best Gaussian (the target's own mean and covariance), the floor
  that the linear flows (which can only represent Gaussians) cannot go below.

Writes ``results.json``, ``densities.png`` (log-density heat maps), ``samples.png`` (sample
scatter plots) and ``losses.png`` to the workdir.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from dgmjax import distributions
from dgmjax import flows
from experiments.flows import targets as targets_lib

MODELS = ("real_nvp", "maf", "lu", "qr")


def make_flow(name: str, config) -> flows.Flow:
  """The flow named ``name`` configured by ``config.<name>``."""
  if name == "real_nvp":
    c = config.real_nvp
    return flows.Flow(flows.real_nvp(2, c.num_layers, tuple(c.hidden_sizes),
                                     activation=c.activation, log_scale_clamp=c.log_scale_clamp))
  if name == "maf":
    c = config.maf
    return flows.Flow(flows.masked_autoregressive_flow(
        2, c.num_layers, tuple(c.hidden_sizes), activation=c.activation,
        log_scale_clamp=c.log_scale_clamp))
  if name == "lu":
    return flows.Flow(flows.LULinear(2))
  if name == "qr":
    return flows.Flow(flows.QRLinear(2))
  raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def num_params(params) -> int:
  return int(sum(np.size(l) for l in jax.tree_util.tree_leaves(params)))


def train_flow(key: jax.Array, flow: flows.Flow, target: targets_lib.Target, config, *,
               learning_rate: float, num_steps: int):
  """Maximum likelihood on fresh target samples with Adam and a cosine schedule.

  Training runs as ``lax.scan`` chunks of ``config.log_every`` steps, compiled once.

  Returns:
    ``(params, losses)`` with the mean loss of each chunk.
  """
  init_key, key = jax.random.split(key)
  params = flow.init(init_key)
  schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
  opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))
  opt_state = opt.init(params)
  chunk = min(config.log_every, num_steps)
  num_chunks = max(1, num_steps // chunk)

  def loss_fn(p, x):
    return -jnp.mean(flow.log_prob(p, x))

  @jax.jit
  def run_chunk(params, opt_state, key):
    def step(carry, step_key):
      params, opt_state = carry
      x = target.sample(step_key, config.batch_size)
      loss, grads = jax.value_and_grad(loss_fn)(params, x)
      updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                               jax.random.split(key, chunk))
    return params, opt_state, jnp.mean(losses)

  losses = []
  for chunk_key in jax.random.split(key, num_chunks):
    params, opt_state, loss = run_chunk(params, opt_state, chunk_key)
    losses.append(float(loss))
  return params, losses


def evaluate(key: jax.Array, flow: flows.Flow, params, target: targets_lib.Target,
             num_samples: int) -> dict[str, float]:
  """NLL and KL(target || flow) by Monte Carlo on ``num_samples`` target draws."""
  x = target.sample(key, num_samples)
  log_q = jax.jit(flow.log_prob)(params, x)
  log_p = jax.jit(target.log_prob)(x)
  diff = np.asarray(log_p - log_q, np.float64)
  return {
      "nll": float(-np.mean(np.asarray(log_q, np.float64))),
      "kl": float(np.mean(diff)),
      "kl_stderr": float(np.std(diff) / math.sqrt(num_samples)),
      "target_entropy": float(-np.mean(np.asarray(log_p, np.float64))),
  }


def gaussian_kl(key: jax.Array, target: targets_lib.Target, num_samples: int) -> float:
  """KL from the target to the Gaussian with the target's mean and covariance (the best Gaussian)."""
  x = target.sample(key, num_samples)
  mean = jnp.mean(x, axis=0)
  cov = jnp.cov(x.T)
  log_g = distributions.mvn_log_prob(x, mean, jnp.linalg.cholesky(cov))
  return float(jnp.mean(target.log_prob(x) - log_g))


# ----------------------------------------------------------------------------- plots


def _grid(config):
  lim = config.plot_limit
  g = np.linspace(-lim, lim, config.plot_grid_size)
  xx, yy = np.meshgrid(g, g)
  return xx, yy, jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)


def plot_results(workdir: str, config, fitted: dict, results: dict) -> None:
  """Writes ``densities.png``, ``samples.png`` and ``losses.png``."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  names = list(config.targets)
  models = list(config.models)
  xx, yy, grid = _grid(config)
  lim = config.plot_limit
  cols = ["target"] + models

  fig_d, axes_d = plt.subplots(len(names), len(cols), figsize=(2.6 * len(cols), 2.6 * len(names)),
                               squeeze=False)
  fig_s, axes_s = plt.subplots(len(names), len(cols), figsize=(2.6 * len(cols), 2.6 * len(names)),
                               squeeze=False)
  key = jax.random.key(config.seed + 1)
  for i, tname in enumerate(names):
    target = targets_lib.get_target(tname)
    for j, col in enumerate(cols):
      key, k_sample = jax.random.split(key)
      if col == "target":
        dens = np.exp(np.asarray(jax.jit(target.log_prob)(grid)))
        samples = np.asarray(target.sample(k_sample, config.plot_num_samples))
        title = f"{tname}\n(target)"
      else:
        flow, params = fitted[(tname, col)]
        dens = np.exp(np.asarray(jax.jit(flow.log_prob)(params, grid)))
        samples = np.asarray(jax.jit(flow.sample, static_argnums=2)(
            k_sample, params, config.plot_num_samples))
        r = results[tname][col]
        title = f"{col}\nKL={r['kl']:.3f}  NLL={r['nll']:.3f}"
      ax = axes_d[i, j]
      ax.pcolormesh(xx, yy, dens.reshape(xx.shape), shading="auto", cmap="viridis")
      ax.set_title(title, fontsize=8)
      ax = axes_s[i, j]
      ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.4)
      ax.set_xlim(-lim, lim)
      ax.set_ylim(-lim, lim)
      ax.set_title(title, fontsize=8)
    for ax in list(axes_d[i]) + list(axes_s[i]):
      ax.set_xticks([])
      ax.set_yticks([])
      ax.set_aspect("equal")
  fig_d.suptitle("densities q(x) (KL = KL(target || flow), nats)", fontsize=9)
  fig_s.suptitle("samples", fontsize=9)
  for fig, name in ((fig_d, "densities.png"), (fig_s, "samples.png")):
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, name), dpi=config.plot_dpi)
    plt.close(fig)

  fig, axes = plt.subplots(1, len(names), figsize=(3.5 * len(names), 3), squeeze=False)
  for i, tname in enumerate(names):
    for m in models:
      losses = results[tname][m]["losses"]
      steps = np.arange(1, len(losses) + 1) * results[tname][m]["log_every"]
      axes[0, i].plot(steps, losses, label=m)
    axes[0, i].axhline(results[tname][models[0]]["target_entropy"], color="k", ls="--", lw=0.8,
                       label="target entropy")
    axes[0, i].set_title(tname, fontsize=9)
    axes[0, i].set_xlabel("step")
    axes[0, i].set_ylabel("training NLL")
  axes[0, -1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "losses.png"), dpi=config.plot_dpi)
  plt.close(fig)


# ----------------------------------------------------------------------------- driver


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Fits every model in ``config.models`` to every target in ``config.targets``.

  Args:
    config: see ``experiments/flows/configs/two_d.py``.
    workdir: output directory (created).

  Returns:
    The results dict written to ``workdir/results.json``:
    ``{target: {model: {kl, kl_stderr, nll, target_entropy, gaussian_kl, ...}}, "meta": ...}``.
  """
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  key = jax.random.key(config.seed)
  results: dict[str, Any] = {}
  fitted = {}
  for tname in config.targets:
    target = targets_lib.get_target(tname)
    key, k_gauss = jax.random.split(key)
    g_kl = gaussian_kl(k_gauss, target, config.num_eval_samples)
    results[tname] = {}
    for mname in config.models:
      flow = make_flow(mname, config)
      linear = mname in ("lu", "qr")
      lr = config.linear_learning_rate if linear else config.learning_rate
      steps = config.linear_num_steps if linear else config.num_steps
      key, k_train, k_eval = jax.random.split(key, 3)
      t0 = time.time()
      params, losses = train_flow(k_train, flow, target, config, learning_rate=lr,
                                  num_steps=steps)
      train_time = time.time() - t0
      metrics = evaluate(k_eval, flow, params, target, config.num_eval_samples)
      metrics.update(
          gaussian_kl=g_kl, losses=losses, log_every=min(config.log_every, steps),
          num_steps=steps, learning_rate=lr, num_params=num_params(params),
          train_time_s=train_time, density=target.density_note)
      if linear:
        w = flow.bijector.weight(params)
        metrics["weight_log_abs_det"] = float(np.linalg.slogdet(np.asarray(w, np.float64))[1])
        metrics["note"] = ("a linear flow only represents Gaussians: its KL is bounded below by "
                           "gaussian_kl")
      results[tname][mname] = metrics
      fitted[(tname, mname)] = (flow, params)
      logging.info("%s / %s: KL %.4f +- %.4f, NLL %.4f (entropy %.4f), %.1fs", tname, mname,
                   metrics["kl"], metrics["kl_stderr"], metrics["nll"],
                   metrics["target_entropy"], train_time)
  plot_results(workdir, config, fitted, results)
  results["meta"] = {"config": config.to_dict(), "wall_time_s": time.time() - start,
                     "jax_version": jax.__version__, "backend": jax.default_backend()}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2, default=str)
  return results


def format_results(results: dict[str, Any]) -> str:
  """A plain-text table of KL / NLL per target and model."""
  lines = [f"{'target':16s} {'model':9s} {'KL(p||q)':>10s} {'+-':>7s} {'NLL':>8s} "
           f"{'H(p)':>7s} {'Gauss KL':>9s}"]
  for tname, per_model in results.items():
    if tname == "meta":
      continue
    for mname, r in per_model.items():
      lines.append(f"{tname:16s} {mname:9s} {r['kl']:10.4f} {r['kl_stderr']:7.4f} {r['nll']:8.4f} "
                   f"{r['target_entropy']:7.4f} {r['gaussian_kl']:9.4f}")
  return "\n".join(lines)
