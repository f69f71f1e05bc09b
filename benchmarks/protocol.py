"""Sections c and d of the device suite: Burda's protocol at the speed of one dispatch.

c. **Many steps per dispatch**: each Table 1 row's training step at B=20, dispatched once per step
   from Python and fused ``--scan_steps`` at a time under ``lax.scan`` (data resident on the
   device, Burda's fixed order), in steps per second; from it the projected wall time of Burda's
   full protocol (3280 epochs, ``training.burda_num_steps``) per row.
d. **The Table 1 rows together**: the rows of :data:`benchmarks.cases.TABLE1_ROWS` (VAE / IWAE at
   K = 1, 5, 50; at K = 1 the two are one run) of both models in one program
   (``parallel.make_groups_train_step``, fused under ``lax.scan``), trained with Burda's schedule
   compressed to as many epochs as the remaining time allows, then a k=5000 test NLL per row; the
   joint step time against the rows alone (from c) and the projected full protocol for all rows.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import traceback

from benchmarks import cases, timing


def device_train(ctx):
  """The training images on the device (once): the fused loops read their minibatches there."""
  if "dtrain" not in ctx:
    import jax
    ctx["dtrain"] = jax.device_put(ctx["train"])
  return ctx["dtrain"]


def measure_row(ctx, name, objective, k, clock, *, unroll=1, dispatch=True):
  """Steps per second of one row's B=20 training step, per dispatch and fused."""
  import jax
  import numpy as np
  from dgmjax import losses, training
  sz = ctx["sizes"]
  B, S = cases.PROTOCOL_BATCH, ctx["scan_steps"]
  train = ctx["train"]
  spe = train.shape[0] // B
  model, params = cases.cached_model(ctx, name)
  opt = training.make_optimizer("adam", training.burda_schedule(spe, 8))
  step = training.make_train_step(
      losses.make_loss(model, cases.BOUND.get(objective, objective), k), opt, seed=0,
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
    calls, dt = timing.timed(one, sz.step_seconds)
    rec["dispatch_steps_per_s"] = 20 * calls / dt
    del st
  fused = timing.fused_steps(step, S, B, spe, unroll)
  dtrain = device_train(ctx)
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
  calls, dt = timing.timed(go, sz.step_seconds)
  rec.update(steps_per_dispatch=S, unroll=unroll, fused_steps_per_s=S * calls / dt,
             fused_dispatches_timed=calls,
             final_loss=float(np.mean(np.asarray(box["l"]))) if "l" in box else None)
  if dispatch:
    rec["fused_speedup"] = rec["fused_steps_per_s"] / rec["dispatch_steps_per_s"]
  best = max(rec.get("dispatch_steps_per_s", 0.0), rec["fused_steps_per_s"])
  steps = cases.protocol_steps()
  rec["protocol_steps"] = steps
  rec["protocol_hours"] = steps / best / 3600
  if dispatch:
    rec["protocol_hours_dispatch"] = steps / rec["dispatch_steps_per_s"] / 3600
  del box
  return rec


def section_c(ctx, out, clock, suite):
  sz = ctx["sizes"]
  out["B"], out["steps_per_dispatch"] = cases.PROTOCOL_BATCH, ctx["scan_steps"]
  out["protocol"] = {"epochs": 3280,
                     "steps_per_epoch": cases.PROTOCOL_TRAIN_IMAGES // cases.PROTOCOL_BATCH,
                     "steps": cases.protocol_steps(),
                     "note": "59,600 training images (experiments.iwae's split) / B=20"}
  out["rows"] = []
  # the distinct costs first (VAE at K=1, IWAE at K>1), then the VAE rows at K>1
  rows = [(m, o, k) for m in sz.c_models for o, k in cases.TABLE1_ROWS if k in sz.c_ks]
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
  from dgmjax import evaluation, losses, parallel, training
  sz = ctx["sizes"]
  B, S = cases.PROTOCOL_BATCH, ctx["scan_steps"]
  train = ctx["train"]
  spe = train.shape[0] // B
  out["rows_source"] = "benchmarks.cases.TABLE1_ROWS"
  specs = []  # (model name, K, objective names)
  for name in sz.d_models:
    by_k = {}
    for obj, k in cases.TABLE1_ROWS:
      if k in sz.d_ks:
        by_k.setdefault(k, []).append(obj)
    specs += [(name, k, tuple(dict.fromkeys(objs))) for k, objs in sorted(by_k.items())]
  models = {n: cases.cached_model(ctx, n) for n in sz.d_models}
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
      bounds = [cases.BOUND.get(o, o) for o in objs]
      groups.append(parallel.RunGroup(parallel.bounds_loss(model, bounds, k), optimizer,
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
  calls, dt = timing.timed(ten, sz.step_seconds)
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

  dtrain = device_train(ctx)
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
    steps = cases.protocol_steps()
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
