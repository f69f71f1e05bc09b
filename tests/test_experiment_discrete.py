"""Smoke tests of experiments/discrete: each study end to end on a tiny budget."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import distributions, gumbel
from dgmjax.models import categorical_vae
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


@pytest.mark.slow  # two more trained rows; VIMCO and NVIL are checked on every model in the default run
def test_categorical_vimco_and_nvil_rows(tmp_path):
  c = _tiny("categorical")
  c.estimators = ("vimco", "nvil")
  c.vimco_num_samples = 3
  c.nvil.hidden = (8,)
  out = train.run(c, str(tmp_path))
  v, n = out["runs"]["vimco"], out["runs"]["nvil"]
  assert (v["train_num_samples"], n["train_num_samples"]) == (3, 1)
  # the bound VIMCO trains, on discrete samples: L_3 lies between the ELBO and L_16
  assert v["test_nll_k16"] - 1.0 < v["test_neg_iwae_k3"] < v["test_neg_elbo_discrete"] + 1.0
  assert "test_neg_iwae_k1" not in n and n["jang_neg_elbo"] is None
  rows = [json.loads(l) for l in open(tmp_path / "nvil" / "metrics.jsonl") if "loss" in l]
  assert rows and all(np.isfinite(r["baseline_loss"]) for r in rows)
  assert all("baseline_loss" not in r for r in
             (json.loads(l) for l in open(tmp_path / "vimco" / "metrics.jsonl")))
  for est in ("vimco", "nvil"):
    for f in out["runs"][est]["figures"].values():
      assert os.path.isfile(tmp_path / est / f)


def _old_loss(model, params, x, key, tau, estimator):
  """The categorical VAE's training loss before the model contract (``CategoricalVAE.loss``)."""
  xf = x.reshape(x.shape[0], -1)
  logits = model.encoder_logits(params, x)
  kl = jnp.sum(distributions.kl_categorical_uniform(logits), axis=-1)
  if estimator == "reinforce":
    idx = gumbel.gumbel_max(key, logits)
    y = jax.nn.one_hot(idx, model.num_classes, dtype=logits.dtype)
    recon = distributions.bernoulli_log_prob(xf, model.decoder_logits(params, y))
    log_q = jnp.sum(distributions.categorical_log_prob(idx, logits), axis=-1)
    f = jax.lax.stop_gradient(recon)
    baseline = (jnp.sum(f) - f) / (recon.shape[0] - 1)
    surrogate = recon + (f - baseline) * (log_q - jax.lax.stop_gradient(log_q))
  else:
    y = gumbel.gumbel_softmax(key, logits, tau, hard=estimator == "st")
    recon = distributions.bernoulli_log_prob(xf, model.decoder_logits(params, y))
    surrogate = recon
  return -jnp.mean(surrogate - kl), jnp.mean(recon - kl)


@pytest.mark.parametrize("est", ["gumbel", "st", "reinforce"])
def test_categorical_losses_match_the_old_estimators(est):
  """Value, ELBO and gradient of each ported estimator equal the old inline ones (whose sample
  used the step key itself; the contract's K = 1 sample uses ``split(key, 1)[0]``)."""
  c = _tiny("categorical")
  model = categorical_vae.CategoricalVAE((4, 4, 1), 3, 4, (8,))
  params = model.init(jax.random.key(0))
  x = (jax.random.uniform(jax.random.key(1), (5, 4, 4, 1)) > 0.5).astype(jnp.float32)
  step = 2500
  tau = categorical_vae.jang_temperature(step, initial=c.tau_initial, minimum=c.tau_min,
                                         rate=c.tau_rate, every=c.tau_every)
  loss_fn = train.categorical_loss(model, est, c)
  (new, m), g_new = jax.value_and_grad(loss_fn, has_aux=True)(params, x, jax.random.key(2), step)
  (old, old_elbo), g_old = jax.value_and_grad(
      lambda p: _old_loss(model, p, x, jax.random.split(jax.random.key(2), 1)[0], tau, est), has_aux=True)(params)
  np.testing.assert_allclose(new, old, rtol=1e-5)
  np.testing.assert_allclose(m["elbo"], old_elbo, rtol=1e-5)
  np.testing.assert_allclose(m["temperature"], tau)
  for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_nvil_baseline_is_trained_apart_from_the_model():
  c = _tiny("categorical")
  c.nvil.hidden = (8,)
  model = categorical_vae.CategoricalVAE((4, 4, 1), 3, 4, (8,))
  x = (jax.random.uniform(jax.random.key(1), (5, 4, 4, 1)) > 0.5).astype(jnp.float32)
  params = train.categorical_params(model, "nvil", c, x)
  assert set(params) == {"params", "baseline"}
  plain = train.categorical_params(model, "reinforce", c, x)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves({"params": params["params"]})):
    np.testing.assert_array_equal(a, b)  # the same initial model weights as every other row
  (_, m), g = jax.value_and_grad(train.categorical_loss(model, "nvil", c), has_aux=True)(
      params, x, jax.random.key(3), 0)
  assert m["baseline_loss"] > 0
  assert any(np.abs(a).max() > 0 for a in jax.tree.leaves(g["baseline"]))
  # the same samples as REINFORCE (same key): the same bound; the loss adds the regression
  _, m_reinforce = train.categorical_loss(model, "reinforce", c)(plain, x, jax.random.key(3), 0)
  np.testing.assert_allclose(m["bound"], m_reinforce["bound"], rtol=1e-6)
  loss, _ = train.categorical_loss(model, "nvil", c)(params, x, jax.random.key(3), 0)
  np.testing.assert_allclose(loss, -m["bound"] + m["baseline_loss"], rtol=1e-6)


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
  c.estimators = ("gumbel", "rws")
  with pytest.raises(ValueError, match="estimators must be among"):
    train.run(c, str(tmp_path))
  c = quick.get_config("categorical")
  c.study = "nope"
  with pytest.raises(ValueError, match="config.study"):
    train.run(c, str(tmp_path))
  with pytest.raises(ValueError, match="bad config string .vq.: unknown study.*categorical"):
    quick.get_config("vq")
