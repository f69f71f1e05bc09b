"""End-to-end smoke tests of experiments/priors (tiny budgets on the embedded digits)."""

import json
import os

import numpy as np
import pytest

from experiments.priors import train
from experiments.priors.configs import mnist, quick


def _tiny(variants=("standard", "vamp"), two_d=False):
  c = quick.get_config()
  c.variants = variants
  c.num_epochs = 2.0
  c.num_passes = 1
  c.eval.num_examples = 40
  c.eval.batch_size = 20
  c.eval.num_samples = 50
  c.eval.sample_chunk = 25
  c.surgery.num_samples = 2
  c.surgery.batch_size = 20
  c.surgery.chunk_size = 20
  c.two_d.enabled = two_d
  c.two_d.priors = ("vamp",)
  c.two_d.num_epochs = 1.0
  c.two_d.num_examples = 60
  c.two_d.grid_size = 20
  c.progress = False
  return c


def test_priors_study_writes_results_figures_and_paired_differences(tmp_path):
  res = train.train_and_evaluate(_tiny(two_d=True), str(tmp_path))
  assert set(res["variants"]) == {"standard", "vamp"}
  for v, r in res["variants"].items():
    for name in ("results.json", "samples.png", "reconstructions.png", "training_curve.png",
                 "test_log_likelihood.npy"):
      assert os.path.exists(tmp_path / v / name), (v, name)
    # ELBO surgery: average KL = MI + marginal KL per draw; MI <= log N
    np.testing.assert_allclose(r["average_kl"], r["mutual_information"] + r["marginal_kl"],
                               rtol=1e-4, atol=1e-4)
    assert r["mutual_information"] <= r["log_num_examples"] + 1e-3
    assert r["test_elbo"] <= r["test_log_likelihood"] + 1e-3
    assert np.isfinite(r["test_nll"])
  # paired differences against the standard prior recompute from the per-image estimates
  ref = np.load(tmp_path / "standard" / "test_log_likelihood.npy")
  vamp = np.load(tmp_path / "vamp" / "test_log_likelihood.npy")
  np.testing.assert_allclose(res["variants"]["vamp"]["nll_minus_standard"], (ref - vamp).mean(),
                             rtol=1e-6)
  assert "nll_minus_standard" not in res["variants"]["standard"]
  for name in ("comparison.png", "two_d.png", "two_d.json", "results.json"):
    assert os.path.exists(tmp_path / name), name
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["paper"]["test_log_likelihood"]["vamp"] == -85.57
  table = train.format_table(res)
  assert "VampPrior" in table and "vs N(0, I)" in table


def test_mnist_config_variants_and_bad_names():
  assert mnist.get_config("vamp").variants == ("vamp",)
  assert not mnist.get_config("vamp").two_d.enabled
  with pytest.raises(ValueError, match="config string"):
    mnist.get_config("gmm")
  c = _tiny(variants=("standard", "laplace"))
  with pytest.raises(ValueError, match="laplace"):
    train.train_and_evaluate(c, "/nonexistent/never/created")


def test_bad_data_is_refused_before_training(tmp_path):
  c = _tiny(variants=("standard",))
  c.dataset = "no_such_dataset"
  with pytest.raises((ValueError, FileNotFoundError, KeyError)):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "standard" / "checkpoints")


def test_resume_with_a_changed_training_setting_is_refused(tmp_path):
  def tiny():
    c = _tiny(variants=("standard",))
    c.checkpoint_every_epochs = 1.0          # 25 steps of the 50
    return c

  c = tiny()
  c.stop_after_steps = 30                    # killed after the first checkpoint
  assert train.train_and_evaluate(c, str(tmp_path)) == {"stopped_at": 30, "variant": "standard"}
  assert json.load(open(tmp_path / "standard" / "config.json"))["estimator"] == "elbo"
  changed = tiny()
  changed.learning_rate = 3e-4
  with pytest.raises(ValueError, match=r"learning_rate: 0.001 -> 0.0003"):
    train.train_and_evaluate(changed, str(tmp_path), resume=True)
  changed.eval.num_samples = 20              # evaluation settings may change on resume
  res = train.train_and_evaluate(changed, str(tmp_path), resume=True,
                                 allow_config_change=("learning_rate",))
  r = res["variants"]["standard"]
  assert r["resumed_from"] == 25 and r["steps"] == 50   # continued from the checkpoint
  saved = json.load(open(tmp_path / "standard" / "config.json"))
  assert saved["learning_rate"] == 3e-4
  assert saved["resume_changes"][-1]["learning_rate"] == {"saved": 0.001, "now": 0.0003}
