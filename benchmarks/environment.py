"""The environment of a benchmark run (CPU, packages, PyTorch's settings) and section a of the
device suite: the device, its measured matmul rate (JAX and PyTorch, float32 / TF32 / bfloat16)
and its copy bandwidth (device-to-device, host-to-device).
"""

from __future__ import annotations

import platform
import subprocess
import sys

from benchmarks import timing


def cpu_name() -> str:
  """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return cpu


def package_versions() -> dict:
  """Versions of the installed packages that shape a device run (those present)."""
  from importlib import metadata
  packages = {}
  for dist in ("jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin",
               "jax-cuda13-pjrt", "triton", "orbax-checkpoint"):
    try:
      packages[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  return packages


def configure_torch(torch, threads: int) -> None:
  """PyTorch on ``threads`` CPU threads (XLA's count), with room for one compiled graph per case
  and chunk size."""
  import torch._dynamo  # pylint: disable=protected-access,import-outside-toplevel
  torch.set_num_threads(threads)
  torch._dynamo.config.cache_size_limit = 256  # pylint: disable=protected-access
  if hasattr(torch._dynamo.config, "recompile_limit"):  # pylint: disable=protected-access
    torch._dynamo.config.recompile_limit = 256  # pylint: disable=protected-access


def tqdm_or_stand_in(env: dict) -> None:
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


# ----------------------------------------------------------------------------- section a


def section_a(ctx, out, clock, suite):
  import jax
  import jax.numpy as jnp
  import numpy as np
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
      calls, dt = timing.timed(lambda f=f: jax.block_until_ready(f(a32, b32)), secs)
    rates[f"jax_{kind}"] = 2.0 * n**3 * calls / dt
  a16, b16 = a32.astype(jnp.bfloat16), b32.astype(jnp.bfloat16)
  f16 = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
  jax.block_until_ready(f16(a16, b16))
  calls, dt = timing.timed(lambda: jax.block_until_ready(f16(a16, b16)), secs)
  rates["jax_bfloat16"] = 2.0 * n**3 * calls / dt
  if torch is not None:
    if dev == "cuda":
      old = torch.backends.cuda.matmul.allow_tf32
      for kind, allow in (("float32", False), ("tensorfloat32", True)):
        torch.backends.cuda.matmul.allow_tf32 = allow
        rates[f"torch_{kind}"] = timing.torch_matmul_rate(torch, dev, n, secs)
      torch.backends.cuda.matmul.allow_tf32 = old
    else:
      rates["torch_float32"] = timing.torch_matmul_rate(torch, dev, n, secs)
    rates["torch_bfloat16"] = timing.torch_matmul_rate(torch, dev, n, secs, torch.bfloat16)
  out["matmul"] = {"n": n, "tflops": {k: v / 1e12 for k, v in rates.items()},
                   "note": ("CPU: XLA and PyTorch ignore TF32 there; bfloat16 is emulated"
                            if ctx["backend"] == "cpu" else "")}
  ctx["rates"] = rates
  suite.write()

  nbytes = sz.copy_mb * 2**20
  x = jax.device_put(np.ones(nbytes // 4, np.float32))
  add = jax.jit(lambda v: v + 1.0)
  jax.block_until_ready(add(x))
  calls, dt = timing.timed(lambda: jax.block_until_ready(add(x)), secs)
  bw = {"jax_read_write_gbs": 2.0 * nbytes * calls / dt / 1e9}
  host = np.ones(nbytes // 4, np.float32)
  calls, dt = timing.timed(lambda: jax.block_until_ready(jax.device_put(host)), secs)
  bw["jax_host_to_device_gbs"] = nbytes * calls / dt / 1e9
  if torch is not None:
    t1 = torch.empty(nbytes // 4, device=dev)
    t2 = torch.empty_like(t1)

    def tcopy():
      t2.copy_(t1)
      ctx["sync"]()
    calls, dt = timing.timed(tcopy, secs)
    bw["torch_copy_gbs"] = 2.0 * nbytes * calls / dt / 1e9
    del t1, t2
  out["bandwidth"] = {"mib": sz.copy_mb, **bw}
  del x, host
