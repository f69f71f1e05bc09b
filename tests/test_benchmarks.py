"""The benchmarks' modules: the agreement check (dgmjax and the plain PyTorch peer compute the same
model), the FLOP model, the report of a saved run, and the shape of the package.

The agreement tests are skipped where PyTorch is not installed (CI installs only
requirements.txt; the peer's requirement is benchmarks/requirements.txt). Nothing here is timed.
"""

import ast
import json
import os

import jax
import numpy as np
import pytest

from benchmarks import agreement, cases, report
from tests.conftest import REPO_ROOT

BENCH_DIR = os.path.join(REPO_ROOT, "benchmarks")


@pytest.mark.parametrize("name", ["burda1", "burda2"])
def test_peer_agrees_with_dgmjax(name):
  pytest.importorskip("torch")
  with jax.debug_key_reuse(False):
    out = agreement.check_agreement(name, batch=4, num_samples=3)
  assert out["ok"]
  assert out["log_weights_rel"] < 1e-5 and out["eval_lse_rel"] < 1e-5
  assert out["grad_rel"]["vae"] < 1e-4 and out["grad_rel"]["iwae"] < 1e-4
  assert out["log_weights_rel_f64"] < 1e-10 and out["adam_step_rel_lr"] < 1e-10


def test_agreement_check_fails_loudly_on_a_wrong_peer(monkeypatch):
  torch = pytest.importorskip("torch")
  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  load = torch_peer.load_dgmjax_params

  def off_by_a_little(model, params):  # a peer whose decoder output bias is 1e-3 off
    load(model, params)
    with torch.no_grad():
      model.decoder.out.bias.add_(1e-3)
    return model

  monkeypatch.setattr(torch_peer, "load_dgmjax_params", off_by_a_little)
  with jax.debug_key_reuse(False), pytest.raises(agreement.AgreementError,
                                                 match="log_weights_rel"):
    agreement.check_agreement("burda1", batch=2, num_samples=2)


def test_flop_model_counts_every_parameter_once():
  from dgmjax.models import vae  # pylint: disable=import-outside-toplevel
  for name in ("burda1", "burda2"):
    model = vae.make(name, (28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.key(0))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    layers = cases.dense_layers(model)
    assert sum(a * b + b for a, b, _, _ in layers) == n_params
    # forward FLOPs: per-image layers once, per-sample layers K times
    fwd1 = cases.matmul_flops(model, 1, 1, train=False)
    assert fwd1 == sum(2 * a * b for a, b, _, _ in layers)
    per_image = sum(2 * a * b for a, b, s, _ in layers if not s)
    want = 3 * (per_image + 10 * (fwd1 - per_image))
    assert cases.matmul_flops(model, 3, 10, train=False) == want


def test_peer_has_the_parameters_of_dgmjax():
  pytest.importorskip("torch")
  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  from dgmjax.models import vae  # pylint: disable=import-outside-toplevel
  params = jax.eval_shape(vae.make("burda2", (28, 28, 1)).init, jax.random.key(0))
  n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
  tm = torch_peer.burda_two_layer()
  assert sum(p.numel() for p in tm.parameters()) == n_params


def test_report_of_the_saved_cpu_run(capsys):
  with open(os.path.join(BENCH_DIR, "results", "cpu_2core_idle.json")) as f:
    res = json.load(f)
  report.finalize(res)
  report.print_report(res)
  text = capsys.readouterr().out
  assert "dgmjax vs PyTorch" in text and "training step (ms" in text
  assert res["eval_best"] and res["must_hold"]["train_faster_everywhere"]["ok"] in (True, False)
  for r in res["train"]:
    assert r["flop_fraction"] is None or r["flop_fraction"] > 0


def _imports(path):
  tree = ast.parse(open(path).read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module


def test_benchmarks_import_nothing_from_experiments_and_the_clis_stay_thin():
  files = sorted(f for f in os.listdir(BENCH_DIR) if f.endswith(".py"))
  assert "iwae_bench.py" not in files
  for f in files:
    bad = [m for m in _imports(os.path.join(BENCH_DIR, f)) if m.split(".")[0] == "experiments"]
    assert not bad, (f, bad)
  for cli in ("bench.py", "device_suite.py"):
    with open(os.path.join(BENCH_DIR, cli)) as fh:
      assert len(fh.readlines()) <= 400, cli
