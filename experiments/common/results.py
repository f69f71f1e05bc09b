"""Results of the experiments: standard errors, JSON files and resumable parts of a study."""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np


def stderr(values, *, ddof: int = 1) -> float:
  r"""The standard error of the mean of ``values`` (numpy or jax, ``[n]``); 0 for ``n < 2``.

  .. math:: \mathrm{se} = \sqrt{\textstyle\sum_i (v_i - \bar v)^2 / (n - \mathrm{ddof})} / \sqrt{n}
  """
  values = values if hasattr(values, "std") else np.asarray(values)  # numpy or jax, as given
  if values.size < 2:
    return 0.0
  return float(values.std(ddof=ddof) / math.sqrt(values.size))


def write_json(path: str, obj, **kwargs) -> None:
  """``obj`` as JSON in ``path`` (indented by 2 unless ``indent`` is given)."""
  kwargs.setdefault("indent", 2)
  with open(path, "w") as f:
    json.dump(obj, f, **kwargs)


def part(workdir: str, name: str, resume: bool, compute):
  """``compute()``, saved as ``workdir/parts/<name>.json``; with ``resume`` a saved part is
  reused instead (its settings are those of ``config.json``, checked by the caller).

  Returns ``(value, seconds)``: the seconds ``compute`` took when it ran.
  """
  path = os.path.join(workdir, "parts", f"{name}.json")
  if resume and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    return saved["value"], saved["seconds"]
  t0 = time.perf_counter()
  value = compute()
  seconds = time.perf_counter() - t0
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"value": value, "seconds": seconds}, f)
  os.replace(tmp, path)
  return json.loads(json.dumps(value)), seconds
