"""End-to-end smoke test of experiments/classical with a tiny configuration."""

import json
import os

import jax
import optax
import orbax.checkpoint as ocp

from dgmjax import training
from dgmjax.models import vae
from experiments.classical import study
from experiments.classical.configs import quick


def _tiny_config(runs_root):
  c = quick.get_config()
  # GMM: the shapes of tests/test_inference_em.py (200 points, 3 components, 100 iterations), so the
  # jitted EM loop is shared when both files run in one session.
  c.gmm.num_points = 200
  c.gmm.max_iters = 100
  c.gmm.snapshot_iters = (0, 1, 2)
  c.ppca.latent_dims = (4,)
  c.ppca.em_max_iters = 300
  c.ppca.vae_steps = 300
  c.ppca.collapse_latent_dim = 4
  c.ppca.collapse_noise_variances = (0.5,)
  c.gaps.linear_latent_dim = 4
  c.gaps.num_examples = 16
  c.gaps.num_steps = 50
  c.gaps.num_elbo_samples = 32
  c.gaps.num_iwae_samples = 32
  c.gaps.chunk_size = 32
  # The digits VAE / IWAE trained inside the study are left to the quick and default runs; the
  # gap code path of a deep VAE is exercised here through a restored checkpoint (part 4).
  c.gaps.vae_enabled = False
  c.gaps.runs_root = runs_root
  c.gaps.runs = ("tiny-run", "unfinished-run", "absent-run")
  c.gaps.runs_num_examples = 16
  c.gaps.runs_batch_size = 8
  c.gaps.convergence_check_steps = 0
  return c


def _write_runs(root):
  """A finished experiments/iwae-style run (an untrained tiny model on the digits) and an
  unfinished one (no results.json)."""
  config = {"dataset": "digits", "data_dir": "", "model": "custom", "latent_dims": [2],
            "hidden_dims": [[8]], "estimator": "iwae", "num_samples": 3, "seed": 0,
            "dynamic_binarization": True}
  run = os.path.join(root, "tiny-run")
  os.makedirs(run)
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(run, "results.json"), "w") as f:
    json.dump({"steps": 7, "epochs": 0.5, "test_elbo": -40.0, "eval_num_samples": 50,
               "test_log_likelihood_50": -38.0, "test_examples": 300}, f)
  model = vae.make("custom", (8, 8, 1), latent_dims=(2,), hidden_dims=((8,),))
  params = jax.jit(model.init)(jax.random.key(0))
  mngr = training.checkpoint_manager(os.path.join(run, "checkpoints"), 1)
  mngr.save(7, args=ocp.args.StandardSave(training.init_state(params, optax.adam(1e-3))))
  mngr.wait_until_finished()
  mngr.close()
  unfinished = os.path.join(root, "unfinished-run")
  os.makedirs(unfinished)
  with open(os.path.join(unfinished, "config.json"), "w") as f:
    json.dump(config, f)
  return params


def test_classical_study_writes_results_and_figures(tmp_path):
  workdir = str(tmp_path / "work")
  runs_root = str(tmp_path / "runs")
  saved = _write_runs(runs_root)
  results = study.train_and_evaluate(_tiny_config(runs_root), workdir)
  for name in ("results.json", "results.md", "config.json", "gmm_em_iterations.png",
               "gmm_log_likelihood.png", "ppca_vs_linear_vae.png", "linear_vae_collapse.png",
               "amortization_gaps.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == json.loads(json.dumps(results))
  gmm = results["gmm"]
  assert gmm["monotone"] and gmm["em_iterations"] >= 2
  assert abs(gmm["log_likelihood_final"] - gmm["sklearn_log_likelihood_same_init"]) < 1e-3
  assert len(gmm["trace"]) == gmm["em_iterations"] + 1
  (row,) = results["ppca"]["rows"]
  assert row["latent_dim"] == 4 and row["em_max_angle_rad"] < 0.1
  assert abs(row["test_ll_ppca_em"] - row["test_ll_ppca_ml"]) < 0.05
  assert row["test_elbo_linear_vae"] <= row["test_ll_linear_vae"] + 1e-6
  (col,) = results["ppca"]["collapse"]
  assert col["predicted_active"] == 3  # s^2 = 0.5 is above the 4th digit eigenvalue (0.42)
  (lin,) = results["gaps"]["rows"]
  assert lin["model"].startswith("linear VAE") and lin["log_px_source"] == "exact"

  # Part 4: the finished run is restored and measured; the other two are skipped, with reasons.
  rg = results["run_gaps"]
  (r,) = rg["rows"]
  assert r["run"] == "tiny-run" and r["checkpoint_step"] == 7
  assert {s["run"]: "not finished" in s["reason"] for s in rg["skipped"]} == {
      "unfinished-run": True, "absent-run": False}
  model, params, _, _, step, _ = study.load_run(os.path.join(runs_root, "tiny-run"))
  assert step == 7 and model.latent_dims == (2,)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    assert (a == b).all()
  # The encoder ELBO of the gap function agrees with the model's own log-weights (MC noise only).
  assert abs(r["elbo_amortized"] - r["elbo_from_model_log_weights"]) < 1.0
  for r in results["gaps"]["rows"] + rg["rows"]:
    assert abs(r["inference_gap"] - r["approximation_gap"] - r["amortization_gap"]) < 1e-4
    # q* starts at the encoder's output and climbs the same ELBO (common random numbers): it can
    # only lose by Monte Carlo noise (the untrained model's encoder is already near-optimal).
    assert r["amortization_gap"] > -0.05
  # The gradient-fitted q* and Monte Carlo ELBOs of the linear VAE against its closed-form gaps.
  for k in ("elbo_amortized", "elbo_local", "approximation_gap", "amortization_gap"):
    assert abs(lin[k] - lin[k + "_closed_form"]) < 0.05, (k, lin[k], lin[k + "_closed_form"])
  assert results["checks"]["gaps_ordered_0.05_nat"]
  assert set(results["checks"]) >= {"gmm_em_monotone", "linear_vae_within_0.1_nat"}
  text = study.format_results(results)
  assert "Amortization gaps" in text and "Cremer et al. 2018" in text
