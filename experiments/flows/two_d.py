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

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from absl import logging

from dgmjax import flows
from experiments.common import config as common
from experiments.common import figures as figures_lib
from experiments.common import results as results_lib
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


@functools.lru_cache(maxsize=None)
def make_optimizer(learning_rate: float, num_steps: int, grad_clip: float):
  """Adam with a cosine schedule and global-norm clipping (cached, so jitted steps are reused)."""
  schedule = optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01)
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(schedule))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_chunk(flow: flows.Flow, opt, params, opt_state, data):
  """``data.shape[0]`` Adam steps on batches ``data`` ``[steps, B, 2]`` (one scan)."""
  def step(carry, x):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(lambda p: -jnp.mean(flow.log_prob(p, x)))(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss
  (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), data)
  return params, opt_state, jnp.mean(losses)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _sample_batches(target: targets_lib.Target, key, steps: int, batch: int):
  """Fresh training batches ``[steps, batch, 2]`` from the target."""
  return jax.vmap(lambda k: target.sample(k, batch))(jax.random.split(key, steps))


@functools.partial(jax.jit, static_argnums=0)
def _init(flow: flows.Flow, key):
  return flow.init(key)


@functools.partial(jax.jit, static_argnums=0)
def _log_prob(flow: flows.Flow, params, x):
  return flow.log_prob(params, x)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _sample(flow: flows.Flow, key, params, num_samples: int):
  return flow.sample(params, key, num_samples)


def train_flow(key: jax.Array, flow: flows.Flow, target: targets_lib.Target, config, *,
               learning_rate: float, num_steps: int):
  """Maximum likelihood on fresh target samples with Adam and a cosine schedule.

  Training runs as ``lax.scan`` chunks of ``config.log_every`` steps; the chunk is compiled once
  per flow (and reused across targets), the target sampler once per target.

  Returns:
    ``(params, losses)`` with the mean loss of each chunk.
  """
  init_key, key = jax.random.split(key)
  params = _init(flow, init_key)
  opt = make_optimizer(float(learning_rate), int(num_steps), float(config.grad_clip))
  opt_state = opt.init(params)
  chunk = min(config.log_every, num_steps)
  num_chunks = max(1, num_steps // chunk)
  losses = []
  for chunk_key in jax.random.split(key, num_chunks):
    data = _sample_batches(target, chunk_key, chunk, config.batch_size)
    params, opt_state, loss = _train_chunk(flow, opt, params, opt_state, data)
    losses.append(float(loss))
  return params, losses


def chunked(fn, x, chunk: int) -> np.ndarray:
  """``fn(x)`` on fixed-size chunks of rows (zero-padded), so ``fn`` compiles once per shape."""
  x = np.asarray(x)
  n = x.shape[0]
  xp = np.concatenate([x, np.zeros(((-n) % chunk,) + x.shape[1:], x.dtype)], axis=0)
  out = [np.asarray(fn(xp[i:i + chunk])) for i in range(0, xp.shape[0], chunk)]
  return np.concatenate(out, axis=0)[:n]


def evaluate(flow: flows.Flow, params, x: jax.Array, log_p: np.ndarray,
             chunk: int) -> dict[str, float]:
  """NLL and KL(target || flow) by Monte Carlo on target draws ``x`` with log-densities ``log_p``."""
  log_q = chunked(functools.partial(_log_prob, flow, params), x, chunk).astype(np.float64)
  diff = log_p - log_q
  return {
      "nll": float(-np.mean(log_q)),
      "kl": float(np.mean(diff)),
      "kl_stderr": results_lib.stderr(diff, ddof=0),
      "target_entropy": float(-np.mean(log_p)),
  }


@functools.lru_cache(maxsize=None)
def target_log_prob(target: targets_lib.Target):
  """The target's log-density, jitted once per target."""
  return jax.jit(target.log_prob)


@functools.lru_cache(maxsize=None)
def target_sampler(target: targets_lib.Target):
  """``sample(key, n)`` of the target, jitted once per target and (static) ``n``."""
  return jax.jit(target.sample, static_argnums=1)


def gaussian_kl(key: jax.Array, target: targets_lib.Target, x: np.ndarray, log_p: np.ndarray,
                num_samples: int) -> float:
  """KL from the target to the Gaussian with the target's mean and covariance (the best Gaussian).

  The moments are estimated on ``num_samples`` fresh draws; the KL is the Monte Carlo average over
  the evaluation draws ``x`` (log-densities ``log_p``) shared with the flows (float64, SciPy).
  """
  x_fit = np.asarray(target_sampler(target)(key, num_samples), np.float64)
  log_g = scipy.stats.multivariate_normal(np.mean(x_fit, 0), np.cov(x_fit.T)).logpdf(
      np.asarray(x, np.float64))
  return float(np.mean(log_p - log_g))


# ----------------------------------------------------------------------------- plots


def _grid(config):
  lim = config.plot_limit
  g = np.linspace(-lim, lim, config.plot_grid_size)
  xx, yy = np.meshgrid(g, g)
  return xx, yy, jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)


def plot_results(workdir: str, config, fitted: dict, results: dict) -> None:
  """Writes ``densities.png``, ``samples.png`` and ``losses.png``."""
  plt = figures_lib.pyplot()

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
        dens = np.exp(chunked(target_log_prob(target), grid, config.eval_chunk))
        samples = np.asarray(target_sampler(target)(k_sample, config.plot_num_samples))
        title = f"{tname}\n(target)"
      else:
        flow, params = fitted[(tname, col)]
        dens = np.exp(chunked(functools.partial(_log_prob, flow, params), grid,
                              config.eval_chunk))
        samples = np.asarray(_sample(flow, k_sample, params, config.plot_num_samples))
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


#: Numeric settings, checked before any work (:func:`experiments.common.config.check_fields`).
FIELDS = {
    "seed": "int>=0",
    "batch_size": "int>0", "num_steps": "int>0", "learning_rate": "float>0",
    "linear_num_steps": "int>0", "linear_learning_rate": "float>0", "grad_clip": "float>0",
    "log_every": "int>0", "num_eval_samples": "int>1", "eval_chunk": "int>0",
    "real_nvp.num_layers": "int>0", "real_nvp.hidden_sizes": "ints>0",
    "real_nvp.log_scale_clamp": "float>0", "maf.num_layers": "int>0",
    "maf.hidden_sizes": "ints>0", "maf.log_scale_clamp": "float>0", "plot_limit": "float>0",
    "plot_grid_size": "int>1", "plot_num_samples": "int>0", "plot_dpi": "int>0",
}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Fits every model in ``config.models`` to every target in ``config.targets``.

  Args:
    config: see ``experiments/flows/configs/two_d.py``.
    workdir: output directory (created).

  Returns:
    The results dict written to ``workdir/results.json``:
    ``{target: {model: {kl, kl_stderr, nll, target_entropy, gaussian_kl, ...}}, "meta": ...}``.
  """
  common.check_fields(config, FIELDS)  # bad settings fail here, before any work
  os.makedirs(workdir, exist_ok=True)
  start = time.time()
  key = jax.random.key(config.seed)
  results: dict[str, Any] = {}
  fitted = {}
  for tname in config.targets:
    target = targets_lib.get_target(tname)
    key, k_gauss, k_eval = jax.random.split(key, 3)
    # The same held-out target draws evaluate every model and the best Gaussian.
    x_eval = target_sampler(target)(k_eval, config.num_eval_samples)
    log_p = chunked(target_log_prob(target), x_eval, config.eval_chunk).astype(np.float64)
    g_kl = gaussian_kl(k_gauss, target, x_eval, log_p, config.num_eval_samples)
    results[tname] = {}
    for mname in config.models:
      flow = make_flow(mname, config)
      linear = mname in ("lu", "qr")
      lr = config.linear_learning_rate if linear else config.learning_rate
      steps = config.linear_num_steps if linear else config.num_steps
      key, k_train = jax.random.split(key)
      t0 = time.time()
      params, losses = train_flow(k_train, flow, target, config, learning_rate=lr,
                                  num_steps=steps)
      train_time = time.time() - t0
      metrics = evaluate(flow, params, x_eval, log_p, config.eval_chunk)
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
