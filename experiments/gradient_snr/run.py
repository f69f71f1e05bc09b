"""``train_and_evaluate(config, workdir)``: the gradient-SNR study of Rainforth et al. (2018).

On the Gaussian toy model (:mod:`experiments.gradient_snr.toy`) it measures, for each number of
importance samples ``K``, the per-parameter signal-to-noise ratio ``|E g| / std g`` of the
gradient of ``theta = mu`` and ``phi = (A, b)`` under IWAE (reparametrization), DReG and STL
(and, for comparison, the ELBO averaged over ``M = K`` samples), fits the slopes of ``log SNR``
against ``log K``, and compares the variance of REINFORCE-type estimators (plain, running-mean
baseline, VIMCO) with reparametrization at the same sample budget.

Measuring the signal. The IWAE ``phi`` signal falls as ``1/K`` and soon sinks below the noise
floor ``~ 1/sqrt(N)`` of an SNR estimated from ``N`` draws. DReG differs from the IWAE estimator by
a term of mean zero (it is unbiased for the same ``grad_phi L_K``; checked in
``tests/test_estimators.py`` and at every ``K`` here) and has a far smaller variance, so by
default (``config.toy.phi_signal = 'dreg'``) the IWAE ``phi`` SNR is ``|mean of DReG draws| / std
of IWAE draws`` (a control variate), with independent draws. The IWAE-only measurement is reported
beside it twice: with the plain sample mean (floor-limited) and, in a separate sweep with more
draws and ``K <= 100``, with the debiased root-mean-square SNR (``config.toy.direct``).

Writes into ``workdir``: ``config.json``; ``results.json`` (SNR curves, fitted slopes, the checks
of the expected slopes, REINFORCE-vs-reparametrization variances, timings); ``snr_vs_k.png``;
``reinforce_vs_reparam.png``; ``parts/*.json``, each part of the study as it is measured
(``--resume`` reuses them after an interruption; a changed setting is refused, as for training
runs, by :func:`experiments.common.resume.record_config`).

References:
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018.
  Tucker et al., Doubly Reparameterized Gradient Estimators for Monte Carlo Objectives, ICLR 2019.
  Roeder, Wu & Duvenaud, Sticking the Landing, NeurIPS 2017.
  Mnih & Rezende, Variational Inference for Monte Carlo Objectives, ICML 2016.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from dgmjax import diagnostics, estimators, models
from experiments.common import config as common
from experiments.common import figures as figures_lib
from experiments.common import resume as resume_lib
from experiments.common import results as results_lib
from experiments.gradient_snr import mnist, toy

# Expected slopes of log SNR in log K (Rainforth et al. 2018, Theorem 1; Tucker et al. 2019).
EXPECTED = {
    "iwae_theta": (0.4, 0.6),
    "iwae_phi": (-0.6, -0.4),
    "iwae_phi_direct": (-0.6, -0.4),
    "dreg_phi": (0.3, math.inf),
}


MEASUREMENT = (
    "SNR = |E g| / std g per parameter, averaged over the group (theta = mu; phi = (A, b)), for "
    "one datapoint at parameters perturbed from the optimum, N independent draws per K (vmapped "
    "jax.grad over split keys). The IWAE phi signal E g = grad_phi L_K shrinks like 1/K and sinks "
    "below the 1/sqrt(N) floor of a sample mean, so it is estimated with a control variate: the "
    "mean of N independent DReG draws, which differ from the IWAE estimator by a term of mean "
    "zero (their agreement is checked at every K: iwae_vs_dreg_phi_mean). Independently, the "
    "'direct' sweep uses IWAE's own draws only (more draws, K <= 100) with the debiased "
    "root-mean-square SNR, sqrt(mean_i (mean_i^2 - Var_i/N) / Var_i).")


#: Numeric settings of both studies, checked before anything is computed.
FIELDS = {
    "seed": "int>=0",
    "chunk_elements": "int>0",
    "toy.dim": "int>0", "toy.num_data": "int>0", "toy.perturbation": "float>=0",
    "toy.batch_size": "int>0", "toy.num_draws": "int>1", "toy.num_samples": "ints>0",
    "toy.asymptotic_min_k": "int>0", "toy.direct.num_draws": "int>1",
    "toy.direct.num_samples": "ints>0", "reinforce.num_samples": "ints>0",
    "reinforce.num_draws": "int>1", "reinforce.baseline_pilot_steps": "int>=0",
    "reinforce.baseline_decay": "fraction",
    "mnist.batch_size": "int>0", "mnist.num_samples": "ints>0", "mnist.num_draws": "int>1",
}


def prepare(config, workdir: str, *, resume: bool = False, allow_config_change=False) -> bool:
  """Checks the settings and records them in ``workdir/config.json``.

  On ``resume`` a changed setting is refused unless ``allow_config_change`` allows it (see
  :func:`experiments.common.resume.record_config`).

  Returns:
    Whether the parts saved in ``workdir`` may be reused: on ``resume`` with unchanged settings
    only (parts measured with other, allowed, settings are measured again).
  """
  common.check_choice("study", config.get("study"), ("toy", "mnist"))
  common.check_fields(config, FIELDS)
  if config.get("toy") is not None:
    common.check_choice("toy.phi_signal", config.toy.phi_signal, ("dreg", "self"))
    for key in ("num_samples", "direct.num_samples"):
      ks = config.toy.get(key) if "." not in key else config.toy.direct.get("num_samples")
      if ks is not None and len(set(ks)) < 2:
        raise ValueError(f"config.toy.{key} must hold at least two distinct K (the SNR slope "
                         f"in log K is fitted to them), got {tuple(ks)}")
  os.makedirs(workdir, exist_ok=True)
  settings = json.loads(config.to_json_best_effort())
  path = os.path.join(workdir, "config.json")
  changed = False
  if resume and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    saved.pop("resume_changes", None)
    changed = bool(resume_lib.config_changes(saved, settings))
  resume_lib.record_config(workdir, settings, resume=resume, allow_changes=allow_config_change)
  return resume and not changed


def _chunk(config, k: int, b: int, d: int) -> int:
  return max(1, int(config.chunk_elements) // (k * b * d))


def _summary(s: diagnostics.GroupSNR) -> dict:
  return {"mean_snr": float(s.mean_snr), "median_snr": float(s.median_snr),
          "rms_snr": float(s.rms_snr), "rms_snr_debiased": float(s.rms_snr_debiased),
          "norm_snr": float(s.norm_snr), "mean_abs_mean": float(s.mean_abs_mean),
          "mean_std": float(s.mean_std), "total_variance": float(s.total_variance)}


def _estimator_losses(names, x, k: int) -> dict:
  losses = {}
  for name in names:
    if name == "elbo_m":  # the VAE with M = K samples averaged: MIWAE(K, 1)
      losses[name] = toy.make_loss("miwae", x, k, num_groups=k)
    else:
      losses[name] = toy.make_loss(name, x, k)
  return losses


def _fit(ks, rows, field: str, min_k: int = 1) -> float:
  pts = [(k, r[field]) for k, r in zip(ks, rows) if k >= min_k]
  return diagnostics.fit_power_law(*zip(*pts))[0]


def snr_versus_k(config, problem: toy.Problem, key) -> dict:
  """SNR of ``theta`` and ``phi`` against ``K`` for each estimator of ``config.toy.estimators``.

  All estimators at one ``K`` are measured in one compiled pass (:func:`diagnostics.joint_loss`)
  with independent keys (so that their means can be compared with the usual standard errors).
  The IWAE ``phi`` signal is, by default, the mean of the DReG draws (a control variate: DReG
  differs from the IWAE estimator by a term of mean zero); the agreement of the two means is
  checked at every ``K`` and reported as ``iwae_vs_dreg_phi_mean``.
  """
  tc = config.toy
  x = problem.data[:tc.batch_size]
  b, d = x.shape
  names = list(tc.estimators)
  if tc.phi_signal not in ("dreg", "self"):
    raise ValueError(f"toy.phi_signal must be 'dreg' or 'self', got {tc.phi_signal!r}")
  if "iwae" in names and "dreg" not in names:
    names.append("dreg")
  curves = {n: {"theta": [], "phi": []} for n in names}
  iwae_direct, agreement, examples = [], [], {n: {"mu_0": [], "b_0": []} for n in names}
  ks = [int(k) for k in tc.num_samples]
  n_draws = int(tc.num_draws)
  for i, k in enumerate(ks):
    losses = _estimator_losses(names, x, k)
    joint = diagnostics.joint_loss(losses, common_random_numbers=False)
    moments = diagnostics.gradient_moments(
        joint, {n: problem.params for n in names}, jax.random.fold_in(key, i), n_draws,
        chunk_size=_chunk(config, k * len(names), b, d))
    for name in names:
      own = moments.select(name)
      r = diagnostics.snr_from_moments(own)
      phi = r.groups["phi"]
      if name == "iwae":
        iwae_direct.append(_summary(phi))
        cmp = diagnostics.gradient_bias_variance(own, moments.select("dreg"), problem.params,
                                                 None, n_draws).groups["phi"]
        agreement.append({"num_samples": k, "max_abs_z": float(cmp.max_abs_z),
                          "mean_abs_z": float(cmp.mean_abs_z),
                          "relative_difference": float(cmp.relative_bias)})
        if tc.phi_signal == "dreg":
          phi = diagnostics.snr_from_moments(own, signal=moments.select("dreg").mean).groups["phi"]
      curves[name]["theta"].append(_summary(r.groups["theta"]))
      curves[name]["phi"].append(_summary(phi))
      examples[name]["mu_0"].append(float(r.snr["theta"]["mu"][0]))
      examples[name]["b_0"].append(float(r.snr["phi"]["b"][0]))
  slopes, slopes_large_k = {}, {}
  min_k = int(tc.asymptotic_min_k)
  for name, c in curves.items():
    for group in ("theta", "phi"):
      slopes[f"{name}_{group}"] = _fit(ks, c[group], "mean_snr")
      if sum(k >= min_k for k in ks) >= 2:
        slopes_large_k[f"{name}_{group}"] = _fit(ks, c[group], "mean_snr", min_k)
  if iwae_direct:
    slopes["iwae_phi_self_signal"] = _fit(ks, iwae_direct, "mean_snr")
    slopes["iwae_phi_self_signal_debiased"] = _fit(ks, iwae_direct, "rms_snr_debiased")
  return {"num_samples": ks, "num_draws": n_draws, "curves": curves,
          "iwae_phi_self_signal": iwae_direct, "iwae_vs_dreg_phi_mean": agreement,
          "single_parameter_snr": examples, "slopes": slopes,
          "slopes_asymptotic": {"min_k": min_k, "slopes": slopes_large_k},
          "noise_floor": 1.0 / math.sqrt(n_draws)}


def direct_snr_versus_k(config, problem: toy.Problem, key) -> dict:
  """IWAE's SNR with the signal from its own draws only (no control variate), debiased.

  With ``N`` draws the sample mean's square overestimates ``E[g]^2`` by ``Var[g] / N``; the
  debiased root-mean-square SNR subtracts it (:class:`dgmjax.diagnostics.GroupSNR`), which resolves
  group SNRs below the per-parameter floor ``1/sqrt(N)``. Many draws and moderate ``K`` keep the
  signal resolved everywhere on the sweep.
  """
  dc = config.toy.direct
  x = problem.data[:config.toy.batch_size]
  b, d = x.shape
  ks = [int(k) for k in dc.num_samples]
  rows = {"theta": [], "phi": []}
  for i, k in enumerate(ks):
    m = diagnostics.gradient_moments(toy.make_loss("iwae", x, k), problem.params,
                                     jax.random.fold_in(key, i), int(dc.num_draws),
                                     chunk_size=_chunk(config, k, b, d))
    r = diagnostics.snr_from_moments(m)
    for group in rows:
      rows[group].append(_summary(r.groups[group]))
  slopes = {f"iwae_{g}_direct": _fit(ks, rows[g], "rms_snr_debiased") for g in rows}
  return {"num_samples": ks, "num_draws": int(dc.num_draws), "curves": rows, "slopes": slopes,
          "noise_floor": 1.0 / math.sqrt(int(dc.num_draws))}


def reinforce_versus_reparam(config, problem: toy.Problem, key) -> dict:
  """Variance of score-function estimators against reparametrization at equal ``K``.

  For each ``K`` and objective (ELBO averaged over ``K`` samples, IWAE), REINFORCE without a
  baseline, with a running-mean baseline (fitted by pure updates on pilot learning signals) and,
  for IWAE, VIMCO, each against the reparametrization gradient of the same bound: the ratio of the
  total ``phi`` variances, and the largest ``|z|`` of the difference of means (unbiasedness).
  """
  rc = config.reinforce
  x = problem.data[:config.toy.batch_size]
  b, d = x.shape
  objectives_ = tuple(rc.objectives)
  rows = []
  for i, k in enumerate(int(k) for k in rc.num_samples):
    k_pilot, k_cmp = jax.random.split(jax.random.fold_in(key, i))

    @jax.jit
    def pilot(keys, k=k):
      def step(states, kk):
        terms = models.log_weight_terms(toy.MODEL, problem.params, x, kk, k)
        return tuple(estimators.running_mean_update(
            st, estimators.learning_signal(terms.log_w, bound=o), float(rc.baseline_decay))
                     for st, o in zip(states, objectives_)), None
      init = tuple(estimators.running_mean_init() for _ in objectives_)
      return jax.lax.scan(step, init, keys)[0]

    states = pilot(jax.random.split(k_pilot, int(rc.baseline_pilot_steps)))
    baselines = {o: st.mean for o, st in zip(objectives_, states)}
    losses = {}
    for o in objectives_:
      losses[f"{o}:reparam"] = toy.make_loss(o, x, k)
      losses[f"{o}:reinforce"] = toy.make_loss("reinforce", x, k, bound=o)
      losses[f"{o}:reinforce_running_mean"] = toy.make_loss("reinforce", x, k, bound=o,
                                                            baseline=baselines[o])
      if o == "iwae" and k >= 2:
        losses[f"{o}:vimco"] = toy.make_loss("vimco", x, k)
    joint = diagnostics.joint_loss(losses, common_random_numbers=False)
    moments = diagnostics.gradient_moments(
        joint, {n: problem.params for n in losses}, k_cmp, int(rc.num_draws),
        chunk_size=_chunk(config, k * len(losses), b, d))
    for name in losses:
      o, est = name.split(":")
      if est == "reparam":
        continue
      r = diagnostics.gradient_bias_variance(moments.select(name),
                                             moments.select(f"{o}:reparam"), problem.params,
                                             None, int(rc.num_draws))
      phi = r.groups["phi"]
      rows.append({
          "num_samples": k, "objective": o, "estimator": est,
          "baseline": float(baselines[o]) if est == "reinforce_running_mean" else None,
          "phi_total_variance": float(phi.total_variance),
          "reparam_phi_total_variance": float(phi.reference_total_variance),
          "variance_ratio": float(phi.variance_ratio),
          "phi_max_abs_z": float(phi.max_abs_z),
          "theta_max_abs_z": float(r.groups["theta"].max_abs_z),
      })
  return {"rows": rows, "num_draws": int(rc.num_draws)}


def _checks(slopes: dict) -> dict:
  out = {}
  for name, (lo, hi) in EXPECTED.items():
    if name in slopes:
      v = slopes[name]
      out[name] = {"slope": v, "expected": [lo, None if math.isinf(hi) else hi],
                   "ok": bool(lo <= v <= hi)}
  return out


# ----------------------------------------------------------------------------- figures


_LABELS = {"iwae": "IWAE", "dreg": "DReG", "stl": "STL", "elbo_m": "VAE (M = K samples)"}
_COLORS = {"iwae": "C0", "dreg": "C2", "stl": "C1", "elbo_m": "C3"}


def plot_snr(path: str, snr: dict, direct: dict | None = None) -> str:
  """Log-log SNR against K for theta and phi, with fitted slopes in the legend."""
  plt = figures_lib.pyplot()
  ks = np.asarray(snr["num_samples"], np.float64)
  fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
  for ax, group in zip(axes, ("theta", "phi")):
    for name, c in snr["curves"].items():
      if group == "theta" and name in ("dreg", "stl"):
        continue  # identical theta gradient to IWAE by construction
      vals = np.asarray([row["mean_snr"] for row in c[group]])
      if not len(vals):
        continue
      slope, icpt = diagnostics.fit_power_law(ks, vals)
      label = _LABELS.get(name, name)
      if name == "iwae" and group == "phi":
        label += " (control-variate signal)"
      ax.loglog(ks, vals, "o-", color=_COLORS.get(name), label=f"{label}, slope {slope:+.2f}")
      ax.loglog(ks, np.exp(icpt) * ks ** slope, ":", color=_COLORS.get(name), alpha=0.6)
    if group == "phi" and snr["iwae_phi_self_signal"]:
      own = [row["mean_snr"] for row in snr["iwae_phi_self_signal"]]
      ax.loglog(ks, own, "x", color="C0", alpha=0.7,
                label=f"IWAE, own mean (N={snr['num_draws']}), floor-limited")
      ax.axhline(0.8 * snr["noise_floor"], color="gray", ls="--", lw=1,
                 label=r"floor of mean |SNR|: $0.8/\sqrt{N}$")
    if direct is not None:
      dk = np.asarray(direct["num_samples"], np.float64)
      vals = np.asarray([row["rms_snr_debiased"] for row in direct["curves"][group]])
      slope = direct["slopes"][f"iwae_{group}_direct"]
      ax.loglog(dk, vals, "^--", color="C4", ms=5,
                label=f"IWAE direct, debiased rms (N={direct['num_draws']}), slope {slope:+.2f}")
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel("per-parameter SNR (mean over the group)")
    ax.set_title({"theta": r"generative network $\theta = \mu$",
                  "phi": r"inference network $\phi = (A, b)$"}[group])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
  fig.suptitle("Gradient SNR on the Gaussian toy model (Rainforth et al. 2018)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_reinforce(path: str, rf: dict) -> str:
  """Total phi-gradient variance against K: score-function estimators vs reparametrization."""
  plt = figures_lib.pyplot()
  rows = rf["rows"]
  objectives = sorted({r["objective"] for r in rows})
  fig, axes = plt.subplots(1, len(objectives), figsize=(5.5 * len(objectives), 4.2),
                           squeeze=False)
  for ax, obj in zip(axes[0], objectives):
    sub = [r for r in rows if r["objective"] == obj]
    ks = sorted({r["num_samples"] for r in sub})
    ref = [next(r["reparam_phi_total_variance"] for r in sub if r["num_samples"] == k)
           for k in ks]
    ax.loglog(ks, ref, "o-", color="k", label="reparametrization")
    for j, name in enumerate(sorted({r["estimator"] for r in sub})):
      pts = [(r["num_samples"], r["phi_total_variance"]) for r in sub if r["estimator"] == name]
      ax.loglog(*zip(*pts), "s--", color=f"C{j}", label=name)
    ax.set_xlabel("K (samples per gradient)")
    ax.set_ylabel(r"total variance of the $\phi$ gradient")
    ax.set_title(f"{obj.upper()}: equal sample budget")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- entry point


def train_and_evaluate(config, workdir: str, *, resume: bool = False,
                       allow_config_change=False) -> dict:
  """Runs the study of ``config`` and writes JSON results and PNG figures into ``workdir``.

  Args:
    config: an ``ml_collections.ConfigDict`` (see ``configs/toy.py``).
    workdir: output directory (created).
    resume: reuse the parts already measured in ``workdir`` (``parts/*.json``) by an earlier,
      interrupted run with the same settings; a changed setting is refused.
    allow_config_change: with ``resume``, allow changed settings (``True`` or key globs); the
      change is recorded in ``config.json`` and every part is measured again.

  Returns:
    The results dictionary written to ``results.json``.
  """
  resume = prepare(config, workdir, resume=resume, allow_config_change=allow_config_change)
  if config.study == "mnist":
    return mnist.measure(config, workdir, resume=resume)
  tc = config.toy
  key = jax.random.key(int(config.seed))
  k_problem, k_snr, k_rf, k_direct = jax.random.split(key, 4)
  problem = toy.make_problem(k_problem, int(tc.dim), int(tc.num_data), float(tc.perturbation))
  timings = {}
  snr, timings["snr_versus_k_s"] = results_lib.part(workdir, "snr_versus_k", resume,
                                        lambda: snr_versus_k(config, problem, k_snr))
  slopes = dict(snr["slopes"])
  results = {"study": "toy", "model": "Rainforth et al. (2018) Gaussian, D=%d" % int(tc.dim),
             "num_draws": int(tc.num_draws), "batch_size": int(tc.batch_size),
             "perturbation": float(tc.perturbation), "phi_signal": tc.phi_signal,
             "measurement": MEASUREMENT, "snr": snr}
  if tc.direct.enabled:
    results["direct"], timings["direct_snr_versus_k_s"] = results_lib.part(
        workdir, "direct_snr_versus_k", resume,
        lambda: direct_snr_versus_k(config, problem, k_direct))
    slopes.update(results["direct"]["slopes"])
  results["slopes"] = slopes
  results["checks"] = _checks(slopes)
  if config.reinforce.enabled:
    results["reinforce_vs_reparam"], timings["reinforce_vs_reparam_s"] = results_lib.part(
        workdir, "reinforce_versus_reparam", resume,
        lambda: reinforce_versus_reparam(config, problem, k_rf))
  results["timings"] = timings
  results["figures"] = [os.path.basename(plot_snr(os.path.join(workdir, "snr_vs_k.png"), snr,
                                                  results.get("direct")))]
  if "reinforce_vs_reparam" in results:
    results["figures"].append(os.path.basename(plot_reinforce(
        os.path.join(workdir, "reinforce_vs_reparam.png"), results["reinforce_vs_reparam"])))
  results_lib.write_json(os.path.join(workdir, "results.json"), results)
  return results


def format_results(results: dict) -> str:
  """A short text summary: slopes and checks."""
  if "points" in results:  # the MNIST study
    lines = ["fitted slopes of log SNR in log K (debiased rms SNR):"]
    for p in results["points"]:
      lines.append(f"  {p['label']}:")
      for name, v in p["slopes"].items():
        if v is not None and name.endswith("rms_snr_debiased"):
          lines.append(f"    {name[:-len('_rms_snr_debiased')]:12s} {v:+.3f}")
    return "\n".join(lines)
  lines = ["fitted slopes of log SNR in log K:"]
  for name, v in results["slopes"].items():
    check = results["checks"].get(name)
    tag = "" if check is None else ("  [ok]" if check["ok"] else "  [OUT OF RANGE]")
    lines.append(f"  {name:18s} {v:+.3f}{tag}")
  asym = results["snr"].get("slopes_asymptotic", {})
  if asym.get("slopes"):
    lines.append(f"fitted on K >= {asym['min_k']} only:")
    for name, v in asym["slopes"].items():
      lines.append(f"  {name:18s} {v:+.3f}")
  for row in results.get("reinforce_vs_reparam", {}).get("rows", []):
    lines.append(f"  K={row['num_samples']:<5d} {row['objective']:4s} {row['estimator']:24s} "
                 f"phi variance x{row['variance_ratio']:.3g} of reparam "
                 f"(max |z| {row['phi_max_abs_z']:.2f})")
  return "\n".join(lines)
