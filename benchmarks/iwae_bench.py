"""Speed of Burda et al.'s 1-layer model: train steps/s and k=5000 evaluation images/s.

python benchmarks/iwae_bench.py [--json out.json] [--steps 200] [--eval_images 20]

Train steps are timed after compilation, with ``block_until_ready`` on the state; evaluation is the
chunked ``L_5000`` estimator of :mod:`dgmjax.evaluation`, timed after a warm-up batch. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from dgmjax import evaluation, training  # noqa: E402
from dgmjax.models import vae  # noqa: E402

#: The row label "vae" (as in the saved results and the PyTorch peer) names the ELBO.
_BOUND = {"vae": "elbo"}


def bench_train(model, params, batch_size: int, k: int, objective: str, steps: int) -> float:
  opt = training.make_optimizer("adam", 1e-3)
  step = training.make_train_step(
      training.make_loss(model, _BOUND.get(objective, objective), k), opt, seed=0,
      dynamic_binarization=True)
  state = training.init_state(params, opt)
  rng = np.random.default_rng(0)
  batches = [rng.uniform(size=(batch_size, 28, 28, 1)).astype(np.float32) for _ in range(8)]
  for i in range(3):  # compile and warm up
    state, _ = step(state, batches[i % 8])
  jax.block_until_ready(state)
  t = time.perf_counter()
  for i in range(steps):
    state, _ = step(state, batches[i % 8])
  jax.block_until_ready(state)
  return steps / (time.perf_counter() - t)


def bench_eval(model, params, num_images: int, batch_size: int, chunk: int) -> float:
  rng = np.random.default_rng(1)
  x = (rng.uniform(size=(num_images, 28, 28, 1)) < 0.2).astype(np.float32)
  kw = dict(num_samples=5000, sample_chunk=chunk, batch_size=batch_size)
  evaluation.log_likelihood(model, params, x[:batch_size], jax.random.key(0), **kw)  # compile
  t = time.perf_counter()
  evaluation.log_likelihood(model, params, x, jax.random.key(1), **kw)
  return num_images / (time.perf_counter() - t)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--steps", type=int, default=200, help="timed train steps per setting")
  p.add_argument("--eval_images", type=int, default=20, help="images in the timed k=5000 eval")
  p.add_argument("--eval_batch", type=int, default=10)
  p.add_argument("--eval_chunk", type=int, default=500)
  p.add_argument("--json", default="", help="also write the results here")
  a = p.parse_args()

  model = vae.burda_one_layer((28, 28, 1))
  params = model.init(jax.random.key(0))
  rows = []
  for b, k, obj in [(20, 50, "iwae"), (100, 50, "iwae"), (20, 1, "vae"), (20, 5, "iwae")]:
    sps = bench_train(model, params, b, k, obj, a.steps)
    rows.append({"what": "train", "objective": obj, "B": b, "K": k, "steps_per_s": sps,
                 "images_per_s": sps * b})
  ips = bench_eval(model, params, a.eval_images, a.eval_batch, a.eval_chunk)
  rows.append({"what": "eval L_5000", "B": a.eval_batch, "K": 5000, "chunk": a.eval_chunk,
               "images_per_s": ips})
  env = {"jax": jax.__version__, "backend": jax.default_backend(),
         "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
         "machine": platform.machine()}
  print(f"Burda 1-layer model (784-200-200-50), {env['backend']} ({env['devices'][0]}), "
        f"{env['cpu_count']} CPUs")
  print(f"{'what':<14}{'objective':>10}{'B':>6}{'K':>7}{'steps/s':>10}{'images/s':>11}")
  for r in rows:
    sps = f"{r['steps_per_s']:.1f}" if "steps_per_s" in r else "-"
    print(f"{r['what']:<14}{r.get('objective', '-'):>10}{r['B']:>6}{r['K']:>7}{sps:>10}"
          f"{r['images_per_s']:>11.1f}")
  out = {"env": env, "results": rows}
  print(json.dumps(out))
  if a.json:
    with open(a.json, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  main()
