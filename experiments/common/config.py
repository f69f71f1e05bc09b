"""Config handling shared by every experiment driver: flags, config strings, field checks.

* :func:`run` replaces ``absl.app.run(main)`` in each driver's ``main.py``. Its flag parser
  (:func:`parse_flags`) reports a bad ``--config`` in a few lines: an unknown key
  (``--config.evall.x=1``) names the key and lists the valid keys at that level (instead of
  ml_collections' ``KeyError`` traceback from inside absl's flag parsing), and an error raised by a
  config file's ``get_config(arg)`` is shown as its message only. A flag given twice replaces
  its earlier value, tuples included: ``--config.eval.bound_ks='(5,)' --config.eval.bound_ks=50``
  sets ``(50,)`` (ml_collections would concatenate repeated tuple flags into ``(5, 50)``); give a
  tuple once, as ``'(5, 50)'``.
* Config strings (``configs/mnist.py:iwae-k5-l1-e3``) are parsed strictly:
  :func:`parse_number`, :func:`parse_epochs` and :func:`parse_names` raise :class:`ValueError`
  listing the valid forms for any unknown or malformed part, never a silent default.
* :func:`check_fields` checks the numeric fields of a config (types and ranges, e.g. a negative
  ``eval.num_examples``) before a driver loads any data.
* The resume policy (which keys may change on ``--resume``) is :mod:`experiments.common.resume`.
"""

from __future__ import annotations

import fnmatch
import math
import re
import sys
from typing import Callable, Mapping, Sequence

import numpy as np


# ----------------------------------------------------------------------------- flags


def _fail(message: str) -> None:
  sys.stderr.write(message.rstrip() + "\nPass --helpshort or --helpfull to see help on flags.\n")
  sys.exit(1)


def _short_flag_error(message: str) -> str:
  """absl's flag error, with the traceback that ml_collections adds to a failing ``get_config``
  cut down to its last line (the exception and its message)."""
  if "Error whilst parsing config file" not in message:
    return message
  head = message.split("Error whilst parsing config file", 1)[0].strip()
  lines = [l.strip() for l in message.splitlines() if l.strip()]
  last = next((l for l in reversed(lines) if re.match(r"^[\w.]+(Error|Exception|Warning)\b", l)),
              lines[-1])
  return f"{head} {last}"


def _config_flags(flag_values) -> dict:
  """``{name: flag}`` of the ml_collections config-file flags defined in ``flag_values``."""
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  parser_type = getattr(config_flags, "ConfigFileFlagParser", None)
  if parser_type is None:  # the class lives in the private module in some versions
    from ml_collections.config_flags import config_flags as cf  # pylint: disable=import-outside-toplevel
    parser_type = cf.ConfigFileFlagParser
  return {name: flag_values[name] for name in list(flag_values)
          if isinstance(getattr(flag_values[name], "parser", None), parser_type)}


def _flag_arguments(argv: Sequence[str], name: str):
  """``(value of --name, [(dotted key, raw argument)] of the --name.<key> overrides)``."""
  value, overrides = None, []
  args = list(argv[1:])
  for i, a in enumerate(args):
    if not a.startswith("--"):
      continue
    flag, has_value, v = a[2:].partition("=")
    if not has_value:
      v = args[i + 1] if i + 1 < len(args) else ""
    if flag == name:
      value = v
    elif flag.startswith(name + "."):
      overrides.append((flag[len(name) + 1:], a))
  return value, overrides


def _field(config, key: str):
  """The value of the dotted ``key`` of ``config``, or None where it names no field."""
  node = config
  for part in key.split("."):
    if "[" in part or not hasattr(node, "keys") or part not in node.keys():
      return None
    node = node[part]
  return node


def last_override_wins(argv: Sequence[str], flag_values) -> list[str]:
  """``argv`` with only the last of the repeated ``--<config>.<key>`` overrides of a tuple field.

  ml_collections parses a tuple field's override as a multi-flag, so a repeated
  ``--config.eval.bound_ks=...`` is concatenated (``(5,)`` then ``(0, 5)`` gives ``(5, 0, 5)``);
  every other flag keeps its last value. Dropping the earlier occurrences makes a repeated tuple
  flag replace as well. Arguments after ``--`` are left alone.
  """
  argv = list(argv)
  end = argv.index("--") if "--" in argv else len(argv)
  for name, flag in _config_flags(flag_values).items():
    path, _ = _flag_arguments(argv[:end], name)
    spans = {}   # key -> [(start, stop)] of its occurrences in argv
    i = 1
    while i < end:
      a = argv[i]
      flag_name, has_value, _ = a[2:].partition("=") if a.startswith("--") else ("", "", "")
      stop = i + 1 if has_value or i + 1 >= end else i + 2
      if flag_name.startswith(name + "."):
        spans.setdefault(flag_name[len(name) + 1:], []).append((i, stop, bool(has_value)))
      i += 1
    repeated = {k: v for k, v in spans.items() if len(v) > 1}
    if path is None or not repeated:
      continue
    try:
      config = flag.parser.parse(path)
    except Exception:  # pylint: disable=broad-except  (absl reports it when it parses argv)
      continue
    drop = set()
    for key, occurrences in repeated.items():
      if isinstance(_field(config, key), tuple):
        for start, stop, has_value in occurrences[:-1]:
          drop.update(range(start, stop if not has_value else start + 1))
    argv = [a for j, a in enumerate(argv) if j not in drop]
    end -= len(drop)
  return argv


def unknown_key_message(config, key: str, flag: str = "config") -> str | None:
  """Why ``--<flag>.<key>`` names no field of ``config`` (listing the valid keys), or None."""
  node, done = config, []
  for part in key.split("."):
    if "[" in part:
      return None  # an index into a sequence field: left to ml_collections
    keys = list(node.keys()) if hasattr(node, "keys") else None
    if keys is None:
      return (f"--{flag}.{key}: {'.'.join(done)!r} is a {type(node).__name__} setting, not a "
              f"group of keys; set it as --{flag}.{'.'.join(done)}=...")
    if part not in keys:
      where = f" of {flag}.{'.'.join(done)}" if done else f" of --{flag}"
      return (f"--{flag}.{key}: unknown config key {'.'.join(done + [part])!r}; valid keys"
              f"{where}: {', '.join(sorted(map(str, keys)))}")
    node, done = node[part], done + [part]
  return None


def parse_flags(argv: Sequence[str], flag_values=None):
  """absl's flag parsing (``flags.FLAGS(argv)``) with short messages for a bad ``--config``.

  Use as ``app.run(main, flags_parser=parse_flags)`` (what :func:`run` does). A usage error
  exits with status 1 after one or two lines on stderr, as absl's own flag errors do.

  Args:
    argv: the command line (``sys.argv``).
    flag_values: the ``absl.flags.FlagValues`` to parse into (default ``flags.FLAGS``).
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    argv = last_override_wins(argv, flag_values)
    return flag_values(argv)
  except flags.Error as e:
    _fail(f"FATAL Flags parsing error: {_short_flag_error(str(e))}")
  except (KeyError, AttributeError, TypeError, IndexError) as e:
    for name, flag in _config_flags(flag_values).items():
      path, overrides = _flag_arguments(argv, name)
      if path is None or not overrides:
        continue
      try:
        config = flag.parser.parse(path)
      except Exception:  # pylint: disable=broad-except  (reported by absl below)
        continue
      for key, _ in overrides:
        message = unknown_key_message(config, key, name)
        if message is not None:
          _fail(f"FATAL Flags parsing error: {message}")
    raise e


def run(main: Callable) -> None:
  """``absl.app.run(main)`` with :func:`parse_flags` as the flag parser."""
  from absl import app  # pylint: disable=import-outside-toplevel
  app.run(main, flags_parser=parse_flags)


# ----------------------------------------------------------------------------- config strings


def config_string_error(arg: str, forms: str, why: str) -> ValueError:
  """A ``ValueError`` for the config string ``arg``: what is wrong and the valid forms."""
  return ValueError(f"bad config string {arg!r}: {why}. Valid forms: {forms}")


def parse_number(text: str, cast, *, what: str, arg: str, forms: str,
                 minimum: float | None = None, strict: bool = True):
  """``cast(text)`` (``int`` or ``float``), finite, and ``> minimum`` (``>=`` if not
  ``strict``); else :func:`config_string_error` naming ``what``."""
  try:
    if cast is int and not re.fullmatch(r"[0-9]+", text):
      raise ValueError
    value = cast(text)
  except ValueError:
    raise config_string_error(arg, forms, f"{what} must be {'an integer' if cast is int else 'a number'}, got {text!r}") from None
  if not math.isfinite(value):
    raise config_string_error(arg, forms, f"{what} must be finite, got {text!r}")
  if minimum is not None and (value <= minimum if strict else value < minimum):
    raise config_string_error(arg, forms, f"{what} must be {'>' if strict else '>='} "
                                          f"{minimum:g}, got {text!r}")
  return value


def parse_epochs(text: str, *, arg: str, forms: str, what: str = "the number of epochs") -> float:
  """A number of epochs: a finite number > 0 (``'0'``, ``'-1'``, ``'nan'`` raise)."""
  return float(parse_number(text, float, what=what, arg=arg, forms=forms, minimum=0.0))


def parse_names(arg: str, valid: Sequence[str], *, forms: str, all_names: Sequence[str] | None = None,
                what: str = "name") -> tuple[str, ...]:
  """A comma-separated list of distinct names from ``valid`` (``'all'`` for ``all_names``).

  Empty parts (``'a,,b'``), repeats and unknown names raise :func:`config_string_error`.
  """
  if all_names is not None and arg == "all":
    return tuple(all_names)
  parts = [s.strip() for s in arg.split(",")]
  if not arg.strip() or any(not p for p in parts):
    raise config_string_error(arg, forms, f"empty {what} in the list")
  unknown = [p for p in parts if p not in valid]
  if unknown:
    raise config_string_error(arg, forms, f"unknown {what}(s) {unknown}; valid: {list(valid)}")
  repeated = sorted({p for p in parts if parts.count(p) > 1})
  if repeated:
    raise config_string_error(arg, forms, f"{what}(s) {repeated} named more than once")
  return tuple(parts)


# ----------------------------------------------------------------------------- field checks

_KIND = re.compile(r"^(int|float|ints|floats)(>=|>)(-?[0-9.]+)$")


def _flatten(node, prefix: str = "") -> dict:
  out = {}
  items = node.items() if hasattr(node, "items") else []
  for k, v in items:
    name = f"{prefix}{k}"
    if hasattr(v, "items"):
      out.update(_flatten(v, name + "."))
    else:
      out[name] = v
  return out


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
  return (_is_int(v) or isinstance(v, (float, np.floating))) and math.isfinite(float(v))


def _check_value(key: str, value, kind: str) -> None:
  if kind == "fraction":
    if not (_is_real(value) and 0.0 <= float(value) <= 1.0):
      raise ValueError(f"config.{key} must be a number in [0, 1], got {value!r}")
    return
  m = _KIND.match(kind)
  if m is None:
    raise ValueError(f"unknown field kind {kind!r}")
  base, op, bound = m.group(1), m.group(2), float(m.group(3))
  word = {"int": "an int", "float": "a finite number", "ints": "a non-empty list of ints",
          "floats": "a non-empty list of finite numbers"}[base]
  expected = f"{word} {op} {bound:g}"
  seq = base.endswith("s")
  values = list(value) if seq and isinstance(value, (list, tuple)) else [value]
  if seq and (not isinstance(value, (list, tuple)) or not values):
    raise ValueError(f"config.{key} must be {expected}, got {value!r}")
  is_type = _is_int if base.startswith("int") else _is_real
  for v in values:
    if not is_type(v) or not (float(v) > bound if op == ">" else float(v) >= bound):
      raise ValueError(f"config.{key} must be {expected}, got {value!r}")


def check_fields(config, spec: Mapping[str, str]) -> None:
  """Checks the numeric fields of ``config`` named in ``spec`` (before any data is loaded).

  Args:
    config: a ``ConfigDict`` (or nested dict).
    spec: ``{key glob: kind}``: dotted keys such as ``'eval.num_examples'`` or ``'runs.*.free_bits'``;
      kinds ``'int>0'``, ``'int>=0'``, ``'float>0'``, ``'float>=0'`` (any bound), ``'ints>0'`` (a
      non-empty list), ``'fraction'`` (a number in [0, 1]). Ints refuse bools and floats; numbers
      must be finite. Keys absent from the config, or set to ``None`` (an unset placeholder), are
      skipped.

  Raises:
    ValueError: naming the first bad field (``config.<key>``), what it must be and its value.
  """
  flat = _flatten(config)
  for pattern, kind in spec.items():
    for key in sorted(k for k in flat if fnmatch.fnmatchcase(k, pattern)):
      if flat[key] is not None:
        _check_value(key, flat[key], kind)


def check_choice(key: str, value, valid: Sequence[str]) -> None:
  """Raises ValueError unless ``value`` is one of ``valid``."""
  if value not in valid:
    raise ValueError(f"config.{key} must be one of {list(valid)}, got {value!r}")
