"""The benchmark's agreement check: dgmjax and the plain PyTorch peer compute the same model.

Skipped where PyTorch is not installed (CI installs only requirements.txt; the peer's requirement
is benchmarks/requirements.txt). Nothing here is timed.
"""

import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import REPO_ROOT  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))
import bench  # noqa: E402  pylint: disable=wrong-import-position
import torch_peer  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("name", ["burda1", "burda2"])
def test_peer_agrees_with_dgmjax(name):
  with jax.debug_key_reuse(False):
    out = bench.check_agreement(name, batch=4, num_samples=3)
  assert out["ok"]
  assert out["log_weights_rel"] < 1e-5 and out["eval_lse_rel"] < 1e-5
  assert out["grad_rel"]["vae"] < 1e-4 and out["grad_rel"]["iwae"] < 1e-4
  assert out["log_weights_rel_f64"] < 1e-10 and out["adam_step_rel_lr"] < 1e-10


def test_agreement_check_fails_loudly_on_a_wrong_peer(monkeypatch):
  load = torch_peer.load_dgmjax_params

  def off_by_a_little(model, params):  # a peer whose decoder output bias is 1e-3 off
    load(model, params)
    with torch.no_grad():
      model.decoder.out.bias.add_(1e-3)
    return model

  monkeypatch.setattr(torch_peer, "load_dgmjax_params", off_by_a_little)
  with jax.debug_key_reuse(False), pytest.raises(bench.AgreementError, match="log_weights_rel"):
    bench.check_agreement("burda1", batch=2, num_samples=2)


def test_flop_model_counts_every_parameter_once():
  from dgmjax.models import vae
  for name in ("burda1", "burda2"):
    model = vae.make(name, (28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.key(0))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    layers = bench.dense_layers(model)
    assert sum(a * b + b for a, b, _, _ in layers) == n_params
    # forward FLOPs: per-image layers once, per-sample layers K times
    fwd1 = bench.matmul_flops(model, 1, 1, train=False)
    assert fwd1 == sum(2 * a * b for a, b, _, _ in layers)
    per_image = sum(2 * a * b for a, b, s, _ in layers if not s)
    want = 3 * (per_image + 10 * (fwd1 - per_image))
    assert bench.matmul_flops(model, 3, 10, train=False) == want
  tm = torch_peer.burda_two_layer()
  assert sum(p.numel() for p in tm.parameters()) == n_params
