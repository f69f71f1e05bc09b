"""Discrete latents: the Gumbel-softmax categorical VAE and VQ-VAE / VQ-VAE-2 with a PixelCNN prior.

Three studies, chosen by ``config.study``:

``categorical``  Jang et al. (2017)'s categorical VAE (20 x 10 latents, MLP 512-256, ReLU) on fixed-
                 binarization MNIST, one run per estimator (Gumbel-softmax, straight-through,
                 REINFORCE, VIMCO, NVIL; see :data:`ESTIMATORS`) at equal budget; test negative
                 ELBO with discrete samples and the k=1000 importance-sampled NLL. Figures:
                 samples, reconstructions, temperature schedule beside the training ELBO.
``vqvae``        VQ-VAE (one level) and VQ-VAE-2 (two levels) on Fashion-MNIST; then a gated
                 PixelCNN prior fitted on the code maps (VQ-VAE-2: top prior, and a bottom prior
                 conditioned on the top codes). Test reconstruction MSE, the VQ-VAE bound in
                 bits/dim with the uniform and the PixelCNN prior, codebook usage and perplexity
                 over the test set. Figures: reconstructions, prior samples, usage histogram.
``codebook``     codebook health: a deliberately bad codebook initialisation (codes far from the
                 encoder outputs) trained without EMA or restarts, and with dead-code restarts;
                 usage and perplexity of each.

Each run writes ``results.json`` (plus ``metrics.jsonl``, checkpoints, figures) into its own
sub-directory of the workdir, and the study writes ``summary.json``; ``--resume`` continues.
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

from dgmjax import estimators, evaluation, losses, plotting, training, vq
from dgmjax.models import categorical_vae, vqvae
from dgmjax.nn import NVILBaseline, pixelcnn
from experiments.common import config as common
from experiments.common import data as data_lib
from experiments.common import figures as figures_lib
from experiments.common import resume as resume_lib
from experiments.common import results as results_lib
from experiments.common import run as run_lib

# Jang et al. 2017, Table 2 (negative ELBO, binarized MNIST, categorical VAE 20x10)
JANG_TABLE2 = {"gumbel": 101.5, "st": 107.8}


def _splits(config) -> tuple[np.ndarray, np.ndarray]:
  """Validated train and test images, cut to ``max_train_examples`` / ``eval.num_examples``."""
  train_x, test_x = data_lib.load_images(config, "train"), data_lib.load_images(config, "test")
  if config.get("max_train_examples"):
    train_x = train_x[:config.max_train_examples]
  return train_x, data_lib.random_subset(test_x, config.eval.get("num_examples"), config.seed)


def _fit(loss_fn, params, train_x, config, workdir, resume, *, post_update=None):
  steps_per_epoch = run_lib.steps_per_epoch(train_x.shape[0], config.batch_size)
  num_steps = run_lib.epochs_to_steps(config.num_epochs, steps_per_epoch)
  log_every = max(1, min(config.log_every_steps, num_steps))
  checkpoint_every = max(log_every, (steps_per_epoch // log_every) * log_every)
  opt = optax.adam(config.learning_rate)
  step = training.make_train_step(loss_fn, opt, seed=config.seed, post_update=post_update)
  state, summary = run_lib.fit(
      config, loss_fn, params, train_x, workdir, resume=resume, optimizer=opt,
      num_steps=num_steps, shuffle=True, checkpoint_every=checkpoint_every, log_every=log_every,
      train_step=step)
  summary["steps"] = num_steps
  summary["epochs"] = num_steps / steps_per_epoch
  return state, summary


# ----------------------------------------------------------------------------- categorical VAE


#: The estimators of the categorical study: the Gumbel-softmax relaxations (``gumbel``, ``st``:
#: straight-through), REINFORCE with the leave-one-out minibatch baseline, VIMCO (``K =
#: config.vimco_num_samples`` samples, leave-one-out baselines within them) and NVIL (REINFORCE with
#: a learned input-dependent baseline ``b(x)``, an MLP regressed onto the learning signal).
ESTIMATORS = ("gumbel", "st", "reinforce", "vimco", "nvil")


def _nvil_baseline(config):
  """NVIL's input-dependent baseline: ``(params, x) -> [B]`` reading ``params["baseline"]``.

  An MLP (``config.nvil.hidden`` tanh layers, :class:`dgmjax.nn.NVILBaseline`) whose
  output is multiplied by ``config.nvil.output_scale``: the learning signal is ``log p(x|z)``,
  hundreds of nats, and Adam moves every weight by about the learning rate per step, so an
  unscaled output would need far more steps than the run has to reach it (Mnih & Gregor centre
  and rescale the signal by running moments for the same reason).

  Returns:
    ``(apply, init)``: ``apply(params, x) -> [B]`` and ``init(key, x) -> baseline params``.
  """
  net = NVILBaseline(tuple(config.nvil.hidden))
  scale = float(config.nvil.output_scale)

  def apply(params, x):
    return scale * net.apply(params["baseline"], x)

  return apply, lambda key, x: net.init(key, x)


def _temperature(config):
  """Jang et al.'s annealing ``step -> tau`` with the config's settings."""
  return functools.partial(categorical_vae.jang_temperature, initial=config.tau_initial,
                           minimum=config.tau_min, rate=config.tau_rate, every=config.tau_every)


def categorical_estimator(est: str, config) -> tuple[estimators.Estimator, int]:
  """The estimator object of ``est`` and its number of samples ``K``.

  ``gumbel`` / ``st``: Jang et al.'s objective, the relaxed reconstruction at ``tau(step)`` with the
  exact categorical KL (:class:`dgmjax.losses.Relaxed`); ``reinforce``: the score function on the
  reconstruction with the leave-one-out minibatch mean as baseline and the exact KL gradient;
  ``nvil``: the same with the learned ``b(x)`` (its regression loss is part of the loss);
  ``vimco``: the ``K``-sample IWAE bound with VIMCO's leave-one-out baselines.
  """
  if est in categorical_vae.RELAXATIONS:
    return losses.Relaxed(_temperature(config), hard=est == "st"), 1
  if est == "reinforce":
    return estimators.Reinforce("elbo", "batch_mean", "analytic"), 1
  if est == "nvil":
    return estimators.Reinforce("elbo", _nvil_baseline(config)[0], "analytic"), 1
  if est == "vimco":
    return estimators.VIMCO(), int(config.vimco_num_samples)
  raise ValueError(f"estimators must be among {ESTIMATORS}, got {est!r}")


def categorical_loss(model, est: str, config):
  """The training loss ``(params, x, key, step) -> (loss, metrics)`` of estimator ``est``
  (:func:`categorical_estimator`); ``metrics['temperature']`` is ``tau(step)`` (used by the
  relaxations only)."""
  estimator, num_samples = categorical_estimator(est, config)
  loss = losses.make_loss(model, estimator, num_samples)
  if isinstance(estimator, losses.Relaxed):  # its metrics have the temperature
    return loss
  temperature = _temperature(config)

  def loss_fn(params, x, key, step):
    value, m = loss(params, x, key, step)
    return value, dict(m, temperature=temperature(step))

  return loss_fn


def categorical_params(model, est: str, config, example):
  """Initial params: the model's (the same for every estimator), plus NVIL's ``"baseline"``."""
  params = model.init(jax.random.key(config.seed))
  if est == "nvil":
    init = _nvil_baseline(config)[1]
    params = {**params, "baseline": init(jax.random.fold_in(jax.random.key(config.seed), 5),
                                         jnp.asarray(example[:1]))}
  return params


def run_categorical(config, workdir: str, resume: bool = False) -> dict:
  """One run per ``config.estimators``; returns the summary (also ``summary.json``)."""
  for est in config.estimators:
    if est not in ESTIMATORS:
      raise ValueError(f"estimators must be among {ESTIMATORS}, got {est!r}")
  train_x, test_x = _splits(config)
  for name, x in (("train", train_x), ("test", test_x)):
    if not np.all((x == 0) | (x == 1)):
      raise ValueError(f"{config.dataset}/{name}: the categorical VAE study expects fixed-"
                       "binarization data (binarized_mnist)")
  model = categorical_vae.CategoricalVAE(tuple(train_x.shape[1:]), config.num_vars,
                                         config.num_classes, tuple(config.hidden_dims),
                                         config.codebook_dim)
  rows = {}
  for est in config.estimators:
    d = os.path.join(workdir, est)
    os.makedirs(d, exist_ok=True)
    k_train = int(config.vimco_num_samples) if est == "vimco" else 1
    t0 = time.time()
    state, summary = _fit(categorical_loss(model, est, config),
                          categorical_params(model, est, config, train_x), train_x, config, d,
                          resume)
    if "stopped_at" in summary:
      return {"stopped_at": summary["stopped_at"]}
    params = state.params
    if est == "nvil":  # the baseline is a training device, not part of the model
      params = {k: v for k, v in params.items() if k != "baseline"}
    k_b, k_ll, k_fig, k_rel = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 7), 4)
    ks = tuple(sorted({1, 10, k_train}))
    b = evaluation.bounds(model, params, test_x, k_b, ks=ks, batch_size=config.eval.batch_size)
    ll = evaluation.log_likelihood(model, params, test_x, k_ll,
                                   num_samples=config.eval.num_samples,
                                   sample_chunk=config.eval.sample_chunk,
                                   batch_size=config.eval.batch_size,
                                   progress=run_lib.show_progress(config))
    final_tau = _temperature(config)(summary["steps"])
    relaxed_loss = losses.make_loss(model, losses.Relaxed(final_tau), 1)
    relaxed = jax.jit(lambda p, xb, k: relaxed_loss(p, xb, k, summary["steps"])[1]["elbo"])
    bs = config.eval.batch_size
    relaxed_elbo = float(np.mean([relaxed(params, test_x[i:i + bs], jax.random.fold_in(k_rel, i))
                                  for i in range(0, len(test_x) - bs + 1, bs)]))
    figs = evaluation.write_sample_figures(model, params, test_x, k_fig, d)
    figs["temperature"] = _temperature_figure(os.path.join(d, "temperature_elbo.png"),
                                              os.path.join(d, "metrics.jsonl"), est)
    row = {"estimator": est, "dataset": config.dataset, "latents": f"{config.num_vars}x"
           f"{config.num_classes}", "codebook_dim": config.codebook_dim,
           "train_num_samples": k_train,
           "epochs": summary["epochs"], "steps": summary["steps"],
           "batch_size": config.batch_size, "test_examples": int(test_x.shape[0]),
           "test_neg_elbo_discrete": -b["elbo"],
           "test_neg_elbo_relaxed_final_tau": -relaxed_elbo,
           **({f"test_neg_iwae_k{k_train}": -b[f"iwae_{k_train}"]} if k_train > 1 else {}),
           f"test_nll_k{config.eval.num_samples}": float(-ll.mean()),
           "test_nll_stderr": results_lib.stderr(ll),
           "jang_neg_elbo": JANG_TABLE2.get(est),
           "final_temperature": float(final_tau),
           "nonfinite_steps": summary["nonfinite_total"],
           "seconds": time.time() - t0,
           "figures": {k: os.path.basename(v) for k, v in figs.items()}}
    results_lib.write_json(os.path.join(d, "results.json"), row)
    rows[est] = row
  out = {"study": "categorical", "runs": rows}
  results_lib.write_json(os.path.join(workdir, "summary.json"), out)
  return out


def _temperature_figure(path: str, metrics: str, est: str) -> str:
  plt = figures_lib.pyplot()
  rows = [json.loads(l) for l in open(metrics) if l.strip()]
  rows = [r for r in rows if "elbo" in r]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([r["epoch"] for r in rows], [r["elbo"] for r in rows], label="train ELBO")
  ax.set_xlabel("epoch")
  ax.set_ylabel("train ELBO (nats)")
  ax2 = ax.twinx()
  ax2.plot([r["epoch"] for r in rows], [r["temperature"] for r in rows], "C1--",
           label="temperature")
  ax2.set_ylabel("Gumbel-softmax temperature"
                 + ("" if est in categorical_vae.RELAXATIONS else " (unused)"))
  ax.set_title(f"estimator: {est}")
  fig.legend(loc="lower right")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- VQ-VAE


def _vq_model(config, image_shape, **over) -> vqvae.VQVAE:
  kw = dict(image_shape=tuple(image_shape), levels=1, num_codes=config.num_codes,
            embedding_dim=config.embedding_dim, features=config.features, hidden=config.hidden,
            num_blocks=config.num_blocks, beta=config.beta, ema=config.ema,
            restart_every=config.restart_every, init_scale=config.init_scale,
            init_offset=config.init_offset)
  kw.update(over)
  return vqvae.VQVAE(**kw)


def _codes(model, params, x, batch_size: int) -> list[np.ndarray]:
  f = jax.jit(model.indices)
  out = [f(params, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
  return [np.concatenate([np.asarray(o[l]) for o in out]) for l in range(model.levels)]


def _vq_eval(model, params, x, batch_size: int) -> dict:
  @jax.jit
  def batch_stats(p, xb):
    _, qs = model.encode(p, xb)
    loc, log_scale = model.decode_codes(p, [q.z_q for q in qs])
    return (-model.recon_log_prob(xb, loc, log_scale),
            jnp.mean(jnp.square(jnp.clip(loc, 0.0, 1.0) - xb), axis=(1, 2, 3)),
            [q.indices for q in qs])
  out = [batch_stats(params, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
  nats = np.concatenate([np.asarray(o[0]) for o in out])
  mse = np.concatenate([np.asarray(o[1]) for o in out])
  codes = [np.concatenate([np.asarray(o[2][l]) for o in out]) for l in range(model.levels)]
  usage = []
  for lvl, c in enumerate(codes):
    counts = vq.code_counts(jnp.asarray(c), model.num_codes)
    usage.append({"level": ["bottom", "top"][lvl] if model.levels == 2 else "single",
                  "usage": float(vq.usage(counts)), "perplexity": float(vq.perplexity(counts)),
                  "counts": np.asarray(counts).tolist()})
  return {"recon_nats": nats, "mse": float(mse.mean()), "codes": codes, "usage": usage}


def _fit_prior(config, model, codes_train, codes_test, workdir, resume) -> dict:
  """PixelCNN prior(s) over the code maps; returns per-image ``-log p(codes)`` on the test codes."""
  pc = config.prior
  nats_test = np.zeros(len(codes_test[0]))
  priors = {}
  for lvl in reversed(range(model.levels)):  # top first
    cond_lvl = lvl + 1 if lvl + 1 < model.levels else None
    net = pixelcnn.PixelCNN(num_layers=pc.num_layers, features=pc.features,
                            kernel_size=pc.kernel_size, first_kernel_size=pc.first_kernel_size,
                            num_classes=model.num_codes)

    def cond_of(c_top):  # one-hot top codes upsampled to the bottom map: a spatial condition
      oh = jax.nn.one_hot(c_top, model.num_codes)
      return jnp.repeat(jnp.repeat(oh, 2, axis=1), 2, axis=2)

    # Codes are fed to fit() as float "images" [N, h, w, 1 (+1 for the top codes)]
    arr = codes_train[lvl][..., None].astype(np.float32)
    if cond_lvl is not None:
      top = np.repeat(np.repeat(codes_train[cond_lvl], 2, 1), 2, 2)[..., None].astype(np.float32)
      arr = np.concatenate([arr, top], -1)

    def loss_fn(p, xb, key, step, net=net, cond_lvl=cond_lvl):
      del key, step
      c = xb[..., 0].astype(jnp.int32)
      cond = None if cond_lvl is None else cond_of(xb[:, ::2, ::2, 1].astype(jnp.int32))
      lp = pixelcnn.categorical_log_prob(net, p, c, cond)
      return -jnp.mean(lp), {"nats": -jnp.mean(lp)}

    h, w = arr.shape[1:3]
    init_cond = None if cond_lvl is None else jnp.zeros((1, h, w, model.num_codes))
    p0 = net.init(jax.random.key(config.seed + 11 + lvl), jnp.zeros((1, h, w, 1)), init_cond)
    d = os.path.join(workdir, f"prior_level{lvl}")
    os.makedirs(d, exist_ok=True)
    pconf = _PriorConfig(pc, config)
    # fit() checks images lie in [0, 1]: pass codes scaled down, rescale inside the loss
    scale = float(model.num_codes)
    scaled_loss = lambda p, xb, key, step, f=loss_fn: f(p, jnp.round(xb * scale), key, step)
    state, summary = _fit(scaled_loss, p0, arr / scale, pconf, d, resume)
    if "stopped_at" in summary:
      raise RuntimeError("prior training stopped early")
    params = state.params

    @jax.jit
    def nll(p, c, top, net=net, cond_lvl=cond_lvl):
      cond = None if cond_lvl is None else cond_of(top)
      return -pixelcnn.categorical_log_prob(net, p, c, cond)
    out = []
    for i in range(0, len(codes_test[lvl]), 100):
      top = None if cond_lvl is None else jnp.asarray(codes_test[cond_lvl][i:i + 100])
      out.append(np.asarray(nll(params, jnp.asarray(codes_test[lvl][i:i + 100]), top)))
    nats_test = nats_test + np.concatenate(out)
    priors[lvl] = (net, params, cond_lvl, summary)
  return {"nats": nats_test, "priors": priors, "cond_of": cond_of}


class _PriorConfig:
  """The prior's optimisation settings in the shape :func:`_fit` reads."""

  def __init__(self, pc, config):
    self.batch_size, self.num_epochs = pc.batch_size, pc.num_epochs
    self.learning_rate, self.log_every_steps = pc.learning_rate, config.log_every_steps
    self.seed = config.seed
    self._c = config

  def get(self, k, default=None):
    return self._c.get(k, default) if k in ("progress", "stop_after_steps") else default


def _sample_from_prior(key, model, params, prior, num: int) -> np.ndarray:
  priors, cond_of = prior["priors"], prior["cond_of"]
  codes = [None] * model.levels
  for lvl in reversed(range(model.levels)):
    net, p, cond_lvl, _ = priors[lvl]
    h, w = model.code_shapes[lvl]
    cond = None if cond_lvl is None else cond_of(codes[cond_lvl])
    key, k = jax.random.split(key)
    codes[lvl] = jax.jit(pixelcnn.sample, static_argnums=(0, 3))(net, p, k, (num, h, w), cond)
  return np.clip(np.asarray(jax.jit(model.decode_indices)(params, codes)[0]), 0.0, 1.0)


def run_vqvae(config, workdir: str, resume: bool = False) -> dict:
  train_x, test_x = _splits(config)
  rows = {}
  for levels in config.level_list:
    name = "vqvae" if levels == 1 else "vqvae2"
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    model = _vq_model(config, train_x.shape[1:], levels=levels)
    t0 = time.time()
    state, summary = _fit(model.loss, model.init(jax.random.key(config.seed)), train_x, config, d,
                          resume, post_update=model.post_update)
    if "stopped_at" in summary:
      return {"stopped_at": summary["stopped_at"]}
    params = state.params
    ev = _vq_eval(model, params, test_x, config.eval.batch_size)
    codes_train = _codes(model, params, train_x, config.eval.batch_size)
    prior = _fit_prior(config, model, codes_train, ev["codes"], d, resume)
    recon = ev["recon_nats"]
    bpd_uniform = float(model.bits_per_dim(recon.mean() + model.uniform_prior_nats()))
    bpd_pixelcnn = float(model.bits_per_dim((recon + prior["nats"]).mean()))
    key = jax.random.fold_in(jax.random.key(config.seed), 99)
    samples = _sample_from_prior(key, model, params, prior, config.num_prior_samples)
    figs = {
        "reconstructions": plotting.save_reconstructions(
            os.path.join(d, "reconstructions.png"), test_x[:16],
            np.asarray(jax.jit(model.reconstruct)(params, test_x[:16]))),
        "prior_samples": plotting.save_image_grid(
            os.path.join(d, "prior_samples.png"), samples,
            title=f"{name}: decoder means of codes sampled from the PixelCNN prior"),
        "codebook_usage": _usage_figure(os.path.join(d, "codebook_usage.png"), ev["usage"], name),
    }
    row = {"model": name, "levels": levels, "dataset": config.dataset,
           "num_codes": config.num_codes, "embedding_dim": config.embedding_dim,
           "code_maps": [list(s) for s in model.code_shapes], "ema": config.ema,
           "epochs": summary["epochs"], "steps": summary["steps"],
           "train_examples": int(train_x.shape[0]), "test_examples": int(test_x.shape[0]),
           "test_mse": ev["mse"],
           "test_recon_bits_per_dim": float(model.bits_per_dim(recon.mean())),
           "test_bits_per_dim_uniform_prior": bpd_uniform,
           "test_bits_per_dim_pixelcnn_prior": bpd_pixelcnn,
           "prior_nats_per_image": float(prior["nats"].mean()),
           "uniform_prior_nats_per_image": model.uniform_prior_nats(),
           "codebook": [{k: v for k, v in u.items() if k != "counts"} for u in ev["usage"]],
           "prior_epochs": [prior["priors"][l][3]["epochs"] for l in sorted(prior["priors"])],
           "nonfinite_steps": summary["nonfinite_total"],
           "seconds": time.time() - t0,
           "figures": {k: os.path.basename(v) for k, v in figs.items()}}
    results_lib.write_json(os.path.join(d, "results.json"), row)
    results_lib.write_json(os.path.join(d, "codebook_counts.json"),
                           [u["counts"] for u in ev["usage"]])
    rows[name] = row
  out = {"study": "vqvae", "runs": rows}
  results_lib.write_json(os.path.join(workdir, "summary.json"), out)
  return out


def _usage_figure(path: str, usage: list, title: str) -> str:
  plt = figures_lib.pyplot()
  fig, axes = plt.subplots(1, len(usage), figsize=(5 * len(usage), 3.2), squeeze=False)
  for ax, u in zip(axes[0], usage):
    counts = np.asarray(u["counts"], np.float64)
    order = np.argsort(-counts)
    ax.bar(np.arange(len(counts)), counts[order] / max(counts.sum(), 1), width=1.0)
    ax.set_xlabel("code (sorted by use)")
    ax.set_ylabel("fraction of positions")
    ax.set_title(f"{title} {u['level']}: usage {u['usage']:.2f}, perplexity {u['perplexity']:.1f}")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ----------------------------------------------------------------------------- codebook health


def run_codebook(config, workdir: str, resume: bool = False) -> dict:
  """A bad initialisation with and without dead-code restarts (and EMA), usage over the test set."""
  train_x, test_x = _splits(config)
  rows = {}
  for name, over in config.variants.items():
    d = os.path.join(workdir, name)
    os.makedirs(d, exist_ok=True)
    model = _vq_model(config, train_x.shape[1:], levels=1, **dict(over))
    state, summary = _fit(model.loss, model.init(jax.random.key(config.seed)), train_x, config, d,
                          resume, post_update=model.post_update)
    if "stopped_at" in summary:
      return {"stopped_at": summary["stopped_at"]}
    ev = _vq_eval(model, state.params, test_x, config.eval.batch_size)
    u = ev["usage"][0]
    rows[name] = {"variant": dict(over), "usage": u["usage"], "perplexity": u["perplexity"],
                  "codes_used": int(np.sum(np.asarray(u["counts"]) > 0)),
                  "num_codes": config.num_codes, "test_mse": ev["mse"],
                  "test_recon_bits_per_dim": float(model.bits_per_dim(ev["recon_nats"].mean())),
                  "epochs": summary["epochs"],
                  "figure": os.path.basename(_usage_figure(
                      os.path.join(d, "codebook_usage.png"), ev["usage"], name))}
    results_lib.write_json(os.path.join(d, "results.json"), rows[name])
  out = {"study": "codebook", "runs": rows}
  results_lib.write_json(os.path.join(workdir, "summary.json"), out)
  return out


STUDIES = {"categorical": run_categorical, "vqvae": run_vqvae, "codebook": run_codebook}


#: Numeric settings of the three studies, checked before any data is loaded.
FIELDS = {
    "seed": "int>=0",
    "max_train_examples": "int>=0", "vimco_num_samples": "int>1", "nvil.hidden": "ints>0",
    "nvil.output_scale": "float>0", "num_vars": "int>0", "num_classes": "int>1",
    "hidden_dims": "ints>0", "codebook_dim": "int>=0", "tau_initial": "float>0",
    "tau_min": "float>0", "tau_rate": "float>=0", "tau_every": "int>0",
    "num_codes": "int>0", "embedding_dim": "int>0", "features": "int>0", "hidden": "int>0",
    "num_blocks": "int>0", "beta": "float>=0", "restart_every": "int>=0",
    "init_scale": "float>=0", "level_list": "ints>0", "batch_size": "int>0", "learning_rate": "float>0", "num_epochs": "float>0",
    "log_every_steps": "int>0", "num_prior_samples": "int>0", "stop_after_steps": "int>=0",
    "prior.num_layers": "int>0", "prior.features": "int>0", "prior.kernel_size": "int>0",
    "prior.first_kernel_size": "int>0", "prior.batch_size": "int>0",
    "prior.learning_rate": "float>0", "prior.num_epochs": "float>0",
    "variants.*.restart_every": "int>=0",
    "eval.num_samples": "int>0", "eval.sample_chunk": "int>0", "eval.batch_size": "int>0",
    "eval.num_examples": "int>=0",
}


def run(config, workdir: str, resume: bool = False, allow_config_change=False) -> dict:
  """Runs ``config.study`` (settings checked first, before any data is loaded)."""
  if config.study not in STUDIES:
    raise ValueError(f"config.study must be one of {sorted(STUDIES)}, got {config.study!r}")
  common.check_fields(config, FIELDS)
  os.makedirs(workdir, exist_ok=True)
  # a resumed run continues what was trained: a changed training setting is refused
  resume_lib.record_config(workdir, json.loads(config.to_json_best_effort()), resume=resume,
                           allow_changes=allow_config_change)
  return STUDIES[config.study](config, workdir, resume)


def format_summary(out: dict) -> str:
  lines = []
  for name, r in out.get("runs", {}).items():
    keep = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
            if k not in ("figures", "figure", "codebook") and not isinstance(v, (dict, list))}
    lines.append(f"{name}: {keep}")
    if "codebook" in r:
      lines.append(f"  codebook: {r['codebook']}")
  return "\n".join(lines)
