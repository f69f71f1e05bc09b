"""Tests of dgmjax.numerics: the streaming log-mean-exp against scipy's logsumexp, matmul precision
against inputs rounded by hand, the memory budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from dgmjax import numerics
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("memory_budget_fraction_negative", lambda: numerics.memory_budget(fraction=-1),
     ValueError, r"fraction must be a finite number > 0 and <= 1"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


@pytest.mark.parametrize("num_chunks, last", [(1, False), (3, False), (3, True)])
def test_streaming_log_mean_exp_matches_scipy(x64, num_chunks, last):
  # Values far apart (a naive mean of exp would under- or overflow) in chunks of 5 rows, a
  # remainder of 2 rows as `last`; the reduced axis is axis 0 of each chunk.
  rng = np.random.default_rng(0)
  values = rng.normal(scale=300.0, size=(num_chunks * 5 + 2 * last, 4))
  chunks = jnp.asarray(values[:num_chunks * 5].reshape(num_chunks, 5, 4))
  rest = jnp.asarray(values[num_chunks * 5:]) if last else None
  got = numerics.streaming_log_mean_exp(lambda c: c, chunks, values.shape[0], last=rest)
  np.testing.assert_allclose(got, logsumexp(values, axis=0) - np.log(values.shape[0]),
                             rtol=1e-12)
  # A column of -inf (padding) stays -inf; a traced count; the reduced axis elsewhere.
  padded = jnp.concatenate([chunks, jnp.full((num_chunks, 5, 1), -jnp.inf)], axis=2)
  got = jax.jit(lambda c, n: numerics.streaming_log_mean_exp(lambda a: a, c, n, axis=1))(
      jnp.swapaxes(padded, 1, 2), jnp.asarray(num_chunks * 5))
  want = logsumexp(values[:num_chunks * 5], axis=0) - np.log(num_chunks * 5)
  np.testing.assert_allclose(got[:4], want, rtol=1e-12)
  assert got[4] == -np.inf


def test_streaming_logsumexp_accumulates_low_precision_values_in_float32():
  values = jnp.asarray(np.random.default_rng(1).normal(scale=30.0, size=(3, 100)), jnp.bfloat16)
  got = numerics.streaming_logsumexp(lambda c: c, values.reshape(3, 100, 1))
  assert got.dtype == jnp.float32
  want = logsumexp(np.asarray(values, np.float64))
  np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_matmul_precision_rounds_the_dense_inputs_and_keeps_float32():
  import flax.linen as nn
  dense = nn.Dense(5)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(7, 33)).astype(np.float32))
  params = dense.init(jax.random.key(0), x)
  k = np.asarray(params["params"]["kernel"], np.float64)
  b = np.asarray(params["params"]["bias"], np.float64)
  exact = np.asarray(x, np.float64) @ k + b
  for name, bits in numerics.MATMUL_PRECISIONS.items():
    rnd = lambda a: np.asarray(jax.lax.reduce_precision(jnp.asarray(a, jnp.float32), 8, bits),
                               np.float64)
    want = rnd(x) @ rnd(k) + b

    def f(p, xx, name=name):
      with numerics.matmul_precision(name, emulate=True):
        return dense.apply(p, xx)

    got = jax.jit(f)(params, x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if bits < 23:
      assert np.abs(np.asarray(got, np.float64) - exact).max() > 1e-5  # really rounded
  with numerics.matmul_precision("bfloat16", emulate=False):  # native: bf16 in, f32 out
    native = dense.apply(params, x)
  assert native.dtype == jnp.float32
  emulated = jax.jit(lambda p, xx: f(p, xx, "bfloat16"))(params, x)
  np.testing.assert_allclose(native, emulated, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="matmul_precision"):
    with numerics.matmul_precision("float8"):
      pass


@pytest.mark.parametrize("layer", ["conv", "conv_transpose", "einsum"])
def test_matmul_precision_rounds_convolutions_and_every_matmul_like_dense(layer):
  # Oracle: the inputs rounded by hand to bfloat16's 7 mantissa bits, then the exact float32
  # operation (products of two 8-bit mantissas are exact in float32).
  import flax.linen as nn
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 3)).astype(np.float32))
  rnd = lambda a: jax.lax.reduce_precision(jnp.asarray(a, jnp.float32), 8, 7)
  if layer == "einsum":
    w = jnp.asarray(rng.normal(size=(3, 4)).astype(np.float32))
    apply = lambda xx, ww: jnp.einsum("bhwc,cd->bhwd", xx, ww,
                                      precision=jax.lax.Precision.HIGHEST)
  else:
    hi = jax.lax.Precision.HIGHEST
    module = (nn.Conv(4, (3, 3), use_bias=False, precision=hi) if layer == "conv"
              else nn.ConvTranspose(4, (3, 3), use_bias=False, precision=hi))
    w = module.init(jax.random.key(0), x)["params"]["kernel"]
    apply = lambda xx, ww: module.apply({"params": {"kernel": ww}}, xx)
  exact = apply(x, w)
  want = apply(rnd(x), rnd(w))

  def f(xx, ww):
    with numerics.matmul_precision("bfloat16", emulate=True):
      return apply(xx, ww)

  got = jax.jit(f)(x, w)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(got) - np.asarray(exact)).max() > 1e-4  # really rounded
  # the interception ends with the context: the same function traced outside is exact
  np.testing.assert_allclose(jax.jit(apply)(x, w), exact, rtol=1e-6, atol=1e-6)
  assert "bind" not in jax.lax.dot_general_p.__dict__
  assert "bind" not in jax.lax.conv_general_dilated_p.__dict__


def test_memory_budget_is_positive_and_says_where_it_comes_from():
  budget = numerics.memory_budget()
  assert budget["bytes"] >= 1 << 18 and isinstance(budget["source"], str)
