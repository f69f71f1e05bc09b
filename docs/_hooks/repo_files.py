"""MkDocs hook: pages link to repository files outside ``docs/`` (results, figures, examples).

A page writes the link as GitHub resolves it, relative to the page's own file, e.g.
``[summary.json](../../experiments/posterior_collapse/results/summary.json)`` from
``docs/studies/posterior_collapse.md``. MkDocs serves only ``docs/``, so this hook

* finds every such link (outside fenced code) whose target lies in the repository but outside
  ``docs/``, and adds the target to the site under ``_repo/<path in the repository>``;
* rewrites the link to that copy, so figures show and result files open in the built site;
* logs a warning for a link to a file that does not exist, which fails ``mkdocs build --strict``.

The same link therefore works on GitHub, in the built site, and is checked by the build.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re

from mkdocs.structure.files import File, InclusionLevel

log = logging.getLogger("mkdocs.hooks.repo_files")

PREFIX = "_repo"
# [text](target) and ![alt](target "title"); the target has no spaces.
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _outside_links(markdown: str):
  """(match, target) for each relative link outside fenced code blocks."""
  in_fence = False
  for line in markdown.split("\n"):
    if _FENCE.match(line):
      in_fence = not in_fence
      continue
    if in_fence:
      continue
    for match in _LINK.finditer(line):
      target = match.group(2)
      if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "/")):
        continue
      yield match, target


def _resolve(page_abs: str, target: str, docs_dir: str, repo_root: str):
  """The repository-relative path of ``target`` if it points outside docs/, else None."""
  path = target.split("#", 1)[0]
  if not path:
    return None
  absolute = os.path.normpath(os.path.join(os.path.dirname(page_abs), path))
  if absolute == docs_dir or absolute.startswith(docs_dir + os.sep):
    return None
  if not absolute.startswith(repo_root + os.sep):
    return None
  return os.path.relpath(absolute, repo_root).replace(os.sep, "/")


def on_files(files, config):
  docs_dir = os.path.abspath(config["docs_dir"])
  repo_root = os.path.dirname(docs_dir)
  wanted = {}
  for page in files.documentation_pages():
    with open(page.abs_src_path, encoding="utf-8") as fh:
      text = fh.read()
    for _, target in _outside_links(text):
      rel = _resolve(page.abs_src_path, target, docs_dir, repo_root)
      if rel is None:
        continue
      if not os.path.isfile(os.path.join(repo_root, rel)):
        log.warning("Doc file '%s' links to '%s', but the repository has no file '%s'.",
                    page.src_uri, target, rel)
        continue
      wanted[rel] = os.path.join(repo_root, rel)
  for rel, absolute in sorted(wanted.items()):
    # A linked Markdown file (a results table) becomes a page of its own, outside the nav.
    files.append(File.generated(config, f"{PREFIX}/{rel}", abs_src_path=absolute,
                                inclusion=InclusionLevel.NOT_IN_NAV))
  return files


def on_page_markdown(markdown, page, config, files):
  del files
  docs_dir = os.path.abspath(config["docs_dir"])
  repo_root = os.path.dirname(docs_dir)
  page_dir = posixpath.dirname(page.file.src_uri)
  replacements = {}
  for match, target in _outside_links(markdown):
    rel = _resolve(page.file.abs_src_path, target, docs_dir, repo_root)
    if rel is None or not os.path.isfile(os.path.join(repo_root, rel)):
      continue
    anchor = "#" + target.split("#", 1)[1] if "#" in target else ""
    new = posixpath.relpath(f"{PREFIX}/{rel}", page_dir or ".") + anchor
    replacements[match.group(0)] = match.group(1) + new + match.group(3)
  out, in_fence = [], False
  for line in markdown.split("\n"):
    if _FENCE.match(line):
      in_fence = not in_fence
    elif not in_fence:
      for old, new in replacements.items():
        line = line.replace(old, new)
    out.append(line)
  return "\n".join(out)
