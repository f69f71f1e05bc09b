"""Section b of the device suite: the training-step table of ``bench.py`` on the device, and the
k=5000 evaluation of the test images.

The agreement check first (:func:`benchmarks.agreement.check_agreement`), then one optimiser step
of dgmjax beside PyTorch eager, ``torch.compile`` and ``torch.compile(mode="reduce-overhead")``
(CUDA graphs) for Burda's 1- and 2-layer models at ``(B, K)`` in the suite's training cases. First
every case with dgmjax and eager, then the compiled sides case by case while time remains (all
sides re-timed together). Then the k=5000 evaluation of the test images (10,000) in seconds, with
the fraction of section a's matmul rate, in float32, TF32 and bfloat16 (dgmjax) beside PyTorch
eager (and compiled).
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback

from benchmarks import agreement, cases, timing


def _train_step_class(ctx):
  """``torch_peer.TrainStep`` with ``mode=`` of ``torch.compile`` (``'default'``, or
  ``'reduce-overhead'``: CUDA graphs, which need a step marker before each call)."""
  if "train_step_class" in ctx:
    return ctx["train_step_class"]
  torch = ctx["torch"]

  class DeviceTrainStep(torch_peer().TrainStep):
    def __init__(self, model, objective, num_samples, lr=1e-3, *, mode=None):
      super().__init__(model, objective, num_samples, lr, compile=False)
      self.mode = mode
      if mode is not None:
        kw = {} if mode == "default" else {"mode": mode}
        self._loss = torch.compile(self._loss_impl, dynamic=False, **kw)
        self._opt_step = torch.compile(self.opt.step, dynamic=False, **kw)

    def __call__(self, images):
      if self.mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
      return super().__call__(images)

  ctx["train_step_class"] = DeviceTrainStep
  return DeviceTrainStep


def torch_peer():
  """:mod:`benchmarks.torch_peer`, imported when a PyTorch side is built (it imports torch)."""
  from benchmarks import torch_peer as peer  # pylint: disable=import-outside-toplevel
  return peer


def _torch_model(ctx, model, params):
  """The peer with dgmjax's weights, on the PyTorch device (its noise is drawn there)."""
  peer = torch_peer()
  tm = peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims)
  peer.load_dgmjax_params(tm, params)
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


def _train_sides(ctx, name, batch, num_samples):
  """The run functions of one training case: dgmjax and (with torch) eager, built once."""
  import jax
  from dgmjax import losses, training
  objective = cases.objective_of(num_samples)
  train = ctx["train"]
  model, params = cases.cached_model(ctx, name)
  idx = cases.minibatch_indices(train.shape[0], batch, num_samples)
  jbatches = [jax.device_put(train[i]) for i in idx]
  opt = training.make_optimizer("adam", 1e-3)
  loss_fn = losses.make_loss(model, cases.BOUND.get(objective, objective), num_samples)
  microbatch = training.resolve_microbatch("auto", batch, num_samples, batch_name="B") or batch
  _, _, run_jax = timing.jax_train_runner(loss_fn, opt, params, jbatches, microbatch)

  case = {"model": model, "params": params, "objective": objective, "microbatch": microbatch,
          "runs": {"dgmjax": run_jax}}
  if ctx["torch"] is not None:
    torch = ctx["torch"]
    case["tbatches"] = [torch.from_numpy(train[i].reshape(batch, -1).copy()).to(ctx["device"])
                        for i in idx]
    case["runs"]["torch_eager"] = _torch_run(ctx, case, num_samples, None)
  return case


def _torch_run(ctx, case, num_samples, mode):
  DeviceTrainStep = _train_step_class(ctx)
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
  sides = [timing.Side(k, r) for k, r in runs.items()]
  for s in sides:
    timing.warm_up(s, rep_seconds)
  timing.interleave(sides, reps)
  d = sides[0]
  for s in sides:
    row[s.name] = s.result(1e3)  # milliseconds per step
    if s.first_s is not None:
      row[s.name]["first_calls_s"] = s.first_s
  for s in sides[1:]:
    row[RATIO_NAMES[s.name]] = timing.ratios(s, d)
  if d.times:
    g = row["matmul_gflop_per_step"] / statistics.median(d.times)
    rate = _rate(ctx, _train_precision(ctx))
    row["dgmjax_gflops"] = g
    row["flop_fraction"] = g * 1e9 / rate if rate else None
  return sides


def section_b(ctx, out, clock, suite):
  sz, torch = ctx["sizes"], ctx["torch"]
  # 1. agreement first
  out["agreement"] = []
  if torch is None:
    out["agreement"].append(clock.skip("agreement check", "no torch"))
  else:
    for name in sz.agreement_models:
      try:
        rec = agreement.check_agreement(name, data=ctx["train"][:64], raise_on_failure=False)
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
  timed_cases, est = {}, 0.0
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
               "matmul_gflop_per_step": cases.matmul_flops(case["model"], b, k, train=True) / 1e9}
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
      timed_cases[(name, b, k)] = (case, row)
      est = max(est, time.time() - t)
      suite.write()
  # 3. the k=5000 evaluation of the test images, in its share of the time (before the compiled
  # training sides, whose compile times are the least predictable)
  modes = [] if (torch is None or ctx["no_compile"]) else list(sz.compile_modes)
  eval_clock = clock.sub(sz.eval_reserve_s if modes and timed_cases else clock.left())
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
  keys = list(timed_cases)
  order = [c for _, c in sorted(enumerate(keys), key=lambda ic: (ic[1][1:] != (20, 50), ic[0]))]
  compile_cost = {m: sz.compile_guess_s for m in modes}
  for key in order:
    case, row = timed_cases[key]
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
  for key, (case, row) in timed_cases.items():
    for mode in sz.compile_modes:
      if row.get(SIDE_NAMES[mode], {}).get("skipped") == "pending":
        row[SIDE_NAMES[mode]] = {"skipped": "no torch" if torch is None else
                                 "--no_compile" if ctx["no_compile"] else "time"}
  if torch is not None and not sz.compile_modes:
    out["compile_note"] = "torch.compile not run (--smoke without --smoke_compile)"
  timed_cases.clear()


def eval_model(ctx, name, out, clock, suite):
  """``L_K`` of the test images for one model: dgmjax in each precision, PyTorch eager (and
  compiled) at the same chunk and batch, timed in the same rounds."""
  import jax
  import numpy as np
  from dgmjax import evaluation
  sz, torch = ctx["sizes"], ctx["torch"]
  model, params = cases.cached_model(ctx, name)
  x = ctx["test_binary"][:sz.eval_images]
  n, K = x.shape[0], sz.eval_k
  B = min(sz.eval_batch, n)
  warm_n = max(B, min(sz.eval_warm_images, n) // B * B)
  chunk = evaluation.auto_sample_chunk(model, params, x[:B], num_samples=K)
  per_image_flops = cases.matmul_flops(model, 1, K, train=False)
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
    peer = torch_peer()
    tm = _torch_model(ctx, model, params)
    xt = torch.from_numpy(x.reshape(n, -1).copy()).to(ctx["device"])
    modes = [False]
    if ctx["device"] == "cuda" and not ctx["no_compile"] and sz.compile_modes:
      modes.append(True)
    for comp in modes:
      def trun(m, comp=comp):
        box[f"torch{comp}"] = peer.log_likelihood(tm, xt[:m], num_samples=K,
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
      out["eval"].append({**base, "side": side_name, "error": timing.error_text(e)})
      continue
    live[side_name] = run
  # every image if one pass of every side fits the clock, else the most images that do
  per_image = sum(steady.values()) / warm_n
  fit = (clock.left() - 2.0) / max(per_image, 1e-9)
  m = n if fit >= n else max(warm_n, int(fit) // B * B)
  reps = max(1, min(sz.eval_reps, int(fit // max(m, 1))))
  sides = []
  for side_name, run in live.items():
    s = timing.Side(side_name, lambda k, run=run: [run(m) for _ in range(k)])
    s.steps_per_rep = 1
    sides.append(s)
  if sides:
    timing.interleave(sides, reps)
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
