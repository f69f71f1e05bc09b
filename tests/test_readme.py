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


def test_readme_bring_your_own_model_example_runs_as_written():
  import numpy as np
  text = open(os.path.join(REPO_ROOT, "README.md")).read()
  section = text[text.index("## Bring your own model"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  out, scope = io.StringIO(), {}
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), scope)
  printed = out.getvalue().strip()
  assert printed and f"prints `{printed}`" in section
  ll = np.asarray(scope["ll"])
  assert ll.shape == (64,) and np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_readme_links_to_files_in_the_repository_exist():
  text = open(os.path.join(REPO_ROOT, "README.md")).read()
  targets = re.findall(r"\]\(([^)#\s]+)\)", text)
  local = [t for t in targets if not re.match(r"[a-z]+://", t)]
  assert local, "the README links result files"
  missing = [t for t in local if not os.path.exists(os.path.join(REPO_ROOT, t))]
  assert not missing, f"README links to missing files: {missing}"
