"""Calls into dgmjax in a fresh interpreter, as a user's script makes them.

The test session checks the annotations of the core modules with jaxtyping and beartype
(``tests/conftest.py``), which refuses some bad arguments (a complex array for a ``Float`` hint)
before the library's own checks run. A user's script has no such hook: the library must refuse
them itself, naming the argument. :func:`errors_without_hook` runs the calls where only the
library's checks apply.
"""

import json
import os
import subprocess
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_RUNNER = """
import json
out = {}
for label, thunk in CASES.items():
  try:
    thunk()
    out[label] = None
  except Exception as err:  # pylint: disable=broad-except
    out[label] = [[c.__name__ for c in type(err).__mro__], str(err)]
print("RESULT" + json.dumps(out))
"""


def errors_without_hook(setup: str) -> dict:
  """Runs ``setup`` (which defines ``CASES``, a dict of label -> thunk) in a fresh interpreter.

  Returns, per label, ``None`` if the thunk returned, else ``(exception class names of its MRO,
  message)``.
  """
  code = textwrap.dedent(setup) + _RUNNER
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                        cwd=REPO_ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
  assert proc.returncode == 0 and lines, proc.stderr[-3000:]
  return json.loads(lines[-1][len("RESULT"):])


def assert_raises_naming(results: dict, names: dict, error: str = "TypeError",
                        says: str = "complex") -> None:
  """Every label raised ``error`` (a class name in its MRO) whose message names ``names[label]``
  and contains ``says``."""
  for label, name in names.items():
    got = results[label]
    assert got is not None, f"{label}: returned instead of raising"
    mro, msg = got
    assert error in mro, (label, mro, msg)
    assert name in msg and says in msg, (label, msg)
