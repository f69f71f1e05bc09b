"""Burda et al.'s Table 1 rows trained together, in one jitted program (``dgmjax.parallel``).

    DGMJAX_DATA_DIR=../shared/data python -m experiments.iwae.vmap_table \\
        --workdir=runs/vmap-table-l1 --model=burda1 --epochs=1 [--seeds=0,1] [--eval_images=500]

The rows are VAE and IWAE at ``K`` in ``(1, 5, 50)`` (at ``K = 1`` the two are the same model, one
row). Runs with the same ``K`` share a vmapped group, the objective chosen per run by an index
(``dgmjax.parallel.bounds_loss``); the three groups are traced into one XLA program
(``dgmjax.parallel.make_groups_train_step``), so one dispatch advances every row by one step.
Each row is exactly the run ``experiments.iwae`` would train alone with the same seed, optimiser
and schedule (without checkpoints). Afterwards each row is evaluated as in ``experiments.iwae``:
test ELBO, L_5, L_50, the k=5000 NLL (on ``--eval_images`` test images) and active units.

Writes ``results.json``, ``table.md`` and ``training_bounds.png`` (each row's training bound, averaged
over 1/50 of the run between points) into ``--workdir``. With ``--compare_steps N`` every row is
also timed alone for ``N`` steps, and the result's ``timing`` holds both step times.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dgmjax import data, diagnostics, evaluation, losses, parallel, training
from dgmjax.models import vae
from experiments.common import figures as figures_lib

ROWS = (("vae", 1), ("vae", 5), ("iwae", 5), ("vae", 50), ("iwae", 50))


def train_table(*, dataset: str = "mnist", model_name: str = "burda1", epochs: float = 1.0,
                seeds=(0,), batch_size: int = 20, learning_rate: float = 1e-3,
                rows=ROWS, max_train_examples: int = 0, eval_images: int = 500,
                eval_k: int = 5000, bound_ks=(5, 50), latent_dims=None, hidden_dims=None,
                data_dir: str | None = None, compare_steps: int = 0, log=print) -> dict:
  """Trains every ``(objective, K)`` row for every seed together; returns their results.

  With ``compare_steps > 0`` every row is also timed alone (``training.make_train_step`` with
  its own ``make_loss``, after warm-up) for that many steps, and the sum of the rows' step times
  is reported beside the step time of all rows together (``timing`` in the result).
  """
  train = np.asarray(data.load(dataset, "train", data_dir=data_dir)["image"], np.float32)
  test = np.asarray(data.load(dataset, "test", data_dir=data_dir)["image"], np.float32)
  if max_train_examples:
    train = train[:max_train_examples]
  model = vae.make(model_name, train.shape[1:], latent_dims=latent_dims, hidden_dims=hidden_dims)
  steps_per_epoch = train.shape[0] // batch_size
  num_passes = 8
  schedule = training.burda_schedule(steps_per_epoch, num_passes, num_epochs=epochs,
                                     base_learning_rate=learning_rate)
  num_steps = training.burda_num_steps(steps_per_epoch, num_passes, num_epochs=epochs)
  opt = training.make_optimizer("adam", schedule)
  init = jax.jit(lambda k: model.init(k, data_mean=train.mean(0)))

  by_k = {}
  for objective, k in rows:
    by_k.setdefault(k, []).append(objective)
  groups, states, seeds_g, index_g, members = [], [], [], [], []
  for k, names in sorted(by_k.items()):
    names = tuple(dict.fromkeys(names))
    bounds = ["elbo" if n == "vae" else n for n in names]   # the row label "vae" is the ELBO
    groups.append(parallel.RunGroup(parallel.bounds_loss(model, bounds, k), opt,
                                    with_index=True, dynamic_binarization=True))
    runs = [(n, s) for n in names for s in seeds]
    members.append([(n, k, s) for n, s in runs])
    states.append(parallel.init_runs([init(jax.random.key(s)) for _, s in runs], opt))
    seeds_g.append(jnp.asarray([s for _, s in runs], jnp.int32))
    index_g.append(jnp.asarray([names.index(n) for n, _ in runs], jnp.int32))
  step = parallel.make_groups_train_step(groups)
  states, seeds_g, index_g = tuple(states), tuple(seeds_g), tuple(index_g)
  log(f"{sum(len(m) for m in members)} runs in {len(groups)} groups, {num_steps} steps each")

  t0, history, first_step_seconds = time.time(), [], None
  window, window_steps, log_every = None, 0, max(1, num_steps // 50)
  for s in range(num_steps):
    xs = tuple(parallel.runs_batches(train, [int(v) for v in sd], s, batch_size, shuffle=False)
               for sd in seeds_g)
    states, metrics = step(states, xs, seeds_g, index_g)
    if s == 0:
      jax.block_until_ready(states)
      first_step_seconds = time.time() - t0
    bounds = [m["bound"] for m in metrics]  # summed on the device until the next log point
    window = bounds if window is None else [a + b for a, b in zip(window, bounds)]
    window_steps += 1
    if (s + 1) % log_every == 0 or s + 1 == num_steps:
      m = jax.device_get(window)
      history.append({"step": s + 1, **{f"{n}-k{k}-s{sd}": float(m[g][i]) / window_steps
                                        for g, mem in enumerate(members)
                                        for i, (n, k, sd) in enumerate(mem)}})
      window, window_steps = None, 0
      if len(history) % 5 == 0 or s + 1 == num_steps:
        log(f"step {s + 1}/{num_steps} ({time.time() - t0:.0f} s)")
  jax.block_until_ready(states)
  train_seconds = time.time() - t0
  timing = {"train_seconds": train_seconds, "first_step_seconds": first_step_seconds,
            "together_step_ms": (1e3 * (train_seconds - first_step_seconds) / (num_steps - 1)
                                 if num_steps > 1 else None)}
  if compare_steps:
    alone = {}
    for mem in members:
      for name, k, seed in mem:
        one = training.make_train_step(losses.make_loss(model, name, k), opt, seed=seed,
                                       dynamic_binarization=True)
        st = training.init_state(init(jax.random.key(seed)), opt)
        batches = [train[i * batch_size:(i + 1) * batch_size] for i in range(compare_steps + 2)]
        for x in batches[:2]:  # compile and warm up
          st, _ = one(st, x)
        jax.block_until_ready(st)
        t = time.time()
        for x in batches[2:]:
          st, _ = one(st, x)
        jax.block_until_ready(st)
        alone[f"{name}-k{k}-s{seed}"] = 1e3 * (time.time() - t) / compare_steps
    timing.update(alone_step_ms=alone, alone_sum_step_ms=sum(alone.values()),
                  compare_steps=compare_steps)
    if timing["together_step_ms"]:
      timing["speedup_together"] = timing["alone_sum_step_ms"] / timing["together_step_ms"]
    log(f"one step of all rows together {timing['together_step_ms']:.1f} ms; the rows alone "
        f"{timing['alone_sum_step_ms']:.1f} ms in sum")

  test_x = np.asarray(data.binarize(jax.random.fold_in(jax.random.key(0), 0x5EED),
                                    jnp.asarray(test)))[:eval_images]
  results = []
  for g, mem in enumerate(members):
    for i, (name, k, seed) in enumerate(mem):
      params = jax.tree.map(lambda a, i=i: a[i], states[g].params)
      key = jax.random.key(1000 + seed)
      k_b, k_ll, k_au = jax.random.split(key, 3)
      b = evaluation.bounds(model, params, test_x, k_b, ks=(1,) + tuple(bound_ks),
                            batch_size=min(100, len(test_x)))
      ll = evaluation.log_likelihood(model, params, test_x, k_ll,
                                     num_samples=eval_k, batch_size=min(100, len(test_x)))
      au = diagnostics.active_units(model, params, test_x, k_au)
      results.append({"objective": name, "k": k, "seed": seed, "test_nll": -float(ll.mean()),
                      "test_nll_se": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1
                      else None, **{kk: float(v) for kk, v in b.items()},
                      "active_units": au["active"]})
  return {"dataset": dataset, "model": model_name, "epochs": epochs, "steps": num_steps,
          "batch_size": batch_size, "seeds": list(seeds), "eval_images": int(len(test_x)),
          "eval_k": eval_k, "train_seconds": train_seconds, "timing": timing, "rows": results,
          "history": history, "backend": jax.default_backend(),
          "device": str(jax.devices()[0].device_kind)}


def format_table(res: dict) -> str:
  lines = [f"| model | k | seed | test NLL (k={res['eval_k']}) | L_1 (ELBO) | "
           + " | ".join(f"L_{k}" for k in (5, 50)) + " | active units |",
           "|---|---|---|---|---|---|---|---|"]
  for r in res["rows"]:
    se = f" ± {r['test_nll_se']:.2f}" if r.get("test_nll_se") else ""
    lines.append(f"| {r['objective'].upper()} | {r['k']} | {r['seed']} | {r['test_nll']:.2f}{se} | "
                 f"{r['elbo']:.2f} | {r.get('iwae_5', float('nan')):.2f} | "
                 f"{r.get('iwae_50', float('nan')):.2f} | {sum(r['active_units'])} |")
  return "\n".join(lines)


def plot_history(res: dict, path: str) -> None:
  """The training bound of every row against the step (one figure, one line a row)."""
  plt = figures_lib.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  steps = [h["step"] for h in res["history"]]
  for name in (res["history"][0] if res["history"] else {}):
    if name != "step":
      ax.plot(steps, [h[name] for h in res["history"]], marker="o", ms=3, label=name)
  t = res["timing"]
  ax.set(xlabel="step", ylabel="training bound (nats; mean since the last point)",
         title=f"{res['model']}: {len(res['rows'])} rows in one program, "
               f"{t['train_seconds']:.0f} s ({res['backend']})")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--dataset", default="mnist")
  p.add_argument("--model", default="burda1", help="burda1 | burda2")
  p.add_argument("--epochs", type=float, default=1.0, help="Burda's schedule scaled to this")
  p.add_argument("--seeds", default="0", help="comma list")
  p.add_argument("--batch_size", type=int, default=20)
  p.add_argument("--max_train_examples", type=int, default=0)
  p.add_argument("--eval_images", type=int, default=500)
  p.add_argument("--eval_k", type=int, default=5000)
  p.add_argument("--data_dir", default="")
  p.add_argument("--compare_steps", type=int, default=0,
                 help="also time each row alone for this many steps (0: don't)")
  a = p.parse_args(argv)
  res = train_table(dataset=a.dataset, model_name=a.model, epochs=a.epochs,
                    seeds=tuple(int(s) for s in a.seeds.split(",")), batch_size=a.batch_size,
                    max_train_examples=a.max_train_examples, eval_images=a.eval_images,
                    eval_k=a.eval_k, data_dir=a.data_dir or os.environ.get("DGMJAX_DATA_DIR"),
                    compare_steps=a.compare_steps)
  os.makedirs(a.workdir, exist_ok=True)
  with open(os.path.join(a.workdir, "results.json"), "w") as f:
    json.dump(res, f, indent=2)
  table = format_table(res)
  with open(os.path.join(a.workdir, "table.md"), "w") as f:
    f.write(table + "\n")
  plot_history(res, os.path.join(a.workdir, "training_bounds.png"))
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
