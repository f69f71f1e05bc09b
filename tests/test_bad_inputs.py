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
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, gammaln, log_softmax, logsumexp

from dgmjax import _checks
from dgmjax import data
from dgmjax import diagnostics
from dgmjax import distributions as D
from dgmjax import evaluation
from dgmjax import numerics
from dgmjax import models
from dgmjax import flows as F
from dgmjax import gumbel as G
from dgmjax import objectives as O
from dgmjax import priors as P
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
    ("bernoulli_x_255", lambda: D.bernoulli_log_prob(255.0, 2.0, event_ndims=0),
     ValueError, r"x must be binary \(0 or 1\).*the first 255\.0"),
    ("bernoulli_x_grey_level", lambda: D.bernoulli_log_prob(jnp.array([0.0, 0.4, 1.0]), _z(3)),
     ValueError, r"x must be binary.*1 of 3 value\(s\).*0\.4.*index \(1,\)"),
    ("bernoulli_x_two", lambda: D.bernoulli_log_prob(jnp.array([2.0]), _z(1)),
     ValueError, r"x must be binary"),
    ("bernoulli_x_nan", lambda: D.bernoulli_log_prob(jnp.array([1.0, np.nan]), _z(2)),
     ValueError, r"x must be binary.*nan"),
    ("bernoulli_x_nan_image", lambda: D.bernoulli_log_prob(np.full((1, 2, 2, 1), np.nan),
                                                           _z(1, 2, 2, 1), event_ndims=3),
     ValueError, r"x must be binary.*4 of 4"),
    ("bernoulli_unit_interval_x_above_one",
     lambda: D.bernoulli_log_prob(jnp.array([1.5]), _z(1), support="unit_interval"),
     ValueError, r"x must be in \[0, 1\]"),
    ("bernoulli_unknown_support",
     lambda: D.bernoulli_log_prob(jnp.array([1.0]), _z(1), support="continuous"),
     ValueError, r"support must be one of"),
    ("normal_x_nan", lambda: D.normal_log_prob(jnp.array([0.0, np.nan]), 0.0, 0.0),
     ValueError, r"x contains 1 NaN value\(s\), the first at index \(1,\)"),
    ("standard_normal_x_inf", lambda: D.standard_normal_log_prob(jnp.array([np.inf])),
     ValueError, r"x contains 1 infinite"),
    ("mvn_x_nan", lambda: D.mvn_log_prob(jnp.array([np.nan, 0.0]), _z(2), jnp.eye(2)),
     ValueError, r"x contains 1 NaN"),
    ("categorical_index_equal_to_num_classes",
     lambda: D.categorical_log_prob(jnp.array([0, 4]), _z(2, 4)),
     ValueError, r"x must be class indices in \[0, 4\).*the first 4 at index \(1,\)"),
    ("categorical_index_negative", lambda: D.categorical_log_prob(jnp.array([-1]), _z(1, 4)),
     ValueError, r"x must be class indices in \[0, 4\).*-1"),
    ("categorical_float_indices", lambda: D.categorical_log_prob(jnp.array([1.0]), _z(1, 4)),
     TypeError, r"x must have an integer dtype, got float32"),
    ("categorical_bool_indices", lambda: D.categorical_log_prob(jnp.array([True]), _z(1, 4)),
     TypeError, r"x must have an integer dtype, got bool"),
    ("categorical_axis_bool", lambda: D.categorical_log_prob(jnp.array([1]), _z(1, 4), axis=True),
     TypeError, r"axis must be an int, got bool"),
    ("categorical_axis_out_of_range",
     lambda: D.categorical_log_prob(jnp.array([1]), _z(1, 4), axis=2),
     ValueError, r"axis=2 is out of range for logits of rank 2"),
    ("one_hot_two_ones", lambda: D.categorical_log_prob_one_hot(jnp.array([[1.0, 1.0, 0.0]]),
                                                                _z(1, 3)),
     ValueError, r"x summed over its class axis 1 must be 1.*the first 2\.0"),
    ("one_hot_all_zero", lambda: D.categorical_log_prob_one_hot(_z(2, 3), _z(2, 3)),
     ValueError, r"x summed over its class axis 1 must be 1.*2 of 2"),
    ("one_hot_relaxed_entries", lambda: D.categorical_log_prob_one_hot(
        jnp.array([[0.5, 0.5, 0.0]]), _z(1, 3)),
     ValueError, r"x must be one-hot on axis 1.*0\.5"),
    ("discretized_logistic_x_8bit_levels",
     lambda: D.discretized_logistic_log_prob(jnp.array([0.0, 255.0]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\] \(pixels scaled by 1/255.*255\.0 at index \(1,\)"),
    ("discretized_logistic_x_negative",
     lambda: D.discretized_logistic_log_prob(jnp.array([-0.1]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\]"),
    ("discretized_logistic_x_nan",
     lambda: D.discretized_logistic_log_prob(jnp.array([np.nan]), 0.5, 0.0),
     ValueError, r"x must be in \[0, 1\].*nan"),
    ("discretized_logistic_num_bins_float",
     lambda: D.discretized_logistic_log_prob(_z(2), 0.5, 0.0, num_bins=256.0),
     TypeError, r"num_bins must be an int, got float 256\.0"),
    ("discretized_logistic_num_bins_bool",
     lambda: D.discretized_logistic_log_prob(_z(2), 0.5, 0.0, num_bins=True),
     TypeError, r"num_bins must be an int, got the bool True"),
    ("discretized_logistic_num_bins_one",
     lambda: D.discretized_logistic_log_prob(_z(2), 0.5, 0.0, num_bins=1),
     ValueError, r"num_bins must be an int >= 2, got 1"),
    ("event_ndims_float", lambda: D.normal_log_prob(_z(3), 0.0, 0.0, event_ndims=1.0),
     TypeError, r"event_ndims must be an int, got float"),
    ("event_ndims_bool", lambda: D.standard_normal_log_prob(_z(3), event_ndims=True),
     TypeError, r"event_ndims must be an int, got the bool"),
    ("event_ndims_negative", lambda: D.standard_normal_log_prob(_z(3), event_ndims=-1),
     ValueError, r"event_ndims must be an int >= 0, got -1"),
]

# ----------------------------------------------------------------------------- gumbel

RAISES_GUMBEL = [
    ("gumbel_softmax_temperature_zero", lambda: G.gumbel_softmax(_key(), _z(3), 0.0),
     ValueError, r"temperature must be finite and > 0.*0\.0"),
    ("gumbel_softmax_temperature_nan", lambda: G.gumbel_softmax(_key(), _z(3), np.nan),
     ValueError, r"temperature must be finite and > 0.*nan"),
    ("gumbel_softmax_temperature_inf", lambda: G.gumbel_softmax(_key(), _z(3), np.inf),
     ValueError, r"temperature must be finite and > 0.*inf"),
    ("gumbel_softmax_temperature_bool", lambda: G.gumbel_softmax(_key(), _z(3), True),
     TypeError, r"temperature must be a real number, got dtype bool"),
    ("gumbel_softmax_temperature_per_row_lines_up_with_classes",
     lambda: G.gumbel_softmax(_key(), _z(3, 3), jnp.array([0.5, 1.0, 2.0])),
     ValueError, r"temperature with shape \(3,\) would broadcast against the class axis -1 of "
                 r"logits with shape \(3, 3\).*shape \(3, 1\)"),
    ("gumbel_softmax_temperature_rank_too_high",
     lambda: G.gumbel_softmax(_key(), _z(3), jnp.ones((2, 1, 1))),
     ValueError, r"temperature with shape \(2, 1, 1\) would broadcast against the class axis"),
    ("gumbel_softmax_temperature_does_not_broadcast",
     lambda: G.gumbel_softmax(_key(), _z(3, 4), jnp.ones((2, 1))),
     ValueError, r"temperature with shape \(2, 1\) does not broadcast against logits"),
    ("gumbel_softmax_hard_not_bool", lambda: G.gumbel_softmax(_key(), _z(3), 1.0, hard="yes"),
     TypeError, r"hard must be a bool, got str"),
    ("gumbel_softmax_hard_and_log_space",
     lambda: G.gumbel_softmax(_key(), _z(3), 1.0, hard=True, log_space=True),
     ValueError, r"hard=True and log_space=True do not combine"),
    ("gumbel_softmax_integer_logits",
     lambda: G.gumbel_softmax(_key(), jnp.zeros(3, jnp.int32), 1.0),
     TypeError, r"logits must have a floating dtype, got int32"),
    ("sample_gumbel_integer_dtype", lambda: G.sample_gumbel(_key(), (3,), jnp.int32),
     TypeError, r"dtype must be a floating dtype, got int32"),
    ("gumbel_max_integer_logits", lambda: G.gumbel_max(_key(), jnp.zeros(3, jnp.int32)),
     TypeError, r"logits must have a floating dtype, got int32"),
    ("concrete_temperature_negative",
     lambda: G.concrete_log_prob(jnp.full(3, 1 / 3), _z(3), -1.0),
     ValueError, r"temperature must be finite and > 0"),
    ("concrete_temperature_per_row_lines_up_with_classes",
     lambda: G.concrete_log_prob(jnp.full((2, 2), 0.5), _z(2, 2), jnp.array([0.5, 1.0])),
     ValueError, r"temperature with shape \(2,\) would broadcast against the class axis"),
    ("concrete_y_vertex", lambda: G.concrete_log_prob(jnp.array([1.0, 0.0, 0.0]), _z(3), 0.5),
     ValueError, r"y must be in the open simplex \(entries > 0; a one-hot vertex.*index \(1,\)"),
    ("concrete_y_negative_entry",
     lambda: G.concrete_log_prob(jnp.array([1.2, -0.2]), _z(2), 0.5),
     ValueError, r"y must be in the open simplex.*-0\.2"),
    ("concrete_y_not_normalised",
     lambda: G.concrete_log_prob(jnp.array([[0.2, 0.3], [0.4, 0.6]]), _z(2, 2), 0.5),
     ValueError, r"y summed over the simplex axis must be 1 \(to 0\.0001\).*1 of 2.*index \(0,\)"),
    ("concrete_y_nan", lambda: G.concrete_log_prob(jnp.array([np.nan, 0.5]), _z(2), 0.5),
     ValueError, r"y must be in the open simplex.*nan"),
    ("concrete_y_integer_dtype",
     lambda: G.concrete_log_prob(jnp.array([0, 1]), _z(2), 0.5),
     TypeError, r"y must have a floating dtype, got int32"),
    ("concrete_log_space_minus_inf",
     lambda: G.concrete_log_prob(jnp.array([0.0, -np.inf]), _z(2), 0.5, log_space=True),
     ValueError, r"y must be finite log-probabilities"),
    ("concrete_log_space_not_normalised",
     lambda: G.concrete_log_prob(jnp.log(jnp.array([0.3, 0.3])), _z(2), 0.5, log_space=True),
     ValueError, r"logsumexp of log y over the simplex axis must be 0"),
]

# ----------------------------------------------------------------------------- flows

RAISES_FLOWS = [
    ("qr_num_reflections_float", lambda: F.QRLinear(3, num_reflections=2.0),
     TypeError, r"num_reflections must be an int, got float"),
    ("qr_num_reflections_zero", lambda: F.QRLinear(3, num_reflections=0),
     ValueError, r"num_reflections must be an int >= 1, got 0"),
    ("qr_event_size_bool", lambda: F.QRLinear(True),
     TypeError, r"event_size must be an int, got the bool"),
    ("lu_event_size_float", lambda: F.LULinear(3.0),
     TypeError, r"event_size must be an int, got float"),
    ("lu_event_size_zero", lambda: F.LULinear(0),
     ValueError, r"event_size must be an int >= 1"),
]

# ----------------------------------------------------------------------------- vq

RAISES_VQ = [
    ("code_counts_index_equal_to_num_codes", lambda: vq.code_counts(jnp.array([0, 4]), 4),
     ValueError, r"indices must be code indices in \[0, 4\).*the first 4 at index \(1,\)"),
    ("code_counts_negative_index", lambda: vq.code_counts(jnp.array([[0, -1]]), 4),
     ValueError, r"indices must be code indices in \[0, 4\).*-1 at index \(0, 1\)"),
    ("code_counts_float_indices", lambda: vq.code_counts(jnp.array([0.0, 1.0]), 4),
     TypeError, r"indices must have an integer dtype, got float32"),
    ("code_counts_num_codes_float", lambda: vq.code_counts(jnp.array([0]), 4.0),
     TypeError, r"num_codes must be an int, got float"),
    ("code_counts_num_codes_bool", lambda: vq.code_counts(jnp.array([0]), True),
     TypeError, r"num_codes must be an int, got the bool"),
    ("lookup_index_out_of_range", lambda: vq.lookup(jnp.array([7]), jnp.ones((4, 3))),
     ValueError, r"indices must be code indices in \[0, 4\)"),
    ("ema_update_index_out_of_range",
     lambda: vq.ema_update(_ema_state(), _z(2, 3), jnp.array([0, 9])),
     ValueError, r"indices must be code indices in \[0, 4\).*9"),
    ("ema_update_indices_wrong_shape",
     lambda: vq.ema_update(_ema_state(), _z(2, 3), jnp.array([0, 1, 2])),
     ValueError, r"indices must have the shape of z_e less its last axis, \(2,\), got \(3,\)"),
    ("ema_update_eps_zero",
     lambda: vq.ema_update(_ema_state(), _z(2, 3), jnp.array([0, 1]), eps=0.0),
     ValueError, r"eps must be finite and > 0"),
    ("ema_update_decay_nan",
     lambda: vq.ema_update(_ema_state(), _z(2, 3), jnp.array([0, 1]), decay=np.nan),
     ValueError, r"decay must be in \[0, 1\)"),
    ("quantize_z_e_nan",
     lambda: vq.quantize(jnp.array([[0.0, np.nan, 0.0]]), jnp.ones((4, 3))),
     ValueError, r"z_e contains 1 NaN value\(s\), the first at index \(0, 1\)"),
    ("quantize_codebook_inf",
     lambda: vq.quantize(_z(2, 3), jnp.full((4, 3), np.inf)),
     ValueError, r"codebook contains 12 infinite"),
    ("perplexity_negative_counts", lambda: vq.perplexity(jnp.array([3.0, -1.0])),
     ValueError, r"counts must be finite usage counts >= 0.*-1\.0"),
    ("usage_counts_not_a_vector", lambda: vq.usage(jnp.ones((2, 2))),
     ValueError, r"counts must be \[num_codes >= 1\], got shape \(2, 2\)"),
    ("restart_dead_codes_counts_wrong_shape",
     lambda: vq.restart_dead_codes(_key(), jnp.ones((4, 3)), jnp.ones(3), _z(5, 3)),
     ValueError, r"counts must be \[4\] \(one per code"),
    ("restart_dead_codes_empty_pool",
     lambda: vq.restart_dead_codes(_key(), jnp.ones((4, 3)), jnp.ones(4), _z(0, 3)),
     ValueError, r"z_e must hold at least one vector"),
]

# ----------------------------------------------------------------------------- data

RAISES_DATA = [
    ("binarize_nan_pixel", lambda: data.binarize(_key(), np.array([[0.2, np.nan]], np.float32)),
     ValueError, r"images must be grey levels in \[0, 1\].*nan at index \(0, 1\)"),
    ("binarize_pixel_above_one", lambda: data.binarize(_key(), np.array([0.5, 1.5], np.float32)),
     ValueError, r"images must be grey levels in \[0, 1\].*1\.5"),
    ("binarize_negative_pixel", lambda: data.binarize(_key(), jnp.array([-0.5, 0.5])),
     ValueError, r"images must be grey levels in \[0, 1\]"),
    ("binarize_uint8_levels", lambda: data.binarize(_key(), np.array([0, 128, 255], np.uint8)),
     ValueError, r"divide 8-bit pixels by 255.*2 of 3.*128"),
    ("binarize_inf_pixel", lambda: data.binarize(_key(), np.array([np.inf], np.float32)),
     ValueError, r"images must be grey levels"),
    ("binarize_bool_images", lambda: data.binarize(_key(), np.array([True, False])),
     TypeError, r"images must have a real floating or integer dtype, got bool"),
]

# ----------------------------------------------------------------------------- objectives

RAISES_OBJECTIVES = [
    ("miwae_num_groups_float", lambda: O.miwae_bound(_z(6, 2), 2.0),
     TypeError, r"num_groups must be an int, got float 2\.0"),
    ("miwae_num_groups_bool", lambda: O.miwae_bound(_z(6, 2), True),
     TypeError, r"num_groups must be an int, got the bool True"),
    ("miwae_num_groups_traced",
     lambda: jax.jit(O.miwae_bound)(_z(6, 2), 2),
     TypeError, r"num_groups must be a static Python int, got a traced value"),
    ("piwae_num_groups_not_dividing", lambda: O.piwae_bounds(_z(6, 2), 4),
     ValueError, r"num_groups must be a positive int dividing the 6 samples"),
    ("free_bits_num_groups_float", lambda: O.free_bits(_z(2, 4), 0.1, num_groups=2.0),
     TypeError, r"num_groups must be an int, got float"),
    ("free_bits_lam_inf", lambda: O.free_bits(_z(2, 4), np.inf),
     ValueError, r"lam must be finite and >= 0.*inf"),
    ("beta_elbo_beta_nan", lambda: O.beta_elbo(_z(3, 2), _z(2), np.nan),
     ValueError, r"beta must be finite and >= 0.*nan"),
    ("ciwae_beta_nan", lambda: O.ciwae_bound(_z(3, 2), np.nan),
     ValueError, r"beta must be in \[0, 1\].*nan"),
    ("iwae_axis_float", lambda: O.iwae_bound(_z(3, 2), axis=0.0),
     TypeError, r"axis must be an int, got float"),
    ("elbo_axis_bool", lambda: O.elbo(_z(3, 2), axis=False),
     TypeError, r"axis must be an int, got bool"),
]

# ----------------------------------------------------------------------------- priors

RAISES_PRIORS = [
    ("standard_normal_latent_dim_float", lambda: P.StandardNormal(2.0),
     TypeError, r"latent_dim must be an int, got float"),
    ("mog_num_components_bool", lambda: P.MixtureOfGaussians(2, num_components=True),
     TypeError, r"num_components must be an int, got the bool"),
    ("mog_init_scale_nan", lambda: P.MixtureOfGaussians(2, init_scale=np.nan),
     ValueError, r"init_scale must be finite and >= 0"),
    ("vamp_init_std_negative", lambda: P.VampPrior(2, 4, num_pseudo_inputs=3, init_std=-0.1),
     ValueError, r"init_std must be finite and >= 0"),
    ("prior_sample_num_float", lambda: P.StandardNormal(2).sample({}, _key(), 3.0),
     TypeError, r"num must be an int, got float"),
    ("prior_sample_num_negative", lambda: P.StandardNormal(2).sample({}, _key(), -1),
     ValueError, r"num must be an int >= 0"),
    ("realnvp_prior_num_layers_float", lambda: P.real_nvp_prior(2, num_layers=2.0),
     TypeError, r"num_layers must be an int"),
    ("mixture_logits_wrong_shape",
     lambda: P.mixture_normal_log_prob(_z(5, 2), _z(4), _z(3, 2), _z(3, 2)),
     ValueError, r"logits must be \[M\] = \[3\].*got shape \(4,\)"),
    ("mixture_z_wrong_event_size",
     lambda: P.mixture_normal_log_prob(_z(5, 4), _z(3), _z(3, 2), _z(3, 2)),
     ValueError, r"z must be \[\.\.\., 2\]"),
    ("mixture_z_nan",
     lambda: P.mixture_normal_log_prob(jnp.full((1, 2), np.nan), _z(3), _z(3, 2), _z(3, 2)),
     ValueError, r"z contains 2 NaN"),
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
    ("elbo_analytic_kl_kl_with_a_trailing_axis",
     lambda: O.elbo_analytic_kl(jnp.zeros((2, 3)), jnp.zeros((3, 1))),
     ValueError, r"kl must have one value per data point, shape \(3,\).*got \(1,\)"),
    ("beta_elbo_kl_that_would_broadcast_to_B_by_B",
     lambda: O.beta_elbo(jnp.zeros((2, 3, 1)), jnp.zeros((3,))),
     ValueError, r"kl must have one value per data point, shape \(3, 1\).*got \(3,\)"),
    ("ciwae_beta_string", lambda: O.ciwae_bound(jnp.zeros((2, 3)), "0.5"),
     TypeError, r"beta must be a number or a numeric array, got str"),
    ("renyi_alpha_string", lambda: O.renyi_bound(jnp.zeros((2, 3)), "0.5"),
     TypeError, r"alpha must be a number or a numeric array, got str"),
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
    ("elbo_surgery_uint8_images",
     lambda: diagnostics.elbo_surgery(*_bernoulli_vae(), _uint8_images(), _key()),
     ValueError, r"images must be binary values in \{0, 1\}.*uint8"),
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
    ("binarize_key_an_int", lambda: data.binarize(0, _grey_images()),
     TypeError, r"key must be a PRNG key"),
    ("load_name_a_list", lambda: data.load(["digits"], "train"),
     TypeError, r"name must be a dataset name \(a str\)"),
    ("load_digits_missing_data_dir", lambda: data.load("digits", "train", data_dir="/nonexistent"),
     ValueError, r"data_dir='/nonexistent' does not exist"),
    ("sample_x_num_negative",
     lambda: models.sample_x(*_bernoulli_vae(), _key(), -1),
     ValueError, r"num must be an int >= 1, got -1"),
    ("vae_zero_latent_dim", lambda: V.VAE((4, 4, 1), (0,), ((4,),)),
     ValueError, r"latent_dims\[0\] must be an int >= 1, got 0"),
    ("gradient_snr_group_naming_no_parameters",
     lambda: diagnostics.gradient_snr(lambda p, k: jnp.sum(p["w"]), {"w": jnp.ones(2)}, _key(),
                                      4, groups={"a": "nope"}),
     ValueError, r"groups: 'nope' names no parameters.*keys: \['w'\]"),
    ("aggregate_posterior_z_of_another_latent_size",
     lambda: diagnostics.aggregate_posterior_log_prob(*_bernoulli_vae(), jnp.zeros((2, 5)),
                                                      _binary_images()),
     ValueError, r"z must be \[S, D\] with D = 2.*\(2, 5\)"),
]

RAISES = (RAISES_DISTRIBUTIONS + RAISES_GUMBEL + RAISES_FLOWS + RAISES_VQ + RAISES_DATA
          + RAISES_OBJECTIVES + RAISES_PRIORS + RAISES_EVALUATION + RAISES_SETTINGS)


@pytest.mark.parametrize("thunk,exc,match", [c[1:] for c in RAISES], ids=[c[0] for c in RAISES])
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  with pytest.raises(exc, match=match):
    thunk()


def test_type_errors_are_also_value_errors():
  # Code that catches the ValueError of a bad argument keeps working for a wrong type.
  with pytest.raises(ValueError, match="num_groups"):
    O.miwae_bound(_z(6, 2), 2.0)
  assert issubclass(ATE, TypeError) and issubclass(ATE, ValueError)


# =============================================================================================
# 2. Traced bad input gives NaN (never a plausible number)
# =============================================================================================


def _bernoulli_traced():
  x = jnp.array([[0.0, 1.0], [0.5, 1.0], [255.0, 0.0], [np.nan, 0.0]])
  out = jax.jit(D.bernoulli_log_prob)(x, jnp.full((4, 2), 2.0))
  return out, np.array([False, True, True, True])


def _bernoulli_unit_interval_traced():
  x = jnp.array([[0.3, 1.0], [1.5, 0.0]])
  out = jax.jit(lambda x, l: D.bernoulli_log_prob(x, l, support="unit_interval"))(x, _z(2, 2))
  return out, np.array([False, True])


def _bernoulli_traced_k_samples():
  # x [B, D] broadcast against [K, B, D] logits, the VAE layout
  x = jnp.array([[0.0, 1.0], [0.7, 1.0], [1.0, 1.0]])
  out = jax.jit(D.bernoulli_log_prob)(x, _z(5, 3, 2))
  return out, np.broadcast_to([False, True, False], (5, 3))


def _categorical_traced():
  out = jax.jit(D.categorical_log_prob)(jnp.array([0, 3, 4, -1]), _z(4, 4))
  return out, np.array([False, False, True, True])


def _one_hot_traced():
  x = jnp.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  out = jax.jit(D.categorical_log_prob_one_hot)(x, _z(4, 3))
  return out, np.array([False, True, True, True])


def _discretized_traced():
  x = jnp.array([0.0, 1.0, 1.2, -0.1, np.nan, 0.5])
  out = jax.jit(D.discretized_logistic_log_prob)(x, jnp.full(6, 0.5), _z(6))
  return out, np.array([False, False, True, True, True, False])


def _concrete_traced():
  y = jnp.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.6], [-0.1, 1.1]])
  out = jax.jit(G.concrete_log_prob)(y, _z(4, 2), 0.5)
  return out, np.array([False, True, True, True])


def _concrete_log_space_traced():
  log_y = jnp.array([[math.log(0.2), math.log(0.8)], [0.0, -np.inf], [0.0, 0.0]])
  out = jax.jit(lambda y, l: G.concrete_log_prob(y, l, 0.5, log_space=True))(log_y, _z(3, 2))
  return out, np.array([False, True, True])


def _concrete_traced_temperature():
  t = jnp.array([[0.5], [0.0], [-1.0], [np.nan]])
  out = jax.jit(G.concrete_log_prob)(jnp.full((4, 2), 0.5), _z(4, 2), t)
  return out, np.array([False, True, True, True])


def _gumbel_softmax_traced_temperature():
  t = jnp.array([[0.5], [-0.5], [0.0]])
  out = jax.jit(G.gumbel_softmax)(_key(), _z(3, 4), t)
  return out, np.broadcast_to(np.array([[False], [True], [True]]), (3, 4))


def _binarize_traced():
  x = jnp.array([0.0, 1.0, 0.5, 1.5, -0.5, np.nan])
  return jax.jit(data.binarize)(_key(), x), np.array([False] * 3 + [True] * 3)


def _lookup_traced():
  out = jax.jit(vq.lookup)(jnp.array([0, 4, -1, 3]), jnp.ones((4, 2)))
  return out, np.broadcast_to(np.array([[False], [True], [True], [False]]), (4, 2))


def _ema_update_traced_indices():
  new = jax.jit(vq.ema_update)(_ema_state(), _z(2, 3), jnp.array([0, 4]))
  return new.codebook, np.ones((4, 3), bool)


def _ema_update_traced_decay():
  new = jax.jit(vq.ema_update)(_ema_state(), _z(2, 3), jnp.array([0, 1]), 1.5)
  return new.cluster_size, np.ones(4, bool)


def _perplexity_traced():
  f = jax.jit(lambda c: jnp.stack([vq.perplexity(c), vq.usage(c)]))
  return f(jnp.array([2.0, -1.0, 3.0])), np.array([True, True])


def _beta_elbo_traced():
  out = jax.jit(O.beta_elbo)(_z(3, 2), jnp.ones(2), -0.5)
  return out, np.array([True, True])


def _ciwae_traced():
  out = jax.jit(O.ciwae_bound)(_z(3, 2), 1.5)
  return out, np.array([True, True])


def _free_bits_traced():
  out = jax.jit(O.free_bits)(jnp.ones((2, 3)), -0.5)
  return out, np.array(True)


TRACED_NAN = [
    ("bernoulli_traced_off_support", _bernoulli_traced),
    ("bernoulli_unit_interval_traced_above_one", _bernoulli_unit_interval_traced),
    ("bernoulli_traced_grey_level_with_k_samples", _bernoulli_traced_k_samples),
    ("categorical_traced_index_out_of_range", _categorical_traced),
    ("one_hot_traced_not_one_hot", _one_hot_traced),
    ("discretized_logistic_traced_outside_unit_interval", _discretized_traced),
    ("concrete_traced_off_simplex", _concrete_traced),
    ("concrete_log_space_traced_off_simplex", _concrete_log_space_traced),
    ("concrete_traced_temperature_not_positive", _concrete_traced_temperature),
    ("gumbel_softmax_traced_temperature_not_positive", _gumbel_softmax_traced_temperature),
    ("binarize_traced_off_unit_interval", _binarize_traced),
    ("lookup_traced_index_out_of_range", _lookup_traced),
    ("ema_update_traced_index_out_of_range", _ema_update_traced_indices),
    ("ema_update_traced_decay_out_of_range", _ema_update_traced_decay),
    ("perplexity_and_usage_traced_negative_counts", _perplexity_traced),
    ("beta_elbo_traced_negative_beta", _beta_elbo_traced),
    ("ciwae_traced_beta_above_one", _ciwae_traced),
    ("free_bits_traced_negative_lam", _free_bits_traced),
]


@pytest.mark.parametrize("thunk", [c[1] for c in TRACED_NAN], ids=[c[0] for c in TRACED_NAN])
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  out, bad = thunk()
  out = np.asarray(out)
  assert out.shape == np.shape(bad), (out.shape, np.shape(bad))
  np.testing.assert_array_equal(np.isnan(out), bad)
  assert np.all(np.isfinite(out[~np.asarray(bad)]))


def test_code_counts_traced_out_of_range_is_counted_nowhere():
  # The documented contract (an int count cannot be NaN): not clipped into code 0, not wrapped.
  idx = jnp.array([0, 1, 1, 4, -1, 9, 3])
  counts = jax.jit(vq.code_counts, static_argnums=1)(idx, 4)
  np.testing.assert_array_equal(counts, [1, 2, 0, 1])
  assert int(counts.sum()) < idx.size


_X_BIN = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
_L = jnp.array([[0.3, -2.0, 1.5], [4.0, -0.1, 0.0]])
ON_SUPPORT = [
    ("bernoulli", lambda x, l: D.bernoulli_log_prob(x, l), _X_BIN, _L),
    ("bernoulli_unit_interval",
     lambda x, l: D.bernoulli_log_prob(x, l, support="unit_interval"), _X_BIN * 0.3, _L),
    ("categorical", lambda x, l: D.categorical_log_prob(x, l), jnp.array([2, 0]), _L),
    ("one_hot", lambda x, l: D.categorical_log_prob_one_hot(x, l), jnp.eye(3)[jnp.array([2, 0])],
     _L),
    ("discretized_logistic", lambda x, l: D.discretized_logistic_log_prob(x, l, l - 1.0),
     jnp.array([[0.0, 128 / 255, 1.0], [3 / 255, 1.0, 0.5]]), _L * 0.1),
    ("concrete", lambda y, l: G.concrete_log_prob(y, l, 0.7), jax.nn.softmax(_L[::-1]), _L),
    ("concrete_log_space", lambda y, l: G.concrete_log_prob(y, l, 0.7, log_space=True),
     jax.nn.log_softmax(_L[::-1]), _L),
]


@pytest.mark.parametrize("f,x,l", [c[1:] for c in ON_SUPPORT], ids=[c[0] for c in ON_SUPPORT])
def test_on_support_traced_values_and_gradients_equal_the_eager_ones(f, x, l):
  eager = f(x, l)
  traced = jax.jit(f)(x, l)
  np.testing.assert_allclose(traced, eager, rtol=1e-6)
  assert np.all(np.isfinite(eager))
  g_eager = jax.grad(lambda l: jnp.sum(f(x, l)))(l)
  g_traced = jax.jit(jax.grad(lambda l, x: jnp.sum(f(x, l))))(l, x)
  np.testing.assert_allclose(g_traced, g_eager, rtol=1e-6, atol=1e-7)
  assert np.all(np.isfinite(g_eager))


# =============================================================================================
# 3. Valid input keeps working (NumPy integers, [B, 1] temperatures, ...)
# =============================================================================================


def _accept_numpy_num_bins():
  x = jnp.array([0.0, 0.5, 1.0])
  np.testing.assert_array_equal(D.discretized_logistic_log_prob(x, 0.4, -1.0, np.int64(256)),
                                D.discretized_logistic_log_prob(x, 0.4, -1.0, 256))


def _accept_numpy_event_ndims():
  np.testing.assert_array_equal(D.standard_normal_log_prob(_z(2, 3), event_ndims=np.int32(2)),
                                D.standard_normal_log_prob(_z(2, 3), event_ndims=2))


def _accept_numpy_num_groups():
  lw = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
  np.testing.assert_array_equal(O.miwae_bound(lw, np.int64(3)), O.miwae_bound(lw, 3))
  np.testing.assert_array_equal(O.free_bits(jnp.ones((2, 4)), 0.1, num_groups=np.int32(2)),
                                O.free_bits(jnp.ones((2, 4)), 0.1, num_groups=2))
  np.testing.assert_array_equal(O.iwae_bound(lw, axis=np.int64(0)), O.iwae_bound(lw))


def _accept_numpy_num_codes():
  np.testing.assert_array_equal(vq.code_counts(jnp.array([0, 2, 2]), np.int64(3)), [1, 0, 2])
  np.testing.assert_array_equal(vq.code_counts(np.array([0, 2, 2], np.uint8), 3), [1, 0, 2])


def _accept_numpy_prior_sizes():
  prior = P.StandardNormal(np.int64(3))
  assert prior.latent_dim == 3 and type(prior.latent_dim) is int
  assert prior.sample({}, _key(), np.int32(4)).shape == (4, 3)
  flow = F.QRLinear(np.int64(3), num_reflections=np.int32(2))
  assert flow.event_size == 3 and flow.num_reflections == 2


def _accept_bernoulli_unit_interval():
  x, l = jnp.array([0.3, 1.0]), jnp.array([0.5, -1.0])
  got = D.bernoulli_log_prob(x, l, support="unit_interval")
  np.testing.assert_allclose(got, np.sum(np.asarray(x) * np.asarray(l)
                                         - np.log1p(np.exp(np.asarray(l)))), rtol=1e-6)


def _accept_binary_integer_images():
  b = data.binarize(_key(), np.array([0, 1, 1, 0], np.uint8))
  np.testing.assert_array_equal(b, [0.0, 1.0, 1.0, 0.0])
  assert b.dtype == jnp.float32


def _accept_uint8_class_indices():
  logits = jnp.log(jnp.array([[0.25, 0.75]]))
  np.testing.assert_allclose(D.categorical_log_prob(np.array([1], np.uint8), logits),
                             [math.log(0.75)], rtol=1e-6)


def _accept_straight_through_one_hot():
  y = G.gumbel_softmax(_key(), jnp.array([[0.3, -0.2, 1.5]]), 0.5, hard=True)
  logits = jnp.array([[0.3, -0.2, 1.5]])
  lp = D.categorical_log_prob_one_hot(y, logits)
  np.testing.assert_allclose(lp, jax.nn.log_softmax(logits)[0, int(jnp.argmax(y))], rtol=1e-6)


ACCEPTS = [
    ("numpy_int_num_bins", _accept_numpy_num_bins),
    ("numpy_int_event_ndims", _accept_numpy_event_ndims),
    ("numpy_int_num_groups_and_axis", _accept_numpy_num_groups),
    ("numpy_int_num_codes_and_uint8_indices", _accept_numpy_num_codes),
    ("numpy_int_prior_and_flow_sizes", _accept_numpy_prior_sizes),
    ("bernoulli_unit_interval_cross_entropy", _accept_bernoulli_unit_interval),
    ("binarize_binary_uint8_images", _accept_binary_integer_images),
    ("categorical_uint8_indices", _accept_uint8_class_indices),
    ("one_hot_straight_through_sample", _accept_straight_through_one_hot),
]


@pytest.mark.parametrize("thunk", [c[1] for c in ACCEPTS], ids=[c[0] for c in ACCEPTS])
def test_valid_input_is_accepted(thunk):
  thunk()


# =============================================================================================
# 4. Oracle tests of the numerical fixes
# =============================================================================================


# ----------------------------------------------------------------------------- discretized logistic


@pytest.mark.parametrize("log_scale", [-2.0, 0.0, 2.0, 5.0, 7.0])
def test_discretized_logistic_float32_matches_a_float64_oracle(log_scale):
  # Oracle: the bin mass sigma(b) - sigma(a) in float64 with scipy (relative error ~1e-11 here);
  # the difference of two float32 log-CDFs lost up to 1e-2 nats at log_scale = 5.
  rng = np.random.default_rng(1)
  x = (rng.integers(0, 256, size=5000) / 255.0).astype(np.float32)
  loc = rng.uniform(-0.5, 1.5, size=5000).astype(np.float32)
  ls = np.full(5000, log_scale, np.float32)
  got = np.asarray(jax.jit(D.discretized_logistic_log_prob)(x, loc, ls), np.float64)
  xs, mu, s, h = x.astype(np.float64), loc.astype(np.float64), np.exp(float(log_scale)), 0.5 / 255
  upper = np.where(xs > 1 - h, 1.0, expit((xs + h - mu) / s))
  lower = np.where(xs < h, 0.0, expit((xs - h - mu) / s))
  want = np.log(upper - lower)
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(want))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_discretized_logistic_masses_sum_to_one_at_large_scale():
  grid = jnp.arange(256, dtype=jnp.float32) / 255.0
  lp = D.discretized_logistic_log_prob(grid, 0.3, 5.0)
  assert abs(float(jax.nn.logsumexp(lp))) < 1e-5


# ----------------------------------------------------------------------------- Concrete density


def _concrete_oracle(log_y, logits, tau):
  """The Concrete log-density in float64 NumPy (Maddison et al., Definition 1)."""
  c = log_y.shape[-1]
  return (gammaln(c) + (c - 1) * np.log(tau) + np.sum(logits - (tau + 1) * log_y, -1)
          - c * logsumexp(logits - tau * log_y, -1))


def test_concrete_log_prob_is_finite_for_gumbel_softmax_samples_at_low_temperature():
  tau, key = 0.05, _key(7)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(4096, 10)), jnp.float32)
  y = G.gumbel_softmax(jax.random.clone(key), logits, tau)
  g = G.sample_gumbel(jax.random.clone(key), logits.shape, jnp.float32)   # the same noise
  # Without the floor, most of these samples have entries that underflow to 0 (density -> nan).
  raw = np.asarray(jax.nn.softmax((logits + g) / tau, axis=-1))
  assert np.mean(np.any(raw == 0, axis=-1)) > 0.3
  lp = np.asarray(G.concrete_log_prob(y, logits, tau))
  assert np.mean(np.isfinite(lp)) == 1.0
  # ... and it is the density of the point returned, to float32 accuracy.
  want = _concrete_oracle(np.log(np.asarray(y, np.float64)), np.asarray(logits, np.float64), tau)
  np.testing.assert_allclose(lp, want, rtol=2e-6)
  # jitted (traced y) agrees and is finite too
  np.testing.assert_allclose(jax.jit(G.concrete_log_prob)(y, logits, tau), lp, rtol=1e-6)


def test_concrete_log_space_samples_are_exact_at_low_temperature():
  # log y from log_softmax needs no floor: the density of the exact sample for this noise.
  tau, key = 0.05, _key(8)
  logits = jnp.asarray(np.random.default_rng(1).normal(size=(2048, 10)), jnp.float32)
  log_y = G.gumbel_softmax(jax.random.clone(key), logits, tau, log_space=True)
  g = np.asarray(G.sample_gumbel(jax.random.clone(key), logits.shape, jnp.float32), np.float64)
  l64 = np.asarray(logits, np.float64)
  exact_log_y = log_softmax((l64 + g) / tau, axis=-1)          # float64: nothing underflows
  assert np.min(exact_log_y) < np.log(np.finfo(np.float32).tiny)   # float32 y would underflow
  lp = np.asarray(G.concrete_log_prob(log_y, logits, tau, log_space=True))
  assert np.all(np.isfinite(lp))
  np.testing.assert_allclose(lp, _concrete_oracle(exact_log_y, l64, tau), rtol=2e-6)


# ----------------------------------------------------------------------------- temperature shape


def test_per_row_temperature_with_batch_equal_to_classes_is_applied_per_row():
  # B == C == 3: a [B, 1] temperature is one temperature per row, checked against row-by-row calls.
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3)), jnp.float32)
  temps = np.array([0.3, 1.0, 3.0], np.float32)
  key = _key(9)
  g = G.sample_gumbel(jax.random.clone(key), (3, 3), jnp.float32)
  y = G.gumbel_softmax(jax.random.clone(key), logits, jnp.asarray(temps)[:, None])
  want = np.stack([np.asarray(jax.nn.softmax((logits[i] + g[i]) / temps[i])) for i in range(3)])
  np.testing.assert_allclose(y, want, rtol=1e-6)
  lp = G.concrete_log_prob(y, logits, jnp.asarray(temps)[:, None])
  want_lp = [float(G.concrete_log_prob(y[i], logits[i], float(temps[i]))) for i in range(3)]
  np.testing.assert_allclose(lp, want_lp, rtol=1e-6)
  # a scalar-shaped [1] temperature broadcasts like a scalar
  np.testing.assert_allclose(G.concrete_log_prob(y, logits, jnp.array([0.5])),
                             G.concrete_log_prob(y, logits, 0.5), rtol=1e-6)


# ----------------------------------------------------------------------------- QR linear flow


def _qr_with_vectors(vectors, d=3):
  b = F.QRLinear(d, num_reflections=len(vectors))
  rng = np.random.default_rng(3)
  params = F.QRParams(vectors=jnp.asarray(vectors, jnp.float32),
                      upper=jnp.asarray(rng.normal(size=(d, d)), jnp.float32),
                      log_diag=jnp.asarray(0.3 * rng.normal(size=d), jnp.float32),
                      bias=jnp.asarray(rng.normal(size=d), jnp.float32), sign=(1.0, -1.0, 1.0))
  return b, params


def _numpy_weight(vectors, params):
  """W = H_1 ... H_K R in float64, a zero vector contributing the identity."""
  d = params.log_diag.shape[0]
  q = np.eye(d)
  for v in np.asarray(vectors, np.float64):
    n2 = v @ v
    q = q @ (np.eye(d) - 2.0 * np.outer(v, v) / n2 if n2 > 0 else np.eye(d))
  r = np.triu(np.asarray(params.upper, np.float64), 1) + np.diag(
      np.asarray(params.sign) * np.exp(np.asarray(params.log_diag, np.float64)))
  return q @ r


@pytest.mark.parametrize("vectors", [
    [[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.3, 0.1, -1.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[1e-30, 2e-30, -1e-30], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
], ids=["one_zero_vector", "all_zero_vectors", "tiny_and_zero_vectors"])
def test_qr_linear_with_zero_householder_vectors_is_invertible(vectors):
  b, params = _qr_with_vectors(vectors)
  u = jnp.asarray(np.random.default_rng(4).normal(size=(16, 3)), jnp.float32)
  x, ld = b.forward_and_log_det(params, u)
  back, ld_inv = b.inverse_and_log_det(params, x)
  assert np.all(np.isfinite(x)) and np.all(np.isfinite(ld))
  np.testing.assert_allclose(back, u, atol=1e-5)
  np.testing.assert_allclose(ld, -ld_inv, atol=1e-6)
  np.testing.assert_allclose(ld, np.full(16, float(jnp.sum(params.log_diag))), rtol=1e-6)
  # the oracle: the tiny vector still reflects along its direction, a zero one is the identity
  w = _numpy_weight(vectors, params)
  np.testing.assert_allclose(b.weight(params), w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x, np.asarray(u, np.float64) @ w.T + np.asarray(params.bias),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.linalg.slogdet(w)[1], float(jnp.sum(params.log_diag)), rtol=1e-5)
  # gradients are finite at the zero vector (training cannot step into NaN)
  grads = jax.grad(lambda p: jnp.sum(F.Flow(b).log_prob(p, x)))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


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


def _fake_mnist_cache(cache):
  """A valid-looking array cache of MNIST's test split (two blank images)."""
  data._write_npz("mnist", str(cache), {  # pylint: disable=protected-access
      "test_image": np.zeros((2, 28, 28, 1), np.uint8), "test_label": np.zeros(2, np.uint8)})


def test_missing_explicit_data_dir_raises_even_when_a_cache_exists(tmp_path):
  _fake_mnist_cache(tmp_path / "cache")
  missing = tmp_path / "no_such_folder"
  with pytest.raises(ValueError, match=rf"data_dir='{missing}' does not exist"):
    data.load("mnist", "test", data_dir=missing, cache_dir=tmp_path / "cache")


def test_explicit_data_dir_without_the_dataset_raises_even_when_a_cache_exists(tmp_path):
  _fake_mnist_cache(tmp_path / "cache")
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match=r"data_dir='.*empty' holds no copy of 'mnist'"):
    data.load("mnist", "test", data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
  # without an explicit folder the cache is used as before
  got = data.load("mnist", "test", data_dir=None, cache_dir=tmp_path / "cache")
  assert got["image"].shape == (2, 28, 28, 1)


def test_datasets_constant_has_a_docstring():
  # mkdocstrings (griffe) reads a string literal right after a module-level constant.
  import ast
  import inspect
  tree = ast.parse(inspect.getsource(data))
  body = tree.body
  for i, node in enumerate(body):
    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DATASETS":
      doc = body[i + 1]
      assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
      assert "load" in doc.value.value
      return
  pytest.fail("DATASETS not found in dgmjax/data.py")


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


# ------------------------------------------------------------------ repeated tuple flags (drivers)


@pytest.mark.parametrize("extra,expected", [
    (["--config.eval.bound_ks=(5,)", "--config.eval.bound_ks=(0, 5)"], (0, 5)),
    (["--config.eval.bound_ks", "(7,)", "--config.eval.bound_ks=(8, 9)"], (8, 9)),
    (["--config.eval.bound_ks=5", "--config.eval.bound_ks=50"], (50,)),
    (["--config.eval.bound_ks=(5, 50, 500)"], (5, 50, 500)),
], ids=["twice", "two_token_form", "scalars", "once"])
def test_a_repeated_tuple_flag_replaces_instead_of_concatenating(extra, expected):
  fv = _parse(["main", "--config=experiments/iwae/configs/quick.py"] + extra
              + ["--config.eval.batch_size=3", "--config.eval.batch_size=4"])
  assert fv.config.eval.bound_ks == expected
  assert fv.config.eval.batch_size == 4   # a scalar flag: the last one, as before
