"""The cases of ``bench.py``: dgmjax beside the PyTorch peer (eager and ``torch.compile``), timed
in the same process on the CPU.

* :func:`train_case`: one optimiser step (dynamic binarization, fresh noise, loss, gradient, Adam
  with eps=1e-4) of dgmjax (``training.make_train_step``), PyTorch eager and ``torch.compile``;
  warm-up first, compile time apart, then interleaved repetitions with the machine's matmul rate
  sampled next to each (:mod:`benchmarks.timing`); peak memory after timing.
* :func:`eval_case`: the k=5000 evaluation of a subset of the test images, every chunk size and
  side in the same rounds.
* :func:`precision_case`: the NLL shift of TF32 and bfloat16 matmuls versus float32.
"""

from __future__ import annotations

import math
import statistics

from benchmarks import cases, timing


def train_case(name, batch, num_samples, args, ctx, machine) -> dict:
  import jax
  import torch
  from benchmarks import torch_peer
  from dgmjax import losses, training

  objective = cases.objective_of(num_samples)
  model, params, tmodel = cases.make_models(name, data_mean=ctx["train"][:2000].mean(0))
  idx = cases.minibatch_indices(ctx["train"].shape[0], batch, num_samples)
  jbatches = [jax.device_put(ctx["train"][i]) for i in idx]
  tbatches = [torch.from_numpy(ctx["train"][i].reshape(batch, -1).copy()).to(ctx["device"])
              for i in idx]
  sync = ctx["sync"]

  opt = training.make_optimizer("adam", 1e-3)
  loss_fn = losses.make_loss(model, cases.BOUND.get(objective, objective), num_samples)
  microbatch = training.resolve_microbatch(args.microbatch, batch, num_samples,
                                           name="--microbatch", batch_name="B") or batch

  make_jax = lambda mb: timing.jax_train_runner(loss_fn, opt, params, jbatches, mb)

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

  sides = [timing.Side("dgmjax", run_jax), timing.Side("torch_eager", make_torch(False))]
  if not args.no_compile:
    sides.append(timing.Side("torch_compile", make_torch(True)))
  if microbatch < batch:  # the same step without microbatches, timed beside it
    sides.append(timing.Side("dgmjax_whole_batch", make_jax(batch)[2]))
  for s in sides:
    timing.warm_up(s, args.rep_seconds)
  rates = timing.interleave(sides, args.reps, machine)
  for s in sides:  # memory after timing: a few more steps per side
    if not s.error:
      s.peak_rss = (timing.peak_rss_delta(lambda s=s: s.run(2)) if ctx["device"] == "cpu"
                    else None)
  try:
    mem = step.lower(holder["state"], jbatches[0]).compile().memory_analysis()
    sides[0].xla_bytes = float(mem.temp_size_in_bytes + mem.output_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    pass
  if ctx["device"] == "cuda":
    torch.cuda.reset_peak_memory_stats()
    sides[1].run(3)
    sides[1].peak_rss = float(torch.cuda.max_memory_allocated())
  flops = cases.matmul_flops(model, batch, num_samples, train=True)
  d = sides[0]
  gflops = flops / statistics.median(d.times) / 1e9 if d.times else None
  whole = [s for s in sides if s.name == "dgmjax_whole_batch"]
  res = {"model": name, "objective": objective, "B": batch, "K": num_samples,
         "microbatch": microbatch, "matmul_gflop_per_step": flops / 1e9,
         **{s.name: s.result(1e3) for s in sides},  # milliseconds per step
         "ratio_eager": timing.ratios(sides[1], d),
         "ratio_compile": (timing.ratios(sides[2], d) if len(sides) > 2
                           and sides[2].name == "torch_compile" else None),
         "microbatch_speedup": timing.ratios(whole[0], d) if whole else None,
         "dgmjax_gflops": gflops,
         "machine_gflops_adjacent": statistics.median(d.rates) / 1e9 if d.rates else None}
  del rates
  return res


def eval_case(name, args, ctx, machine, params_override=None) -> list[dict]:
  import jax
  import numpy as np
  import torch
  from benchmarks import torch_peer
  from dgmjax import evaluation, numerics

  model, params, tmodel = cases.make_models(name, data_mean=ctx["train"][:2000].mean(0))
  if params_override is not None:
    params = params_override
    torch_peer.load_dgmjax_params(tmodel, params)
  tmodel = tmodel.to(ctx["device"])
  x = ctx["test_binary"][:args.eval_images]
  xt = torch.from_numpy(x.reshape(x.shape[0], -1).copy()).to(ctx["device"])
  K, B = args.eval_samples, min(args.eval_batch, x.shape[0])
  flops = cases.matmul_flops(model, 1, K, train=False) * x.shape[0]
  chunks = [c.strip() for c in args.eval_chunks.split(",") if c.strip()]
  auto_chunk = evaluation.auto_sample_chunk(model, params, x[:B], num_samples=K)
  budget = numerics.memory_budget()
  chunk_cases = []
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

    sides = [timing.Side("dgmjax", run_jax), timing.Side("torch_eager", make_torch(False))]
    if not args.no_compile:
      sides.append(timing.Side("torch_compile", make_torch(True, tag="c")))
    for s in sides:
      timing.warm_up(s, 0.0, n_first=1)
      s.steps_per_rep = 1
    chunk_cases.append((c, chunk, box, sides))
  # Every chunk size and side in the same rounds (rotating order), so that times of different
  # chunk sizes, not only the ratios, are comparable on a machine whose load changes.
  timing.interleave([s for case in chunk_cases for s in case[3]], args.eval_reps, machine)
  rows = []
  n_img = x.shape[0]
  for c, chunk, box, sides in chunk_cases:
    for s in sides:
      if not s.error and ctx["device"] == "cpu":
        s.peak_rss = timing.peak_rss_delta(lambda s=s: s.run(1))
    d = sides[0]
    gflops = flops / statistics.median(d.times) / 1e9
    rows.append({
        "model": name, "K": K, "B": B, "chunk": chunk, "chunk_setting": c,
        "rows_per_matmul": chunk * B, "images": n_img,
        **{s.name: s.result(1.0 / n_img) for s in sides},  # seconds per image
        "ratio_eager": timing.ratios(sides[1], d),
        "ratio_compile": timing.ratios(sides[2], d) if len(sides) > 2 else None,
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
  from dgmjax import evaluation, numerics

  model, params, _ = cases.make_models(name, data_mean=ctx["train"][:2000].mean(0))
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
