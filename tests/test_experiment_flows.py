"""Smoke test of the 2-D flow density study and checks of its targets."""

import functools
import json
import os

import jax
import numpy as np
import pytest

from experiments.flows import targets, two_d
from experiments.flows.configs import quick


def _tiny_config():
  c = quick.get_config()
  c.targets = ("eight_gaussians",)
  c.models = ("real_nvp", "lu")
  c.num_steps = 60
  c.linear_num_steps = 40
  c.log_every = 20
  c.batch_size = 64
  c.num_eval_samples = 1000
  c.eval_chunk = 400
  c.real_nvp.num_layers = 2
  c.real_nvp.hidden_sizes = (8,)
  c.plot_grid_size = 20
  c.plot_num_samples = 100
  c.plot_dpi = 40
  return c


def test_train_and_evaluate_writes_results_and_figures(tmp_path):
  workdir = str(tmp_path)
  results = two_d.train_and_evaluate(_tiny_config(), workdir)
  for name in ("results.json", "densities.png", "samples.png", "losses.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  with open(os.path.join(workdir, "results.json")) as f:
    saved = json.load(f)
  for mname in ("real_nvp", "lu"):
    r = saved["eight_gaussians"][mname]
    assert np.isfinite(r["kl"]) and np.isfinite(r["nll"])
    # KL(target || q) >= 0 up to Monte Carlo error, and NLL = H(target) + KL.
    assert r["kl"] > -5 * r["kl_stderr"]
    np.testing.assert_allclose(r["nll"], r["target_entropy"] + r["kl"], rtol=1e-6, atol=1e-6)
    assert len(r["losses"]) == r["num_steps"] // r["log_every"]
  # A linear flow is a Gaussian: it cannot beat the best Gaussian (up to Monte Carlo error).
  lu = saved["eight_gaussians"]["lu"]
  assert lu["kl"] > lu["gaussian_kl"] - 5 * lu["kl_stderr"] - 0.05
  assert np.isfinite(lu["weight_log_abs_det"])
  assert results["meta"]["wall_time_s"] > 0
  # The training chunk was compiled once per model (and not retraced from chunk to chunk).
  assert two_d._train_chunk._cache_size() <= 2
  assert "real_nvp" in two_d.format_results(results)


@pytest.mark.slow
def test_quick_config_learns_eight_gaussians_to_small_kl(tmp_path):
  """The quick configuration on a target with a closed-form density: the nonlinear flows get close
  to it, the linear flows reach the best Gaussian (and no further)."""
  c = quick.get_config()
  c.targets = ("eight_gaussians",)
  c.models = ("real_nvp", "maf", "lu")
  results = two_d.train_and_evaluate(c, str(tmp_path))["eight_gaussians"]
  for m in ("real_nvp", "maf"):
    r = results[m]
    assert r["kl"] < 0.25 and r["kl"] < 0.25 * r["gaussian_kl"], (m, r["kl"])
  lu = results["lu"]
  assert abs(lu["kl"] - lu["gaussian_kl"]) < 0.02 + 5 * lu["kl_stderr"]


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_densities_are_normalised_and_match_samples(name):
  target = targets.get_target(name)
  g = np.linspace(-4.0, 4.0, 121)
  xx, yy = np.meshgrid(g, g)
  grid = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32)
  # Chunks of 4000 rows: one compilation for the grid and the samples, bounded memory.
  log_prob = functools.partial(two_d.chunked, two_d.target_log_prob(target), chunk=4000)
  grid_lp = log_prob(grid)
  mass = float(np.sum(np.exp(grid_lp)) * (g[1] - g[0]) ** 2)
  np.testing.assert_allclose(mass, 1.0, atol=3e-3)
  x = two_d.target_sampler(target)(jax.random.key(0), 4000)
  lp = log_prob(x)
  assert x.shape == (4000, 2) and np.all(np.isfinite(lp))
  # Histogram of samples vs the density on a coarse grid (chi-square-like agreement).
  edges = np.linspace(-4.0, 4.0, 9)
  hist, _, _ = np.histogram2d(np.asarray(x[:, 0]), np.asarray(x[:, 1]), bins=[edges, edges])
  dens = np.exp(grid_lp).reshape(xx.shape)
  cell = (g[1] - g[0]) ** 2
  expected = np.zeros((8, 8))
  ix = np.clip(np.searchsorted(edges, xx[:-1, :-1].ravel(), side="right") - 1, 0, 7)
  iy = np.clip(np.searchsorted(edges, yy[:-1, :-1].ravel(), side="right") - 1, 0, 7)
  np.add.at(expected, (ix, iy), dens[:-1, :-1].ravel() * cell * 4000)
  big = expected > 50
  assert np.all(np.abs(hist[big] - expected[big]) < 5 * np.sqrt(expected[big]) + 0.05 * expected[big])


def test_unknown_names_raise():
  with pytest.raises(ValueError, match="unknown target"):
    targets.get_target("three_moons")
  with pytest.raises(ValueError, match="unknown model"):
    two_d.make_flow("glow", _tiny_config())
