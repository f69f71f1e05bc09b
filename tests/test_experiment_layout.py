"""The layout of experiments/: a study imports only experiments.common and its own folder, and
no module imports itself back through a circle."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")


def _modules() -> dict[str, str]:
  """``{dotted module name: path}`` of every Python file under experiments/."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(folder, f)
        parts = os.path.relpath(path, os.path.dirname(ROOT))[:-3].split(os.sep)
        if parts[-1] == "__init__":
          parts = parts[:-1]
        out[".".join(parts)] = path
  return out


def _imports(path: str, name: str, modules) -> set[str]:
  """The modules under experiments/ that the file imports (at any depth of its code)."""
  tree = ast.parse(open(path).read(), filename=path)
  package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        up = package.split(".")
        base = ".".join(up[:len(up) - node.level + 1] + ([base] if base else []))
      # `from experiments.common import data` imports experiments.common.data
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
      continue
    found.update(t for t in targets if t == "experiments" or t.startswith("experiments."))
  return found


def _study(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


MODULES = _modules()
GRAPH = {name: _imports(path, name, MODULES) for name, path in MODULES.items()}


def test_the_modules_are_found():
  assert "experiments.common.config" in MODULES and "experiments.iwae.main" in MODULES
  assert "experiments.common.data" in GRAPH["experiments.priors.train"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_study_imports_only_common_and_its_own_folder(module):
  own = _study(module)
  allowed = {"common", own}
  bad = sorted(t for t in GRAPH[module] if _study(t) not in allowed and t != "experiments")
  assert not bad, f"{module} imports another study: {bad}"


def test_common_imports_no_study():
  for module in MODULES:
    if _study(module) == "common":
      bad = [t for t in GRAPH[module] if _study(t) not in ("common", None)]
      assert not bad, f"{module} imports {bad}"


def _circle(graph) -> list[str] | None:
  """An import circle of ``graph`` (``{module: imported modules}``) as a path, or None."""
  state = {}  # module -> 1 (on the stack) or 2 (done)

  def visit(m, stack):
    state[m] = 1
    for t in sorted(graph.get(m, ())):
      if t not in graph:
        continue
      if state.get(t) == 1:
        return stack[stack.index(t):] + [t]
      if t not in state:
        found = visit(t, stack + [t])
        if found:
          return found
    state[m] = 2
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m, [m])
      if found:
        return found
  return None


def test_no_import_circle():
  circle = _circle(GRAPH)
  assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checks_catch_a_cross_study_import_and_a_circle(tmp_path):
  """The checker itself: a file importing a sibling study, and two modules importing each other."""
  a = tmp_path / "a.py"
  a.write_text("from experiments.iwae import train\nimport experiments.discrete.train\n"
               "def f():\n  from experiments.common import data\n")
  found = _imports(str(a), "experiments.priors.a", MODULES)
  assert found == {"experiments.iwae.train", "experiments.discrete.train",
                   "experiments.common.data"}
  assert sorted(t for t in found if _study(t) not in ("common", "priors")) == [
      "experiments.discrete.train", "experiments.iwae.train"]
  assert _circle({"x.a": {"x.b"}, "x.b": {"x.c"}, "x.c": {"x.a"}}) == ["x.a", "x.b", "x.c", "x.a"]
  assert _circle({"x.a": {"x.b"}, "x.b": set()}) is None
