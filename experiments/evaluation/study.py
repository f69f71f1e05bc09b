"""By how many nats does the k=5000 importance-sampled estimate understate ``log p(x)``?

For each MNIST model of the Table 1 section (VAE k=1, IWAE k=5, IWAE k=50; restored from the runs
of ``experiments.iwae`` or retrained at a short budget), on the same fixed-binarization test
images:

* ``L_k`` for each ``k`` of ``config.is_ks`` (:func:`dgmjax.evaluation.log_likelihood`; k=5000
  is Burda et al.'s NLL): importance sampling with the encoder as proposal, a lower bound;
* JVI (:func:`dgmjax.objectives.jackknife_bound`, when that function exists) on ``k`` samples;
* AIS from ``q(z|x)`` at each ``T`` of ``config.ais.temps`` (:func:`dgmjax.inference.ais.ais`,
  HMC);

and on images simulated from the model, where ``z`` is an exact posterior sample, the BDMC
sandwich ``lower <= log p(x) <= upper`` at each ``T`` (:func:`dgmjax.inference.ais.bdmc`) beside
``L_5000`` of the same images. The answer is ``AIS(T_max) - L_5000`` per model (paired over the test images),
with the BDMC gap at ``T_max`` as the accuracy of AIS on the model's own data.

Speed: the AIS run at the largest ``T`` and the k=5000 evaluation are timed (compilation
excluded) and reported as decoder evaluations per second and as the fraction of the machine's
measured matmul rate reached by the matmuls of the per-sample layers (the decoder; for two
stochastic layers also the top encoder and the conditional prior). An AIS evaluation is a
forward pass and a backward pass with respect to ``z`` (about twice the forward FLOPs); an IS
evaluation is a forward pass.

Writes into ``workdir``: ``results.json``, ``table.md``, ``ais_vs_T.png``, ``ais_vs_time.png``,
``bdmc_sandwich.png`` (and ``models/<name>/`` for retrained models).

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  Wu, Burda, Salakhutdinov & Grosse, On the Quantitative Analysis of Decoder-Based Generative
  Models, ICLR 2017.
  Grosse, Ghahramani & Adams, Sandwiching the Marginal Likelihood Using Bidirectional Monte Carlo,
  2015.
  Nowozin, Debiasing Evidence Approximations: On Importance-weighted Autoencoders and Jackknife
  Variational Inference, ICLR 2018.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dgmjax import evaluation, objectives, training
from dgmjax.inference import ais
from dgmjax import models as M
from dgmjax.models import vae
from experiments.common import burda
from experiments.common import data as data_lib
from experiments.common import figures as figures_lib
from experiments.common import results as results_lib

#: Wu et al. (2017) evaluated VAEs (and GANs, GMMNs) on MNIST with AIS, validated by BDMC on
#: simulated data, and compared it with the importance-weighted estimate. Their finding, in words:
#: the importance-weighted estimate with the encoder as proposal falls below AIS for VAEs, so it
#: understates log p(x), while AIS's BDMC gap on simulated data is small.
WU_2017_FINDING = ("Wu et al. 2017 (MNIST VAEs): the importance-weighted estimate with the "
                   "encoder as proposal lies below AIS (it understates log p(x)); AIS is "
                   "validated by a small BDMC gap on simulated data")

#: Wu, Burda, Salakhutdinov & Grosse (2017), Table 1: one IWAE-trained model on the 10,000 test
#: images of binarized MNIST (nats). Per row: the importance-weighted bound with ``k`` samples
#: (encoder as proposal), AIS from the prior with ``T`` intermediate distributions, and AIS from
#: the encoder ("AIS+encoder") with ``T_encoder``. Reported beside ours by :func:`format_table`.
WU_2017_TABLE1 = (
    dict(k=10_000, iwae_bound=-86.902, T=1000, ais=-85.679, T_encoder=100, ais_encoder=-85.754),
    dict(k=100_000, iwae_bound=-86.464, T=10_000, ais=-85.619, T_encoder=1000,
         ais_encoder=-85.621),
)


def wu_2017_lines() -> list[str]:
  """Wu et al.'s Table 1 as text lines: their AIS minus their importance-weighted bound."""
  lines = ["Wu et al. 2017, Table 1 (one IWAE-trained model, 10,000 binarized-MNIST test images, "
           "fully trained):"]
  for r in WU_2017_TABLE1:
    lines.append(f"- L_{r['k']} {r['iwae_bound']:.2f}; AIS (prior, T={r['T']}) {r['ais']:.2f}; "
                 f"AIS+encoder (T={r['T_encoder']}) {r['ais_encoder']:.2f}; "
                 f"AIS - L_{r['k']} = {r['ais'] - r['iwae_bound']:+.2f}")
  return lines


# ----------------------------------------------------------------------------- models


def _run_config(config, name: str):
  """The ``experiments.iwae`` config of ``name`` at the study's retraining budget."""
  c = burda.named_config(name)
  c.dataset = config.dataset
  c.data_dir = config.get("data_dir", "")
  c.seed = int(config.seed)
  r = config.retrain
  if r.get("num_epochs"):
    c.num_epochs = float(r.num_epochs)
  if r.get("max_train_examples"):
    c.max_train_examples = int(r.max_train_examples)
  if r.get("model"):
    c.model = r.model
    c.latent_dims = tuple(int(d) for d in r.latent_dims)
    c.hidden_dims = tuple(tuple(int(h) for h in hs) for hs in r.hidden_dims)
  c.eval.num_examples = int(r.eval_num_examples)
  c.eval.num_samples = int(r.eval_num_samples)
  c.eval.sample_chunk = min(int(c.eval.sample_chunk), int(r.eval_num_samples))
  c.eval.bound_ks = tuple(k for k in c.eval.bound_ks if k <= int(r.eval_num_samples)) or (1,)
  c.progress = bool(config.get("progress"))
  return c


def _has_checkpoint(run_dir: str) -> bool:
  d = os.path.join(run_dir, "checkpoints")
  return os.path.isdir(d) and any(s.isdigit() for s in os.listdir(d))


def _model_of_run(run_cfg: dict, image_shape) -> vae.VAE:
  hidden = run_cfg.get("hidden_dims") or None
  return vae.make(run_cfg["model"], image_shape,
                  latent_dims=tuple(run_cfg["latent_dims"]) if run_cfg.get("latent_dims") else None,
                  hidden_dims=tuple(tuple(h) for h in hidden) if hidden else None)


def load_model(config, name: str, workdir: str, image_shape) -> tuple[vae.VAE, dict, dict]:
  """``(model, params, info)`` of ``name``: restored from ``config.runs_dir/name`` (or from an
  earlier retraining in ``workdir/models/name``), else retrained there.

  ``info`` says where the params came from (``source``: ``restored`` or ``retrained``), the run
  directory, its step and its training budget.
  """
  candidates = []
  if config.get("runs_dir"):
    candidates.append(os.path.join(config.runs_dir, name))
  retrain_dir = os.path.join(workdir, "models", name)
  candidates.append(retrain_dir)
  run_dir = next((d for d in candidates if _has_checkpoint(d)), None)
  source = "restored"
  if run_dir is None:
    if not config.retrain.enabled:
      raise FileNotFoundError(f"no checkpoints for model {name!r} in {candidates} and "
                              f"config.retrain.enabled is False")
    burda.train_and_evaluate(_run_config(config, name), retrain_dir)
    run_dir, source = retrain_dir, "retrained"
  cfg_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{run_dir} has checkpoints but no config.json (written by "
                            f"experiments.iwae): its architecture is unknown")
  with open(cfg_path) as f:
    run_cfg = json.load(f)
  if run_cfg.get("dataset") != config.dataset:
    raise ValueError(f"model {name!r} in {run_dir} was trained on {run_cfg.get('dataset')!r}, "
                     f"but config.dataset is {config.dataset!r}")
  model = _model_of_run(run_cfg, image_shape)
  like = jax.eval_shape(model.init, jax.random.key(0))
  params, _, step = training.restore(run_dir, like=like)
  # the run's training in the paper's terms ('vae' for the ELBO estimator, as Burda et al.)
  estimator = run_cfg.get("estimator")
  info = {"source": source, "run_dir": os.path.abspath(run_dir), "step": int(step),
          "objective": "vae" if estimator == "elbo" else estimator,
          "k": run_cfg.get("num_samples"),
          "model": run_cfg.get("model"), "num_epochs": run_cfg.get("num_epochs"),
          "num_passes": run_cfg.get("num_passes"),
          "max_train_examples": run_cfg.get("max_train_examples")}
  results_path = os.path.join(run_dir, "results.json")
  if os.path.exists(results_path):
    with open(results_path) as f:
      r = json.load(f)
    info["epochs"] = r.get("epochs")
  return model, params, info


# ----------------------------------------------------------------------------- FLOPs, machine


def per_sample_flops(model: vae.VAE) -> float:
  """Forward matmul FLOPs of the layers that run once per latent sample (``2 * in * out`` each):
  the decoder, and for ``L > 1`` the encoders above the first and the conditional priors."""
  total = 0.0
  for l in range(1, model.num_layers):  # q(h_l | h_{l-1}), l > 1: per sample
    dims = [model.latent_dims[l - 1]] + list(model.hidden_dims[l])
    total += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    total += 2 * 2.0 * dims[-1] * model.latent_dims[l]
  for l in range(model.num_layers - 1):  # p(h_l | h_{l+1})
    dims = [model.latent_dims[l + 1]] + list(reversed(model.hidden_dims[l + 1]))
    total += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
    total += 2 * 2.0 * dims[-1] * model.latent_dims[l]
  dims = [model.latent_dims[0]] + list(reversed(model.hidden_dims[0])) + [model.x_dim]
  total += sum(2.0 * a * b for a, b in zip(dims[:-1], dims[1:]))
  return total


def matmul_rate(n: int = 1024, seconds: float = 0.5) -> float:
  """This machine's float32 matmul rate (FLOP/s) from a jitted ``[n, n] @ [n, n]``."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
  b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
  f = jax.jit(lambda u, v: u @ v)
  jax.block_until_ready(f(a, b))
  reps, t0 = 0, time.perf_counter()
  while True:
    jax.block_until_ready(f(a, b))
    reps += 1
    dt = time.perf_counter() - t0
    if dt >= seconds and reps >= 2:
      return 2.0 * n ** 3 * reps / dt


# ----------------------------------------------------------------------------- estimators


def _batches(x: np.ndarray, batch_size: int):
  """``(index, batch padded to batch_size, true size)``: one compiled shape for all batches."""
  for b, start in enumerate(range(0, x.shape[0], batch_size)):
    xb = x[start:start + batch_size]
    m = xb.shape[0]
    if m < batch_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], batch_size - m, 0)], 0)
    yield b, xb, m


def importance_sampling(model, params, x, key, *, num_samples: int, sample_chunk: int,
                        batch_size: int) -> tuple[np.ndarray, float]:
  """``L_k`` per image and the seconds it took (after a compiling warm-up on one batch)."""
  bs = min(batch_size, x.shape[0])
  kw = dict(num_samples=num_samples, sample_chunk=min(sample_chunk, num_samples), batch_size=bs)
  with jax.debug_key_reuse(False):   # the warm-up redraws the first batch's samples on purpose
    evaluation.log_likelihood(model, params, x[:bs], key, **kw)
    t0 = time.perf_counter()
    ll = evaluation.log_likelihood(model, params, x, key, **kw)
  return ll, time.perf_counter() - t0


@functools.lru_cache(maxsize=None)
def _jvi_fn(model, num_samples: int, order: int, with_order: bool):
  fn = objectives.jackknife_bound

  def one(params, x, key):
    lw = M.log_weights(model, params, x, key, num_samples)
    return fn(lw, order=order) if with_order else fn(lw)

  return jax.jit(one)


def jvi(model, params, x, key, cfg) -> np.ndarray | None:
  """JVI per image, or ``None`` when ``dgmjax.objectives`` has no ``jackknife_bound``.

  HOOK: calls ``dgmjax.objectives.jackknife_bound(log_weights [K, B], order=...)`` if that
  function exists; the JVI column is left out otherwise.
  """
  fn = getattr(objectives, "jackknife_bound", None)
  if not callable(fn) or not cfg.enabled:
    return None
  with_order = "order" in inspect.signature(fn).parameters
  run = _jvi_fn(model, int(cfg.num_samples), int(cfg.order), with_order)
  out = []
  for b, xb, m in _batches(x, min(int(cfg.batch_size), x.shape[0])):
    out.append(np.asarray(run(params, xb, jax.random.fold_in(key, b)), np.float64)[:m])
  return np.concatenate(out)


_COMPILED: dict = {}


def _compiled(kind: str, model, settings: dict, args):
  """AOT-compiled :func:`dgmjax.inference.ais.ais` / :func:`dgmjax.inference.ais.bdmc` with
  static ``settings``, cached per (model, settings): models of one architecture share the program."""
  key = (kind, model, tuple(sorted(settings.items())),
         tuple((tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args[1:-1])))
  if key not in _COMPILED:
    fn = ais.ais if kind == "ais" else ais.bdmc
    t0 = time.perf_counter()
    _COMPILED[key] = (jax.jit(functools.partial(fn, model, **settings)).lower(*args).compile(),
                      time.perf_counter() - t0)
    return _COMPILED[key][0], _COMPILED[key][1]
  return _COMPILED[key][0], 0.0


def _ais_settings(cfg, num_temps: int, num_chains: int, pilot: int) -> dict:
  return dict(num_temps=int(num_temps), num_chains=int(num_chains), init=cfg.ais.init,
              num_leapfrog=int(cfg.ais.num_leapfrog), step_size=float(cfg.ais.step_size),
              target_accept=float(cfg.ais.target_accept), pilot_chains=int(pilot) or None)


def decoder_evaluations(num_images: int, num_chains: int, num_temps: int, num_leapfrog: int,
                        pilot_chains: int = 0) -> dict:
  """Joint-density evaluations of one AIS run: per chain, one forward pass at the start and at
  the end, and ``num_leapfrog + 1`` gradient evaluations per transition (``T - 1`` of them)."""
  chains = num_images * (num_chains + pilot_chains)
  grads = chains * (num_temps - 1) * (num_leapfrog + 1)
  return {"gradient_evaluations": grads, "forward_evaluations": 2 * chains,
          "total": grads + 2 * chains}


def run_ais(model, params, x, key, cfg, num_temps: int) -> dict:
  """AIS at ``num_temps`` on the images ``x`` in batches: estimates and diagnostics."""
  bs = min(int(cfg.ais.batch_size), x.shape[0])
  settings = _ais_settings(cfg, num_temps, cfg.ais.num_chains, cfg.ais.pilot_chains)
  first = next(_batches(x, bs))[1]
  fn, compile_s = _compiled("ais", model, settings, (params, jnp.asarray(first), key))
  est, acc, var, step = [], [], [], []
  t0 = time.perf_counter()
  for b, xb, m in _batches(x, bs):
    r = fn(params, jnp.asarray(xb), jax.random.fold_in(key, b))
    est.append(np.asarray(r.log_marginal, np.float64)[:m])
    var.append(np.asarray(r.log_weight_variance, np.float64)[:m])
    if num_temps > 1:
      acc.append(np.asarray(r.acceptance, np.float64)[:, :m].mean(0))
      step.append(np.asarray(r.step_size, np.float64)[-1, :m])
  seconds = time.perf_counter() - t0
  est = np.concatenate(est)
  return {"T": num_temps, "estimates": est, "mean": float(est.mean()),
          "log_weight_variance": float(np.concatenate(var).mean()),
          "acceptance": float(np.concatenate(acc).mean()) if acc else None,
          "final_step_size": float(np.concatenate(step).mean()) if step else None,
          "seconds": seconds, "compile_seconds": compile_s,
          "evaluations": decoder_evaluations(x.shape[0], cfg.ais.num_chains, num_temps,
                                             cfg.ais.num_leapfrog, cfg.ais.pilot_chains)}


def run_bdmc(model, params, x, z, key, cfg, num_temps: int) -> dict:
  """The BDMC sandwich at ``num_temps`` on simulated ``(x, z)`` in batches."""
  n = x.shape[0]
  bs = min(int(cfg.bdmc.batch_size), n)
  settings = _ais_settings(cfg, num_temps, cfg.bdmc.num_chains, cfg.bdmc.pilot_chains)
  idx = np.arange(n)
  lower, upper = [], []
  compile_s, t0 = 0.0, None
  for b, ib, m in _batches(idx, bs):
    xb = jnp.asarray(x[ib])
    zb = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[ib]), z)
    kb = jax.random.fold_in(key, b)
    fn, c = _compiled("bdmc", model, settings, (params, xb, zb, kb))
    compile_s += c
    if t0 is None:
      t0 = time.perf_counter()
    r = fn(params, xb, zb, kb)
    lower.append(np.asarray(r.lower, np.float64)[:m])
    upper.append(np.asarray(r.upper, np.float64)[:m])
  seconds = time.perf_counter() - t0
  lower, upper = np.concatenate(lower), np.concatenate(upper)
  return {"T": num_temps, "lower": float(lower.mean()), "upper": float(upper.mean()),
          "gap": float((upper - lower).mean()),
          "gap_stderr": results_lib.stderr(upper - lower),
          "lower_per_example": lower, "upper_per_example": upper,
          "seconds": seconds, "compile_seconds": compile_s}


def _stats(d: np.ndarray) -> dict:
  return {"mean": float(d.mean()),
          "stderr": results_lib.stderr(d)}


def speed(model, ais_row: dict, is_seconds: float, num_images: int, num_samples: int,
          rate: float) -> dict:
  """Decoder evaluations per second and fraction of the matmul rate: AIS beside k-sample IS."""
  f = per_sample_flops(model)
  ev = ais_row["evaluations"]
  ais_flops = (2.0 * ev["gradient_evaluations"] + ev["forward_evaluations"]) * f
  is_evals = num_images * num_samples
  return {
      "per_sample_forward_flops": f,
      "machine_matmul_gflops": rate / 1e9,
      "ais": {"T": ais_row["T"], "decoder_evaluations": ev["total"], "seconds":
              ais_row["seconds"], "decoder_evaluations_per_second": ev["total"] /
              ais_row["seconds"], "gflops": ais_flops / ais_row["seconds"] / 1e9,
              "fraction_of_matmul_rate": ais_flops / ais_row["seconds"] / rate},
      "is": {"k": num_samples, "decoder_evaluations": is_evals, "seconds": is_seconds,
             "decoder_evaluations_per_second": is_evals / is_seconds,
             "gflops": is_evals * f / is_seconds / 1e9,
             "fraction_of_matmul_rate": is_evals * f / is_seconds / rate},
  }


# ----------------------------------------------------------------------------- the study


def _load_test(config) -> np.ndarray:
  dc = ml_collections.ConfigDict({"dataset": config.dataset,
                                  "data_dir": config.get("data_dir", "")})
  test = data_lib.load_images(dc, "test")
  x = data_lib.binarize_fixed(test, int(config.seed))   # the experiments.iwae test binarization
  n = int(config.num_test)
  if not 1 <= n <= x.shape[0]:
    raise ValueError(f"config.num_test must be in [1, {x.shape[0]}], got {n}")
  return x[:n]


def _check_config(config) -> None:
  for name in ("ais.temps", "bdmc.temps", "is_ks"):
    vals = config.ais.temps if name == "ais.temps" else (
        config.bdmc.temps if name == "bdmc.temps" else config.is_ks)
    if not vals or any(isinstance(v, bool) or int(v) != v or v < 1 for v in vals):
      raise ValueError(f"config.{name} must be a non-empty list of ints >= 1, got {tuple(vals)}")
  if 5000 not in tuple(config.is_ks):
    raise ValueError(f"config.is_ks must contain 5000 (the estimate the study is about), got "
                     f"{tuple(config.is_ks)}")
  if not config.models:
    raise ValueError("config.models is empty")
  if int(config.bdmc.num_examples) < 2:
    raise ValueError(f"config.bdmc.num_examples must be >= 2, got {config.bdmc.num_examples}")
  if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
    raise ValueError(f"config.seed must be an int >= 0, got {config.seed!r}")
  # settings read only after minutes of retraining and sampling: checked here, before any work
  for name, value, valid in (("ais.init", config.ais.init, ais.INITS),
                             ("jvi.order", config.jvi.get("order"), (0, 1, 2))):
    if value not in valid:
      raise ValueError(f"config.{name} must be one of {list(valid)}, got {value!r}")


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the study (module docstring); writes results, table and figures into ``workdir``."""
  _check_config(config)
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  x = _load_test(config)
  rate = matmul_rate(int(config.matmul_size))
  root = jax.random.key(int(config.seed))
  out = {"dataset": config.dataset, "num_test": int(x.shape[0]), "is_ks": list(config.is_ks),
         "ais_temps": list(config.ais.temps), "bdmc_temps": list(config.bdmc.temps),
         "ais": {k: (v if not isinstance(v, tuple) else list(v))
                 for k, v in config.ais.to_dict().items()},
         "bdmc": {k: (v if not isinstance(v, tuple) else list(v))
                  for k, v in config.bdmc.to_dict().items()},
         "wu_2017": WU_2017_FINDING, "models": {}}
  kmax = 5000
  for mi, name in enumerate(config.models):
    model, params, info = load_model(config, name, workdir, x.shape[1:])
    k_is, k_jvi, k_ais, k_sim, k_bdmc, k_sim_is = jax.random.split(
        jax.random.fold_in(root, 1000 + mi), 6)
    res = {"info": info, "is": {}, "ais": [], "bdmc": []}
    per_image = {}
    for k in config.is_ks:
      ll, secs = importance_sampling(model, params, x, jax.random.fold_in(k_is, int(k)),
                                     num_samples=int(k),
                                     sample_chunk=int(config.is_sample_chunk),
                                     batch_size=int(config.is_batch_size))
      per_image[f"is_{k}"] = ll
      res["is"][str(k)] = {"mean": float(ll.mean()), "seconds": secs}
    j = jvi(model, params, x, k_jvi, config.jvi)
    res["jvi"] = None if j is None else {"mean": float(j.mean()), "order": int(config.jvi.order),
                                         "num_samples": int(config.jvi.num_samples)}
    if j is not None:
      per_image["jvi"] = j
    for t in config.ais.temps:
      row = run_ais(model, params, x, jax.random.fold_in(k_ais, int(t)), config, int(t))
      per_image[f"ais_{t}"] = row.pop("estimates")
      res["ais"].append(row)
    t_max = max(int(t) for t in config.ais.temps)
    best = per_image[f"ais_{t_max}"]
    res["understatement_vs_ais"] = {**_stats(best - per_image[f"is_{kmax}"]), "T": t_max}
    if j is not None:
      res["jvi_minus_is"] = _stats(j - per_image[f"is_{kmax}"])
    # BDMC on data simulated from the model
    nsim = int(config.bdmc.num_examples)
    xs, zs = jax.jit(functools.partial(ais.simulate, model, num=nsim,
                                       sample_x_given_z="bernoulli"))(params, k_sim)
    xs_np = np.asarray(xs, np.float32)
    ll_sim, _ = importance_sampling(model, params, xs_np, k_sim_is, num_samples=kmax,
                                    sample_chunk=int(config.is_sample_chunk),
                                    batch_size=int(config.is_batch_size))
    res["simulated_is_5000"] = float(ll_sim.mean())
    for t in config.bdmc.temps:
      row = run_bdmc(model, params, xs_np, zs, jax.random.fold_in(k_bdmc, int(t)), config, int(t))
      lo, up = row.pop("lower_per_example"), row.pop("upper_per_example")
      row["lower_minus_is"] = _stats(lo - ll_sim)
      row["upper_minus_is"] = _stats(up - ll_sim)
      res["bdmc"].append(row)
    ais_max = next(r for r in res["ais"] if r["T"] == t_max)
    res["speed"] = speed(model, ais_max, res["is"][str(kmax)]["seconds"], x.shape[0], kmax, rate)
    res["per_image"] = {k: v.tolist() for k, v in per_image.items()}
    out["models"][name] = res
  out["machine_matmul_gflops"] = max(rate, matmul_rate(int(config.matmul_size))) / 1e9
  out["total_seconds"] = time.time() - t_start
  out["figures"] = write_figures(out, workdir)
  results_lib.write_json(os.path.join(workdir, "results.json"), out)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(format_table(out, markdown=True) + "\n")
  return out


# ----------------------------------------------------------------------------- output


def _label(name: str, res: dict) -> str:
  i = res["info"]
  obj = (i.get("objective") or name.split("-")[0]).upper()
  return f"{obj} k={i.get('k')}"


def format_table(out: dict, *, markdown: bool = False) -> str:
  """The answer per model: L_k, JVI, AIS at each T, AIS(T_max) - L_5000, and the BDMC sandwich."""
  temps = out["ais_temps"]
  head = (["model"] + [f"L_{k}" for k in out["is_ks"]] + ["JVI"] + [f"AIS T={t}" for t in temps]
          + ["AIS - L_5000 (nats)", "BDMC gap (sim.)", "sim.: lower - L_5000", "source"])
  rows = []
  for name, r in out["models"].items():
    und = r["understatement_vs_ais"]
    bd = max(r["bdmc"], key=lambda b: b["T"])
    rows.append(
        [_label(name, r)] + [f"{r['is'][str(k)]['mean']:.2f}" for k in out["is_ks"]]
        + [f"{r['jvi']['mean']:.2f}" if r.get("jvi") else "n/a"]
        + [f"{a['mean']:.2f}" for a in r["ais"]]
        + [f"{und['mean']:+.2f} ± {und['stderr']:.2f}",
           f"{bd['gap']:.2f} ± {bd['gap_stderr']:.2f} (T={bd['T']})",
           f"{bd['lower_minus_is']['mean']:+.2f}",
           f"{r['info']['source']} ({r['info'].get('epochs') or r['info'].get('num_epochs')} ep)"])
  speed_lines = []
  for name, r in out["models"].items():
    s = r["speed"]
    speed_lines.append(
        f"{_label(name, r)}: AIS T={s['ais']['T']}: {s['ais']['decoder_evaluations_per_second']:.3g}"
        f" decoder evals/s ({s['ais']['fraction_of_matmul_rate']:.2f} of the matmul rate); "
        f"IS k={s['is']['k']}: {s['is']['decoder_evaluations_per_second']:.3g} evals/s "
        f"({s['is']['fraction_of_matmul_rate']:.2f}); machine {s['machine_matmul_gflops']:.1f} "
        f"GFLOP/s")
  if markdown:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
  else:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]
  lines += ["", f"Test log-likelihoods in nats on {out['num_test']} {out['dataset']} test images; "
            "'AIS - L_5000' is the understatement of the k=5000 estimate (paired mean ± s.e.); "
            "BDMC on images simulated from each model.", out["wu_2017"] + ".",
            *wu_2017_lines(), ""]
  lines += ["Speed: " + l for l in speed_lines]
  return "\n".join(lines)


def write_figures(out: dict, workdir: str) -> dict:
  """``ais_vs_T.png``, ``ais_vs_time.png``, ``bdmc_sandwich.png``; returns their file names."""
  plt = figures_lib.pyplot()
  names = list(out["models"])
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  files = {}

  fig, ax = plt.subplots(figsize=(8, 4))
  for i, n in enumerate(names):
    r = out["models"][n]
    c = colors[i % len(colors)]
    ax.plot([a["T"] for a in r["ais"]], [a["mean"] for a in r["ais"]], "o-", color=c,
            label=f"{_label(n, r)}: AIS")
    ax.axhline(r["is"]["5000"]["mean"], color=c, ls="--", lw=1, label=f"{_label(n, r)}: L_5000")
  ax.set_xscale("log")
  ax.set_xlabel("intermediate distributions T")
  ax.set_ylabel("mean log p(x) estimate (nats)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  files["ais_vs_T"] = "ais_vs_T.png"
  fig.savefig(os.path.join(workdir, files["ais_vs_T"]), dpi=120)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(8, 4))
  for i, n in enumerate(names):
    r = out["models"][n]
    c = colors[i % len(colors)]
    ax.plot([a["seconds"] for a in r["ais"]], [a["mean"] for a in r["ais"]], "o-", color=c,
            label=f"{_label(n, r)}: AIS (T)")
    ks = sorted(int(k) for k in r["is"])
    ax.plot([r["is"][str(k)]["seconds"] for k in ks], [r["is"][str(k)]["mean"] for k in ks], "s:",
            color=c, label=f"{_label(n, r)}: IS (k)")
  ax.set_xscale("log")
  ax.set_xlabel(f"wall time for {out['num_test']} images (s, compilation excluded)")
  ax.set_ylabel("mean log p(x) estimate (nats)")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
  fig.tight_layout()
  files["ais_vs_time"] = "ais_vs_time.png"
  fig.savefig(os.path.join(workdir, files["ais_vs_time"]), dpi=120)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
  for ax, n in zip(axes[0], names):
    r = out["models"][n]
    ts = [b["T"] for b in r["bdmc"]]
    ax.plot(ts, [b["upper"] for b in r["bdmc"]], "v-", label="BDMC upper (reverse AIS)")
    ax.plot(ts, [b["lower"] for b in r["bdmc"]], "^-", label="BDMC lower (forward AIS)")
    ax.fill_between(ts, [b["lower"] for b in r["bdmc"]], [b["upper"] for b in r["bdmc"]],
                    alpha=0.2)
    ax.axhline(r["simulated_is_5000"], color="k", ls="--", lw=1, label="L_5000")
    ax.set_xscale("log")
    ax.set_title(f"{_label(n, r)}: simulated data", fontsize=9)
    ax.set_xlabel("T")
  axes[0][0].set_ylabel("mean log p(x) (nats)")
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  files["bdmc_sandwich"] = "bdmc_sandwich.png"
  fig.savefig(os.path.join(workdir, files["bdmc_sandwich"]), dpi=120)
  plt.close(fig)
  return files
