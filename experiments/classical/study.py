"""The classical study: EM on a Gaussian mixture, PPCA against the linear VAE, amortization gaps.

``train_and_evaluate(config, workdir)`` runs four parts and writes ``results.json``,
``results.md`` and PNG figures into ``workdir``:

1. **GMM EM** on 2-D data drawn from a known 3-component mixture: the fitted components at
   selected iterations (``gmm_em_iterations.png``) and the monotone log-likelihood curve
   (``gmm_log_likelihood.png``), checked against scikit-learn run from the same start.
2. **PPCA vs linear VAE** on the 8x8 digits (64-D grey levels): held-out log-likelihood of the
   closed-form PPCA, of PPCA EM and of a linear VAE trained on the Monte Carlo ELBO, side by side
   (``ppca_vs_linear_vae.png``); then the linear VAE at fixed noise variances, whose latent
   dimensions collapse where the data eigenvalues fall below ``s^2`` (``linear_vae_collapse.png``).
3. **Amortization gaps on digits** (Cremer et al. 2018): ``log p(x) - ELBO`` split into
   approximation and amortization gaps, for the linear VAE (exact ``log p(x)``) and for a small
   Bernoulli VAE and IWAE trained here on binarized digits (``log p(x)`` by importance sampling).
4. **Amortization gaps of trained MNIST models**: the same decomposition for VAE / IWAE runs of
   ``experiments/iwae`` restored from their orbax checkpoints (``config.gaps.runs_root`` /
   ``config.gaps.runs``), on the first test images under the runs' own fixed test binarization,
   beside Cremer et al.'s Table 2 (``amortization_gaps.png`` shows parts 3 and 4). Runs that are
   missing or unfinished (no ``results.json``) are skipped and listed as such.

Only composes the library (``dgmjax.models``: ``gmm``, ``ppca``, ``linear_vae``,
``linear_gaussian``, ``vae``; ``dgmjax.inference``, ``data``, ``training``) and the checkpoint
layout of ``experiments/iwae``.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import data as data_lib
from dgmjax import distributions
from dgmjax import losses, models, objectives, training
from dgmjax import inference
from dgmjax.models import gmm as gmm_lib
from dgmjax.models import linear_vae as linear_vae_lib
from dgmjax.models import ppca as ppca_lib
from dgmjax.models import linear_gaussian as lg
from experiments.common import config as common
from experiments.common import data as run_data
from experiments.common import figures as figures_lib
from experiments.common import results as results_lib

# The mixture the 2-D data are drawn from.
_TRUE_MEANS = ((-2.0, 0.0), (2.5, 1.0), (0.0, 3.5))
_TRUE_COVS = (((1.0, 0.6), (0.6, 0.8)), ((0.5, -0.3), (-0.3, 1.2)), ((1.2, 0.0), (0.0, 0.3)))
_TRUE_WEIGHTS = (0.4, 0.35, 0.25)


def _f(x) -> float:
  return float(np.asarray(x))


def _mean(x) -> float:
  """Mean as a Python float, in numpy (no per-shape XLA compilation of an eager ``jnp.mean``)."""
  return float(np.mean(np.asarray(x, np.float64)))


def _max(x) -> float:
  return float(np.max(np.asarray(x, np.float64)))


def _var(log_scale) -> float:
  """``s^2 = exp(2 log s)`` of a scalar log standard deviation."""
  return float(np.exp(2.0 * np.asarray(log_scale, np.float64)))


def _to64(tree):
  """A pytree of arrays as float64 (a host-side conversion: no compilation)."""
  return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)


# ----------------------------------------------------------------------------- 1. GMM


def gmm_study(config, key) -> dict:
  """EM on a 2-D mixture: log-likelihood trace, snapshots of the fit, scikit-learn cross-check."""
  from sklearn.mixture import GaussianMixture
  import warnings

  gc = config.gmm
  k_data, k_init = jax.random.split(key)
  dtype = jnp.asarray(0.0).dtype  # float64 under jax.enable_x64, else float32
  true = gmm_lib.gmm_params(np.log(np.asarray(_TRUE_WEIGHTS, dtype)),
                              np.asarray(_TRUE_MEANS, dtype), np.asarray(_TRUE_COVS, dtype))
  x, z = jax.jit(gmm_lib.gmm_sample, static_argnums=2)(true, k_data, int(gc.num_points))
  init = gmm_lib.gmm_init(k_init, x, int(gc.num_components), reg_covar=float(gc.reg_covar))

  t0 = time.perf_counter()
  res = inference.em.gmm_em(init, x, max_iters=int(gc.max_iters), tol=float(gc.tol),
                         reg_covar=float(gc.reg_covar))
  jax.block_until_ready(res)
  em_seconds = time.perf_counter() - t0
  n_it = int(res.num_iters)
  trace = np.asarray(res.log_likelihood)[:n_it + 1]

  # Snapshots: iterate the jitted single step (the same arithmetic as the while_loop).
  step = jax.jit(functools.partial(inference.em.gmm_em_step, reg_covar=float(gc.reg_covar)))
  wanted = sorted({int(i) for i in gc.snapshot_iters if int(i) <= n_it})
  snapshots, params = {}, init
  for it in range(max(wanted) + 1):
    if it in wanted:
      snapshots[it] = params
    params, _ = step(params, x)
  snapshots[n_it] = res.params

  cov0 = np.asarray(gmm_lib.gmm_covariances(init), np.float64)
  gm = GaussianMixture(int(gc.num_components), covariance_type="full",
                       reg_covar=float(gc.reg_covar), max_iter=int(gc.max_iters),
                       tol=float(gc.tol), weights_init=np.full(int(gc.num_components),
                                                              1.0 / int(gc.num_components)),
                       means_init=np.asarray(init.means, np.float64),
                       precisions_init=np.linalg.inv(cov0))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    gm.fit(np.asarray(x, np.float64))

  ll_true = _mean(jax.jit(gmm_lib.gmm_log_prob)(true, x))
  diffs = np.diff(trace)
  return {
      "num_points": int(gc.num_points),
      "num_components": int(gc.num_components),
      "em_iterations": n_it,
      "converged": bool(res.converged),
      "em_seconds": em_seconds,
      "log_likelihood_init": float(trace[0]),
      "log_likelihood_final": float(trace[-1]),
      "log_likelihood_true_params": ll_true,
      "sklearn_log_likelihood_same_init": float(gm.score(np.asarray(x, np.float64))),
      "sklearn_iterations": int(gm.n_iter_),
      "min_increase": float(diffs.min()) if diffs.size else 0.0,
      "monotone": bool(diffs.size == 0 or diffs.min() >= -1e-10 * abs(trace[-1])),
      "trace": trace.tolist(),
      "_x": np.asarray(x), "_z": np.asarray(z), "_snapshots": snapshots, "_true": true,
  }


def _ellipse(ax, mean, cov, color, nsig):
  from matplotlib.patches import Ellipse
  vals, vecs = np.linalg.eigh(np.asarray(cov, np.float64))
  angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
  w, h = 2 * nsig * np.sqrt(np.maximum(vals[::-1], 0.0))
  ax.add_patch(Ellipse(np.asarray(mean), w, h, angle=angle, fill=False, color=color,
                       lw=1.5 if nsig == 1 else 0.8, ls="-" if nsig == 1 else "--"))


def plot_gmm(gmm: dict, workdir: str) -> list[str]:
  """The fitted components per iteration, and the log-likelihood curve."""
  plt = figures_lib.pyplot()

  x = gmm["_x"]
  snaps = gmm["_snapshots"]
  colors = np.array([[0.85, 0.2, 0.2], [0.2, 0.45, 0.85], [0.2, 0.7, 0.3], [0.8, 0.6, 0.1],
                     [0.6, 0.3, 0.7], [0.3, 0.7, 0.7]])
  its = sorted(snaps)
  posterior = jax.jit(gmm_lib.gmm_posterior)
  fig, axes = plt.subplots(1, len(its), figsize=(3.0 * len(its), 3.2), squeeze=False)
  lo, hi = x.min(0) - 1.0, x.max(0) + 1.0
  for ax, it in zip(axes[0], its):
    p = jax.tree.map(np.asarray, snaps[it])
    resp = np.exp(np.asarray(posterior(p, x)))
    c = resp @ colors[:resp.shape[1]]
    ax.scatter(x[:, 0], x[:, 1], s=4, c=np.clip(c, 0, 1), alpha=0.7)
    covs = np.asarray(gmm_lib.gmm_covariances(p))
    for k in range(covs.shape[0]):
      for nsig in (1, 2):
        _ellipse(ax, p.means[k], covs[k], colors[k % len(colors)], nsig)
      ax.plot(*np.asarray(p.means[k]), "x", color=colors[k % len(colors)], ms=7, mew=2)
    ll = gmm["trace"][it]
    ax.set_title(f"iteration {it}{' (final)' if it == gmm['em_iterations'] else ''}\n"
                 f"mean log p(x) = {ll:.3f}", fontsize=9)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle("EM on a 2-D Gaussian mixture: points coloured by responsibilities, "
               "1- and 2-sigma ellipses", fontsize=10)
  fig.tight_layout()
  path1 = os.path.join(workdir, "gmm_em_iterations.png")
  fig.savefig(path1, dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  tr = np.asarray(gmm["trace"])
  ax.plot(np.arange(len(tr)), tr, ".-", label="EM (dgmjax)")
  ax.axhline(gmm["log_likelihood_true_params"], color="k", ls="--", lw=1,
             label="true parameters")
  ax.axhline(gmm["sklearn_log_likelihood_same_init"], color="C3", ls=":", lw=1.5,
             label="scikit-learn, same start")
  ax.set_xlabel("EM iteration")
  ax.set_ylabel("mean log p(x) per point")
  ax.set_title(f"EM never decreases log p(x) (min step {gmm['min_increase']:.1e})", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path2 = os.path.join(workdir, "gmm_log_likelihood.png")
  fig.savefig(path2, dpi=110)
  plt.close(fig)
  return [path1, path2]


# ------------------------------------------------------------------------- 2. PPCA vs linear VAE


def load_flat(dataset: str, split: str) -> np.ndarray:
  """``dgmjax.data.load`` images flattened to ``[N, D]`` float32."""
  images = data_lib.load(dataset, split)["image"]
  return np.asarray(images, np.float32).reshape(images.shape[0], -1)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _lg_init(key, x_dim, z_dim):
  return lg.init(key, x_dim, z_dim, dtype=jnp.float64)


@jax.jit
def _kl_per_dim(vae, x):
  """``KL(q(z_j|x_n) || N(0, 1))`` per example and latent dimension, ``[N, D_z]``."""
  loc, log_scale = linear_vae_lib.LinearVAE().encode(vae, x)
  return distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0)


def ppca_study(config, key, train, test) -> dict:
  """Closed-form PPCA, PPCA EM and the linear VAE for each latent size; collapse at fixed noise."""
  pc = config.ppca
  log_marginal = jax.jit(lg.log_marginal)
  elbo = jax.jit(linear_vae_lib.linear_vae_elbo)
  eig = np.asarray(ppca_lib.covariance_eigenvalues(train))
  rows, fits = [], {}
  batch = int(pc.vae_batch_size) or None
  train64, test64 = train.astype(np.float64), test.astype(np.float64)
  for q in pc.latent_dims:
    q = int(q)
    key, k_em, k_vae = jax.random.split(key, 3)
    # PPCA (closed form and EM) in float64: EM's slow final approach to the closed form is below
    # float32 resolution of the log-likelihood. The linear VAE trains in float32.
    with jax.enable_x64(True):
      t0 = time.perf_counter()
      ml = ppca_lib.ppca_ml(train64, q)
      jax.block_until_ready(ml)
      t_ml = time.perf_counter() - t0
      t0 = time.perf_counter()
      init = _lg_init(k_em, train.shape[1], q)
      init = init._replace(b=jnp.asarray(train64.mean(0)))
      em = inference.em.ppca_em(init, train64, max_iters=int(pc.em_max_iters), tol=float(pc.em_tol))
      jax.block_until_ready(em)
      t_em = time.perf_counter() - t0
    t0 = time.perf_counter()
    vae, trace = linear_vae_lib.fit_linear_vae(k_vae, train, q, num_steps=int(pc.vae_steps),
                                          learning_rate=float(pc.vae_learning_rate),
                                          num_samples=int(pc.vae_num_samples), batch_size=batch)
    jax.block_until_ready(vae)
    t_vae = time.perf_counter() - t0
    with jax.enable_x64(True):  # every log-likelihood evaluated in float64
      vae64 = _to64(vae)
      row = {
          "latent_dim": q,
          "noise_variance_ml": _var(ml.log_scale),
          "noise_variance_em": _var(em.params.log_scale),
          "noise_variance_vae": _var(vae64.decoder.log_scale),
          "train_ll_ppca_ml": _mean(log_marginal(ml, train64)),
          "test_ll_ppca_ml": _mean(log_marginal(ml, test64)),
          "test_ll_ppca_em": _mean(log_marginal(em.params, test64)),
          "test_ll_linear_vae": _mean(log_marginal(vae64.decoder, test64)),
          "test_elbo_linear_vae": _mean(elbo(vae64, test64)),
          "em_iterations": int(em.num_iters),
          "em_converged": bool(em.converged),
          "em_max_angle_rad": _max(ppca_lib.subspace_angles(em.params.w, ml.w)),
          "vae_max_angle_rad": _max(ppca_lib.subspace_angles(vae64.decoder.w, ml.w)),
          "seconds_ml": t_ml, "seconds_em": t_em, "seconds_vae": t_vae,
      }
    row["vae_minus_ppca_test_ll"] = row["test_ll_linear_vae"] - row["test_ll_ppca_ml"]
    row["em_minus_ppca_test_ll"] = row["test_ll_ppca_em"] - row["test_ll_ppca_ml"]
    rows.append(row)
    fits[q] = (ml, em, vae, np.asarray(trace))

  # Collapse: fixed noise variance s^2, latent size q; predicted active dims #{lambda_j > s^2}.
  q = int(pc.collapse_latent_dim)
  collapse = []
  for s2 in pc.collapse_noise_variances:
    key, k_vae = jax.random.split(key)
    vae, _ = linear_vae_lib.fit_linear_vae(k_vae, train, q, num_steps=int(pc.vae_steps),
                                      learning_rate=float(pc.vae_learning_rate),
                                      num_samples=int(pc.vae_num_samples), batch_size=batch,
                                      noise_variance=float(s2))
    kl = np.asarray(_kl_per_dim(vae, train)).mean(axis=0)
    with jax.enable_x64(True):
      ml_fixed = ppca_lib.ppca_ml(train64, q, noise_variance=float(s2))
      vae64 = _to64(vae)
      ll_vae = _mean(log_marginal(vae64.decoder, test64))
      ll_fixed = _mean(log_marginal(ml_fixed, test64))
    # At the optimum the KL of dimension j is log(lambda_j / s^2) / 2 where lambda_j > s^2, else 0.
    kl_pred = 0.5 * np.log(np.maximum(eig[:q] / float(s2), 1.0))
    collapse.append({
        "noise_variance": float(s2),
        "latent_dim": q,
        "predicted_active": int(np.sum(eig[:q] > float(s2))),
        "vae_active": int(np.sum(kl > float(pc.collapse_kl_threshold))),
        "vae_kl_per_dim_sorted": np.sort(kl)[::-1].tolist(),
        "predicted_kl_per_dim": kl_pred.tolist(),
        "vae_singular_values": np.linalg.svd(np.asarray(vae.decoder.w),
                                             compute_uv=False).tolist(),
        "predicted_singular_values": np.sqrt(np.maximum(eig[:q] - float(s2), 0.0)).tolist(),
        "test_ll_linear_vae": ll_vae,
        "test_ll_ppca_fixed_noise": ll_fixed,
    })
  return {"dataset": str(pc.dataset), "data_dim": int(train.shape[1]),
          "num_train": int(train.shape[0]), "num_test": int(test.shape[0]),
          "eigenvalues": eig.tolist(), "rows": rows, "collapse": collapse, "_fits": fits}


def plot_ppca(ppca: dict, workdir: str) -> list[str]:
  """Spectrum with the ML noise levels, LL per latent size, and the collapse figure."""
  plt = figures_lib.pyplot()

  eig = np.asarray(ppca["eigenvalues"])
  rows = ppca["rows"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  ax = axes[0]
  ax.semilogy(np.arange(1, len(eig) + 1), np.maximum(eig, 1e-8), "k.-", lw=1, ms=3,
              label="eigenvalues of S")
  for i, r in enumerate(rows):
    ax.axhline(r["noise_variance_ml"], color=f"C{i}", ls="--", lw=1,
               label=f"ML s^2, q={r['latent_dim']}")
  ax.set_xlabel("index")
  ax.set_ylabel("variance")
  ax.set_title(f"{ppca['dataset']}: covariance spectrum", fontsize=10)
  ax.legend(fontsize=7)
  ax = axes[1]
  qs = [r["latent_dim"] for r in rows]
  ref = np.asarray([r["test_ll_ppca_ml"] for r in rows])
  ax.axhspan(-0.1, 0.1, color="0.9", label="+-0.1 nat")
  ax.axhline(0.0, color="k", lw=1, label="PPCA closed form (reference)")
  ax.plot(qs, np.asarray([r["test_ll_ppca_em"] for r in rows]) - ref, "C1x--", label="PPCA EM")
  ax.plot(qs, np.asarray([r["test_ll_linear_vae"] for r in rows]) - ref, "C0s:", mfc="none",
          label="linear VAE: exact log p(x)")
  ax.plot(qs, np.asarray([r["test_elbo_linear_vae"] for r in rows]) - ref, "C2^:", mfc="none",
          label="linear VAE: ELBO")
  ax.set_xscale("log", base=2)
  ax.set_xticks(qs, [str(q) for q in qs])
  ax.set_xlabel("latent dimension q")
  ax.set_ylabel("held-out mean log p(x) - PPCA's (nats)")
  ax.set_title("PPCA vs linear VAE (Lucas et al. 2019)", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path1 = os.path.join(workdir, "ppca_vs_linear_vae.png")
  fig.savefig(path1, dpi=110)
  plt.close(fig)

  col = ppca["collapse"]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  ax = axes[0]
  q = col[0]["latent_dim"] if col else 0
  ax.semilogy(np.arange(1, q + 1), eig[:q], "k.-", label="eigenvalues of S")
  for i, c in enumerate(col):
    ax.axhline(c["noise_variance"], color=f"C{i}", ls="--", lw=1,
               label=f"s^2={c['noise_variance']:g}: {c['vae_active']} active "
                     f"(pred. {c['predicted_active']})")
  ax.set_xlabel("latent dimension (sorted)")
  ax.set_title("Directions with eigenvalue below s^2 collapse", fontsize=10)
  ax.legend(fontsize=7)
  ax = axes[1]
  for i, c in enumerate(col):
    ax.plot(np.arange(1, q + 1), c["vae_kl_per_dim_sorted"], f"C{i}o", mfc="none",
            label=f"VAE, s^2={c['noise_variance']:g}")
    ax.plot(np.arange(1, q + 1), c["predicted_kl_per_dim"], f"C{i}-", lw=1)
  ax.set_xlabel("latent dimension (sorted by KL)")
  ax.set_ylabel("mean KL(q(z_j|x) || p(z_j)) (nats)")
  ax.set_title("Per-dimension KL: trained (o) vs log(lambda/s^2)/2 (line)", fontsize=10)
  ax.legend(fontsize=7)
  fig.tight_layout()
  path2 = os.path.join(workdir, "linear_vae_collapse.png")
  fig.savefig(path2, dpi=110)
  plt.close(fig)
  return [path1, path2]


# ----------------------------------------------------------------------------- 3. gaps


def _gap_row(name: str, gaps: inference.gaps.AmortizationGaps, **extra) -> dict:
  """Means over the examples of every field, and standard errors of the three gaps."""
  row = {"model": name}
  for field in inference.gaps.AmortizationGaps._fields:
    values = np.asarray(getattr(gaps, field), np.float64)
    row[field] = float(values.mean())
    if field.endswith("_gap") and values.size > 1:
      row[field + "_stderr"] = results_lib.stderr(values)
  row.update(extra)
  return row


@functools.lru_cache(maxsize=None)
def _cached_local_optimizer(learning_rate: float, num_steps: int):
  return optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01))


def _local_optimizer(config, num_steps: int):
  """Adam with a cosine decay for the local q*; one object per setting (a static, hashed argument
  of the jitted gap function, so equal settings share one compiled program)."""
  return _cached_local_optimizer(float(config.gaps.learning_rate), int(num_steps))


def _gap_kwargs(config):
  gc = config.gaps
  return dict(num_steps=int(gc.num_steps), num_samples=int(gc.num_samples),
              num_elbo_samples=int(gc.num_elbo_samples),
              num_iwae_samples=int(gc.num_iwae_samples), chunk_size=int(gc.chunk_size),
              optimizer=_local_optimizer(config, int(gc.num_steps)))


def linear_vae_gaps(key, vae: linear_vae_lib.LinearVAEParams, x, gap_kwargs: dict) -> dict:
  """Gaps of a trained linear VAE, with the exact log p(x) of its decoder."""
  log_px = jax.jit(lg.log_marginal)(vae.decoder, x)
  gaps = inference.gaps.amortization_gaps(linear_vae_lib.LinearVAE(), vae, x, key, log_px=log_px,
                                          **gap_kwargs)
  # The same decomposition in closed form: checks the gradient-fitted q* and the Monte Carlo ELBOs.
  exact = inference.gaps.linear_vae_exact_gaps(vae, x)
  return _gap_row(f"linear VAE (q={vae.enc_b.shape[0]}), Gaussian, grey levels", gaps,
                  log_px_source="exact",
                  **{f"{k}_closed_form": _mean(getattr(exact, k))
                     for k in ("elbo_amortized", "elbo_local", "approximation_gap",
                               "amortization_gap", "inference_gap")})


@functools.lru_cache(maxsize=None)
def make_vae_log_joint(model):
  """``log p(x, z) = log N(z; 0, I) + log Bern(x; decoder(z))`` of a one-layer dgmjax VAE.

  Cached per (hashable, frozen) model, so :func:`inference.gaps.amortization_gaps` compiles once per
  model architecture.
  """
  if model.num_layers != 1:
    raise ValueError("amortization gaps are defined here for one stochastic layer")

  def log_joint(params, x, z):
    return model.log_prior(params, z) + model.log_likelihood(params, x, z)

  return log_joint


def train_vae(config, key, model, train, bound: str, num_samples: int):
  """A few thousand Adam steps on the ELBO (``'elbo'``) or the IWAE bound (``'iwae'``)."""
  gc = config.gaps
  k_init, k_train = jax.random.split(key)
  # Jitted: flax's eager init would compile every random draw separately.
  params = jax.jit(functools.partial(model.init, data_mean=train.mean(0)))(k_init)
  opt = optax.adam(float(gc.vae_learning_rate))
  n = train.shape[0]
  bs = min(int(gc.vae_batch_size), n)
  if bound not in ("elbo", "iwae"):
    raise ValueError(f"bound must be 'elbo' or 'iwae', got {bound!r}")
  xs = jnp.asarray(train)
  bound_loss = losses.make_loss(model, bound, num_samples)

  def loss(p, xb, k):
    return bound_loss(p, xb, k, 0)[0]

  @jax.jit
  def run(params, key):
    def step(carry, k):
      p, s = carry
      kb, ks = jax.random.split(k)
      xb = xs[jax.random.randint(kb, (bs,), 0, n)]
      val, g = jax.value_and_grad(loss)(p, xb, ks)
      updates, s = opt.update(g, s, p)
      return (optax.apply_updates(p, updates), s), -val
    (params, _), trace = jax.lax.scan(step, (params, opt.init(params)),
                                      jax.random.split(key, int(gc.vae_steps)))
    return params, trace

  return run(params, k_train)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _model_elbo(model, params, x, key, num_samples):
  return objectives.elbo(models.log_weights(model, params, x, key, num_samples))


def vae_gaps(key, model, params, x, name: str, gap_kwargs: dict) -> dict:
  """Gaps of a one-layer :class:`dgmjax.models.vae.VAE` (log p(x) by importance sampling)."""
  make_vae_log_joint(model)  # one stochastic layer only (raises otherwise)
  k_gaps, k_check = jax.random.split(key)
  gaps = inference.gaps.amortization_gaps(model, params, x, k_gaps, **gap_kwargs)
  # Cross-check: the model's own log-weights give the same amortized ELBO (up to MC noise).
  own = _mean(_model_elbo(model, params, x, k_check, gap_kwargs["num_elbo_samples"]))
  return _gap_row(name, gaps, log_px_source=f"IWAE, mixture proposal, "
                  f"{2 * gap_kwargs['num_iwae_samples']} samples",
                  elbo_from_model_log_weights=own)


def gaps_study(config, key, ppca: dict, train, test) -> dict:
  """The amortization-gap table on held-out digits."""
  gc = config.gaps
  n = min(int(gc.num_examples), test.shape[0])
  rows = []
  k_lin, k_vae, k_iwae, k_gv, k_gi = jax.random.split(key, 5)
  q = int(gc.linear_latent_dim)
  if q in ppca["_fits"]:
    vae = ppca["_fits"][q][2]
  else:
    vae, _ = linear_vae_lib.fit_linear_vae(k_lin, train, q, num_steps=int(config.ppca.vae_steps),
                                      learning_rate=float(config.ppca.vae_learning_rate))
  # One optimiser object for every model: it is a static argument of the jitted gap function.
  gap_kwargs = _gap_kwargs(config)
  rows.append(linear_vae_gaps(k_lin, vae, jnp.asarray(test[:n]), gap_kwargs))
  result = {"dataset": "digits (sklearn 8x8), held-out split 'test'", "num_examples": n,
            "note": ("Small models on the 8x8 digits (the MNIST models are in part 4); "
                     "the linear VAE's gaps are also given in closed form."),
            "rows": rows}
  if gc.vae_enabled:
    from dgmjax.models import vae as vae_lib
    model = vae_lib.VAE((8, 8, 1), (int(gc.vae_latent_dim),),
                        (tuple(int(h) for h in gc.vae_hidden),))
    btrain = (train > 0.5).astype(np.float32).reshape(-1, 8, 8, 1)
    btest = (test[:n] > 0.5).astype(np.float32).reshape(-1, 8, 8, 1)
    for bound, k, ktrain, kgap in (("elbo", 1, k_vae, k_gv),
                                   ("iwae", int(gc.iwae_k), k_iwae, k_gi)):
      t0 = time.perf_counter()
      params, trace = train_vae(config, ktrain, model, btrain, bound, k)
      jax.block_until_ready(params)
      t_train = time.perf_counter() - t0
      label = (f"{'VAE (ELBO, K=1)' if bound == 'elbo' else f'IWAE (K={k})'}, "
               f"Bernoulli, 64-{'-'.join(map(str, gc.vae_hidden))}-{int(gc.vae_latent_dim)}, "
               "binarized digits")
      row = vae_gaps(kgap, model, params, jnp.asarray(btest), label, gap_kwargs)
      row["train_bound_last"] = float(np.mean(np.asarray(trace)[-100:]))
      row["seconds_train"] = t_train
      rows.append(row)
  return result


# ----------------------------------------------------------------------------- 4. trained runs

# Cremer, Li & Duvenaud (2018), Table 2, MNIST, amortized fully factorized Gaussian q ("FFG"),
# as printed in the paper (nats): their log p(x) estimate, the ELBO of the best local FFG q*, the
# encoder's ELBO, and the gaps. Their model was trained to convergence.
CREMER_MNIST_FFG = {"log_px": -89.80, "elbo_local": -91.23, "elbo_amortized": -92.57,
                    "approximation_gap": 1.43, "amortization_gap": 1.34, "inference_gap": 2.77}


def load_run(run_dir: str):
  """Restores a finished ``experiments/iwae`` run: ``(model, params, run_config, run_results)``.

  Reads ``config.json`` and ``results.json`` and the parameters of the latest orbax checkpoint
  (read-only; nothing is written to ``run_dir``), and checks them against the architecture the
  config names.

  Raises:
    FileNotFoundError: ``run_dir`` has no ``config.json``, no ``results.json`` (the run has not
      finished) or no checkpoint.
    ValueError: the checkpoint's parameters do not match the configured model, or the latest
      checkpoint is not the run's final step.
  """
  import ml_collections
  from dgmjax.models import vae as vae_lib

  for name in ("config.json", "results.json"):
    if not os.path.exists(os.path.join(run_dir, name)):
      raise FileNotFoundError(f"{run_dir} has no {name}"
                              + (" (the run has not finished)" if name == "results.json" else ""))
  with open(os.path.join(run_dir, "config.json")) as f:
    run_config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(run_dir, "results.json")) as f:
    run_results = json.load(f)
  test_images = run_data.load_images(run_config, "test")
  model = vae_lib.make(run_config.model, test_images.shape[1:],
                       latent_dims=run_config.get("latent_dims") or None,
                       hidden_dims=run_config.get("hidden_dims") or None)
  template = jax.eval_shape(model.init, jax.random.key(0))
  try:
    params, _, step = training.restore(run_dir, like=template)
  except ValueError as e:
    raise ValueError(f"the checkpoint of {run_dir} does not hold the parameters of model "
                     f"{run_config.model!r} {model}: {e}") from e
  if "steps" in run_results and int(step) != int(run_results["steps"]):
    raise ValueError(f"the latest checkpoint of {run_dir} is step {step}, but the run reports "
                     f"{run_results['steps']} steps")
  return model, params, run_config, run_results, int(step), test_images


def _run_test_images(run_config, test_images: np.ndarray, n: int) -> np.ndarray:
  """The first ``n`` test images as the run evaluated them (its one fixed binarization)."""
  if not run_config.dynamic_binarization:
    return test_images[:n]
  # The binarization of experiments/iwae draws with JAX's default (partitionable) threefry.
  with jax.threefry_partitionable(True):
    return run_data.binarize_fixed(test_images, int(run_config.seed))[:n]


def _concat_gaps(parts: list) -> inference.gaps.AmortizationGaps:
  return inference.gaps.AmortizationGaps(*(np.concatenate([np.asarray(getattr(p, f)) for p in parts])
                                      for f in inference.gaps.AmortizationGaps._fields))


def run_gaps_study(config, key) -> dict:
  """Gaps of trained VAE / IWAE checkpoints (the MNIST table), batch by batch of test images."""
  gc = config.gaps
  gap_kwargs = _gap_kwargs(config)
  rows, skipped = [], []
  n = int(gc.runs_num_examples)
  bs = min(int(gc.runs_batch_size), n)
  if n % bs:
    raise ValueError(f"gaps.runs_num_examples={n} must be a multiple of gaps.runs_batch_size={bs}")
  check = None
  for name in gc.runs:
    run_dir = os.path.join(str(gc.runs_root), str(name))
    key, k_run = jax.random.split(key)
    try:
      model, params, rc, rr, step, test_images = load_run(run_dir)
    except FileNotFoundError as e:
      print(f"[classical] skipping run {name!r}: {e}")
      skipped.append({"run": str(name), "reason": str(e)})
      continue
    x = jnp.asarray(_run_test_images(rc, test_images, n))
    t0 = time.perf_counter()
    make_vae_log_joint(model)  # one stochastic layer only (raises otherwise)
    parts, own = [], []
    for i, kb in enumerate(jax.random.split(k_run, n // bs)):
      k_gaps, k_own = jax.random.split(kb)
      xb = x[i * bs:(i + 1) * bs]
      parts.append(jax.device_get(inference.gaps.amortization_gaps(
          model, params, xb, k_gaps, **gap_kwargs)))
      own.append(np.asarray(_model_elbo(model, params, xb, k_own, int(gc.num_elbo_samples))))
    gaps = _concat_gaps(parts)
    arch = "-".join(str(w) for w in (model.x_dim,) + model.hidden_dims[0] + model.latent_dims[:1])
    label = (f"{'VAE' if rc.get('estimator') == 'elbo' else 'IWAE'} (k={int(rc.num_samples)}), "
             f"{rc.dataset} {arch}, {rr.get('epochs', float('nan')):g} epochs")
    row = _gap_row(label, gaps, run=str(name), checkpoint_step=step,
                   log_px_source=f"IWAE, mixture proposal, {2 * int(gc.num_iwae_samples)} samples",
                   elbo_from_model_log_weights=float(np.mean(np.concatenate(own))),
                   run_test_elbo=rr.get("test_elbo"),
                   run_test_log_likelihood=rr.get(
                       f"test_log_likelihood_{rr.get('eval_num_samples')}"),
                   run_test_examples=rr.get("test_examples"),
                   seconds=time.perf_counter() - t0)
    # experiments/iwae saves its per-image k=5000 estimates: same images, same binarization.
    npy = os.path.join(run_dir, "test_log_likelihoods.npy")
    if os.path.exists(npy):
      ll = np.load(npy)
      if ll.shape[0] >= n:
        row["run_log_likelihood_same_images"] = float(ll[:n].mean())
    rows.append(row)
    steps2 = int(gc.get("convergence_check_steps", 0))
    if check is None and steps2 and steps2 != int(gc.num_steps):
      # Is the local optimisation converged? Refit q* of the first batch with more steps: the same
      # key gives the same ELBO draws, so the difference is the change of q* alone.
      k_gaps, _ = jax.random.split(jax.random.split(k_run, n // bs)[0])
      kw = dict(gap_kwargs, num_steps=steps2, optimizer=_local_optimizer(config, steps2))
      more = inference.gaps.amortization_gaps(model, params, x[:bs], k_gaps, **kw)
      check = {"run": str(name), "num_examples": bs, "num_steps": int(gc.num_steps),
               "more_steps": steps2,
               "elbo_local": float(np.mean(parts[0].elbo_local)),
               "elbo_local_more_steps": _mean(more.elbo_local),
               "approximation_gap_more_steps": _mean(more.approximation_gap)}
      check["elbo_local_gain"] = check["elbo_local_more_steps"] - check["elbo_local"]
  return {"runs_root": str(gc.runs_root), "num_examples": n,
          "protocol": (f"first {n} test images, each run's fixed test binarization; q* fitted per "
                       f"image from the encoder's output by {int(gc.num_steps)} Adam steps "
                       f"({int(gc.num_samples)} samples each); ELBOs from "
                       f"{int(gc.num_elbo_samples)} common samples"),
          "reference_cremer2018_mnist_ffg": CREMER_MNIST_FFG,
          "rows": rows, "skipped": skipped, "convergence_check": check}


def plot_gaps(gaps: dict, run_gaps: dict, workdir: str) -> list[str]:
  """Stacked bars: approximation + amortization = inference gap, per model, beside the paper's."""
  plt = figures_lib.pyplot()

  rows = list(gaps["rows"]) + list(run_gaps["rows"])
  labels = [r["model"].replace("), ", ")\n", 1) for r in rows]
  approx = [r["approximation_gap"] for r in rows]
  amort = [r["amortization_gap"] for r in rows]
  ref = run_gaps["reference_cremer2018_mnist_ffg"]
  labels.append("Cremer et al. 2018\nMNIST, FFG (Table 2)")
  approx.append(ref["approximation_gap"])
  amort.append(ref["amortization_gap"])
  idx = np.arange(len(labels))
  fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(labels)), 4.2))
  ax.bar(idx, approx, color="C0", label="approximation gap: log p(x) - ELBO(q*)")
  ax.bar(idx, amort, bottom=approx, color="C1", label="amortization gap: ELBO(q*) - ELBO(q_enc)")
  ax.set_xticks(idx, labels, fontsize=6.5, rotation=20, ha="right")
  ax.set_ylabel("nats per example")
  ax.set_title("Inference gap = approximation + amortization (Cremer et al. 2018)", fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(workdir, "amortization_gaps.png")
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path]


# ----------------------------------------------------------------------------- driver


def _strip_private(obj):
  if isinstance(obj, dict):
    return {k: _strip_private(v) for k, v in obj.items() if not k.startswith("_")}
  if isinstance(obj, list):
    return [_strip_private(v) for v in obj]
  return obj


#: Numeric settings, checked before any work (:func:`experiments.common.config.check_fields`).
FIELDS = {
    "seed": "int>=0",
    "gmm.num_points": "int>0", "gmm.num_components": "int>0", "gmm.max_iters": "int>0",
    "gmm.tol": "float>=0", "gmm.reg_covar": "float>=0", "gmm.snapshot_iters": "ints>=0",
    "ppca.latent_dims": "ints>0", "ppca.em_max_iters": "int>0", "ppca.em_tol": "float>=0",
    "ppca.vae_steps": "int>0", "ppca.vae_learning_rate": "float>0",
    "ppca.vae_num_samples": "int>0", "ppca.vae_batch_size": "int>=0",
    "ppca.collapse_latent_dim": "int>0", "ppca.collapse_noise_variances": "floats>0",
    "ppca.collapse_kl_threshold": "float>=0",
    "gaps.num_examples": "int>0", "gaps.num_steps": "int>=0", "gaps.learning_rate": "float>0",
    "gaps.num_samples": "int>0", "gaps.num_elbo_samples": "int>0",
    "gaps.num_iwae_samples": "int>0", "gaps.chunk_size": "int>0",
    "gaps.linear_latent_dim": "int>0", "gaps.vae_latent_dim": "int>0", "gaps.vae_hidden": "ints>0",
    "gaps.vae_steps": "int>0", "gaps.vae_batch_size": "int>0", "gaps.vae_learning_rate": "float>0",
    "gaps.iwae_k": "int>0", "gaps.runs_num_examples": "int>0", "gaps.runs_batch_size": "int>0",
    "gaps.convergence_check_steps": "int>=0",
}


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the three parts and writes ``results.json``, ``results.md`` and the figures.

  Args:
    config: an ``ml_collections.ConfigDict`` (see ``configs/default.py``).
    workdir: output directory (created).

  Returns:
    The results dictionary written to ``results.json``.
  """
  common.check_fields(config, FIELDS)  # bad settings fail here, before any work
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  with jax.threefry_partitionable(bool(config.get("threefry_partitionable", False))):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir: str) -> dict:
  key = jax.random.key(int(config.seed))
  k_gmm, k_ppca, k_gaps, k_runs = jax.random.split(key, 4)
  timings = {}

  t0, c0 = time.perf_counter(), time.process_time()
  with jax.enable_x64(True):  # float64: monotonicity is then visible to ~1e-12
    gmm = gmm_study(config, k_gmm)
    figures = plot_gmm(gmm, workdir)
  timings["gmm_s"] = time.perf_counter() - t0
  timings["gmm_cpu_s"] = time.process_time() - c0

  t0, c0 = time.perf_counter(), time.process_time()
  train = load_flat(config.ppca.dataset, "train")
  test = load_flat(config.ppca.dataset, "test")
  ppca = ppca_study(config, k_ppca, train, test)
  figures += plot_ppca(ppca, workdir)
  timings["ppca_s"] = time.perf_counter() - t0
  timings["ppca_cpu_s"] = time.process_time() - c0

  t0, c0 = time.perf_counter(), time.process_time()
  gaps = gaps_study(config, k_gaps, ppca, train, test)
  timings["gaps_s"] = time.perf_counter() - t0
  timings["gaps_cpu_s"] = time.process_time() - c0

  t0, c0 = time.perf_counter(), time.process_time()
  run_gaps = run_gaps_study(config, k_runs)
  figures += plot_gaps(gaps, run_gaps, workdir)
  timings["run_gaps_s"] = time.perf_counter() - t0
  timings["run_gaps_cpu_s"] = time.process_time() - c0

  results = _strip_private({"gmm": gmm, "ppca": ppca, "gaps": gaps, "run_gaps": run_gaps,
                            "timings": timings,
                            "figures": [os.path.basename(p) for p in figures]})
  results["checks"] = checks(results)
  results_lib.write_json(os.path.join(workdir, "results.json"), results)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(format_results(results) + "\n")
  return results


def checks(results: dict) -> dict:
  """The issue's acceptance criteria, evaluated on this run."""
  rows = results["ppca"]["rows"]
  return {
      "gmm_em_monotone": results["gmm"]["monotone"],
      "gmm_matches_sklearn_same_start": abs(results["gmm"]["log_likelihood_final"]
                                            - results["gmm"]["sklearn_log_likelihood_same_init"])
                                        < 1e-3,
      "ppca_em_matches_closed_form_1e-3_rad": all(r["em_max_angle_rad"] < 1e-3 for r in rows),
      "linear_vae_within_0.1_nat": all(abs(r["vae_minus_ppca_test_ll"]) < 0.1 for r in rows),
      "collapse_matches_prediction": all(c["vae_active"] == c["predicted_active"]
                                         for c in results["ppca"]["collapse"]),
      # log p(x) >= ELBO(q*) >= ELBO(encoder) on average, for every model, up to 0.05 nat of
      # Monte Carlo and optimisation noise (an encoder can already be the best q in its family).
      "gaps_ordered_0.05_nat": all(
          r["log_px"] >= r["elbo_local"] - 0.05 and r["elbo_local"] >= r["elbo_amortized"] - 0.05
          for r in results["gaps"]["rows"] + results.get("run_gaps", {}).get("rows", [])),
  }


def format_results(results: dict) -> str:
  """Markdown tables of the three parts."""
  g = results["gmm"]
  out = ["## 1. EM on a 2-D Gaussian mixture", "",
         f"{g['num_points']} points, {g['num_components']} components: "
         f"{g['em_iterations']} iterations (converged: {g['converged']}), mean log p(x) "
         f"{g['log_likelihood_init']:.4f} -> {g['log_likelihood_final']:.4f} "
         f"(true parameters {g['log_likelihood_true_params']:.4f}; scikit-learn from the same "
         f"start {g['sklearn_log_likelihood_same_init']:.4f}); smallest step "
         f"{g['min_increase']:.2e}.", ""]
  p = results["ppca"]
  out += [f"## 2. PPCA vs linear VAE on {p['dataset']} (D={p['data_dim']}, "
          f"{p['num_train']} train / {p['num_test']} held-out)", "",
          "| q | s^2 (ML) | test LL PPCA closed form | test LL PPCA EM (iters) | test LL linear VAE "
          "| VAE - PPCA | test ELBO linear VAE | max angle EM / VAE (rad) |",
          "|---|---|---|---|---|---|---|---|"]
  for r in p["rows"]:
    out.append(f"| {r['latent_dim']} | {r['noise_variance_ml']:.4f} | {r['test_ll_ppca_ml']:.4f} "
               f"| {r['test_ll_ppca_em']:.4f} ({r['em_iterations']}) "
               f"| {r['test_ll_linear_vae']:.4f} | {r['vae_minus_ppca_test_ll']:+.4f} "
               f"| {r['test_elbo_linear_vae']:.4f} "
               f"| {r['em_max_angle_rad']:.1e} / {r['vae_max_angle_rad']:.1e} |")
  out += ["", "Collapse of the linear VAE at a fixed noise variance s^2 "
          "(active: mean KL > threshold):", "",
          "| s^2 | q | active dims (VAE) | predicted #{lambda_j > s^2} | test LL VAE | "
          "test LL PPCA, same s^2 |", "|---|---|---|---|---|---|"]
  for c in p["collapse"]:
    out.append(f"| {c['noise_variance']:g} | {c['latent_dim']} | {c['vae_active']} "
               f"| {c['predicted_active']} | {c['test_ll_linear_vae']:.4f} "
               f"| {c['test_ll_ppca_fixed_noise']:.4f} |")
  gp = results["gaps"]
  out += ["", f"## 3. Amortization gaps on {gp['dataset']} ({gp['num_examples']} examples; nats)",
          "", gp["note"], "",
          "| model | log p(x) | ELBO (encoder) | ELBO (best local q) | approximation gap "
          "| amortization gap | inference gap |", "|---|---|---|---|---|---|---|"]
  for r in gp["rows"]:
    out.append(f"| {r['model']} | {r['log_px']:.3f} | {r['elbo_amortized']:.3f} "
               f"| {r['elbo_local']:.3f} | {r['approximation_gap']:.3f} "
               f"| {r['amortization_gap']:.3f} | {r['inference_gap']:.3f} |")
    if "approximation_gap_closed_form" in r:
      out.append(f"| same, closed form | {r['log_px']:.3f} | {r['elbo_amortized_closed_form']:.3f} "
                 f"| {r['elbo_local_closed_form']:.3f} "
                 f"| {r['approximation_gap_closed_form']:.3f} "
                 f"| {r['amortization_gap_closed_form']:.3f} "
                 f"| {r['inference_gap_closed_form']:.3f} |")
  rg = results.get("run_gaps")
  if rg is not None:
    out += ["", f"## 4. Amortization gaps of trained models ({rg['num_examples']} test images; "
            "nats)", "", rg["protocol"] + ".", "",
            "| model | log p(x) | ELBO (encoder) | ELBO (best local q) | approximation gap "
            "| amortization gap | inference gap |", "|---|---|---|---|---|---|---|"]
    for r in rg["rows"]:
      out.append(f"| {r['model']} | {r['log_px']:.2f} | {r['elbo_amortized']:.2f} "
                 f"| {r['elbo_local']:.2f} "
                 f"| {r['approximation_gap']:.2f} ± {r.get('approximation_gap_stderr', 0):.2f} "
                 f"| {r['amortization_gap']:.2f} ± {r.get('amortization_gap_stderr', 0):.2f} "
                 f"| {r['inference_gap']:.2f} ± {r.get('inference_gap_stderr', 0):.2f} |")
    ref = rg["reference_cremer2018_mnist_ffg"]
    out.append(f"| Cremer et al. 2018, Table 2, MNIST, FFG (trained to convergence) "
               f"| {ref['log_px']:.2f} | {ref['elbo_amortized']:.2f} | {ref['elbo_local']:.2f} "
               f"| {ref['approximation_gap']:.2f} | {ref['amortization_gap']:.2f} "
               f"| {ref['inference_gap']:.2f} |")
    for sk in rg["skipped"]:
      out.append(f"\nSkipped {sk['run']}: {sk['reason']}")
    c = rg.get("convergence_check")
    if c:
      out += ["", f"Local optimisation check ({c['run']}, {c['num_examples']} images): ELBO(q*) "
              f"{c['elbo_local']:.3f} after {c['num_steps']} steps, "
              f"{c['elbo_local_more_steps']:.3f} "
              f"after {c['more_steps']} (gain {c['elbo_local_gain']:+.3f} nats)."]
  out += ["", "Checks: " + ", ".join(f"{k}={v}" for k, v in results["checks"].items()),
          "Timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in results["timings"].items())]
  return "\n".join(out)
