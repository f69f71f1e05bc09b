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

This file holds the flags and the order of the run; the work is in the modules of ``benchmarks``:
``cases`` (models, data, FLOPs), ``agreement``, ``timing``, ``peer_cases`` (the three sections
above) and ``report``.
"""


from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import agreement, cases, environment, peer_cases, report, timing  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--json", default="", help="write the results here")
  p.add_argument("--quick", action="store_true",
                 help="fewer repetitions, shorter ones, and a smaller evaluation subset")
  p.add_argument("--cases", default="train,eval,precision",
                 help="comma list of sections: train, eval, precision")
  p.add_argument("--models", default=",".join(cases.MODELS), help="burda1,burda2")
  p.add_argument("--train_cases", default=",".join(f"{b}x{k}" for b, k in cases.TRAIN_CASES),
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
  if mb not in ("auto", "none"):  # checked before any work (resolve_microbatch again later)
    batches = [int(c.split("x")[0]) for c in a.train_cases.split(",") if c.strip()]
    if not mb.isdigit() or int(mb) < 1 or any(b % int(mb) for b in batches):
      p.error(f"--microbatch must be auto, none or a positive divisor of every B in "
              f"--train_cases {batches}, got {a.microbatch!r}")
  if a.quick:
    a.reps, a.eval_reps, a.rep_seconds = min(a.reps, 3), min(a.eval_reps, 2), 0.3
    a.eval_images = min(a.eval_images, 100)
  return a


def main(argv=None) -> int:
  args = parse_args(argv)
  if args.report:
    with open(args.report) as f:
      res = json.load(f)
    report.finalize(res)
    report.print_report(res)
    print("\nmust hold:", json.dumps(res["must_hold"], indent=1))
    return 0
  threads = timing.configure_process(args.threads, args.omp_wait_policy)
  import jax
  import torch

  environment.configure_torch(torch, threads)
  device = "cuda" if (jax.default_backend() == "gpu" and torch.cuda.is_available()) else "cpu"
  if device == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if args.tf32 else "highest")
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  sections = {s.strip() for s in args.cases.split(",") if s.strip()}
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  train_cases = [tuple(int(v) for v in c.split("x")) for c in args.train_cases.split(",")
                 if c.strip()]
  env = {"jax": jax.__version__, "torch": torch.__version__, "backend": jax.default_backend(),
         "device": str(jax.devices()[0]), "torch_device": device, "cpu": environment.cpu_name(),
         "cpus_allowed": len(os.sched_getaffinity(0)), "threads": threads,
         "torch_threads": torch.get_num_threads(),
         "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
         "loadavg_start": os.getloadavg(), "python": platform.python_version(),
         "argv": sys.argv[1:] if argv is None else list(argv)}
  train_x, test_binary, source = cases.load_data(args.data_dir)
  env["data"] = source
  ctx = {"train": train_x, "test_binary": test_binary, "device": device, "sync": sync}
  res = {"env": env}

  machine = timing.Machine(jax)
  for _ in range(3):
    machine.measure(0.3)
  torch_rate = timing.torch_matmul_rate(torch, device)

  print("agreement check ...", flush=True)
  res["agreement"] = []
  try:
    for name in sorted(set(models) | {m.strip() for m in args.eval_models.split(",") if m}):
      res["agreement"].append(agreement.check_agreement(name, data=train_x[:64]))
  except agreement.AgreementError as e:
    print(f"AGREEMENT FAILED: {e}", file=sys.stderr)
    if args.json:
      with open(args.json, "w") as f:
        json.dump({**res, "error": str(e)}, f, indent=2)
    return 2

  override = None
  if args.params_from:
    override, step = cases.restore_params(args.params_from)
    env["eval_params"] = f"{args.params_from} (step {step})"
  if "train" in sections:
    res["train"] = []
    for name in models:
      for b, k in train_cases:
        print(f"train {name} B={b} K={k} ...", flush=True)
        res["train"].append(peer_cases.train_case(name, b, k, args, ctx, machine))
  if "eval" in sections:
    res["eval"] = []
    for name in [m.strip() for m in args.eval_models.split(",") if m.strip()]:
      print(f"eval {name} K={args.eval_samples} on {args.eval_images} images ...", flush=True)
      res["eval"] += peer_cases.eval_case(name, args, ctx, machine,
                                          override if name == "burda1" else None)
  if "precision" in sections:
    res["precision"] = []
    for name in [m.strip() for m in args.eval_models.split(",") if m.strip()]:
      print(f"precision {name} ...", flush=True)
      res["precision"].append(peer_cases.precision_case(
          name, args, ctx, override if name == "burda1" else None))
  for _ in range(2):
    machine.measure(0.3)
  res["machine"] = {"jax_gflops_samples": [r / 1e9 for r in machine.samples],
                    "torch_gflops": torch_rate / 1e9}
  env["loadavg_end"] = os.getloadavg()
  report.finalize(res)
  report.print_report(res)
  print("\nmust hold:", json.dumps(res["must_hold"], indent=1))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(res, f, indent=2)
    print(f"\nwrote {args.json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
