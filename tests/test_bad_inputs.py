"""No silent wrong results: one named case per rule of bad input.

The rule (see ``dgmjax/_checks.py``): a concrete bad value raises ``ValueError`` naming the
argument, what was expected and what was given; a wrong type (a bool or float where an int is
needed, a float array of indices) raises ``ArgumentTypeError``, a ``TypeError`` that is also a
``ValueError``; a traced bad value (inside ``jit``) gives NaN, or follows a documented contract
where NaN cannot be represented (integer counts).

Layout, one section per module, so that cases for other modules can be appended as new sections:

1. ``RAISES``: ``(id, thunk, exception, message regex)``, each a concrete bad input.
2. ``TRACED_NAN``: ``(id, thunk)``, each a bad value passed through ``jax.jit``; the thunk returns
   ``(result, bad_mask)`` and the test checks NaN exactly where ``bad_mask`` is True.
3. ``ACCEPTS``: ``(id, thunk)``, each a valid input that must keep working (NumPy integers,
   ``[B, 1]`` temperatures, ...); the thunk asserts its own oracle.
4. Oracle tests of the numerical fixes (discretized logistic in float32, Concrete density near the
   vertices, QR flow with a zero Householder vector, the temperature shape rule).
"""

import functools
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import _checks
from dgmjax import data
from dgmjax import diagnostics
from dgmjax import evaluation
from dgmjax import numerics
from dgmjax import models
from dgmjax import vq
from dgmjax.models import vae as V

ATE = _checks.ArgumentTypeError


def _key(i=0):
  return jax.random.key(i)


def _z(*shape):
  return jnp.zeros(shape, jnp.float32)


def _ema_state():
  return vq.ema_init(jnp.asarray(np.arange(12, dtype=np.float32).reshape(4, 3)))


# =============================================================================================
# 1. Concrete bad input raises, naming the argument
# =============================================================================================

# ----------------------------------------------------------------------------- distributions

RAISES_DISTRIBUTIONS = [
]

# ----------------------------------------------------------------------------- gumbel

RAISES_GUMBEL = [
]

# ----------------------------------------------------------------------------- flows

RAISES_FLOWS = [
]

# ----------------------------------------------------------------------------- vq

RAISES_VQ = [
]

# ----------------------------------------------------------------------------- data

RAISES_DATA = [
]

# ----------------------------------------------------------------------------- objectives

RAISES_OBJECTIVES = [
]

# ----------------------------------------------------------------------------- priors

RAISES_PRIORS = [
]

# ----------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=None)
def _bernoulli_vae():
  """A tiny Bernoulli VAE on 4x4 images (``data_support = 'binary'``) and its parameters."""
  model = V.VAE((4, 4, 1), (2,), ((4,),))
  return model, model.init(_key(0))


def _grey_images():
  return np.full((3, 4, 4, 1), 0.5, np.float32)


def _uint8_images():
  return np.where(np.arange(48).reshape(3, 4, 4, 1) % 2 == 0, 0, 255).astype(np.uint8)


def _nan_images():
  x = np.zeros((3, 4, 4, 1), np.float32)
  x[1, 2, 3, 0] = np.nan
  return x


def _eval(fn, images, **kw):
  model, params = _bernoulli_vae()
  return fn(model, params, images, _key(1), **kw)


def _unit_interval_model():
  return models.from_functions(
      sample_q=lambda p, x, k: jnp.zeros(x.shape[:1]), log_q=lambda p, x, z: jnp.zeros_like(z),
      log_prior=lambda p, z: jnp.zeros_like(z),
      log_likelihood=lambda p, x, z: jnp.zeros(x.shape[:1]), data_support="unit_interval")


RAISES_EVALUATION = [
    ("log_likelihood_uint8_images_for_a_bernoulli_model",
     lambda: _eval(evaluation.log_likelihood, _uint8_images(), num_samples=4),
     ValueError, r"images must be binary values in \{0, 1\}.*VAE.*uint8.*scale it by 1/255.*"
                 r"24 of 48 value\(s\).*255"),
    ("log_likelihood_grey_levels_for_a_bernoulli_model",
     lambda: _eval(evaluation.log_likelihood, _grey_images(), num_samples=4),
     ValueError, r"images must be binary.*binarize.*48 of 48.*0\.5 at index \(0, 0, 0, 0\)"),
    ("log_likelihood_nan_images",
     lambda: _eval(evaluation.log_likelihood, _nan_images(), num_samples=4),
     ValueError, r"images contains 1 NaN value\(s\), the first at index \(1, 2, 3, 0\)"),
    ("bounds_grey_levels_for_a_bernoulli_model",
     lambda: _eval(evaluation.bounds, _grey_images(), ks=(1, 2)),
     ValueError, r"images must be binary"),
    ("bounds_uint8_images", lambda: _eval(evaluation.bounds, _uint8_images(), ks=(1,)),
     ValueError, r"images must be binary.*uint8"),
    ("active_units_grey_levels_for_a_bernoulli_model",
     lambda: _eval(diagnostics.active_units, _grey_images()),
     ValueError, r"images must be binary"),
    ("active_units_nan_images", lambda: _eval(diagnostics.active_units, _nan_images()),
     ValueError, r"images contains 1 NaN"),
    ("write_sample_figures_grey_levels_for_a_bernoulli_model",
     lambda: _eval(evaluation.write_sample_figures, _grey_images(),
                   workdir="/nonexistent/never/written"),
     ValueError, r"images must be binary"),
    ("log_likelihood_uint8_images_for_a_unit_interval_model",
     lambda: evaluation.log_likelihood(_unit_interval_model(), None, _uint8_images(), _key(),
                                       num_samples=2),
     ValueError, r"images must be values in \[0, 1\].*scale it by 1/255"),
]

def _binary_images(n=3):
  return (np.arange(n * 16).reshape(n, 4, 4, 1) % 3 == 0).astype(np.float32)


def _fit(**kw):
  """``training.fit`` of the tiny VAE with one bad setting in ``kw`` (never gets to train)."""
  from dgmjax import losses, training  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  model, params = _bernoulli_vae()
  args = dict(optimizer=optax.adam(1e-3), num_steps=2, batch_size=2, seed=0,
              workdir="/nonexistent/never/written")
  args.update(kw)
  return training.fit(losses.make_loss(model, "iwae", 2), params, _binary_images(4), **args)


def _decoder_model(decoder):
  """A ``from_networks`` model over 4x4 images whose decoder is ``decoder(params, z)``."""
  enc = lambda p, x: (jnp.zeros((x.shape[0], 2)), jnp.zeros((x.shape[0], 2)))
  return models.from_networks(enc, decoder, likelihood="bernoulli")


RAISES_SETTINGS = [
    # a decoder output is never broadcast against the data (silently wrong before)
    ("decoder_output_without_the_batch_axis",
     lambda: models.log_weights(_decoder_model(lambda p, z: jnp.zeros((1, 4, 4, 1))), {
         "encoder": {}, "decoder": {}}, _binary_images(), _key(), 2),
     ValueError, r"decoder's logits must have the shape of the data x, \(3, 4, 4, 1\); got "
                 r"\(1, 4, 4, 1\)"),
    ("decoder_output_flat",
     lambda: models.log_weights(_decoder_model(lambda p, z: jnp.zeros((z.shape[0], 16))), {
         "encoder": {}, "decoder": {}}, _binary_images(), _key(), 2),
     ValueError, r"decoder's logits must have the shape of the data x.*got \(3, 16\)"),
    ("reinforce_baseline_wrong_shape",
     lambda: __import__("dgmjax.estimators").estimators.reinforce_surrogate(
         jnp.zeros((2, 3)), jnp.zeros((2, 3)), baseline=jnp.zeros(4)),
     ValueError, r"baseline must be a scalar or one value per data point.*\(4,\)"),
    ("bounds_batch_size_negative", lambda: _eval(evaluation.bounds, _binary_images(), ks=(1,),
                                                 batch_size=-2),
     ValueError, r"batch_size must be an int >= 1, got -2"),
    ("bounds_ks_an_int", lambda: _eval(evaluation.bounds, _binary_images(), ks=5),
     TypeError, r"ks must be a sequence of ints"),
    ("log_likelihood_sample_chunk_float",
     lambda: _eval(evaluation.log_likelihood, _binary_images(), num_samples=4, sample_chunk=2.5),
     TypeError, r"sample_chunk must be an int, got float 2\.5"),
    ("log_likelihood_batch_size_bool",
     lambda: _eval(evaluation.log_likelihood, _binary_images(), num_samples=4, batch_size=True),
     TypeError, r"batch_size must be an int, got the bool"),
    ("log_likelihood_emulate_precision_string",
     lambda: _eval(evaluation.log_likelihood, _binary_images(), num_samples=4,
                   emulate_precision="yes"),
     TypeError, r"emulate_precision must be a bool"),
    ("log_likelihood_key_an_int",
     lambda: evaluation.log_likelihood(*_bernoulli_vae(), _binary_images(), 0, num_samples=4),
     TypeError, r"key must be a PRNG key \(jax.random.key\(seed\)\), got int 0"),
    ("active_units_threshold_nan",
     lambda: _eval(diagnostics.active_units, _binary_images(), threshold=np.nan),
     ValueError, r"threshold must be a finite number >= 0, got nan"),
    ("active_units_threshold_negative",
     lambda: _eval(diagnostics.active_units, _binary_images(), threshold=-1.0),
     ValueError, r"threshold must be a finite number >= 0"),
    ("active_units_num_samples_zero",
     lambda: _eval(diagnostics.active_units, _binary_images(), num_samples=0),
     ValueError, r"num_samples must be an int >= 1, got 0"),
    ("write_sample_figures_num_reconstructions_zero",
     lambda: _eval(evaluation.write_sample_figures, _binary_images(), workdir="/nonexistent",
                   num_reconstructions=0),
     ValueError, r"num_reconstructions must be an int >= 1"),
    ("memory_budget_fraction_negative", lambda: numerics.memory_budget(fraction=-1),
     ValueError, r"fraction must be a finite number > 0 and <= 1"),
    ("kl_per_dimension_grey_levels",
     lambda: diagnostics.kl_per_dimension(*_bernoulli_vae(), _grey_images()),
     ValueError, r"images must be binary"),
    ("estimator_snr_grey_levels",
     lambda: diagnostics.estimator_snr(*_bernoulli_vae(), _grey_images(), "iwae", 2, _key(), 4),
     ValueError, r"x must be binary"),
    ("fit_batch_size_float", lambda: _fit(batch_size=2.0),
     TypeError, r"batch_size must be an int, got float 2\.0"),
    ("fit_batch_size_zero", lambda: _fit(batch_size=0), ValueError, r"batch_size must be an int >= 1"),
    ("fit_seed_negative", lambda: _fit(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
    ("fit_seed_none", lambda: _fit(seed=None), TypeError, r"seed must be an int >= 0, got None"),
    ("fit_optimizer_a_number", lambda: _fit(optimizer=1e-3),
     TypeError, r"optimizer must be an optax GradientTransformation"),
    ("fit_max_consecutive_nonfinite_zero", lambda: _fit(max_consecutive_nonfinite=0),
     ValueError, r"max_consecutive_nonfinite must be an int >= 1"),
    ("fit_stop_after_negative", lambda: _fit(stop_after=-1), ValueError, r"stop_after must be"),
    ("fit_workdir_a_file", lambda: _fit(workdir=__file__),
     ValueError, r"workdir=.*exists and is not a directory"),
    ("make_loss_num_groups_for_iwae",
     lambda: __import__("dgmjax.losses").losses.make_loss(_bernoulli_vae()[0], "iwae", 4,
                                                              num_groups=2),
     ValueError, r"num_groups applies to 'miwae', 'piwae', 'piwae_dreg' and 'dreg' only"),
    ("make_loss_beta_for_iwae",
     lambda: __import__("dgmjax.losses").losses.make_loss(_bernoulli_vae()[0], "iwae", 4,
                                                              beta=0.5),
     ValueError, r"beta applies to estimator 'ciwae' only"),
    ("make_loss_bound_for_dreg",
     lambda: __import__("dgmjax.losses").losses.make_loss(_bernoulli_vae()[0], "dreg", 4,
                                                              bound="elbo"),
     ValueError, r"bound= applies to estimators 'stl' and 'reinforce' only"),
    ("make_optimizer_learning_rate_string",
     lambda: __import__("dgmjax.training").training.make_optimizer("adam", "1e-3"),
     ValueError, r"learning_rate must be a finite number > 0, got str"),
    ("burda_num_steps_zero_steps_per_epoch",
     lambda: __import__("dgmjax.training").training.burda_num_steps(0),
     ValueError, r"steps_per_epoch must be an int >= 1, got 0"),
    ("ais_schedule_delta_inf",
     lambda: __import__("dgmjax.inference.ais").inference.ais.schedule(5, delta=np.inf),
     ValueError, r"delta must be a finite number > 0"),
    ("sample_x_num_negative",
     lambda: models.sample_x(*_bernoulli_vae(), _key(), -1),
     ValueError, r"num must be an int >= 1, got -1"),
    ("vae_zero_latent_dim", lambda: V.VAE((4, 4, 1), (0,), ((4,),)),
     ValueError, r"must hold positive sizes"),
    ("gradient_snr_group_naming_no_parameters",
     lambda: diagnostics.gradient_snr(lambda p, k: jnp.sum(p["w"]), {"w": jnp.ones(2)}, _key(),
                                      4, groups={"a": "nope"}),
     ValueError, r"groups: 'nope' names no parameters.*keys: \['w'\]"),
]

RAISES = (RAISES_DISTRIBUTIONS + RAISES_GUMBEL + RAISES_FLOWS + RAISES_VQ + RAISES_DATA
          + RAISES_OBJECTIVES + RAISES_PRIORS + RAISES_EVALUATION + RAISES_SETTINGS)


@pytest.mark.parametrize("thunk,exc,match", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  with pytest.raises(exc, match=match):
    thunk()


# =============================================================================================
# 4. Oracle tests of the numerical fixes
# =============================================================================================


# ----------------------------------------------------------------------------- discretized logistic


# ----------------------------------------------------------------------------- Concrete density


# ----------------------------------------------------------------------------- temperature shape


# ----------------------------------------------------------------------------- QR linear flow


# ----------------------------------------------------------------------------- gradient SNR


def _snr_oracle(mean, var):
  """Mean and median of |mean| / std over the entries with nonzero variance (float64 NumPy)."""
  mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
  live = var > 0
  r = np.abs(mean[live]) / np.sqrt(var[live])
  return r.mean(), np.median(r), np.sqrt(np.mean(np.square(mean[live]) / var[live]))


def test_group_snr_leaves_out_a_zero_variance_entry_with_nonzero_mean_instead_of_inf():
  # A deterministic gradient (variance exactly 0, mean 2): its SNR is inf; the group mean is not.
  mean = {"w": jnp.array([0.5, -1.0, 2.0, 0.3])}
  var = {"w": jnp.array([1.0, 4.0, 0.0, 0.09])}
  r = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 100))
  g = r.groups["w"]
  assert np.isinf(np.asarray(r.snr["w"])[2])          # per parameter: documented inf
  want_mean, want_median, want_rms = _snr_oracle(mean["w"], var["w"])
  np.testing.assert_allclose(g.mean_snr, want_mean, rtol=1e-6)
  np.testing.assert_allclose(g.median_snr, want_median, rtol=1e-6)
  np.testing.assert_allclose(g.rms_snr, want_rms, rtol=1e-6)
  assert int(g.num_zero_variance) == 1 and int(g.num_infinite_snr) == 1


def test_group_snr_leaves_out_a_dead_unit_with_zero_mean_and_zero_variance():
  # A dead ReLU unit: gradient identically 0. Averaging its 0/0 as 0 would drag the mean down.
  mean = {"w": jnp.array([0.5, -1.0, 0.0, 0.3])}
  var = {"w": jnp.array([1.0, 4.0, 0.0, 0.09])}
  g = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 100)).groups["w"]
  want_mean, want_median, _ = _snr_oracle(mean["w"], var["w"])
  np.testing.assert_allclose(g.mean_snr, want_mean, rtol=1e-6)
  np.testing.assert_allclose(g.median_snr, want_median, rtol=1e-6)
  assert int(g.num_zero_variance) == 1 and int(g.num_infinite_snr) == 0


def test_gradient_snr_of_a_network_with_a_dead_relu_and_a_deterministic_gradient_is_finite():
  # w[0]: noisy gradient N(1, 1); w[1]: deterministic gradient 2; w[2]: behind a dead ReLU.
  def loss(p, key):
    noise = 1.0 + jax.random.normal(key)
    return noise * p["w"][0] + 2.0 * p["w"][1] + jax.nn.relu(p["w"][2] - 10.0)

  params = {"w": jnp.zeros(3)}
  r = diagnostics.gradient_snr(loss, params, _key(3), 64, chunk_size=16)
  g = r.groups["w"]
  assert np.all(np.isfinite([g.mean_snr, g.median_snr, g.rms_snr, g.rms_snr_debiased]))
  want = abs(float(r.mean["w"][0])) / float(r.std["w"][0])
  np.testing.assert_allclose([g.mean_snr, g.median_snr], [want, want], rtol=1e-6)
  assert int(g.num_zero_variance) == 2 and int(g.num_infinite_snr) == 1
  # a group with no noisy parameter has no SNR to summarise: NaN, never 0 or inf
  only_dead = diagnostics.gradient_snr(loss, params, _key(3), 8,
                                       groups={"dead": lambda t: t["w"][2:]}).groups["dead"]
  assert np.isnan(float(only_dead.mean_snr)) and int(only_dead.num_zero_variance) == 1


# ----------------------------------------------------------------------------- data directories


# ----------------------------------------------------------------------------- experiment configs


def _iwae_string(arg):
  from experiments.iwae.configs import mnist
  return mnist.get_config(arg)


def _epochs_string(module, arg):
  import importlib
  return importlib.import_module(f"experiments.discrete.configs.{module}").get_config(arg)


def _collapse_string(arg):
  from experiments.posterior_collapse.configs import default
  return default.get_config(arg)


def _priors_string(arg):
  from experiments.priors.configs import mnist
  return mnist.get_config(arg)


RAISES_CONFIG_STRINGS = [
    ("iwae_string_zero_epochs", lambda: _iwae_string("iwae-k5-l1-e0"),
     ValueError, r"bad config string 'iwae-k5-l1-e0': N in e<N> must be > 0, got '0'\. "
                 r"Valid forms: '<name>.*e<N>"),
    ("iwae_string_nan_epochs", lambda: _iwae_string("iwae-k5-l1-enan"),
     ValueError, r"N in e<N> must be finite, got 'nan'.*Valid forms"),
    ("iwae_string_unknown_budget", lambda: _iwae_string("iwae-k5-l1-long"),
     ValueError, r"the budget must be full, short or e<N>, got 'long'.*Valid forms"),
    ("iwae_string_fractional_k", lambda: _iwae_string("iwae-k5.5-l1-short"),
     ValueError, r"K in k<K> must be an integer, got '5\.5'.*Valid forms"),
    ("iwae_string_unknown_name", lambda: _iwae_string("iwea-k5-l1-short"),
     ValueError, r"unknown name 'iwea'.*Valid forms.*'iwae'"),
    ("iwae_string_three_layers", lambda: _iwae_string("iwae-k5-l3-short"),
     ValueError, r"layers must be l1 or l2, got 'l3'.*Valid forms"),
    ("categorical_string_zero_epochs", lambda: _epochs_string("categorical", "0"),
     ValueError, r"bad config string '0': the number of epochs must be > 0.*Valid forms"),
    ("categorical_string_not_a_number", lambda: _epochs_string("categorical", "ten"),
     ValueError, r"the number of epochs must be a number, got 'ten'.*Valid forms"),
    ("vqvae_string_negative_epochs", lambda: _epochs_string("vqvae", "-3"),
     ValueError, r"the number of epochs must be > 0, got '-3'"),
    ("codebook_string_inf_epochs", lambda: _epochs_string("codebook", "inf"),
     ValueError, r"the number of epochs must be finite"),
    ("posterior_collapse_string_empty_run", lambda: _collapse_string("mlp,,deep"),
     ValueError, r"bad config string 'mlp,,deep': empty run in the list.*Valid forms.*'all'"),
    ("posterior_collapse_string_repeated_run", lambda: _collapse_string("mlp,mlp"),
     ValueError, r"run\(s\) \['mlp'\] named more than once"),
    ("priors_string_unknown_variant", lambda: _priors_string("gmm"),
     ValueError, r"bad config string 'gmm': unknown variant.*Valid forms.*'twod'"),
    ("discrete_quick_string_unknown_study", lambda: _epochs_string("quick", "vq"),
     ValueError, r"bad config string 'vq': unknown study.*'codebook'"),
]


@pytest.mark.parametrize("thunk,exc,match", [c[1:] for c in RAISES_CONFIG_STRINGS],
                         ids=[c[0] for c in RAISES_CONFIG_STRINGS])
def test_malformed_config_string_raises_listing_the_valid_forms(thunk, exc, match):
  with pytest.raises(exc, match=match):
    thunk()


def _driver_config(driver):
  """``(train_and_evaluate-like function, a config of the driver)``."""
  if driver == "iwae":
    from experiments.iwae import train
    from experiments.iwae.configs import quick
    return train.train_and_evaluate, quick.get_config()
  if driver == "priors":
    from experiments.priors import train
    from experiments.priors.configs import quick
    return train.train_and_evaluate, quick.get_config()
  if driver == "posterior_collapse":
    from experiments.posterior_collapse import train
    from experiments.posterior_collapse.configs import quick
    return train.train_and_evaluate, quick.get_config("mlp")
  if driver == "discrete":
    from experiments.discrete import train
    from experiments.discrete.configs import quick
    return train.run, quick.get_config("categorical")
  if driver == "gradient_snr":
    from experiments.gradient_snr import run
    from experiments.gradient_snr.configs import quick
    return run.train_and_evaluate, quick.get_config()
  if driver == "classical":
    from experiments.classical import study
    from experiments.classical.configs import quick
    return study.train_and_evaluate, quick.get_config()
  from experiments.flows import two_d
  from experiments.flows.configs import quick
  return two_d.train_and_evaluate, quick.get_config()


def _set(config, key, value):
  *path, last = key.split(".")
  node = config
  for p in path:
    node = node[p]
  node[last] = value


BAD_FIELDS = [
    ("iwae_eval_num_examples_negative", "iwae", "eval.num_examples", -5,
     r"config\.eval\.num_examples must be an int >= 0, got -5"),
    ("iwae_batch_size_zero", "iwae", "batch_size", 0, r"config\.batch_size must be an int > 0"),
    ("iwae_learning_rate_negative", "iwae", "learning_rate", -1e-3,
     r"config\.learning_rate must be a finite number > 0, got -0\.001"),
    ("iwae_eval_bound_ks_zero", "iwae", "eval.bound_ks", (5, 0),
     r"config\.eval\.bound_ks must be a non-empty list of ints > 0, got \(5, 0\)"),
    ("iwae_checkpoint_every_nan", "iwae", "checkpoint_every_epochs", float("nan"),
     r"config\.checkpoint_every_epochs must be a finite number > 0, got nan"),
    ("priors_surgery_chunk_size_zero", "priors", "surgery.chunk_size", 0,
     r"config\.surgery\.chunk_size must be an int > 0"),
    ("posterior_collapse_eval_num_examples_negative", "posterior_collapse", "eval.num_examples",
     -5, r"config\.eval\.num_examples must be an int >= 0, got -5"),
    ("posterior_collapse_free_bits_negative", "posterior_collapse", "runs.deep.free_bits", -0.1,
     r"config\.runs\.deep\.free_bits must be a finite number >= 0"),
    ("discrete_eval_num_examples_negative", "discrete", "eval.num_examples", -1,
     r"config\.eval\.num_examples must be an int >= 0, got -1"),
    ("gradient_snr_one_draw", "gradient_snr", "toy.num_draws", 1,
     r"config\.toy\.num_draws must be an int > 1, got 1"),
    ("classical_gaps_num_examples_zero", "classical", "gaps.num_examples", 0,
     r"config\.gaps\.num_examples must be an int > 0"),
    ("flows_num_steps_negative", "flows", "num_steps", -10,
     r"config\.num_steps must be an int > 0, got -10"),
]


@pytest.mark.parametrize("driver,key,value,match", [c[1:] for c in BAD_FIELDS],
                         ids=[c[0] for c in BAD_FIELDS])
def test_bad_numeric_config_field_raises_before_any_data_is_loaded(tmp_path, monkeypatch, driver,
                                                                   key, value, match):
  fn, config = _driver_config(driver)
  _set(config, key, value)
  monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data was loaded"))
  work = tmp_path / "work"
  with pytest.raises(ValueError, match=match):
    fn(config, str(work))
  assert not work.exists() or not os.listdir(work)   # nothing written either


def _parse(argv):
  """``experiments.common.config.parse_flags`` on a fresh flag set with a ``--config`` flag."""
  from absl import flags
  from ml_collections import config_flags
  from experiments.common import config as common
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "c", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  common.parse_flags(argv, fv)
  return fv


@pytest.mark.parametrize("override,match", [
    ("--config.evall.x=1", r"^FATAL Flags parsing error: --config\.evall\.x: unknown config key "
                           r"'evall'; valid keys of --config: .*\bestimator, eval\b"),
    ("--config.eval.num_exmples=3", r"unknown config key 'eval\.num_exmples'; valid keys of "
                                    r"config\.eval: active_threshold, batch_size, bound_ks, "
                                    r"num_examples, num_samples, sample_chunk\n"),
    ("--config.eval.bound_ks.x=3", r"'eval\.bound_ks' is a tuple setting, not a group of keys"),
], ids=["unknown_top_level_key", "unknown_nested_key", "key_below_a_setting"])
def test_unknown_config_key_flag_gives_a_short_message_listing_the_valid_keys(capsys, override,
                                                                              match):
  with pytest.raises(SystemExit) as e:
    _parse(["main", "--config=experiments/iwae/configs/quick.py", override])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert re.search(match, err), err
  assert "Traceback" not in err and len(err.splitlines()) == 2


def test_config_string_error_flag_gives_its_message_without_a_traceback(capsys):
  with pytest.raises(SystemExit):
    _parse(["main", "--config=experiments/iwae/configs/mnist.py:iwae-k5-l1-e0"])
  err = capsys.readouterr().err
  assert "Traceback" not in err and len(err.splitlines()) == 2
  assert "N in e<N> must be > 0" in err and "Valid forms" in err
  # a valid override still parses
  fv = _parse(["main", "--config=experiments/iwae/configs/quick.py", "--config.eval.batch_size=7"])
  assert fv.config.eval.batch_size == 7


def test_driver_with_an_unknown_config_key_exits_with_two_lines(tmp_path):
  import subprocess
  import sys
  root = os.path.join(os.path.dirname(__file__), "..")
  p = subprocess.run([sys.executable, "-m", "experiments.iwae.main",
                      "--config=experiments/iwae/configs/quick.py", f"--workdir={tmp_path / 'w'}",
                      "--config.evall.x=1"], cwd=root, capture_output=True, text=True, timeout=60)
  assert p.returncode == 1
  assert p.stderr.startswith("FATAL Flags parsing error: --config.evall.x: unknown config key "
                             "'evall'; valid keys of --config: ")
  assert len(p.stderr.splitlines()) == 2 and not (tmp_path / "w").exists()


def test_every_driver_parses_its_flags_through_the_shared_helper():
  import glob
  mains = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "*",
                                        "main.py")))
  assert len(mains) >= 8
  for path in mains:
    src = open(path).read()
    assert "common.run(main)" in src and "app.run(main)" not in src, path


# =============================================================================================
# (Sections for other modules: append RAISES_* / TRACED_NAN-style tables and oracle tests below.)
# =============================================================================================
