"""The import graph of the repository: layers that data flows down, and no circle.

The layers of ``docs/architecture.md``, lowest first. A module may import its own layer and the
layers below it, never one above (an import inside a function counts too: it is a dependency all
the same). ``experiments/`` and ``benchmarks/`` sit above the library and never import each other;
a study never imports another study. Read from the source with :mod:`ast`, so nothing is run.
"""

from __future__ import annotations

import ast
import os

import pytest

from tests.conftest import REPO_ROOT

#: (layer, module prefixes), lowest first. A module belongs to the layer of its longest prefix.
LAYERS = (
    ("checks", ("dgmjax._checks",)),
    ("core", ("dgmjax.distributions", "dgmjax.gumbel", "dgmjax.objectives", "dgmjax.estimators",
              "dgmjax.vq", "dgmjax.flows", "dgmjax.priors", "dgmjax.numerics", "dgmjax.data",
              "dgmjax.plotting")),
    ("networks", ("dgmjax.nn",)),
    ("models", ("dgmjax.models",)),
    ("algorithms", ("dgmjax.losses", "dgmjax.inference", "dgmjax.diagnostics",
                    "dgmjax.evaluation")),
    ("training", ("dgmjax.training",)),
    ("parallel", ("dgmjax.parallel",)),
    ("package", ("dgmjax",)),
    ("experiments", ("experiments",)),
    ("benchmarks", ("benchmarks",)),
)


def _modules() -> dict[str, str]:
  """``{dotted module name: path}`` of every Python file of the library, experiments and
  benchmarks."""
  out = {}
  for top in ("dgmjax", "experiments", "benchmarks"):
    for root, _, files in os.walk(os.path.join(REPO_ROOT, top)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(root, f)
          rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
          out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
  """The repository module that an import of ``name`` loads (its longest known prefix)."""
  while name:
    if name in MODULES:
      return name
    name = name.rpartition(".")[0]
  return None


def _imports(module: str) -> set[str]:
  """The repository modules that ``module`` imports, anywhere in its file."""
  with open(MODULES[module], encoding="utf-8") as f:
    tree = ast.parse(f.read())
  is_package = MODULES[module].endswith("__init__.py")
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
      names = [f"{base}.{a.name}" for a in node.names]
    else:
      continue
    for n in names:
      target = _resolve(n)
      if target and target != module:
        found.add(target)
  return found


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
  best, rank = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > best:
        best, rank = len(p), i
  assert rank is not None, f"{module} is in no layer of LAYERS: add it"
  return rank


def _study(module: str) -> str | None:
  parts = module.split(".")
  return parts[1] if parts[0] == "experiments" and len(parts) > 1 else None


def test_every_module_is_in_a_layer():
  for m in MODULES:
    _layer(m)


def test_no_import_runs_back_up_the_layers():
  bad = []
  for m, targets in GRAPH.items():
    if m == "dgmjax":   # the package face imports its subpackages lazily, by name
      continue
    for t in targets:
      if _layer(t) > _layer(m):
        bad.append(f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})")
  assert not bad, "imports that run back up the layers:\n" + "\n".join(sorted(bad))


def test_the_core_and_the_networks_know_nothing_above_them():
  # The named rule of DESIGN.md, spelled out: the core does not import models or training.
  core = [m for m in MODULES if _layer(m) <= 1]
  for m in core:
    for t in GRAPH[m]:
      assert _layer(t) <= 1, f"core module {m} imports {t}"


def test_no_study_imports_another_study_and_benchmarks_import_no_experiment():
  bad = []
  for m, targets in GRAPH.items():
    for t in targets:
      if _study(m) and _study(t) and _study(t) not in ("common", _study(m)):
        bad.append(f"{m} imports {t}")
      if m.startswith("benchmarks") and t.startswith("experiments"):
        bad.append(f"{m} imports {t}")
  assert not bad, "\n".join(sorted(bad))


def _cycles() -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan's algorithm)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in GRAPH.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(GRAPH):
    if v not in index:
      visit(v)
  return out


def test_no_import_circle():
  # A package's __init__ re-exports its modules, which may import siblings through it: faces are
  # left out of the circle check (their own imports are checked by the layer test).
  faces = {m for m, p in MODULES.items() if p.endswith("__init__.py")}
  saved = dict(GRAPH)
  try:
    for m in list(GRAPH):
      GRAPH[m] = {t for t in saved[m] if t not in faces or t == m}
    cycles = [c for c in _cycles() if not set(c) <= faces]
  finally:
    GRAPH.update(saved)
  assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_each_layer_is_documented(layer):
  with open(os.path.join(REPO_ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
    assert f"**{layer}**" in f.read()
