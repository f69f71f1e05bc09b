"""Smoke tests of experiments/discrete: each study end to end on a tiny budget."""

import json
import os

import pytest

from experiments.discrete import train
from experiments.discrete.configs import categorical, codebook, quick, vqvae


def _tiny(study):
  c = quick.get_config(study)
  c.max_train_examples = 128
  c.batch_size = 64
  c.log_every_steps = 1
  c.eval.num_examples = 64
  if study == "categorical":
    c.estimators = ("gumbel", "reinforce")
    c.hidden_dims = (32,)
    c.eval.num_samples = 16
    c.eval.sample_chunk = 8
    c.eval.batch_size = 32
  else:
    c.features, c.hidden, c.embedding_dim, c.num_codes = 8, 4, 4, 8
    c.eval.batch_size = 64
    c.prior.batch_size = 64
  return c


def test_categorical_study(tmp_path):
  out = train.run(_tiny("categorical"), str(tmp_path))
  assert set(out["runs"]) == {"gumbel", "reinforce"}
  for est, r in out["runs"].items():
    assert r["test_neg_elbo_discrete"] > 0 and r["test_nll_k16"] > 0
    # L_16 is a tighter bound than the ELBO (both averaged over the same 64 images)
    assert r["test_nll_k16"] < r["test_neg_elbo_discrete"] + 1.0
    for f in r["figures"].values():
      assert os.path.isfile(tmp_path / est / f)
  assert json.load(open(tmp_path / "summary.json"))["runs"]["gumbel"]["jang_neg_elbo"] == 101.5


@pytest.mark.slow  # about a minute of CPU: two models, three priors, scan sampling
def test_vqvae_study_with_priors(tmp_path):
  c = _tiny("vqvae")
  out = train.run(c, str(tmp_path))
  for name, levels in (("vqvae", 1), ("vqvae2", 2)):
    r = out["runs"][name]
    assert r["levels"] == levels and len(r["codebook"]) == levels
    assert 0 < r["test_recon_bits_per_dim"] < r["test_bits_per_dim_uniform_prior"]
    # the uniform prior's cost is exactly M log N
    m = sum(h * w for h, w in r["code_maps"])
    assert r["uniform_prior_nats_per_image"] == pytest.approx(m * 2.0794415416798357)
    assert r["prior_nats_per_image"] > 0
    for f in r["figures"].values():
      assert os.path.isfile(tmp_path / name / f)


@pytest.mark.slow  # the collapse/restart numbers come from the experiment; see README
def test_codebook_study(tmp_path):
  c = _tiny("codebook")
  c.variants = {"bad_init": {"ema": False, "restart_every": 0},
                "bad_init_restarts": {"ema": False, "restart_every": 1}}
  out = train.run(c, str(tmp_path))
  for r in out["runs"].values():
    assert 1 <= r["codes_used"] <= 8 and r["perplexity"] <= r["codes_used"] + 1e-6


def test_configs_and_errors(tmp_path):
  assert categorical.get_config().num_vars == 20 and categorical.get_config().num_classes == 10
  assert vqvae.get_config().level_list == (1, 2) and codebook.get_config().init_offset == 5.0
  c = quick.get_config("categorical")
  c.study = "nope"
  with pytest.raises(ValueError, match="config.study"):
    train.run(c, str(tmp_path))
  with pytest.raises(ValueError, match="quick config"):
    quick.get_config("vq")
