"""The repository's import graph, read from the source with :mod:`ast` (nothing is run).

Used by ``tests/test_architecture.py`` (the layers of the whole repository) and
``tests/test_experiment_layout.py`` (the studies of ``experiments/``). An import inside a function
counts too: it is a dependency all the same.
"""

from __future__ import annotations

import ast
import os

from tests.conftest import REPO_ROOT


def find_modules(tops: tuple[str, ...]) -> dict[str, str]:
  """``{dotted module name: path}`` of every Python file under the top-level folders ``tops``."""
  out = {}
  for top in tops:
    for root, _, files in os.walk(os.path.join(REPO_ROOT, top)):
      for f in files:
        if f.endswith(".py"):
          path = os.path.join(root, f)
          rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
          out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
  return out


def resolve(name: str, modules) -> str | None:
  """The module of ``modules`` that an import of ``name`` loads (its longest known prefix)."""
  while name:
    if name in modules:
      return name
    name = name.rpartition(".")[0]
  return None


def imports(path: str, module: str, modules) -> set[str]:
  """The modules of ``modules`` that the file ``path`` (module ``module``) imports, anywhere in
  its code; ``from a.b import c`` imports ``a.b.c`` where that is a module, else ``a.b``."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename=path)
  is_package = path.endswith("__init__.py")
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
      target = resolve(n, modules)
      if target and target != module:
        found.add(target)
  return found


def graph(modules) -> dict[str, set[str]]:
  """``{module: the modules it imports}`` over ``modules``."""
  return {m: imports(path, m, modules) for m, path in modules.items()}


def study(module: str) -> str | None:
  """The study folder of a module under ``experiments/`` (``common`` included), else None."""
  parts = module.split(".")
  return parts[1] if parts[0] == "experiments" and len(parts) > 1 else None


def circles(g) -> list[list[str]]:
  """The import circles of ``g`` (``{module: imported modules}``): its strongly connected
  components of more than one module, each sorted (Tarjan's algorithm)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in g.get(v, ()):
      if w not in g:
        continue
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

  for v in sorted(g):
    if v not in index:
      visit(v)
  return out
