"""``train_and_evaluate(config, workdir)``: one VAE per prior (or IAF posterior) at equal budget.

Every variant shares the architecture, the optimiser, the schedule, the number of steps, the
initial encoder / decoder weights and the minibatch order; only ``p(z)`` (or ``q(z|x)``) differs.
Writes into ``workdir``:
  ``<variant>/results.json``   test ELBO, IWAE bound, k=5000 NLL, ELBO surgery (average KL =
                               mutual information + marginal KL), active units, timings;
  ``<variant>/samples.png``, ``<variant>/reconstructions.png``, ``<variant>/training_curve.png``;
  ``results.json``             the table over every variant found in ``workdir`` (runs sharing a
                               workdir add up), beside Tomczak & Welling's reported number;
  ``comparison.png``           NLL per variant, and the average KL split into MI + marginal KL;
  ``two_d.png``, ``two_d.json`` aggregated posterior against prior for a 2-latent VAE per prior.

References:
  Tomczak & Welling, VAE with a VampPrior, AISTATS 2018.
  Hoffman & Johnson, ELBO surgery, NIPS 2016 workshop.
  Kingma et al., Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS 2016.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import diagnostics, evaluation, losses, models, plotting, training
from dgmjax.models import vae
from experiments.common import burda
from experiments.common import data as data_lib
from experiments.common import figures as figures_lib
from experiments.common import resume as resume_lib
from experiments.common import results as results_lib
from experiments.common import run as run_lib

# Test log-likelihoods reported by Tomczak & Welling (2018) for the one-layer VAE on static MNIST
# (their architecture, warm-up and training length differ from the runs here).
PAPER = {
    "source": "Tomczak & Welling, VAE with a VampPrior, AISTATS 2018 (static MNIST, VAE L=1)",
    "test_log_likelihood": {"vamp": -85.57},
}

VARIANT_LABELS = {"standard": "N(0, I)", "mog": "MoG", "vamp": "VampPrior",
                  "realnvp": "RealNVP prior", "maf": "MAF prior", "iaf": "IAF posterior"}

#: Numeric settings, checked before any data is loaded: those of Burda et al.'s run and these.
FIELDS = {
    **burda.FIELDS, "num_components": "int>0",
    "num_pseudo_inputs": "int>0", "flow_layers": "int>0", "flow_hidden": "ints>0",
    "surgery.num_samples": "int>0", "surgery.batch_size": "int>0", "surgery.chunk_size": "int>0",
    "two_d.hidden": "ints>0", "two_d.num_epochs": "float>=0", "two_d.num_examples": "int>0",
    "two_d.grid_size": "int>1",
}
#: Settings that do not alter what one variant's folder trains (other variants share a workdir).
VARIANT_IGNORED = resume_lib.RESUME_IGNORED + ("variants", "two_d.*")
TWO_D_IGNORED = resume_lib.RESUME_IGNORED + ("variants", "two_d.enabled", "two_d.priors")


def variant_spec(variant: str) -> tuple[str, str]:
  """``(prior, posterior)`` of a variant name."""
  if variant == "iaf":
    return "standard", "iaf"
  if variant in ("standard", "mog", "vamp", "realnvp", "maf"):
    return variant, "gaussian"
  raise ValueError(f"variant must be one of {tuple(VARIANT_LABELS)}, got {variant!r}")


def build_model(config, variant: str, image_shape, *, latent_dims=None, hidden_dims=None,
                model_name=None) -> models.PriorVAE:
  prior, posterior = variant_spec(variant)
  return vae.make_prior_vae(
      model_name or config.model, image_shape, prior=prior, posterior=posterior,
      latent_dims=latent_dims or config.get("latent_dims") or None,
      hidden_dims=hidden_dims or config.get("hidden_dims") or None,
      num_components=config.num_components, num_pseudo_inputs=config.num_pseudo_inputs,
      flow_layers=config.flow_layers, flow_hidden=tuple(config.flow_hidden))


def eval_subset(config, test_images: np.ndarray) -> np.ndarray:
  """The binarized test images to evaluate on (a seeded random subset if configured)."""
  test_x = (data_lib.binarize_fixed(test_images, config.seed) if config.dynamic_binarization
            else test_images)
  n = config.eval.get("num_examples") or 0
  if n and n < test_x.shape[0]:
    if config.eval.get("random_subset"):
      idx = np.sort(np.random.RandomState(config.seed).choice(test_x.shape[0], n, replace=False))
      test_x = test_x[idx]
    else:
      test_x = test_x[:n]
  return test_x


def _train(config, model, train_images, workdir, num_epochs, seed_offset=0, resume=False):
  root = jax.random.key(config.seed)
  init_key = jax.random.fold_in(root, 1 + seed_offset)
  data_mean = train_images.mean(axis=0) if config.init_output_bias else None
  params = model.init(init_key, data_mean=data_mean)
  steps_per_epoch = run_lib.steps_per_epoch(train_images.shape[0], config.batch_size)
  cfg = config.copy_and_resolve_references()
  cfg.num_epochs = float(num_epochs)
  optimizer, schedule, num_steps = run_lib.make_optimizer(cfg, steps_per_epoch)
  loss_fn = losses.make_loss(model, config.estimator, config.num_samples)
  log_every = max(1, min(config.log_every_steps, num_steps))
  if not resume:  # a fresh run; with resume, fit continues from the latest checkpoint
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      os.remove(os.path.join(workdir, "metrics.jsonl"))
  state, summary = run_lib.fit(
      config, loss_fn, params, train_images, workdir, resume=resume, optimizer=optimizer,
      num_steps=num_steps, dynamic_binarization=config.dynamic_binarization,
      shuffle=config.shuffle,
      checkpoint_every=run_lib.round_up(
          int(round(config.checkpoint_every_epochs * steps_per_epoch)), log_every),
      log_every=log_every, max_consecutive_nonfinite=config.max_consecutive_nonfinite,
      learning_rate_fn=schedule)
  return state.params, summary, num_steps, steps_per_epoch


def run_variant(config, variant: str, train_images, test_x, workdir: str, resume=False) -> dict:
  """Trains and evaluates one variant; writes ``workdir/<variant>/results.json`` and figures.

  Returns ``{"stopped_at": step}`` instead when ``config.stop_after_steps`` stopped the training.
  """
  t0 = time.time()
  vdir = os.path.join(workdir, variant)
  os.makedirs(vdir, exist_ok=True)
  model = build_model(config, variant, train_images.shape[1:])
  params, summary, num_steps, steps_per_epoch = _train(config, model, train_images, vdir,
                                                       config.num_epochs, resume=resume)
  if "stopped_at" in summary:
    return {"stopped_at": summary["stopped_at"]}
  t_eval = time.time()
  eval_key = jax.random.fold_in(jax.random.key(config.seed), 2)
  k_bounds, k_nll, k_surgery, k_au, k_fig = jax.random.split(eval_key, 5)
  bounds = evaluation.bounds(model, params, test_x, k_bounds,
                             ks=tuple(config.eval.bound_ks), batch_size=config.eval.batch_size)
  ll = evaluation.log_likelihood(model, params, test_x, k_nll,
                                 num_samples=config.eval.num_samples,
                                 sample_chunk=config.eval.sample_chunk,
                                 batch_size=config.eval.batch_size,
                                 progress=run_lib.show_progress(config))
  surgery = diagnostics.elbo_surgery(model, params, test_x, k_surgery,
                                     num_samples=config.surgery.num_samples,
                                     batch_size=config.surgery.batch_size,
                                     chunk_size=config.surgery.chunk_size)
  au = diagnostics.active_units(model, params, test_x, k_au,
                               threshold=config.eval.active_threshold)
  figures = evaluation.write_sample_figures(model, params, test_x, k_fig, vdir)
  figures["training_curve"] = plotting.save_training_curve(
      os.path.join(vdir, "training_curve.png"), os.path.join(vdir, "metrics.jsonl"))
  prior, posterior = variant_spec(variant)
  results = {
      "variant": variant, "label": VARIANT_LABELS[variant], "prior": prior,
      "posterior": posterior, "dataset": config.dataset, "model": config.model,
      "latent_dim": model.latent_dim, "estimator": config.estimator, "k": config.num_samples,
      "epochs": num_steps / steps_per_epoch, "steps": num_steps, "seed": config.seed,
      "num_params": int(sum(a.size for a in jax.tree_util.tree_leaves(params))),
      "train_examples": int(train_images.shape[0]), "test_examples": int(test_x.shape[0]),
      "test_elbo": bounds["elbo"],
      **{f"test_iwae_{k}": bounds[f"iwae_{k}"] for k in config.eval.bound_ks},
      "test_log_likelihood": float(ll.mean()),
      "test_nll": float(-ll.mean()),
      "test_nll_stderr": results_lib.stderr(ll),
      "eval_num_samples": config.eval.num_samples,
      **{k: v for k, v in surgery.as_dict().items() if k not in ("num_examples", "num_samples")},
      "surgery_num_samples": surgery.num_samples,
      "active_units": int(sum(au["active"])),
      "nonfinite_steps": summary["nonfinite_total"], "resumed_from": summary["resumed_from"],
      "train_seconds": summary["train_seconds"], "eval_seconds": time.time() - t_eval,
      "total_seconds": time.time() - t0,
      "figures": {k: os.path.basename(v) for k, v in figures.items()},
  }
  np.save(os.path.join(vdir, "test_log_likelihood.npy"), ll)  # per image, for paired comparisons
  if variant == "standard":  # KL per dimension is defined against the factorised N(0, I)
    kl_dims = diagnostics.kl_per_dimension(model.base, params["base"], test_x,
                                           batch_size=config.eval.batch_size)
    results["kl_per_dimension"] = [float(v) for v in kl_dims]
  results_lib.write_json(os.path.join(vdir, "results.json"), results)
  return results


# ----------------------------------------------------------------------------- 2-D figure


def run_two_d(config, train_images, workdir: str, resume=False) -> dict:
  """A 2-latent VAE per prior: the prior density beside the aggregated posterior ``q_agg(z)``."""
  plt = figures_lib.pyplot()
  td = config.two_d
  n = min(td.num_examples, train_images.shape[0])
  x_data = data_lib.binarize_fixed(train_images[:n], config.seed + 1)
  out, cols = {}, []
  for i, name in enumerate(td.priors):
    model = build_model(config, name, train_images.shape[1:], latent_dims=(2,),
                        hidden_dims=(tuple(td.hidden),), model_name="custom")
    wdir = os.path.join(workdir, "two_d", name)
    os.makedirs(wdir, exist_ok=True)
    params, summary, _, _ = _train(config, model, train_images, wdir, td.num_epochs,
                                   seed_offset=0, resume=resume)
    if "stopped_at" in summary:
      return {"stopped_at": summary["stopped_at"]}
    means = np.asarray(models.posterior_means(model, params, x_data, jax.random.key(0))[0])
    lim = float(np.clip(np.quantile(np.abs(means), 0.99) * 1.3, 3.0, 10.0))
    g = np.linspace(-lim, lim, td.grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    log_p = np.asarray(jax.jit(model.log_prior)(params, jnp.asarray(grid)))
    log_agg = diagnostics.aggregate_posterior_log_prob(model, params, grid, x_data,
                                                       chunk_size=config.surgery.chunk_size)
    s = diagnostics.elbo_surgery(model, params, x_data, jax.random.key(1),
                                 num_samples=config.surgery.num_samples,
                                 batch_size=config.surgery.batch_size,
                                 chunk_size=config.surgery.chunk_size)
    out[name] = {**{k: v for k, v in s.as_dict().items()}, "extent": lim}
    cols.append((name, g, log_p.reshape(len(g), len(g)), log_agg.reshape(len(g), len(g)),
                 means, s))
  fig, axes = plt.subplots(2, len(cols), figsize=(3.2 * len(cols), 6.4), squeeze=False)
  for j, (name, g, lp, la, means, s) in enumerate(cols):
    ext = (g[0], g[-1], g[0], g[-1])
    axes[0, j].imshow(np.exp(lp), origin="lower", extent=ext, cmap="viridis")
    axes[0, j].set_title(f"prior p(z): {VARIANT_LABELS[name]}", fontsize=9)
    axes[1, j].imshow(np.exp(la), origin="lower", extent=ext, cmap="viridis")
    axes[1, j].scatter(means[:, 0], means[:, 1], s=1, c="w", alpha=0.3)
    axes[1, j].set_xlim(ext[0], ext[1])  # the density's extent; outlying means are clipped
    axes[1, j].set_ylim(ext[2], ext[3])
    axes[1, j].set_title(f"q_agg(z): MI {s.mutual_information:.2f}, "
                         f"KL(q_agg||p) {s.marginal_kl:.2f}", fontsize=8)
  fig.suptitle("2-latent VAE: prior (top) vs aggregated posterior with encoder means (bottom)",
               fontsize=10)
  path = os.path.join(workdir, "two_d.png")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  plt.close(fig)
  with open(os.path.join(workdir, "two_d.json"), "w") as f:
    json.dump(out, f, indent=2)
  return out


# ----------------------------------------------------------------------------- summary


def collect(workdir: str) -> dict:
  """Every ``<variant>/results.json`` in ``workdir``, in the standard order."""
  found = {}
  for v in VARIANT_LABELS:
    p = os.path.join(workdir, v, "results.json")
    if os.path.exists(p):
      with open(p) as f:
        found[v] = json.load(f)
  return found


def paired_differences(workdir: str, variants: dict) -> None:
  """Adds each variant's NLL minus the standard prior's, with the standard error of the paired
  per-image differences (every variant is evaluated on the same test images with the same keys).
  """
  ref_path = os.path.join(workdir, "standard", "test_log_likelihood.npy")
  if not os.path.exists(ref_path):
    return
  ref = np.load(ref_path)
  for v, r in variants.items():
    p = os.path.join(workdir, v, "test_log_likelihood.npy")
    if v == "standard" or not os.path.exists(p):
      continue
    ll = np.load(p)
    if ll.shape != ref.shape:
      continue
    d = ref - ll  # per image: NLL(variant) - NLL(standard) = log p_standard - log p_variant
    r["nll_minus_standard"] = float(d.mean())
    r["nll_minus_standard_stderr"] = results_lib.stderr(d)


def save_comparison(path: str, variants: dict) -> str:
  plt = figures_lib.pyplot()
  names = list(variants)
  labels = [VARIANT_LABELS[v] for v in names]
  x = np.arange(len(names))
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
  a.bar(x, [variants[v]["test_nll"] for v in names],
        yerr=[variants[v]["test_nll_stderr"] for v in names], color="C0")
  a.set_xticks(x, labels, rotation=30, ha="right")
  a.set_ylabel("test NLL (nats, k=5000)")
  lo = min(variants[v]["test_nll"] for v in names)
  a.set_ylim(lo - 5, max(variants[v]["test_nll"] for v in names) + 3)
  mi = np.array([variants[v]["mutual_information"] for v in names])
  mkl = np.array([variants[v]["marginal_kl"] for v in names])
  b.bar(x, mi, label="mutual information I[n; z]", color="C1")
  b.bar(x, mkl, bottom=mi, label="marginal KL(q_agg || p)", color="C2")
  b.plot(x, [variants[v]["average_kl"] for v in names], "k_", ms=20, label="average KL")
  b.axhline(variants[names[0]]["log_num_examples"], color="gray", ls=":", label="log N")
  b.set_xticks(x, labels, rotation=30, ha="right")
  b.set_ylabel("nats")
  b.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def train_and_evaluate(config, workdir: str, *, resume: bool = False,
                       allow_config_change=False) -> dict:
  """Runs ``config.variants`` (and the 2-D figure if enabled); returns the combined table.

  Settings and data are validated before any training (see
  :func:`experiments.common.data.load_images`). Each variant's folder records the settings it was
  trained with (``<variant>/config.json``, as ``two_d/<prior>/config.json``); with ``resume`` each
  continues from its latest checkpoint, and a changed training setting is refused unless
  ``allow_config_change`` allows it (``True`` or key globs; see
  :func:`experiments.common.resume.record_config`).

  Returns:
    The table, or ``{"stopped_at": step, "variant": name}`` when ``config.stop_after_steps``
    stopped a training (tests: a simulated kill).
  """
  t0 = time.time()
  config = burda.prepare_config(config, FIELDS)  # bad settings fail before anything is done
  for v in config.variants:
    variant_spec(v)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  # a resumed variant continues what was trained: a changed training setting is refused, for
  # every folder before any training
  settings = json.loads(config.to_json_best_effort())
  two_d_priors = tuple(config.two_d.priors) if config.two_d.enabled else ()
  for folder, ignore in ([(v, VARIANT_IGNORED) for v in config.variants]
                         + [(os.path.join("two_d", p), TWO_D_IGNORED) for p in two_d_priors]):
    resume_lib.record_config(os.path.join(workdir, folder), settings, resume=resume,
                             allow_changes=allow_config_change, ignore=ignore)
  image_shape = tuple(config.image_shape) if config.get("image_shape") else None
  train_images = data_lib.load_images(config, "train", image_shape)
  test_images = data_lib.load_images(config, "test", train_images.shape[1:])
  if config.get("max_train_examples"):
    train_images = train_images[:config.max_train_examples]
  test_x = eval_subset(config, test_images)
  for v in config.variants:
    out = run_variant(config, v, train_images, test_x, workdir, resume=resume)
    if "stopped_at" in out:
      return {"stopped_at": out["stopped_at"], "variant": v}
  two_d = None
  if config.two_d.enabled and config.two_d.priors:
    td_images = train_images
    if config.two_d.dataset and config.two_d.dataset != config.dataset:
      c2 = config.copy_and_resolve_references()
      c2.dataset = config.two_d.dataset
      td_images = data_lib.load_images(c2, "train")
    two_d = run_two_d(config, td_images, workdir, resume=resume)
    if "stopped_at" in two_d:
      return {"stopped_at": two_d["stopped_at"], "variant": "two_d"}
  elif os.path.exists(os.path.join(workdir, "two_d.json")):
    with open(os.path.join(workdir, "two_d.json")) as f:
      two_d = json.load(f)
  variants = collect(workdir)
  paired_differences(workdir, variants)
  results = {"dataset": config.dataset, "variants": variants, "paper": PAPER, "two_d": two_d,
             "seconds": time.time() - t0}
  if variants:
    results["figures"] = {"comparison": os.path.basename(
        save_comparison(os.path.join(workdir, "comparison.png"), variants))}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def format_table(results: dict) -> str:
  """The comparison table as text (nats; NLL with its standard error)."""
  lines = [f"{results['dataset']}: " + "variant          ELBO      NLL(k=5000)     MI    "
           "marg.KL  avg.KL  paper NLL (static MNIST)"]
  paper = results["paper"]["test_log_likelihood"]
  for v, r in results["variants"].items():
    ref = f"{-paper[v]:.2f}" if v in paper else ""
    diff = (f"  vs N(0, I): {r['nll_minus_standard']:+.2f}+-{r['nll_minus_standard_stderr']:.2f}"
            if "nll_minus_standard" in r else "")
    lines.append(f"  {r['label']:<15s} {r['test_elbo']:8.2f}  {r['test_nll']:7.2f}+-"
                 f"{r['test_nll_stderr']:.2f}  {r['mutual_information']:6.2f}  "
                 f"{r['marginal_kl']:6.2f}  {r['average_kl']:6.2f}  {ref}{diff}")
  if results.get("two_d"):
    for name, s in results["two_d"].items():
      lines.append(f"  2-D {VARIANT_LABELS[name]:<15s} MI {s['mutual_information']:.2f}  "
                   f"marg.KL {s['marginal_kl']:.2f}  avg.KL {s['average_kl']:.2f}")
  return "\n".join(lines)
