"""The model contract: one set of generic bounds, estimators and evaluators for any model.

Oracles: the surrogate of every estimator has the value of its bound on every library model; on
a linear-Gaussian model every estimator's gradient equals a closed-form computation (per-sample
gradients written out by hand, in float64 numpy); routing is by role, whatever the parameters are
called; user models in Flax Linen, Flax NNX and equinox train and evaluate through the same entry
points; bad shapes raise errors that name the function.
"""

import math
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dgmjax import diagnostics, estimators, evaluation, losses, objectives, parallel, training
from dgmjax import models as M
from dgmjax.models import categorical_vae, pixel_vae, vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input


def _decoder_model(decoder):
  """A ``from_networks`` model over 4x4 images whose decoder is ``decoder(params, z)``."""
  enc = lambda p, x: (jnp.zeros((x.shape[0], 2)), jnp.zeros((x.shape[0], 2)))
  return M.from_networks(enc, decoder, likelihood="bernoulli")


RAISES = [
    ("decoder_output_without_the_batch_axis",
     lambda: M.log_weights(_decoder_model(lambda p, z: jnp.zeros((1, 4, 4, 1))), {
         "encoder": {}, "decoder": {}}, bi.binary_images(), bi.key(), 2),
     ValueError, r"decoder's logits must have the shape of the data x, \(3, 4, 4, 1\); got "
                 r"\(1, 4, 4, 1\)"),
    ("decoder_output_flat",
     lambda: M.log_weights(_decoder_model(lambda p, z: jnp.zeros((z.shape[0], 16))), {
         "encoder": {}, "decoder": {}}, bi.binary_images(), bi.key(), 2),
     ValueError, r"decoder's logits must have the shape of the data x.*got \(3, 16\)"),
    ("sample_x_num_negative",
     lambda: M.sample_x(*bi.bernoulli_vae(), bi.key(), -1),
     ValueError, r"num must be an int >= 1, got -1"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _key(seed=0):
  return jax.random.key(seed)


#: Every registered estimator, as this module was imported (a docs page run in the same process
#: registers a toy one): each needs a row of the oracle, _ORACLE below.
REGISTERED = tuple(estimators.ESTIMATORS)


def _kwargs(est):
  """The settings each estimator is tested with (its oracle row's)."""
  return _ORACLE[est][0]


def _binary(shape, seed=0):
  return (np.random.default_rng(seed).uniform(size=shape) > 0.5).astype(np.float32)


# ----------------------------------------------------------------------------- library models


def _library_models():
  small = dict(latent_dims=(3,), hidden_dims=((8,),))
  one = vae.make("custom", (4, 4, 1), **small)
  return {
      "vae_1layer": one,
      "vae_2layer": vae.make("custom", (4, 4, 1), latent_dims=(3, 2), hidden_dims=((8,), (6,))),
      "vamp_prior": vae.make_prior_vae("custom", (4, 4, 1), prior="vamp", num_pseudo_inputs=3,
                                       **small),
      "iaf_posterior": vae.make_prior_vae("custom", (4, 4, 1), posterior="iaf", flow_layers=2,
                                          flow_hidden=(8,), **small),
      "pixel_vae": pixel_vae.make("pixelcnn", image_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                                  num_layers=2, features=4),
      "categorical": categorical_vae.CategoricalVAE((4, 4, 1), num_vars=2, num_classes=3,
                                                    hidden_dims=(8,)),
  }


LIBRARY = _library_models()


#: The library models whose every-estimator check is a long run (minutes on 2 CPU cores), marked
#: slow: each has its own tests (test_priors.py, test_pixel_vae.py) in the default run.
_SLOW_LIBRARY = ("iaf_posterior", "pixel_vae")
#: The library models with a closed-form KL per latent dimension (``kl``), which the
#: KL-controlled loss reads.
_ANALYTIC_KL = ("vae_1layer", "pixel_vae", "categorical")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW_LIBRARY
                                  else n for n in sorted(LIBRARY)])
def test_every_estimator_value_is_its_bound_on_every_library_model(name):
  model = LIBRARY[name]
  params = model.init(_key())
  x = _binary((3, 4, 4, 1))
  M.check_model(model, params, x)
  k = 4
  lw = M.log_weights(model, params, x, _key(), k)
  iwae = float(jnp.mean(objectives.iwae_bound(lw)))
  want = {"elbo": float(jnp.mean(objectives.elbo(lw))), "miwae":
          float(jnp.mean(objectives.miwae_bound(lw, 2))),
          "ciwae": float(jnp.mean(objectives.ciwae_bound(lw, 0.3))),
          "renyi": float(jnp.mean(objectives.renyi_bound(lw, 0.5)))}
  want["renyi_dreg"] = want["renyi"]
  for est in REGISTERED:
    if est == "kl_controlled" and name not in _ANALYTIC_KL:
      continue
    # value and gradient from one pass (the key is passed in: the loss draws the samples of lw)
    loss_fn = losses.make_loss(model, est, k, **_kwargs(est))
    if estimators.ESTIMATORS[est].pathwise and getattr(model, "latent", None) == "discrete":
      with pytest.raises(ValueError, match="'rws', 'reinforce' and 'vimco'"):  # no path through z
        loss_fn(params, x, _key(), 0)
      continue
    (loss, metrics), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, _key(), 0)
    np.testing.assert_allclose(float(loss), -want.get(est, iwae), rtol=1e-5, err_msg=est)
    np.testing.assert_allclose(float(metrics["bound"]), want.get(est, iwae), rtol=1e-5,
                               err_msg=est)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g)), (name, est)


# ----------------------------------------------------------------------------- linear-Gaussian oracle
# q(z|x) = N(A x + c, diag s^2), p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I). Parameters live
# under names that say nothing of their role ("alpha" is the decoder, "omega" the encoder), so a
# gradient routed by name could not be right.

DX, DZ, B, K = 3, 2, 3, 4


def _lg_params(seed=1):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s) * 0.5, jnp.float32)
  return {"alpha": {"w": f(DX, DZ), "b": f(DX), "log_sigma": jnp.asarray(-0.3, jnp.float32)},
          "omega": {"a": f(DZ, DX), "c": f(DZ), "log_s": f(DZ) - 0.5}}


def _lg_model(*, with_kl=False):
  def enc(p, x):
    loc = x @ p["omega"]["a"].T
    return loc + jnp.broadcast_to(p["omega"]["c"], loc.shape), jnp.broadcast_to(
        p["omega"]["log_s"], loc.shape)

  def sample_q(p, x, key):
    loc, log_s = enc(p, x)
    return loc + jnp.exp(log_s) * jax.random.normal(key, loc.shape)

  def log_q(p, x, z):
    loc, log_s = enc(p, x)
    u = (z - loc) / jnp.exp(log_s)
    return jnp.sum(-0.5 * u ** 2 - log_s - 0.5 * math.log(2 * math.pi), -1)

  def log_prior(p, z):
    return jnp.sum(-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi), -1)

  def log_likelihood(p, x, z):
    a = p["alpha"]
    mean = z @ a["w"].T
    r = x - mean - jnp.broadcast_to(a["b"], mean.shape)
    return jnp.sum(-0.5 * (r / jnp.exp(a["log_sigma"])) ** 2 - a["log_sigma"]
                   - 0.5 * math.log(2 * math.pi), -1)

  def kl(p, x):  # KL(q(z|x) || N(0, I)) per latent dimension, [B, DZ]
    loc, log_s = enc(p, x)
    return 0.5 * (jnp.exp(2 * log_s) + loc ** 2 - 1.0) - log_s

  return M.from_functions(sample_q=sample_q, log_q=log_q, log_prior=log_prior,
                          log_likelihood=log_likelihood, **({"kl": kl} if with_kl else {}))


class _Weights(NamedTuple):
  """What the oracle rows read: log-weights ``[K, B]`` in float64 and functions of them."""
  log_w: np.ndarray
  k: int
  wt: np.ndarray        # normalised importance weights
  uniform: np.ndarray   # 1 / K
  lhat: np.ndarray      # the IWAE bound, [B]
  group: Callable       # m -> weights normalised within each of m groups, divided by m
  norm: Callable        # log-weights -> normalised weights along axis 0


def _vimco_loo(c):
  """VIMCO's leave-one-out bounds ``L^(-j)``, ``[K, B]``, by brute force."""
  loo = np.empty_like(c.log_w)
  for j in range(c.k):
    rows = c.log_w.copy()
    rows[j] = (c.log_w.sum(0) - c.log_w[j]) / (c.k - 1)
    loo[j] = np.log(np.mean(np.exp(rows - rows.max(0)), 0)) + rows.max(0)
  return loo


#: The oracle of every estimator on the linear-Gaussian model: name -> (its settings in these
#: tests, ``(weights, **settings) -> (c_theta, c_path, c_score)``), the coefficients ``[K, B]`` of
#: the per-sample gradients of ``log p(x, z_k)`` in ``theta`` (at fixed z), of ``log w_k`` through
#: ``z_k`` in ``phi``, and of ``log q(z_k | x)`` in ``phi`` (at fixed z) in the estimator of the
#: gradient of the bound. A registered estimator without a row fails
#: test_linear_gaussian_gradient_of_every_estimator_equals_closed_form.
_ORACLE = {
    "elbo": ({}, lambda c: (c.uniform, c.uniform, -c.uniform)),
    "iwae": ({}, lambda c: (c.wt, c.wt, -c.wt)),
    "miwae": ({"num_groups": 2}, lambda c, num_groups: (
        c.group(num_groups), c.group(num_groups), -c.group(num_groups))),
    "ciwae": ({"beta": 0.3}, lambda c, beta: (
        beta * c.uniform + (1 - beta) * c.wt, beta * c.uniform + (1 - beta) * c.wt,
        -(beta * c.uniform + (1 - beta) * c.wt))),
    "renyi": ({"alpha": 0.5}, lambda c, alpha: (
        c.norm((1 - alpha) * c.log_w), c.norm((1 - alpha) * c.log_w),
        -c.norm((1 - alpha) * c.log_w))),
    "piwae": ({"num_groups": 2}, lambda c, num_groups: (
        c.wt, c.group(num_groups), -c.group(num_groups))),
    "piwae_dreg": ({"num_groups": 2}, lambda c, num_groups: (
        c.wt, num_groups * c.group(num_groups) ** 2, 0 * c.wt)),
    "dreg": ({}, lambda c: (c.wt, c.wt ** 2, 0 * c.wt)),
    "stl": ({}, lambda c: (c.wt, c.wt, 0 * c.wt)),
    "rws": ({}, lambda c: (c.wt, 0 * c.wt, c.wt)),
    "rws_dreg": ({}, lambda c: (c.wt, c.wt - c.wt ** 2, 0 * c.wt)),
    "reinforce": ({}, lambda c: (c.wt, 0 * c.wt, c.lhat[None] - c.wt)),
    "vimco": ({}, lambda c: (c.wt, 0 * c.wt, c.lhat[None] - _vimco_loo(c) - c.wt)),
    "renyi_dreg": ({"alpha": 0.5}, lambda c, alpha: (
        c.norm((1 - alpha) * c.log_w),
        alpha * c.norm((1 - alpha) * c.log_w) + (1 - alpha) * c.norm((1 - alpha) * c.log_w) ** 2,
        0 * c.wt)),
    # at beta = 1 without free bits: the IWAE bound of log p(x|z) + beta (log p(z) - log q)
    "kl_controlled": ({"bound": "iwae"}, lambda c, bound: (c.wt, c.wt, -c.wt)),
}


def _lg_reference(params, x, key, k, est):
  """The estimator's gradient of the batch-mean loss, from closed-form per-sample gradients (the
  estimator ``est`` with the settings of its oracle row)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  w, b0, ls = p["alpha"]["w"], p["alpha"]["b"], float(p["alpha"]["log_sigma"])
  a, c, log_s = p["omega"]["a"], p["omega"]["c"], p["omega"]["log_s"]
  x = np.asarray(x, np.float64)
  eps = np.stack([np.asarray(jax.random.normal(kk, (x.shape[0], DZ)), np.float64)
                  for kk in jax.random.split(key, k)])                      # [K, B, DZ]
  s, s2 = np.exp(log_s), np.exp(2 * ls)
  mu = x @ a.T + c
  z = mu + s * eps
  r = x - z @ w.T - b0                                                      # [K, B, DX]
  log_w = (-0.5 * np.sum(r ** 2, -1) / s2 - DX * ls - 0.5 * np.sum(z ** 2, -1)
           + 0.5 * np.sum(eps ** 2, -1) + np.sum(log_s) - 0.5 * DX * np.log(2 * np.pi))
  g_z = r @ w / s2 - z + eps / s                                            # d log w / d z
  # theta: d log p(x, z) / d theta at fixed z; phi: path (through z) and score (log q at fixed z)
  d_theta = {"w": r[..., :, None] * z[..., None, :] / s2, "b": r / s2,
             "log_sigma": np.sum(r ** 2, -1) / s2 - DX}
  path = {"a": g_z[..., :, None] * x[None, :, None, :], "c": g_z, "log_s": g_z * s * eps}
  score = {"a": (eps / s)[..., :, None] * x[None, :, None, :], "c": eps / s,
           "log_s": eps ** 2 - 1.0}

  def norm_w(lw):
    e = np.exp(lw - lw.max(0))
    return e / e.sum(0)

  def group_w(lw, m):
    g = lw.reshape(m, -1, lw.shape[-1])
    return np.concatenate([norm_w(gi) for gi in g], 0) / m

  weights = _Weights(log_w=log_w, k=k, wt=norm_w(log_w), uniform=np.full_like(log_w, 1.0 / k),
                     lhat=np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0),
                     group=lambda m: group_w(log_w, m), norm=norm_w)
  settings, coefficients = _ORACLE[est]
  ct, cp, cs = coefficients(weights, **settings)

  def contract(coeff, grads):
    return {n: -np.einsum("kb,kb...->...", coeff, g) / x.shape[0] for n, g in grads.items()}

  phi = contract(cp, path)
  phi = {n: phi[n] + contract(cs, score)[n] for n in phi}
  return {"alpha": contract(ct, d_theta), "omega": phi}


def test_every_oracle_row_is_a_registered_estimator():
  assert set(_ORACLE) <= set(REGISTERED)


@pytest.mark.parametrize("est", REGISTERED)
def test_linear_gaussian_gradient_of_every_estimator_equals_closed_form(est):
  assert est in _ORACLE, f"estimator {est!r} has no oracle row: add one to _ORACLE"
  model, params = _lg_model(with_kl=True), _lg_params()  # the KL for the losses that read it
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, DX)), jnp.float32)
  kw = _kwargs(est)
  loss = losses.make_loss(model, estimators.ESTIMATORS[est](**kw), K)
  got = jax.grad(lambda p: loss(p, x, _key(), 0)[0])(params)
  want = _lg_reference(params, x, _key(), K, est)
  for path, g in jax.tree_util.tree_flatten_with_path(got)[0]:
    ref = want[path[0].key][path[1].key]
    np.testing.assert_allclose(np.asarray(g), ref, rtol=2e-4, atol=2e-5,
                               err_msg=f"{est} {jax.tree_util.keystr(path)}")


def test_dreg_routes_by_role_whatever_the_encoder_is_called():
  """DReG differs from IWAE on the encoder, equals it on the decoder, for any parameter names."""
  model, params = _lg_model(), _lg_params()
  x = jnp.asarray(np.random.default_rng(3).normal(size=(B, DX)), jnp.float32)
  grads = {e: jax.grad(lambda p: losses.make_loss(model, e, K)(p, x, _key(), 0)[0])(params)
           for e in ("iwae", "dreg")}
  for n in ("w", "b", "log_sigma"):
    np.testing.assert_allclose(grads["dreg"]["alpha"][n], grads["iwae"]["alpha"][n], rtol=1e-5)
  diff = max(float(jnp.max(jnp.abs(grads["dreg"]["omega"][n] - grads["iwae"]["omega"][n])))
             for n in ("a", "c", "log_s"))
  assert diff > 1e-3
  # Renaming the branches (the encoder under "encoders_0", the decoder under "encoder") changes
  # nothing: no name is read.
  renamed = {"encoder": params["alpha"], "encoders_0": params["omega"]}
  back = lambda p: {"alpha": p["encoder"], "omega": p["encoders_0"]}
  ren_model = M.from_functions(
      sample_q=lambda p, x, k: model.sample_q(back(p), x, k),
      log_q=lambda p, x, z: model.log_q(back(p), x, z),
      log_prior=lambda p, z: model.log_prior(back(p), z),
      log_likelihood=lambda p, x, z: model.log_likelihood(back(p), x, z))
  g2 = jax.grad(lambda p: losses.make_loss(ren_model, "dreg", K)(p, x, _key(), 0)[0])(renamed)
  for n in ("a", "c", "log_s"):
    np.testing.assert_allclose(g2["encoders_0"][n], grads["dreg"]["omega"][n], rtol=1e-5)


# ----------------------------------------------------------------------------- your own networks


class ConvEncoder(nn.Module):
  latent: int = 4

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(self.latent)(h), nn.Dense(self.latent)(h)


class ConvDecoder(nn.Module):
  @nn.compact
  def __call__(self, z):
    h = nn.relu(nn.Dense(4 * 4 * 8)(z)).reshape(z.shape[0], 4, 4, 8)
    return nn.ConvTranspose(1, (3, 3), strides=(2, 2))(h)                  # [B, 8, 8, 1] logits


def _digits(n=64):
  from dgmjax import data as data_lib
  x = data_lib.load("digits", "train")["image"][:n]
  return np.asarray(data_lib.binarize(jax.random.key(5), jnp.asarray(x)))


def _train(model, params, x, estimator, steps=20, k=5):
  opt = optax.adam(3e-3)
  step = training.make_train_step(losses.make_loss(model, estimator, k), opt, seed=0)
  state = training.init_state(params, opt)
  for i in range(steps):
    state, metrics = step(state, x[(i % 4) * 16:(i % 4 + 1) * 16])
    assert bool(metrics["finite"])
  return state.params


def _check_trains(model, params, x):
  M.check_model(model, params, x[:4])
  before = float(np.mean(evaluation.log_likelihood(model, params, x[:16], _key(), num_samples=50)))
  for est in ("iwae", "dreg"):
    trained = _train(model, params, x, est)
    after = evaluation.log_likelihood(model, trained, x[:16], _key(), num_samples=50)
    assert after.shape == (16,) and np.all(np.isfinite(after))
    assert float(np.mean(after)) > before + 1.0, (est, before, float(np.mean(after)))


@pytest.mark.slow  # a conv net trained twice; the NNX and equinox user models train in the default run
def test_user_linen_conv_vae_trains_with_iwae_and_dreg_and_evaluates():
  x = _digits()
  model = M.from_networks(ConvEncoder(), ConvDecoder(), likelihood="bernoulli")
  params = model.init(_key(), x[:2])
  assert set(params) == {"encoder", "decoder"}
  _check_trains(model, params, x)
  # DReG reaches the encoder, under the name "encoder", and differs from IWAE there.
  g = {e: jax.grad(lambda p: losses.make_loss(model, e, 5)(p, x[:8], _key(), 0)[0])(params)
       for e in ("iwae", "dreg")}
  enc = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g["iwae"]["encoder"]),
                                                        jax.tree.leaves(g["dreg"]["encoder"]))]
  dec = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g["iwae"]["decoder"]),
                                                        jax.tree.leaves(g["dreg"]["decoder"]))]
  assert max(enc) > 1e-4 and max(dec) < 1e-5


class NNXEncoder(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(64, 32, rngs=rngs)
    self.loc = nnx.Linear(32, 4, rngs=rngs)
    self.log_scale = nnx.Linear(32, 4, rngs=rngs)

  def __call__(self, x):
    h = jnp.tanh(self.hidden(x.reshape(x.shape[0], -1)))
    return self.loc(h), self.log_scale(h)


class NNXDecoder(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(4, 32, rngs=rngs)
    self.out = nnx.Linear(32, 64, rngs=rngs)

  def __call__(self, z):
    return self.out(jnp.tanh(self.hidden(z))).reshape(z.shape[0], 8, 8, 1)


def test_user_nnx_vae_trains_with_iwae_and_dreg_and_evaluates():
  x = _digits()
  model = M.from_networks(NNXEncoder(nnx.Rngs(0)), NNXDecoder(nnx.Rngs(1)))
  params = model.init(_key(), x[:2])
  _check_trains(model, params, x)


def test_user_equinox_vae_through_plain_functions():
  eqx = pytest.importorskip("equinox")
  k1, k2 = jax.random.split(jax.random.key(3))
  enc = eqx.nn.MLP(64, 8, 32, 1, key=k1)
  dec = eqx.nn.MLP(4, 64, 32, 1, key=k2)
  (enc_p, enc_s), (dec_p, dec_s) = eqx.partition(enc, eqx.is_array), eqx.partition(dec,
                                                                                   eqx.is_array)

  def encode(p, x):
    out = jax.vmap(eqx.combine(p["enc"], enc_s))(x.reshape(x.shape[0], -1))
    return out[:, :4], out[:, 4:]

  def decode(p, z):
    return jax.vmap(eqx.combine(p["dec"], dec_s))(z).reshape(z.shape[0], 8, 8, 1)

  def sample_q(p, x, key):
    loc, log_scale = encode(p, x)
    return loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)

  def log_q(p, x, z):
    loc, log_scale = encode(p, x)
    return jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, jnp.exp(log_scale)), -1)

  model = M.from_functions(
      sample_q=sample_q, log_q=log_q,
      log_prior=lambda p, z: jnp.sum(jax.scipy.stats.norm.logpdf(z), -1),
      log_likelihood=lambda p, x, z: -jnp.sum(optax.sigmoid_binary_cross_entropy(
          decode(p, z), x), axis=(1, 2, 3)))
  _check_trains(model, {"enc": enc_p, "dec": dec_p}, _digits())


def test_from_networks_with_a_flow_prior_and_an_iaf_posterior():
  from dgmjax import flows, priors

  class Enc(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = nn.tanh(nn.Dense(16)(x.reshape(x.shape[0], -1)))
      return nn.Dense(3)(h), nn.Dense(3)(h), h

  dec = lambda p, z: z @ p["w"]
  model = M.from_networks(Enc(), dec, prior=priors.make_prior("realnvp", 3, flow_layers=2),
                          posterior_flow=flows.inverse_autoregressive_flow(3, 2, (8,),
                                                                           context_size=16))
  x = _binary((4, 8))
  params = model.init(_key(), x, decoder_params={"w": jnp.zeros((3, 8))})
  assert set(params) == {"base", "prior", "posterior_flow"}
  M.check_model(model, params, x)
  for est in ("iwae", "dreg"):
    g = jax.grad(lambda p: losses.make_loss(model, est, 3)(p, x, _key(), 0)[0])(params)
    assert float(jnp.max(jnp.abs(jax.tree.leaves(g["posterior_flow"])[0]))) >= 0
    assert any(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(g["prior"]))


def test_sample_sharded_wrapper_keeps_the_values():
  model = LIBRARY["vae_1layer"]
  params, x = model.init(_key()), _binary((4, 4, 4, 1))
  sharded = parallel.SampleSharded(model, parallel.make_mesh())
  np.testing.assert_array_equal(M.log_weights(sharded, params, x, _key(), 4),
                                M.log_weights(model, params, x, _key(), 4))
  assert M.has(sharded, "kl")


def test_estimator_snr_on_a_model():
  model, params = _lg_model(), _lg_params()
  x = jnp.asarray(np.random.default_rng(2).normal(size=(B, DX)), jnp.float32)
  snr = {e: diagnostics.estimator_snr(model, params, x, e, 16, _key(), 64) for e in ("iwae", "dreg")}
  assert set(snr["iwae"].groups) == {"alpha", "omega"}
  # Same draws, same decoder estimator: identical decoder SNR; the encoder estimators differ.
  np.testing.assert_allclose(snr["dreg"].groups["alpha"].rms_snr,
                             snr["iwae"].groups["alpha"].rms_snr, rtol=1e-5)
  assert abs(float(snr["dreg"].groups["omega"].rms_snr)
             - float(snr["iwae"].groups["omega"].rms_snr)) > 1e-2
  # It is gradient_snr of the training loss at the fixed batch.
  loss = losses.make_loss(model, "dreg", 16)
  ref = diagnostics.gradient_snr(lambda p, k: loss(p, x, k, 0)[0], params, _key(), 64)
  for a, b in zip(jax.tree.leaves(ref.snr), jax.tree.leaves(snr["dreg"].snr)):
    np.testing.assert_allclose(a, b, rtol=1e-4)


# ----------------------------------------------------------------------------- checks at the boundary


def test_transposed_log_weights_raise():
  lw = jnp.zeros((6, 4))
  M.check_log_weights(lw, 6, 4)
  with pytest.raises(ValueError, match=r"transposed"):
    M.check_log_weights(lw.T, 6, 4)
  with pytest.raises(ValueError, match=r"\[K, B\]"):
    M.check_log_weights(jnp.zeros((6,)), 6, 4)


def _broken(**overrides):
  base = _lg_model()
  fns = dict(sample_q=base.sample_q, log_q=base.log_q, log_prior=base.log_prior,
             log_likelihood=base.log_likelihood)
  fns.update(overrides)
  return M.from_functions(**fns)


@pytest.mark.parametrize("name,fn", [
    ("log_likelihood", lambda p, x, z: jnp.zeros((x.shape[0], DX))),       # forgot to sum
    ("log_prior", lambda p, z: jnp.sum(z)),                                 # summed the batch too
    ("log_q", lambda p, x, z: jnp.zeros((x.shape[0], 1))),
])
def test_wrong_shapes_raise_naming_the_function(name, fn):
  model, params = _broken(**{name: fn}), _lg_params()
  x = jnp.zeros((B, DX))
  with pytest.raises(ValueError, match=name):
    M.check_model(model, params, x)
  with pytest.raises(ValueError, match=name):
    losses.make_loss(model, "iwae", K)(params, x, _key(), 0)
  with pytest.raises(ValueError, match=name):
    evaluation.log_likelihood(model, params, np.zeros((B, DX), np.float32), _key(), num_samples=10)


def test_check_model_rejects_missing_functions_and_unbatched_samples():
  with pytest.raises(TypeError, match="sample_q"):
    M.check_model(object(), {}, jnp.zeros((2, 3)))
  model = _broken(sample_q=lambda p, x, k: jnp.zeros((DZ,)))
  with pytest.raises(ValueError, match="sample_q"):
    M.check_model(model, _lg_params(), jnp.zeros((B, DX)))
  with pytest.raises(TypeError, match="unknown optional"):
    M.from_functions(sample_q=len, log_q=len, log_prior=len, log_likelihood=len, decoder=len)
  with pytest.raises(ValueError, match="num_samples"):
    M.log_weights(_lg_model(), _lg_params(), jnp.zeros((B, DX)), _key(), 0)


def test_make_loss_rejects_unknown_settings():
  model = _lg_model()
  with pytest.raises(ValueError, match="estimator must be one of"):
    losses.make_loss(model, "dreg2", 4)
  with pytest.raises(ValueError, match="baseline"):
    losses.make_loss(model, "iwae", 4, baseline="batch_mean")
  with pytest.raises(TypeError, match="kl"):
    losses.make_loss(model, "elbo", 4, kl="analytic")  # the model has no analytic KL
  with pytest.raises(TypeError, match="contract"):
    losses.make_loss(object(), "iwae", 4)


def test_reinforce_baselines_keep_the_value_and_nvil_trains_its_baseline():
  model = LIBRARY["categorical"]
  params = model.init(_key())
  x = _binary((6, 4, 4, 1))
  plain = losses.make_loss(model, "reinforce", 1, bound="elbo", kl="analytic")
  loo = losses.make_loss(model, "reinforce", 1, bound="elbo", kl="analytic",
                           baseline="batch_mean")
  np.testing.assert_allclose(plain(params, x, _key(), 0)[0], loo(params, x, _key(), 0)[0],
                             rtol=1e-6)
  # NVIL: an input-dependent baseline with its own parameters, regressed onto the signal.
  nvil = losses.make_loss(model, "reinforce", 1, bound="elbo", kl="analytic",
                            baseline=lambda p, xx: jnp.full((xx.shape[0],), p["baseline"]["b"]))
  p2 = {**params, "baseline": {"b": jnp.asarray(0.0)}}  # a new top-level entry of the pytree
  (total, metrics), g = jax.value_and_grad(lambda p: nvil(p, x, _key(), 0), has_aux=True)(p2)
  assert float(metrics["baseline_loss"]) > 0
  np.testing.assert_allclose(float(total), float(-metrics["bound"] + metrics["baseline_loss"]),
                             rtol=1e-6)
  # The signal is very negative: gradient descent on the loss moves the baseline down to it.
  assert float(g["baseline"]["b"]) > 0


# ----------------------------------------------------------------------------- restore


def test_restore_returns_the_params_of_a_run(tmp_path):
  model = M.from_networks(ConvEncoder(), ConvDecoder())
  x = _digits()
  params = model.init(_key(), x[:2])
  state, _ = training.fit(losses.make_loss(model, "dreg", 3), params, x, optimizer=optax.adam(1e-3),
                          num_steps=4, batch_size=16, seed=0, workdir=str(tmp_path),
                          checkpoint_every=2, log_every=2)
  restored, config, step = training.restore(str(tmp_path), like=params)
  assert step == 4 and config is None
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, b)
  r2, _, s2 = training.restore(str(tmp_path), step=2)
  assert s2 == 2 and jax.tree.structure(r2) == jax.tree.structure(params)
  with pytest.raises(ValueError, match="saved steps"):
    training.restore(str(tmp_path), step=3)
  wrong = M.from_networks(ConvEncoder(latent=5), ConvDecoder()).init(_key(), x[:2])
  with pytest.raises(ValueError, match="shape"):
    training.restore(str(tmp_path), like=wrong)
  with pytest.raises(FileNotFoundError):
    training.restore(str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------- what a model returns


def _nan_at_row(row):
  """A log_likelihood that is NaN for the image equal to X_NAN[row] (by content, not position)."""
  base = _lg_model()

  def ll(p, x, z):
    hit = jnp.all(x == jnp.asarray(X_NAN[row])[None], axis=-1)
    return jnp.where(hit, jnp.nan, base.log_likelihood(p, x, z))
  return ll


X_NAN = np.random.default_rng(5).normal(size=(4, DX)).astype(np.float32)


@pytest.mark.parametrize("dtype,why", [(jnp.int32, "truncated"), (jnp.complex64, "imaginary"),
                                       (jnp.bool_, "no log-density")])
def test_non_floating_log_densities_are_refused_at_trace_time_naming_the_function(dtype, why):
  base = _lg_model()
  model = _broken(log_likelihood=lambda p, x, z: base.log_likelihood(p, x, z).astype(dtype))
  params, x = _lg_params(), jnp.asarray(X_NAN)
  with pytest.raises(TypeError, match=rf"log_likelihood must return a floating.*{why}"):
    M.check_model(model, params, x)
  with pytest.raises(TypeError, match="log_likelihood"):  # inside jit: at trace time
    jax.jit(lambda p, xx: M.log_weights(model, p, xx, _key(), 3))(params, x)
  with pytest.raises(TypeError, match="log_likelihood"):
    losses.make_loss(model, "dreg", 3)(params, x, _key(), 0)
  bad_prior = _broken(log_prior=lambda p, z: jnp.round(base.log_prior(p, z)).astype(jnp.int32))
  with pytest.raises(TypeError, match="log_prior"):
    losses.make_loss(bad_prior, "iwae", 3)(params, x, _key(), 0)


def test_check_model_names_the_function_and_the_row_of_a_nan():
  model = _broken(log_likelihood=_nan_at_row(2))
  with pytest.raises(ValueError, match=r"log_likelihood returns a non-finite value \(nan\) for "
                                       r"1 of 4 image\(s\) \(rows \[2\]"):
    M.check_model(model, _lg_params(), jnp.asarray(X_NAN))
  base = _lg_model()
  nan_z = _broken(sample_q=lambda p, x, k: base.sample_q(p, x, k).at[1].set(jnp.inf))
  with pytest.raises(ValueError, match=r"sample_q returns a non-finite value.*rows \[1\]"):
    M.check_model(nan_z, _lg_params(), jnp.asarray(X_NAN))


def test_under_jit_a_nan_from_the_model_stays_nan_for_its_image_only():
  model = _broken(log_likelihood=_nan_at_row(2))
  lw = jax.jit(lambda p, x: M.log_weights(model, p, x, _key(), 5))(_lg_params(), X_NAN)
  bound = np.asarray(objectives.iwae_bound(lw))
  assert np.isnan(bound[2]) and np.all(np.isfinite(np.delete(bound, 2)))


def test_check_model_catches_a_sampler_that_ignores_its_key():
  base = _lg_model()
  model = _broken(sample_q=lambda p, x, k: base.sample_q(p, x, jax.random.key(0)))
  with pytest.raises(ValueError, match="sample_q returns the same z for 2 different keys: it "
                                       "ignores its key"):
    M.check_model(model, _lg_params(), jnp.asarray(X_NAN))


@pytest.mark.parametrize("name", ["log_q", "log_prior", "log_likelihood"])
def test_check_model_catches_a_function_that_ignores_z(name):
  base = _lg_model()
  fixed = lambda p, x: base.sample_q(p, x, jax.random.key(7))  # a draw of its own, not z
  fns = {"log_q": lambda p, x, z: base.log_q(p, x, fixed(p, x)),
         "log_prior": lambda p, z: base.log_prior(p, jnp.zeros_like(z)),
         "log_likelihood": lambda p, x, z: base.log_likelihood(p, x, jnp.zeros_like(z))}
  msg = rf"{name} returns the same values at two different draws of z.*ignores z"
  if name == "log_q":  # a continuous q whose density ignores z: always a bug
    with pytest.raises(ValueError, match=msg):
      M.check_model(_broken(**{name: fns[name]}), _lg_params(), jnp.asarray(X_NAN))
  else:  # legitimate at some params (a flat prior, a zero-initialised decoder): a warning
    with pytest.warns(RuntimeWarning, match=msg):
      M.check_model(_broken(**{name: fns[name]}), _lg_params(), jnp.asarray(X_NAN))


def test_log_q_that_ignores_z_biases_the_log_likelihood_that_check_model_now_refuses():
  # The case that motivated the check: the estimate moves by about 2 nats, silently.
  base = _lg_model()
  model = _broken(log_q=lambda p, x, z: base.log_q(p, x, base.sample_q(p, x, jax.random.key(1))))
  x = X_NAN[:2]
  good = evaluation.log_likelihood(base, _lg_params(), x, _key(), num_samples=200)
  bad = evaluation.log_likelihood(model, _lg_params(), x, _key(), num_samples=200)
  assert np.max(np.abs(good - bad)) > 0.3
  with pytest.raises(ValueError, match="log_q returns the same values"):
    M.check_model(model, _lg_params(), jnp.asarray(x))


def test_check_model_passes_discrete_latents_with_a_uniform_prior():
  from dgmjax.models.categorical_vae import CategoricalVAE
  model = CategoricalVAE(image_shape=(2, 2, 1), num_vars=3, num_classes=3, hidden_dims=(8,))
  x = (np.random.default_rng(0).uniform(size=(4, 2, 2, 1)) < 0.5).astype(np.float32)
  out = M.check_model(model, model.init(jax.random.key(0)), x)  # log p(z) is constant in z
  assert out["z"] == (4, 3, 3)


def test_from_functions_uses_the_users_fused_sampler():
  base = _lg_model()
  calls = []

  def fused(p, x, key):
    calls.append(1)
    z = base.sample_q(p, x, key)
    return z, base.log_q(p, x, z) + 1.0   # off by one nat: the fused pair is what is used

  model = M.from_functions(sample_q=base.sample_q, log_q=base.log_q, log_prior=base.log_prior,
                           log_likelihood=base.log_likelihood, sample_and_log_q=fused)
  x = jnp.asarray(X_NAN[:2])
  z, log_q = model.sample_and_log_q(_lg_params(), x, _key())
  np.testing.assert_allclose(log_q, base.log_q(_lg_params(), x, z) + 1.0, rtol=1e-6)
  lw_fused = M.log_weights(model, _lg_params(), x, _key(), 3)
  lw_plain = M.log_weights(base, _lg_params(), x, _key(), 3)
  assert calls and np.allclose(lw_fused, lw_plain - 1.0, atol=1e-5)


def test_from_functions_declares_the_kind_of_latent():
  base = _lg_model()
  fns = dict(sample_q=base.sample_q, log_q=base.log_q, log_prior=base.log_prior,
             log_likelihood=base.log_likelihood)
  declared = M.from_functions(**fns, latent="discrete")
  with pytest.raises(ValueError, match=r"estimator 'iwae' .*latent is discrete.*latent='discrete'"):
    losses.make_loss(declared, "iwae", 2)(_lg_params(), jnp.asarray(X_NAN[:2]), _key(), 0)
  stopped = M.from_functions(**fns, reparametrized=False)
  with pytest.raises(ValueError, match="not reparametrized"):
    losses.make_loss(stopped, "dreg", 2)(_lg_params(), jnp.asarray(X_NAN[:2]), _key(), 0)
  with pytest.raises(ValueError, match="latent must be None, 'continuous' or 'discrete'"):
    M.from_functions(**fns, latent="categorical")
  with pytest.raises(ValueError, match="reparametrized must be None or a bool"):
    M.from_functions(**fns, reparametrized="no")
