"""``benchmarks/device_suite.py`` runs every section before it reaches a GPU.

The suite is run as a subprocess with ``--smoke`` (toy sizes, CPU): once with the PyTorch peer
(skipped where torch is not installed: CI installs only requirements.txt) and once with
``--no_torch``, so that the JAX sections run everywhere. Nothing here checks a timing.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import device_suite, report, timebox
from tests.conftest import REPO_ROOT, shared_data_dir

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "device_suite.py")


def _run_smoke(out_dir, *extra):
  env = dict(os.environ)
  data = shared_data_dir()
  if data:
    env["DGMJAX_DATA_DIR"] = data
  # a generous budget: on a loaded machine the toy cases still fit, nothing else grows with it
  cmd = [sys.executable, SCRIPT, "--smoke", "--budget_s", "240", "--out", str(out_dir), *extra]
  proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=420, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  with open(out_dir / "device_suite.json") as f:
    res = json.load(f)
  md = (out_dir / "device_suite.md").read_text()
  return proc, res, md


def _check_jax_sections(res, md):
  secs = res["sections"]
  assert list(secs) == list(report.SECTIONS)
  for name, rec in secs.items():
    assert rec["status"] in ("ok", "partial"), (name, rec.get("error"))
    assert "error" not in rec, (name, rec["error"])
    assert f"## {name}." in md
  assert res["env"]["tensorflow_imported"] is False
  assert res["env"]["ml_collections_imported"] is False
  a = secs["a"]["result"]
  assert a["matmul"]["tflops"]["jax_float32"] > 0 and a["bandwidth"]["jax_read_write_gbs"] > 0
  b = secs["b"]["result"]
  rows = [r for r in b["train"] if "dgmjax" in r]
  assert rows and all("error" not in r for r in b["train"])
  assert all(r["dgmjax"]["median"] > 0 and r["flop_fraction"] > 0 for r in rows)
  ev = [e for e in b["eval"] if e.get("side", "").startswith("dgmjax") and "seconds" in e]
  assert ev and all(e["seconds"] > 0 and 100 < e["nll"] < 1000 for e in ev)
  c = secs["c"]["result"]
  measured = [r for r in c["rows"] if "fused_steps_per_s" in r]
  assert measured and all("error" not in r for r in c["rows"])
  for r in measured:
    assert r["dispatch_steps_per_s"] > 0 and r["fused_steps_per_s"] > 0
    assert r["protocol_steps"] == 3280 * 2980
    assert r["protocol_hours"] == pytest.approx(
        r["protocol_steps"] / max(r["fused_steps_per_s"], r["dispatch_steps_per_s"]) / 3600)
  d = secs["d"]["result"]
  assert d["joint_dispatch_step_ms"] > 0 and d["joint_fused_step_ms"] > 0
  assert d["trained"]["steps"] >= 2 * d["plan"]["steps_per_dispatch"]
  assert d["speedup_fused"] > 0 and d["protocol_hours_together"] > 0
  assert all("test_nll" in r for r in d["rows"]) and len(d["rows"]) == len(d["runs"])
  assert secs["e"]["result"]["line"].startswith("SUMMARY: ")
  assert res["summary"].startswith("SUMMARY: ")
  return b


def test_smoke_with_the_pytorch_peer(tmp_path):
  pytest.importorskip("torch")
  proc, res, md = _run_smoke(tmp_path)
  b = _check_jax_sections(res, md)
  assert b["agreement"] and all(a["ok"] for a in b["agreement"]), b["agreement"]
  rows = [r for r in b["train"] if "dgmjax" in r]
  assert all(r["torch_eager"]["median"] > 0 and r["ratio_eager"]["median"] > 0 for r in rows)
  assert any(e.get("side") == "torch_eager" and "seconds" in e for e in b["eval"])
  assert proc.stdout.strip().splitlines()[-1].startswith("SUMMARY: ")


def test_smoke_without_torch(tmp_path):
  _, res, md = _run_smoke(tmp_path, "--no_torch")
  b = _check_jax_sections(res, md)
  assert res["env"]["torch_imported"] is False
  assert b["agreement"] == [{"case": "agreement check", "skipped": "no torch"}]


def test_budgets_scale_and_pass_unused_time_on():
  args = device_suite.parse_args(["--out", "/tmp/x", "--budget_s", "225", "--sections", "a,c,d"])
  assert args.budgets["b"] == pytest.approx(device_suite.BUDGET["b"] / 2)
  assert sum(args.budgets.values()) <= args.budget_s
  suite = timebox.Suite.__new__(timebox.Suite)
  suite.args, suite.t0 = args, 0.0
  suite.elapsed = lambda: 10.0
  # section a gets everything but what c and d keep for themselves
  assert suite.section_budget("a") == pytest.approx(225 - 10 - args.budgets["c"]
                                                    - args.budgets["d"])
  assert suite.section_budget("d") == pytest.approx(215)
  with pytest.raises(SystemExit):
    device_suite.parse_args(["--out", "/tmp/x", "--sections", "a,z"])
  with pytest.raises(SystemExit):
    device_suite.parse_args(["--out", "/tmp/x", "--budget", "q=3"])


def test_results_are_json_safe_and_render():
  res = {"suite": {"smoke": True, "wall_s": 1.0, "budget_s": 2.0}, "env": {"jax": "x"},
         "sections": {"e": {"title": "summary", "status": "ok", "wall_s": 0.0, "budget_s": 0.0,
                            "result": {"line": "SUMMARY: -"}, "skipped": []}}}
  clean = report.clean({"a": float("nan"), "b": (1, float("inf")), 3: None})
  assert clean == {"a": None, "b": [1, None], "3": None}
  assert "SUMMARY: -" in report.render_md(res)
  # a training case that failed renders as an error row (its traceback stays in the JSON)
  res["sections"]["b"] = {"title": "b", "status": "ok", "result": {"train": [
      {"model": "burda1", "B": 20, "K": 5, "error": "Traceback ..."}]}}
  assert "| burda1 | | 20 | 5 | error |" in report.render_md(res)
  assert report.summary_line(res).startswith("SUMMARY: ")
