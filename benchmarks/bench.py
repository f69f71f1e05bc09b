"""dgmjax beside a plain PyTorch peer (eager and ``torch.compile``), one command, one process.

    python benchmarks/bench.py --json bench.json                      # the full run
    python benchmarks/bench.py --quick --json /tmp/q.json             # a few minutes
    DGMJAX_DATA_DIR=../shared/data python benchmarks/bench.py --params_from runs/iwae-k50-l1-short

What it does, in order:

1. **Agreement.** For Burda's 1-layer (784-200-200-50) and 2-layer (784-200-200-100-100-100-50)
   models, the PyTorch peer (``benchmarks/torch_peer.py``) is loaded with dgmjax's weights and fed
   dgmjax's noise (the ``eps`` that ``dgmjax.models.log_weights_from_keys`` draws from its keys);
   the log-weights must agree to 1e-5 (relative, float32), every gradient of the VAE and IWAE losses
   to 1e-4 (relative to the largest entry of its tensor), the parameters after one Adam step to
   1e-4 of the learning rate, the per-chunk ``logsumexp`` of the evaluation path to 1e-5, and the
   log-weights in float64 to 1e-10. Any failure stops the run (exit code 2) before timing.
2. **Machine matmul FLOP/s**: a jitted float32 ``[2048, 2048] @ [2048, 2048]`` in JAX, measured
   again next to every timed repetition (the machine may be shared), plus PyTorch's for reference.
3. **Training**, per model and ``(B, K)`` in ``{(20,1), (20,5), (20,50), (100,50), (1000,50)}``
   (``K = 1``: the VAE; otherwise IWAE): one optimiser step (dynamic binarization, fresh noise,
   loss, gradient, Adam with eps=1e-4) of dgmjax (``training.make_train_step``), PyTorch eager and
   ``torch.compile``. Warm-up first; compile time is the excess of the first three calls over
   three steady steps, reported apart (``torch.compile(dynamic=False)`` reuses inductor's on-disk
   cache, e.g. ``/tmp/torchinductor_$USER``, so a repeated run compiles faster). Then ``--reps``
   repetitions, each timing every side once in a rotating order (interleaved); a repetition runs
   enough steps for ``--rep_seconds``.
   dgmjax is synchronised with ``block_until_ready`` on the state, PyTorch with
   ``torch.cuda.synchronize()`` on GPU (CPU ops are synchronous). Ratios are peer time / dgmjax
   time within each repetition: median, min and max over repetitions.
4. **k=5000 evaluation** (``L_5000`` of Burda et al.) on ``--eval_images`` test images in batches
   of ``--eval_batch``, for each chunk size in ``--eval_chunks`` and dgmjax's automatic one
   (``sample_chunk="auto"``, see ``dgmjax.numerics.memory_budget``). The time for all 10,000
   test images is extrapolated from the subset (labelled as such). The precision section reports
   the NLL shift of TF32 and bfloat16 matmuls versus float32 (emulated by rounding on CPU).

Fairness: ``torch.set_num_threads`` equals the number of CPUs XLA uses (this process's affinity;
``--threads N`` pins both to the first N CPUs). PyTorch's OpenMP threads spin-wait by default;
on a machine shared with another job that makes a 2-thread step 30x slower (984 ms instead of
35 ms here), so ``OMP_WAIT_POLICY=PASSIVE`` is set unless given (``--omp_wait_policy``).

FLOPs are analytic matmul FLOPs (``2 * rows * in * out`` per dense layer; the backward pass
doubles them, except for the input layer of the encoder, whose input needs no gradient); the
first encoder runs once per image, every other layer once per importance sample.

Peak memory (CPU): the increase of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) while one side runs a few steps (or one
evaluation pass) after its warm-up: the memory that side's work adds on top of its parameters.
It is an OS-level measure of both sides alike; for dgmjax the XLA buffer assignment of the
compiled step (temporaries + outputs) is reported beside it. On GPU: ``torch.cuda
.max_memory_allocated`` and XLA's buffer assignment.

Not a test: nothing here is timed in the test suite (``tests/test_benchmarks.py`` runs only the
agreement check).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

TRAIN_CASES = ((20, 1), (20, 5), (20, 50), (100, 50), (1000, 50))
MODELS = ("burda1", "burda2")


# ----------------------------------------------------------------------------- setup


#: The row label "vae" (as in the saved results and the PyTorch peer) names the ELBO.
_BOUND = {"vae": "elbo"}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--json", default="", help="write the results here")
  p.add_argument("--quick", action="store_true",
                 help="fewer repetitions, shorter ones, and a smaller evaluation subset")
  p.add_argument("--cases", default="train,eval,precision",
                 help="comma list of sections: train, eval, precision")
  p.add_argument("--models", default=",".join(MODELS), help="burda1,burda2")
  p.add_argument("--train_cases", default=",".join(f"{b}x{k}" for b, k in TRAIN_CASES),
                 help="comma list of BxK")
  p.add_argument("--eval_models", default="burda1", help="models of the k=5000 evaluation")
  p.add_argument("--eval_images", type=int, default=200)
  p.add_argument("--eval_batch", type=int, default=100)
  p.add_argument("--eval_chunks", default="10,20,50,100,auto",
                 help="sample chunks of the k=5000 evaluation ('auto': dgmjax's choice)")
  p.add_argument("--eval_samples", type=int, default=5000, help="K of the evaluation")
  p.add_argument("--reps", type=int, default=7, help="timed repetitions per case and side")
  p.add_argument("--eval_reps", type=int, default=3, help="timed repetitions of the evaluation")
  p.add_argument("--rep_seconds", type=float, default=1.0, help="target length of a repetition")
  p.add_argument("--threads", type=int, default=0, help="CPUs for both sides (0: all allowed)")
  p.add_argument("--omp_wait_policy", default="PASSIVE", help="OMP_WAIT_POLICY for PyTorch")
  p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  p.add_argument("--microbatch", default="auto",
                 help="dgmjax's training microbatch: auto (training.auto_microbatch), none, or N;"
                      " with a microbatch below B the whole-batch step is timed beside it")
  p.add_argument("--tf32", action="store_true",
                 help="GPU: allow TF32 matmuls on both sides (default: true float32)")
  p.add_argument("--params_from", default="",
                 help="an experiments/iwae run directory whose checkpoint gives the 1-layer "
                      "weights of the evaluation (default: the initial weights)")
  p.add_argument("--data_dir", default="", help="MNIST files (default: DGMJAX_DATA_DIR)")
  p.add_argument("--report", default="", help="only print the report of a saved JSON")
  a = p.parse_args(argv)
  mb = a.microbatch.strip().lower()
  if mb not in ("auto", "none"):  # checked before any work (training.resolve_microbatch again later)
    batches = [int(c.split("x")[0]) for c in a.train_cases.split(",") if c.strip()]
    if not mb.isdigit() or int(mb) < 1 or any(b % int(mb) for b in batches):
      p.error(f"--microbatch must be auto, none or a positive divisor of every B in "
              f"--train_cases {batches}, got {a.microbatch!r}")
  if a.quick:
    a.reps, a.eval_reps, a.rep_seconds = min(a.reps, 3), min(a.eval_reps, 2), 0.3
    a.eval_images = min(a.eval_images, 100)
  return a


def configure_process(threads: int, omp_wait_policy: str) -> int:
  """Pins the process to ``threads`` CPUs (0: keep the affinity) and sets OpenMP's wait policy;
  must run before jax and torch are imported. Returns the number of CPUs both sides use."""
  cpus = sorted(os.sched_getaffinity(0))
  if threads and threads < len(cpus):
    cpus = cpus[:threads]
    os.sched_setaffinity(0, cpus)
  if omp_wait_policy:
    os.environ.setdefault("OMP_WAIT_POLICY", omp_wait_policy)
  return len(cpus)


# ----------------------------------------------------------------------------- measurement


_LIBC = None


def _proc_status() -> dict:
  out = {}
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(("VmRSS:", "VmHWM:")):
        k, v = line.split(":")
        out[k] = int(v.split()[0]) * 1024
  return out


def peak_rss_delta(fn) -> float | None:
  """Bytes by which the peak resident set grows while ``fn()`` runs (Linux), else None."""
  global _LIBC
  try:
    gc.collect()
    if _LIBC is None:
      _LIBC = ctypes.CDLL("libc.so.6")
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    base = _proc_status()["VmRSS"]
  except (OSError, KeyError):
    fn()
    return None
  fn()
  return float(_proc_status()["VmHWM"] - base)


def summary(xs) -> dict:
  xs = [float(x) for x in xs]
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


class Machine:
  """The measured matmul FLOP/s of this machine (JAX, float32), sampled during the run."""

  def __init__(self, jax, n: int = 2048):
    import numpy as np
    self.jax, self.n = jax, n
    rng = np.random.default_rng(0)
    self.a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
    self.b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
    self.f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(self.f(self.a, self.b))
    self.samples = []

  def measure(self, seconds: float = 0.3) -> float:
    """One sample of the matmul rate (FLOP/s), from as many products as fit in ``seconds``."""
    flops, reps, t0 = 2.0 * self.n**3, 0, time.perf_counter()
    while True:
      out = self.f(self.a, self.b)
      reps += 1
      self.jax.block_until_ready(out)
      dt = time.perf_counter() - t0
      if dt >= seconds and reps >= 2:
        break
    rate = flops * reps / dt
    self.samples.append(rate)
    return rate

  @property
  def median(self) -> float:
    return statistics.median(self.samples)


def torch_matmul_rate(torch, device, n: int = 2048, seconds: float = 0.5) -> float:
  a = torch.randn(n, n, device=device)
  b = torch.randn(n, n, device=device)
  a @ b
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  sync()
  reps, t0 = 0, time.perf_counter()
  while True:
    a @ b
    reps += 1
    sync()
    dt = time.perf_counter() - t0
    if dt >= seconds and reps >= 2:
      return 2.0 * n**3 * reps / dt


# ----------------------------------------------------------------------------- FLOPs


def dense_layers(model) -> list[tuple[int, int, bool, bool]]:
  """``(in, out, per_sample, data_input)`` for every dense layer of a dgmjax VAE."""
  layers = []
  ins = [model.x_dim] + list(model.latent_dims[:-1])
  for l in range(model.num_layers):  # encoders q(h_l | h_{l-1})
    dims = [ins[l]] + list(model.hidden_dims[l])
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
      layers.append((a, b, l > 0, l == 0 and i == 0))
    layers += [(dims[-1], model.latent_dims[l], l > 0, False)] * 2  # loc, log_scale
  for l in range(model.num_layers - 1):  # priors p(h_l | h_{l+1})
    dims = [model.latent_dims[l + 1]] + list(reversed(model.hidden_dims[l + 1]))
    layers += [(a, b, True, False) for a, b in zip(dims[:-1], dims[1:])]
    layers += [(dims[-1], model.latent_dims[l], True, False)] * 2
  dims = [model.latent_dims[0]] + list(reversed(model.hidden_dims[0])) + [model.x_dim]
  layers += [(a, b, True, False) for a, b in zip(dims[:-1], dims[1:])]  # decoder
  return layers


def matmul_flops(model, batch: int, num_samples: int, *, train: bool) -> float:
  """Analytic matmul FLOPs of one training step or one ``L_K`` evaluation of ``batch`` images."""
  total = 0.0
  for a, b, per_sample, data_input in dense_layers(model):
    fwd = 2.0 * (num_samples * batch if per_sample else batch) * a * b
    total += fwd if not train else (2.0 if data_input else 3.0) * fwd
  return total


# ----------------------------------------------------------------------------- the models


def make_models(name: str, data_mean=None, key_seed: int = 0):
  """``(dgmjax model, params, torch model)`` with the same weights."""
  import jax
  import torch_peer
  from dgmjax.models import vae
  model = vae.make(name, (28, 28, 1))
  params = jax.jit(lambda k: model.init(k, data_mean=data_mean))(jax.random.key(key_seed))
  tmodel = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims)
  torch_peer.load_dgmjax_params(tmodel, params)
  return model, params, tmodel


def dgmjax_noise(model, keys, batch: int, dtype=None) -> list:
  """The standard-normal ``eps`` ``[K, B, D_l]`` that ``dgmjax.models.log_weights_from_keys(model,
  params, x, keys)`` draws for each stochastic layer (same keys, same draws): sample ``k`` is
  ``model.sample_q(params, x, keys[k])``, which splits its key into one key per layer."""
  import jax
  import jax.numpy as jnp
  dtype = dtype or jnp.float32

  @jax.jit
  def draw(keys):
    def one(k):
      layer_keys = model._layer_keys(k)  # pylint: disable=protected-access
      return [jax.random.normal(lk, (batch, d), dtype)
              for lk, d in zip(layer_keys, model.latent_dims)]
    return jax.vmap(one)(keys)

  return draw(keys)


class AgreementError(AssertionError):
  """dgmjax and the PyTorch peer disagree beyond the tolerances."""


def check_agreement(name: str, *, batch: int = 8, num_samples: int = 7, data=None,
                    lw_tol: float = 1e-5, grad_tol: float = 1e-4, adam_tol: float = 1e-10,
                    f64_tol: float = 1e-10, raise_on_failure: bool = True) -> dict:
  """Feeds dgmjax and the PyTorch peer the same weights and noise and compares them.

  Args:
    name: ``'burda1'`` or ``'burda2'``.
    batch, num_samples: ``B`` and ``K`` of the check.
    data: optional ``[N, 28, 28, 1]`` grey-level images (default: random); binarized here.
    lw_tol: relative tolerance of the float32 log-weights, ``|a - b| / max(|b|, 1)``.
    grad_tol: per parameter tensor, ``max |g_a - g_b| / max |g_b|``.
    adam_tol: parameters after one Adam step from the same gradient, in float64,
      ``max |p_a - p_b| / learning_rate``.
    f64_tol: relative tolerance of the log-weights in float64.
    raise_on_failure: raise :class:`AgreementError` (else only report).

  Returns:
    ``{"ok": bool, "log_weights_rel": float, "grad_rel": {objective: float}, ...}``.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import torch
  import torch_peer
  from dgmjax import models, training

  rng = np.random.default_rng(1)
  log_weights_from_keys = jax.jit(lambda p, xx, ks: models.log_weights_from_keys(model, p, xx, ks))
  grey = data[:batch] if data is not None else rng.uniform(size=(batch, 28, 28, 1))
  x = (rng.uniform(size=grey.shape) < grey).astype(np.float32)
  mean = (data if data is not None else grey).mean(0)
  model, params, tmodel = make_models(name, data_mean=mean, key_seed=3)
  xt = torch.from_numpy(x.reshape(batch, -1).copy())
  out = {"model": name, "B": batch, "K": num_samples}

  with jax.debug_key_reuse(False):  # the same keys feed both sides on purpose
    key = jax.random.key(7)
    keys = jax.random.split(key, num_samples)
    eps = [torch.from_numpy(np.asarray(e).copy()) for e in dgmjax_noise(model, keys, batch)]
    # 1. log-weights, float32
    lw = np.asarray(log_weights_from_keys(params, x, keys), np.float64)
    with torch.no_grad():
      tlw = tmodel.log_weights(xt, eps).double().numpy()
    out["log_weights_rel"] = float(np.max(np.abs(lw - tlw) / np.maximum(np.abs(tlw), 1.0)))
    # 2. evaluation path: per-chunk logsumexp, encoder run once
    with torch.no_grad():
      loc, log_scale = tmodel.encoders[0](xt)
      chunk_lse = torch_peer._chunk_lse  # pylint: disable=protected-access
      tlse = chunk_lse(tmodel, xt, loc, log_scale, eps).double().numpy()
    lse = np.asarray(jax.nn.logsumexp(jnp.asarray(lw), axis=0))
    out["eval_lse_rel"] = float(np.max(np.abs(lse - tlse) / np.maximum(np.abs(tlse), 1.0)))
    # 3. gradients of the VAE and IWAE losses (make_loss splits the key into the same K keys)
    out["grad_rel"] = {}
    grads_j = {}
    for objective in ("vae", "iwae"):
      loss = training.make_loss(model, _BOUND.get(objective, objective), num_samples)
      g = jax.jit(jax.grad(lambda p: loss(p, x, key)[0]))(params)
      flat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v)
              for path, v in jax.tree_util.tree_flatten_with_path(g)[0]}
      tmodel.zero_grad(set_to_none=True)
      torch_peer.loss_fn(tmodel, objective, xt, eps).backward()
      tg = torch_peer.named_grads_as_dgmjax(tmodel)
      if set(tg) != set(flat):
        raise AgreementError(f"parameter names differ: {sorted(set(tg) ^ set(flat))}")
      out["grad_rel"][objective] = max(
          float(np.max(np.abs(flat[k] - tg[k])) / max(np.max(np.abs(tg[k])), 1e-30))
          for k in flat)
      grads_j[objective] = g
    # 4. one Adam step from the same (dgmjax's IWAE) gradient, in float64 on both sides, so that
    # only the optimisers are compared: in float32 the first step, lr * g / (|g| + eps), amplifies
    # gradient rounding by up to 1 / (4 eps), and the parameters round to their own ulp.
    lr = 1e-3
    gflat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v, np.float64)
             for path, v in jax.tree_util.tree_flatten_with_path(grads_j["iwae"])[0]}
    with jax.enable_x64(True):
      opt = training.make_optimizer("adam", lr)
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      g64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), grads_j["iwae"])
      new = jax.jit(lambda p, g: optax.apply_updates(p, opt.update(g, opt.init(p), p)[0]))(p64,
                                                                                           g64)
      newflat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v)
                 for path, v in jax.tree_util.tree_flatten_with_path(new)[0]}
    tm64 = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims).double()
    torch_peer.load_dgmjax_params(tm64, params)
    topt = torch_peer.make_optimizer(tm64, lr)
    for nm, prm in tm64.named_parameters():
      g = gflat[torch_peer.dgmjax_name(nm)]
      prm.grad = torch.from_numpy(np.ascontiguousarray(g.T if g.ndim == 2 else g).copy())
    topt.step()
    tnew = torch_peer.as_dgmjax(tm64)
    out["adam_step_rel_lr"] = max(float(np.max(np.abs(newflat[k] - tnew[k]))) / lr
                                  for k in newflat)
    # 5. float64: the same maths exactly
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      e64 = dgmjax_noise(model, keys, batch, jnp.float64)
      lw64 = np.asarray(log_weights_from_keys(p64, jnp.asarray(x, jnp.float64), keys))
    t64 = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims).double()
    torch_peer.load_dgmjax_params(t64, params)
    with torch.no_grad():
      tlw64 = t64.log_weights(xt.double(), [torch.from_numpy(np.array(e)) for e in e64]).numpy()
    out["log_weights_rel_f64"] = float(np.max(np.abs(lw64 - tlw64) / np.maximum(np.abs(tlw64), 1)))

  checks = {"log_weights_rel": (out["log_weights_rel"], lw_tol),
            "eval_lse_rel": (out["eval_lse_rel"], lw_tol),
            "grad_rel_vae": (out["grad_rel"]["vae"], grad_tol),
            "grad_rel_iwae": (out["grad_rel"]["iwae"], grad_tol),
            "adam_step_rel_lr": (out["adam_step_rel_lr"], adam_tol),
            "log_weights_rel_f64": (out["log_weights_rel_f64"], f64_tol)}
  failed = {k: v for k, v in checks.items() if not v[0] <= v[1]}
  out["tolerances"] = {k: t for k, (_, t) in checks.items()}
  out["ok"] = not failed
  if failed and raise_on_failure:
    raise AgreementError(f"dgmjax and the PyTorch peer disagree for {name}: " + ", ".join(
        f"{k} = {v:.3g} > {t:g}" for k, (v, t) in failed.items()))
  return out


# ----------------------------------------------------------------------------- timing


class Side:
  """One implementation of a case: ``run(n)`` does ``n`` steps (or passes) and synchronises."""

  def __init__(self, name: str, run, memory=None):
    self.name, self.run, self.memory = name, run, memory
    self.times, self.compile_s, self.first_s, self.error = [], None, None, None
    self.peak_rss, self.xla_bytes, self.steps_per_rep = None, None, 1
    self.rates = []

  def result(self, unit: float = 1.0) -> dict:
    if self.error:
      return {"error": self.error}
    return {**{k: v * unit for k, v in summary(self.times).items() if k != "n"},
            "reps": len(self.times), "steps_per_rep": self.steps_per_rep,
            "compile_s": self.compile_s,
            "peak_rss_mb": None if self.peak_rss is None else self.peak_rss / 2**20,
            "xla_buffers_mb": None if self.xla_bytes is None else self.xla_bytes / 2**20}


def warm_up(side: Side, rep_seconds: float, n_first: int = 3) -> None:
  """First calls (compilation) timed apart, then the steps per repetition are calibrated."""
  try:
    t0 = time.perf_counter()
    for _ in range(n_first):
      side.run(1)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    side.run(3)
    steady = (time.perf_counter() - t0) / 3
    side.compile_s = max(first - n_first * steady, 0.0)
    side.first_s = first
    side.steps_per_rep = int(min(max(1, round(rep_seconds / max(steady, 1e-6))), 100000))
  except Exception as e:  # pylint: disable=broad-except  (report, e.g. torch.compile failing)
    side.error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def interleave(sides: list[Side], reps: int, machine=None, flops: float | None = None) -> list:
  """``reps`` rounds; each times every working side once, in a rotating order. With a ``machine``,
  its matmul rate is sampled just before each timing (``side.rates``); returns all samples."""
  live = [s for s in sides if not s.error]
  rates = []
  gc_was = gc.isenabled()
  gc.disable()
  try:
    for r in range(reps):
      order = live[r % len(live):] + live[:r % len(live)]
      for s in order:
        if machine is not None:  # the machine's matmul rate just before this side's timing
          s.rates.append(machine.measure(0.15))
          rates.append(s.rates[-1])
        t0 = time.perf_counter()
        s.run(s.steps_per_rep)
        s.times.append((time.perf_counter() - t0) / s.steps_per_rep)
  finally:
    if gc_was:
      gc.enable()
  del flops
  return rates


def ratios(peer: Side, ref: Side) -> dict | None:
  if peer.error or ref.error or not peer.times:
    return None
  return summary([p / d for p, d in zip(peer.times, ref.times)])


# ----------------------------------------------------------------------------- cases


def jax_train_runner(loss_fn, opt, params, jbatches, microbatch):
  """``(step, holder, run)``: the jitted dgmjax step on the minibatches ``jbatches`` (cycled) and
  ``run(n)``, which takes ``n`` steps and waits for them; ``holder`` keeps the state."""
  import jax
  from dgmjax import training
  batch = int(jbatches[0].shape[0])
  step = training.make_train_step(loss_fn, opt, seed=0, dynamic_binarization=True,
                                  microbatch=None if microbatch >= batch else microbatch)
  holder = {"state": training.init_state(params, opt), "i": 0}

  def run(n):
    st = holder["state"]
    for _ in range(n):
      st, _ = step(st, jbatches[holder["i"] % len(jbatches)])
      holder["i"] += 1
    jax.block_until_ready(st)
    holder["state"] = st
  return step, holder, run


def train_case(name, batch, num_samples, args, ctx, machine) -> dict:
  import jax
  import numpy as np
  import torch
  import torch_peer
  from dgmjax import training

  objective = "vae" if num_samples == 1 else "iwae"
  model, params, tmodel = make_models(name, data_mean=ctx["train"][:2000].mean(0))
  rng = np.random.default_rng(batch * 7919 + num_samples)
  idx = [rng.choice(ctx["train"].shape[0], batch, replace=False) for _ in range(4)]
  jbatches = [jax.device_put(ctx["train"][i]) for i in idx]
  tbatches = [torch.from_numpy(ctx["train"][i].reshape(batch, -1).copy()).to(ctx["device"])
              for i in idx]
  sync = ctx["sync"]

  opt = training.make_optimizer("adam", 1e-3)
  loss_fn = training.make_loss(model, _BOUND.get(objective, objective), num_samples)
  microbatch = training.resolve_microbatch(args.microbatch, batch, num_samples,
                                           name="--microbatch", batch_name="B") or batch

  make_jax = lambda mb: jax_train_runner(loss_fn, opt, params, jbatches, mb)

  step, holder, run_jax = make_jax(microbatch)

  def make_torch(compile_):
    tm = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims)
    torch_peer.load_dgmjax_params(tm, params)
    tm = tm.to(ctx["device"])
    ts = torch_peer.TrainStep(tm, objective, num_samples, 1e-3, compile=compile_)
    cnt = {"i": 0}

    def run(n):
      for _ in range(n):
        ts(tbatches[cnt["i"] % 4])
        cnt["i"] += 1
      sync()
    return run

  sides = [Side("dgmjax", run_jax), Side("torch_eager", make_torch(False))]
  if not args.no_compile:
    sides.append(Side("torch_compile", make_torch(True)))
  if microbatch < batch:  # the same step without microbatches, timed beside it
    sides.append(Side("dgmjax_whole_batch", make_jax(batch)[2]))
  for s in sides:
    warm_up(s, args.rep_seconds)
  rates = interleave(sides, args.reps, machine)
  for s in sides:  # memory after timing: a few more steps per side
    if not s.error:
      s.peak_rss = peak_rss_delta(lambda s=s: s.run(2)) if ctx["device"] == "cpu" else None
  try:
    mem = step.lower(holder["state"], jbatches[0]).compile().memory_analysis()
    sides[0].xla_bytes = float(mem.temp_size_in_bytes + mem.output_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    pass
  if ctx["device"] == "cuda":
    torch.cuda.reset_peak_memory_stats()
    sides[1].run(3)
    sides[1].peak_rss = float(torch.cuda.max_memory_allocated())
  flops = matmul_flops(model, batch, num_samples, train=True)
  d = sides[0]
  gflops = flops / statistics.median(d.times) / 1e9 if d.times else None
  whole = [s for s in sides if s.name == "dgmjax_whole_batch"]
  res = {"model": name, "objective": objective, "B": batch, "K": num_samples,
         "microbatch": microbatch, "matmul_gflop_per_step": flops / 1e9,
         **{s.name: s.result(1e3) for s in sides},  # milliseconds per step
         "ratio_eager": ratios(sides[1], d),
         "ratio_compile": (ratios(sides[2], d) if len(sides) > 2
                           and sides[2].name == "torch_compile" else None),
         "microbatch_speedup": ratios(whole[0], d) if whole else None,
         "dgmjax_gflops": gflops,
         "machine_gflops_adjacent": statistics.median(d.rates) / 1e9 if d.rates else None}
  del rates
  return res


def eval_case(name, args, ctx, machine, params_override=None) -> list[dict]:
  import jax
  import numpy as np
  import torch
  import torch_peer
  from dgmjax import evaluation, numerics

  model, params, tmodel = make_models(name, data_mean=ctx["train"][:2000].mean(0))
  if params_override is not None:
    params = params_override
    torch_peer.load_dgmjax_params(tmodel, params)
  tmodel = tmodel.to(ctx["device"])
  x = ctx["test_binary"][:args.eval_images]
  xt = torch.from_numpy(x.reshape(x.shape[0], -1).copy()).to(ctx["device"])
  K, B = args.eval_samples, min(args.eval_batch, x.shape[0])
  flops = matmul_flops(model, 1, K, train=False) * x.shape[0]
  chunks = [c.strip() for c in args.eval_chunks.split(",") if c.strip()]
  auto_chunk = evaluation.auto_sample_chunk(model, params, x[:B], num_samples=K)
  budget = numerics.memory_budget()
  cases = []
  for c in chunks:
    chunk = auto_chunk if c == "auto" else int(c)
    key = jax.random.key(11)
    box = {}

    def run_jax(n, chunk=chunk, box=box, key=key):
      for _ in range(n):
        box["ll"] = evaluation.log_likelihood(model, params, x, key,
                                              num_samples=K, sample_chunk=chunk, batch_size=B)

    def make_torch(compile_, chunk=chunk, box=box, tag=""):
      def run(n):
        for _ in range(n):
          box["t" + tag] = torch_peer.log_likelihood(tmodel, xt, num_samples=K,
                                                     sample_chunk=chunk, batch_size=B,
                                                     compile=compile_)
        ctx["sync"]()
      return run

    sides = [Side("dgmjax", run_jax), Side("torch_eager", make_torch(False))]
    if not args.no_compile:
      sides.append(Side("torch_compile", make_torch(True, tag="c")))
    for s in sides:
      warm_up(s, 0.0, n_first=1)
      s.steps_per_rep = 1
    cases.append((c, chunk, box, sides))
  # Every chunk size and side in the same rounds (rotating order), so that times of different
  # chunk sizes, not only the ratios, are comparable on a machine whose load changes.
  interleave([s for case in cases for s in case[3]], args.eval_reps, machine)
  rows = []
  n_img = x.shape[0]
  for c, chunk, box, sides in cases:
    for s in sides:
      if not s.error and ctx["device"] == "cpu":
        s.peak_rss = peak_rss_delta(lambda s=s: s.run(1))
    d = sides[0]
    gflops = flops / statistics.median(d.times) / 1e9
    rows.append({
        "model": name, "K": K, "B": B, "chunk": chunk, "chunk_setting": c,
        "rows_per_matmul": chunk * B, "images": n_img,
        **{s.name: s.result(1.0 / n_img) for s in sides},  # seconds per image
        "ratio_eager": ratios(sides[1], d),
        "ratio_compile": ratios(sides[2], d) if len(sides) > 2 else None,
        "dgmjax_gflops": gflops,
        "machine_gflops_adjacent": statistics.median(d.rates) / 1e9 if d.rates else None,
        "extrapolated_10000_images_s": {s.name: statistics.median(s.times) / n_img * 10000
                                        for s in sides if not s.error},
        "nll": {"dgmjax": -float(np.mean(box["ll"])),
                "torch_eager": -float(box["t"].double().mean()) if "t" in box else None}})
  rows[-1]["auto"] = {"chunk": auto_chunk, "budget": budget}
  return rows


def precision_case(name, args, ctx, params_override=None) -> dict:
  import jax
  import numpy as np
  from dgmjax import evaluation

  model, params, _ = make_models(name, data_mean=ctx["train"][:2000].mean(0))
  if params_override is not None:
    params = params_override
  x = ctx["test_binary"][:args.eval_images]
  out = {"model": name, "images": x.shape[0], "K": args.eval_samples,
         "emulated": jax.default_backend() == "cpu"}
  lls = {}
  for prec in ("float32", "tensorfloat32", "bfloat16"):
    lls[prec] = evaluation.log_likelihood(model, params, x,
                                          jax.random.key(11), num_samples=args.eval_samples,
                                          sample_chunk="auto",
                                          batch_size=min(args.eval_batch, x.shape[0]),
                                          matmul_precision=prec)
  for prec in ("tensorfloat32", "bfloat16"):
    diff = lls[prec] - lls["float32"]
    out[prec] = {"nll": -float(lls[prec].mean()), "nll_shift": -float(diff.mean()),
                 "max_abs_shift_per_image": float(np.abs(diff).max())}
  out["float32"] = {"nll": -float(lls["float32"].mean()),
                    "standard_error": float(lls["float32"].std(ddof=1) / math.sqrt(x.shape[0]))}
  return out


# ----------------------------------------------------------------------------- data


def load_data(args):
  """``(train grey levels [N,28,28,1], test binarized once [M,28,28,1], source)``."""
  import jax
  import numpy as np
  data_dir = args.data_dir or os.environ.get("DGMJAX_DATA_DIR", "")
  if data_dir:
    from dgmjax import data
    train = data.load("mnist", "train", data_dir=data_dir, backend="numpy")["image"]
    test = data.load("mnist", "test", data_dir=data_dir, backend="numpy")["image"]
    source = f"MNIST from {data_dir}"
  else:
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(4000, 28, 28, 1)).astype(np.float32) ** 3
    test = rng.uniform(size=(1000, 28, 28, 1)).astype(np.float32) ** 3
    source = "random grey levels (no DGMJAX_DATA_DIR)"
  from dgmjax import data as data_lib
  key = jax.random.fold_in(jax.random.key(0), 0x5EED)  # experiments/iwae's fixed binarization
  test_binary = np.asarray(data_lib.binarize(key, jax.numpy.asarray(test)))
  return np.asarray(train, np.float32), test_binary, source


def restore_params(run_dir: str, name: str = "burda1"):
  """The parameters of the latest checkpoint of an experiments/iwae run (read-only): ``(params,
  step)``, checked against the shapes of model ``name`` (:func:`dgmjax.training.restore`)."""
  import jax
  from dgmjax import training
  from dgmjax.models import vae
  model = vae.make(name, (28, 28, 1))
  template = jax.eval_shape(model.init, jax.random.key(0))
  try:
    params, _, step = training.restore(run_dir, like=template)
  except ValueError as e:
    raise ValueError(f"the checkpoint of {run_dir} does not hold {name} parameters: {e}") from e
  return params, step


# ----------------------------------------------------------------------------- report


def _fmt(v, f="{:.2f}"):
  return "-" if v is None else f.format(v)


def _rat(r):
  return "-" if not r else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def print_report(res: dict) -> None:
  env = res["env"]
  print(f"\n== dgmjax vs PyTorch: {env['cpu']} x{env['threads']} threads, {env['backend']}, "
        f"jax {env['jax']}, torch {env['torch']}; data: {env['data']}")
  print(f"machine matmul (JAX, f32 2048^3): median {res['machine']['jax_gflops_median']:.1f} "
        f"GFLOP/s over {len(res['machine']['jax_gflops_samples'])} samples "
        f"(min {min(res['machine']['jax_gflops_samples']):.1f}, "
        f"max {max(res['machine']['jax_gflops_samples']):.1f}); "
        f"PyTorch {res['machine']['torch_gflops']:.1f}")
  for a in res.get("agreement", []):
    print(f"agreement {a['model']}: log-weights {a['log_weights_rel']:.1e} (f64 "
          f"{a['log_weights_rel_f64']:.1e}), grads vae {a['grad_rel']['vae']:.1e} iwae "
          f"{a['grad_rel']['iwae']:.1e}, Adam step {a['adam_step_rel_lr']:.1e} lr, eval lse "
          f"{a['eval_lse_rel']:.1e}: {'OK' if a['ok'] else 'FAILED'}")
  if res.get("train"):
    print("\ntraining step (ms; median over reps), ratio = peer / dgmjax: median (min-max)")
    print(f"{'model':<7}{'obj':<5}{'B':>5}{'K':>4}{'mb':>4}{'dgmjax':>9}{'eager':>9}"
          f"{'compile':>9}{'ratio eager':>20}{'ratio compile':>20}{'GFLOP/s':>9}{'frac':>6}"
          f"{'jit s':>7}{'tc s':>7}{'MB j/e/c':>16}{'whole-batch':>13}")
    for r in res["train"]:
      d, e, c = r["dgmjax"], r["torch_eager"], r.get("torch_compile") or {}
      mem = "/".join(_fmt(s.get("peak_rss_mb"), "{:.0f}") for s in (d, e, c))
      w = r.get("dgmjax_whole_batch")
      whole = "-" if not w else f"{w['median']:.1f} ({r['microbatch_speedup']['median']:.2f}x)"
      print(f"{r['model']:<7}{r['objective']:<5}{r['B']:>5}{r['K']:>4}"
            f"{r.get('microbatch', r['B']):>4}"
            f"{_fmt(d.get('median')):>9}{_fmt(e.get('median')):>9}"
            f"{_fmt(c.get('median')) if 'error' not in c else 'error':>9}"
            f"{_rat(r['ratio_eager']):>20}{_rat(r['ratio_compile']):>20}"
            f"{_fmt(r['dgmjax_gflops'], '{:.1f}'):>9}{_fmt(r['flop_fraction']):>6}"
            f"{_fmt(d.get('compile_s'), '{:.1f}'):>7}{_fmt(c.get('compile_s'), '{:.1f}'):>7}"
            f"{mem:>16} {whole:>13}")
  if res.get("eval"):
    print(f"\nk={res['eval'][0]['K']} evaluation (ms per image; median over reps), "
          "ratio = peer / dgmjax")
    print(f"{'model':<7}{'B':>5}{'chunk':>11}{'rows':>7}{'dgmjax':>9}{'eager':>9}{'compile':>9}"
          f"{'ratio eager':>20}{'ratio compile':>20}{'GFLOP/s':>9}{'frac':>6}{'10k extrap s':>13}"
          f"{'MB j/e/c':>16}")
    for r in res["eval"]:
      d, e, c = r["dgmjax"], r["torch_eager"], r.get("torch_compile") or {}
      mem = "/".join(_fmt(s.get("peak_rss_mb"), "{:.0f}") for s in (d, e, c))
      lab = f"auto={r['chunk']}" if r["chunk_setting"] == "auto" else str(r["chunk"])
      ms = lambda s: _fmt(None if s.get("median") is None else s["median"] * 1e3, "{:.1f}")
      print(f"{r['model']:<7}{r['B']:>5}{lab:>11}{r['rows_per_matmul']:>7}{ms(d):>9}{ms(e):>9}"
            f"{ms(c) if 'error' not in c else 'error':>9}"
            f"{_rat(r['ratio_eager']):>20}{_rat(r['ratio_compile']):>20}"
            f"{r['dgmjax_gflops']:>9.1f}{r['flop_fraction']:>6.2f}"
            f"{r['extrapolated_10000_images_s'].get('dgmjax', float('nan')):>13.0f}{mem:>16}")
    for b in res.get("eval_best", []):
      print(f"best chunks ({b['model']}): dgmjax {b['dgmjax_chunk']} "
            f"({b['dgmjax_ms_per_image']:.1f} ms/img), eager {b['eager_chunk']} "
            f"({b['eager_ms_per_image']:.1f}), compile {b.get('compile_chunk')} "
            f"({_fmt(b.get('compile_ms_per_image'), '{:.1f}')}): ratio eager "
            f"{b['ratio_eager']:.2f}, compile {_fmt(b.get('ratio_compile'))}; "
            f"10,000 images (extrapolated): {b['dgmjax_10000_s']:.0f} s")
  for b in res.get("eval_best", []):
    print(f"k=5000 evaluation at the best chunk ({b['model']}): "
          f"{b['flop_fraction_at_best']:.2f} of the machine's matmul FLOP/s measured next to it, "
          f"{b['flop_fraction_at_best_vs_max']:.2f} of the run's best matmul sample")
  for p in res.get("precision", []):
    print(f"\nNLL shift vs float32 ({p['model']}, {p['images']} images, K={p['K']}"
          f"{', emulated by rounding on CPU' if p['emulated'] else ''}): float32 NLL "
          f"{p['float32']['nll']:.3f} +- {p['float32']['standard_error']:.2f}; TF32 "
          f"{p['tensorfloat32']['nll_shift']:+.4f} nats (max per image "
          f"{p['tensorfloat32']['max_abs_shift_per_image']:.4f}); bf16 "
          f"{p['bfloat16']['nll_shift']:+.4f} (max {p['bfloat16']['max_abs_shift_per_image']:.4f})")


def best_eval(rows) -> list[dict]:
  out = []
  for name in sorted({r["model"] for r in rows}):
    rs = [r for r in rows if r["model"] == name]
    best = lambda side: min((r for r in rs if r[side].get("median") is not None),
                            key=lambda r: r[side]["median"], default=None)
    d, e, c = best("dgmjax"), best("torch_eager"), best("torch_compile") if "torch_compile" in \
        rs[0] else None
    rec = {"model": name, "dgmjax_chunk": d["chunk"], "dgmjax_ms_per_image": d["dgmjax"]["median"]
           * 1e3, "eager_chunk": e["chunk"], "eager_ms_per_image": e["torch_eager"]["median"] * 1e3,
           "ratio_eager": e["torch_eager"]["median"] / d["dgmjax"]["median"],
           "dgmjax_10000_s": d["dgmjax"]["median"] * 10000,
           "flop_fraction_at_best": d["flop_fraction"],
           "flop_fraction_at_best_vs_max": d["flop_fraction_vs_max"]}
    if c is not None:
      rec.update(compile_chunk=c["chunk"], compile_ms_per_image=c["torch_compile"]["median"] * 1e3,
                 ratio_compile=c["torch_compile"]["median"] / d["dgmjax"]["median"])
    out.append(rec)
  return out


def finalize(res: dict) -> None:
  """Derived fields: FLOP fractions, the best evaluation chunks, the must-hold summary.

  ``flop_fraction`` compares dgmjax's matmul FLOP/s with the machine's matmul rate sampled next
  to the same repetitions (a shared machine's speed changes during a run); ``_vs_max`` with the
  run's best sample (the least loaded moment: the conservative figure).
  """
  samples = res["machine"]["jax_gflops_samples"]
  res["machine"]["jax_gflops_median"] = statistics.median(samples)
  res["machine"]["jax_gflops_max"] = max(samples)
  for r in res.get("train", []) + res.get("eval", []):
    g, adj = r.get("dgmjax_gflops"), r.get("machine_gflops_adjacent")
    r["flop_fraction"] = None if g is None or not adj else g / adj
    r["flop_fraction_vs_max"] = None if g is None else g / res["machine"]["jax_gflops_max"]
  if res.get("eval"):
    res["eval_best"] = best_eval(res["eval"])
  res["must_hold"] = must_hold(res)


def must_hold(res: dict) -> dict:
  """The targets of the benchmark's issue, evaluated on this run."""
  out = {}
  tr = res.get("train", [])
  if tr:
    slower = [f"{r['model']} B={r['B']} K={r['K']} vs {side}" for r in tr
              for side in ("ratio_eager", "ratio_compile") if r.get(side)
              and r[side]["median"] <= 1.0]
    out["train_faster_everywhere"] = {"ok": not slower, "not_faster": slower}
    at = [r for r in tr if r["B"] == 20 and r["K"] == 50]
    out["train_ratio_B20_K50_ge_1.5"] = {
        f"{r['model']} {side}": round(r[side]["median"], 3)
        for r in at for side in ("ratio_eager", "ratio_compile") if r.get(side)}
  for b in res.get("eval_best", []):
    out[f"eval_best_ratio_ge_1.5 {b['model']}"] = {
        "eager": round(b["ratio_eager"], 3),
        "compile": None if b.get("ratio_compile") is None else round(b["ratio_compile"], 3)}
    out[f"eval_flop_fraction_ge_0.5 {b['model']}"] = {
        "vs_adjacent_matmul": round(b["flop_fraction_at_best"], 3),
        "vs_best_matmul_sample": round(b["flop_fraction_at_best_vs_max"], 3),
        "every_chunk_vs_adjacent": [round(r["flop_fraction"], 3) for r in res["eval"]
                                    if r["model"] == b["model"]]}
  return out


# ----------------------------------------------------------------------------- main


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.report:
    with open(args.report) as f:
      res = json.load(f)
    finalize(res)
    print_report(res)
    print("\nmust hold:", json.dumps(res["must_hold"], indent=1))
    return 0
  threads = configure_process(args.threads, args.omp_wait_policy)
  import jax
  import numpy as np
  import torch
  import torch._dynamo

  torch.set_num_threads(threads)
  torch._dynamo.config.cache_size_limit = 256  # one compiled graph per case / chunk size
  if hasattr(torch._dynamo.config, "recompile_limit"):
    torch._dynamo.config.recompile_limit = 256
  device = "cuda" if (jax.default_backend() == "gpu" and torch.cuda.is_available()) else "cpu"
  if device == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if args.tf32 else "highest")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  sections = {s.strip() for s in args.cases.split(",") if s.strip()}
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  cases = [tuple(int(v) for v in c.split("x")) for c in args.train_cases.split(",") if c.strip()]

  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  env = {"jax": jax.__version__, "torch": torch.__version__, "backend": jax.default_backend(),
         "device": str(jax.devices()[0]), "torch_device": device, "cpu": cpu,
         "cpus_allowed": len(os.sched_getaffinity(0)), "threads": threads,
         "torch_threads": torch.get_num_threads(),
         "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
         "loadavg_start": os.getloadavg(), "python": platform.python_version(),
         "argv": sys.argv[1:] if argv is None else list(argv)}
  train_x, test_binary, source = load_data(args)
  env["data"] = source
  ctx = {"train": train_x, "test_binary": test_binary, "device": device, "sync": sync}
  res = {"env": env}

  machine = Machine(jax)
  for _ in range(3):
    machine.measure(0.3)
  torch_rate = torch_matmul_rate(torch, device)

  print("agreement check ...", flush=True)
  res["agreement"] = []
  try:
    for name in sorted(set(models) | {m.strip() for m in args.eval_models.split(",") if m}):
      res["agreement"].append(check_agreement(name, data=train_x[:64]))
  except AgreementError as e:
    print(f"AGREEMENT FAILED: {e}", file=sys.stderr)
    if args.json:
      with open(args.json, "w") as f:
        json.dump({**res, "error": str(e)}, f, indent=2)
    return 2

  override = None
  if args.params_from:
    override, step = restore_params(args.params_from)
    env["eval_params"] = f"{args.params_from} (step {step})"
  if "train" in sections:
    res["train"] = []
    for name in models:
      for b, k in cases:
        print(f"train {name} B={b} K={k} ...", flush=True)
        res["train"].append(train_case(name, b, k, args, ctx, machine))
  if "eval" in sections:
    res["eval"] = []
    for name in [m.strip() for m in args.eval_models.split(",") if m.strip()]:
      print(f"eval {name} K={args.eval_samples} on {args.eval_images} images ...", flush=True)
      res["eval"] += eval_case(name, args, ctx, machine,
                               override if name == "burda1" else None)
  if "precision" in sections:
    res["precision"] = []
    for name in [m.strip() for m in args.eval_models.split(",") if m.strip()]:
      print(f"precision {name} ...", flush=True)
      res["precision"].append(precision_case(name, args, ctx,
                                             override if name == "burda1" else None))
  for _ in range(2):
    machine.measure(0.3)
  res["machine"] = {"jax_gflops_samples": [r / 1e9 for r in machine.samples],
                    "torch_gflops": torch_rate / 1e9}
  env["loadavg_end"] = os.getloadavg()
  finalize(res)
  print_report(res)
  print("\nmust hold:", json.dumps(res["must_hold"], indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)
    print(f"\nwrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
