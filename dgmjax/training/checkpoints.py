"""Checkpoints of a run: orbax writes, a sha256 record of every file, verified restores.

:func:`save` writes the whole training state of a step under ``workdir/checkpoints`` and records
the checksums of its files in ``workdir/checkpoint_checksums.json``; a resumed run takes the
newest checkpoint that verifies and loads (:func:`restore_intact`), and :func:`restore` reads the
parameters of a finished run without a loss or an optimiser.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def checkpoint_dir(workdir: str) -> str:
  """The checkpoints of the run in ``workdir``: ``workdir/checkpoints``."""
  return os.path.join(workdir, "checkpoints")


def checkpoint_manager(directory: str, every: int, max_to_keep: int = 2):
  """An orbax ``CheckpointManager`` saving every ``every`` steps (writes to a temporary directory,
  then renames it: a checkpoint is complete or absent)."""
  import orbax.checkpoint as ocp
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                         save_interval_steps=max(every, 1), create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)

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


def save(mngr, workdir: str, step: int, state, *, force: bool = False) -> None:
  """Writes ``state`` as checkpoint ``step`` of ``mngr`` (from :func:`checkpoint_manager` over
  ``workdir/checkpoints``) and records the checksums of its files.

  Raises:
    OSError: the checkpoint could not be written, naming the step and the directory.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  directory = checkpoint_dir(workdir)
  try:
    mngr.save(step, args=ocp.args.StandardSave(state), force=force)
    mngr.wait_until_finished()
    _record_checksum(workdir, directory, step, mngr.all_steps())
  except OSError as e:
    raise OSError(f"could not write the checkpoint of step {step} to {directory!r}: "
                  f"{e.strerror or e}") from None


def verify_checkpoint(workdir: str, step: int) -> str | None:
  """``None`` if checkpoint ``step`` of ``workdir`` matches its recorded checksums, else why not.

  A checkpoint written before checksums were recorded (no entry) is accepted as is.
  """
  directory = checkpoint_dir(workdir)
  want = _read_checksums(workdir).get(str(int(step)))
  if want is None:
    return None if os.path.isdir(_step_dir(directory, step)) else "missing"
  got = _digest(_step_dir(directory, step))
  missing = sorted(set(want) - set(got))
  if missing:
    return f"missing files {missing[:3]}"
  bad = sorted(k for k in want if got.get(k) != want[k])
  return f"checksum mismatch in {bad[:3]}" if bad else None


def restore_intact(mngr, workdir: str, template, log=None, *, delete_corrupt: bool = False):
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

  Reads ``workdir/checkpoints`` (as written by :func:`~dgmjax.training.loop.fit`) read-only, and
  ``workdir/config.json`` when the run wrote one (the experiment drivers do).

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
  directory = checkpoint_dir(os.path.abspath(workdir))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints directory in {workdir!r} (expected "
                            f"{directory}, written by training.fit)")
  mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    steps = sorted(int(s) for s in mngr.all_steps())
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}")
    if step == "latest":
      chosen, restored, _ = restore_intact(mngr, workdir, None)
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
