"""The run prologue of the experiments: epochs -> steps, optimiser and schedule, the call into
:func:`dgmjax.training.fit` with the settings every config shares."""

from __future__ import annotations

import math
import sys

from dgmjax import training


def show_progress(config) -> bool:
  """``config.progress``, or (unset) whether stderr is a terminal."""
  p = config.get("progress")
  return sys.stderr.isatty() if p is None else bool(p)


def round_up(n: int, multiple: int) -> int:
  """The least positive multiple of ``multiple`` that is ``>= n``."""
  return max(multiple, int(math.ceil(n / multiple)) * multiple)


def steps_per_epoch(num_examples: int, batch_size: int, *, what: str = "training images") -> int:
  """``num_examples // batch_size`` (the remainder is dropped); ValueError when it is 0."""
  steps = num_examples // batch_size
  if steps < 1:
    raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} {what}")
  return steps


def epochs_to_steps(num_epochs: float, steps_per_epoch_: int) -> int:
  """The steps of ``num_epochs`` epochs, rounded to the nearest step."""
  return int(round(num_epochs * steps_per_epoch_))


def make_optimizer(config, steps_per_epoch_: int):
  """``(optimizer, schedule, num_steps)`` from ``config.schedule``: ``burda`` (Burda et al.'s
  passes of 3^i epochs, scaled to ``config.num_epochs`` if set) or ``constant``."""
  if config.schedule == "burda":
    schedule = training.burda_schedule(
        steps_per_epoch_, config.num_passes, num_epochs=config.get("num_epochs") or None,
        base_learning_rate=config.learning_rate, reference_rounding=config.reference_rounding)
    num_steps = training.burda_num_steps(steps_per_epoch_, config.num_passes,
                                         num_epochs=config.get("num_epochs") or None)
  elif config.schedule == "constant":
    if not config.get("num_epochs"):
      raise ValueError("schedule='constant' needs num_epochs")
    schedule = lambda step: config.learning_rate
    num_steps = epochs_to_steps(config.num_epochs, steps_per_epoch_)
  else:
    raise ValueError(f"schedule must be 'burda' or 'constant', got {config.schedule!r}")
  return training.make_optimizer(config.optimizer, schedule), schedule, num_steps


def fit(config, loss_fn, params, images, workdir: str, *, resume: bool, **kwargs):
  """:func:`dgmjax.training.fit` with the settings of ``config`` every study shares.

  ``batch_size``, ``seed``, the progress bar (:func:`show_progress`) and the tests' simulated
  kill (``stop_after_steps``) come from ``config``; everything else (optimizer, steps,
  checkpoint and log intervals, ...) is passed on as given. Returns ``(state, summary)``.
  """
  return training.fit(loss_fn, params, images, batch_size=config.batch_size, seed=config.seed,
                      workdir=workdir, resume=resume, progress=show_progress(config),
                      stop_after=config.get("stop_after_steps") or None, **kwargs)
