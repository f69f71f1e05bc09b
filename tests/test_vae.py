"""Tests of dgmjax.models.vae against quadrature oracles and structural properties."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dgmjax import estimators, objectives
from dgmjax import models
from dgmjax.models import vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("vae_zero_latent_dim", lambda: vae.VAE((4, 4, 1), (0,), ((4,),)),
     ValueError, r"latent_dims\[0\] must be an int >= 1, got 0"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


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
  lw = jax.jit(lambda p, xx, k: models.log_weights(model, p, xx, k, 7))(params, x,
                                                                        jax.random.key(2))
  assert lw.shape == (7, 3)
  assert np.all(np.isfinite(lw)) and np.all(lw < 0)


def test_encoder_runs_once_per_x_not_per_sample():
  model = vae.burda_one_layer((28, 28, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 3, (28, 28, 1))
  jaxpr = jax.make_jaxpr(lambda p, x, k: models.log_weights(model, p, x, k, 11))(
      params, x, jax.random.key(2))
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
    whole = models.log_weights_from_keys(model, params, x, keys)
    parts = jnp.concatenate([models.log_weights_from_keys(model, params, x, keys[:3]),
                             models.log_weights_from_keys(model, params, x, keys[3:])])
    again = models.log_weights(model, params, x, jax.random.key(2), 10)
  np.testing.assert_allclose(whole, parts, rtol=1e-6)
  np.testing.assert_array_equal(whole, again)


def _log_marginal_one_layer_by_quadrature(model, params, x):
  """log p(x) = log int N(z; 0, 1) p(x|z) dz for a 1-D latent, on a fine grid."""
  z = np.linspace(-12.0, 12.0, 48001)
  logits = np.asarray(model.decoder_logits(params, jnp.asarray(z[:, None], jnp.float32)),
                      np.float64)
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
  lw = models.log_weights(model, params, x, jax.random.key(2), 2000)
  exact = _log_marginal_one_layer_by_quadrature(model, params, x)
  assert np.all(np.asarray(objectives.elbo(lw)) < exact - 0.05)
  params = _tame(params)
  exact = _log_marginal_one_layer_by_quadrature(model, params, x)
  lw = models.log_weights(model, params, x, jax.random.key(3), 5000)
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
  logits = np.asarray(model.decoder_logits(params, jnp.asarray(g[:, None], jnp.float32)),
                      np.float64)
  xf = np.asarray(x, np.float64).reshape(3, -1)
  log_lik = xf @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=1)  # [B, h1]
  joint = log_p_h2[None, :, None] + log_p_h1[None] + log_lik[:, None, :]
  exact = special.logsumexp(joint, axis=(1, 2)) + 2 * math.log(dz)
  lw = models.log_weights(model, params, x, jax.random.key(2), 5000)
  np.testing.assert_allclose(objectives.iwae_bound(lw), exact, atol=0.01)


def test_k1_iwae_equals_elbo_and_gradients_are_finite():
  model = vae.burda_one_layer((4, 4, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 5, (4, 4, 1))
  lw = models.log_weights(model, params, x, jax.random.key(2), 1)
  np.testing.assert_allclose(objectives.iwae_bound(lw), objectives.elbo(lw), rtol=1e-6)
  grads = jax.grad(lambda p: -jnp.mean(objectives.iwae_bound(
      models.log_weights(model, p, x, jax.random.key(3), 4))))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.any(g != 0) for g in jax.tree.leaves(grads["params"]["encoders_0"]))


def test_log_weight_terms_views_share_values_with_the_log_weights():
  """The gradient views of models.log_weight_terms change no value: log_w, log_w_theta and
  log_w_path all equal the log-weights, and log_q_score is log q of the same samples."""
  model = vae.burda_two_layer((4, 4, 1))
  params = model.init(jax.random.key(0))
  x = _binary_images(jax.random.key(1), 2, (4, 4, 1))
  with jax.debug_key_reuse(False):  # the same samples, evaluated twice on purpose
    t = models.log_weight_terms(model, params, x, jax.random.key(2), 3)
    d = models.draws(model, params, x, jax.random.split(jax.random.key(2), 3))
  assert isinstance(t, estimators.LogWeightTerms)
  for field in t:
    assert field.shape == (3, 2)
  np.testing.assert_allclose(t.log_w, d.log_weights, rtol=1e-6)
  np.testing.assert_allclose(t.log_w_theta, t.log_w, rtol=1e-6)
  np.testing.assert_allclose(t.log_w_path, t.log_w, rtol=1e-6)
  np.testing.assert_allclose(t.log_q_score, d.log_q, rtol=1e-6)
  assert isinstance(d.z, tuple) and [h.shape for h in d.z] == [(3, 2, 100), (3, 2, 50)]
  # the stop-gradient views: log_w_theta carries no gradient to the encoders, the score term
  # none to the decoder
  g_theta = jax.grad(lambda p: jnp.sum(models.log_weight_terms(
      model, p, x, jax.random.key(3), 3).log_w_theta))(params)["params"]
  g_score = jax.grad(lambda p: jnp.sum(models.log_weight_terms(
      model, p, x, jax.random.key(4), 3).log_q_score))(params)["params"]
  assert all(np.all(g == 0) for g in jax.tree.leaves(g_theta["encoders_0"]))
  assert any(np.any(g != 0) for g in jax.tree.leaves(g_theta["decoder"]))
  assert all(np.all(g == 0) for g in jax.tree.leaves(g_score["decoder"]))
  assert any(np.any(g != 0) for g in jax.tree.leaves(g_score["encoders_0"]))


def test_sample_reconstruct_and_posterior_means_shapes():
  for model in (vae.burda_one_layer((6, 5, 1)), vae.burda_two_layer((6, 5, 1))):
    params = model.init(jax.random.key(0))
    s = models.sample_x(model, params, jax.random.key(1), 4)
    assert s.shape == (4, 6, 5, 1) and np.all((s >= 0) & (s <= 1))
    z = model.sample_prior(params, jax.random.key(2), 4)
    assert [h.shape for h in jax.tree.leaves(z)] == [(4, d) for d in model.latent_dims]
    # decode is the Bernoulli mean, the sigmoid of decoder_logits
    np.testing.assert_allclose(
        model.decode(params, z),
        model.unflatten(jax.nn.sigmoid(model.decoder_logits(params, jax.tree.leaves(z)[0]))),
        rtol=1e-6)
    x = _binary_images(jax.random.key(3), 3, (6, 5, 1))
    r = models.reconstruct(model, params, x)
    assert r.shape == (3, 6, 5, 1) and np.all((r >= 0) & (r <= 1))
    # key=None reconstructs from the encoder mean of h_1
    loc = model.encode(params, x, 0)[0]
    np.testing.assert_allclose(
        r, model.unflatten(jax.nn.sigmoid(model.decoder_logits(params, loc))), rtol=1e-6)
    assert models.reconstruct(model, params, x, jax.random.key(4)).shape == (3, 6, 5, 1)
    means = models.posterior_means(model, params, x, jax.random.key(5))
    assert [m.shape for m in means] == [(3, d) for d in model.latent_dims]
    np.testing.assert_allclose(means[0], loc, rtol=1e-6)


def test_float64_follows_inputs(x64):
  model = vae.burda_one_layer((4, 4, 1))
  params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(0)))
  x = _binary_images(jax.random.key(1), 2, (4, 4, 1)).astype(jnp.float64)
  assert models.log_weights(model, params, x, jax.random.key(2), 3).dtype == jnp.float64


def test_bad_inputs_raise():
  model = vae.burda_one_layer((28, 28, 1))
  params = model.init(jax.random.key(0))
  with pytest.raises(ValueError, match="28, 28, 1"):
    models.log_weights(model, params, jnp.zeros((2, 8, 8, 1)), jax.random.key(1), 2)
  with pytest.raises(ValueError, match="num_samples"):
    models.log_weights(model, params, jnp.zeros((2, 28, 28, 1)), jax.random.key(2), 0)
  with pytest.raises(ValueError, match="equal length"):
    vae.VAE((4, 4, 1), (2, 3), ((4,),))
  with pytest.raises(ValueError, match="model name"):
    vae.make("nope", (4, 4, 1))


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("name,kwargs,match", [
    ("burda1", dict(latent_dims=(0,)), "latent_dims must be None for model 'burda1'"),
    ("burda2", dict(hidden_dims=((0,),)), "hidden_dims must be None for model 'burda2'"),
    ("custom", dict(latent_dims=(0,), hidden_dims=((10,),)),
     r"latent_dims\[0\] must be an int >= 1"),
    ("custom", dict(latent_dims=(2.5,), hidden_dims=((10,),)), r"latent_dims\[0\] must be an int"),
    ("custom", dict(latent_dims=(True,), hidden_dims=((10,),)), r"latent_dims\[0\] .*bool"),
    ("custom", dict(latent_dims=50, hidden_dims=((10,),)), "latent_dims must be a sequence"),
    ("custom", dict(latent_dims=(), hidden_dims=()), "latent_dims must hold at least one size"),
    ("custom", dict(latent_dims=(5,), hidden_dims=(10,)), r"hidden_dims\[0\] must be a sequence"),
    ("custom", dict(latent_dims=(5,), hidden_dims=((2.5,),)),
     r"hidden_dims\[0\]\[0\] must be an int"),
], ids=["named_latent", "named_hidden", "latent_zero", "latent_float", "latent_bool", "latent_int",
        "latent_empty", "hidden_flat", "hidden_float"])
def test_make_refuses_bad_sizes_naming_the_argument(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    vae.make(name, (28, 28, 1), **kwargs)


@pytest.mark.parametrize("shape,match", [
    ((28.5, 28, 1), r"image_shape\[0\] must be an int"),
    ((28, 28, 0), r"image_shape\[2\] must be an int >= 1"),
    (784, "image_shape must be a sequence"), ((), "image_shape must hold at least one size"),
])
def test_make_refuses_a_bad_image_shape(shape, match):
  with pytest.raises(ValueError, match=match):
    vae.make("burda1", shape)


def test_make_accepts_the_config_placeholders_and_numpy_sizes():
  assert vae.make("burda1", (28, 28, 1), latent_dims=(), hidden_dims=()).latent_dims == (50,)
  m = vae.make("custom", np.array([4, 4, 1]), latent_dims=[np.int64(3)], hidden_dims=[[8]])
  assert m.image_shape == (4, 4, 1) and m.latent_dims == (3,) and m.hidden_dims == ((8,),)
  with pytest.raises(ValueError, match=r"latent_dims\[0\] must be an int"):
    vae.VAE((4, 4, 1), (2.7,), ((8,),))   # never truncated to 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(posterior="x"), "posterior must be 'gaussian' or 'iaf'"),
    (dict(prior="mog", num_components=0), "num_components must be an int >= 1"),
    (dict(prior="vamp", num_pseudo_inputs=2.5), "num_pseudo_inputs must be an int"),
    (dict(posterior="iaf", flow_layers=-1), "flow_layers must be an int >= 1"),
    (dict(posterior="iaf", flow_hidden=()), "flow_hidden must hold at least one size"),
])
def test_make_prior_vae_names_its_own_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    vae.make_prior_vae("burda1", (28, 28, 1), **kwargs)
