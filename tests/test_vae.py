"""Tests of dgmjax.models.vae against quadrature oracles and structural properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dgmjax import objectives
from dgmjax.models import vae


def _binary_images(key, n, shape, p=0.3):
  return (jax.random.uniform(key, (n,) + shape) < p).astype(jnp.float32)


@pytest.mark.parametrize("model", [vae.burda_one_layer((28, 28, 1)),
                                   vae.burda_two_layer((28, 28, 1))])
def test_burda_architectures_and_log_weights_shape(model):
  params = model.init(jax.random.key(0))
  p = params["params"]
  assert p["encoders_0"]["hidden_0"]["kernel"].shape == (784, 200)
  assert p["encoders_0"]["hidden_1"]["kernel"].shape == (200, 200)
  assert p["decoder"]["out"]["kernel"].shape == (200, 784)
  if model.num_layers == 1:
    assert p["encoders_0"]["loc"]["kernel"].shape == (200, 50)
    assert p["decoder"]["hidden_0"]["kernel"].shape == (50, 200)
  else:  # 784-200-200-100 / 100-100-100-50, and mirrored generative side
    assert p["encoders_0"]["loc"]["kernel"].shape == (200, 100)
    assert p["encoders_1"]["hidden_0"]["kernel"].shape == (100, 100)
    assert p["encoders_1"]["loc"]["kernel"].shape == (100, 50)
    assert p["priors_0"]["hidden_0"]["kernel"].shape == (50, 100)
    assert p["priors_0"]["loc"]["kernel"].shape == (100, 100)
    assert p["decoder"]["hidden_0"]["kernel"].shape == (100, 200)
  x = _binary_images(jax.random.key(1), 3, (28, 28, 1))
  lw = jax.jit(model.log_weights, static_argnums=3)(params, x, jax.random.key(2), 7)
  assert lw.shape == (7, 3)
  assert np.all(np.isfinite(lw)) and np.all(lw < 0)


def test_encoder_runs_once_per_x_not_per_sample():
  model = vae.burda_one_layer((28, 28, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 3, (28, 28, 1))
  jaxpr = jax.make_jaxpr(lambda p, x, k: model.log_weights(p, x, k, 11))(params, x,
                                                                          jax.random.key(2))
  first_layer = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"
                 and e.invars[1].aval.shape == (784, 200)]
  assert len(first_layer) == 1
  assert first_layer[0].invars[0].aval.shape == (3, 784)  # [B, D], no K axis
  decoder_out = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"
                 and e.invars[1].aval.shape == (200, 784)]
  assert decoder_out[0].invars[0].aval.shape == (11, 3, 200)  # the decoder runs per sample


def test_output_bias_starts_at_logit_of_data_mean():
  model = vae.VAE((2, 2, 1), (2,), ((4,),))
  mean = np.array([0.5, 0.25, 0.0, 1.0], np.float32)
  params = model.init(jax.random.key(0), data_mean=mean.reshape(2, 2, 1))
  np.testing.assert_allclose(params["params"]["decoder"]["out"]["bias"],
                             special.logit(np.clip(mean, 1e-3, 1 - 1e-3)), rtol=1e-5)
  with pytest.raises(ValueError, match="data_mean"):
    model.init(jax.random.key(1), data_mean=np.zeros(5))


def test_sample_chunks_are_independent_of_how_keys_are_grouped():
  model = vae.burda_two_layer((4, 4, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 2, (4, 4, 1))
  with jax.debug_key_reuse(False):  # the same samples, evaluated twice on purpose
    keys = jax.random.split(jax.random.key(2), 10)
    whole = model.log_weights_from_keys(params, x, keys)
    parts = jnp.concatenate([model.log_weights_from_keys(params, x, keys[:3]),
                             model.log_weights_from_keys(params, x, keys[3:])])
    again = model.log_weights(params, x, jax.random.key(2), 10)
  np.testing.assert_allclose(whole, parts, rtol=1e-6)
  np.testing.assert_array_equal(whole, again)


def _log_marginal_one_layer_by_quadrature(model, params, x):
  """log p(x) = log int N(z; 0, 1) p(x|z) dz for a 1-D latent, on a fine grid."""
  z = np.linspace(-12.0, 12.0, 48001)
  logits = np.asarray(model.decode(params, jnp.asarray(z[:, None], jnp.float32)), np.float64)
  xf = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  log_lik = xf @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=1)  # [B, G]
  log_prior = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
  return special.logsumexp(log_lik + log_prior, axis=1) + math.log(z[1] - z[0])


def _tame(params, decoder_scale=0.5):
  """q(h|x) = N(0, I) (zero encoder heads) and a milder decoder: light-tailed weights, so that
  L_K is within Monte Carlo noise of log p(x) at moderate K."""
  def f(path, a):
    names = [getattr(k, "key", None) for k in path]
    if any(str(n).startswith("encoders") for n in names) and ("loc" in names or
                                                               "log_scale" in names):
      return jnp.zeros_like(a)
    if "decoder" in names or any(str(n).startswith("priors") for n in names):
      return a * decoder_scale
    return a
  return jax.tree_util.tree_map_with_path(f, params)


def test_iwae_bounds_approach_quadrature_log_marginal():
  """Oracle: a 1-D latent model's log p(x) by quadrature; ELBO < L_50 < L_5000 ~ log p(x)."""
  model = vae.VAE((3, 3, 1), (1,), ((16,),))
  x = _binary_images(jax.random.key(1), 4, (3, 3, 1), p=0.5)
  params = model.init(jax.random.key(0))  # an untrained encoder: the ELBO is a strict bound
  lw = model.log_weights(params, x, jax.random.key(2), 2000)
  exact = _log_marginal_one_layer_by_quadrature(model, params, x)
  assert np.all(np.asarray(objectives.elbo(lw)) < exact - 0.05)
  params = _tame(params)
  exact = _log_marginal_one_layer_by_quadrature(model, params, x)
  lw = model.log_weights(params, x, jax.random.key(3), 5000)
  iwae = np.asarray(objectives.iwae_bound(lw))
  elbo = np.asarray(objectives.elbo(lw))
  l50 = np.asarray(objectives.miwae_bound(lw, 100))
  assert np.all(elbo < l50) and np.all(l50 < iwae + 1e-3)
  np.testing.assert_allclose(iwae, exact, atol=0.01)


def test_two_layer_log_weights_against_quadrature():
  """Oracle for the 2-layer model: 1-D h1 and h2, log p(x) by 2-D quadrature."""
  model = vae.VAE((2, 2, 1), (1, 1), ((8,), (8,)))
  params = _tame(model.init(jax.random.key(0)))
  x = _binary_images(jax.random.key(1), 3, (2, 2, 1), p=0.5)
  g = np.linspace(-10.0, 10.0, 1201)
  dz = g[1] - g[0]
  h2 = jnp.asarray(g[:, None], jnp.float32)
  loc, log_scale = (np.asarray(a, np.float64)[:, 0] for a in model.conditional_prior(params, h2, 0))
  # log p(h1 | h2) on the grid [h2, h1]
  log_p_h1 = (-0.5 * ((g[None, :] - loc[:, None]) / np.exp(log_scale[:, None]))**2
              - log_scale[:, None] - 0.5 * math.log(2 * math.pi))
  log_p_h2 = -0.5 * g**2 - 0.5 * math.log(2 * math.pi)
  logits = np.asarray(model.decode(params, jnp.asarray(g[:, None], jnp.float32)), np.float64)
  xf = np.asarray(x, np.float64).reshape(3, -1)
  log_lik = xf @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=1)  # [B, h1]
  joint = log_p_h2[None, :, None] + log_p_h1[None] + log_lik[:, None, :]
  exact = special.logsumexp(joint, axis=(1, 2)) + 2 * math.log(dz)
  lw = model.log_weights(params, x, jax.random.key(2), 5000)
  np.testing.assert_allclose(objectives.iwae_bound(lw), exact, atol=0.01)


def test_k1_iwae_equals_elbo_and_gradients_are_finite():
  model = vae.burda_one_layer((4, 4, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 5, (4, 4, 1))
  lw = model.log_weights(params, x, jax.random.key(2), 1)
  np.testing.assert_allclose(objectives.iwae_bound(lw), objectives.elbo(lw), rtol=1e-6)
  grads = jax.grad(lambda p: -jnp.mean(objectives.iwae_bound(
      model.log_weights(p, x, jax.random.key(3), 4))))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["params"]["encoders_0"]))


def test_stop_q_term_matches_log_q_in_value():
  model = vae.burda_two_layer((4, 4, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 2, (4, 4, 1))
  t = model.log_weight_terms(params, x, jax.random.key(2), 3, stop_q=True)
  np.testing.assert_allclose(t.log_q, t.log_q_stop, rtol=1e-6)
  assert t.log_weights.shape == (3, 2)


def test_sample_reconstruct_and_posterior_means_shapes():
  for model in (vae.burda_one_layer((6, 5, 1)), vae.burda_two_layer((6, 5, 1))):
    params = model.init(jax.random.key(0))
    s = model.sample(params, jax.random.key(1), 4)
    assert s.shape == (4, 6, 5, 1) and np.all((s >= 0) & (s <= 1))
    sb = model.sample(params, jax.random.key(2), 4, binary=True)
    assert set(np.unique(np.asarray(sb))) <= {0.0, 1.0}
    x = _binary_images(jax.random.key(3), 3, (6, 5, 1))
    assert model.reconstruct(params, x).shape == (3, 6, 5, 1)
    assert model.reconstruct(params, x, jax.random.key(4)).shape == (3, 6, 5, 1)
    means = model.posterior_means(params, x, jax.random.key(5))
    assert [m.shape for m in means] == [(3, d) for d in model.latent_dims]


def test_float64_follows_inputs(x64):
  model = vae.burda_one_layer((4, 4, 1))
  params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(0)))
  x = _binary_images(jax.random.key(1), 2, (4, 4, 1)).astype(jnp.float64)
  assert model.log_weights(params, x, jax.random.key(2), 3).dtype == jnp.float64


def test_bad_inputs_raise():
  model = vae.burda_one_layer((28, 28, 1))
  params = model.init(jax.random.key(0))
  with pytest.raises(ValueError, match="28, 28, 1"):
    model.log_weights(params, jnp.zeros((2, 8, 8, 1)), jax.random.key(1), 2)
  with pytest.raises(ValueError, match="num_samples"):
    model.log_weights(params, jnp.zeros((2, 28, 28, 1)), jax.random.key(2), 0)
  with pytest.raises(ValueError, match="equal length"):
    vae.VAE((4, 4, 1), (2, 3), ((4,),))
  with pytest.raises(ValueError, match="model name"):
    vae.make("nope", (4, 4, 1))
