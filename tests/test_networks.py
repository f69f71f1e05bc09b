"""Tests of dgmjax.nn.mlp: shapes over leading sample axes, Burda's initialisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax.nn import mlp as networks


def test_mlp_acts_on_last_axis_with_leading_sample_axes():
  mlp = networks.MLP((7, 5, 3))
  x = jax.random.normal(jax.random.key(0), (4, 2, 6))
  params = mlp.init(jax.random.key(1), x)
  y = mlp.apply(params, x)
  assert y.shape == (4, 2, 3)
  # [K, B, D] gives the same numbers as each [B, D] slice on its own.
  np.testing.assert_allclose(y[1], mlp.apply(params, x[1]), rtol=1e-6, atol=1e-6)


def test_mlp_glorot_uniform_kernels_zero_biases_and_output_bias_init():
  bias = jnp.linspace(-1.0, 1.0, 300)
  mlp = networks.MLP((400, 300), out_bias_init=lambda *_: bias)
  params = mlp.init(jax.random.key(0), jnp.zeros((1, 500)))["params"]
  w = np.asarray(params["hidden_0"]["kernel"])
  bound = math.sqrt(6.0 / (500 + 400))
  assert np.abs(w).max() <= bound
  np.testing.assert_allclose(w.var(), bound**2 / 3, rtol=0.02)  # variance of U(-a, a)
  assert not np.any(params["hidden_0"]["bias"])
  np.testing.assert_array_equal(params["out"]["bias"], bias)


def test_gaussian_head_returns_loc_and_log_scale():
  head = networks.GaussianHead((8, 8), 3)
  x = jnp.ones((5, 4))
  params = head.init(jax.random.key(0), x)
  loc, log_scale = head.apply(params, x)
  assert loc.shape == log_scale.shape == (5, 3)
  assert set(params["params"]) == {"hidden_0", "hidden_1", "loc", "log_scale"}


def test_flatten_images():
  assert networks.flatten_images(jnp.zeros((2, 4, 4, 1))).shape == (2, 16)
  assert networks.flatten_images(jnp.zeros((2, 16))).shape == (2, 16)
  with pytest.raises(ValueError, match="batch"):
    networks.flatten_images(jnp.zeros((16,)))
