"""The README's example runs as written and prints what the README says."""

import contextlib
import io
import os
import re

from tests.conftest import REPO_ROOT


def test_readme_bounds_example_runs_as_written():
  text = open(os.path.join(REPO_ROOT, "README.md")).read()
  section = text[text.index("## Bounds in ten lines"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {})
  printed = out.getvalue().strip()
  assert printed and f"prints `{printed}`" in section
