"""The accelerator suite: every GPU measurement of dgmjax in one time-boxed command.

    python benchmarks/device_suite.py --out DIR                  # on the GPU: at most 8 minutes
    python benchmarks/device_suite.py --smoke --out /tmp/smoke   # every section on CPU, toy sizes
    python benchmarks/device_suite.py --smoke --no_torch --out /tmp/s   # the JAX sections only

Writes ``DIR/device_suite.json`` and ``DIR/device_suite.md`` (atomically: temporary file, then
rename) after every section and every case, so a window that closes early still leaves the
finished sections. Sections, in order (``--sections a,b,c,d,e`` selects some):

a. **Environment**: device, versions, matmul rates and bandwidth (:mod:`benchmarks.environment`).
b. **The training-step table of** ``bench.py`` on the device beside PyTorch eager,
   ``torch.compile`` and CUDA graphs, after the agreement check, and the k=5000 evaluation of the
   test images (:mod:`benchmarks.device_table`).
c. **Many steps per dispatch** (``lax.scan``) and the projected full protocol per row, and
d. **the Table 1 rows trained together** in one program (:mod:`benchmarks.protocol`).
e. **Summary**: one line of the headline ratios (:func:`benchmarks.report.summary_line`).

Every section has a time budget (``--budget`` table, scaled to ``--budget_s``; unused time passes
to the later sections), checks the clock between cases and records ``skipped: time`` for what it
leaves out; a watchdog ends the process at ``--budget_s + 30`` seconds (450 + 30 = 480 s by
default), so the suite never outlasts its window (:mod:`benchmarks.timebox`). This file holds the
sizes, the flags and the set-up.

Expected runtime: at most 8 minutes on one H100/H200 (the default budget); ``--smoke``: about one
to two minutes on two CPU cores.

What it needs on the device: jax (CUDA), flax, optax, numpy, and torch for the peer (without it,
pass ``--no_torch``). No tensorflow, tensorflow-datasets or ml_collections: MNIST is read from the
staged files with ``dgmjax.data``'s numpy backend (``--data_dir``, else ``DGMJAX_DATA_DIR``, else
``shared/data`` in or next to the repository). Bring the folder ``mnist/`` of the staged data
(four ``.gz`` files, 11.6 MB); without it the suite runs on random grey levels and says so.
``torch.compile`` needs triton (a dependency of the CUDA wheels of torch) and a C compiler; where
either is missing the compiled sides are recorded as errors and the rest runs. The repository need
not be installed: ``dgmjax`` and ``benchmarks`` are imported from this checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=wrong-import-position
from benchmarks import (cases, device_table, environment, protocol, report,  # noqa: E402
                        timebox, timing)

#: Seconds per section at the default --budget_s (scaled with it); the rest is start-up.
BUDGET = {"a": 20.0, "b": 210.0, "c": 75.0, "d": 125.0, "e": 0.0}
SMOKE_BUDGET = {"a": 6.0, "b": 40.0, "c": 20.0, "d": 30.0, "e": 0.0}
BUDGET_S, SMOKE_BUDGET_S = 450.0, 110.0


# ----------------------------------------------------------------------------- sizes


@dataclasses.dataclass
class Sizes:
  """What each section runs: the device sizes, or the toy sizes of ``--smoke``."""
  models: tuple = cases.MODELS
  agreement_models: tuple = cases.MODELS
  train_cases: tuple = cases.TRAIN_CASES
  compile_modes: tuple = ("default", "reduce-overhead")
  reps: int = 5
  rep_seconds: float = 0.25
  eval_models: tuple = cases.MODELS
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
  c_models: tuple = cases.MODELS
  c_ks: tuple = (1, 5, 50)
  d_models: tuple = cases.MODELS
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
  p.add_argument("--sections", default=",".join(report.SECTIONS), help="comma list of a,b,c,d,e")
  p.add_argument("--budget_s", type=float, default=0.0,
                 help=f"total seconds (default {BUDGET_S:.0f}; --smoke {SMOKE_BUDGET_S:.0f}); "
                      f"the watchdog ends the process {timebox.WATCHDOG_GRACE_S:.0f} s later")
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
  bad = [s for s in a.sections if s not in report.SECTIONS]
  if bad or not a.sections:
    p.error(f"--sections must be a comma list of {','.join(report.SECTIONS)}, "
            f"got {bad or a.sections}")
  table = dict(SMOKE_BUDGET if a.smoke else BUDGET)
  for item in filter(None, (s.strip() for s in a.budget.split(","))):
    k, _, v = item.partition("=")
    if k not in table or not v:
      p.error(f"--budget entries are SECTION=SECONDS for {','.join(report.SECTIONS)}, got {item!r}")
    table[k] = float(v)
  default_total = SMOKE_BUDGET_S if a.smoke else BUDGET_S
  a.budget_s = a.budget_s or default_total
  scale = a.budget_s / default_total
  a.budgets = {k: v * scale for k, v in table.items()}
  return a


# ----------------------------------------------------------------------------- set-up and main


#: --smoke compiles some twenty programs; without LLVM's optimisations XLA compiles them about
#: twice as fast (and runs them slower: smoke timings mean nothing anyway).
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def setup(args, suite) -> dict:
  timing.configure_process(0, "PASSIVE")
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")  # room for PyTorch beside XLA
  if args.smoke and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + SMOKE_XLA_FLAGS).strip()
  import jax
  import numpy as np
  env = suite.res["env"]
  ctx = {"no_compile": args.no_compile, "tf32": args.tf32, "alone": {}}
  environment.tqdm_or_stand_in(env)
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
      import torch  # pylint: disable=redefined-outer-name,import-outside-toplevel
      environment.configure_torch(torch, len(os.sched_getaffinity(0)))
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
  import flax
  import optax
  env.update(jax=jax.__version__, packages=environment.package_versions(),
             flax=flax.__version__, optax=optax.__version__, numpy=np.__version__,
             torch=None if torch is None else torch.__version__, backend=backend,
             device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
             torch_device=device, python=platform.python_version(), cpu=environment.cpu_name(),
             cpus=len(os.sched_getaffinity(0)), hostname=platform.node(),
             matmul_precision=("tensorfloat32" if args.tf32 else "float32")
             + ("" if backend != "cpu" else " (CPU)"),
             compile_cache=cache or None,
             XLA_PYTHON_CLIENT_MEM_FRACTION=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
             XLA_FLAGS=os.environ.get("XLA_FLAGS"),
             OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY"))
  # data: the staged files through dgmjax.data's numpy backend (no tensorflow)
  data_dir = cases.find_data_dir(args.data_dir, ROOT)
  t = time.time()
  try:
    train, test_binary, source = cases.load_data(data_dir)
  except OSError:  # an unwritable array cache: keep it in a temporary folder instead
    os.environ["DGMJAX_TFDS_DIR"] = os.path.join(tempfile.gettempdir(), "dgmjax_suite_cache")
    train, test_binary, source = cases.load_data(data_dir)
  env["data"], env["data_load_s"] = source, time.time() - t
  if not data_dir:
    env["data_note"] = ("no staged MNIST found (--data_dir, DGMJAX_DATA_DIR, shared/data): "
                        "random grey levels; timings hold, the NLLs mean nothing")
  ctx.update(train=train, test_binary=test_binary, data_source=source)
  ctx["machine"] = timing.Machine(jax, min(2048, sizes.matmul_n))
  ctx["machine"].measure(sizes.rate_seconds)
  return ctx


def section_e(ctx, out, clock, suite):
  """The summary: one line of the headline ratios (:func:`benchmarks.report.summary_line`)."""
  del ctx, clock
  out["line"] = report.summary_line(suite.res)
  print(out["line"], flush=True)


def main(argv=None) -> int:
  args = parse_args(argv)
  suite = timebox.Suite(args)
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
  fns = {"a": environment.section_a, "b": device_table.section_b, "c": protocol.section_c,
         "d": protocol.section_d, "e": section_e}
  for name in args.sections:
    suite.run_section(name, fns[name], ctx)
  env = suite.res["env"]
  env["tensorflow_imported"] = any(m == "tensorflow" or m.startswith(("tensorflow.",
                                                                       "tensorflow_datasets"))
                                   for m in sys.modules)
  env["torch_imported"] = "torch" in sys.modules
  env["ml_collections_imported"] = "ml_collections" in sys.modules
  suite.res["suite"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  suite.res["summary"] = report.summary_line(suite.res)
  suite.write()
  print(f"\nwrote {suite.json_path} and {suite.md_path} ({suite.elapsed():.0f} s)\n"
        f"{suite.res['summary']}", flush=True)
  bad = [k for k, v in suite.res["sections"].items() if v["status"] not in ("ok", "partial")]
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
