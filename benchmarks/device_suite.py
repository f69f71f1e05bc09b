"""The accelerator suite: every GPU measurement of dgmjax in one time-boxed command.

    python benchmarks/device_suite.py --out DIR                  # on the GPU: at most 8 minutes
    python benchmarks/device_suite.py --smoke --out /tmp/smoke   # every section on CPU, toy sizes
    python benchmarks/device_suite.py --smoke --no_torch --out /tmp/s   # the JAX sections only

Writes ``DIR/device_suite.json`` and ``DIR/device_suite.md`` (atomically: temporary file, then
rename) after every section and every case, so a window that closes early still leaves the
finished sections. Sections, in order (``--sections a,b,c,d,e`` selects some):

a. **Environment**: device, versions, the measured matmul rate (JAX and PyTorch, float32 / TF32 /
   bfloat16) and copy bandwidth (device-to-device, host-to-device).
b. **The training-step table of** ``benchmarks/bench.py`` on the device: the agreement check
   first (``bench.check_agreement``), then one optimiser step of dgmjax beside PyTorch eager,
   ``torch.compile`` and ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) for Burda's 1- and
   2-layer models at ``(B, K)`` in ``bench.TRAIN_CASES``. First every case with dgmjax and eager,
   then the compiled sides case by case while time remains (all sides re-timed together). Then the
   k=5000 evaluation of the test images (10,000) in seconds, with the fraction of section a's
   matmul rate, in float32, TF32 and bfloat16 (dgmjax) beside PyTorch eager (and compiled).
c. **Many steps per dispatch**: each Table 1 row's training step at B=20, dispatched once per step
   from Python and fused ``--scan_steps`` at a time under ``lax.scan`` (data resident on the
   device, Burda's fixed order), in steps per second; from it the projected wall time of Burda's
   full protocol (3280 epochs, ``training.burda_num_steps``) per row.
d. **The Table 1 rows together**: ``experiments.iwae.vmap_table``'s rows (VAE / IWAE at
   K = 1, 5, 50; at K = 1 the two are one run) of both models in one program
   (``parallel.make_groups_train_step``, fused under ``lax.scan``), trained with Burda's schedule
   compressed to as many epochs as the remaining time allows, then a k=5000 test NLL per row; the
   joint step time against the rows alone (from c) and the projected full protocol for all rows.
e. **Summary**: one line of the headline ratios.

Every section has a time budget (``--budget`` table, scaled to ``--budget_s``; unused time passes
to the later sections), checks the clock between cases and records ``skipped: time`` for what it
leaves out. A failure is recorded (traceback in the JSON) and the next section runs. A per-section
alarm interrupts a section that overruns its budget, and a watchdog thread writes the results and
ends the process at ``--budget_s + 30`` seconds (450 + 30 = 480 s by default), so the suite never
outlasts its window, even inside a hung compile.

Expected runtime: at most 8 minutes on one H100/H200 (the default budget); ``--smoke``: about one
to two minutes on two CPU cores.

What it needs on the device: jax (CUDA), flax, optax, numpy, and torch for the peer (without it,
pass ``--no_torch``). No tensorflow, tensorflow-datasets or ml_collections: MNIST is read from the
staged files with ``dgmjax.data``'s numpy backend (``--data_dir``, else ``DGMJAX_DATA_DIR``, else
``shared/data`` in or next to the repository). Bring the folder ``mnist/`` of the staged data
(four ``.gz`` files, 11.6 MB); without it the suite runs on random grey levels and says so.
``torch.compile`` needs triton (a dependency of the CUDA wheels of torch) and a C compiler; where
either is missing the compiled sides are recorded as errors and the rest runs. The repository need
not be installed: ``dgmjax``, ``benchmarks`` and ``experiments`` are imported from this checkout.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from types import SimpleNamespace

_HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(_HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, _HERE)

SECTIONS = ("a", "b", "c", "d", "e")
TITLES = {"a": "environment, matmul rate and bandwidth",
          "b": "training-step table and k=5000 evaluation beside PyTorch",
          "c": "many steps per dispatch (lax.scan) and the projected full protocol per row",
          "d": "the Table 1 rows trained together in one program",
          "e": "summary"}
#: Seconds per section at the default --budget_s (scaled with it); the rest is start-up.
BUDGET = {"a": 20.0, "b": 210.0, "c": 75.0, "d": 125.0, "e": 0.0}
SMOKE_BUDGET = {"a": 6.0, "b": 40.0, "c": 20.0, "d": 30.0, "e": 0.0}
BUDGET_S, SMOKE_BUDGET_S = 450.0, 110.0
WATCHDOG_GRACE_S = 30.0
#: Burda et al.'s protocol: the MNIST training split of experiments.iwae (60,000 - 400 validation
#: images) in minibatches of 20, for 3280 epochs (training.burda_num_steps).
PROTOCOL_TRAIN_IMAGES, PROTOCOL_BATCH = 59600, 20
#: The row label "vae" (as in the saved results and the PyTorch peer) names the ELBO.
_BOUND = {"vae": "elbo"}
ROWS_FALLBACK = (("vae", 1), ("vae", 5), ("iwae", 5), ("vae", 50), ("iwae", 50))


# ----------------------------------------------------------------------------- sizes


@dataclasses.dataclass
class Sizes:
  """What each section runs: the device sizes, or the toy sizes of ``--smoke``."""
  models: tuple = ("burda1", "burda2")
  agreement_models: tuple = ("burda1", "burda2")
  train_cases: tuple = ((20, 1), (20, 5), (20, 50), (100, 50), (1000, 50))
  compile_modes: tuple = ("default", "reduce-overhead")
  reps: int = 5
  rep_seconds: float = 0.25
  eval_models: tuple = ("burda1", "burda2")
  eval_images: int = 10000
  eval_k: int = 5000
  eval_batch: int = 100
  eval_precisions: tuple = ("float32", "tensorfloat32", "bfloat16")
  eval_reps: int = 2
  eval_warm_images: int = 200
  eval_reserve_s: float = 55.0
  matmul_n: int = 8192
  rate_seconds: float = 0.3
  copy_mb: int = 1024
  scan_steps: int = 1000
  scan_unroll_extra: int = 8
  step_seconds: float = 0.6
  c_models: tuple = ("burda1", "burda2")
  c_ks: tuple = (1, 5, 50)
  d_models: tuple = ("burda1", "burda2")
  d_ks: tuple = (1, 5, 50)
  d_eval_images: int = 1000
  d_eval_k: int = 5000
  d_eval_reserve_s: float = 20.0
  d_max_dispatches: int = 0  # 0: as many as the clock allows
  compile_guess_s: float = 20.0


def smoke_sizes(compile_: bool) -> Sizes:
  return Sizes(models=("burda1",), agreement_models=("burda1",), train_cases=((20, 5),),
               compile_modes=("default",) if compile_ else (), reps=1, rep_seconds=0.02,
               eval_models=("burda1",), eval_images=20, eval_k=50, eval_batch=10,
               eval_precisions=("float32",), eval_reps=1, eval_warm_images=10,
               eval_reserve_s=8.0, matmul_n=256, rate_seconds=0.05, copy_mb=8, scan_steps=10,
               scan_unroll_extra=0, step_seconds=0.05, c_models=("burda1",), c_ks=(5,),
               d_models=("burda1",), d_ks=(5,), d_eval_images=20, d_eval_k=50,
               d_eval_reserve_s=6.0, d_max_dispatches=3, compile_guess_s=5.0)


# ----------------------------------------------------------------------------- arguments


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True, help="folder of device_suite.json / device_suite.md")
  p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of a,b,c,d,e")
  p.add_argument("--budget_s", type=float, default=0.0,
                 help=f"total seconds (default {BUDGET_S:.0f}; --smoke {SMOKE_BUDGET_S:.0f}); "
                      f"the watchdog ends the process {WATCHDOG_GRACE_S:.0f} s later")
  p.add_argument("--budget", default="",
                 help="per-section seconds before scaling, e.g. 'a=20,b=200,c=80,d=130'")
  p.add_argument("--smoke", action="store_true", help="every section on toy sizes (CPU)")
  p.add_argument("--smoke_compile", action="store_true",
                 help="with --smoke: also one torch.compile side per training case")
  p.add_argument("--no_torch", action="store_true", help="skip every PyTorch side")
  p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
  p.add_argument("--tf32", action="store_true",
                 help="train and evaluate with TF32 matmuls on both sides (default: float32)")
  p.add_argument("--data_dir", default="", help="staged datasets (default: DGMJAX_DATA_DIR)")
  p.add_argument("--scan_steps", type=int, default=0, help="steps per fused dispatch (c, d)")
  p.add_argument("--unroll", type=int, default=-1,
                 help="c: also time the first row with lax.scan(unroll=N) (default 8; --smoke 0)")
  p.add_argument("--compile_cache", default=None,
                 help="JAX persistent compilation cache (default on GPU: "
                      "/tmp/dgmjax_suite_jax_cache; '' disables)")
  a = p.parse_args(argv)
  a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
  bad = [s for s in a.sections if s not in SECTIONS]
  if bad or not a.sections:
    p.error(f"--sections must be a comma list of {','.join(SECTIONS)}, got {bad or a.sections}")
  table = dict(SMOKE_BUDGET if a.smoke else BUDGET)
  for item in filter(None, (s.strip() for s in a.budget.split(","))):
    k, _, v = item.partition("=")
    if k not in table or not v:
      p.error(f"--budget entries are SECTION=SECONDS for {','.join(SECTIONS)}, got {item!r}")
    table[k] = float(v)
  default_total = SMOKE_BUDGET_S if a.smoke else BUDGET_S
  a.budget_s = a.budget_s or default_total
  scale = a.budget_s / default_total
  a.budgets = {k: v * scale for k, v in table.items()}
  return a


# ----------------------------------------------------------------------------- results


def _clean(obj):
  """JSON-safe: numpy scalars to Python, NaN / inf to None."""
  if isinstance(obj, dict):
    return {str(k): _clean(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_clean(v) for v in obj]
  if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
    try:
      obj = obj.item()
    except (TypeError, ValueError):
      return str(obj)
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  return str(obj)


class SectionTimeout(BaseException):
  """A section ran past its budget and grace (raised by the alarm between Python bytecodes; a
  ``BaseException``, so that the per-case ``except Exception`` handlers let it through)."""


class Clock:
  """A section's deadline, and what it skipped for lack of time."""

  def __init__(self, budget_s: float):
    self.t0, self.budget_s = time.time(), budget_s
    self.skipped = []

  def elapsed(self) -> float:
    return time.time() - self.t0

  def left(self) -> float:
    return self.budget_s - self.elapsed()

  def sub(self, budget_s: float) -> "Clock":
    """A clock of at most ``budget_s`` (and this one's deadline) that records into this one."""
    c = Clock(min(budget_s, self.left()))
    c.skipped = self.skipped
    return c

  def skip(self, what: str, reason: str = "time") -> dict:
    entry = {"case": what, "skipped": reason}
    self.skipped.append(entry)
    print(f"  skipped ({reason}): {what}", flush=True)
    return entry


class Suite:
  """The results, their atomic writing, the budgets and the watchdog."""

  def __init__(self, args):
    self.args, self.t0 = args, time.time()
    self.lock = threading.RLock()
    self.res = {"suite": {"argv": sys.argv[1:], "smoke": args.smoke, "budget_s": args.budget_s,
                          "budgets_s": args.budgets, "sections": args.sections,
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                          "watchdog_s": args.budget_s + WATCHDOG_GRACE_S},
                "env": {}, "sections": {}}
    os.makedirs(args.out, exist_ok=True)
    self.json_path = os.path.join(args.out, "device_suite.json")
    self.md_path = os.path.join(args.out, "device_suite.md")

  def elapsed(self) -> float:
    return time.time() - self.t0

  def write(self) -> None:
    with self.lock:
      for _ in range(5):  # the watchdog thread may snapshot while the main thread appends
        try:
          snap = _clean(copy.deepcopy(self.res))
          break
        except RuntimeError:
          time.sleep(0.01)
      else:
        return
      snap["suite"]["wall_s"] = self.elapsed()
      for path, text in ((self.json_path, json.dumps(snap, indent=1)),
                         (self.md_path, render_md(snap))):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp_suite_")
        with os.fdopen(fd, "w") as f:
          f.write(text + "\n")
        os.replace(tmp, path)

  def start_watchdog(self) -> None:
    deadline = self.t0 + self.args.budget_s + WATCHDOG_GRACE_S

    def watch():
      while time.time() < deadline:
        time.sleep(0.5)
      with self.lock:
        self.res["suite"]["watchdog"] = (f"ended the process at {self.elapsed():.0f} s "
                                         f"(budget {self.args.budget_s:.0f} s + "
                                         f"{WATCHDOG_GRACE_S:.0f} s)")
        for rec in self.res["sections"].values():
          if rec.get("status") == "running":
            rec["status"] = "killed: watchdog"
        try:
          self.write()
        finally:
          print("watchdog: time is up, results written", file=sys.stderr, flush=True)
          os._exit(3)  # pylint: disable=protected-access

    threading.Thread(target=watch, daemon=True, name="suite-watchdog").start()

  def section_budget(self, name: str) -> float:
    """The section's budget plus the time the earlier sections left unused; the later sections'
    budgets stay reserved."""
    sel = self.args.sections
    later = sum(self.args.budgets[s] for s in sel[sel.index(name) + 1:])
    left = self.args.budget_s - self.elapsed() - later
    return max(left, 0.3 * self.args.budgets[name])

  def run_section(self, name: str, fn, ctx) -> None:
    budget = self.section_budget(name)
    rec = {"title": TITLES[name], "status": "running", "budget_s": budget, "result": {}}
    with self.lock:
      self.res["sections"][name] = rec
    self.write()
    print(f"\n== section {name}: {TITLES[name]} (budget {budget:.0f} s)", flush=True)
    clock = Clock(budget)
    grace = max(5.0, min(20.0, 0.2 * budget))

    def on_alarm(signum, frame):
      raise SectionTimeout(f"section {name} passed its budget of {budget:.0f} s + {grace:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(math.ceil(budget + grace))))
    try:
      fn(ctx, rec["result"], clock, self)
      rec["status"] = "partial" if any(x["skipped"] == "time" for x in clock.skipped) else "ok"
    except SectionTimeout as e:
      rec["status"], rec["error"] = "timeout", str(e)
    except Exception:  # pylint: disable=broad-except  (recorded; the next section runs)
      rec["status"], rec["error"] = "error", traceback.format_exc()
      print(rec["error"], file=sys.stderr, flush=True)
    finally:
      signal.alarm(0)
      signal.signal(signal.SIGALRM, old)
      rec["wall_s"], rec["skipped"] = clock.elapsed(), clock.skipped
      self.write()
    print(f"   section {name}: {rec['status']} in {rec['wall_s']:.1f} s", flush=True)


# ----------------------------------------------------------------------------- helpers


def _timed(run, seconds: float, min_calls: int = 2) -> tuple[int, float]:
  """Calls ``run()`` (which synchronises) until ``seconds`` have passed; ``(calls, seconds)``."""
  calls, t0 = 0, time.perf_counter()
  while True:
    run()
    calls += 1
    dt = time.perf_counter() - t0
    if dt >= seconds and calls >= min_calls:
      return calls, dt


def _model(ctx, name: str):
  """A dgmjax Burda model and its initial parameters (seed 0, output bias from the training
  mean, as ``experiments.iwae``), built once per name."""
  cache = ctx.setdefault("models", {})
  if name not in cache:
    import jax
    from dgmjax.models import vae
    model = vae.make(name, (28, 28, 1))
    cache[name] = (model, model.init(jax.random.key(0), data_mean=ctx["train"].mean(0)))
  return cache[name]


def _torch_classes(ctx):
  """The peer of ``torch_peer`` with its noise drawn on the model's device.

  ``torch_peer.TrainStep`` and ``TorchVAE.sample_eps`` call ``torch.randn`` without ``device=``,
  which draws on the CPU; on a GPU the peer must draw where its model lives. The overrides add
  that argument and nothing else (and ``mode=`` of ``torch.compile`` for the CUDA-graph side).
  """
  if "torch_classes" in ctx:
    return ctx["torch_classes"]
  torch = ctx["torch"]
  import torch_peer

  class DeviceTorchVAE(torch_peer.TorchVAE):
    def sample_eps(self, num_samples, batch_size, generator=None, dtype=torch.float32):
      dev = self.decoder.out.weight.device
      return [torch.randn(num_samples, batch_size, d, generator=generator, dtype=dtype,
                          device=dev) for d in self.latent_dims]

  class DeviceTrainStep(torch_peer.TrainStep):
    def __init__(self, model, objective, num_samples, lr=1e-3, *, mode=None):
      super().__init__(model, objective, num_samples, lr, compile=False)
      self.mode = mode
      if mode is not None:
        kw = {} if mode == "default" else {"mode": mode}
        self._loss = torch.compile(self._loss_impl, dynamic=False, **kw)
        self._opt_step = torch.compile(self.opt.step, dynamic=False, **kw)

    def _loss_impl(self, images):
      x = (torch.rand_like(images) < images).to(images.dtype) if self.dynamic_binarization \
          else images
      eps = [torch.randn(self.num_samples, x.shape[0], d, dtype=x.dtype, device=x.device)
             for d in self.model.latent_dims]
      return torch_peer.loss_fn(self.model, self.objective, x, eps)

    def __call__(self, images):
      if self.mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
      return super().__call__(images)

  ctx["torch_classes"] = (torch_peer, DeviceTorchVAE, DeviceTrainStep)
  return ctx["torch_classes"]


def _torch_model(ctx, model, params):
  torch_peer, DeviceTorchVAE, _ = _torch_classes(ctx)
  tm = DeviceTorchVAE(model.x_dim, model.latent_dims, model.hidden_dims)
  torch_peer.load_dgmjax_params(tm, params)
  return tm.to(ctx["device"])


def _rate(ctx, kind: str) -> float | None:
  """Section a's JAX matmul rate (FLOP/s) of ``kind`` (float32 / tensorfloat32 / bfloat16)."""
  rates = ctx.get("rates", {})
  v = rates.get(f"jax_{kind}")
  if v is None and kind == "float32":
    v = ctx["machine"].median
  return v


def _train_precision(ctx) -> str:
  return "tensorfloat32" if ctx["tf32"] else "float32"


# ----------------------------------------------------------------------------- a. environment


def section_a(ctx, out, clock, suite):
  import jax
  import jax.numpy as jnp
  import numpy as np
  bench = ctx["bench"]
  sz, torch, dev = ctx["sizes"], ctx["torch"], ctx["device"]
  env = suite.res["env"]
  out["devices"] = [str(d) for d in jax.devices()]
  out["device_kind"] = jax.devices()[0].device_kind
  try:
    stats = jax.devices()[0].memory_stats() or {}
    out["xla_memory_limit_gib"] = stats.get("bytes_limit", 0) / 2**30 or None
  except Exception:  # pylint: disable=broad-except
    out["xla_memory_limit_gib"] = None
  if ctx["backend"] == "gpu":
    try:
      q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                          "clocks.max.sm,power.limit", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=10, check=False)
      out["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    except (OSError, subprocess.SubprocessError) as e:
      out["nvidia_smi"] = f"unavailable: {e}"
  if torch is not None:
    out["torch_cuda"] = torch.version.cuda
    out["torch_cuda_available"] = torch.cuda.is_available()
    if dev == "cuda":
      out["torch_device_name"] = torch.cuda.get_device_name(0)
      out["device_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30
      out["cudnn"] = torch.backends.cudnn.version()
  env.update({k: out[k] for k in ("device_kind",) if k in out})
  suite.write()

  n, secs = sz.matmul_n, sz.rate_seconds
  rates = {}
  # each rate from one [n, n] @ [n, n] product repeated for `secs`; float32 is true float32
  rng = np.random.default_rng(0)
  a32 = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
  b32 = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
  for kind in ("float32", "tensorfloat32"):
    with jax.default_matmul_precision(kind):
      f = jax.jit(lambda a, b: a @ b)
      jax.block_until_ready(f(a32, b32))
      calls, dt = _timed(lambda f=f: jax.block_until_ready(f(a32, b32)), secs)
    rates[f"jax_{kind}"] = 2.0 * n**3 * calls / dt
  a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
  f16 = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  jax.block_until_ready(f16(a16, b16))
  calls, dt = _timed(lambda: jax.block_until_ready(f16(a16, b16)), secs)
  rates["jax_bfloat16"] = 2.0 * n**3 * calls / dt
  if torch is not None:
    sync = ctx["sync"]
    if dev == "cuda":
      old = torch.backends.cuda.matmul.allow_tf32
      for kind, allow in (("float32", False), ("tensorfloat32", True)):
        torch.backends.cuda.matmul.allow_tf32 = allow
        rates[f"torch_{kind}"] = bench.torch_matmul_rate(torch, dev, n, secs)
      torch.backends.cuda.matmul.allow_tf32 = old
    else:
      rates["torch_float32"] = bench.torch_matmul_rate(torch, dev, n, secs)
    ta = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    tb = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    ta @ tb
    sync()

    def tmm():
      ta @ tb
      sync()
    calls, dt = _timed(tmm, secs)
    rates["torch_bfloat16"] = 2.0 * n**3 * calls / dt
  out["matmul"] = {"n": n, "tflops": {k: v / 1e12 for k, v in rates.items()},
                   "note": ("CPU: XLA and PyTorch ignore TF32 there; bfloat16 is emulated"
                            if ctx["backend"] == "cpu" else "")}
  ctx["rates"] = rates
  suite.write()

  nbytes = sz.copy_mb * 2**20
  x = jax.device_put(np.ones(nbytes // 4, np.float32))
  add = jax.jit(lambda v: v + 1.0)
  jax.block_until_ready(add(x))
  calls, dt = _timed(lambda: jax.block_until_ready(add(x)), secs)
  bw = {"jax_read_write_gbs": 2.0 * nbytes * calls / dt / 1e9}
  host = np.ones(nbytes // 4, np.float32)
  calls, dt = _timed(lambda: jax.block_until_ready(jax.device_put(host)), secs)
  bw["jax_host_to_device_gbs"] = nbytes * calls / dt / 1e9
  if torch is not None:
    t1 = torch.empty(nbytes // 4, device=dev)
    t2 = torch.empty_like(t1)

    def tcopy():
      t2.copy_(t1)
      ctx["sync"]()
    calls, dt = _timed(tcopy, secs)
    bw["torch_copy_gbs"] = 2.0 * nbytes * calls / dt / 1e9
    del t1, t2
  out["bandwidth"] = {"mib": sz.copy_mb, **bw}
  del x, host


# ----------------------------------------------------------------------------- b. training table


def _train_sides(ctx, name, batch, num_samples):
  """The run functions of one training case: dgmjax and (with torch) eager, built once."""
  import jax
  import numpy as np
  from dgmjax import training
  objective = "vae" if num_samples == 1 else "iwae"
  train = ctx["train"]
  model, params = _model(ctx, name)
  rng = np.random.default_rng(batch * 7919 + num_samples)
  idx = [rng.choice(train.shape[0], batch, replace=False) for _ in range(4)]
  jbatches = [jax.device_put(train[i]) for i in idx]
  opt = training.make_optimizer("adam", 1e-3)
  loss_fn = training.make_loss(model, _BOUND.get(objective, objective), num_samples)
  microbatch = training.resolve_microbatch("auto", batch, num_samples, batch_name="B") or batch
  step, holder, run_jax = ctx["bench"].jax_train_runner(loss_fn, opt, params, jbatches,
                                                         microbatch)

  case = {"model": model, "params": params, "objective": objective, "microbatch": microbatch,
          "runs": {"dgmjax": run_jax}}
  if ctx["torch"] is not None:
    torch = ctx["torch"]
    case["tbatches"] = [torch.from_numpy(train[i].reshape(batch, -1).copy()).to(ctx["device"])
                        for i in idx]
    case["runs"]["torch_eager"] = _torch_run(ctx, case, num_samples, None)
  return case


def _torch_run(ctx, case, num_samples, mode):
  _, _, DeviceTrainStep = _torch_classes(ctx)
  tm = _torch_model(ctx, case["model"], case["params"])
  ts = DeviceTrainStep(tm, case["objective"], num_samples, 1e-3, mode=mode)
  cnt, tb, sync = {"i": 0}, case["tbatches"], ctx["sync"]

  def run(n):
    for _ in range(n):
      ts(tb[cnt["i"] % 4])
      cnt["i"] += 1
    sync()
  return run


SIDE_NAMES = {"default": "torch_compile", "reduce-overhead": "torch_compile_reduce_overhead"}
RATIO_NAMES = {"torch_eager": "ratio_eager", "torch_compile": "ratio_compile",
               "torch_compile_reduce_overhead": "ratio_reduce_overhead"}


def _time_case(ctx, row, runs, reps, rep_seconds):
  """Warm-up and interleaved timing of ``runs`` (name -> run(n)); fills ``row``."""
  bench = ctx["bench"]
  sides = [bench.Side(k, r) for k, r in runs.items()]
  for s in sides:
    bench.warm_up(s, rep_seconds)
  bench.interleave(sides, reps)
  d = sides[0]
  for s in sides:
    row[s.name] = s.result(1e3)  # milliseconds per step
    if s.first_s is not None:
      row[s.name]["first_calls_s"] = s.first_s
  for s in sides[1:]:
    row[RATIO_NAMES[s.name]] = bench.ratios(s, d)
  if d.times:
    g = row["matmul_gflop_per_step"] / statistics.median(d.times)
    rate = _rate(ctx, _train_precision(ctx))
    row["dgmjax_gflops"] = g
    row["flop_fraction"] = g * 1e9 / rate if rate else None
  return sides


def section_b(ctx, out, clock, suite):
  sz, torch = ctx["sizes"], ctx["torch"]
  bench = ctx["bench"]
  # 1. agreement first
  out["agreement"] = []
  if torch is None:
    out["agreement"].append(clock.skip("agreement check", "no torch"))
  else:
    for name in sz.agreement_models:
      try:
        rec = bench.check_agreement(name, data=ctx["train"][:64], raise_on_failure=False)
      except Exception as e:  # pylint: disable=broad-except  (recorded; timing goes on)
        rec = {"model": name, "ok": False, "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc()}
      out["agreement"].append(rec)
      print(f"  agreement {name}: {'OK' if rec.get('ok') else 'FAILED'}", flush=True)
      suite.write()
    out["agreement_ok"] = all(r.get("ok") for r in out["agreement"])
    if not out["agreement_ok"]:
      out["agreement_note"] = "the agreement check failed: timings below are of unequal models"

  # 2. every case with dgmjax (and eager), then the compiled sides while time remains
  out["train"] = []
  cases, est = {}, 0.0
  for name in sz.models:
    for b, k in sz.train_cases:
      label = f"train {name} B={b} K={k}"
      if clock.left() < sz.eval_reserve_s + est:
        out["train"].append({"model": name, "B": b, "K": k, **clock.skip(label)})
        continue
      t = time.time()
      print(f"  {label} ...", flush=True)
      try:
        case = _train_sides(ctx, name, b, k)
        row = {"model": name, "objective": case["objective"], "B": b, "K": k,
               "microbatch": case["microbatch"],
               "matmul_gflop_per_step": bench.matmul_flops(case["model"], b, k, train=True) / 1e9}
        _time_case(ctx, row, case["runs"], sz.reps, sz.rep_seconds)
        if ctx["device"] == "cuda" and "median" in row.get("torch_eager", {}):
          torch.cuda.reset_peak_memory_stats()
          case["runs"]["torch_eager"](3)
          row["torch_eager"]["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
      except Exception:  # pylint: disable=broad-except  (recorded; the next case runs)
        out["train"].append({"model": name, "B": b, "K": k, "error": traceback.format_exc()})
        print(out["train"][-1]["error"], file=sys.stderr, flush=True)
        continue
      for mode in sz.compile_modes:
        row[SIDE_NAMES[mode]] = {"skipped": "pending"}
      out["train"].append(row)
      cases[(name, b, k)] = (case, row)
      est = max(est, time.time() - t)
      suite.write()
  # 3. the k=5000 evaluation of the test images, in its share of the time (before the compiled
  # training sides, whose compile times are the least predictable)
  modes = [] if (torch is None or ctx["no_compile"]) else list(sz.compile_modes)
  eval_clock = clock.sub(sz.eval_reserve_s if modes and cases else clock.left())
  out["eval"] = []
  for name in sz.eval_models:
    if eval_clock.left() < 2.0:
      out["eval"].append({"model": name, **clock.skip(f"eval {name}")})
      continue
    try:
      eval_model(ctx, name, out, eval_clock, suite)
    except Exception:  # pylint: disable=broad-except
      out["eval"].append({"model": name, "error": traceback.format_exc()})
      print(out["eval"][-1]["error"], file=sys.stderr, flush=True)

  # 4. the compiled PyTorch sides, case by case while time remains (all sides timed again)
  keys = list(cases)
  order = [c for _, c in sorted(enumerate(keys), key=lambda ic: (ic[1][1:] != (20, 50), ic[0]))]
  compile_cost = {m: sz.compile_guess_s for m in modes}
  for key in order:
    case, row = cases[key]
    for mode in list(modes):
      if clock.left() < compile_cost[mode] + est:
        row[SIDE_NAMES[mode]] = clock.skip(f"{SIDE_NAMES[mode]} {key}")
        continue
      case["runs"][SIDE_NAMES[mode]] = _torch_run(ctx, case, key[2], mode)
    new = {k: v for k, v in case["runs"].items() if k.startswith("torch_compile")}
    if not new:
      continue
    print(f"  train {key[0]} B={key[1]} K={key[2]} with {', '.join(new)} ...", flush=True)
    prev = {k: dict(row[k]) for k in case["runs"] if isinstance(row.get(k), dict)}
    try:
      sides = _time_case(ctx, row, case["runs"], sz.reps, sz.rep_seconds)
      for k, p in prev.items():  # the compile time is that of the first pass
        if "median" in row.get(k, {}) and "compile_s" in p:
          row[k].update(compile_s=p["compile_s"], first_calls_s=p.get("first_calls_s"),
                        first_pass_median=p.get("median"))
    except Exception:  # pylint: disable=broad-except
      row["compile_pass_error"] = traceback.format_exc()
      for k in new:
        del case["runs"][k]
      continue
    row["timed_with_compile"] = True
    for s in sides:
      if s.name in new:
        mode = "default" if s.name == "torch_compile" else "reduce-overhead"
        if s.first_s is not None:
          compile_cost[mode] = max(s.first_s, 0.5 * compile_cost[mode])
        del case["runs"][s.name]  # one compiled peer per case in memory
    suite.write()
  for key, (case, row) in cases.items():
    for mode in sz.compile_modes:
      if row.get(SIDE_NAMES[mode], {}).get("skipped") == "pending":
        row[SIDE_NAMES[mode]] = {"skipped": "no torch" if torch is None else
                                 "--no_compile" if ctx["no_compile"] else "time"}
  if torch is not None and not sz.compile_modes:
    out["compile_note"] = "torch.compile not run (--smoke without --smoke_compile)"
  cases.clear()


def eval_model(ctx, name, out, clock, suite):
  """``L_K`` of the test images for one model: dgmjax in each precision, PyTorch eager (and
  compiled) at the same chunk and batch, timed in the same rounds."""
  import jax
  import numpy as np
  from dgmjax import evaluation
  bench, sz, torch = ctx["bench"], ctx["sizes"], ctx["torch"]
  model, params = _model(ctx, name)
  x = ctx["test_binary"][:sz.eval_images]
  n, K = x.shape[0], sz.eval_k
  B = min(sz.eval_batch, n)
  warm_n = max(B, min(sz.eval_warm_images, n) // B * B)
  chunk = evaluation.auto_sample_chunk(model, params, x[:B], num_samples=K)
  per_image_flops = bench.matmul_flops(model, 1, K, train=False)
  base = {"model": name, "K": K, "B": B, "chunk": chunk, "rows_per_matmul": B * chunk,
          "params": "initial weights"}
  reference = "tensorfloat32" if ctx["tf32"] else "float32"
  precisions = [p for p in sz.eval_precisions
                if not (p == "tensorfloat32" and ctx["backend"] == "cpu")]
  if ctx["tf32"]:
    precisions = [p for p in precisions if p != "float32"]
  if name != sz.eval_models[0]:  # the precisions once, on the first model
    precisions = [reference]
  box, runs = {}, {}
  for prec in precisions:
    def run(m, prec=prec):
      box[prec] = evaluation.log_likelihood(
          model, params, x[:m], jax.random.key(11), num_samples=K, sample_chunk=chunk,
          batch_size=B, matmul_precision=None if prec == "float32" else prec)
    runs[f"dgmjax_{prec}"] = run
  if torch is not None:
    torch_peer, _, _ = _torch_classes(ctx)
    tm = _torch_model(ctx, model, params)
    xt = torch.from_numpy(x.reshape(n, -1).copy()).to(ctx["device"])
    modes = [False]
    if ctx["device"] == "cuda" and not ctx["no_compile"] and sz.compile_modes:
      modes.append(True)
    for comp in modes:
      def trun(m, comp=comp):
        box[f"torch{comp}"] = torch_peer.log_likelihood(tm, xt[:m], num_samples=K,
                                                        sample_chunk=chunk, batch_size=B,
                                                        compile=comp)
        ctx["sync"]()
      runs["torch_compile" if comp else "torch_eager"] = trun
  # compile on warm_n images (the shapes of the timed pass), then once more for the steady rate;
  # the reference precision and eager first, so that a short clock keeps the main comparison
  names = list(runs)
  names = names[:1] + [k for k in ("torch_eager",) if k in runs] + [
      k for k in names[1:] if k not in ("torch_eager", "torch_compile")] + [
          k for k in ("torch_compile",) if k in runs]
  live, first, steady = {}, {}, {}
  for side_name in names:
    run = runs[side_name]
    need = 3.0 if side_name != "torch_compile" else sz.compile_guess_s
    if clock.left() < need:
      out["eval"].append({**base, "side": side_name, **clock.skip(f"eval {name} {side_name}")})
      continue
    try:
      t = time.perf_counter()
      run(warm_n)
      first[side_name] = time.perf_counter() - t
      t = time.perf_counter()
      run(warm_n)
      steady[side_name] = time.perf_counter() - t
    except Exception as e:  # pylint: disable=broad-except  (e.g. torch.compile failing)
      out["eval"].append({**base, "side": side_name, "error": f"{type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300] if str(e) else ''}"})
      continue
    live[side_name] = run
  # every image if one pass of every side fits the clock, else the most images that do
  per_image = sum(steady.values()) / warm_n
  fit = (clock.left() - 2.0) / max(per_image, 1e-9)
  m = n if fit >= n else max(warm_n, int(fit) // B * B)
  reps = max(1, min(sz.eval_reps, int(fit // max(m, 1))))
  sides = []
  for side_name, run in live.items():
    s = bench.Side(side_name, lambda k, run=run: [run(m) for _ in range(k)])
    s.steps_per_rep = 1
    sides.append(s)
  if sides:
    bench.interleave(sides, reps)
  flops = per_image_flops * m
  rows = {}
  for s in sides:
    prec = s.name.split("_", 1)[1] if s.name.startswith("dgmjax") else (
        "tensorfloat32" if ctx["tf32"] else "float32")
    med = statistics.median(s.times)
    rate = _rate(ctx, prec)
    lls = box.get(prec) if s.name.startswith("dgmjax") else box.get(
        f"torch{s.name == 'torch_compile'}")
    nll = None if lls is None else -float(np.mean(np.asarray(
        lls.double().cpu() if hasattr(lls, "double") else lls, np.float64)))
    row = {**base, "side": s.name, "precision": prec, "images": m, "test_images": n,
           "seconds": med, "seconds_all": s.times, "reps": len(s.times),
           "first_call_s": first[s.name], "ms_per_image": 1e3 * med / m,
           "seconds_10000_images": med * 10000 / m, "extrapolated_to_10000": m != 10000,
           "gflops": flops / med / 1e9, "flop_fraction": flops / med / rate if rate else None,
           "nll": nll}
    rows[s.name] = row
    out["eval"].append(row)
  if m < n:
    clock.skip(f"eval {name}: timed on {m} of {n} images (time)")
  ref = rows.get(f"dgmjax_{'tensorfloat32' if ctx['tf32'] else 'float32'}")
  for key, r in rows.items():
    if ref is None or r is ref:
      continue
    if key.startswith("torch"):
      r["ratio_vs_dgmjax"] = r["seconds"] / ref["seconds"]
      if r["nll"] is not None and ref["nll"] is not None:
        r["nll_minus_dgmjax"] = r["nll"] - ref["nll"]
    elif r["nll"] is not None and ref["nll"] is not None:
      r["nll_shift_vs_reference"] = r["nll"] - ref["nll"]
  suite.write()


# ----------------------------------------------------------------------------- c. steps / dispatch


def _rows(ctx):
  return ctx["table_rows"]


def _fused(step_fn, num_steps: int, batch: int, steps_per_epoch: int, unroll: int = 1):
  """``run(state, train) -> (state, losses[num_steps])``: ``num_steps`` training steps in one
  dispatch; step ``s`` trains on rows ``(s mod steps_per_epoch) * batch ...`` of the device-resident
  ``train`` (Burda's fixed order, as ``parallel.runs_batches(..., shuffle=False)``)."""
  import jax
  from jax import lax

  @jax.jit
  def run(state, train):
    def body(st, _):
      x = lax.dynamic_slice_in_dim(train, (st.step % steps_per_epoch) * batch, batch, 0)
      st, metrics = step_fn(st, x)
      return st, metrics["loss"]
    return lax.scan(body, state, None, length=num_steps, unroll=unroll)
  return run


def _device_train(ctx):
  """The training images on the device (once): the fused loops read their minibatches there."""
  if "dtrain" not in ctx:
    import jax
    ctx["dtrain"] = jax.device_put(ctx["train"])
  return ctx["dtrain"]


def _protocol_steps():
  from dgmjax import training
  return training.burda_num_steps(PROTOCOL_TRAIN_IMAGES // PROTOCOL_BATCH, 8)


def measure_row(ctx, name, objective, k, clock, *, unroll=1, dispatch=True):
  """Steps per second of one row's B=20 training step, per dispatch and fused."""
  import jax
  import numpy as np
  from dgmjax import training
  sz = ctx["sizes"]
  B, S = PROTOCOL_BATCH, ctx["scan_steps"]
  train = ctx["train"]
  spe = train.shape[0] // B
  model, params = _model(ctx, name)
  opt = training.make_optimizer("adam", training.burda_schedule(spe, 8))
  step = training.make_train_step(
      training.make_loss(model, _BOUND.get(objective, objective), k), opt, seed=0,
      dynamic_binarization=True)
  rec = {"model": name, "objective": objective, "K": k, "B": B}
  if dispatch:
    st = {"s": training.init_state(params, opt)}
    batches = [jax.device_put(train[i * B:(i + 1) * B]) for i in range(4)]
    t = time.perf_counter()
    for i in range(2):
      st["s"], _ = step(st["s"], batches[i])
    jax.block_until_ready(st["s"])
    rec["dispatch_first_s"] = time.perf_counter() - t
    cnt = [0]

    def one():  # steps of a Python loop, synchronised every 20 steps
      for _ in range(20):
        st["s"], _ = step(st["s"], batches[cnt[0] % 4])
        cnt[0] += 1
      jax.block_until_ready(st["s"])
    calls, dt = _timed(one, sz.step_seconds)
    rec["dispatch_steps_per_s"] = 20 * calls / dt
    del st
  fused = _fused(step, S, B, spe, unroll)
  dtrain = _device_train(ctx)
  state = training.init_state(params, opt)
  t = time.perf_counter()
  state, losses = fused(state, dtrain)
  jax.block_until_ready(state)
  rec["fused_first_s"] = time.perf_counter() - t
  box = {"s": state}

  def go():
    box["s"], ls = fused(box["s"], dtrain)
    jax.block_until_ready(box["s"])
    box["l"] = ls
  calls, dt = _timed(go, sz.step_seconds)
  rec.update(steps_per_dispatch=S, unroll=unroll, fused_steps_per_s=S * calls / dt,
             fused_dispatches_timed=calls,
             final_loss=float(np.mean(np.asarray(box["l"]))) if "l" in box else None)
  if dispatch:
    rec["fused_speedup"] = rec["fused_steps_per_s"] / rec["dispatch_steps_per_s"]
  best = max(rec.get("dispatch_steps_per_s", 0.0), rec["fused_steps_per_s"])
  steps = _protocol_steps()
  rec["protocol_steps"] = steps
  rec["protocol_hours"] = steps / best / 3600
  if dispatch:
    rec["protocol_hours_dispatch"] = steps / rec["dispatch_steps_per_s"] / 3600
  del box
  return rec


def section_c(ctx, out, clock, suite):
  sz = ctx["sizes"]
  out["B"], out["steps_per_dispatch"] = PROTOCOL_BATCH, ctx["scan_steps"]
  out["protocol"] = {"epochs": 3280, "steps_per_epoch": PROTOCOL_TRAIN_IMAGES // PROTOCOL_BATCH,
                     "steps": _protocol_steps(),
                     "note": "59,600 training images (experiments.iwae's split) / B=20"}
  out["rows"] = []
  # the distinct costs first (VAE at K=1, IWAE at K>1), then the VAE rows at K>1
  rows = [(m, o, k) for m in sz.c_models for o, k in _rows(ctx) if k in sz.c_ks]
  rows = [r for _, r in sorted(enumerate(rows), key=lambda ir: (ir[1][1] == "vae"
                                                                and ir[1][2] > 1, ir[0]))]
  est = 0.0
  for name, obj, k in rows:
    label = f"{name} {obj} K={k}"
    if clock.left() < max(est, 1.0):
      out["rows"].append({"model": name, "objective": obj, "K": k, **clock.skip(label)})
      continue
    print(f"  {label} ...", flush=True)
    t = time.time()
    try:
      rec = measure_row(ctx, name, obj, k, clock)
    except Exception:  # pylint: disable=broad-except
      out["rows"].append({"model": name, "objective": obj, "K": k,
                          "error": traceback.format_exc()})
      print(out["rows"][-1]["error"], file=sys.stderr, flush=True)
      continue
    est = max(est, time.time() - t)
    out["rows"].append(rec)
    ctx["alone"][(name, obj, k)] = rec
    print(f"    {rec['dispatch_steps_per_s']:.0f} steps/s per dispatch, "
          f"{rec['fused_steps_per_s']:.0f} fused ({rec['fused_speedup']:.2f}x); full protocol "
          f"{rec['protocol_hours']:.2f} h", flush=True)
    suite.write()
  # the most launch-bound row again with an unrolled scan, if time remains
  if sz.scan_unroll_extra > 1 and out["rows"] and "fused_steps_per_s" in out["rows"][0]:
    first = out["rows"][0]
    label = f"{first['model']} {first['objective']} K={first['K']} unroll={sz.scan_unroll_extra}"
    if clock.left() < 2 * est:
      out["unrolled"] = clock.skip(label)
    else:
      print(f"  {label} ...", flush=True)
      try:
        rec = measure_row(ctx, first["model"], first["objective"], first["K"], clock,
                          unroll=sz.scan_unroll_extra, dispatch=False)
        rec["speedup_vs_unroll_1"] = rec["fused_steps_per_s"] / first["fused_steps_per_s"]
        out["unrolled"] = rec
      except Exception:  # pylint: disable=broad-except
        out["unrolled"] = {"error": traceback.format_exc()}
  done = [r for r in out["rows"] if "fused_steps_per_s" in r]
  if done:
    out["fused_speedup_median"] = statistics.median(r["fused_speedup"] for r in done)
    out["protocol_hours_range"] = [min(r["protocol_hours"] for r in done),
                                   max(r["protocol_hours"] for r in done)]
    out["protocol_hours_sum"] = sum(r["protocol_hours"] for r in done)


# ----------------------------------------------------------------------------- d. rows together


def section_d(ctx, out, clock, suite):
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax import lax
  from dgmjax import evaluation, parallel, training
  sz = ctx["sizes"]
  B, S = PROTOCOL_BATCH, ctx["scan_steps"]
  train = ctx["train"]
  spe = train.shape[0] // B
  out["rows_source"] = ctx["table_rows_source"]
  specs = []  # (model name, K, objective names)
  for name in sz.d_models:
    by_k = {}
    for obj, k in _rows(ctx):
      if k in sz.d_ks:
        by_k.setdefault(k, []).append(obj)
    specs += [(name, k, tuple(dict.fromkeys(objs))) for k, objs in sorted(by_k.items())]
  models = {n: _model(ctx, n) for n in sz.d_models}
  members = [(n, o, k) for n, k, objs in specs for o in objs]
  out["runs"] = [f"{n}-{o}-k{k}" for n, o, k in members]
  out["groups"] = len(specs)
  out["note"] = ("Table 1's twelve rows (VAE / IWAE x K = 1, 5, 50 x 1 and 2 layers) are ten "
                 "runs, since at K = 1 the VAE and the IWAE are the same run; "
                 f"{len(members)} of them here")

  def build(optimizer):
    groups, states, seeds, index = [], [], [], []
    for n, k, objs in specs:
      model, params = models[n]
      groups.append(parallel.RunGroup(parallel.bounds_loss(model, objs, k), optimizer,
                                      with_index=True, dynamic_binarization=True))
      states.append(parallel.init_runs([params] * len(objs), optimizer))
      seeds.append(jnp.zeros(len(objs), jnp.int32))
      index.append(jnp.arange(len(objs), dtype=jnp.int32))
    return (parallel.make_groups_train_step(groups), tuple(states), tuple(seeds), tuple(index))

  # 1. one step of all rows per dispatch (the vmap_table loop), against the rows alone
  step, states, seeds, index = build(training.make_optimizer("adam", training.burda_schedule(
      spe, 8)))
  sizes_r = [len(objs) for _, _, objs in specs]
  xs = [tuple(jax.device_put(np.broadcast_to(train[i * B:(i + 1) * B], (r, B) + train.shape[1:]))
              for r in sizes_r) for i in range(4)]
  t = time.perf_counter()
  for i in range(2):
    states, _ = step(states, xs[i], seeds, index)
  jax.block_until_ready(states)
  out["joint_dispatch_first_s"] = time.perf_counter() - t
  box, cnt = {"s": states}, [0]

  def ten():
    for _ in range(10):
      box["s"], _ = step(box["s"], xs[cnt[0] % 4], seeds, index)
      cnt[0] += 1
    jax.block_until_ready(box["s"])
  calls, dt = _timed(ten, sz.step_seconds)
  sps_dispatch = 10 * calls / dt
  out["joint_dispatch_step_ms"] = 1e3 / sps_dispatch
  del box, states, xs
  alone = ctx["alone"]
  have = [m for m in members if m in alone]
  if len(have) == len(members):
    out["alone_dispatch_step_ms_sum"] = sum(1e3 / alone[m]["dispatch_steps_per_s"]
                                            for m in members)
    out["alone_fused_step_ms_sum"] = sum(1e3 / alone[m]["fused_steps_per_s"] for m in members)
    out["speedup_dispatch"] = out["alone_dispatch_step_ms_sum"] / out["joint_dispatch_step_ms"]
  else:
    out["alone_note"] = (f"section c measured {len(have)} of the {len(members)} runs alone: "
                         "no comparison with the rows alone")
  suite.write()

  # 2. plan: as many epochs of Burda's (compressed) schedule as the remaining time allows
  sps_plan = sps_dispatch
  if "alone_fused_step_ms_sum" in out:  # running the rows one after another: a lower bound
    sps_plan = max(sps_plan, 1e3 / out["alone_fused_step_ms_sum"])
  compile_est = 1.5 * out["joint_dispatch_first_s"]
  train_s = clock.left() - compile_est - sz.d_eval_reserve_s
  dispatches = int(max(0.0, train_s) * sps_plan // S)
  if dispatches < 2:
    if clock.left() < compile_est + 1.0:
      out["training"] = clock.skip("training the rows together")
      return
    dispatches = 2  # the least that separates the compile from the steady step time
  if sz.d_max_dispatches:
    dispatches = min(dispatches, max(2, sz.d_max_dispatches))
  num_steps = dispatches * S
  epochs = num_steps / spe
  out["plan"] = {"epochs": epochs, "steps": num_steps, "dispatches": dispatches,
                 "steps_per_dispatch": S, "planned_steps_per_s": sps_plan,
                 "train_images": int(train.shape[0]), "data": ctx["data_source"]}
  schedule = training.burda_schedule(spe, 8, num_epochs=epochs)
  step, states, seeds, index = build(training.make_optimizer("adam", schedule))

  @jax.jit
  def fused(states, s0, dtrain):
    def body(carry, _):
      sts, s = carry
      x = lax.dynamic_slice_in_dim(dtrain, (s % spe) * B, B, 0)
      xs = tuple(jnp.broadcast_to(x, (r,) + x.shape) for r in sizes_r)
      sts, metrics = step(sts, xs, seeds, index)
      return (sts, s + 1), tuple(m["bound"] for m in metrics)
    (states, s), bounds = lax.scan(body, (states, s0), None, length=S)
    return states, s, tuple(jnp.mean(b, axis=0) for b in bounds)

  dtrain = _device_train(ctx)
  s0 = jnp.zeros([], jnp.int32)
  history, times = [], []
  t = time.perf_counter()
  states, s0, bounds = fused(states, s0, dtrain)
  jax.block_until_ready(states)
  out["fused_first_s"] = time.perf_counter() - t
  history.append(jax.device_get(bounds))
  done = 1
  print(f"  {len(members)} runs in {len(specs)} groups, {epochs:.2f} epochs planned "
        f"({num_steps} steps); first dispatch {out['fused_first_s']:.1f} s", flush=True)
  while done < dispatches:
    if clock.left() < sz.d_eval_reserve_s and done >= 2:
      clock.skip(f"training dispatches {done + 1}..{dispatches}")
      break
    t = time.perf_counter()
    states, s0, bounds = fused(states, s0, dtrain)
    jax.block_until_ready(states)
    times.append(time.perf_counter() - t)
    history.append(jax.device_get(bounds))
    done += 1
  out["trained"] = {"steps": done * S, "epochs": done * S / spe,
                    "completed_plan": done == dispatches,
                    "seconds": out["fused_first_s"] + sum(times)}
  if times:
    sps = S * len(times) / sum(times)
    out["joint_fused_step_ms"] = 1e3 / sps
    out["joint_fused_steps_per_s"] = sps
    steps = _protocol_steps()
    out["protocol_hours_together"] = steps / sps / 3600
    if "alone_fused_step_ms_sum" in out:
      out["speedup_fused"] = out["alone_fused_step_ms_sum"] / out["joint_fused_step_ms"]
      out["protocol_hours_alone_sum"] = sum(
          steps / alone[m]["fused_steps_per_s"] / 3600 for m in members)
  suite.write()

  # 3. the rows after training: the last dispatch's training bound, and the k=5000 test NLL
  results = []
  flat = {}
  i = 0
  for g, (n, k, objs) in enumerate(specs):
    for r, o in enumerate(objs):
      flat[(n, o, k)] = (g, r)
      results.append({"model": n, "objective": o, "K": k,
                      "train_bound_last_dispatch": float(history[-1][g][r])})
      i += 1
  out["rows"] = results
  x = ctx["test_binary"][:sz.d_eval_images]
  key = jax.random.key(1000)
  per = None
  for rec in results:
    if clock.left() < (per or 2.0):
      clock.skip(f"test NLL {rec['model']} {rec['objective']} K={rec['K']}")
      continue
    g, r = flat[(rec["model"], rec["objective"], rec["K"])]
    params = jax.tree.map(lambda a, r=r: a[r], states[g].params)
    t = time.perf_counter()
    try:  # batch and K of section b's evaluation: its compiled estimator is reused
      ll = evaluation.log_likelihood(models[rec["model"]][0], params, x, key,
                                     num_samples=sz.d_eval_k,
                                     batch_size=min(sz.eval_batch, x.shape[0]))
    except Exception:  # pylint: disable=broad-except
      rec["eval_error"] = traceback.format_exc()
      continue
    per = time.perf_counter() - t
    rec.update(test_nll=-float(np.mean(ll)), test_nll_se=float(np.std(ll, ddof=1)
                                                               / math.sqrt(len(ll))),
               eval_images=int(x.shape[0]), eval_k=sz.d_eval_k)
    suite.write()
  del states


# ----------------------------------------------------------------------------- e. summary


def _f(v, fmt="{:.2f}"):
  return "n/a" if v is None else fmt.format(v)


def summary_line(res: dict) -> str:
  env, secs = res.get("env", {}), res.get("sections", {})
  parts = [f"{env.get('device_kind', env.get('device', '?'))}, jax {env.get('jax', '?')}"
           f"{', torch ' + env['torch'] if env.get('torch') else ''}"]
  a = secs.get("a", {}).get("result", {})
  if a.get("matmul"):
    t = a["matmul"]["tflops"]
    parts.append("matmul " + "/".join(_f(t.get(f"jax_{k}"), "{:.1f}") for k in
                                      ("float32", "tensorfloat32", "bfloat16"))
                 + " TFLOP/s (f32/TF32/bf16)")
  b = secs.get("b", {}).get("result", {})
  tr = [r for r in b.get("train", []) if "dgmjax" in r]
  for side, label in (("ratio_eager", "eager"), ("ratio_compile", "compile"),
                      ("ratio_reduce_overhead", "reduce-overhead")):
    rs = [r[side]["median"] for r in tr if r.get(side)]
    if rs:
      at = [f"{r['model'][-1]}L {_f(r[side]['median'])}" for r in tr
            if r.get(side) and r["B"] == 20 and r["K"] == 50]
      parts.append(f"train step vs {label} x{_f(statistics.median(rs))} (median of {len(rs)}; "
                   f"min {_f(min(rs))}{'; B=20 K=50: ' + ', '.join(at) if at else ''})")
  if "agreement_ok" in b:
    parts.append("agreement " + ("OK" if b["agreement_ok"] else "FAILED"))
  ev = [r for r in b.get("eval", []) if "seconds" in r]
  for model in dict.fromkeys(r["model"] for r in ev):
    rs = [r for r in ev if r["model"] == model]
    tor = next((r for r in rs if r["side"] == "torch_eager"), None)
    dg = [r for r in rs if r["side"].startswith("dgmjax")]
    if dg:
      ref = dg[0]
      txt = (f"k={ref['K']} eval {model}: {_f(ref['seconds_10000_images'], '{:.1f}')} s per "
             f"10,000 images ({ref['precision']}, {_f(ref['flop_fraction'])} of its matmul rate)")
      if tor:
        txt += f", x{_f(tor.get('ratio_vs_dgmjax'))} vs eager"
      txt += "".join(f", {r['precision']} {_f(r['seconds_10000_images'], '{:.1f}')} s "
                     f"({_f(r['flop_fraction'])})" for r in dg[1:])
      parts.append(txt)
  c = secs.get("c", {}).get("result", {})
  if c.get("fused_speedup_median"):
    lo, hi = c["protocol_hours_range"]
    parts.append(f"fused steps x{_f(c['fused_speedup_median'])} over per-step dispatch; "
                 f"full protocol {_f(lo)}-{_f(hi)} h per row")
  d = secs.get("d", {}).get("result", {})
  if d.get("protocol_hours_together"):
    parts.append(f"{len(d.get('runs', []))} runs together {_f(d['protocol_hours_together'])} h "
                 f"for the full protocol"
                 + (f" vs {_f(d['protocol_hours_alone_sum'])} h alone "
                    f"(x{_f(d.get('speedup_fused'))})" if d.get("protocol_hours_alone_sum")
                    else ""))
  bad = [f"{k}: {v.get('status')}" for k, v in secs.items()
         if v.get("status") not in ("ok", "partial", "running")]
  if bad:
    parts.append("NOT OK: " + ", ".join(bad))
  return "SUMMARY: " + "; ".join(parts)


def section_e(ctx, out, clock, suite):
  del ctx, clock
  out["line"] = summary_line(suite.res)
  print(out["line"], flush=True)


# ----------------------------------------------------------------------------- markdown


def _ms(side: dict | None) -> str:
  if not side:
    return "-"
  if "median" in side:
    return f"{side['median']:.3f}"
  return side.get("skipped") or ("error" if "error" in side else "-")


def _r(r: dict | None) -> str:
  return "-" if not r else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"


def render_md(res: dict) -> str:
  env, secs = res.get("env", {}), res.get("sections", {})
  s = res.get("suite", {})
  L = ["# dgmjax device suite", "",
       f"{env.get('device_kind', env.get('device', '?'))} ({env.get('backend', '?')}); "
       f"jax {env.get('jax', '?')}, torch {env.get('torch') or '-'}, python "
       f"{env.get('python', '?')}; matmuls {env.get('matmul_precision', '?')}; data: "
       f"{env.get('data', '?')}; {'smoke run; ' if s.get('smoke') else ''}"
       f"{s.get('wall_s', 0):.0f} s of a {s.get('budget_s', 0):.0f} s budget.", ""]
  if env.get("setup_error"):
    L += ["**Setup failed:**", "", "```", env["setup_error"], "```", ""]
  for name in SECTIONS:
    rec = secs.get(name)
    if rec is None:
      continue
    r = rec.get("result", {})
    L += [f"## {name}. {rec['title']}", "",
          f"status **{rec.get('status')}**, {rec.get('wall_s', 0):.1f} s of "
          f"{rec.get('budget_s', 0):.0f} s"
          + (f"; skipped: {', '.join(x['case'] for x in rec['skipped'])}"
             if rec.get("skipped") else ""), ""]
    if rec.get("error"):
      L += ["```", rec["error"].strip()[-3000:], "```", ""]
    if name == "a" and r.get("matmul"):
      t = r["matmul"]["tflops"]
      L += [f"device {r.get('device_kind')}, memory {_f(r.get('device_memory_gib'), '{:.0f}')} "
            f"GiB (XLA's limit {_f(r.get('xla_memory_limit_gib'), '{:.0f}')} GiB)"
            f"{'; ' + r['nvidia_smi'] if r.get('nvidia_smi') else ''}", "",
            f"| matmul {r['matmul']['n']}^3 (TFLOP/s) | float32 | TF32 | bfloat16 |",
            "|---|---|---|---|"]
      for lib in ("jax", "torch"):
        if any(k.startswith(lib) for k in t):
          L.append(f"| {lib} | " + " | ".join(_f(t.get(f"{lib}_{k}"), "{:.2f}") for k in
                                             ("float32", "tensorfloat32", "bfloat16")) + " |")
      if r["matmul"].get("note"):
        L += ["", r["matmul"]["note"]]
      bw = r.get("bandwidth", {})
      if bw:
        L += ["", f"bandwidth ({bw['mib']} MiB): JAX read+write "
              f"{_f(bw.get('jax_read_write_gbs'), '{:.0f}')} GB/s, PyTorch copy "
              f"{_f(bw.get('torch_copy_gbs'), '{:.0f}')} GB/s, host to device "
              f"{_f(bw.get('jax_host_to_device_gbs'), '{:.1f}')} GB/s"]
      L.append("")
    if name == "b":
      for a in r.get("agreement", []):
        if "skipped" in a:
          L.append(f"- agreement: skipped ({a['skipped']})")
        elif "error" in a:
          L.append(f"- agreement {a['model']}: ERROR {a['error']}")
        else:
          L.append(f"- agreement {a['model']}: {'OK' if a['ok'] else 'FAILED'} (log-weights "
                   f"{a['log_weights_rel']:.1e}, grads {a['grad_rel']['vae']:.1e} / "
                   f"{a['grad_rel']['iwae']:.1e}, Adam {a['adam_step_rel_lr']:.1e} lr, eval lse "
                   f"{a['eval_lse_rel']:.1e}, f64 {a['log_weights_rel_f64']:.1e})")
      if r.get("train"):
        L += ["", "training step, ms (median over reps); ratio = peer / dgmjax: median "
              "(min-max)", "",
              "| model | obj | B | K | dgmjax | eager | compile | reduce-overhead | ratio eager |"
              " ratio compile | ratio r-o | GFLOP/s | frac |", "|" + "---|" * 13]
        for t in r["train"]:
          if "skipped" in t and "dgmjax" not in t:
            L.append(f"| {t['model']} | | {t['B']} | {t['K']} | skipped: {t['skipped']} |"
                     + " |" * 8)
            continue
          L.append(f"| {t['model']} | {t['objective']} | {t['B']} | {t['K']} | "
                   f"{_ms(t.get('dgmjax'))} | {_ms(t.get('torch_eager'))} | "
                   f"{_ms(t.get('torch_compile'))} | "
                   f"{_ms(t.get('torch_compile_reduce_overhead'))} | "
                   f"{_r(t.get('ratio_eager'))} | {_r(t.get('ratio_compile'))} | "
                   f"{_r(t.get('ratio_reduce_overhead'))} | "
                   f"{_f(t.get('dgmjax_gflops'), '{:.1f}')} | {_f(t.get('flop_fraction'))} |")
      ev = [e for e in r.get("eval", []) if "seconds" in e]
      if ev:
        e0 = ev[0]
        L += ["", f"k={e0['K']} evaluation of {e0['images']} test images (batch {e0['B']}, "
              f"chunk {e0['chunk']}; {e0['params']}); ratio = peer / dgmjax", "",
              "| model | side | precision | seconds | s / 10k images | GFLOP/s | frac of matmul "
              "rate | NLL | ratio |", "|" + "---|" * 9]
        for e in ev:
          L.append(f"| {e['model']} | {e['side']} | {e['precision']} | {e['seconds']:.3f} | "
                   f"{e['seconds_10000_images']:.2f} | {e['gflops']:.1f} | "
                   f"{_f(e.get('flop_fraction'))} | {_f(e.get('nll'))} | "
                   f"{_f(e.get('ratio_vs_dgmjax'))} |")
      for e in r.get("eval", []):
        if "seconds" not in e:
          L.append(f"- eval {e['model']} {e.get('side', '')}: "
                   f"{e.get('skipped') or e.get('error')}")
      L.append("")
    if name == "c" and r.get("rows"):
      p = r.get("protocol", {})
      L += [f"B={r['B']}, {r['steps_per_dispatch']} steps per fused dispatch; the full protocol "
            f"is {p.get('steps')} steps ({p.get('epochs')} epochs x {p.get('steps_per_epoch')})",
            "", "| model | obj | K | steps/s per dispatch | steps/s fused | speedup | full "
            "protocol (h) |", "|---|---|---|---|---|---|---|"]
      for x in r["rows"]:
        if "fused_steps_per_s" not in x:
          L.append(f"| {x['model']} | {x['objective']} | {x['K']} | skipped: "
                   f"{x.get('skipped')} | | | |")
          continue
        L.append(f"| {x['model']} | {x['objective']} | {x['K']} | "
                 f"{x['dispatch_steps_per_s']:.0f} | {x['fused_steps_per_s']:.0f} | "
                 f"{x['fused_speedup']:.2f} | {x['protocol_hours']:.2f} |")
      u = r.get("unrolled")
      if u and "fused_steps_per_s" in u:
        L += ["", f"unroll={u['unroll']} ({u['model']} {u['objective']} K={u['K']}): "
              f"{u['fused_steps_per_s']:.0f} steps/s, x{u['speedup_vs_unroll_1']:.2f} over "
              "unroll=1"]
      L.append("")
    if name == "d" and r.get("runs"):
      L += [f"{len(r['runs'])} runs in {r.get('groups')} groups ({r.get('note', '')}).", ""]
      L.append(f"- one step of all runs per dispatch: "
               f"{_f(r.get('joint_dispatch_step_ms'), '{:.3f}')}"
               f" ms; the runs alone, summed: {_f(r.get('alone_dispatch_step_ms_sum'), '{:.3f}')}"
               f" ms (x{_f(r.get('speedup_dispatch'))})")
      L.append(f"- fused ({r.get('plan', {}).get('steps_per_dispatch')} steps per dispatch): "
               f"{_f(r.get('joint_fused_step_ms'), '{:.3f}')} ms per step of all runs; the runs "
               f"alone, summed: {_f(r.get('alone_fused_step_ms_sum'), '{:.3f}')} ms "
               f"(x{_f(r.get('speedup_fused'))})")
      L.append(f"- full protocol for all runs: {_f(r.get('protocol_hours_together'))} h "
               f"together, {_f(r.get('protocol_hours_alone_sum'))} h one after another")
      if r.get("trained"):
        tr = r["trained"]
        L.append(f"- trained {tr['epochs']:.2f} epochs ({tr['steps']} steps, Burda's schedule "
                 f"compressed to {r['plan']['epochs']:.2f} epochs) in {tr['seconds']:.1f} s; "
                 f"data: {r['plan']['data']}")
      if r.get("rows"):
        L += ["", "| model | obj | K | training bound (last dispatch) | test NLL |",
              "|---|---|---|---|---|"]
        for x in r["rows"]:
          nll = (f"{x['test_nll']:.2f} ± {x['test_nll_se']:.2f} (k={x['eval_k']}, "
                 f"{x['eval_images']} images)" if "test_nll" in x else "-")
          L.append(f"| {x['model']} | {x['objective']} | {x['K']} | "
                   f"{x['train_bound_last_dispatch']:.2f} | {nll} |")
      L.append("")
    if name == "e" and r.get("line"):
      L += [r["line"], ""]
  if s.get("watchdog"):
    L += [f"**Watchdog:** {s['watchdog']}", ""]
  return "\n".join(L)


# ----------------------------------------------------------------------------- set-up and main


def _data_dir(arg: str) -> str:
  for cand in (arg, os.environ.get("DGMJAX_DATA_DIR", ""), os.path.join(ROOT, "shared", "data"),
               os.path.join(ROOT, "..", "shared", "data")):
    if cand and os.path.isdir(os.path.join(cand, "mnist")):
      return os.path.abspath(cand)
  return ""


#: --smoke compiles some twenty programs; without LLVM's optimisations XLA compiles them about
#: twice as fast (and runs them slower: smoke timings mean nothing anyway).
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _tqdm_or_stand_in(env: dict) -> None:
  """``dgmjax.evaluation.log_likelihood`` imports ``tqdm.auto`` for its (here disabled) progress
  bar; tqdm comes with tensorflow-datasets, not with jax, flax, optax, orbax or torch. Where it is
  missing a no-op stand-in is registered (the iterable itself), which changes nothing else."""
  try:
    import tqdm.auto  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  except ImportError:
    import types  # pylint: disable=import-outside-toplevel

    def tqdm(iterable=None, *args, **kwargs):  # pylint: disable=unused-argument
      return iterable
    top, auto = types.ModuleType("tqdm"), types.ModuleType("tqdm.auto")
    top.tqdm = auto.tqdm = tqdm
    top.auto = auto
    sys.modules["tqdm"], sys.modules["tqdm.auto"] = top, auto
    env["tqdm"] = ("not installed: a no-op stand-in (progress bars are off anyway; "
                   "tqdm-4.70.1-py3-none-any.whl brings the real one)")


def setup(args, suite) -> dict:
  import bench
  bench.configure_process(0, "PASSIVE")
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")  # room for PyTorch beside XLA
  if args.smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SMOKE_XLA_FLAGS).strip()
  import jax
  import numpy as np
  env = suite.res["env"]
  ctx = {"bench": bench, "no_compile": args.no_compile, "tf32": args.tf32, "alone": {}}
  _tqdm_or_stand_in(env)
  backend = jax.default_backend()
  ctx["backend"] = backend
  cache = args.compile_cache
  if cache is None:
    cache = "" if (args.smoke or backend == "cpu") else "/tmp/dgmjax_suite_jax_cache"
  if cache:
    try:
      jax.config.update("jax_compilation_cache_dir", cache)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    except Exception as e:  # pylint: disable=broad-except
      env["compile_cache_error"] = str(e)
  torch = None
  if not args.no_torch:
    try:
      import torch  # pylint: disable=redefined-outer-name
      import torch._dynamo  # pylint: disable=protected-access
      torch.set_num_threads(len(os.sched_getaffinity(0)))
      torch._dynamo.config.cache_size_limit = 256  # pylint: disable=protected-access
      if hasattr(torch._dynamo.config, "recompile_limit"):  # pylint: disable=protected-access
        torch._dynamo.config.recompile_limit = 256  # pylint: disable=protected-access
    except ImportError as e:
      env["torch_missing"] = str(e)
      torch = None
  device = "cuda" if (torch is not None and backend == "gpu" and torch.cuda.is_available()) \
      else "cpu"
  if torch is not None and backend == "gpu" and device != "cuda":
    env["torch_note"] = "torch has no CUDA here: its sides run on the CPU"
  prec = "tensorfloat32" if args.tf32 else "highest"
  if backend != "cpu":
    jax.config.update("jax_default_matmul_precision", prec)
  if device == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
  ctx.update(torch=torch, device=device,
             sync=torch.cuda.synchronize if device == "cuda" else (lambda: None))
  sizes = smoke_sizes(args.smoke_compile) if args.smoke else Sizes()
  if args.no_compile:
    sizes.compile_modes = ()
  ctx["sizes"] = sizes
  ctx["scan_steps"] = args.scan_steps or sizes.scan_steps
  if args.unroll >= 0:
    sizes.scan_unroll_extra = args.unroll
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import flax
  import optax
  from importlib import metadata
  packages = {}
  for dist in ("jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
               "jax-cuda13-pjrt", "triton", "orbax-checkpoint"):
    try:
      packages[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  env.update(jax=jax.__version__, packages=packages,
             flax=flax.__version__, optax=optax.__version__, numpy=np.__version__,
             torch=None if torch is None else torch.__version__, backend=backend,
             device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
             torch_device=device, python=platform.python_version(), cpu=cpu,
             cpus=len(os.sched_getaffinity(0)), hostname=platform.node(),
             matmul_precision=("tensorfloat32" if args.tf32 else "float32")
             + ("" if backend != "cpu" else " (CPU)"),
             compile_cache=cache or None,
             XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
             XLA_FLAGS=os.environ.get("XLA_FLAGS"),
             OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY"))
  # data: the staged files through dgmjax.data's numpy backend (no tensorflow)
  data_dir = _data_dir(args.data_dir)
  t = time.time()
  try:
    train, test_binary, source = bench.load_data(SimpleNamespace(data_dir=data_dir))
  except OSError:  # an unwritable array cache: keep it in a temporary folder instead
    os.environ["DGMJAX_TFDS_DIR"] = os.path.join(tempfile.gettempdir(), "dgmjax_suite_cache")
    train, test_binary, source = bench.load_data(SimpleNamespace(data_dir=data_dir))
  env["data"], env["data_load_s"] = source, time.time() - t
  if not data_dir:
    env["data_note"] = ("no staged MNIST found (--data_dir, DGMJAX_DATA_DIR, shared/data): "
                        "random grey levels; timings hold, the NLLs mean nothing")
  ctx.update(train=train, test_binary=test_binary, data_source=source)
  try:
    from experiments.iwae import vmap_table
    ctx["table_rows"], ctx["table_rows_source"] = tuple(vmap_table.ROWS), \
        "experiments.iwae.vmap_table.ROWS"
  except Exception as e:  # pylint: disable=broad-except  (mid-edit or a missing dependency)
    ctx["table_rows"] = ROWS_FALLBACK
    ctx["table_rows_source"] = f"built-in (experiments.iwae.vmap_table: {type(e).__name__}: {e})"
  ctx["machine"] = bench.Machine(jax, min(2048, sizes.matmul_n))
  ctx["machine"].measure(sizes.rate_seconds)
  return ctx


def main(argv=None) -> int:
  args = parse_args(argv)
  suite = Suite(args)
  suite.start_watchdog()
  suite.write()
  print(f"device suite: sections {','.join(args.sections)}, budget {args.budget_s:.0f} s "
        f"({', '.join(f'{k}={args.budgets[k]:.0f}' for k in args.sections if args.budgets[k])}); "
        f"writing {suite.json_path}", flush=True)
  try:
    ctx = setup(args, suite)
  except Exception:  # pylint: disable=broad-except
    suite.res["env"]["setup_error"] = traceback.format_exc()
    print(suite.res["env"]["setup_error"], file=sys.stderr)
    suite.write()
    return 1
  suite.res["env"]["setup_s"] = suite.elapsed()
  suite.write()
  fns = {"a": section_a, "b": section_b, "c": section_c, "d": section_d, "e": section_e}
  for name in args.sections:
    suite.run_section(name, fns[name], ctx)
  env = suite.res["env"]
  env["tensorflow_imported"] = any(m == "tensorflow" or m.startswith(("tensorflow.",
                                                                       "tensorflow_datasets"))
                                   for m in sys.modules)
  env["torch_imported"] = "torch" in sys.modules
  env["ml_collections_imported"] = "ml_collections" in sys.modules
  suite.res["suite"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  suite.res["summary"] = summary_line(suite.res)
  suite.write()
  print(f"\nwrote {suite.json_path} and {suite.md_path} ({suite.elapsed():.0f} s)\n"
        f"{suite.res['summary']}", flush=True)
  bad = [k for k, v in suite.res["sections"].items() if v["status"] not in ("ok", "partial")]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
