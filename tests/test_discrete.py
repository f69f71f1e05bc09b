"""Categorical VAE (Gumbel-softmax, ST, REINFORCE), VQ-VAE / VQ-VAE-2, discretized logistic.

Oracles: enumeration of every latent configuration of a tiny categorical VAE (exact ELBO, exact
log p(x), exact gradient), the logistic CDF, closed-form counts.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from dgmjax import distributions, gumbel, losses, models, training, vq
from dgmjax.nn import VectorQuantizer, pixelcnn
from dgmjax.models import categorical_vae, vqvae

# ----------------------------------------------------------------------------- categorical VAE

_TINY = categorical_vae.CategoricalVAE(image_shape=(2, 3, 1), num_vars=2, num_classes=3,
                                       hidden_dims=(8,))


def _tiny_setup():
  params = _TINY.init(jax.random.key(0))
  x = jnp.array([[0, 1, 1, 0, 1, 0], [1, 1, 0, 0, 0, 1]], jnp.float32).reshape(2, 2, 3, 1)
  return params, x


def _exact(params, x):
  """Exact ELBO and log p(x) by enumerating the 3^2 latent configurations: ``[B]`` each."""
  logits = _TINY.encoder_logits(params, x)                      # [B, 2, 3]
  xf = x.reshape(x.shape[0], -1)
  elbo, log_joint = 0.0, []
  for z in itertools.product(range(3), repeat=2):
    y = jax.nn.one_hot(jnp.array(z), 3)                          # [2, 3]
    log_px = distributions.bernoulli_log_prob(xf, _TINY.decoder_logits(params, y)[None])
    log_q = logits[:, 0, z[0]] + logits[:, 1, z[1]]
    lj = log_px + 2 * math.log(1 / 3)
    elbo = elbo + jnp.exp(log_q) * (lj - log_q)
    log_joint.append(lj)
  return elbo, jax.scipy.special.logsumexp(jnp.stack(log_joint), axis=0)


#: Jang et al.'s three estimators as contract losses: the relaxed ELBO (Gumbel-softmax, and
#: straight-through) with the exact KL, and REINFORCE on the reconstruction with the leave-one-out
#: minibatch baseline and the exact KL gradient.
ESTIMATORS = ("gumbel", "st", "reinforce")


def _loss_fn(model, temperature, estimator="gumbel"):
  if estimator == "reinforce":
    return losses.make_loss(model, "reinforce", 1, bound="elbo", kl="analytic",
                              baseline="batch_mean")
  return losses.make_loss(model, losses.Relaxed(temperature, hard=estimator == "st"), 1)


def _loss(params, x, key, temperature, estimator="gumbel", model=_TINY):
  return _loss_fn(model, temperature, estimator)(params, x, key, 0)


def test_log_weights_give_the_exact_elbo_and_log_likelihood():
  params, x = _tiny_setup()
  elbo, log_px = _exact(params, x)
  lw = jax.jit(lambda p, xx, k: models.log_weights(_TINY, p, xx, k, 20000))(params, x,
                                                                            jax.random.key(1))
  assert lw.shape == (20000, 2)
  se = jnp.std(lw, axis=0) / math.sqrt(20000)
  assert jnp.all(jnp.abs(jnp.mean(lw, 0) - elbo) < 4 * se)
  iwae = jax.scipy.special.logsumexp(lw, axis=0) - math.log(20000)
  w = jnp.exp(lw - log_px[None])                           # importance weights / p(x): mean 1
  se_log = jnp.std(w, axis=0) / math.sqrt(20000)      # delta method: se of log mean w
  assert jnp.all(jnp.abs(iwae - log_px) < 4 * se_log) and jnp.all(se_log < 0.01)
  assert jnp.all(elbo < log_px)


def test_samples_are_one_hot_and_their_densities_are_the_categoricals():
  params, x = _tiny_setup()
  d = models.draws(_TINY, params, x, jax.random.split(jax.random.key(5), 7))
  assert d.z.shape == (7, 2, 2, 3)
  np.testing.assert_array_equal(np.sum(np.asarray(d.z), -1), 1.0)
  assert set(np.unique(np.asarray(d.z)).tolist()) == {0.0, 1.0}
  logits = _TINY.encoder_logits(params, x)
  np.testing.assert_allclose(d.log_q, jnp.sum(d.z * logits[None], axis=(-1, -2)), rtol=1e-6)
  np.testing.assert_allclose(d.log_prior, -2 * math.log(3), rtol=1e-6)
  np.testing.assert_allclose(models.posterior_means(_TINY, params, x, jax.random.key(6))[0],
                             jnp.exp(logits), rtol=1e-6)
  assert models.sample_x(_TINY, params, jax.random.key(7), 4).shape == (4, 2, 3, 1)
  r = models.reconstruct(_TINY, params, x)
  assert r.shape == x.shape and bool(jnp.all((r >= 0) & (r <= 1)))


def test_kl_is_exact_and_loss_value_matches_its_parts():
  params, x = _tiny_setup()
  logits = _TINY.encoder_logits(params, x)
  q = np.exp(np.asarray(logits))
  kl_vars = np.log(3) + np.sum(q * np.log(q), -1)                  # [B, N]
  np.testing.assert_allclose(_TINY.kl(params, x), kl_vars, rtol=1e-5, atol=1e-7)
  kl = kl_vars.sum(-1)
  for est in ESTIMATORS:
    with jax.debug_key_reuse(False):  # the loss and its oracle draw the same sample
      key = jax.random.key(2)
      loss, m = _loss(params, x, key, 0.7, est)
      sample_model = _TINY if est == "reinforce" else _TINY.relaxed(0.7, hard=est == "st")
      z = sample_model.sample_q(params, x, jax.random.split(key, 1)[0])
    recon = jnp.mean(_TINY.log_likelihood(params, x, z))
    np.testing.assert_allclose(m["kl"], np.mean(kl), rtol=1e-5, err_msg=est)
    np.testing.assert_allclose(loss, m["kl"] - recon, rtol=1e-5, err_msg=est)   # value = -ELBO
    np.testing.assert_allclose(m["elbo"], recon - m["kl"], rtol=1e-5, err_msg=est)
    if "recon" in m:
      np.testing.assert_allclose(m["recon"], recon, rtol=1e-5, err_msg=est)


def test_reinforce_gradient_is_unbiased_and_gumbel_gradient_is_close():
  """Mean encoder gradient over many keys vs the exact ELBO gradient (enumeration)."""
  params, x = _tiny_setup()
  exact = jax.grad(lambda p: -jnp.sum(_exact(p, x)[0]))(params)
  n = 4000

  def grads(est):
    keys = jax.random.split(jax.random.key(3), n)
    g = jax.jit(jax.vmap(jax.grad(lambda p, k: 2 * _loss(p, x, k, 0.5, est)[0]),
                         in_axes=(None, 0)))(params, keys)
    return g["params"]["encoder"]["out"]["kernel"]

  e = exact["params"]["encoder"]["out"]["kernel"]
  g = grads("reinforce")
  mean, se = jnp.mean(g, 0), jnp.std(g, 0) / math.sqrt(n)
  z = jnp.abs(mean - e) / jnp.maximum(se, 1e-6)
  assert jnp.mean(z < 3) > 0.95 and jnp.max(z) < 5
  assert jnp.max(jnp.abs(e)) > 10 * jnp.median(se)     # the check has power
  # The relaxed estimators are biased but point the same way and have lower variance.
  for est in ("gumbel", "st"):
    ge = grads(est)
    cos = jnp.sum(jnp.mean(ge, 0) * e) / (jnp.linalg.norm(jnp.mean(ge, 0)) * jnp.linalg.norm(e))
    assert cos > 0.8, (est, cos)
    assert jnp.mean(jnp.var(ge, 0)) < jnp.mean(jnp.var(g, 0))


def test_straight_through_decodes_one_hot_samples():
  params, x = _tiny_setup()
  with jax.debug_key_reuse(False):  # the loss and its oracle draw the same sample
    key = jax.random.key(4)
    _, m_st = _loss(params, x, key, 0.3, "st")
    # the ST forward pass is the decoder at the hard sample argmax of the relaxed one
    logits = _TINY.encoder_logits(params, x)
    y = gumbel.gumbel_softmax(jax.random.split(key, 1)[0], logits, 0.3, hard=True)
  assert set(np.unique(np.asarray(y)).tolist()) <= {0.0, 1.0}
  recon = distributions.bernoulli_log_prob(x.reshape(2, -1), _TINY.decoder_logits(params, y))
  np.testing.assert_allclose(m_st["recon"], jnp.mean(recon), rtol=1e-5)


def test_relaxed_model_has_the_concrete_densities():
  """The Gumbel-softmax relaxation as a contract model: Concrete log q and log p(z), so the
  relaxed IWAE bound exists; its samples lie inside the simplex."""
  params, x = _tiny_setup()
  rm = _TINY.relaxed(0.6)
  d = models.draws(rm, params, x, jax.random.split(jax.random.key(8), 5))
  assert d.z.shape == (5, 2, 2, 3)
  np.testing.assert_allclose(np.sum(np.asarray(d.z), -1), 1.0, rtol=1e-5)
  assert bool(jnp.all((d.z > 0) & (d.z < 1)))
  logits = _TINY.encoder_logits(params, x)
  want_q = jnp.sum(gumbel.concrete_log_prob(d.z, logits[None], 0.6), -1)
  want_p = jnp.sum(gumbel.concrete_log_prob(d.z, jnp.zeros_like(d.z), 0.6), -1)
  np.testing.assert_allclose(d.log_q, want_q, rtol=1e-5)
  np.testing.assert_allclose(d.log_prior, want_p, rtol=1e-5)
  loss, m = losses.make_loss(rm, "iwae", 5)(params, x, jax.random.key(9), 0)
  assert np.isfinite(float(loss)) and float(m["bound"]) >= float(m["elbo"])


def test_dvae_codebook_and_temperature_schedule():
  m = categorical_vae.CategoricalVAE(image_shape=(2, 3, 1), num_vars=2, num_classes=3,
                                     hidden_dims=(8,), codebook_dim=4)
  params = m.init(jax.random.key(0))
  assert params["params"]["codebook"].shape == (3, 4)
  g = jax.grad(lambda p: _loss(p, jnp.zeros((2, 2, 3, 1)), jax.random.key(1), 0.5,
                               model=m)[0])(params)
  assert jnp.any(g["params"]["codebook"] != 0)
  t = categorical_vae.jang_temperature(jnp.array([0, 999, 1000, 10**6]), rate=1e-4, every=1000)
  np.testing.assert_allclose(t, [1.0, 1.0, math.exp(-0.1), 0.5], rtol=1e-6)


def test_categorical_bad_input():
  with pytest.raises(ValueError, match="num_classes"):
    categorical_vae.CategoricalVAE(num_classes=1)
  with pytest.raises(ValueError, match="num_vars"):
    categorical_vae.CategoricalVAE(num_vars=0)
  params, x = _tiny_setup()
  with pytest.raises(ValueError, match="temperature"):
    _loss(params, x, jax.random.key(0), 0.0, "gumbel")
  with pytest.raises(ValueError, match="estimator"):
    losses.make_loss(_TINY, "gumbel", 1)
  with pytest.raises(ValueError, match="no density"):  # straight-through: analytic KL only
    losses.make_loss(_TINY.relaxed(1.0, hard=True), "iwae", 2)(params, x, jax.random.key(0), 0)
  with pytest.raises(ValueError, match="kl='analytic'"):
    losses.make_loss(_TINY, "vimco", 2, kl="analytic")
  with pytest.raises(ValueError, match="batch of at least 2"):
    _loss(params, x[:1], jax.random.key(0), 1.0, "reinforce")
  with pytest.raises(ValueError, match=r"x must be \[B, 2, 3, 1\]"):
    _loss(params, jnp.zeros((2, 3, 3, 1)), jax.random.key(0), 1.0)
  with pytest.raises(ValueError, match="minimum must be a finite number > 0"):
    categorical_vae.jang_temperature(0, minimum=0.0)


# ----------------------------------------------------------------------------- discretized logistic


@pytest.mark.parametrize("loc, log_scale", [(0.3, -3.0), (0.0, -1.0), (0.99, -6.0), (0.5, 1.0)])
def test_discretized_logistic_sums_to_one_and_matches_the_cdf(loc, log_scale):
  grid = jnp.arange(256) / 255.0
  lp = distributions.discretized_logistic_log_prob(grid, loc, log_scale)
  assert jnp.all(jnp.isfinite(lp))
  np.testing.assert_allclose(jnp.sum(jnp.exp(lp)), 1.0, atol=2e-4)
  s, h = math.exp(log_scale), 0.5 / 255
  cdf = lambda v: stats.logistic.cdf(v, loc=loc, scale=s)
  ref = np.concatenate([[cdf(h)], cdf(np.asarray(grid[1:-1]) + h) - cdf(np.asarray(grid[1:-1]) - h),
                        [1 - cdf(1 - h)]])
  ok = ref > 1e-5  # where the mass is representable the log-mass is the CDF difference
  np.testing.assert_allclose(np.exp(lp)[ok], ref[ok], rtol=2e-3)


def test_discretized_logistic_bad_bins():
  with pytest.raises(ValueError, match="num_bins"):
    distributions.discretized_logistic_log_prob(jnp.zeros(3), 0.0, 0.0, num_bins=1)


# ----------------------------------------------------------------------------- VQ-VAE


def _vq(levels=1, **kw):
  return vqvae.VQVAE(image_shape=(8, 8, 1), levels=levels, num_codes=6, embedding_dim=3,
                     features=8, hidden=4, num_blocks=1, **kw)


def test_vqvae_shapes_bound_and_straight_through():
  x = jax.random.uniform(jax.random.key(0), (3, 8, 8, 1))
  for levels, shapes in ((1, [(3, 2, 2)]), (2, [(3, 4, 4), (3, 2, 2)])):
    m = _vq(levels)
    p = m.init(jax.random.key(1))
    assert [i.shape for i in m.indices(p, x)] == shapes
    assert m.uniform_prior_nats() == pytest.approx(sum(a * b for a, b in m.code_shapes)
                                                   * math.log(6))
    # the codebook gets its gradient from the codebook loss only (no EMA); the encoder from the
    # reconstruction through the straight-through estimator and the commitment term
    loss, g = jax.jit(jax.value_and_grad(lambda q: m.loss(q, x, None, 0)[0]))(p)
    assert jnp.isfinite(loss)
    assert all(jnp.any(c != 0) for c in g["codebooks"])
    assert all(jnp.all(c == 0) for c in g["ema_sum"] + g["usage_counts"])
    assert m.bits_per_dim(64 * math.log(2.0)) == pytest.approx(1.0)
  m = _vq(1, ema=True)
  g = jax.jit(jax.grad(lambda q: m.loss(q, x, None, 0)[0]))(m.init(jax.random.key(1)))
  assert all(jnp.all(c == 0) for c in g["codebooks"])   # EMA codebooks take no gradient


def test_ema_post_update_moves_used_codes_to_their_cluster_means():
  m = _vq(1, ema=True, ema_decay=0.0)
  p = m.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
  _, met = m.loss(p, x, None, 0)
  z_e, idx = met["aux"]["z_e"][0], met["aux"]["indices"][0]
  new = m.post_update(p, met["aux"], jax.random.key(2), 0)
  flat, ids = np.asarray(z_e).reshape(-1, 3), np.asarray(idx).reshape(-1)
  for k in np.unique(ids):
    np.testing.assert_allclose(new["codebooks"][0][k], flat[ids == k].mean(0), rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(new["usage_counts"][0], np.bincount(ids, minlength=6))


def test_dead_codes_are_restarted_from_encoder_outputs():
  m = _vq(1, restart_every=2, init_scale=0.01, init_offset=50.0)
  p = m.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
  _, met = m.loss(p, x, None, 0)
  used = np.unique(np.asarray(met["aux"]["indices"][0]))
  assert len(used) < 6
  p1 = m.post_update(p, met["aux"], jax.random.key(2), 0)       # step 1: not a check
  np.testing.assert_array_equal(p1["codebooks"][0], p["codebooks"][0])
  p2 = m.post_update(p1, met["aux"], jax.random.key(3), 1)      # step 2: restart the dead ones
  pool = np.asarray(met["aux"]["z_e"][0]).reshape(-1, 3)
  for k in range(6):
    if k in used:
      np.testing.assert_array_equal(p2["codebooks"][0][k], p["codebooks"][0][k])
    else:
      assert np.min(np.abs(pool - np.asarray(p2["codebooks"][0][k])).sum(1)) < 1e-6
  assert jnp.all(p2["usage_counts"][0] == 0)


def test_vqvae_trains_through_the_generic_step():
  m = _vq(2, ema=True, restart_every=3)
  opt = optax.adam(1e-3)
  step = training.make_train_step(m.loss, opt, seed=0, post_update=m.post_update)
  state = training.init_state(m.init(jax.random.key(0)), opt)
  x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 1))
  losses = []
  for _ in range(4):
    state, met = step(state, x)
    losses.append(float(met["loss"]))
  assert "aux" not in met and all(np.isfinite(losses)) and int(state.nonfinite_total) == 0
  assert step._cache_size() == 1


def test_vqvae_bad_input():
  with pytest.raises(ValueError, match="num_codes"):
    vqvae.VQVAE(num_codes=0)
  with pytest.raises(ValueError, match="levels"):
    vqvae.VQVAE(levels=3)
  with pytest.raises(ValueError, match="divisible by 4"):
    vqvae.VQVAE(image_shape=(30, 30, 1))
  with pytest.raises(ValueError, match=r"x must be \[B, 8, 8, 1\]"):
    m = _vq()
    m.loss(m.init(jax.random.key(0)), jnp.zeros((2, 28, 28, 1)), None, 0)
  with pytest.raises(ValueError, match="embedding"):
    VectorQuantizer(4, 3).init(jax.random.key(0), jnp.zeros((2, 5)))


def test_pixelcnn_with_a_spatial_condition_is_a_normalised_causal_prior():
  net = pixelcnn.PixelCNN(num_layers=1, features=8, kernel_size=3, first_kernel_size=3,
                          num_classes=3)
  cond = jax.nn.one_hot(jnp.array([[[1, 2]]]), 4)                   # [1, 1, 2, 4]
  p = net.init(jax.random.key(0), jnp.zeros((1, 1, 2, 1)), cond)
  maps = jnp.array(list(itertools.product(range(3), repeat=2))).reshape(9, 1, 2)
  lp = pixelcnn.categorical_log_prob(net, p, maps, jnp.repeat(cond, 9, 0))
  np.testing.assert_allclose(jnp.sum(jnp.exp(lp)), 1.0, rtol=1e-5)
  other = pixelcnn.categorical_log_prob(net, p, maps, jnp.repeat(jnp.roll(cond, 1, -1), 9, 0))
  assert not np.allclose(lp, other)                                 # the condition is used


@pytest.mark.parametrize("call,match", [
    (lambda: categorical_vae.CategoricalVAE(num_vars=2.5), "num_vars must be an int"),
    (lambda: categorical_vae.CategoricalVAE(num_vars=True), "num_vars .*bool"),
    (lambda: categorical_vae.CategoricalVAE(hidden_dims=(0,)),
     r"hidden_dims\[0\] must be an int >= 1"),
    (lambda: categorical_vae.CategoricalVAE(image_shape=(0, 28, 1)), r"image_shape\[0\]"),
    (lambda: categorical_vae.CategoricalVAE().relaxed(0.0),
     "temperature must be a finite number > 0"),
    (lambda: categorical_vae.CategoricalVAE().relaxed(float("nan")), "temperature"),
    (lambda: categorical_vae.CategoricalVAE().relaxed(1.0, hard="yes"), "hard must be a bool"),
    (lambda: categorical_vae.jang_temperature(10, rate=-1.0), "rate must be a finite number >= 0"),
    (lambda: categorical_vae.jang_temperature(10, initial=float("nan")), "initial"),
    (lambda: categorical_vae.jang_temperature(-1), "step must be a step count >= 0"),
    (lambda: vqvae.VQVAE(features=0), "features must be an int >= 1"),
    (lambda: vqvae.VQVAE(num_blocks=-1), "num_blocks must be an int >= 0"),
    (lambda: vqvae.VQVAE(beta=-0.1), "beta must be a finite number >= 0"),
    (lambda: vqvae.VQVAE(beta=float("nan")), "beta"),
    (lambda: vqvae.VQVAE(num_codes=2.5), "num_codes must be an int"),
    (lambda: vqvae.VQVAE(ema="yes"), "ema must be a bool"),
], ids=["num_vars_float", "num_vars_bool", "hidden_zero", "image_shape_zero", "tau_zero",
        "tau_nan", "hard_str", "anneal_rate_negative", "anneal_initial_nan", "anneal_step_negative",
        "vq_features_zero", "vq_blocks_negative", "vq_beta_negative", "vq_beta_nan",
        "vq_codes_float", "vq_ema_str"])
def test_discrete_model_settings_are_refused_naming_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
