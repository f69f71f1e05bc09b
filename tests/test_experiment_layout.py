"""The layout of experiments/: a study imports only experiments.common and its own folder, and
no module imports itself back through a circle."""

import pytest

from tests import import_graph

MODULES = import_graph.find_modules(("experiments",))
GRAPH = import_graph.graph(MODULES)


def test_the_modules_are_found():
  assert "experiments.common.config" in MODULES and "experiments.iwae.main" in MODULES
  assert "experiments.common.data" in GRAPH["experiments.priors.train"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_study_imports_only_common_and_its_own_folder(module):
  own = import_graph.study(module)
  allowed = {"common", own}
  bad = sorted(t for t in GRAPH[module] if import_graph.study(t) not in allowed
               and t != "experiments")
  assert not bad, f"{module} imports another study: {bad}"


def test_common_imports_no_study():
  for module in MODULES:
    if import_graph.study(module) == "common":
      bad = [t for t in GRAPH[module] if import_graph.study(t) not in ("common", None)]
      assert not bad, f"{module} imports {bad}"


def test_no_import_circle():
  circles = import_graph.circles(GRAPH)
  assert not circles, f"import circles: {circles}"


def test_the_checks_catch_a_cross_study_import_and_a_circle(tmp_path):
  """The checker itself: a file importing a sibling study, and two modules importing each other."""
  a = tmp_path / "a.py"
  a.write_text("from experiments.iwae import train\nimport experiments.discrete.train\n"
               "def f():\n  from experiments.common import data\n")
  found = import_graph.imports(str(a), "experiments.priors.a", MODULES)
  assert found == {"experiments.iwae.train", "experiments.discrete.train",
                   "experiments.common.data"}
  assert sorted(t for t in found if import_graph.study(t) not in ("common", "priors")) == [
      "experiments.discrete.train", "experiments.iwae.train"]
  assert import_graph.circles({"x.a": {"x.b"}, "x.b": {"x.c"}, "x.c": {"x.a"}}) == [
      ["x.a", "x.b", "x.c"]]
  assert not import_graph.circles({"x.a": {"x.b"}, "x.b": set()})
