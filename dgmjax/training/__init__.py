"""Training: the jitted step, the loop, schedules, checkpoints and the run directory.

A run is a pure function of its configuration and seed: the minibatch order of epoch ``e`` and the
PRNG key of step ``s`` (``fold_in(key(seed), s)``) are recomputed from ``e`` and ``s``, so a run
restored from a checkpoint at step ``s`` continues exactly as the uninterrupted run would.

Modules by job:

- ``step``: ``TrainState``, ``init_state``, ``step_key``, microbatches, ``make_train_step``
  (the jitted step with its NaN guard);
- ``loop``: ``fit``, any parameters trained on an image array with checkpoints and metrics;
- ``schedules``: Burda et al.'s passes and learning rates, ``burda_adam``, ``make_optimizer``;
- ``checkpoints``: save with checksums, ``verify_checkpoint``, ``restore``;
- ``rundir``: the workdir lock, the config record, ``MetricsLog``, ``TensorBoardWriter``.

Every public name is re-exported here: ``training.fit``, ``training.make_train_step``,
``training.restore``, ...
"""

from dgmjax.training.checkpoints import checkpoint_manager, restore, verify_checkpoint
from dgmjax.training.loop import NonFiniteError, epoch_order, fit
from dgmjax.training.rundir import (MetricsLog, TensorBoardWriter, WorkdirLock,
                                    WorkdirLockedError, config_changes, record_config)
from dgmjax.training.schedules import (BurdaAdamState, burda_adam, burda_epochs,
                                       burda_learning_rates, burda_num_steps, burda_schedule,
                                       check_learning_rate, make_optimizer)
from dgmjax.training.step import (LossFn, TrainState, auto_microbatch, init_state,
                                  make_train_step, resolve_microbatch, step_key)

#: The public API of the package.
__all__ = [
    "LossFn", "burda_epochs", "burda_learning_rates", "burda_schedule", "burda_num_steps",
    "BurdaAdamState", "burda_adam", "check_learning_rate", "make_optimizer", "TrainState", "init_state", "step_key",
    "auto_microbatch", "resolve_microbatch", "make_train_step", "epoch_order",
    "NonFiniteError", "TensorBoardWriter", "MetricsLog", "checkpoint_manager", "config_changes",
    "record_config", "WorkdirLockedError", "WorkdirLock", "verify_checkpoint",
    "restore", "fit",
]
