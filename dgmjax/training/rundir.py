"""The run directory: its lock, the record of its config, its metrics log and TensorBoard files.

A run owns ``workdir`` while it trains (:class:`WorkdirLock`), records the settings it was
started with in ``workdir/config.json`` (:func:`record_config`, which refuses a resume with other
settings), and writes its metrics as JSON lines (:class:`MetricsLog`), optionally also as
TensorBoard event files (:class:`TensorBoardWriter`). Checkpoints are in
:mod:`dgmjax.training.checkpoints`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np


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


def check_writable(workdir: str, needed_bytes: int) -> None:
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


# ----------------------------------------------------------------------------- metrics


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
