"""Tests of dgmjax.diagnostics.snr: the summary to compare estimators by (``norm_snr``), dead
parameters left out and counted, warnings for NaN summaries and SNRs at the noise floor, and
non-finite gradients named. (The moments, chunking and the debiased rms SNR are tested in
tests/test_estimators.py.)"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import diagnostics
from dgmjax import models as M


def _linear_loss(signal, noise):
  """``loss(params, key)`` whose gradient in ``params['a']`` is ``signal + noise * eps``."""
  def loss(params, key):
    eps = jax.random.normal(key, signal.shape)
    return jnp.sum(params["a"] * (signal + noise * eps))
  return loss


def _messages(record):
  return [str(w.message) for w in record]


def test_norm_snr_is_the_named_summary_and_its_debiased_form_resolves_below_the_floor():
  assert diagnostics.GroupSNR.COMPARE_BY == "norm_snr"
  # 500 parameters of true SNR 0.02 each: the vector's SNR is ||0.02 1|| / sqrt(500) = 0.02,
  # below the floor 1/sqrt(N) = 0.022 of N = 2000 draws; the plain estimate is near
  # sqrt(0.02^2 + 1/N) = 0.03, the debiased one recovers 0.02 (and a warning says so).
  n, loss = 2000, _linear_loss(jnp.full((500,), 0.02), 1.0)
  with pytest.warns(RuntimeWarning, match=r"group 'a': norm_snr .* noise floor of N = 2000"):
    g = diagnostics.gradient_snr(loss, {"a": jnp.zeros(500)}, jax.random.key(1), n,
                                 chunk_size=1000).groups["a"]
  assert g.noise_floor == pytest.approx(1 / math.sqrt(n))
  assert float(g.norm_snr) == pytest.approx(math.sqrt(0.02 ** 2 + 1 / n), rel=0.1)
  assert float(g.norm_snr_debiased) == pytest.approx(0.02, rel=0.3)


def test_a_resolved_snr_gives_no_warning_and_the_signal_of_another_estimator_has_no_floor():
  loss = _linear_loss(jnp.linspace(0.5, 1.0, 8), 0.5)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    r = diagnostics.gradient_snr(loss, {"a": jnp.zeros(8)}, jax.random.key(0), 400)
  g = r.groups["a"]
  want = float(jnp.linalg.norm(r.mean["a"]) / jnp.sqrt(jnp.sum(r.variance["a"])))
  assert float(g.norm_snr) == pytest.approx(want, rel=1e-5)
  exact = diagnostics.snr_from_moments(diagnostics.Moments(r.mean, r.variance, 400),
                                       signal={"a": jnp.linspace(0.5, 1.0, 8)}).groups["a"]
  assert math.isnan(exact.noise_floor) and float(exact.norm_snr_debiased) == float(exact.norm_snr)


def test_dead_parameters_are_left_out_of_every_summary_and_counted():
  # a[0]: noisy, a[1]: dead (zero mean and variance), a[2]: deterministic (zero variance)
  mean = {"a": jnp.array([0.5, 0.0, 2.0])}
  var = {"a": jnp.array([0.25, 0.0, 0.0])}
  g = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 10_000)).groups["a"]
  assert int(g.num_dead) == 1 and int(g.num_zero_variance) == 2 and g.num_params == 3
  np.testing.assert_allclose(float(g.mean_abs_mean), (0.5 + 2.0) / 2, rtol=1e-6)
  np.testing.assert_allclose(float(g.mean_std), 0.5 / 2, rtol=1e-6)
  np.testing.assert_allclose(float(g.norm_snr), math.sqrt(0.25 + 4.0) / 0.5, rtol=1e-6)
  np.testing.assert_allclose(float(g.median_snr), 1.0, rtol=1e-6)


def test_a_group_without_gradient_noise_is_nan_with_a_warning_naming_it():
  mean = {"dead": jnp.zeros(3), "fixed": jnp.array([1.0, 0.0]), "ok": jnp.array([1.0, 2.0])}
  var = {"dead": jnp.zeros(3), "fixed": jnp.zeros(2), "ok": jnp.array([1.0, 1.0])}
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("always")
    r = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 10_000))
  msgs = _messages(record)
  assert any("group 'dead'" in m and "all 3 of its parameters are dead" in m for m in msgs)
  assert any("group 'fixed'" in m and "1 dead, 1 with a deterministic gradient" in m
             for m in msgs)
  assert not any("'ok'" in m for m in msgs)
  dead = r.groups["dead"]
  assert all(math.isnan(float(v)) for v in (dead.mean_snr, dead.median_snr, dead.rms_snr,
                                             dead.norm_snr))  # NaN, never a plausible 0
  assert float(r.groups["fixed"].norm_snr) == math.inf


def test_a_non_finite_gradient_raises_naming_the_parameters():
  def loss(p, key):
    return jnp.sum(jnp.sqrt(p["b"] - 1.0) * jax.random.normal(key, (2,))) + jnp.sum(p["a"])

  with pytest.raises(ValueError, match=r"not finite \(NaN or inf\) for 1 parameter leaves, the "
                                       r"first \['b'\]"):
    diagnostics.gradient_snr(loss, {"a": jnp.zeros(2), "b": jnp.zeros(2)}, jax.random.key(0), 4)


def test_estimator_snr_names_the_contract_function_and_image_of_a_nan():
  def gauss(v):
    return jnp.sum(-0.5 * v ** 2 - 0.5 * math.log(2 * math.pi), -1)

  x = np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32)

  def ll(p, xx, z):
    return jnp.where(jnp.all(xx == x[1][None], -1), jnp.nan, gauss(xx - z * p["w"][None]))

  model = M.from_functions(
      sample_q=lambda p, xx, k: xx * p["v"][None] + jax.random.normal(k, xx.shape),
      log_q=lambda p, xx, z: gauss(z - xx * p["v"][None]), log_prior=lambda p, z: gauss(z),
      log_likelihood=ll)
  params = {"v": jnp.ones(2), "w": jnp.ones(2)}
  with pytest.raises(ValueError, match=r"not finite .*log_likelihood returns nan for x\[1\]"):
    diagnostics.estimator_snr(model, params, x, "iwae", 2, jax.random.key(0), 4)


def test_categorical_vae_reinforce_against_gumbel_softmax_ranks_one_way_under_norm_snr():
  """The case of the docs (docs/studies/gradient_snr.md), small: half of the codes confident.

  REINFORCE's encoder signal is at the noise floor, but the parameters of the confident codes
  have a gradient that is the deterministic KL term except on rare draws, which 100 draws miss:
  their SNR is overestimated and dominates REINFORCE's rms (here above Gumbel-softmax's), while
  the median and norm_snr rank it last. The warnings say both."""
  from dgmjax.models.categorical_vae import CategoricalVAE
  model = CategoricalVAE(image_shape=(4, 4, 1), num_vars=6, num_classes=4, hidden_dims=(16,))
  params = model.init(jax.random.key(0))
  out = params["params"]["encoder"]["out"]
  scale = np.where(np.arange(24) < 12, 6.0, 1.0)
  out["kernel"], out["bias"] = out["kernel"] * scale[None], out["bias"] * scale
  x = (np.random.default_rng(0).uniform(size=(4, 4, 4, 1)) < 0.3).astype(np.float32)
  groups = {"encoder": "params/encoder"}
  res = {}
  for name, m, est, kw in (("reinforce", model, "reinforce", {"bound": "elbo"}),
                           ("gumbel", model.relaxed(1.0), "elbo", {})):
    with warnings.catch_warnings(record=True) as record:
      warnings.simplefilter("always")
      res[name] = diagnostics.estimator_snr(m, params, x, est, 1, jax.random.key(1), 100,
                                            groups=groups, kl="analytic", **kw).groups["encoder"]
    res[name + "_warnings"] = _messages(record)
  r, g = res["reinforce"], res["gumbel"]
  assert float(g.norm_snr) > 10 * float(r.norm_snr)     # the named summary: Gumbel first
  assert float(g.median_snr) > 10 * float(r.median_snr)
  assert float(r.rms_snr) > 10 * float(r.median_snr)    # a few parameters dominate the rms
  assert float(g.rms_snr) < 2 * float(g.median_snr)
  assert any("rms_snr" in m and "Compare estimators by norm_snr" in m
             for m in res["reinforce_warnings"])
  assert any("noise floor of N = 100" in m for m in res["reinforce_warnings"])
  assert not res["gumbel_warnings"]
  # pixels off in all four images: their first-layer weights are dead, counted, left out
  off = int(np.sum(np.all(x == 0, axis=0)))
  assert int(r.num_dead) == int(g.num_dead) >= off * 16 > 0


def test_estimator_snr_names_an_image_whose_likelihood_is_infinite():
  base = M.from_functions(
      sample_q=lambda p, x, k: p["m"] * x + jax.random.normal(k, x.shape),
      log_q=lambda p, x, z: -0.5 * jnp.sum((z - p["m"] * x) ** 2, -1),
      log_prior=lambda p, z: -0.5 * jnp.sum(z ** 2, -1),
      log_likelihood=lambda p, x, z: jnp.where(  # +inf for image 2: its gradient is zeroed
          jnp.arange(x.shape[0]) == 2, jnp.inf, -0.5 * jnp.sum((x - z) ** 2, -1)))
  x = jnp.ones((4, 2))
  with pytest.raises(ValueError, match=r"(?s)log_likelihood.*2"):
    diagnostics.estimator_snr(base, {"m": jnp.ones(())}, x, "iwae", 3, jax.random.key(0), 8)
