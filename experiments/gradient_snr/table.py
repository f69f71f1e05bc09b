"""Rainforth et al.'s MNIST comparison at a budget of M K = 64 samples, ours beside theirs.

``python -m experiments.gradient_snr.table [--markdown] RUN_DIR ...`` reads the ``results.json``
of ``experiments.iwae`` runs (e.g. ``mnist.py:piwae-m8-k8-l1-e3``) and prints one row per run:
objective, samples, epochs, our k=5000 test log-likelihood (and its standard error) and the paper's.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys


# Test log p(x) (k = 5000) of Rainforth et al. (2018), Table 1 (MNIST, M K = 64, full budget).
RAINFORTH = {
    ("iwae", None, None): -84.52,
    ("miwae", 8, None): -84.97,
    ("piwae", 8, None): -84.46,
    ("ciwae", None, 0.05): -84.57,
    ("vae", None, None): -86.21,
}


def _objective(r: dict) -> str:
  """The run's training name in the paper's terms (``'vae'`` for the ELBO estimator), from its
  results."""
  est = r["estimator"]
  return "vae" if est == "elbo" else est


def _name(r: dict) -> str:
  obj = _objective(r)
  if obj in ("miwae", "piwae", "piwae_dreg"):
    m = r.get("num_groups") or 1
    return f"{obj.upper()}({m},{r['k'] // m})"
  if obj == "ciwae":
    return f"CIWAE({r.get('beta')})"
  if obj == "dreg":
    return "DReG-IWAE"
  return obj.upper()


def rows(paths) -> list[dict]:
  out = []
  for path in paths:
    f = os.path.join(path, "results.json")
    if not os.path.exists(f):
      continue
    with open(f) as fh:
      r = json.load(fh)
    obj = _objective(r)
    key = (obj, r.get("num_groups") if obj != "iwae" else None, r.get("beta"))
    paper = RAINFORTH.get(key)
    if obj == "vae":
      paper = RAINFORTH[("vae", None, None)]
    out.append({"name": _name(r), "k": r["k"], "epochs": r["epochs"],
                "ll": -r["test_nll"], "se": r["test_nll_stderr"], "n": r["test_examples"],
                "paper": paper, "run": os.path.basename(os.path.normpath(path))})
  return sorted(out, key=lambda row: -row["ll"])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--markdown", action="store_true")
  p.add_argument("runs", nargs="+", help="run directories (globs are expanded)")
  a = p.parse_args(argv)
  paths = sorted({q for r in a.runs for q in (glob.glob(r) or [r])})
  table = rows(paths)
  if not table:
    print("no results.json found", file=sys.stderr)
    return 1
  head = ["objective", "samples", "epochs", "test log p(x), ours", "Rainforth et al. (full budget)"]
  lines = []
  for r in table:
    paper = "-" if r["paper"] is None else f"{r['paper']:.2f}"
    lines.append([r["name"], str(r["k"]), f"{r['epochs']:g}",
                  f"{r['ll']:.2f} ± {r['se']:.2f} ({r['n']} images)", paper])
  if a.markdown:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for l in lines:
      print("| " + " | ".join(l) + " |")
  else:
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    for l in [head] + lines:
      print("  ".join(x.ljust(w) for x, w in zip(l, widths)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
