"""End-to-end smoke tests of experiments/posterior_collapse (tiny networks and budgets)."""

import json
import os

import numpy as np
import pytest

from experiments.posterior_collapse import train
from experiments.posterior_collapse.configs import default, quick


def _tiny(runs="mlp,deep_freebits"):
  c = quick.get_config(runs)
  c.max_train_examples = 128
  c.eval.diagnostics_examples = 48
  return c


def test_study_writes_table_diagnostics_and_figures(tmp_path):
  out = train.train_and_evaluate(_tiny(), str(tmp_path))
  assert list(out["runs"]) == ["mlp", "deep_freebits"]
  for name, r in out["runs"].items():
    for f in ("results.json", "metrics.jsonl", "kl_per_dimension.jsonl", "samples.png",
              "reconstructions.png"):
      assert os.path.exists(tmp_path / name / f), (name, f)
    assert r["test_nll"] <= -r["test_elbo"] + 1e-3          # L_k >= ELBO
    np.testing.assert_allclose(sum(r["kl_per_dimension"]), r["kl"], rtol=1e-6)
    assert 0.0 <= r["mutual_information"] <= r["log_num_examples"] + 1e-3
    assert 0 <= r["active_units"] <= 4
    rows = [json.loads(l) for l in open(tmp_path / name / "metrics.jsonl")]
    diag = [x for x in rows if "diag_kl" in x]
    assert len(diag) == 4                                  # 2 per epoch, 2 epochs
    assert all(np.isfinite(x["diag_mi"]) for x in diag)
  deep = out["runs"]["deep_freebits"]
  assert deep["decoder"] == "pixelcnn" and deep["free_bits"] == 0.25
  assert deep["receptive_field_pixels"] > 0
  # the free-bits run logs the dimensions under lambda; the plain run has none
  logs = [json.loads(l) for l in open(tmp_path / "deep_freebits" / "metrics.jsonl")]
  assert any("kl_below_free_bits" in x for x in logs)
  for f in ("summary.json", "kl_per_epoch.png", "kl_per_dimension.png", "samples.png",
            "config.json"):
    assert os.path.exists(tmp_path / f), f
  table = train.format_table(out)
  assert "deep_freebits" in table and "NLL(k=8)" in table


@pytest.mark.slow  # training.fit's exact resumption is tested in test_training and test_experiment_iwae
def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path):
  full = train.train_and_evaluate(_tiny("mlp"), str(tmp_path / "full"))
  c = _tiny("mlp")
  c.stop_after_steps = 8
  stopped = train.train_and_evaluate(c, str(tmp_path / "cut"))
  assert stopped == {"stopped_at": 8, "run": "mlp"}
  resumed = train.train_and_evaluate(_tiny("mlp"), str(tmp_path / "cut"), resume=True)
  a, b = full["runs"]["mlp"], resumed["runs"]["mlp"]
  for k in ("test_nll", "test_elbo", "kl", "mutual_information"):
    np.testing.assert_allclose(a[k], b[k], rtol=1e-5, err_msg=k)
  la = open(tmp_path / "full" / "mlp" / "metrics.jsonl").read().splitlines()
  lb = open(tmp_path / "cut" / "mlp" / "metrics.jsonl").read().splitlines()
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    x, y = json.loads(x), json.loads(y)
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_allclose(x[k], y[k], rtol=1e-5, err_msg=k)


def test_configs_and_bad_input(tmp_path):
  assert default.get_config().selected == default.TABLE_RUNS
  assert default.get_config("deep,weak").selected == ("deep", "weak")
  with pytest.raises(ValueError, match="config string"):
    default.get_config("deep,huge")
  c = _tiny("mlp")
  c.dataset = "mnist"   # grey levels: refused before any training
  with pytest.raises(ValueError, match="fixed-binarization"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not os.path.exists(tmp_path / "mlp")


class _Loaded(Exception):
  pass


def test_the_bound_is_checked_before_the_data_is_loaded(tmp_path, monkeypatch):
  seen = {}

  def fake_load(config, split):
    seen["bound"] = config.bound
    raise _Loaded

  monkeypatch.setattr(train, "_load", fake_load)
  c = _tiny("mlp")
  assert "objective" not in c                # one key per setting: `bound`
  c.bound = "iwae"
  with pytest.raises(_Loaded):
    train.train_and_evaluate(c, str(tmp_path))
  assert seen["bound"] == "iwae" and _tiny("mlp").bound == "elbo"
  c = _tiny("mlp")
  c.bound = "renyi"
  with pytest.raises(ValueError, match=r"config\.bound must be one of \['elbo', 'iwae'\]"):
    train.train_and_evaluate(c, str(tmp_path))


def test_resume_policy_allows_evaluation_settings_and_refuses_the_bound(tmp_path):
  from experiments.common import resume
  current = json.loads(_tiny("mlp").to_json_best_effort())
  resume.record_config(str(tmp_path), current, resume=False)
  later = dict(current, eval=dict(current["eval"], num_samples=7), progress=True)
  resume.record_config(str(tmp_path), later, resume=True)   # eval.* and progress may change
  assert "resume_changes" not in json.load(open(tmp_path / "config.json"))
  changed = dict(current, bound="iwae")
  with pytest.raises(ValueError, match=r"bound: 'elbo' -> 'iwae'"):
    resume.record_config(str(tmp_path), changed, resume=True)
