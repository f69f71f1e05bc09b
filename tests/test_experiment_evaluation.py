"""End-to-end test of experiments/evaluation at toy size: the quick config's code path on digits."""

import json
import os

import numpy as np
import pytest

from dgmjax import objectives
from experiments.evaluation import study
from experiments.evaluation.configs import default, quick


def _toy(tmp_path):
  c = quick.get_config()
  c.dataset = "digits"
  c.runs_dir = str(tmp_path / "no_runs")
  c.models = ("vae-k1-l1-short", "iwae-k5-l1-short")
  c.retrain.model = "custom"
  c.retrain.latent_dims = (3,)
  c.retrain.hidden_dims = ((16,),)
  c.retrain.num_epochs = 1.0
  c.retrain.max_train_examples = 200
  c.retrain.eval_num_examples = 4
  c.retrain.eval_num_samples = 10
  c.num_test = 6
  c.is_ks = (10, 5000)
  c.is_sample_chunk = 1000
  c.is_batch_size = 6
  c.jvi.num_samples = 50
  c.jvi.batch_size = 6
  c.ais.temps = (2, 6)
  c.ais.num_chains = 4
  c.ais.batch_size = 6
  c.bdmc.num_examples = 4
  c.bdmc.temps = (2, 6)
  c.bdmc.num_chains = 2
  c.bdmc.pilot_chains = 1
  c.bdmc.batch_size = 4
  c.matmul_size = 128
  return c


def test_study_end_to_end_at_toy_size(tmp_path):
  c = _toy(tmp_path)
  work = tmp_path / "work"
  out = study.train_and_evaluate(c, str(work))
  for f in ("results.json", "table.md", "config.json", "ais_vs_T.png", "ais_vs_time.png",
            "bdmc_sandwich.png"):
    assert os.path.isfile(work / f), f
  with open(work / "results.json") as f:
    saved = json.load(f)
  assert saved["models"].keys() == out["models"].keys() == set(c.models)
  has_jvi = callable(getattr(objectives, "jackknife_bound", None))
  for name, r in saved["models"].items():
    assert r["info"]["source"] == "retrained" and r["info"]["run_dir"].endswith(name)
    per = {k: np.asarray(v) for k, v in r["per_image"].items()}
    assert all(v.shape == (6,) and np.all(np.isfinite(v)) for v in per.values())
    # L_5000 >= L_10 on average (IWAE bounds increase with k), and both below 0
    assert r["is"]["10"]["mean"] <= r["is"]["5000"]["mean"] + 0.05 < 0.05
    # the answer is the paired mean of AIS(T_max) - L_5000
    und = r["understatement_vs_ais"]
    assert und["T"] == 6
    np.testing.assert_allclose(und["mean"], np.mean(per["ais_6"] - per["is_5000"]), rtol=1e-9)
    assert [a["T"] for a in r["ais"]] == [2, 6]
    for a in r["ais"]:
      assert 0.0 <= a["acceptance"] <= 1.0 and a["log_weight_variance"] >= 0.0
      np.testing.assert_allclose(a["mean"], per[f"ais_{a['T']}"].mean(), rtol=1e-9)
    assert (r["jvi"] is not None) == has_jvi and (("jvi" in per) == has_jvi)
    for b in r["bdmc"]:
      np.testing.assert_allclose(b["gap"], b["upper"] - b["lower"], rtol=1e-6, atol=1e-9)
      np.testing.assert_allclose(b["upper_minus_is"]["mean"] - b["lower_minus_is"]["mean"],
                                 b["gap"], rtol=1e-6, atol=1e-6)
    s = r["speed"]
    ev = s["ais"]["decoder_evaluations"]
    assert ev == 6 * 4 * (5 * 11 + 2)                      # N S ((T-1)(L+1) + 2)
    assert s["is"]["decoder_evaluations"] == 6 * 5000
    for side in ("ais", "is"):
      assert s[side]["decoder_evaluations_per_second"] > 0
      assert 0 < s[side]["fraction_of_matmul_rate"]
  table = study.format_table(out)
  assert "VAE k=1" in table and "IWAE k=5" in table and "AIS - L_5000" in table
  assert "Speed:" in table
  # Wu et al. 2017's Table 1 beside ours: their AIS minus their k=10,000 bound, 1.22 nats
  assert "Wu et al. 2017, Table 1" in table and "AIS - L_10000 = +1.22" in table

  # a second look restores the retrained models instead of training again
  model, params, info = study.load_model(c, "iwae-k5-l1-short", str(work), (8, 8, 1))
  assert info["source"] == "restored" and info["objective"] == "iwae" and info["k"] == 5
  assert model.latent_dims == (3,)


def test_config_checks(tmp_path):
  assert default.get_config().models == default.MODELS
  c = _toy(tmp_path)
  c.is_ks = (10, 500)
  with pytest.raises(ValueError, match="is_ks"):
    study.train_and_evaluate(c, str(tmp_path / "a"))
  c = _toy(tmp_path)
  c.ais.temps = (0, 5)
  with pytest.raises(ValueError, match="ais.temps"):
    study.train_and_evaluate(c, str(tmp_path / "b"))
  c = _toy(tmp_path)
  c.retrain.enabled = False
  with pytest.raises(FileNotFoundError, match="retrain"):
    study.train_and_evaluate(c, str(tmp_path / "c"))
