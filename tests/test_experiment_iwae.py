"""End-to-end tests of experiments/iwae: train_and_evaluate, data checks, resume, configs, table."""

import json
import os

import numpy as np
import pytest

from dgmjax import data
from experiments.common import burda
from experiments.common import data as run_data
from experiments.iwae import table, train
from experiments.iwae.configs import mnist, quick, quickstart


def _tiny_config():
  c = quick.get_config()
  c.model = "custom"
  c.latent_dims = (3,)
  c.hidden_dims = ((16,),)
  c.estimator = "iwae"
  c.num_samples = 3
  c.batch_size = 50
  c.num_passes = 2
  c.num_epochs = 2.0
  c.log_every_steps = 5
  c.checkpoint_every_epochs = 1.0
  c.progress = False
  c.eval.num_samples = 40
  c.eval.sample_chunk = 15
  c.eval.batch_size = 8
  c.eval.num_examples = 12
  c.eval.bound_ks = (5,)
  return c


_TIMING = ("train_seconds", "eval_seconds", "total_seconds", "resumed_from")


def test_train_and_evaluate_smoke(tmp_path):
  c = _tiny_config()
  c.microbatch = "25"  # two microbatches of 25 images per step
  res = burda.train_and_evaluate(c, str(tmp_path))
  assert res["microbatch"] == 25
  steps_per_epoch = len(data.load("digits", "train")["image"]) // 50
  assert res["dataset"] == "digits" and res["steps"] == 2 * steps_per_epoch
  assert res["test_elbo"] < res["test_iwae_5"] < 0
  assert res["test_nll"] == pytest.approx(-res["test_log_likelihood_40"])
  assert len(res["active_units"]) == 1 and 0 <= res["active_units"][0] <= 3
  for f in ("results.json", "config.json", "metrics.jsonl", "samples.png",
            "reconstructions.png", "training_curve.png"):
    assert os.path.isfile(tmp_path / f), f
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["test_nll"] == res["test_nll"]
  assert "test NLL" in train.format_results(res)


def test_resume_after_kill_gives_the_same_results(tmp_path):
  full = burda.train_and_evaluate(_tiny_config(), str(tmp_path / "a"))
  steps_per_epoch = len(data.load("digits", "train")["image"]) // 50
  checkpoint = -(-steps_per_epoch // 5) * 5  # one epoch, rounded up to a multiple of log_every
  c = _tiny_config()
  c.stop_after_steps = checkpoint + 3  # killed a few steps after the first checkpoint
  assert burda.train_and_evaluate(c, str(tmp_path / "b")) == {"stopped_at": checkpoint + 3}
  resumed = burda.train_and_evaluate(_tiny_config(), str(tmp_path / "b"), resume=True)
  assert resumed["resumed_from"] == checkpoint
  strip = lambda r: {k: v for k, v in r.items() if k not in _TIMING}
  assert strip(resumed) == strip(full)
  read = lambda d: open(d / "metrics.jsonl").read()
  assert read(tmp_path / "a") == read(tmp_path / "b")


def _patch_data(monkeypatch, images_by_split):
  def fake_load(name, split, *, data_dir=None):
    return {"image": images_by_split[split], "label": np.zeros(len(images_by_split[split]))}
  monkeypatch.setattr(data, "load", fake_load)


def test_resume_with_a_changed_training_setting_is_refused(tmp_path):
  c = _tiny_config()
  c.stop_after_steps = 5
  burda.train_and_evaluate(c, str(tmp_path))
  changed = _tiny_config()
  changed.learning_rate = 3e-4
  changed.seed = 7
  with pytest.raises(ValueError, match=r"learning_rate: 0.001 -> 0.0003; seed: 0 -> 7"):
    burda.train_and_evaluate(changed, str(tmp_path), resume=True)
  evaluation_only = _tiny_config()
  evaluation_only.eval.num_samples = 20           # evaluation settings may change on resume
  evaluation_only.stop_after_steps = 10
  assert burda.train_and_evaluate(evaluation_only, str(tmp_path), resume=True) == {
      "stopped_at": 10}
  allowed = burda.train_and_evaluate(changed, str(tmp_path), resume=True,
                                     allow_config_change=("learning_rate", "seed"))
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["learning_rate"] == 3e-4 and saved["resume_changes"][-1]["seed"] == {
      "saved": 0, "now": 7}
  assert allowed["steps"] > 10


@pytest.mark.parametrize("bad_split, images, match", [
    ("train", np.full((10, 8, 8, 1), 1.5, np.float32), r"digits/train image values must lie in \[0, 1\]"),
    ("test", -np.ones((10, 8, 8, 1), np.float32), r"digits/test image.*\[-1, -1\]"),
    ("test", np.zeros((10, 9, 9, 1), np.float32), "expects images of shape"),
    ("train", np.zeros((0, 8, 8, 1), np.float32), "train image split is empty"),
    ("test", np.zeros((0, 8, 8, 1), np.float32), "test image split is empty"),
])
def test_bad_data_raises_before_training(tmp_path, monkeypatch, bad_split, images, match):
  good = np.full((60, 8, 8, 1), 0.5, np.float32)
  splits = {"train": good, "validation": good, "test": good, bad_split: images}
  _patch_data(monkeypatch, splits)
  with pytest.raises(ValueError, match=match):
    burda.train_and_evaluate(_tiny_config(), str(tmp_path))
  assert not os.path.exists(tmp_path / "checkpoints")
  assert not os.path.exists(tmp_path / "metrics.jsonl")


def test_configured_image_shape_must_match_the_data(tmp_path):
  c = _tiny_config()
  c.image_shape = (28, 28, 1)
  with pytest.raises(ValueError, match=r"model expects images of shape \(28, 28, 1\)"):
    burda.train_and_evaluate(c, str(tmp_path))


@pytest.mark.parametrize("setting,match", [("7", "must divide config.batch_size=50"),
                                           ("half", "'auto', 'none' or a positive integer"),
                                           ("0", "'auto', 'none' or a positive integer")])
def test_bad_microbatch_raises_before_loading(tmp_path, monkeypatch, setting, match):
  monkeypatch.setattr(run_data, "load_images", lambda *a, **k: pytest.fail("data was loaded"))
  c = _tiny_config()
  c.microbatch = setting
  with pytest.raises(ValueError, match=match):
    burda.train_and_evaluate(c, str(tmp_path))


def test_configs():
  qs = quickstart.get_config()
  assert qs.dataset == "digits" and qs.eval.num_samples == 5000
  for obj in ("vae", "iwae"):
    for k in (1, 5, 50):
      for layers in (1, 2):
        c = mnist.get_config(f"{obj}-k{k}-l{layers}-full")
        want = "elbo" if obj == "vae" else obj   # the run name 'vae' trains the ELBO estimator
        assert (c.estimator, c.num_samples, c.dataset) == (want, k, "mnist")
        assert c.model == f"burda{layers}" and c.num_passes == 8 and not c.num_epochs
        assert c.batch_size == 20 and c.optimizer == "adam" and c.eval.num_samples == 5000
  s = mnist.get_config("iwae-k50-l1-short")
  assert s.num_passes == 3 and not s.num_epochs  # Burda's first 13 epochs
  assert mnist.get_config("vae-k1-l2-e5").num_epochs == 5.0
  ref = mnist.get_config("iwae-k5-l1-full-ref")
  assert ref.optimizer == "burda_adam" and ref.reference_rounding
  with pytest.raises(ValueError, match="config string"):
    mnist.get_config("iwae-50-l1")
  # Rainforth et al.'s objectives at a budget of M K = 64 samples.
  for arg, obj, k, m, beta in (("miwae-m8-k8-l1-e3", "miwae", 64, 8, None),
                               ("piwae-m8-k8-l1-e3", "piwae", 64, 8, None),
                               ("ciwae-b0.05-k64-l1-e3", "ciwae", 64, None, 0.05),
                               ("dreg-k64-l1-e3", "dreg", 64, None, None),
                               ("iwae-k64-l1-e3", "iwae", 64, None, None)):
    c = mnist.get_config(arg)
    assert (c.estimator, c.num_samples, c.num_groups, c.beta) == (obj, k, m, beta)
    assert c.num_epochs == 3.0 and c.model == "burda1"
  assert mnist.get_config("iwae-k5-l1-short").num_groups is None
  for bad, match in (("miwae-k8-l1-e3", "m<M>"), ("ciwae-k64-l1-e3", "b<beta>"),
                     ("ciwae-b2-k64-l1-e3", "b<beta>"), ("iwae-m8-k8-l1-e3", "unexpected"),
                     ("dreg-l1-e3", "config string")):
    with pytest.raises(ValueError, match=match):
      mnist.get_config(bad)


def test_table_prints_ours_beside_burda(tmp_path, capsys):
  for name, est, k, nll in (("a", "elbo", 1, 100.5), ("b", "iwae", 50, 97.25)):
    d = tmp_path / name
    d.mkdir()
    with open(d / "results.json", "w") as f:
      json.dump({"dataset": "mnist", "num_layers": 1, "estimator": est, "k": k, "epochs": 5.0,
                 "test_nll": nll, "test_nll_stderr": 0.8, "eval_num_samples": 5000,
                 "test_examples": 1000, "active_units": [30]}, f)
  assert table.main([str(tmp_path / "*")]) == 0
  out = capsys.readouterr().out
  assert "100.50" in out and "86.76" in out and "97.25" in out and "84.78" in out
  assert out.index("VAE") < out.index("IWAE")
  assert table.main(["--markdown", str(tmp_path / "*")]) == 0
  assert capsys.readouterr().out.startswith("| layers")
  assert table.BURDA_TABLE1[(2, "iwae", 50)] == (82.90, (26, 7))


def test_prepare_config_checks_the_estimator_and_leaves_the_callers_config_alone():
  c = _tiny_config()
  assert "objective" not in c                # one key per setting: `estimator`
  new = burda.prepare_config(c)
  assert new.estimator == "iwae" and new is not c
  c.estimator = "iwea"
  with pytest.raises(ValueError, match=r"config\.estimator must be one of .*'iwae'"):
    burda.prepare_config(c)
  c.estimator = "vae"                        # a run name of the config strings, not an estimator
  with pytest.raises(ValueError, match=r"config\.estimator must be one of"):
    burda.prepare_config(c)


def test_results_name_the_estimator_and_the_table_reads_it(tmp_path, capsys):
  d = tmp_path / "run"
  d.mkdir()
  with open(d / "results.json", "w") as f:
    json.dump({"dataset": "mnist", "num_layers": 1, "estimator": "elbo", "k": 1, "epochs": 5.0,
               "test_nll": 100.0, "test_nll_stderr": 0.8, "eval_num_samples": 5000,
               "test_examples": 1000, "active_units": [30]}, f)
  rows = table.rows(table.read_results([str(d)]))
  assert [r["objective"] for r in rows] == ["vae"]     # Burda's row name of the ELBO
  assert rows[0]["burda_nll"] == 86.76
  r = {"dataset": "digits", "estimator": "elbo", "k": 1, "num_layers": 1, "epochs": 1.0,
       "steps": 3, "train_seconds": 1.0, "test_elbo": -1.0, "eval_num_samples": 5,
       "test_nll": 1.0, "test_nll_stderr": 0.1, "test_examples": 3, "active_units": [1]}
  assert "ELBO k=1" in train.format_results(r)
