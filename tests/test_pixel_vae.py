"""Tests for dgmjax.models.pixel_vae and the KL-controlled loss of dgmjax.losses."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats as st

from dgmjax import diagnostics, distributions, estimators, losses, models, objectives, training
from dgmjax.models import pixel_vae

H = W = 6


def _model(decoder="pixelcnn", shape=(H, W, 1), **kw):
  kw = dict(dict(latent_dim=3, hidden=(8,), num_layers=2, features=4, kernel_size=3,
                 first_kernel_size=3, cond_channels=2), **kw)
  m = pixel_vae.make(decoder, image_shape=shape, **kw)
  return m, m.init(jax.random.key(0))


def _binary(key, n, shape=(H, W, 1), p=0.4):
  return (jax.random.uniform(key, (n,) + shape) < p).astype(jnp.float32)


@pytest.mark.parametrize("num_layers,first", [(0, 3), (1, 5)])
def test_decoder_is_causal_and_receptive_field_matches(num_layers, first):
  """Given z, the logit of pixel j depends exactly on the input pixels the masks allow (< j)."""
  m, params = _model(num_layers=num_layers, first_kernel_size=first)
  dep = np.zeros((H, W, H, W), bool)
  for s in range(3):  # a ReLU can zero a derivative at one point: union over a few points
    x = _binary(jax.random.key(10 + s), 1)
    z = jax.random.normal(jax.random.key(20 + s), (1, m.latent_dim))
    cond = m.cond_map(params, z)
    logits = lambda v, c=cond: m.pixelcnn.apply(params["pixelcnn"], v, c)[0, :, :, 0]
    dep |= np.abs(np.asarray(jax.jacobian(logits)(x)[..., 0, :, :, 0])) > 0   # [H, W, H, W]
  for i in range(H):
    for j in range(W):
      assert not dep[i, j].reshape(-1)[i * W + j:].any()
      np.testing.assert_array_equal(dep[i, j], m.receptive_field((i, j)))


def test_perturbing_pixel_j_leaves_log_prob_terms_up_to_j_unchanged():
  m, params = _model()
  x = _binary(jax.random.key(3), 2)
  z = jax.random.normal(jax.random.key(4), (2, m.latent_dim))
  cond = m.cond_map(params, z)
  base = m.pixelcnn.apply(params["pixelcnn"], x, cond).reshape(2, -1)
  for j in (0, 5, 17, 35):
    i, jj = divmod(j, W)
    x2 = x.at[:, i, jj, 0].set(1.0 - x[:, i, jj, 0])
    out = m.pixelcnn.apply(params["pixelcnn"], x2, cond).reshape(2, -1)
    np.testing.assert_array_equal(base[:, :j + 1], out[:, :j + 1])
    if j + 1 < H * W:  # and later pixels do see it
      assert np.any(base[:, j + 1:] != out[:, j + 1:])


def test_exact_likelihood_given_z_normalises_and_sampling_matches_it():
  """On 2x2 images, p(x|z) sums to one over the 16 images, and pixel-by-pixel samples follow it."""
  m, params = _model(shape=(2, 2, 1), num_layers=1)
  params = jax.tree.map(lambda a: 3.0 * a, params)   # a less uniform decoder
  z = jax.random.normal(jax.random.key(5), (1, m.latent_dim))
  bits = np.array([[(n >> k) & 1 for k in range(4)] for n in range(16)], np.float32)
  x_all = jnp.asarray(bits.reshape(16, 2, 2, 1))
  lp = m.decoder_log_prob(params, x_all, jnp.broadcast_to(z, (16, m.latent_dim)))
  np.testing.assert_allclose(float(jnp.exp(jax.nn.logsumexp(lp))), 1.0, rtol=1e-5)
  n = 20000
  draws = jax.jit(lambda p, k: m.decode_sample(p, k, jnp.broadcast_to(z, (n, m.latent_dim))))(
      params, jax.random.key(6))
  codes = np.asarray(draws).reshape(n, 4) @ (1 << np.arange(4))
  counts = np.bincount(codes.astype(int), minlength=16)
  expected = n * np.exp(np.asarray(lp, np.float64))
  assert st.chisquare(counts, expected / expected.sum() * n).pvalue > 1e-3


@pytest.mark.parametrize("decoder", ["pixelcnn", "mlp"])
def test_log_weights_are_the_sum_of_their_terms(decoder):
  m, params = _model(decoder)
  x = _binary(jax.random.key(7), 3)
  keys = jax.random.split(jax.random.key(8), 5)
  t = models.draws(m, params, x, keys)
  chex.assert_shape([t.log_likelihood, t.log_prior, t.log_q], (5, 3))
  loc, log_scale = m.encode(params, x)
  z = jax.vmap(distributions.sample_normal, (0, None, None))(jax.random.clone(keys), loc,
                                                             log_scale)
  np.testing.assert_allclose(t.z, z, rtol=1e-6)
  np.testing.assert_allclose(t.log_q, distributions.normal_log_prob(z, loc, log_scale), rtol=1e-6)
  np.testing.assert_allclose(t.log_prior, distributions.standard_normal_log_prob(z), rtol=1e-6)
  for k in range(5):  # the decoder term, one sample at a time
    np.testing.assert_allclose(t.log_likelihood[k], m.decoder_log_prob(params, x, z[k]),
                               rtol=1e-5)
  np.testing.assert_allclose(models.log_weights_from_keys(m, params, x, jax.random.clone(keys)),
                             t.log_likelihood + t.log_prior - t.log_q, rtol=1e-6)
  np.testing.assert_allclose(t.log_weights, t.log_likelihood + t.log_prior - t.log_q, rtol=1e-6)
  # ELBO surgery runs on the model and its identity holds per draw
  s = diagnostics.elbo_surgery(m, params, _binary(jax.random.key(9), 20), jax.random.key(10),
                               num_samples=2, batch_size=8, chunk_size=6)
  np.testing.assert_allclose(s.average_kl, s.mutual_information + s.marginal_kl, rtol=1e-5)


def test_bad_configuration_and_input():
  with pytest.raises(ValueError, match="decoder"):
    pixel_vae.make("wavenet")
  with pytest.raises(ValueError, match="image_shape"):
    pixel_vae.make(image_shape=(28, 28, 3))
  with pytest.raises(ValueError, match="first_kernel_size"):
    pixel_vae.make(first_kernel_size=4)
  with pytest.raises(ValueError, match="num_layers"):
    pixel_vae.make(num_layers=-1)
  m, params = _model()
  with pytest.raises(ValueError, match=r"x must be a batch of images \[B, 6, 6, 1\]"):
    models.log_weights(m, params, jnp.zeros((2, 5, 5, 1)), jax.random.key(0), 2)
  with pytest.raises(ValueError, match="num_samples"):
    models.log_weights(m, params, jnp.zeros((2, H, W, 1)), jax.random.key(0), 0)


# ----------------------------------------------------------------------------- KL schedules


def test_kl_weight_schedules():
  lin = losses.kl_weight_schedule("linear", warmup_steps=100)
  np.testing.assert_allclose([float(lin(s)) for s in (0, 50, 100, 500)], [0.0, 0.5, 1.0, 1.0])
  cyc = losses.kl_weight_schedule("cyclical", cycle_steps=100, ramp_fraction=0.5)
  np.testing.assert_allclose([float(cyc(s)) for s in (0, 25, 50, 99, 100, 125, 230)],
                             [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 0.6])
  assert float(losses.kl_weight_schedule()(7)) == 1.0
  assert float(jax.jit(cyc)(jnp.int32(125))) == 0.5
  with pytest.raises(ValueError, match="kind"):
    losses.kl_weight_schedule("cosine")
  with pytest.raises(ValueError, match="warmup_steps"):
    losses.kl_weight_schedule("linear")
  with pytest.raises(ValueError, match="ramp_fraction"):
    losses.kl_weight_schedule("cyclical", cycle_steps=10, ramp_fraction=0.0)


# ----------------------------------------------------------------------------- KL-controlled loss


def test_kl_controlled_loss_values_are_the_bounds():
  m, params = _model("mlp", latent_dim=4)
  x = _binary(jax.random.key(11), 6)
  key = jax.random.key(12)
  # ELBO with the analytic KL at beta = 1
  loss, met = losses.make_loss(m, losses.KLControlled("elbo"), 3)(params, x, key, 0)
  t = models.draws(m, params, x, jax.random.split(jax.random.clone(key), 3))
  loc, log_scale = m.encode(params, x)
  elbo = objectives.elbo_analytic_kl(t.log_likelihood,
                                     distributions.kl_normal_standard_normal(loc, log_scale))
  np.testing.assert_allclose(loss, -jnp.mean(elbo), rtol=1e-6)
  np.testing.assert_allclose(met["bound"], jnp.mean(elbo), rtol=1e-6)
  # IWAE at beta = 1 is the IWAE bound; at beta = 0 the bound of the likelihood terms alone
  iw = lambda **kw: losses.make_loss(m, losses.KLControlled("iwae", **kw), 3)(
      params, x, jax.random.clone(key), 0)
  np.testing.assert_allclose(iw()[0], -jnp.mean(objectives.iwae_bound(t.log_weights)), rtol=1e-6)
  zero = lambda s: jnp.zeros([], jnp.float32)
  np.testing.assert_allclose(iw(kl_weight=zero)[0],
                             -jnp.mean(objectives.iwae_bound(t.log_likelihood)), rtol=1e-6)
  # free bits below every dimension's KL change nothing; above them the penalty is D * lambda
  kl_dims = distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0).mean(0)
  np.testing.assert_allclose(iw(free_bits=0.0)[0], iw()[0], rtol=1e-6)
  big = float(kl_dims.max()) + 1.0
  fb_loss, fb_met = losses.make_loss(m, losses.KLControlled("elbo", free_bits=big), 3)(
      params, x, jax.random.clone(key), 0)
  np.testing.assert_allclose(fb_loss, -jnp.mean(t.log_likelihood) + 4 * big, rtol=1e-5)
  assert int(fb_met["kl_below_free_bits"]) == 4


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_free_bits_kl_gradient_is_zero_below_lambda(objective):
  """Dimensions whose batch KL is under lambda get exactly the reconstruction's gradient.

  The encoder's output layers map the last hidden layer to each latent dimension with its own
  kernel column, so the gradient of that column isolates the dimension. With K = 1 the IWAE form
  equals the ELBO form's gradient only in expectation, so for it the test compares the two
  free-bits losses' KL parts: below lambda, the KL part (loss minus the reconstruction-only loss,
  which here is beta = 0) has zero gradient for the ELBO; for IWAE the shortfall term's gradient
  cancels the analytic KL's.
  """
  m, params = _model("mlp", latent_dim=6)
  x = _binary(jax.random.key(13), 16)
  loc, log_scale = m.encode(params, x)
  kl = np.asarray(distributions.kl_normal_standard_normal(loc, log_scale, event_ndims=0).mean(0))
  lam = float(np.median(kl))
  below, above = kl < lam, kl > lam
  assert below.any() and above.any()
  key = jax.random.key(14)
  zero = lambda s: jnp.zeros([], jnp.float32)

  def grads(**kw):
    f = losses.make_loss(m, losses.KLControlled("elbo", **kw), 1)
    g = jax.grad(lambda p: f(p, x, jax.random.clone(key), 0)[0])(params)
    enc = g["encoder"]["params"]
    return np.asarray(enc["loc"]["kernel"]), np.asarray(enc["log_scale"]["kernel"])

  if objective == "elbo":
    fb, recon, plain = grads(free_bits=lam), grads(kl_weight=zero), grads()
    for a, b, c in zip(fb, recon, plain):
      np.testing.assert_allclose(a[:, below], b[:, below], atol=1e-6)       # no KL gradient
      np.testing.assert_allclose(a[:, above], c[:, above], atol=1e-6)       # the full KL's
      assert not np.allclose(a[:, above], b[:, above], atol=1e-4)
  else:
    # The shortfall sum_j max(lambda - KL_j, 0): its gradient is -grad KL_j below lambda, 0 above.
    def shortfall_grad(**kw):
      f_iw = losses.make_loss(m, losses.KLControlled("iwae", **kw), 1)
      g = jax.grad(lambda p: f_iw(p, x, jax.random.clone(key), 0)[0])(params)
      enc = g["encoder"]["params"]
      return np.asarray(enc["loc"]["kernel"]), np.asarray(enc["log_scale"]["kernel"])

    def kl_grad():
      def f(p):
        lo, ls = m.encode(p, x)
        return jnp.mean(jnp.sum(distributions.kl_normal_standard_normal(lo, ls, event_ndims=0),
                                -1))
      enc = jax.grad(f)(params)["encoder"]["params"]
      return np.asarray(enc["loc"]["kernel"]), np.asarray(enc["log_scale"]["kernel"])

    diff = [a - b for a, b in zip(shortfall_grad(free_bits=lam), shortfall_grad())]
    for dg, kg in zip(diff, kl_grad()):
      np.testing.assert_allclose(dg[:, below], -kg[:, below], atol=1e-5)
      np.testing.assert_allclose(dg[:, above], 0.0, atol=1e-6)


def test_kl_controlled_train_step_traces_once_and_bad_arguments():
  m, params = _model("mlp")
  beta = losses.kl_weight_schedule("cyclical", cycle_steps=4)
  loss = losses.make_loss(m, losses.KLControlled("iwae", kl_weight=beta, free_bits=0.1), 2)
  traced = chex.assert_max_traces(loss, n=1)
  opt = optax.adam(1e-3)
  step = training.make_train_step(traced, opt, seed=0)
  state = training.init_state(params, opt)
  x = _binary(jax.random.key(15), 4)
  betas = []
  for _ in range(5):
    state, met = step(state, x)
    betas.append(float(met["beta"]))
  np.testing.assert_allclose(betas, [0.0, 0.5, 1.0, 1.0, 0.0])
  with pytest.raises(ValueError, match="bound must be one of"):
    losses.KLControlled("miwae")
  with pytest.raises(TypeError, match="objective"):
    losses.KLControlled(objective="elbo")  # pylint: disable=unexpected-keyword-arg
  with pytest.raises(ValueError, match="bound must be one of"):
    losses.make_loss(m, "kl_controlled", 2, bound="vae")
  with pytest.raises(ValueError, match="free_bits"):
    losses.KLControlled("elbo", free_bits=-1.0)
  with pytest.raises(ValueError, match="free_bits_groups"):  # 2 does not divide 3 dimensions
    losses.make_loss(m, losses.KLControlled("elbo", free_bits=0.1, free_bits_groups=2), 1)
  with pytest.raises(ValueError, match="num_samples"):
    losses.make_loss(m, losses.KLControlled("elbo"), 0)


@pytest.mark.parametrize("settings,match", [
    (dict(bound="elbo", kl_weight=0.5), "kl_weight"),
    (dict(bound="elbo", free_bits=float("nan")), "free_bits"),
    (dict(bound="elbo", free_bits=True), "free_bits"),
    (dict(bound="elbo", free_bits="0.1"), "free_bits"),
    (dict(bound="elbo", free_bits_groups=2), "free_bits_groups needs free_bits"),
    (dict(bound="elbo", free_bits=0.1, free_bits_groups=0), "free_bits_groups"),
    (dict(bound="elbo", free_bits=0.1, free_bits_groups=1.0), "free_bits_groups"),
    (dict(bound=None), "bound"),
])
def test_kl_controlled_checks_its_settings_when_built(settings, match):
  with pytest.raises(ValueError, match=match):
    losses.KLControlled(**settings)
  with pytest.raises(ValueError, match=match):  # the same check by name
    losses.make_loss(_model("mlp")[0], "kl_controlled", 1, **settings)


def test_kl_controlled_by_name_is_the_object():
  m, params = _model("mlp", latent_dim=4)
  beta = losses.kl_weight_schedule("linear", warmup_steps=4)
  kw = dict(kl_weight=beta, free_bits=0.1, free_bits_groups=2)
  obj = losses.KLControlled("iwae", **kw)
  assert obj == estimators.from_name("kl_controlled", bound="iwae", **kw)
  assert estimators.ESTIMATORS["kl_controlled"] is losses.KLControlled
  x = _binary(jax.random.key(16), 4)
  value_and_grad = lambda loss: jax.value_and_grad(loss, has_aux=True)(
      params, x, jax.random.key(17), jnp.int32(2))
  by_object = value_and_grad(losses.make_loss(m, obj, 2))
  by_name = value_and_grad(losses.make_loss(m, "kl_controlled", 2, bound="iwae", **kw))
  jax.tree.map(np.testing.assert_array_equal, by_object, by_name)
  assert float(by_object[0][1]["beta"]) == 0.5
  with pytest.raises(ValueError, match="needs bound"):
    losses.make_loss(m, "kl_controlled", 2)
  with pytest.raises(ValueError, match="carries its own settings"):
    losses.make_loss(m, obj, 2, free_bits=0.2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(latent_dim=2.5), "latent_dim must be an int"),
    (dict(latent_dim=True), "latent_dim .*bool"),
    (dict(features=4.0), "features must be an int"),
    (dict(hidden=(2.5,)), r"hidden\[0\] must be an int"),
    (dict(image_shape=(28.5, 28, 1)), r"image_shape\[0\] must be an int"),
], ids=["latent_float", "latent_bool", "features_float", "hidden_float", "image_shape_float"])
def test_make_refuses_float_and_bool_sizes_instead_of_truncating(kwargs, match):
  with pytest.raises(ValueError, match=match):
    pixel_vae.make(**kwargs)
