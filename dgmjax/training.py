"""The optax training loop: jitted step, schedules, checkpoints, NaN guard, metrics log.

A run is a pure function of its configuration and seed: the minibatch order of epoch ``e`` and the
PRNG key of step ``s`` (``fold_in(key(seed), s)``) are recomputed from ``e`` and ``s``, so a run
restored from a checkpoint at step ``s`` continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import _checks, data
# Interim: the losses moved to dgmjax.losses; call sites move with the training package.
from dgmjax.losses import (BASELINES, BOUND_ESTIMATORS, KL_BOUNDS, KL_SCHEDULES,  # noqa: F401
                           SURROGATE_ESTIMATORS, kl_weight_schedule, make_kl_controlled_loss,
                           make_loss)

Array = jax.Array
LossFn = Callable[[Any, Array, Array], tuple[Array, dict]]


# ----------------------------------------------------------------------------- schedules


def burda_epochs(num_passes: int = 8) -> list[int]:
  """Epochs of each pass of Burda et al.'s schedule: ``3^i`` for ``i = 0 .. num_passes-1``."""
  return [3**i for i in range(num_passes)]


def burda_learning_rates(num_passes: int = 8, *, reference_rounding: bool = False) -> list[float]:
  """Learning rate of each pass: ``1e-3 * 10^(-i/7)``.

  With ``reference_rounding`` the rates are those of the reference code,
  ``1e-4 * round(10^(1 - i/7), 1)`` (``1e-3, 7.2e-4, 5.2e-4, ...``).
  """
  if reference_rounding:
    return [1e-4 * round(10.0 ** (1 - i / 7.0), 1) for i in range(num_passes)]
  return [1e-3 * 10.0 ** (-i / 7.0) for i in range(num_passes)]


def burda_schedule(steps_per_epoch: int, num_passes: int = 8, *, num_epochs: float | None = None,
                   base_learning_rate: float = 1e-3,
                   reference_rounding: bool = False) -> optax.Schedule:
  """Burda et al.'s piecewise-constant schedule in steps: pass ``i`` lasts ``3^i`` epochs.

  .. math:: \\eta_i = 10^{-3} \\cdot 10^{-i/7} \\text{ for } 3^i \\text{ epochs}, \\quad i = 0, \\dots, 7

  Eight passes make 3280 epochs. A shorter budget keeps the shape: either fewer passes
  (``num_passes=3`` is 13 epochs), or ``num_epochs`` which scales every pass by
  ``num_epochs / sum_i 3^i`` (each pass keeps at least one step).

  Args:
    steps_per_epoch: optimiser steps per epoch.
    num_passes: number of passes ``i = 0 .. num_passes - 1``.
    num_epochs: total budget in epochs; default ``sum_i 3^i`` (the paper's).
    base_learning_rate: the rate of pass 0 (``1e-3``); pass ``i`` uses ``base * 10^(-i/7)``.
    reference_rounding: use the reference code's rounded rates.

  Returns:
    An optax schedule of the step count.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  steps_per_epoch = _checks.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  if num_epochs is not None:
    num_epochs = _checks.check_real("num_epochs", num_epochs, minimum=0.0, strict_minimum=True)
  check_learning_rate(base_learning_rate, "base_learning_rate")
  rates = [r * base_learning_rate / 1e-3
           for r in burda_learning_rates(num_passes, reference_rounding=reference_rounding)]
  epochs = np.asarray(burda_epochs(num_passes), np.float64)
  if num_epochs is not None:
    if num_epochs <= 0:
      raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
    epochs = epochs * (num_epochs / epochs.sum())
  bounds = [int(b) for b in np.round(np.cumsum(epochs)[:-1] * steps_per_epoch)]
  for i in range(len(bounds)):  # every pass keeps >= 1 step
    bounds[i] = max(bounds[i], (bounds[i - 1] if i else 0) + 1)
  return optax.join_schedules([optax.constant_schedule(r) for r in rates], bounds)


def burda_num_steps(steps_per_epoch: int, num_passes: int = 8, *,
                    num_epochs: float | None = None) -> int:
  """Total steps of :func:`burda_schedule` with the same arguments."""
  steps_per_epoch = _checks.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  if num_epochs is not None:
    num_epochs = _checks.check_real("num_epochs", num_epochs, minimum=0.0, strict_minimum=True)
  total = num_epochs if num_epochs is not None else sum(burda_epochs(num_passes))
  return max(int(round(total * steps_per_epoch)), num_passes)


class BurdaAdamState(NamedTuple):
  """State of :func:`burda_adam`: timestep (starts at 1), first and second moments."""
  count: Array
  mu: Any
  nu: Any


def burda_adam(learning_rate, b1: float = 0.99, b2: float = 0.999,
               eps: float = 1e-4) -> optax.GradientTransformation:
  """The Adam variant of Burda et al.'s reference code, as an optax transformation.

  Second moments start at one, first moments at zero, the timestep at one; ``eps`` is added to
  ``sqrt(v)``. Theano applied all updates of a step simultaneously, so the parameter step of step
  ``t`` uses the moments *before* this step's update (the first step therefore does not move):

  .. math:: \\theta_t = \\theta_{t-1} - \\alpha_t \\frac{m_{t-1}}{\\sqrt{v_{t-1}} + \\epsilon}, \\quad \\alpha_t = \\eta_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}

  Args:
    learning_rate: a float or an optax schedule of the step count (from 0).
    b1, b2: moment decay rates.
    eps: added to ``sqrt(v)``.

  References:
    Burda et al., ICLR 2016, reference implementation (``optimizers.py`` of yburda/iwae).
  """

  def init(params):
    return BurdaAdamState(jnp.ones([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                          jax.tree.map(jnp.ones_like, params))

  def update(grads, state, params=None):
    del params
    t = state.count.astype(jnp.result_type(float))  # float64 under x64
    lr = learning_rate(state.count - 1) if callable(learning_rate) else learning_rate
    alpha = lr * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    updates = jax.tree.map(lambda m, v: (-alpha * m / (jnp.sqrt(v) + eps)).astype(m.dtype),
                           state.mu, state.nu)
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
    return updates, BurdaAdamState(state.count + 1, mu, nu)

  return optax.GradientTransformation(init, update)


def check_learning_rate(learning_rate, name: str = "learning_rate") -> None:
  """A learning rate (a number or an optax schedule of the step) must be finite and > 0.

  A schedule is checked at its first step and, being a function of a traced step, only there.

  Raises:
    ValueError: naming ``name`` and the value given.
  """
  value = learning_rate(0) if callable(learning_rate) else learning_rate
  if isinstance(value, (bool, str, bytes)):
    raise ValueError(f"{name} must be a finite number > 0, got {type(value).__name__} {value!r}")
  try:
    v = float(np.asarray(value))
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a finite number > 0 (or a schedule giving one), got "
                     f"{learning_rate!r}") from None
  if not (np.isfinite(v) and v > 0):
    what = f"a schedule whose value at step 0 is {v!r}" if callable(learning_rate) else repr(v)
    raise ValueError(f"{name} must be a finite number > 0, got {what}")


def make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  """``'adam'`` (stock optax Adam with Burda's b1=0.9, b2=0.999, eps=1e-4) or ``'burda_adam'``.

  Raises:
    ValueError: an unknown name, or a learning rate that is not a finite number > 0.
  """
  check_learning_rate(learning_rate)
  if name == "adam":
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-4)
  if name == "burda_adam":
    return burda_adam(learning_rate)
  raise ValueError(f"optimizer must be 'adam' or 'burda_adam', got {name!r}")


# ----------------------------------------------------------------------------- state and step


@flax.struct.dataclass
class TrainState:
  """Training state: a pytree, checkpointed whole.

  Attributes:
    step: number of steps taken (skipped ones included).
    params: model parameters.
    opt_state: optimiser state.
    nonfinite_in_a_row: consecutive steps whose loss or gradient was not finite.
    nonfinite_total: all such steps so far.
  """
  step: Array
  params: Any
  opt_state: Any
  nonfinite_in_a_row: Array
  nonfinite_total: Array


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  """The training state at step 0: ``params`` and ``optimizer.init(params)``, counters at 0."""
  _check_optimizer(optimizer)
  zero = jnp.zeros([], jnp.int32)
  return TrainState(zero, params, optimizer.init(params), zero, zero)


def _check_optimizer(optimizer) -> None:
  if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update",
                                                                          None))):
    raise _checks.ArgumentTypeError(
        f"optimizer must be an optax GradientTransformation (with init and update, e.g. "
        f"optax.adam(1e-3)), got {type(optimizer).__name__} {optimizer!r}")


def step_key(seed: int, step) -> Array:
  """The PRNG key of a training step: a function of the seed and the step only."""
  return jax.random.fold_in(jax.random.key(seed), step)


def auto_microbatch(batch_size: int, num_samples: int, *, max_rows: int = 2048,
                    backend: str | None = None) -> int:
  """Images per microbatch for :func:`make_train_step` that keep a CPU step in cache.

  A step's decoder works on ``num_samples * batch_size`` rows at once; on a CPU the ``[rows, D]``
  activations and logits of a large batch fall out of the caches and every elementwise pass and
  matmul of the step becomes memory-bound. Splitting the batch into microbatches of at most
  ``max_rows`` rows (``2048 x 784`` float32 is 6.4 MB) and summing their gradients keeps them in
  cache: measured on a 2-core AMD EPYC (Burda 1-layer / 2-layer, K=50) 1.31x faster at B=100 and
  1.57x / 1.72x at B=1000 (``benchmarks/bench.py``). On accelerators one large batch is fastest, so there the whole
  batch is returned.

  Args:
    batch_size: ``B``.
    num_samples: importance samples per image ``K`` (1 for a VAE).
    max_rows: the most rows ``K * microbatch`` of one microbatch.
    backend: ``'cpu'``, ``'gpu'``, ... (default: ``jax.default_backend()``).

  Returns:
    The largest divisor of ``batch_size`` with ``K * microbatch <= max_rows`` (at least 1) on CPU;
    ``batch_size`` on other backends.
  """
  if batch_size < 1 or num_samples < 1 or max_rows < 1:
    raise ValueError(f"batch_size, num_samples and max_rows must be >= 1, got {batch_size}, "
                     f"{num_samples}, {max_rows}")
  if (backend or jax.default_backend()) != "cpu":
    return batch_size
  limit = max(1, max_rows // num_samples)
  return max(d for d in range(1, min(batch_size, limit) + 1) if batch_size % d == 0)


def resolve_microbatch(setting, batch_size: int, num_samples: int, *, name: str = "microbatch",
                       batch_name: str = "batch_size") -> int | None:
  """A microbatch setting (``None``/``'none'``, ``'auto'``, or a number of images, also as a string
  from a command line or config) -> the ``microbatch`` of :func:`make_train_step`.

  Returns:
    ``None`` for the whole batch at once (also when the setting covers the whole batch), else the
    number of images per microbatch, a divisor of ``batch_size``.

  Raises:
    ValueError: naming ``name`` (and ``batch_name``) for an unknown setting or a non-divisor.
  """
  text = "none" if setting is None else str(setting).strip().lower()
  if text == "none":
    return None
  if text == "auto":
    mb = auto_microbatch(batch_size, num_samples)
  elif text.isdigit() and int(text) >= 1 and not isinstance(setting, bool):
    mb = int(text)
  else:
    raise ValueError(f"{name} must be 'auto', 'none' or a positive integer, got {setting!r}")
  if batch_size % mb:
    raise ValueError(f"{name}={mb} must divide {batch_name}={batch_size}")
  return None if mb >= batch_size else mb


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, seed: int,
                    dynamic_binarization: bool = False, pass_step: bool = False,
                    post_update: Callable | None = None, microbatch: int | None = None):
  """A jitted ``step(state, images) -> (state, metrics)``.

  A step whose loss or any gradient is not finite leaves ``params`` and ``opt_state`` unchanged
  and increments the non-finite counters; a finite step resets ``nonfinite_in_a_row``.
  With ``pass_step=True`` the loss is called as ``loss_fn(params, x, key, step)`` (for schedules
  inside the loss, e.g. a Gumbel-softmax temperature or a KL weight); the step is traced, so the
  schedule does not retrace.
  ``post_update(params, aux, key, step) -> params`` runs after the optimiser's update, for state that
  is not trained by gradients (an EMA codebook, usage counts, dead-code restarts); the loss hands
  it ``aux`` as ``metrics.pop('aux')``. Such leaves get zero gradients, hence zero Adam updates.

  With ``microbatch=m`` (a divisor of the batch size, e.g. from :func:`auto_microbatch`) the
  minibatch is split into ``B / m`` microbatches evaluated one after another (``lax.scan``), each
  with its own key ``jax.random.split(key, B / m)[i]``; the gradient and every metric are their
  means. For a loss that is a mean over images (every loss of :func:`make_loss`) this is the
  gradient of the whole minibatch with other noise: the same estimator, in less memory and, on a
  CPU, less time. One optimiser update is made per minibatch, as without it.

  A finite gradient can still give a non-finite update (a NaN learning rate or optimiser
  setting); the step does not pay for checking every parameter: :func:`fit` checks the
  parameters on the host before it writes a checkpoint and before it returns, and the next step's
  non-finite loss stops the run.
  """
  if not isinstance(seed, jax.core.Tracer):  # a traced seed: runs vmapped over their seeds
    seed = _checks.check_seed("seed", seed)
  _check_optimizer(optimizer)
  if not callable(loss_fn):
    raise _checks.ArgumentTypeError(f"loss_fn must be a function (params, x, key) -> (loss, "
                                    f"metrics), got {type(loss_fn).__name__}")
  if microbatch is not None:
    if not isinstance(microbatch, (int, np.integer)) or isinstance(microbatch, bool) \
        or microbatch < 1:
      raise ValueError(f"microbatch must be None or an int >= 1, got {microbatch!r}")
    if post_update is not None:
      raise ValueError("microbatch cannot be combined with post_update (its aux statistics are "
                       "per minibatch)")

  def value_and_grad(params, x, key, extra):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    b = x.shape[0]
    if microbatch is None or microbatch >= b:
      return grad_fn(params, x, key, *extra)
    if b % microbatch:
      raise ValueError(f"microbatch={microbatch} must divide the batch size {b}")
    n = b // microbatch
    xs = x.reshape((n, microbatch) + x.shape[1:])

    def body(acc, inp):
      (loss, metrics), grads = grad_fn(params, inp[0], inp[1], *extra)
      return jax.tree.map(jnp.add, acc, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, metrics) = jax.lax.scan(body, zeros, (xs, jax.random.split(key, n)))
    mean = lambda a: jnp.mean(a, axis=0)
    return (mean(losses), jax.tree.map(mean, metrics)), jax.tree.map(lambda g: g / n, grads)

  @jax.jit
  def train_step(state: TrainState, images: Array):
    if post_update is None:
      key_bin, key_loss = jax.random.split(step_key(seed, state.step))
    else:
      key_bin, key_loss, key_post = jax.random.split(step_key(seed, state.step), 3)
    x = data.binarize(key_bin, images) if dynamic_binarization else images
    extra = (state.step,) if pass_step else ()
    (loss, metrics), grads = value_and_grad(state.params, x, key_loss, extra)
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    aux = metrics.pop("aux", None)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if post_update is not None:
      new_params = post_update(new_params, aux, key_post, state.step)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    state = TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + jnp.where(finite, 0, 1))
    metrics = dict(metrics, loss=loss, finite=finite,
                   grad_norm=jnp.where(finite, optax.tree.norm(grads), jnp.nan))
    return state, metrics

  return train_step


# ----------------------------------------------------------------------------- data checks


def check_images(images, *, name: str = "images", image_shape: tuple[int, ...] | None = None,
                 binary_likelihood: bool = True) -> np.ndarray:
  """Validates a training or test array before any work is done; returns it as float32.

  ``uint8`` arrays are scaled by ``1/255`` first (grey levels, as MNIST is distributed).

  Args:
    images: ``[N, H, W, C]`` (or ``[N, D]``).
    name: how the array is named in error messages (e.g. ``"mnist/train image"``).
    image_shape: the model's ``(H, W, C)``; the per-example shape (or its size, for flat
      arrays) must match.
    binary_likelihood: the model has a Bernoulli decoder, so values must lie in [0, 1].

  Returns:
    ``images`` as a float32 numpy array.

  Raises:
    ValueError: an empty split, non-finite values, values outside [0, 1] for a Bernoulli decoder,
      or an image size different from the model's.
  """
  arr = np.asarray(images)
  if arr.ndim < 2 or arr.shape[0] == 0:
    raise ValueError(f"{name} split is empty (shape {arr.shape}); nothing to train or evaluate on")
  if arr.dtype == np.uint8:
    arr = arr.astype(np.float32) / 255.0
  if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer) \
      and arr.dtype != np.bool_:
    raise ValueError(f"{name} has dtype {arr.dtype}; expected floats in [0, 1] or uint8")
  arr = arr.astype(np.float32, copy=False)
  if image_shape is not None:
    image_shape = tuple(image_shape)
    size = int(np.prod(image_shape))
    if arr.shape[1:] != image_shape and arr.shape[1:] != (size,):
      raise ValueError(f"{name} has per-example shape {arr.shape[1:]}, but the model expects "
                       f"images of shape {image_shape} ({size} pixels)")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  if binary_likelihood:
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
      raise ValueError(f"{name} values must lie in [0, 1] for the Bernoulli decoder, got values "
                       f"in [{lo:g}, {hi:g}]")
  return arr


def _check_train_images(loss_fn, images, dynamic_binarization: bool):
  """The training data of :func:`fit`, checked before any work: an array ``[N, ...]``, finite,
  in [0, 1] when binarized per minibatch, else in the support of the loss's model (a loss from
  :func:`make_loss` knows its model; see :func:`dgmjax.models.check_data`)."""
  from dgmjax.models import base  # pylint: disable=import-outside-toplevel

  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise TypeError(f"train_images must be an array [N, ...], got {type(images).__name__}")
  if images.ndim < 2 or images.shape[0] == 0:
    raise ValueError(f"train_images must be a non-empty array [N, ...], got shape {images.shape}")
  if dynamic_binarization:
    if np.dtype(images.dtype) == np.uint8:
      raise ValueError("train_images is a uint8 array (0..255 grey levels?); dynamic binarization "
                       "draws pixels with probability x, so pass floats in [0, 1] (e.g. "
                       "training.check_images(images), which scales uint8 by 1/255)")
    base.check_data(None, images, "train_images (binarized per minibatch)",
                    support="unit_interval")
    return images
  model = getattr(loss_fn, "model", None)
  base.check_data(model, images, "train_images")
  return images


def epoch_order(num_examples: int, epoch: int, seed: int, *, shuffle: bool) -> np.ndarray:
  """The example order of an epoch: a permutation seeded by ``(seed, epoch)``, or the identity."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


# ----------------------------------------------------------------------------- the loop


class NonFiniteError(FloatingPointError):
  """Raised when too many consecutive steps had a non-finite loss or gradient."""


def _parse_line(line: str):
  """One JSON-lines record, or ``None`` for a blank or torn line (a kill mid-write)."""
  if not line.strip():
    return None
  try:
    return json.loads(line)
  except json.JSONDecodeError:
    return None


class TensorBoardWriter:
  """Metrics lines as TensorBoard scalars (event files), next to the JSON-lines log.

  Every numeric field of a record with a ``step`` becomes a scalar of that name at that step
  (``loss``, ``bound``, ``elbo``, ``lr``, ``grad_norm``, the validation metrics of ``eval_fn``,
  ...); text fields (``event``) are skipped. On resume a new event file starts with TensorBoard's
  ``SessionLog.START`` at the restored step, so TensorBoard discards the points an interrupted run
  wrote past it, as the JSON-lines log does. Written with TensorBoard's own event-file writer
  (optional dependency: ``pip install 'dgmjax[tensorboard]'``). Watch a run with
  ``tensorboard --logdir WORKDIR/tensorboard``.

  Args:
    logdir: the directory of the event files.
    resume_step: the restored step, or ``None`` for a fresh run.
  """

  def __init__(self, logdir: str, resume_step: int | None = None):
    try:
      from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
      from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise ImportError("tensorboard= needs the tensorboard package: "
                        "pip install 'dgmjax[tensorboard]'") from None
    self._event, self._summary = event_pb2, summary_pb2
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    self._writer = EventFileWriter(logdir)
    if resume_step is not None:
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      # TensorBoard drops the points at steps >= this one from the earlier files
      self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(resume_step) + 1,
                                             session_log=start))

  def write(self, record: dict) -> None:
    """Writes the numeric fields of ``record`` at ``record["step"]``."""
    if "step" not in record:
      return
    values = [self._summary.Summary.Value(tag=k, simple_value=float(v))
              for k, v in record.items()
              if k != "step" and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
    if values:
      self._writer.add_event(self._event.Event(wall_time=time.time(), step=int(record["step"]),
                                               summary=self._summary.Summary(value=values)))

  def close(self) -> None:
    self._writer.close()


class MetricsLog:
  """Metrics as JSON lines; on resume, lines past the restored step are dropped.

  Args:
    path: the ``.jsonl`` file.
    resume_step: ``None`` starts a fresh file; an int keeps the lines with ``step <= resume_step``
      so the resumed log equals the uninterrupted one.
    tensorboard: also write each record to this :class:`TensorBoardWriter`.
  """

  def __init__(self, path: str, resume_step: int | None = None,
               tensorboard: TensorBoardWriter | None = None):
    self.path = path
    self.tensorboard = tensorboard
    if resume_step is None or not os.path.exists(path):
      open(path, "w").close()
    else:
      with open(path) as f:
        lines = [l if l.endswith("\n") else l + "\n" for l in f
                 if _parse_line(l) is not None and _parse_line(l).get("step", 0) <= resume_step]
      with open(path, "w") as f:
        f.writelines(lines)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tensorboard is not None:
      self.tensorboard.write(record)

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()


def checkpoint_manager(directory: str, every: int, max_to_keep: int = 2):
  """An orbax ``CheckpointManager`` saving every ``every`` steps (writes to a temporary directory,
  then renames it: a checkpoint is complete or absent)."""
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         save_interval_steps=max(every, 1), create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


# ----------------------------------------------------------------------------- run configs


def _flatten_config(cfg, prefix: str = "") -> dict:
  out = {}
  for k, v in (cfg.items() if isinstance(cfg, dict) else []):
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten_config(v, name + "."))
    else:
      out[name] = v
  return out


def _matches(name: str, patterns) -> bool:
  import fnmatch  # pylint: disable=import-outside-toplevel
  return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def config_changes(saved: dict, current: dict, *, ignore=()) -> dict:
  """``{dotted key: (saved, current)}`` for every setting that differs, nested dicts flattened;
  keys matching a glob of ``ignore`` (e.g. ``'eval.*'``) are left out."""
  a, b = _flatten_config(saved), _flatten_config(current)
  return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
          if not _matches(k, ignore) and json.dumps(a.get(k), sort_keys=True, default=str)
          != json.dumps(b.get(k), sort_keys=True, default=str)}


#: Config keys (globs) that do not alter what is trained: a resumed run may change them.
RESUME_IGNORED = ("eval.*", "progress", "stop_after_steps")


def record_config(workdir: str, config: dict, *, resume: bool, allow_changes=False,
                  ignore=()) -> dict:
  """Writes ``workdir/config.json``, or on resume checks the current config against it.

  A resumed run continues what was trained: a change of any setting outside ``ignore`` (the
  learning rate, ``K``, the seed, the objective, the number of steps, ...) is refused, listing the
  differing keys, unless ``allow_changes`` is ``True`` or names those keys (globs). An allowed
  change is recorded in ``config.json`` under ``resume_changes`` (step-free: the metrics log
  says when), so the results describe what was trained.

  Args:
    workdir: the run's directory.
    config: the current settings (a JSON-serialisable dict, nested dicts allowed).
    resume: the run resumes from ``workdir``'s checkpoints.
    allow_changes: ``False``, ``True`` or a sequence of key globs that may change.
    ignore: key globs that never alter what is trained (evaluation settings, progress bars).

  Returns:
    The config as saved: the current one, plus ``resume_changes`` when changes were allowed.

  Raises:
    ValueError: a refused change, naming each key with its saved and current values.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  config = json.loads(json.dumps(config, default=str))
  if resume and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    history = saved.pop("resume_changes", [])
    changes = config_changes(saved, config, ignore=ignore)
    allowed = (lambda k: True) if allow_changes is True else (
        (lambda k: False) if not allow_changes else (lambda k: _matches(k, allow_changes)))
    refused = {k: v for k, v in changes.items() if not allowed(k)}
    if refused:
      listing = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
      raise ValueError(f"--resume with a different config would continue {workdir!r} as if it "
                       f"had been trained with the new settings; changed: {listing}. Resume with "
                       f"the saved config ({path}), use a new workdir, or allow the change "
                       f"explicitly")
    if changes:
      history = history + [{k: {"saved": a, "now": b} for k, (a, b) in changes.items()}]
    if history:
      config["resume_changes"] = history
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return config


# ----------------------------------------------------------------------------- workdir safety


class WorkdirLockedError(RuntimeError):
  """Another live process is training into the same workdir."""


class WorkdirLock:
  """An exclusive lock on a workdir, held by the process that trains into it.

  ``fcntl.flock`` on ``workdir/.lock``: the operating system releases it when the holder exits,
  killed or not, so a resumed run after a kill takes it at once; a second live process fails fast
  with the holder's pid, host and start time (written into the lock file).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._file = None

  def acquire(self) -> "WorkdirLock":
    import fcntl  # pylint: disable=import-outside-toplevel
    import socket  # pylint: disable=import-outside-toplevel
    f = open(self.path, "a+")
    try:
      fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      f.seek(0)
      holder = f.read().strip() or "an unknown process"
      f.close()
      raise WorkdirLockedError(f"workdir {os.path.dirname(self.path)!r} is being trained into by "
                               f"{holder}; wait for it to finish, stop it, or use another "
                               f"workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    self._file = f
    return self

  def release(self) -> None:
    if self._file is not None:
      import fcntl  # pylint: disable=import-outside-toplevel
      self._file.seek(0)
      self._file.truncate()
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _check_writable(workdir: str, needed_bytes: int) -> None:
  """Fails in one line, before training, if ``workdir`` cannot hold a checkpoint."""
  import shutil  # pylint: disable=import-outside-toplevel
  probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
  try:
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise OSError(f"workdir {workdir!r} is not writable ({e.strerror}); checkpoints and metrics "
                  f"could not be saved") from None
  free = shutil.disk_usage(workdir).free
  if free < needed_bytes:
    raise OSError(f"workdir {workdir!r} has {free / 2**20:.1f} MiB free; the checkpoints of this "
                  f"run need about {needed_bytes / 2**20:.1f} MiB")


_CHECKSUMS = "checkpoint_checksums.json"


def _step_dir(directory: str, step: int) -> str:
  return os.path.join(directory, str(int(step)))


def _digest(path: str) -> dict:
  """sha256 of every file under a checkpoint's step directory, by relative path."""
  import hashlib  # pylint: disable=import-outside-toplevel
  out = {}
  for root, _, files in os.walk(path):
    for name in sorted(files):
      full = os.path.join(root, name)
      h = hashlib.sha256()
      with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      out[os.path.relpath(full, path)] = h.hexdigest()
  return out


def _read_checksums(workdir: str) -> dict:
  path = os.path.join(workdir, _CHECKSUMS)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return {}


def _record_checksum(workdir: str, directory: str, step: int, kept) -> None:
  sums = {k: v for k, v in _read_checksums(workdir).items() if int(k) in set(kept)}
  sums[str(int(step))] = _digest(_step_dir(directory, step))
  tmp = os.path.join(workdir, _CHECKSUMS + ".tmp")
  with open(tmp, "w") as f:
    json.dump(sums, f)
  os.replace(tmp, os.path.join(workdir, _CHECKSUMS))


def verify_checkpoint(workdir: str, step: int) -> str | None:
  """``None`` if checkpoint ``step`` of ``workdir`` matches its recorded checksums, else why not.

  A checkpoint written before checksums were recorded (no entry) is accepted as is.
  """
  directory = os.path.join(workdir, "checkpoints")
  want = _read_checksums(workdir).get(str(int(step)))
  if want is None:
    return None if os.path.isdir(_step_dir(directory, step)) else "missing"
  got = _digest(_step_dir(directory, step))
  missing = sorted(set(want) - set(got))
  if missing:
    return f"missing files {missing[:3]}"
  bad = sorted(k for k in want if got.get(k) != want[k])
  return f"checksum mismatch in {bad[:3]}" if bad else None


def _restore_intact(mngr, workdir: str, template, log=None, *, delete_corrupt: bool = False):
  """Restores the newest checkpoint that verifies and loads; reports and skips the others (and
  deletes them with ``delete_corrupt``, so that the resumed run can write those steps again)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  steps = sorted((int(s) for s in mngr.all_steps()), reverse=True)
  problems = []
  for step in steps:
    why = verify_checkpoint(workdir, step)
    if why is None:
      try:
        args = (ocp.args.StandardRestore(template) if template is not None
                else ocp.args.StandardRestore())
        restored = mngr.restore(step, args=args)
        if delete_corrupt:   # only once an intact one is found: otherwise keep the evidence
          for bad, _ in problems:
            mngr.delete(bad)
        return step, restored, problems
      except Exception as e:  # pylint: disable=broad-except
        why = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
    problems.append((step, why))
    msg = f"checkpoint at step {step} in {workdir!r} is corrupt ({why}); trying an older one"
    print(f"dgmjax: {msg}", file=sys.stderr)
    if log is not None:
      log({"event": "corrupt_checkpoint", "checkpoint_step": step, "why": why})
  if steps:
    raise RuntimeError(f"no intact checkpoint in {workdir!r}: "
                       + "; ".join(f"step {s}: {w}" for s, w in problems)
                       + ". Start afresh without resume, or in a new workdir.")
  return None, None, problems


def restore(workdir: str, *, like=None, step="latest") -> tuple[Any, dict | None, int]:
  """The parameters of a run's checkpoint, without a loss or an optimizer.

  Reads ``workdir/checkpoints`` (as written by :func:`fit`) read-only, and ``workdir/config.json``
  when the run wrote one (the experiment drivers do).

  Args:
    workdir: the run's directory.
    like: optional params template (e.g. ``jax.eval_shape(model.init, key)`` or real params): the
      restored params are checked against its tree structure and leaf shapes and cast to its
      dtypes; without it they come back as stored (a tree of arrays).
    step: ``'latest'`` or a step with a checkpoint.

  Returns:
    ``(params, config, step)``; ``config`` is the parsed ``config.json`` or ``None``.

  Raises:
    FileNotFoundError: no checkpoint in ``workdir``.
    ValueError: ``step`` is not among the saved steps, or the params do not match ``like``
      (naming the first differing leaf).
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints directory in {workdir!r} (expected "
                            f"{directory}, written by training.fit)")
  mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    steps = sorted(int(s) for s in mngr.all_steps())
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    if step == "latest":
      chosen, restored, _ = _restore_intact(mngr, workdir, None)
    elif isinstance(step, (int, np.integer)) and not isinstance(step, bool) and int(step) in steps:
      chosen = int(step)
      why = verify_checkpoint(workdir, chosen)
      if why is not None:
        raise ValueError(f"the checkpoint of {workdir!r} at step {chosen} is corrupt ({why})")
      restored = mngr.restore(chosen, args=ocp.args.StandardRestore())
    else:
      raise ValueError(f"step must be 'latest' or one of the saved steps {steps}, got {step!r}")
  finally:
    mngr.close()
  params = restored["params"]
  if like is not None:
    got = jax.tree_util.tree_flatten_with_path(params)[0]
    want, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(got) != len(want) or jax.tree.structure(params) != jax.tree.structure(like):
      raise ValueError(f"the checkpoint of {workdir!r} at step {chosen} does not have the tree "
                       f"structure of `like`: {len(got)} leaves vs {len(want)}")
    for (path, a), (_, t) in zip(got, want):
      if tuple(np.shape(a)) != tuple(np.shape(t)):
        raise ValueError(f"the checkpoint of {workdir!r} at step {chosen} has leaf "
                         f"{jax.tree_util.keystr(path)} of shape {np.shape(a)}; `like` expects "
                         f"{tuple(np.shape(t))}")
    params = jax.tree.map(lambda a, t: jnp.asarray(a, t.dtype), params, like)
  else:
    params = jax.tree.map(jnp.asarray, params)
  config = None
  cfg_path = os.path.join(workdir, "config.json")
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      config = json.load(f)
  return params, config, chosen


def fit(loss_fn: LossFn, params, train_images: np.ndarray, *, optimizer, num_steps: int,
        batch_size: int, seed: int, workdir: str, dynamic_binarization: bool = False,
        shuffle: bool = True, checkpoint_every: int = 1000, log_every: int = 100,
        max_consecutive_nonfinite: int = 10, resume: bool = False, progress: bool | None = None,
        learning_rate_fn: Callable | None = None, eval_every: int = 0,
        eval_fn: Callable | None = None, stop_after: int | None = None,
        train_step=None, microbatch: int | None = None,
        tensorboard: bool | str = False) -> tuple[TrainState, dict]:
  """Trains ``params`` on ``train_images`` with a jitted step, checkpoints and a metrics log.

  Every quantity of step ``s`` (its minibatch, binarization and sample keys) is a function of
  ``(seed, s)``, and the state (``step``, ``params``, ``opt_state``, NaN counters) is checkpointed
  whole, so ``resume=True`` after a kill continues exactly as the uninterrupted run: same params,
  same metrics lines.

  Args:
    loss_fn: ``(params, x, key) -> (loss, metrics)``, e.g. from :func:`make_loss`.
    params: initial parameters (ignored when a checkpoint is restored).
    train_images: validated float32 array ``[N, ...]`` in [0, 1] (see :func:`check_images`).
    optimizer: an optax transformation (schedules inside it count optimiser updates).
    num_steps: total number of steps of the run.
    batch_size: minibatch size; an epoch is ``N // batch_size`` steps (the remainder is dropped).
    seed: seeds the minibatch order and the step keys.
    workdir: checkpoints go to ``workdir/checkpoints``, metrics to ``workdir/metrics.jsonl``.
    dynamic_binarization: draw a fresh binarization of each minibatch (Burda et al.'s MNIST).
    shuffle: shuffle each epoch (seeded by the epoch), else keep the data order (as Burda's code).
    checkpoint_every: steps between checkpoints (one is also written at the end); a multiple of
      ``log_every`` so that a resumed log matches the uninterrupted one.
    log_every: steps between metrics lines (means over the window).
    max_consecutive_nonfinite: raise :class:`NonFiniteError` after this many skipped steps in a row.
    resume: continue from the latest checkpoint in ``workdir`` if there is one.
    progress: show a tqdm progress bar (default: when stderr is a terminal).
    learning_rate_fn: the schedule, logged as ``lr`` if given.
    eval_every: steps between calls of ``eval_fn`` (0: never); a divisor of ``checkpoint_every``.
    eval_fn: ``(params, step) -> dict`` of metrics (e.g. a validation bound), logged with the step.
    stop_after: stop (as if killed) once this step is reached, without the final checkpoint: for
      tests of resumption.
    train_step: a prebuilt step from :func:`make_train_step` (default: built here).
    microbatch: images per microbatch of the step built here (see :func:`make_train_step` and
      :func:`auto_microbatch`); ``None``: the whole minibatch at once.
    tensorboard: also write the metrics as TensorBoard event files (:class:`TensorBoardWriter`):
      ``True`` for ``workdir/tensorboard``, or a directory; ``False`` (default): the JSON-lines
      log only.

  Returns:
    ``(state, summary)``.

  Raises:
    NonFiniteError: too many non-finite steps in a row.
  """
  from tqdm.auto import tqdm
  import orbax.checkpoint as ocp

  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  num_steps = _checks.check_int("num_steps", num_steps, minimum=1)
  seed = _checks.check_seed("seed", seed)
  _check_optimizer(optimizer)
  checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, minimum=1)
  log_every = _checks.check_int("log_every", log_every, minimum=1)
  max_consecutive_nonfinite = _checks.check_int("max_consecutive_nonfinite",
                                                max_consecutive_nonfinite, minimum=1)
  eval_every = _checks.check_int("eval_every", eval_every, minimum=0)
  if stop_after is not None:
    stop_after = _checks.check_int("stop_after", stop_after, minimum=1)
  _checks.check_bool("resume", resume)
  if microbatch is not None:
    microbatch = _checks.check_int("microbatch", microbatch, minimum=1)
  workdir = os.fspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} exists and is not a directory")
  train_images = _check_train_images(loss_fn, train_images, dynamic_binarization)
  n = train_images.shape[0]
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} examples)")
  if checkpoint_every % log_every:
    raise ValueError(f"checkpoint_every ({checkpoint_every}) must be a positive multiple of "
                     f"log_every ({log_every}) for exact resumption")
  if eval_every and checkpoint_every % eval_every:
    raise ValueError(f"eval_every ({eval_every}) must divide checkpoint_every ({checkpoint_every})")
  if learning_rate_fn is not None:
    check_learning_rate(learning_rate_fn, "learning_rate_fn")
  if not isinstance(tensorboard, (bool, str, os.PathLike)) or tensorboard == "":
    raise TypeError(f"tensorboard must be True, False or a directory, got {tensorboard!r}")
  os.makedirs(workdir, exist_ok=True)
  lock = WorkdirLock(workdir).acquire()
  try:
    state = init_state(params, optimizer)
    state_bytes = sum(int(np.size(a)) * np.dtype(a.dtype).itemsize
                      for a in jax.tree.leaves(state) if hasattr(a, "dtype"))
    _check_writable(workdir, int(1.2 * state_bytes * 3) + (1 << 20))
    ckpt_dir = os.path.join(workdir, "checkpoints")
    mngr = checkpoint_manager(ckpt_dir, checkpoint_every)
    restored_step, problems = None, []
    if resume and mngr.latest_step() is not None:
      restored_step, state, problems = _restore_intact(mngr, workdir, state, delete_corrupt=True)
    tb = None
    if tensorboard:
      tb_dir = os.path.join(workdir, "tensorboard") if tensorboard is True else str(tensorboard)
      tb = TensorBoardWriter(tb_dir, restored_step)
    log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), restored_step, tensorboard=tb)
    for bad_step, why in problems:
      log.write({"step": restored_step, "event": "corrupt_checkpoint_skipped",
                 "checkpoint_step": bad_step, "why": why})
  except BaseException:
    lock.release()
    raise

  def check_params(step: int) -> None:
    # a non-finite update from finite gradients (a NaN learning rate or optimiser setting) is not
    # caught by the step's guard: such parameters are never checkpointed or returned
    bad = [jax.tree_util.keystr(path) for path, leaf in
           jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
           if not np.all(np.isfinite(np.asarray(leaf)))]
    if bad:
      good = mngr.latest_step()
      raise NonFiniteError(
          f"the parameters at step {step} are not finite ({len(bad)} leaves, the first {bad[0]}) "
          f"although the steps' losses and gradients were: an update was non-finite, so check "
          f"the learning rate and the optimiser's settings for NaN or inf. The checkpoint of "
          f"step {step} was not written; "
          + (f"the last one is step {good} in {ckpt_dir}." if good is not None else
             "no checkpoint was written."))

  def save(step: int, force: bool = False) -> None:
    check_params(step)
    try:
      mngr.save(step, args=ocp.args.StandardSave(state), force=force)
      mngr.wait_until_finished()
      _record_checksum(workdir, ckpt_dir, step, mngr.all_steps())
    except OSError as e:
      raise OSError(f"could not write the checkpoint of step {step} to {ckpt_dir!r}: "
                    f"{e.strerror or e}") from None

  if train_step is None:
    train_step = make_train_step(loss_fn, optimizer, seed=seed,
                                 dynamic_binarization=dynamic_binarization, microbatch=microbatch)
  start = int(state.step)
  if progress is None:
    progress = sys.stderr.isatty()
  bar = tqdm(total=num_steps, initial=start, disable=not progress, unit="step",
             dynamic_ncols=True, desc="train")
  order, order_epoch = None, -1
  t0 = time.time()
  window = []
  try:
    for step in range(start, num_steps):
      epoch, i = divmod(step, steps_per_epoch)
      if epoch != order_epoch:
        order, order_epoch = epoch_order(n, epoch, seed, shuffle=shuffle), epoch
      batch = train_images[order[i * batch_size:(i + 1) * batch_size]]
      state, metrics = train_step(state, batch)
      window.append(metrics)
      in_a_row = int(state.nonfinite_in_a_row)
      if in_a_row:
        log.write({"step": step + 1, "event": "nonfinite_skipped", "nonfinite_in_a_row": in_a_row,
                   "nonfinite_total": int(state.nonfinite_total)})
      if in_a_row >= max_consecutive_nonfinite:
        log.write({"step": step + 1, "event": "stopped", "nonfinite_in_a_row": in_a_row,
                   "nonfinite_total": int(state.nonfinite_total)})
        good = mngr.latest_step()
        first_good = step + 1 - in_a_row   # steps before the run of non-finite ones
        where = (f"The last checkpoint is step {good} in {ckpt_dir}." if good is not None else
                 "No checkpoint was written.")
        hint = ("the run never had a finite step: check the data and the initial parameters "
                "(and the loss) for NaN or inf" if first_good == 0 else
                f"the parameters became unusable after step {first_good}"
                + (" (very soon after the start: the learning rate is probably too large; "
                   "lower it)" if first_good <= max(10, start + 10) else
                   ": lower the learning rate, or clip gradients"))
        raise NonFiniteError(
            f"{in_a_row} consecutive steps had a non-finite loss or gradient (last at step "
            f"{step + 1}, max_consecutive_nonfinite={max_consecutive_nonfinite}); stopping: "
            f"{hint}. {where}")
      done = step + 1
      if done % log_every == 0 or done == num_steps:
        fetched = jax.device_get(window)
        finite = [m for m in fetched if m["finite"]]
        rec = {"step": done, "epoch": done / steps_per_epoch,
               "nonfinite_total": int(state.nonfinite_total),
               "skipped_in_window": len(fetched) - len(finite)}
        known = ("loss", "bound", "elbo", "grad_norm")
        keys = [k for k in known if k in fetched[0]] + sorted(
            k for k in fetched[0] if k not in known and k != "finite"
            and np.ndim(fetched[0][k]) == 0)
        for k in keys:  # window means of every scalar metric of the loss
          rec[k] = float(np.mean([m[k] for m in finite])) if finite else float("nan")
        if learning_rate_fn is not None:
          rec["lr"] = float(learning_rate_fn(done - 1))
        log.write(rec)
        bar.set_postfix(loss=f"{rec['loss']:.2f}", refresh=False)
        window = []
      if eval_every and eval_fn is not None and done % eval_every == 0:
        log.write({"step": done, "epoch": done / steps_per_epoch,
                   **{k: float(v) for k, v in eval_fn(state.params, done).items()}})
      bar.update(1)
      if done % checkpoint_every == 0:
        save(done)
      if stop_after is not None and done >= stop_after:
        mngr.wait_until_finished()
        check_params(done)
        return state, {"stopped_at": done, "resumed_from": restored_step}
    if num_steps > start and int(state.nonfinite_in_a_row) >= num_steps - start:
      # every step of this run was skipped (fewer than max_consecutive_nonfinite): nothing was
      # trained, which must not pass for a finished run
      raise NonFiniteError(
          f"all {num_steps - start} step(s) of this run had a non-finite loss, gradient or update "
          f"and were skipped, so the parameters were never changed: check the learning rate and "
          f"the optimiser's settings (NaN or inf), the data and the initial parameters")
    if mngr.latest_step() != num_steps:
      save(num_steps, force=True)
    check_params(num_steps)
    mngr.wait_until_finished()
  finally:
    bar.close()
    mngr.close()
    log.close()
    lock.release()
  return state, {"steps": num_steps, "train_seconds": time.time() - t0,
                 "steps_per_epoch": steps_per_epoch,
                 "nonfinite_total": int(state.nonfinite_total),
                 "resumed_from": restored_step}


#: The public API of this module.
__all__ = [
    "LossFn", "burda_epochs", "burda_learning_rates", "burda_schedule", "burda_num_steps",
    "BurdaAdamState", "burda_adam", "check_learning_rate", "make_optimizer", "BOUND_ESTIMATORS",
    "SURROGATE_ESTIMATORS", "BASELINES", "make_loss", "KL_SCHEDULES", "kl_weight_schedule",
    "KL_BOUNDS", "make_kl_controlled_loss", "TrainState", "init_state", "step_key",
    "auto_microbatch", "resolve_microbatch", "make_train_step", "check_images", "epoch_order",
    "NonFiniteError", "TensorBoardWriter", "MetricsLog", "checkpoint_manager", "config_changes",
    "RESUME_IGNORED", "record_config", "WorkdirLockedError", "WorkdirLock", "verify_checkpoint",
    "restore", "fit",
]
