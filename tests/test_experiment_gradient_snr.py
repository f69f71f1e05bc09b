"""Tests of experiments/gradient_snr: the toy model on the contract, the toy study end to end, and
the MNIST study reading a run's checkpoints (tiny budgets)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import models, objectives
from experiments.common import burda
from experiments.gradient_snr import mnist, run, toy
from experiments.gradient_snr.configs import mnist as mnist_config
from experiments.gradient_snr.configs import quick
from experiments.iwae.configs import quick as iwae_quick


def _problem():
  return toy.make_problem(jax.random.key(0), dim=3, num_data=8, perturbation=0.1)


def test_toy_model_follows_the_contract_with_the_old_log_weights():
  p = _problem()
  x = p.data[:2]
  assert models.check_model(toy.MODEL, p.params, x)["z"] == (2, 3)
  terms = models.log_weight_terms(toy.MODEL, p.params, x, jax.random.key(1), 4)
  # as the old estimators.sample_terms: z_k from split(key, K)[k], log w = log p(x, z) - log q
  z = jax.vmap(lambda k: toy.sample_q(p.params, x, k))(jax.random.split(jax.random.key(1), 4))
  lw = jax.vmap(lambda zk: toy.log_p(p.params, x, zk) - toy.log_q(p.params, x, zk))(z)
  lq = jax.vmap(lambda zk: toy.log_q(p.params, x, zk))(z)
  for t in (terms.log_w, terms.log_w_theta, terms.log_w_path):
    np.testing.assert_allclose(t, lw, rtol=1e-6)
  np.testing.assert_allclose(terms.log_q_score, lq, rtol=1e-6)
  loss = toy.make_loss("iwae", x, 4)
  np.testing.assert_allclose(loss(p.params, jax.random.key(1)),
                             -jnp.mean(objectives.iwae_bound(lw)), rtol=1e-6)
  # a bound below the exact log marginal
  assert float(-loss(p.params, jax.random.key(2))) < float(jnp.mean(toy.log_marginal(p.params, x)))
  # the estimators are routed by role: DReG leaves theta's gradient to IWAE's, STL too
  g = {n: jax.grad(toy.make_loss(n, x, 4))(p.params, jax.random.key(3))
       for n in ("iwae", "dreg", "stl")}
  for n in ("dreg", "stl"):
    np.testing.assert_allclose(g[n]["theta"]["mu"], g["iwae"]["theta"]["mu"], rtol=1e-5)
    assert not np.allclose(g[n]["phi"]["A"], g["iwae"]["phi"]["A"])


def test_toy_study_end_to_end(tmp_path):
  c = quick.get_config()
  c.toy.dim = 4
  c.toy.num_draws = 500
  c.toy.num_samples = (1, 10)  # the direct sweep keeps quick's 10,000 draws: its signal resolved
  c.reinforce.num_draws = 200
  c.reinforce.baseline_pilot_steps = 10
  res = run.train_and_evaluate(c, str(tmp_path))
  assert {"iwae_theta", "iwae_phi", "dreg_phi", "stl_phi", "iwae_theta_direct"} <= set(res["slopes"])
  ests = {(r["objective"], r["estimator"]) for r in res["reinforce_vs_reparam"]["rows"]}
  assert ("iwae", "vimco") in ests and ("elbo", "reinforce_running_mean") in ests
  for r in res["reinforce_vs_reparam"]["rows"]:
    assert r["variance_ratio"] > 0 and np.isfinite(r["phi_max_abs_z"])
  for f in res["figures"] + ["results.json", "config.json"]:
    assert os.path.isfile(tmp_path / f)
  assert "fitted slopes" in run.format_results(res)


def _tiny_run(workdir):
  c = iwae_quick.get_config()
  c.model, c.latent_dims, c.hidden_dims = "custom", (3,), ((16,),)
  c.estimator, c.num_samples, c.batch_size = "iwae", 3, 50
  c.num_passes, c.num_epochs, c.log_every_steps, c.checkpoint_every_epochs = 1, 1.0, 5, 1.0
  c.progress = False
  c.eval.num_samples, c.eval.sample_chunk, c.eval.batch_size = 10, 10, 8
  c.eval.num_examples, c.eval.bound_ks = 8, (3,)
  return burda.train_and_evaluate(c, str(workdir))


@pytest.mark.slow  # the MNIST study end to end; the toy study runs end to end in the default run
def test_mnist_study_reads_checkpoints_through_training_restore(tmp_path):
  res = _tiny_run(tmp_path / "runs" / "tiny")
  c = mnist_config.get_config()
  c.mnist.runs_dir = str(tmp_path / "runs")
  c.mnist.points = (("init", "tiny", 0), ("last", "tiny", "latest"))
  c.mnist.batch_size = 2
  c.mnist.num_samples = (1, 3)
  c.mnist.num_draws = 16
  c.mnist.estimators = ("iwae", "dreg")
  out = mnist.measure(c, str(tmp_path / "snr"))
  assert [p["step"] for p in out["points"]] == [0, res["steps"]]
  for p in out["points"]:
    for name in ("iwae", "dreg"):
      assert len(p["curves"][name]["phi"]) == 2 and len(p["curves"][name]["theta"]) == 2
    assert len(p["curves"]["iwae_cv"]["phi"]) == 2
  with open(tmp_path / "snr" / "mnist_snr.json") as f:
    assert json.load(f)["num_draws"] == 16
  # the checkpoint's parameters, not the initialisation; a step without a checkpoint is refused
  model = mnist.vae.make("custom", (8, 8, 1), latent_dims=(3,), hidden_dims=((16,),))
  mean = np.zeros((8, 8, 1), np.float32)
  init, _ = mnist.load_point(str(tmp_path / "runs" / "tiny"), 0, model, mean, 0)
  last, step = mnist.load_point(str(tmp_path / "runs" / "tiny"), "latest", model, mean, 0)
  assert step == res["steps"]
  assert jax.tree.structure(init) == jax.tree.structure(last)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(last)))
  with pytest.raises(ValueError, match="saved steps"):
    mnist.load_point(str(tmp_path / "runs" / "tiny"), 7, model, mean, 0)
  with pytest.raises(FileNotFoundError):
    mnist.load_point(str(tmp_path / "nowhere"), "latest", model, mean, 0)


def _tiny_toy():
  c = quick.get_config()
  c.toy.dim = 3
  c.toy.num_data = 16
  c.toy.num_draws = 200
  c.toy.num_samples = (1, 3)
  c.toy.estimators = ("iwae", "dreg")
  c.toy.direct.enabled = False
  c.reinforce.enabled = False
  return c


def test_resume_reuses_measured_parts_and_refuses_a_changed_setting(tmp_path, monkeypatch):
  first = run.train_and_evaluate(_tiny_toy(), str(tmp_path))
  assert os.path.isfile(tmp_path / "parts" / "snr_versus_k.json")
  assert json.load(open(tmp_path / "config.json"))["toy"]["num_draws"] == 200
  real = run.snr_versus_k
  monkeypatch.setattr(run, "snr_versus_k", lambda *a: pytest.fail("measured again"))
  again = run.train_and_evaluate(_tiny_toy(), str(tmp_path), resume=True)
  assert again["snr"] == first["snr"] and again["slopes"] == first["slopes"]
  changed = _tiny_toy()
  changed.toy.num_draws = 300
  with pytest.raises(ValueError, match=r"toy\.num_draws: 200 -> 300"):
    run.train_and_evaluate(changed, str(tmp_path), resume=True)
  # an allowed change measures every part again, with the new settings, and is recorded
  monkeypatch.setattr(run, "snr_versus_k", real)
  res = run.train_and_evaluate(changed, str(tmp_path), resume=True,
                               allow_config_change=("toy.num_draws",))
  assert res["snr"]["num_draws"] == 300
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["resume_changes"][-1]["toy.num_draws"] == {"saved": 200, "now": 300}
