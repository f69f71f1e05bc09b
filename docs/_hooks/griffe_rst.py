"""A griffe extension: the Sphinx markup of dgmjax's docstrings, rendered by mkdocstrings.

The docstrings are Google style with two pieces of reStructuredText (DESIGN.md: "the formula as
one ``.. math::`` line"): roles such as ``:func:`~dgmjax.objectives.elbo``` and ``.. math::``
blocks. This extension rewrites them before mkdocstrings renders the docstring:

* a role becomes an *optional* autorefs cross-reference: a link when the target is documented,
  plain code otherwise (so a reference to a private helper never fails ``mkdocs build --strict``);
  a target without a module path is looked up next to the object (its class, then its module);
* an argument entry whose list of names wraps onto the next line (``a, b, c,`` then
  ``  d, e: as f``) is joined into one ``a, b, c, d, e: as f`` entry, which Google style needs;
* ``:math:`x``` becomes inline math ``\\(x\\)`` and a ``.. math::`` block (its first line and
  the more indented lines after it) becomes display math ``$$ ... $$`` for pymdownx.arithmatex.
"""

from __future__ import annotations

import html
import re

import griffe

_ROLE = re.compile(r":(?:py:)?(func|class|meth|attr|mod|data|obj|exc|const):`(~?)([^`<]+?)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def _scopes(obj: griffe.Object) -> list[str]:
  """Paths a bare name may be relative to: the object itself (a class), its parents, its module."""
  scopes, node = [], obj
  while node is not None:
    scopes.append(node.path)
    node = node.parent
  return scopes


def _lookup(pkg: griffe.Module, path: str):
  """The object at ``path`` in the package, or None."""
  if path == pkg.path:
    return pkg
  if not path.startswith(pkg.path + "."):
    return None
  try:
    return pkg[path[len(pkg.path) + 1:]]
  except Exception:  # pylint: disable=broad-except  (KeyError, or an alias that does not resolve)
    return None


def _canonical(obj) -> str:
  """The path an object is documented under: a re-export's target (mkdocstrings registers the
  target's path for every rendered alias, and renders the target itself on its module's page)."""
  try:
    return obj.final_target.path if obj.is_alias else obj.path
  except Exception:  # pylint: disable=broad-except  (an alias to outside the package)
    return obj.path


def _role_to_ref(match: re.Match, obj: griffe.Object, pkg: griffe.Module) -> str:
  _, tilde, target = match.groups()
  target = target.strip().lstrip(".")
  title = target.rsplit(".", 1)[-1] if tilde else target
  identifier = target
  candidates = [target] if target.startswith(pkg.path) else [
      f"{scope}.{target}" for scope in _scopes(obj)]
  for path in candidates:
    found = _lookup(pkg, path)
    if found is not None:
      identifier = _canonical(found)
      break
  return (f'<autoref identifier="{html.escape(identifier)}" optional>'
          f"<code>{html.escape(title)}</code></autoref>")


def _convert_math_blocks(text: str) -> str:
  lines, out, i = text.split("\n"), [], 0
  while i < len(lines):
    match = _MATH_BLOCK.match(lines[i])
    if not match:
      out.append(lines[i])
      i += 1
      continue
    indent = match["indent"]
    body = [match["first"].strip()] if match["first"].strip() else []
    i += 1
    while i < len(lines) and (not lines[i].strip() or
                              len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
      if not lines[i].strip():
        # A blank line ends the block unless more indented math follows it.
        nxt = next((l for l in lines[i + 1:] if l.strip()), "")
        if len(nxt) - len(nxt.lstrip()) <= len(indent):
          break
      body.append(lines[i].strip())
      i += 1
    out.extend([f"{indent}$$", *[f"{indent}{b}" for b in body if b], f"{indent}$$"])
  return "\n".join(out)


_NAMES_ONLY = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\**\w+(?:,[ \t]*\**\w+)*,)[ \t]*$")


def _join_wrapped_names(text: str) -> str:
  lines, out, i = text.split("\n"), [], 0
  while i < len(lines):
    line = lines[i]
    match = _NAMES_ONLY.match(line)
    while (match and i + 1 < len(lines) and lines[i + 1].strip()
           and len(lines[i + 1]) - len(lines[i + 1].lstrip()) > len(match["indent"])):
      i += 1
      line = f"{line.rstrip()} {lines[i].strip()}"
      match = _NAMES_ONLY.match(line)
    out.append(line)
    i += 1
  return "\n".join(out)


def rewrite(text: str, obj: griffe.Object, pkg: griffe.Module) -> str:
  """The docstring ``text`` of ``obj`` with its Sphinx roles and math in Markdown."""
  text = _join_wrapped_names(text)
  text = _convert_math_blocks(text)
  text = _MATH_ROLE.sub(lambda m: f"\\({m[1]}\\)", text)
  return _ROLE.sub(lambda m: _role_to_ref(m, obj, pkg), text)


class SphinxMarkup(griffe.Extension):
  """Rewrites every docstring once the package is loaded (all members are known then)."""

  def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:  # noqa: D102
    del kwargs
    seen = set()

    def visit(obj):
      if id(obj) in seen or obj.is_alias:
        return
      seen.add(id(obj))
      if obj.docstring is not None:
        obj.docstring.value = rewrite(obj.docstring.value, obj, pkg)
      for member in obj.members.values():
        if not member.is_alias:
          visit(member)

    visit(pkg)
