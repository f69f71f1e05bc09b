"""The import graph of the repository: layers that data flows down, and no circle.

The layers of ``docs/architecture.md``, lowest first. A module may import its own layer and the
layers below it, never one above (an import inside a function counts too: it is a dependency all
the same). ``experiments/`` and ``benchmarks/`` sit above the library and never import each other;
a study never imports another study. Read from the source with :mod:`ast`, so nothing is run.
"""

from __future__ import annotations

import os

import pytest

from tests import import_graph
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


MODULES = import_graph.find_modules(("dgmjax", "experiments", "benchmarks"))
GRAPH = import_graph.graph(MODULES)


def _layer(module: str) -> int:
  best, rank = -1, None
  for i, (_, prefixes) in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > best:
        best, rank = len(p), i
  assert rank is not None, f"{module} is in no layer of LAYERS: add it"
  return rank


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
      own, other = import_graph.study(m), import_graph.study(t)
      if own and other and other not in ("common", own):
        bad.append(f"{m} imports {t}")
      if m.startswith("benchmarks") and t.startswith("experiments"):
        bad.append(f"{m} imports {t}")
  assert not bad, "\n".join(sorted(bad))


def test_no_import_circle():
  # A package's __init__ re-exports its modules, which may import siblings through it: faces are
  # left out of the circle check (their own imports are checked by the layer test).
  faces = {m for m, p in MODULES.items() if p.endswith("__init__.py")}
  without_faces = {m: {t for t in ts if t not in faces or t == m} for m, ts in GRAPH.items()}
  cycles = [c for c in import_graph.circles(without_faces) if not set(c) <= faces]
  assert not cycles, f"import circles: {cycles}"


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_each_layer_is_documented(layer):
  with open(os.path.join(REPO_ROOT, "docs", "architecture.md"), encoding="utf-8") as f:
    assert f"**{layer}**" in f.read()
