"""The resume policy of the experiments: which config keys may change when a run is resumed.

A resumed run continues exactly what was trained, so :func:`record_config` refuses a changed
training setting; the evaluation settings, the progress bar and the tests' simulated kill
(:data:`RESUME_IGNORED`) may change freely.
"""

from __future__ import annotations

from dgmjax import training

#: Config keys (globs) that may differ between a run and its resumption.
RESUME_IGNORED = ("eval.*", "progress", "stop_after_steps")


def record_config(workdir: str, config: dict, *, resume: bool, allow_changes=False,
                  ignore=RESUME_IGNORED) -> dict:
  """:func:`dgmjax.training.record_config` under the experiments' resume policy.

  Writes ``workdir/config.json``, or on ``resume`` refuses a setting that differs from it (other
  than the keys of ``ignore``) unless ``allow_changes`` allows it (``True`` or key globs).
  """
  return training.record_config(workdir, config, resume=resume, allow_changes=allow_changes,
                                ignore=ignore)


def config_changes(saved: dict, config: dict, *, ignore=RESUME_IGNORED) -> dict:
  """``{dotted key: (saved, current)}`` of the settings that differ, the keys of ``ignore``
  left out (:func:`dgmjax.training.config_changes`)."""
  return training.config_changes(saved, config, ignore=ignore)
