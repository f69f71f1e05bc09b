"""Tests of dgmjax.diagnostics.units: active units and KL per latent dimension."""

import jax
import numpy as np
import pytest

from dgmjax import diagnostics
from dgmjax.models import vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("active_units_grey_levels_for_a_bernoulli_model",
     lambda: bi.with_vae(diagnostics.active_units, bi.grey_images()),
     ValueError, r"images must be binary"),
    ("active_units_nan_images", lambda: bi.with_vae(diagnostics.active_units, bi.nan_images()),
     ValueError, r"images contains 1 NaN"),
    ("active_units_threshold_nan",
     lambda: bi.with_vae(diagnostics.active_units, bi.binary_images(), threshold=np.nan),
     ValueError, r"threshold must be a finite number >= 0, got nan"),
    ("active_units_threshold_negative",
     lambda: bi.with_vae(diagnostics.active_units, bi.binary_images(), threshold=-1.0),
     ValueError, r"threshold must be a finite number >= 0"),
    ("active_units_num_samples_zero",
     lambda: bi.with_vae(diagnostics.active_units, bi.binary_images(), num_samples=0),
     ValueError, r"num_samples must be an int >= 1, got 0"),
    ("kl_per_dimension_grey_levels",
     lambda: diagnostics.kl_per_dimension(*bi.bernoulli_vae(), bi.grey_images()),
     ValueError, r"images must be binary"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _binary(n, shape=(4, 4, 1), seed=0):
  return (np.random.default_rng(seed).uniform(size=(n,) + shape) < 0.4).astype(np.float32)


def test_active_units_counts_dimensions_with_variable_posterior_means():
  model = vae.VAE((4, 4, 1), (5,), ((8,),))
  params = model.init(jax.random.key(0))
  loc = params["params"]["encoders_0"]["loc"]
  loc["kernel"] = loc["kernel"].at[:, :2].set(0.0)  # two units ignore x: Cov_x(E_q[u]) = 0
  loc["kernel"] = loc["kernel"].at[:, 2:].multiply(10.0)
  au = diagnostics.active_units(model, params, _binary(50), jax.random.key(1),
                               batch_size=16)
  assert au["active"] == [3]
  assert au["variances"][0][0] == pytest.approx(0.0, abs=1e-12)
  # Two layers: a count per layer.
  model2 = vae.VAE((4, 4, 1), (4, 3), ((8,), (6,)))
  au2 = diagnostics.active_units(model2, model2.init(jax.random.key(2)),
                                _binary(20), jax.random.key(3))
  assert len(au2["active"]) == 2 and len(au2["variances"][1]) == 3
