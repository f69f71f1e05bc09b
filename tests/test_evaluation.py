"""Tests of dgmjax.evaluation (chunked k=5000 estimator, bounds, active units) and plotting."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import evaluation, objectives, plotting
from dgmjax.models import vae


def _binary(n, shape=(4, 4, 1), seed=0):
  return (np.random.default_rng(seed).uniform(size=(n,) + shape) < 0.4).astype(np.float32)


@pytest.mark.parametrize("model", [vae.VAE((4, 4, 1), (3,), ((8,),)),
                                   vae.VAE((4, 4, 1), (3, 2), ((8,), (6,)))])
def test_chunked_k5000_equals_unchunked_iwae_bound(model):
  params = model.init(jax.random.key(0))
  x = _binary(5)
  with jax.debug_key_reuse(False):  # the oracle redraws the same samples on purpose
    key = jax.random.key(1)
    # 3 batches of 2 (the last one padded) and chunks of 700 (5000 = 7 * 700 + 100).
    got = evaluation.log_likelihood(model.log_weights_from_keys, params, x, key,
                                    num_samples=5000, sample_chunk=700, batch_size=2)
    want = np.concatenate([
        np.asarray(objectives.iwae_bound(
            model.log_weights(params, x[i:i + 2], jax.random.fold_in(key, b), 5000)))
        for b, i in enumerate(range(0, 5, 2))])
  assert got.shape == (5,) and got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)


def test_streaming_bound_is_independent_of_the_chunk_size():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  x = jnp.asarray(_binary(3))
  with jax.debug_key_reuse(False):
    keys = jax.random.split(jax.random.key(2), 1000)
    vals = [evaluation.streaming_iwae_bound(model.log_weights_from_keys, params, x, keys, c)
            for c in (1000, 250, 300, 1, 5000)]
  for v in vals[1:]:
    np.testing.assert_allclose(v, vals[0], rtol=1e-6, atol=1e-5)


def test_log_likelihood_is_compiled_once_and_validates():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  traces = []

  def lw(p, x, keys):
    traces.append(1)
    return model.log_weights_from_keys(p, x, keys)

  evaluation.log_likelihood(lw, params, _binary(7), jax.random.key(1), num_samples=100,
                            sample_chunk=50, batch_size=3)
  assert len(traces) == 2  # the first chunk and the scan body; the padded batches reuse them
  with pytest.raises(ValueError, match="empty"):
    evaluation.log_likelihood(lw, params, np.zeros((0, 4, 4, 1)), jax.random.key(2))
  with pytest.raises(ValueError, match=">= 1"):
    evaluation.log_likelihood(lw, params, _binary(2), jax.random.key(3), sample_chunk=0)


def test_bounds_are_ordered_and_l1_is_the_elbo():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  b = evaluation.bounds(model.log_weights, params, _binary(6), jax.random.key(1),
                        ks=(1, 5, 50), batch_size=4)
  assert b["elbo"] == pytest.approx(b["iwae_1"], rel=1e-6)
  assert b["elbo"] < b["iwae_5"] < b["iwae_50"] < 0


def test_active_units_counts_dimensions_with_variable_posterior_means():
  model = vae.VAE((4, 4, 1), (5,), ((8,),))
  params = model.init(jax.random.key(0))
  loc = params["params"]["encoders_0"]["loc"]
  loc["kernel"] = loc["kernel"].at[:, :2].set(0.0)  # two units ignore x: Cov_x(E_q[u]) = 0
  loc["kernel"] = loc["kernel"].at[:, 2:].multiply(10.0)
  au = evaluation.active_units(model.posterior_means, params, _binary(50), jax.random.key(1),
                               batch_size=16)
  assert au["active"] == [3]
  assert au["variances"][0][0] == pytest.approx(0.0, abs=1e-12)
  # Two layers: a count per layer.
  model2 = vae.VAE((4, 4, 1), (4, 3), ((8,), (6,)))
  au2 = evaluation.active_units(model2.posterior_means, model2.init(jax.random.key(2)),
                                _binary(20), jax.random.key(3))
  assert len(au2["active"]) == 2 and len(au2["variances"][1]) == 3


def test_image_grid_and_pngs(tmp_path):
  imgs = np.random.default_rng(0).uniform(size=(5, 3, 2, 1))
  g = plotting.image_grid(imgs, ncol=3, pad=1)
  assert g.shape == (2 * 4 + 1, 3 * 3 + 1)
  np.testing.assert_allclose(g[1:4, 1:3], imgs[0, ..., 0], rtol=1e-6)
  with pytest.raises(ValueError):
    plotting.image_grid(np.zeros((2, 3, 3, 2)))
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  paths = evaluation.write_sample_figures(model, params, _binary(4), jax.random.key(1),
                                          str(tmp_path), num_samples=9)
  for p in paths.values():
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.basename(paths["samples"]) == "samples.png"
