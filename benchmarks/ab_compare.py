"""Two commits side by side: the training step and the k=5000 evaluation of Burda's models.

A refactor must not slow the library down. Check out the old commit next to this one
(``git worktree add ../old <commit>``), then

    python benchmarks/ab_compare.py compare ../old .  [rounds]

runs one process per checkout, interleaved (old, new, old, new, ...), each timing the jitted
train step at (B, K) in (20, 1), (20, 5), (20, 50), (100, 50) and a k=5000 evaluation of 40
images, and prints the median of each figure per side and new / old. The values of the
evaluation are printed too: a pure restructure leaves them equal.
"""
import json
import os
import subprocess
import sys
import time


def worker(checkout, out_path, reps=30):
  sys.path.insert(0, checkout)
  os.chdir(checkout)
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import dgmjax
  assert dgmjax.__file__.startswith(checkout), dgmjax.__file__
  if os.path.exists(os.path.join(checkout, "dgmjax", "losses.py")):
    from dgmjax.losses import make_loss
  else:
    from dgmjax.training import make_loss
  from dgmjax import evaluation, training
  from dgmjax.models import vae
  assert vae.__file__.startswith(checkout) and training.__file__.startswith(checkout)
  rng = np.random.default_rng(0)
  x = (rng.random((1000, 28, 28, 1)) < 0.3).astype(np.float32)
  res = {}
  for name in ("burda1", "burda2"):
    model = vae.make(name, (28, 28, 1))
    params = model.init(jax.random.key(0), data_mean=x.mean(0))
    for b, k in ((20, 1), (20, 5), (20, 50), (100, 50)):
      opt = optax.adam(1e-3)
      step = training.make_train_step(make_loss(model, "elbo" if k == 1 else "iwae", k), opt,
                                      seed=0, dynamic_binarization=True)
      st = training.init_state(params, opt)
      batches = [jnp.asarray(x[i * b:(i + 1) * b]) for i in range(4)]
      t0 = time.perf_counter()
      st, _ = step(st, batches[0])
      jax.block_until_ready(st)
      compile_s = time.perf_counter() - t0
      for i in range(3):
        st, _ = step(st, batches[i % 4])
      jax.block_until_ready(st)
      ts = []
      for r in range(reps):
        t0 = time.perf_counter()
        for i in range(5):
          st, _ = step(st, batches[i % 4])
        jax.block_until_ready(st)
        ts.append((time.perf_counter() - t0) / 5 * 1e3)
      res[f"{name} train B={b} K={k} ms"] = float(np.median(ts))
      res[f"{name} train B={b} K={k} compile s"] = compile_s
    imgs = x[:40]
    evaluation.log_likelihood(model, params, imgs, jax.random.key(1), num_samples=5000,
                              batch_size=20)
    ts = []
    for r in range(3):
      t0 = time.perf_counter()
      ll = evaluation.log_likelihood(model, params, imgs, jax.random.key(1), num_samples=5000,
                                     batch_size=20)
      jax.block_until_ready(ll)
      ts.append(time.perf_counter() - t0)
    res[f"{name} eval k=5000 40 images s"] = float(np.median(ts))
    res[f"{name} eval value"] = float(np.mean(np.asarray(ll)))
  json.dump(res, open(out_path, "w"), indent=1)


def compare(old, new, rounds=3):
  outs = {"old": [], "new": []}
  for r in range(rounds):
    for tag, co in (("old", old), ("new", new)):
      path = f"/tmp/ab_{tag}_{r}.json"
      env = dict(os.environ, PYTHONPATH=co)
      subprocess.run([sys.executable, __file__, "worker", co, path], check=True, env=env, cwd=co)
      outs[tag].append(json.load(open(path)))
      print(tag, r, "done", flush=True)
  import numpy as np
  print(f"{'case':40s} {'old':>10s} {'new':>10s} {'new/old':>8s}")
  for key in outs["old"][0]:
    o = float(np.median([d[key] for d in outs["old"]]))
    n = float(np.median([d[key] for d in outs["new"]]))
    print(f"{key:40s} {o:10.4g} {n:10.4g} {n / o if o else float('nan'):8.3f}")


if __name__ == "__main__":
  if sys.argv[1] == "worker":
    worker(sys.argv[2], sys.argv[3])
  else:
    compare(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 3)
