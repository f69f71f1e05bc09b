"""Tests of dgmjax.priors, the PriorVAE wrapper and the ELBO-surgery diagnostics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from dgmjax import diagnostics, flows, models, priors
from dgmjax.models import vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("standard_normal_latent_dim_float", lambda: priors.StandardNormal(2.0),
     TypeError, r"latent_dim must be an int, got float"),
    ("mog_num_components_bool", lambda: priors.MixtureOfGaussians(2, num_components=True),
     TypeError, r"num_components must be an int, got the bool"),
    ("mog_init_scale_nan", lambda: priors.MixtureOfGaussians(2, init_scale=np.nan),
     ValueError, r"init_scale must be finite and >= 0"),
    ("vamp_init_std_negative", lambda: priors.VampPrior(2, 4, num_pseudo_inputs=3, init_std=-0.1),
     ValueError, r"init_std must be finite and >= 0"),
    ("prior_sample_num_float", lambda: priors.StandardNormal(2).sample({}, bi.key(), 3.0),
     TypeError, r"num must be an int, got float"),
    ("prior_sample_num_negative", lambda: priors.StandardNormal(2).sample({}, bi.key(), -1),
     ValueError, r"num must be an int >= 0"),
    ("realnvp_prior_num_layers_float", lambda: priors.real_nvp_prior(2, num_layers=2.0),
     TypeError, r"num_layers must be an int"),
    ("mixture_logits_wrong_shape",
     lambda: priors.mixture_normal_log_prob(bi.z(5, 2), bi.z(4), bi.z(3, 2), bi.z(3, 2)),
     ValueError, r"logits must be \[M\] = \[3\].*got shape \(4,\)"),
    ("mixture_z_wrong_event_size",
     lambda: priors.mixture_normal_log_prob(bi.z(5, 4), bi.z(3), bi.z(3, 2), bi.z(3, 2)),
     ValueError, r"z must be \[\.\.\., 2\]"),
    ("mixture_z_nan",
     lambda: priors.mixture_normal_log_prob(jnp.full((1, 2), np.nan), bi.z(3), bi.z(3, 2),
                                            bi.z(3, 2)),
     ValueError, r"z contains 2 NaN"),
    ("elbo_surgery_uint8_images",
     lambda: diagnostics.elbo_surgery(*bi.bernoulli_vae(), bi.uint8_images(), bi.key()),
     ValueError, r"images must be binary values in \{0, 1\}.*uint8"),
    ("aggregate_posterior_z_of_another_latent_size",
     lambda: diagnostics.aggregate_posterior_log_prob(*bi.bernoulli_vae(), jnp.zeros((2, 5)),
                                                      bi.binary_images()),
     ValueError, r"z must be \[S, D\] with D = 2.*\(2, 5\)"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _accept_numpy_prior_sizes():
  prior = priors.StandardNormal(np.int64(3))
  assert prior.latent_dim == 3 and type(prior.latent_dim) is int
  assert prior.sample({}, bi.key(), np.int32(4)).shape == (4, 3)


ACCEPTS = [
    ("numpy_int_prior_sizes", _accept_numpy_prior_sizes),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


D = 3
IMAGE_SHAPE = (4, 4, 1)


def _perturb(params, key, scale=0.3):
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def _model(prior="standard", posterior="gaussian", latent=D):
  return vae.make_prior_vae("custom", IMAGE_SHAPE, prior=prior, posterior=posterior,
                            latent_dims=(latent,), hidden_dims=((8,),), num_components=4,
                            num_pseudo_inputs=5, flow_layers=2, flow_hidden=(8,))


def _images(key, n):
  return (jax.random.uniform(key, (n,) + IMAGE_SHAPE) > 0.5).astype(jnp.float32)


# ----------------------------------------------------------------------------- priors vs oracles


def test_standard_normal_closed_form():
  p = priors.StandardNormal(D)
  z = np.random.RandomState(0).randn(2, 5, D).astype(np.float32)
  want = stats.multivariate_normal(np.zeros(D), np.eye(D)).logpdf(z.reshape(-1, D)).reshape(2, 5)
  np.testing.assert_allclose(p.log_prob(p.init(jax.random.key(0)), z), want, rtol=1e-5)


def test_mixture_of_gaussians_vs_scipy(x64):
  p = priors.MixtureOfGaussians(D, num_components=4)
  params = _perturb(p.init(jax.random.key(1), jnp.float64), jax.random.key(2), 0.5)
  z = np.random.RandomState(1).randn(3, 2, D)
  w = special.softmax(np.asarray(params["logits"]))
  loc, scale = np.asarray(params["loc"]), np.exp(np.asarray(params["log_scale"]))
  dens = sum(w[m] * stats.multivariate_normal(loc[m], np.diag(scale[m] ** 2)).pdf(
      z.reshape(-1, D)) for m in range(4))
  np.testing.assert_allclose(p.log_prob(params, z), np.log(dens).reshape(3, 2), rtol=1e-10)
  s = p.sample(params, jax.random.key(3), 7)
  assert s.shape == (7, D)


def test_vamp_prior_is_mixture_of_encoder_gaussians(x64):
  model = _model("vamp")
  params = _perturb(model.init(jax.random.key(4)), jax.random.key(5))
  params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
  z = np.random.RandomState(2).randn(4, 2, D)
  got = jax.vmap(lambda zk: model.log_prior(params, zk))(z)
  u = np.clip(np.asarray(params["prior"]["pseudo_inputs"]), 0.0, 1.0)
  comps = []
  for m in range(5):
    loc, log_scale = model.base.encode(params["base"], u[m:m + 1], 0)
    comps.append(stats.norm(np.asarray(loc[0]), np.exp(np.asarray(log_scale[0]))).logpdf(
        z).sum(-1))
  want = special.logsumexp(np.stack(comps, -1), axis=-1) - math.log(5)
  np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("make", [priors.real_nvp_prior, priors.maf_prior])
def test_flow_prior_change_of_variables(make, x64):
  p = make(D, 2, (8,))
  params = _perturb(p.init(jax.random.key(6), jnp.float64), jax.random.key(7))
  z = jnp.asarray(np.random.RandomState(3).randn(D))
  inv = lambda x: p.flow.bijector.inverse(params, x)
  u, jac = jax.jit(lambda x: (inv(x), jax.jacobian(inv)(x)))(z)
  want = stats.multivariate_normal(np.zeros(D), np.eye(D)).logpdf(np.asarray(u)) + \
      np.linalg.slogdet(np.asarray(jac))[1]
  np.testing.assert_allclose(jax.jit(p.log_prob)(params, z), want, rtol=1e-8)
  zz = jnp.asarray(np.random.RandomState(4).randn(2, 3, D))   # [K, B, D] in one pass
  assert p.log_prob(params, zz).shape == (2, 3)


# ----------------------------------------------------------------------------- the wrapper


def test_standard_prior_vae_matches_vae():
  model = _model("standard")
  params = model.init(jax.random.key(8))
  x = _images(jax.random.key(9), 6)
  keys = lambda: jax.random.split(jax.random.key(10), 4)  # the same keys, drawn twice
  np.testing.assert_allclose(models.log_weights_from_keys(model, params, x, keys()),
                             models.log_weights_from_keys(model.base, params["base"], x, keys()),
                             rtol=1e-6)


def test_log_weights_shapes_jit_and_posterior_density(prior="maf", posterior="iaf"):
  model = _model(prior, posterior)
  params = _perturb(model.init(jax.random.key(11)), jax.random.key(12), 0.2)
  x = _images(jax.random.key(13), 5)
  lw = jax.jit(lambda p, xx, k: models.log_weights(model, p, xx, k, 3))(params, x,
                                                                        jax.random.key(14))
  assert lw.shape == (3, 5) and bool(jnp.all(jnp.isfinite(lw)))

  @jax.jit
  def densities(p, keys):
    d = models.draws(model, p, x, keys)
    cross = jax.vmap(lambda zk: jnp.diagonal(models.posterior_log_prob_cross(model, p, zk, x)))(
        d.z)
    return cross, d.log_q

  cross, log_q = densities(params, jax.random.split(jax.random.key(15), 2))
  np.testing.assert_allclose(cross, log_q, rtol=1e-4, atol=1e-4)  # IAF: inverse vs forward pass
  grads = jax.jit(jax.grad(lambda p: jnp.mean(
      models.log_weights(model, p, x, jax.random.key(16), 2))))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  assert models.sample_x(model, params, jax.random.key(17), 3).shape == (3,) + IMAGE_SHAPE


# ----------------------------------------------------------------------------- ELBO surgery


def test_surgery_identity_and_analytic_kl():
  model = _model("standard", latent=2)
  params = _perturb(model.init(jax.random.key(18)), jax.random.key(19), 0.5)
  x = _images(jax.random.key(20), 150)
  s = diagnostics.elbo_surgery(model, params, x, jax.random.key(21), num_samples=8,
                               batch_size=64, chunk_size=50)
  assert s.average_kl == pytest.approx(s.mutual_information + s.marginal_kl, abs=1e-4)
  # A standard prior and a Gaussian posterior: the KL of the base VAE's q and N(0, I).
  kl_dims = diagnostics.kl_per_dimension(model.base, params["base"], x, batch_size=64)
  assert kl_dims.shape == (2,) and np.all(kl_dims >= 0)
  # MI + marginal KL (Monte Carlo) against the closed-form average KL
  assert abs(s.mutual_information + s.marginal_kl - kl_dims.sum()) < 4 * s.average_kl_stderr
  assert 0 < s.mutual_information <= math.log(150) + 1e-6 and s.marginal_kl > 0


def test_surgery_vamp_identity_and_mi_bound():
  model = _model("vamp")
  params = _perturb(model.init(jax.random.key(22)), jax.random.key(23), 2.0)  # sharp posteriors
  x = _images(jax.random.key(24), 40)
  s = diagnostics.elbo_surgery(model, params, x, jax.random.key(25), num_samples=2,
                               batch_size=16, chunk_size=16)
  assert s.average_kl == pytest.approx(s.mutual_information + s.marginal_kl, abs=1e-4)
  assert s.mutual_information <= s.log_num_examples + 1e-5
  assert s.mutual_information > 0.5 * s.log_num_examples   # sharp posteriors: near the bound


def test_surgery_uninformative_posterior_is_zero():
  model = _model("standard")
  params = model.init(jax.random.key(26))
  enc = params["base"]["params"]["encoders_0"]
  for head in ("loc", "log_scale"):   # q(z|x) = N(0, I) = p(z) for every x
    enc[head] = jax.tree.map(jnp.zeros_like, enc[head])
  s = diagnostics.elbo_surgery(model, params, _images(jax.random.key(27), 30),
                               jax.random.key(28), num_samples=3, batch_size=8, chunk_size=7)
  assert abs(s.mutual_information) < 1e-5
  assert abs(s.marginal_kl) < 1e-5
  assert abs(s.average_kl) < 1e-5


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises():
  with pytest.raises(ValueError, match="num_components"):
    priors.MixtureOfGaussians(D, num_components=0)
  with pytest.raises(ValueError, match="num_pseudo_inputs"):
    priors.VampPrior(D, 16, num_pseudo_inputs=-1)
  with pytest.raises(ValueError, match="latent_dim"):
    priors.StandardNormal(0)
  p = priors.MixtureOfGaussians(D, 2)
  params = p.init(jax.random.key(29))
  with pytest.raises(ValueError, match="z must have event size"):
    p.log_prob(params, jnp.zeros((4, D + 1)))
  with pytest.raises(ValueError, match="z contains 1 NaN"):
    p.log_prob(params, jnp.zeros((4, D)).at[1, 0].set(jnp.nan))
  with pytest.raises(ValueError, match="encoder"):
    priors.VampPrior(D, 16, 3).log_prob({"pseudo_inputs": jnp.zeros((3, 16))}, jnp.zeros((2, D)))
  with pytest.raises(ValueError, match="prior must have latent_dim"):
    models.PriorVAE(vae.VAE(IMAGE_SHAPE, (D,), ((8,),)), priors.StandardNormal(D + 1))
  with pytest.raises(ValueError, match="prior name"):
    priors.make_prior("laplace", D)
  model = _model()
  params = model.init(jax.random.key(30))
  with pytest.raises(ValueError, match=r"images contains .*NaN"):
    diagnostics.elbo_surgery(model, params, np.full((3,) + IMAGE_SHAPE, np.nan, np.float32),
                             jax.random.key(31))
  with pytest.raises(ValueError, match="num_samples"):
    diagnostics.elbo_surgery(model, params, np.zeros((3,) + IMAGE_SHAPE, np.float32),
                             jax.random.key(32), num_samples=0)
  with pytest.raises(ValueError, match="x must be a batch"):
    models.log_weights(model, params, jnp.zeros((2, 5)), jax.random.key(33), 2)
