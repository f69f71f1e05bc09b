"""The training loop: :func:`fit` trains any parameters on an image array with a jitted step.

A run is a pure function of its configuration and seed: the minibatch order of epoch ``e`` and the
PRNG key of step ``s`` (``fold_in(key(seed), s)``) are recomputed from ``e`` and ``s``, so a run
restored from a checkpoint at step ``s`` continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from dgmjax import _checks, data
from dgmjax.models import base
from dgmjax.training import checkpoints, rundir
from dgmjax.training.schedules import check_learning_rate
from dgmjax.training.step import (LossFn, TrainState, check_optimizer, init_state,
                                  make_train_step, step_key)


class NonFiniteError(FloatingPointError):
  """Raised when too many consecutive steps had a non-finite loss or gradient."""


def epoch_order(num_examples: int, epoch: int, seed: int, *, shuffle: bool) -> np.ndarray:
  """The example order of an epoch: a permutation seeded by ``(seed, epoch)``, or the identity."""
  num_examples = _checks.check_int("num_examples", num_examples, minimum=0)
  epoch = _checks.check_int("epoch", epoch, minimum=0)
  seed = _checks.check_seed("seed", seed)
  if not _checks.check_bool("shuffle", shuffle):
    return np.arange(num_examples)
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def _minibatches(images: np.ndarray, batch_size: int, seed: int, *, shuffle: bool, start: int,
                num_steps: int):
  """``(step, minibatch)`` for ``step = start .. num_steps - 1``: an epoch is
  ``N // batch_size`` steps (the remainder dropped) in the order :func:`epoch_order` gives it."""
  n = images.shape[0]
  steps_per_epoch = n // batch_size
  order, order_epoch = None, -1
  for step in range(start, num_steps):
    epoch, i = divmod(step, steps_per_epoch)
    if epoch != order_epoch:
      order, order_epoch = epoch_order(n, epoch, seed, shuffle=shuffle), epoch
    yield step, images[order[i * batch_size:(i + 1) * batch_size]]


def check_train_images(images, *, model=None, dynamic_binarization: bool = False):
  """The training data of :func:`dgmjax.training.fit`, checked before any work: an array
  ``[N, ...]``, finite, in [0, 1] when binarized per minibatch, else in the support of ``model``
  (the ``model`` of a loss from :func:`dgmjax.losses.make_loss`; see
  :func:`dgmjax.models.check_data`).

  Returns:
    ``images``, unchanged.

  Raises:
    TypeError: ``images`` is not an array.
    ValueError: an empty array, a uint8 array to binarize, or values outside the support.
  """
  if not hasattr(images, "shape") or not hasattr(images, "dtype"):
    raise TypeError(f"train_images must be an array [N, ...], got {type(images).__name__}")
  if images.ndim < 2 or images.shape[0] == 0:
    raise ValueError(f"train_images must be a non-empty array [N, ...], got shape {images.shape}")
  if dynamic_binarization:
    if np.dtype(images.dtype) == np.uint8:
      raise ValueError("train_images is a uint8 array (0..255 grey levels?); dynamic binarization "
                       "draws pixels with probability x, so pass floats in [0, 1] (e.g. "
                       "dgmjax.data.check_images(images), which scales uint8 by 1/255)")
    base.check_data(None, images, "train_images (binarized per minibatch)",
                    support="unit_interval")
    return images
  base.check_data(model, images, "train_images")
  return images


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
    loss_fn: ``(params, x, key, step) -> (loss, metrics)``, e.g. from
      :func:`~dgmjax.losses.make_loss`.
    params: initial parameters (ignored when a checkpoint is restored).
    train_images: validated float32 array ``[N, ...]`` in [0, 1] (see
      :func:`~dgmjax.data.check_images`).
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
    train_step: a prebuilt step from :func:`~dgmjax.training.step.make_train_step` (default:
      built here).
    microbatch: images per microbatch of the step built here (see
      :func:`~dgmjax.training.step.make_train_step` and
      :func:`~dgmjax.training.step.auto_microbatch`); ``None``: the whole minibatch at once.
    tensorboard: also write the metrics as TensorBoard event files
      (:class:`~dgmjax.training.rundir.TensorBoardWriter`): ``True`` for ``workdir/tensorboard``,
      or a directory; ``False`` (default): the JSON-lines log only.

  Returns:
    ``(state, summary)``.

  Raises:
    NonFiniteError: too many non-finite steps in a row.
    ValueError: before the first step, for a loss with a ``model`` (from
      :func:`~dgmjax.losses.make_loss`), a contract function that returns a non-finite value on
      the first minibatch (naming it and the ``train_images`` index), or a wrong shape.
    TypeError: a contract function that returns a non-floating dtype.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel

  s = _check_settings(loss_fn, train_images, optimizer, num_steps=num_steps, batch_size=batch_size,
                      seed=seed, workdir=workdir, dynamic_binarization=dynamic_binarization,
                      checkpoint_every=checkpoint_every, log_every=log_every,
                      max_consecutive_nonfinite=max_consecutive_nonfinite, resume=resume,
                      learning_rate_fn=learning_rate_fn, eval_every=eval_every,
                      stop_after=stop_after, microbatch=microbatch, tensorboard=tensorboard)
  run = _open_run(s.workdir, params, optimizer, checkpoint_every=s.checkpoint_every,
                  resume=resume, tensorboard=tensorboard)
  if train_step is None:
    train_step = make_train_step(loss_fn, optimizer, seed=s.seed,
                                 dynamic_binarization=dynamic_binarization,
                                 microbatch=s.microbatch)
  start = int(run.state.step)
  try:
    _check_first_batch(loss_fn, run.state.params, s, shuffle=shuffle, start=start,
                       dynamic_binarization=dynamic_binarization)
  except BaseException:
    run.close()
    raise
  bar = tqdm(total=s.num_steps, initial=start, unit="step", dynamic_ncols=True, desc="train",
             disable=not (sys.stderr.isatty() if progress is None else progress))
  t0, window = time.time(), []
  try:
    for step, batch in _minibatches(s.train_images, s.batch_size, s.seed, shuffle=shuffle,
                                   start=start, num_steps=s.num_steps):
      run.state, metrics = train_step(run.state, batch)
      window.append(metrics)
      done = step + 1
      _stop_if_nonfinite(run, done, s.max_consecutive_nonfinite, start)
      if done % s.log_every == 0 or done == s.num_steps:
        record = _window_record(window, run.state, done, s.steps_per_epoch, learning_rate_fn)
        run.log.write(record)
        bar.set_postfix(loss=f"{record['loss']:.2f}", refresh=False)
        window = []
      if s.eval_every and eval_fn is not None and done % s.eval_every == 0:
        run.log.write({"step": done, "epoch": done / s.steps_per_epoch,
                       **{k: float(v) for k, v in eval_fn(run.state.params, done).items()}})
      bar.update(1)
      if done % s.checkpoint_every == 0:
        run.save(done)
      if s.stop_after is not None and done >= s.stop_after:
        run.mngr.wait_until_finished()
        run.check_params(done)
        return run.state, {"stopped_at": done, "resumed_from": run.restored_step}
    _finish(run, s.num_steps, start)
  finally:
    bar.close()
    run.close()
  return run.state, {"steps": s.num_steps, "train_seconds": time.time() - t0,
                     "steps_per_epoch": s.steps_per_epoch,
                     "nonfinite_total": int(run.state.nonfinite_total),
                     "resumed_from": run.restored_step}


# ----------------------------------------------------------------------------- prologue


class _Settings(NamedTuple):
  """The checked settings of :func:`fit`."""
  num_steps: int
  batch_size: int
  seed: int
  checkpoint_every: int
  log_every: int
  max_consecutive_nonfinite: int
  eval_every: int
  stop_after: int | None
  microbatch: int | None
  workdir: str
  train_images: np.ndarray
  steps_per_epoch: int


def _check_settings(loss_fn, train_images, optimizer, *, num_steps, batch_size, seed, workdir,
                    dynamic_binarization, checkpoint_every, log_every, max_consecutive_nonfinite,
                    resume, learning_rate_fn, eval_every, stop_after, microbatch,
                    tensorboard) -> _Settings:
  """Every argument of :func:`fit` checked before any work, each error naming its argument."""
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  num_steps = _checks.check_int("num_steps", num_steps, minimum=1)
  seed = _checks.check_seed("seed", seed)
  check_optimizer(optimizer)
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
  train_images = check_train_images(train_images, model=getattr(loss_fn, "model", None),
                                         dynamic_binarization=dynamic_binarization)
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
  return _Settings(num_steps, batch_size, seed, checkpoint_every, log_every,
                   max_consecutive_nonfinite, eval_every, stop_after, microbatch, workdir,
                   train_images, steps_per_epoch)


def _check_first_batch(loss_fn, params, s: _Settings, *, shuffle: bool, start: int,
                       dynamic_binarization: bool) -> None:
  """What the model of a loss from :func:`~dgmjax.losses.make_loss` (``loss_fn.model``) returns
  on the first minibatch of the run, checked once before the first step: floating ``[B]``
  log-densities, finite for every image (:func:`dgmjax.models.base.check_outputs`). A NaN from
  the model would otherwise only show as skipped steps; this names the contract function and the
  ``train_images`` index. A loss without a ``model`` attribute is not checked."""
  model = getattr(loss_fn, "model", None)
  if model is None or start >= s.num_steps:
    return
  epoch, i = divmod(start, s.steps_per_epoch)
  index = epoch_order(s.train_images.shape[0], epoch, s.seed, shuffle=shuffle)[
      i * s.batch_size:(i + 1) * s.batch_size]
  key_bin, key = jax.random.split(step_key(s.seed, start))
  x = s.train_images[index]
  if dynamic_binarization:  # binarized as the step does (its values only matter for the check)
    x = data.binarize(key_bin, x)
  base.check_outputs(model, params, x, key, where="the first step of training.fit",
                     index=index, images="train_images")


@dataclasses.dataclass
class _Run:
  """An open run: the workdir's lock, the checkpoint manager, the metrics log, the state."""
  workdir: str
  lock: rundir.WorkdirLock
  mngr: Any
  log: rundir.MetricsLog
  state: TrainState
  restored_step: int | None

  def check_params(self, step: int) -> None:
    """Raises :class:`NonFiniteError` if a parameter is not finite: a non-finite update from
    finite gradients (a NaN learning rate or optimiser setting) is not caught by the step's guard;
    such parameters are never checkpointed or returned."""
    bad = [jax.tree_util.keystr(path) for path, leaf in
           jax.tree_util.tree_flatten_with_path(jax.device_get(self.state.params))[0]
           if not np.all(np.isfinite(np.asarray(leaf)))]
    if bad:
      good = self.mngr.latest_step()
      raise NonFiniteError(
          f"the parameters at step {step} are not finite ({len(bad)} leaves, the first {bad[0]}) "
          f"although the steps' losses and gradients were: an update was non-finite, so check "
          f"the learning rate and the optimiser's settings for NaN or inf. The checkpoint of "
          f"step {step} was not written; "
          + (f"the last one is step {good} in {checkpoints.checkpoint_dir(self.workdir)}."
             if good is not None else "no checkpoint was written."))

  def save(self, step: int, force: bool = False) -> None:
    """Checks the parameters, then writes the state as the checkpoint of ``step``."""
    self.check_params(step)
    checkpoints.save(self.mngr, self.workdir, step, self.state, force=force)

  def close(self) -> None:
    self.mngr.close()
    self.log.close()
    self.lock.release()


def _open_run(workdir: str, params, optimizer, *, checkpoint_every: int, resume: bool,
              tensorboard) -> _Run:
  """Takes the workdir's lock, checks that checkpoints fit, opens the checkpoint manager and the
  metrics log, and on ``resume`` restores the newest intact checkpoint (logging the corrupt ones
  it skipped). The lock is released if any of this fails."""
  os.makedirs(workdir, exist_ok=True)
  lock = rundir.WorkdirLock(workdir).acquire()
  try:
    state = init_state(params, optimizer)
    state_bytes = sum(int(np.size(a)) * np.dtype(a.dtype).itemsize
                      for a in jax.tree.leaves(state) if hasattr(a, "dtype"))
    rundir.check_writable(workdir, int(1.2 * state_bytes * 3) + (1 << 20))
    mngr = checkpoints.checkpoint_manager(checkpoints.checkpoint_dir(workdir), checkpoint_every)
    restored_step, problems = None, []
    if resume and mngr.latest_step() is not None:
      restored_step, state, problems = checkpoints.restore_intact(mngr, workdir, state,
                                                                  delete_corrupt=True)
    tb = None
    if tensorboard:
      tb_dir = os.path.join(workdir, "tensorboard") if tensorboard is True else str(tensorboard)
      tb = rundir.TensorBoardWriter(tb_dir, restored_step)
    log = rundir.MetricsLog(os.path.join(workdir, "metrics.jsonl"), restored_step, tensorboard=tb)
    for bad_step, why in problems:
      log.write({"step": restored_step, "event": "corrupt_checkpoint_skipped",
                 "checkpoint_step": bad_step, "why": why})
  except BaseException:
    lock.release()
    raise
  return _Run(workdir, lock, mngr, log, state, restored_step)


# ----------------------------------------------------------------------------- loop body


def _stop_if_nonfinite(run: _Run, done: int, max_consecutive_nonfinite: int, start: int) -> None:
  """Logs a skipped (non-finite) step; raises :class:`NonFiniteError` after too many in a row."""
  in_a_row = int(run.state.nonfinite_in_a_row)
  if in_a_row:
    run.log.write({"step": done, "event": "nonfinite_skipped", "nonfinite_in_a_row": in_a_row,
                   "nonfinite_total": int(run.state.nonfinite_total)})
  if in_a_row < max_consecutive_nonfinite:
    return
  run.log.write({"step": done, "event": "stopped", "nonfinite_in_a_row": in_a_row,
                 "nonfinite_total": int(run.state.nonfinite_total)})
  good = run.mngr.latest_step()
  first_good = done - in_a_row   # steps before the run of non-finite ones
  where = (f"The last checkpoint is step {good} in {checkpoints.checkpoint_dir(run.workdir)}."
           if good is not None else "No checkpoint was written.")
  hint = ("the run never had a finite step: check the data and the initial parameters "
          "(and the loss) for NaN or inf" if first_good == 0 else
          f"the parameters became unusable after step {first_good}"
          + (" (very soon after the start: the learning rate is probably too large; "
             "lower it)" if first_good <= max(10, start + 10) else
             ": lower the learning rate, or clip gradients"))
  raise NonFiniteError(
      f"{in_a_row} consecutive steps had a non-finite loss or gradient (last at step "
      f"{done}, max_consecutive_nonfinite={max_consecutive_nonfinite}); stopping: "
      f"{hint}. {where}")


def _window_record(window: list, state: TrainState, done: int, steps_per_epoch: int,
                   learning_rate_fn) -> dict:
  """The metrics line of a window of steps: the means of every scalar metric over its finite
  steps, the non-finite counts and the learning rate."""
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
  return rec


# ----------------------------------------------------------------------------- epilogue


def _finish(run: _Run, num_steps: int, start: int) -> None:
  """Refuses a run whose every step was skipped, writes the final checkpoint, checks the
  parameters."""
  if num_steps > start and int(run.state.nonfinite_in_a_row) >= num_steps - start:
    # every step of this run was skipped (fewer than max_consecutive_nonfinite): nothing was
    # trained, which must not pass for a finished run
    raise NonFiniteError(
        f"all {num_steps - start} step(s) of this run had a non-finite loss, gradient or update "
        f"and were skipped, so the parameters were never changed: check the learning rate and "
        f"the optimiser's settings (NaN or inf), the data and the initial parameters")
  if run.mngr.latest_step() != num_steps:
    run.save(num_steps, force=True)
  run.check_params(num_steps)
  run.mngr.wait_until_finished()
