"""The one timing implementation of the benchmarks (``bench.py`` and the device suite).

* :func:`timed`: calls a synchronising ``run()`` until a number of seconds has passed; every rate
  here (matmul FLOP/s, bandwidth, steps per second) is counted with it.
* :class:`Machine`: the measured float32 matmul rate of this machine (JAX), sampled during a run
  (the machine may be shared).
* :class:`Side`, :func:`warm_up`, :func:`interleave`, :func:`ratios`: one implementation of a
  case (dgmjax, PyTorch eager, ``torch.compile``, ...) as ``run(n)``, which does ``n`` steps and
  synchronises. First calls (compilation) are timed apart, then ``reps`` repetitions each time
  every side once in a rotating order; ratios are peer time / dgmjax time within a repetition.
* :func:`peak_rss_delta`: the increase of the process's peak resident set (``VmHWM``, reset
  through ``/proc/self/clear_refs`` after ``malloc_trim``) while a function runs.
* :func:`jax_train_runner` and :func:`fused_steps`: dgmjax's training step, dispatched once per
  step or fused under ``lax.scan``.

dgmjax is synchronised with ``block_until_ready``, PyTorch with ``torch.cuda.synchronize()`` on
GPU (CPU ops are synchronous).
"""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import time


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


def timed(run, seconds: float, min_calls: int = 2) -> tuple[int, float]:
  """Calls ``run()`` (which synchronises) until ``seconds`` have passed and it ran at least
  ``min_calls`` times; returns ``(calls, seconds)``."""
  calls, t0 = 0, time.perf_counter()
  while True:
    run()
    calls += 1
    dt = time.perf_counter() - t0
    if dt >= seconds and calls >= min_calls:
      return calls, dt


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
    calls, dt = timed(lambda: self.jax.block_until_ready(self.f(self.a, self.b)), seconds)
    rate = 2.0 * self.n**3 * calls / dt
    self.samples.append(rate)
    return rate

  @property
  def median(self) -> float:
    return statistics.median(self.samples)


def torch_matmul_rate(torch, device, n: int = 2048, seconds: float = 0.5,
                      dtype=None) -> float:
  """PyTorch's ``[n, n] @ [n, n]`` rate (FLOP/s) on ``device`` (``dtype``: default float32)."""
  kw = {} if dtype is None else {"dtype": dtype}
  a = torch.randn(n, n, device=device, **kw)
  b = torch.randn(n, n, device=device, **kw)
  a @ b
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  sync()

  def run():
    a @ b
    sync()
  calls, dt = timed(run, seconds)
  return 2.0 * n**3 * calls / dt


# ----------------------------------------------------------------------------- memory


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


# ----------------------------------------------------------------------------- sides


def summary(xs) -> dict:
  xs = [float(x) for x in xs]
  return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


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


def error_text(e: BaseException) -> str:
  """``'Type: first line of the message'`` (at most 300 characters of it)."""
  return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


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
    side.error = error_text(e)


def interleave(sides: list[Side], reps: int, machine: Machine | None = None) -> list:
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
  return rates


def ratios(peer: Side, ref: Side) -> dict | None:
  """Peer time / reference time within each repetition: median, min, max, n."""
  if peer.error or ref.error or not peer.times:
    return None
  return summary([p / d for p, d in zip(peer.times, ref.times)])


# ----------------------------------------------------------------------------- dgmjax's step


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


def fused_steps(step_fn, num_steps: int, batch: int, steps_per_epoch: int, unroll: int = 1):
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
