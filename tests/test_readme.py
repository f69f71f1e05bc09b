"""The README: short, its examples run as written and print what it says, its links exist, and
the installed wheel runs its ten-line example.

The README's Python blocks run with the runner of ``tests/test_docs.py`` (its conventions are
documented there): every block runs, and a block followed by ``prints `...` `` must print that.
"""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO_ROOT
from tests.test_docs import python_blocks, run_page

README = os.path.join(REPO_ROOT, "README.md")
MAX_LINES = 150


def _readme():
  with open(README, encoding="utf-8") as fh:
    return fh.read()


def _section(text, title):
  start = text.index(title)
  nxt = text.find("\n## ", start + len(title))
  return text[start:] if nxt < 0 else text[start:nxt]


def test_readme_is_a_front_door_of_at_most_150_lines():
  text = _readme()
  assert len(text.splitlines()) <= MAX_LINES, len(text.splitlines())
  for title in ("## Quickstart", "## Test", "## Bounds in ten lines", "## Bring your own model"):
    assert f"\n{title}" in text, title
  # The two commands: the offline main job and the tests.
  assert "python -m experiments.iwae.main --config=experiments/iwae/configs/quickstart.py" in (
      _section(text, "## Quickstart"))
  assert "```bash\npython -m pytest -q\n```" in _section(text, "## Test")


def test_readme_examples_run_as_written_and_print_what_the_readme_says():
  text = _readme()
  for title in ("## Bounds in ten lines", "## Bring your own model"):
    blocks = python_blocks(_section(text, title))
    assert blocks and blocks[0].expected_kind == "prints", f"{title}: a python block and its prints line"
  # Every block of the README runs in one namespace, each checked against its prints line.
  scope = run_page(README)
  ll = np.asarray(scope["ll"])        # the Bring-your-own-model example's k=1000 log p(x)
  assert ll.shape == (64,) and np.all(np.isfinite(ll)) and np.all(ll < 0)


def test_readme_links_to_files_in_the_repository_exist():
  text = _readme()
  targets = re.findall(r"\]\(([^)#\s]+)\)", text)
  local = [t for t in targets if not re.match(r"[a-z]+://", t)]
  assert local, "the README links the docs and repository files"
  missing = [t for t in local if not os.path.exists(os.path.join(REPO_ROOT, t))]
  assert not missing, f"README links to missing files: {missing}"
  assert any(t.startswith("docs/") for t in local), "the README links into the docs"


# ----------------------------------------------------------------------------- the built wheel

_WHEEL_SMOKE = '''
import os, re, sys
import jax, numpy as np
import dgmjax
from dgmjax import data, evaluation
from dgmjax.models import vae

assert os.path.realpath(dgmjax.__file__).startswith(os.path.realpath(sys.prefix)), dgmjax.__file__
try:  # installed beside the dependencies, declared by none of them
  import pytest
  raise AssertionError(f"an undeclared module imported: {pytest.__file__}")
except ModuleNotFoundError:
  pass
exec(compile(open("bounds.py").read(), "README.md", "exec"), {})

images = data.load("digits", "test")["image"][:50]
x = data.binarize(jax.random.key(0), images)
model = vae.make("burda1", x.shape[1:])
params = model.init(jax.random.key(1))
ll = evaluation.log_likelihood(model, params, x, jax.random.key(2), num_samples=5000)
assert ll.shape == (50,) and np.all(np.isfinite(ll)) and np.all(ll < 0), ll
print(f"k=5000 log-likelihood of 50 digits: finite, mean {np.mean(ll):.1f}")
'''


def _run(cmd, **kwargs):
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
  assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
  return proc.stdout


def test_readme_example_runs_from_the_built_wheel_in_a_clean_environment(tmp_path):
  """Builds the wheel from the package alone, installs it (non-editable, no dependencies) into a
  fresh virtual environment, and runs the README's ten-line example and a k=5000 log-likelihood
  of an untrained VAE on the embedded digits there.

  The new environment borrows the test interpreter's installed dependencies as plain path
  entries (a ``.pth`` file of directories: the ``.pth`` hooks found there, among them the editable
  install's finder, do not run), so nothing is downloaded and the source tree is not on the path:
  ``dgmjax`` must import from the installed wheel. A finder there refuses every borrowed module
  that no declared dependency of the wheel owns (its ``Requires-Dist``, followed transitively,
  plus scikit-learn for the embedded digits), and the installed versions must satisfy the
  declared ranges: the example runs as where only the declared dependencies are installed.
  """
  if os.environ.get("DGMJAX_SKIP_WHEEL_TEST") and not os.environ.get("CI"):
    pytest.skip("DGMJAX_SKIP_WHEEL_TEST is set")
  _build_install_and_run(tmp_path)


#: Imported by the new environment's ``.pth`` file after the borrowed directories: a finder that
#: lets a top-level module come from them only when a declared dependency of the wheel (its
#: ``Requires-Dist``, followed transitively, or scikit-learn for the embedded digits) owns it, so
#: the example runs as it would where only the declared dependencies are installed.
_GUARD = '''
import importlib.machinery, importlib.metadata as md, re, sys
from collections import deque

BORROWED = {borrowed!r}


def _name(text):
  return re.match(r"[A-Za-z0-9._-]+", text).group(0).lower().replace("_", "-").replace(".", "-")


def _declared():
  closure, todo = set(), deque(["dgmjax", "scikit-learn"])
  while todo:
    dist = _name(todo.popleft())
    if dist not in closure:
      closure.add(dist)
      try:
        todo.extend(r for r in md.distribution(dist).requires or [] if "extra ==" not in r)
      except md.PackageNotFoundError:
        pass
  return closure


class OnlyDeclared:
  """Refuses the borrowed top-level modules that no declared dependency owns."""

  def __init__(self):
    closure, self.owners = _declared(), md.packages_distributions()
    self.allowed = {{m for m, ds in self.owners.items() if any(_name(d) in closure for d in ds)}}

  def find_spec(self, name, path=None, target=None):
    if path is None and name not in self.allowed and name not in sys.builtin_module_names:
      if importlib.machinery.PathFinder.find_spec(name, BORROWED) is not None:
        raise ModuleNotFoundError(f"No module named {{name!r}} (not a declared dependency)",
                                  name=name)
    return None


sys.meta_path.insert(0, OnlyDeclared())
'''


def _build_install_and_run(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(os.path.join(REPO_ROOT, name), src / name)
  shutil.copytree(os.path.join(REPO_ROOT, "dgmjax"), src / "dgmjax",
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
  pip_env.pop("PYTHONPATH", None)
  _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
        str(src)], env=pip_env, timeout=600)
  wheels = list((tmp_path / "dist").glob("dgmjax-*.whl"))
  assert len(wheels) == 1, wheels
  with zipfile.ZipFile(wheels[0]) as whl:
    tops = {n.split("/")[0] for n in whl.namelist()}
    assert "dgmjax/py.typed" in whl.namelist()
    metadata = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in whl.read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
  assert {t for t in tops if not t.endswith(".dist-info")} == {"dgmjax"}, tops
  # The borrowed dependencies satisfy the wheel's declared ranges.
  needed = [Requirement(r) for r in requires if "extra ==" not in r]
  assert needed, requires
  for req in needed:
    assert req.specifier.contains(importlib.metadata.version(req.name), prereleases=True), req
  env_dir = tmp_path / "env"
  _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], timeout=300)
  python = str(env_dir / "bin" / "python")
  site_dir = _run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
  site_dir = site_dir.strip()
  _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
        str(wheels[0])], env=pip_env, timeout=600)
  # The dependencies: the test interpreter's site directories, as plain paths after the env's own,
  # guarded so that only the declared ones import.
  borrowed = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))
              and os.path.isdir(p) and not os.path.samefile(p, site_dir)]
  assert borrowed, sys.path
  with open(os.path.join(site_dir, "_only_declared.py"), "w", encoding="utf-8") as fh:
    fh.write(_GUARD.format(borrowed=borrowed))
  with open(os.path.join(site_dir, "_borrowed_dependencies.pth"), "w", encoding="utf-8") as fh:
    fh.write("".join(f"{p}\n" for p in borrowed) + "import _only_declared\n")
  # The package alone: no source tree on the path, run from an empty directory.
  work = tmp_path / "work"
  work.mkdir()
  text = _readme()
  bounds = python_blocks(_section(text, "## Bounds in ten lines"))[0]
  (work / "bounds.py").write_text(bounds.code)
  (work / "smoke.py").write_text(textwrap.dedent(_WHEEL_SMOKE))
  run_env = {k: v for k, v in pip_env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
  run_env["JAX_PLATFORMS"] = "cpu"
  out = _run([python, "-I", "smoke.py"], cwd=work, env=run_env, timeout=600)
  lines = out.strip().splitlines()
  assert lines[0] == bounds.expected, (lines, bounds.expected)
  assert lines[-1].startswith("k=5000 log-likelihood of 50 digits: finite"), lines
