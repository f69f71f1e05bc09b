"""The documentation site builds strictly, and every Python block of its pages runs as written.

Conventions for the code blocks of ``docs/**/*.md`` (and of ``README.md``, run by
``tests/test_readme.py`` with the same runner):

* Every fenced ````` ```python ````` block runs, top to bottom, with the repository root as working
  directory. The blocks of one page share one namespace (a fresh one per page), like a doctest
  session, so a later block may use the names of an earlier one.
* Expected output: when a block is followed (blank lines apart) by a fenced block opened with
  ````` ```text title="Output" `````, the block's standard output must equal that block's text
  (line by line, trailing spaces ignored); when the paragraph after it starts with
  ``prints `...` ``, the output, stripped, must equal the text between the backticks. A block
  with neither may print anything.
* A block that cannot run in the test suite (it needs MNIST, an accelerator or long training) is
  marked by the HTML comment ``<!-- docs-test: skip (the reason) -->`` on the line just before
  its fence; the comment does not show on the rendered page. Prefer a ````` ```bash ````` block
  for such code: shell blocks are the long experiments' commands and are never run.
* Blocks included from the README with the snippets syntax (``--8<-- "README.md:name"``) are not
  seen here: they run as part of the README.

``mkdocs build --strict`` fails on a broken link, a link to a repository file that does not
exist, an API reference (``[name][dgmjax.module.name]``) to an object that is not documented, and
a docstring that does not render; the build takes about 10 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import importlib.util
import io
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

SKIP_MARK = re.compile(r"^<!--\s*docs-test:\s*skip\b.*-->$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<ticks>`{3,}|~{3,})\s*(?P<info>.*)$")
_OUTPUT_INFO = re.compile(r'^text\b.*\btitle="Output"')


@dataclasses.dataclass
class Block:
  """A Python code block of a page, with what the page says it prints (None: unchecked)."""
  code: str
  line: int            # 1-based line of the opening fence
  expected: str | None = None
  expected_kind: str | None = None    # "output block" or "prints"
  skip: bool = False


def _fences(lines):
  """(start, end, info) of every fenced block; ``end`` is the index of the closing fence."""
  i = 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    ticks, indent = m["ticks"], m["indent"]
    j = i + 1
    while j < len(lines):
      close = _FENCE.match(lines[j])
      if close and close["ticks"].startswith(ticks[0] * len(ticks)) and not close["info"].strip():
        break
      j += 1
    yield i, j, m["info"].strip(), indent
    i = j + 1


def _body(lines, start, end, indent):
  return "\n".join(l[len(indent):] if l.startswith(indent) else l for l in lines[start + 1:end])


def python_blocks(text: str) -> list[Block]:
  """The Python blocks of a Markdown page, with their expected output and skip marks."""
  lines = text.split("\n")
  fences = list(_fences(lines))
  blocks = []
  for n, (start, end, info, indent) in enumerate(fences):
    lang = info.split()[0].lower() if info else ""
    if lang not in ("python", "py", "python3"):
      continue
    block = Block(code=_body(lines, start, end, indent) + "\n", line=start + 1)
    before = next((l.strip() for l in reversed(lines[:start]) if l.strip()), "")
    block.skip = bool(SKIP_MARK.match(before))
    after = end + 1
    while after < len(lines) and not lines[after].strip():
      after += 1
    if after < len(lines):
      nxt = fences[n + 1] if n + 1 < len(fences) else None
      if nxt is not None and nxt[0] == after and _OUTPUT_INFO.match(nxt[2]):
        block.expected = _body(lines, nxt[0], nxt[1], nxt[3])
        block.expected_kind = "output block"
      elif lines[after].lstrip().startswith("prints `"):
        rest = lines[after].lstrip()[len("prints `"):]
        if "`" not in rest:
          raise ValueError(f"line {after + 1}: 'prints `' without its closing backtick")
        block.expected = rest[:rest.index("`")]
        block.expected_kind = "prints"
    blocks.append(block)
  return blocks


def _same_output(printed: str, block: Block) -> bool:
  if block.expected_kind == "prints":
    return printed.strip() == block.expected.strip()
  strip = lambda s: [l.rstrip() for l in s.strip("\n").split("\n")]
  return strip(printed) == strip(block.expected)


def run_page(path: str) -> dict:
  """Runs the Python blocks of the page at ``path`` in one namespace; returns the namespace.

  Raises AssertionError naming the page and line of a block whose output differs from what the
  page shows (any exception of a block propagates, its traceback naming ``path:line``).
  """
  with open(path, encoding="utf-8") as fh:
    text = fh.read()
  rel = os.path.relpath(path, REPO_ROOT)
  scope = {"__name__": "__docs__"}
  cwd = os.getcwd()
  os.chdir(REPO_ROOT)
  try:
    for block in python_blocks(text):
      if block.skip:
        continue
      # Line numbers of tracebacks match the page: pad the code down to its first line.
      code = compile("\n" * block.line + block.code, rel, "exec", dont_inherit=True)  # as a script runs it
      out = io.StringIO()
      with contextlib.redirect_stdout(out):
        exec(code, scope)  # pylint: disable=exec-used
      printed = out.getvalue()
      if block.expected is not None:
        assert _same_output(printed, block), (
            f"{rel}:{block.line}: the block printed\n{printed}\nbut the page shows "
            f"({block.expected_kind})\n{block.expected}")
  finally:
    os.chdir(cwd)
  return scope


def _doc_pages():
  pages = sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "**", "*.md"), recursive=True))
  return [p for p in pages if "/_hooks/" not in p]


def _pages_with_python():
  out = []
  for page in _doc_pages():
    with open(page, encoding="utf-8") as fh:
      if any(not b.skip for b in python_blocks(fh.read())):
        out.append(os.path.relpath(page, REPO_ROOT))
  return out


# ----------------------------------------------------------------------------- the runner itself


def test_runner_reads_blocks_outputs_and_skip_marks():
  page = "\n".join([
      "Intro.", "", "```python", "print(1 + 1)", "```", "", "prints `2`.", "",
      "<!-- docs-test: skip (needs MNIST) -->", "```python", "raise SystemExit", "```", "",
      "```python", "for i in range(2):", "    print(i)", "```", "", '```text title="Output"',
      "0", "1", "```", "", "```bash", "python -c 'print(3)'", "```", "",
      "```python", "x = 3", "```", "", "```text", "not an output block", "```",
  ])
  blocks = python_blocks(page)
  assert [b.line for b in blocks] == [3, 10, 14, 28]
  assert (blocks[0].expected, blocks[0].expected_kind) == ("2", "prints")
  assert blocks[1].skip and not blocks[0].skip
  assert (blocks[2].expected, blocks[2].expected_kind) == ("0\n1", "output block")
  assert blocks[3].expected is None


def test_runner_fails_on_output_that_differs_from_the_page(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("```python\nx = 2\nprint(x)\n```\n\nprints `3`.\n"
                  "\n```python\nprint(x + 1)\n```\n")
  with pytest.raises(AssertionError, match="page shows"):
    run_page(str(page))
  page.write_text("```python\nx = 2\nprint(x)\n```\n\nprints `2`.\n\n```python\nprint(x + 1)\n```\n"
                  '\n```text title="Output"\n3\n```\n')
  assert run_page(str(page))["x"] == 2


def test_every_docs_page_with_python_is_found():
  pages = _pages_with_python()
  # Pages known to hold runnable examples; a page that loses them, or a parser that stops seeing
  # them, fails here rather than silently running nothing.
  for expected in ("docs/concepts.md", "docs/models.md", "docs/studies/flows.md",
                   "docs/studies/priors.md"):
    assert expected in pages, pages


# ----------------------------------------------------------------------------- the pages


@pytest.mark.parametrize("page", _pages_with_python())
def test_docs_page_python_blocks_run_and_print_what_the_page_shows(page):
  run_page(os.path.join(REPO_ROOT, page))


def test_skip_marks_give_a_reason():
  """A skipped block says why it cannot run here: ``<!-- docs-test: skip (reason) -->``."""
  for page in _doc_pages():
    lines = open(page, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
      if SKIP_MARK.match(line.strip()):
        assert re.search(r"skip\s*\(.+\)", line), f"{page}:{i + 1}: a skip mark needs a reason"


def test_mkdocs_build_strict(tmp_path):
  """``mkdocs build --strict``: every page, link, API reference and docstring renders."""
  if not os.environ.get("CI") and importlib.util.find_spec("mkdocs") is None:
    pytest.skip("mkdocs is not installed (pip install -r requirements.txt)")
  env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
  start = time.time()
  proc = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
       os.path.join(REPO_ROOT, "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  log = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"mkdocs build --strict failed after {time.time() - start:.0f} s:\n{log}"
  site = tmp_path / "site"
  for page in ("index.html", "concepts/index.html", "api/objectives/index.html",
               "studies/iwae/index.html", "benchmarks/index.html"):
    assert (site / page).is_file(), page
  # The API reference is generated from the docstrings, their math included.
  api = (site / "api" / "objectives" / "index.html").read_text()
  assert 'id="dgmjax.objectives.iwae_bound"' in api and 'class="arithmatex"' in api
  # Figures outside docs/ are served from the site, so the study pages show them.
  assert (site / "_repo" / "experiments" / "posterior_collapse" / "results" /
          "kl_per_epoch.png").is_file()


# Packages whose one API page documents their re-exported members (their files are private in
# all but name); every other public module of dgmjax needs a page of its own.
WHOLE_PACKAGE_PAGES = ("dgmjax.flows",)


def public_modules() -> list[str]:
  """Dotted names of dgmjax's public modules, from the source tree (no import)."""
  root = os.path.join(REPO_ROOT, "dgmjax")
  names = []
  for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
    parts = os.path.relpath(path, REPO_ROOT)[:-3].split(os.sep)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    if any(p.startswith("_") for p in parts) or parts == ["dgmjax"]:
      continue
    name = ".".join(parts)
    if any(name.startswith(pkg + ".") for pkg in WHOLE_PACKAGE_PAGES):
      continue
    names.append(name)
  return names


def test_every_public_module_has_an_api_page():
  modules = public_modules()
  for expected in ("dgmjax.objectives", "dgmjax.flows", "dgmjax.models", "dgmjax.models.vae"):
    assert expected in modules, modules
  text = "\n".join(open(p, encoding="utf-8").read() for p in _doc_pages())
  missing = [m for m in modules if f"::: {m}\n" not in text]
  assert not missing, (f"public modules without an API page: {missing}; add docs/api/<name>.md "
                       "holding '::: <module>' and list it in the nav of mkdocs.yml")
  with open(os.path.join(REPO_ROOT, "mkdocs.yml"), encoding="utf-8") as fh:
    nav = fh.read()
  pages = [os.path.relpath(p, os.path.join(REPO_ROOT, "docs")) for p in _doc_pages()]
  not_in_nav = [p for p in pages if p not in nav]
  assert not not_in_nav, f"pages missing from the nav of mkdocs.yml: {not_in_nav}"
