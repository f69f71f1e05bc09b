"""Prints our Table 1 (MNIST test NLL and active units) beside Burda et al.'s numbers.

python -m experiments.iwae.table /work/runs/*      # workdirs holding results.json
python -m experiments.iwae.table --markdown DIR ...

Burda et al.'s numbers are for the full budget (3280 epochs, Table 1 of the paper); ours are for
whatever budget each workdir was trained with, which the table shows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys


# Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Table 1 (MNIST):
# (layers, objective, k) -> (test NLL in nats with k=5000, active units per stochastic layer).
BURDA_TABLE1 = {
    (1, "vae", 1): (86.76, (19,)),
    (1, "vae", 5): (86.47, (20,)),
    (1, "vae", 50): (86.35, (20,)),
    (1, "iwae", 1): (86.76, (19,)),
    (1, "iwae", 5): (85.54, (22,)),
    (1, "iwae", 50): (84.78, (25,)),
    (2, "vae", 1): (85.33, (16, 5)),
    (2, "vae", 5): (85.01, (17, 5)),
    (2, "vae", 50): (84.78, (17, 5)),
    (2, "iwae", 1): (85.33, (16, 5)),
    (2, "iwae", 5): (83.89, (21, 5)),
    (2, "iwae", 50): (82.90, (26, 7)),
}


def read_results(paths) -> list[dict]:
  """``results.json`` of each workdir (or results file) in ``paths``; others are skipped."""
  out = []
  for p in paths:
    f = os.path.join(p, "results.json") if os.path.isdir(p) else p
    if os.path.isfile(f):
      with open(f) as fh:
        r = json.load(fh)
      r["workdir"] = os.path.dirname(os.path.abspath(f))
      out.append(r)
  return out


def row_name(r: dict) -> str:
  """The Table 1 name of a run's training (``'vae'`` for the ELBO estimator, as in the paper),
  from its results."""
  est = r["estimator"]
  return "vae" if est == "elbo" else est


def rows(results: list[dict]) -> list[dict]:
  """One row per result, sorted like Table 1, with Burda's numbers attached."""
  table = []
  for r in results:
    key = (int(r["num_layers"]), row_name(r), int(r["k"]))
    burda = BURDA_TABLE1.get(key) if r.get("dataset") == "mnist" else None
    table.append({
        "layers": key[0], "objective": key[1], "k": key[2],
        "epochs": r["epochs"], "nll": r["test_nll"], "nll_stderr": r.get("test_nll_stderr"),
        "eval_k": r.get("eval_num_samples"), "test_examples": r.get("test_examples"),
        "active": "+".join(map(str, r["active_units"])),
        "burda_nll": burda[0] if burda else None,
        "burda_active": "+".join(map(str, burda[1])) if burda else None,
        "dataset": r.get("dataset"), "workdir": r["workdir"],
    })
  table.sort(key=lambda t: (t["dataset"] or "", t["layers"], t["objective"] != "vae", t["k"],
                            t["epochs"]))
  return table


def format_table(table: list[dict], *, markdown: bool = False) -> str:
  """The rows as aligned text or as a markdown table."""
  head = ["layers", "objective", "k", "epochs", "test NLL (ours)", "active (ours)",
          "NLL Burda (3280 ep)", "active Burda", "eval"]
  lines = []
  for t in table:
    nll = f"{t['nll']:.2f}" + (f" ± {t['nll_stderr']:.2f}" if t.get("nll_stderr") else "")
    lines.append([
        str(t["layers"]), t["objective"].upper(), str(t["k"]), f"{t['epochs']:g}", nll,
        t["active"], f"{t['burda_nll']:.2f}" if t["burda_nll"] else "-",
        t["burda_active"] or "-", f"k={t['eval_k']}, {t['test_examples']} test images"])
  if markdown:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(l) + " |" for l in lines]
    return "\n".join(out)
  widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
            for i, h in enumerate(head)]
  fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
  return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description="Our Table 1 beside Burda et al.'s.")
  p.add_argument("workdirs", nargs="+", help="workdirs (or results.json files); globs allowed")
  p.add_argument("--markdown", action="store_true", help="print a markdown table")
  a = p.parse_args(argv)
  paths = [q for w in a.workdirs for q in (sorted(glob.glob(w)) or [w])]
  results = read_results(paths)
  if not results:
    print("no results.json found in " + ", ".join(a.workdirs), file=sys.stderr)
    return 1
  print(format_table(rows(results), markdown=a.markdown))
  return 0


if __name__ == "__main__":
  sys.exit(main())
