"""Tests of dgmjax.losses.make_loss: a name or an estimator object, one loss.

The estimators' gradients have their oracle in test_model_contract.py (closed forms on the
linear-Gaussian model); here: the name and the object give the identical loss and gradient, the
registry is the one list of names, settings are refused where they do not apply (with the
messages configs rely on), and an estimator defined outside the library trains through the same
entry point.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import estimators, losses, objectives
from dgmjax import models as M
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("make_loss_num_groups_for_iwae",
     lambda: losses.make_loss(bi.bernoulli_vae()[0], "iwae", 4, num_groups=2),
     ValueError, r"num_groups applies to 'miwae', 'piwae', 'piwae_dreg' and 'dreg' only"),
    ("make_loss_beta_for_iwae",
     lambda: losses.make_loss(bi.bernoulli_vae()[0], "iwae", 4, beta=0.5),
     ValueError, r"beta applies to estimator 'ciwae' only"),
    ("make_loss_bound_for_dreg",
     lambda: losses.make_loss(bi.bernoulli_vae()[0], "dreg", 4, bound="elbo"),
     ValueError, r"bound= applies to estimators 'stl', 'reinforce' and 'kl_controlled' only"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


#: The registry as this module was imported (a docs page run in the same process registers more).
REGISTERED = tuple(estimators.ESTIMATORS)

DX, DZ, B, K = 3, 2, 4, 4


def _enc(p, x):
  loc = x @ p["phi"]["a"].T
  loc = loc + jnp.broadcast_to(p["phi"]["c"], loc.shape)
  return loc, jnp.broadcast_to(p["phi"]["log_s"], loc.shape)


def _sample_q(p, x, key):
  loc, log_s = _enc(p, x)
  return loc + jnp.exp(log_s) * jax.random.normal(key, loc.shape)


def _log_q(p, x, z):
  loc, log_s = _enc(p, x)
  u = (z - loc) / jnp.exp(log_s)
  return jnp.sum(-0.5 * u ** 2 - log_s - 0.5 * math.log(2 * math.pi), -1)


def _log_prior(p, z):
  del p
  return jnp.sum(-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi), -1)


def _log_likelihood(p, x, z):
  mean = z @ p["theta"]["w"].T
  r = x - mean - jnp.broadcast_to(p["theta"]["b"], mean.shape)
  return jnp.sum(-0.5 * r ** 2 - 0.5 * math.log(2 * math.pi), -1)


def _kl(p, x):
  """``KL(q(z|x) || N(0, I))`` per latent dimension, ``[B, DZ]``."""
  loc, log_s = _enc(p, x)
  return 0.5 * (jnp.exp(2 * log_s) + loc ** 2 - 1.0) - log_s


MODEL = M.from_functions(sample_q=_sample_q, log_q=_log_q, log_prior=_log_prior,
                         log_likelihood=_log_likelihood, kl=_kl)


def _params(seed=0):
  r = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(r.normal(size=s) * 0.5, jnp.float32)
  return {"theta": {"w": f(DX, DZ), "b": f(DX)},
          "phi": {"a": f(DZ, DX), "c": f(DZ), "log_s": f(DZ) - 0.5},
          "baseline": {"b": jnp.asarray(-3.0, jnp.float32)}}


X = jnp.asarray(np.random.default_rng(1).normal(size=(B, DX)), jnp.float32)


def _nvil(p, x):
  return jnp.full((x.shape[0],), p["baseline"]["b"])


#: Every registered estimator with settings by name, and the object they name.
CASES = [
    ("elbo", {}, estimators.ELBO()),
    ("elbo", {"kl": "analytic"}, estimators.ELBO(kl="analytic")),
    ("iwae", {}, estimators.IWAE()),
    ("miwae", {"num_groups": 2}, estimators.MIWAE(2)),
    ("ciwae", {"beta": 0.3}, estimators.CIWAE(0.3)),
    ("renyi", {"alpha": 0.5}, estimators.Renyi(0.5)),
    ("renyi", {"alpha": -np.inf}, estimators.Renyi(-np.inf)),
    ("piwae", {"num_groups": 2}, estimators.PIWAE(2)),
    ("piwae_dreg", {"num_groups": 2}, estimators.PIWAEDReG(2)),
    ("dreg", {}, estimators.DReG()),
    ("dreg", {"num_groups": 2}, estimators.DReG(num_groups=2)),
    ("stl", {"bound": "elbo"}, estimators.STL(bound="elbo")),
    ("rws", {}, estimators.RWS()),
    ("rws_dreg", {}, estimators.RWSDReG()),
    ("reinforce", {}, estimators.Reinforce()),
    ("reinforce", {"baseline": "batch_mean"}, estimators.Reinforce(baseline="batch_mean")),
    ("reinforce", {"bound": "elbo", "kl": "analytic", "baseline": _nvil},
     estimators.Reinforce("elbo", _nvil, "analytic")),
    ("vimco", {}, estimators.VIMCO()),
    ("renyi_dreg", {"alpha": 0.5}, estimators.RenyiDReG(0.5)),
    ("kl_controlled", {"bound": "iwae"}, losses.KLControlled("iwae")),
    ("kl_controlled", {"bound": "elbo"}, losses.KLControlled("elbo")),
]


def test_every_registered_estimator_has_a_case():
  assert {name for name, _, _ in CASES} == set(REGISTERED)


@pytest.mark.parametrize("name,settings,est", CASES,
                         ids=[f"{n}-{'-'.join(getattr(v, '__name__', str(v)) for v in s.values())}"
                              for n, s, _ in CASES])
def test_a_name_and_its_object_give_the_identical_loss_and_gradient(name, settings, est):
  assert estimators.from_name(name, **settings) == est
  params = _params()

  @jax.jit
  def both(p, key):
    f = lambda loss: jax.value_and_grad(loss, has_aux=True)(p, X, key, 0)
    return (f(losses.make_loss(MODEL, name, K, **settings)),
            f(losses.make_loss(MODEL, est, K)))

  with jax.debug_key_reuse(False):  # the same samples for both
    by_name, by_object = both(params, jax.random.key(3))
  jax.tree.map(np.testing.assert_array_equal, by_name, by_object)
  (loss, metrics), grads = by_object
  assert np.isfinite(float(loss))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  np.testing.assert_allclose(float(loss), float(-metrics["bound"] + metrics.get(
      "baseline_loss", 0.0)), rtol=1e-6)


def test_bound_estimators_are_read_off_the_registry():
  assert losses.BOUND_ESTIMATORS == ("elbo", "iwae", "miwae", "ciwae", "renyi")
  model_losses = {"kl_controlled"}  # losses of their own over the model, no views
  assert set(losses.BOUND_ESTIMATORS) | set(losses.SURROGATE_ESTIMATORS) | model_losses == set(
      REGISTERED)
  assert not set(losses.BOUND_ESTIMATORS) & set(losses.SURROGATE_ESTIMATORS)
  for name in losses.BOUND_ESTIMATORS:
    assert estimators.ESTIMATORS[name].views == ("log_w",)
  for name in model_losses:
    assert issubclass(estimators.ESTIMATORS[name], losses.ModelLoss)
    assert estimators.ESTIMATORS[name].views == ()


def test_bound_estimator_loss_is_the_negative_bound_of_the_plain_log_weights():
  params = _params()
  with jax.debug_key_reuse(False):  # same samples for the loss and its oracle
    key = jax.random.key(5)
    lw = M.log_weights(MODEL, params, X, key, K)
    loss, metrics = losses.make_loss(MODEL, estimators.MIWAE(2), K)(params, X, key, 0)
  np.testing.assert_allclose(loss, -jnp.mean(objectives.miwae_bound(lw, 2)), rtol=1e-6)
  np.testing.assert_allclose(metrics["elbo"], jnp.mean(objectives.elbo(lw)), rtol=1e-6)


def test_settings_with_an_object_are_refused():
  with pytest.raises(ValueError, match="DReG carries its own settings: make_loss takes "
                                       "num_groups with an estimator name only"):
    losses.make_loss(MODEL, estimators.DReG(2), K, num_groups=2)
  with pytest.raises(ValueError, match="carries its own settings"):
    losses.make_loss(MODEL, estimators.STL(), K, bound="iwae")
  losses.make_loss(MODEL, estimators.STL(), K, bound=None)  # None is no setting


@pytest.mark.parametrize("call,error,match", [
    (lambda: losses.make_loss(MODEL, "dreg2", K), ValueError, "estimator must be one of"),
    (lambda: losses.make_loss(MODEL, "iwae", K, num_groups=2), ValueError,
     r"num_groups applies to 'miwae', 'piwae', 'piwae_dreg' and 'dreg' only, got estimator "
     r"'iwae'"),
    (lambda: losses.make_loss(MODEL, "iwae", K, beta=0.5), ValueError,
     r"beta applies to estimator 'ciwae' only, got estimator 'iwae'"),
    (lambda: losses.make_loss(MODEL, "dreg", K, alpha=0.5), ValueError,
     r"alpha applies to 'renyi' and 'renyi_dreg' only"),
    (lambda: losses.make_loss(MODEL, "dreg", K, bound="elbo"), ValueError,
     r"bound= applies to estimators 'stl', 'reinforce' and 'kl_controlled' only"),
    (lambda: losses.make_loss(MODEL, "dreg", K, bound="vae"), ValueError,
     r"bound must be 'iwae' or 'elbo', got 'vae'"),
    (lambda: losses.make_loss(MODEL, "reinforce", K, bound="vae"), ValueError,
     r"bound must be 'iwae' or 'elbo', got 'vae'"),
    (lambda: losses.make_loss(MODEL, "iwae", K, baseline="batch_mean"), ValueError,
     r"baseline applies to estimator 'reinforce' only"),
    (lambda: losses.make_loss(MODEL, "reinforce", K, baseline="mean"), ValueError,
     r"baseline must be None, one of \('batch_mean',\)"),
    (lambda: losses.make_loss(MODEL, "vimco", K, kl="analytic"), ValueError,
     r"kl='analytic' applies to the ELBO \('elbo', 'reinforce'\), not 'vimco'"),
    (lambda: losses.make_loss(MODEL, "elbo", K, kl="exact"), ValueError,
     r"kl must be None or 'analytic', got 'exact'"),
    (lambda: losses.make_loss(MODEL, "reinforce", K, kl="analytic"), ValueError,
     r"kl='analytic' with 'reinforce' needs bound='elbo'"),
    (lambda: losses.make_loss(MODEL, "piwae", K), ValueError,
     r"estimator 'piwae' needs num_groups"),
    (lambda: losses.make_loss(MODEL, "ciwae", K), ValueError, r"estimator 'ciwae' needs beta"),
    (lambda: losses.make_loss(MODEL, "renyi", K), ValueError, r"estimator 'renyi' needs alpha"),
    (lambda: losses.make_loss(MODEL, "miwae", 8, num_groups=3), ValueError,
     r"num_groups must be a positive int dividing num_samples=8, got 3"),
    (lambda: losses.make_loss(MODEL, estimators.DReG(3), 8), ValueError,
     r"num_groups must be a positive int dividing num_samples=8, got 3"),
    (lambda: losses.make_loss(MODEL, "ciwae", K, beta=1.5), ValueError,
     r"beta must be a finite number >= 0 and <= 1, got 1.5"),
    (lambda: losses.make_loss(MODEL, "renyi", K, alpha=np.nan), ValueError,
     r"alpha must be a real number, got nan"),
    (lambda: losses.make_loss(MODEL, "renyi_dreg", K, alpha=-np.inf), ValueError,
     r"alpha must be a real number \(finite\), got -inf"),
    (lambda: losses.make_loss(MODEL, "vimco", 1), ValueError,
     r"estimator 'vimco' needs num_samples >= 2, got 1"),
    (lambda: losses.make_loss(MODEL, "iwae", K, objective="iwae"), TypeError,
     r"'objective' is a setting of no estimator"),
    (lambda: losses.make_loss(object(), "iwae", K), TypeError, "contract"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_bad_settings_raise_naming_the_setting(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_the_bound_every_estimator_names_is_accepted_by_name():
  assert losses.make_loss(MODEL, "dreg", K, bound="iwae", kl=None) is not None


def test_analytic_kl_needs_the_models_kl():
  plain = M.from_functions(sample_q=_sample_q, log_q=_log_q, log_prior=_log_prior,
                           log_likelihood=_log_likelihood)
  with pytest.raises(TypeError, match="kl"):
    losses.make_loss(plain, estimators.ELBO(kl="analytic"), K)


@dataclasses.dataclass(frozen=True)
class _HalfDReG(estimators.Estimator):
  """An estimator the library does not register: half IWAE's encoder gradient, half DReG's."""
  name = "half_dreg_test"
  views = ("log_w_theta", "log_w_path", "log_q_score")

  def surrogate(self, terms, axis=0):
    iwae = estimators.IWAE().surrogate(terms, axis)
    dreg = estimators.DReG().surrogate(terms, axis)
    return 0.5 * (iwae + dreg)


def test_an_unregistered_estimator_object_trains_through_make_loss():
  params = _params()

  def grad(est):
    loss = losses.make_loss(MODEL, est, K)
    return jax.grad(lambda p: loss(p, X, jax.random.key(4), 0)[0])(params)

  g_half, g_iwae, g_dreg = grad(_HalfDReG()), grad(estimators.IWAE()), grad(estimators.DReG())
  jax.tree.map(lambda h, a, b: np.testing.assert_allclose(h, 0.5 * (a + b), rtol=1e-5, atol=1e-6),
               g_half, g_iwae, g_dreg)
  with pytest.raises(ValueError, match="estimator must be one of"):
    losses.make_loss(MODEL, "half_dreg_test", K)


# ----------------------------------------------------------------------------- the kind of latent


@dataclasses.dataclass(frozen=True)
class _BernoulliLatent(M.LatentModel):
  """``DZ`` Bernoulli latents from a linear encoder, a Gaussian decoder. ``z_dtype`` int32: the
  latent is discrete by its dtype; float32 with ``latent='discrete'``: by its declaration."""
  z_dtype: Any = jnp.int32
  latent: str | None = None

  def _logits(self, p, x):
    return x @ p["phi"]["a"].T

  def sample_q(self, params, x, key):
    from dgmjax import distributions  # pylint: disable=import-outside-toplevel
    return distributions.sample_bernoulli(key, self._logits(params, x), self.z_dtype)

  def log_q(self, params, x, z):
    logits = self._logits(params, x)
    return jnp.sum(z * logits - jnp.logaddexp(0.0, logits), -1)

  def log_prior(self, params, z):
    return jnp.full(z.shape[:1], -DZ * math.log(2.0), jnp.float32)

  def log_likelihood(self, params, x, z):
    return _log_likelihood(params, x, z.astype(jnp.float32))


#: The pathwise and the score-function estimators of the registry, read off their classes.
PATHWISE = tuple(n for n in REGISTERED if estimators.ESTIMATORS[n].pathwise)
SCORE = tuple(n for n in REGISTERED if not estimators.ESTIMATORS[n].pathwise)
_FIT = "'rws', 'reinforce' and 'vimco'"


def _settings(name):
  return next(s for n, s, _ in CASES if n == name and "kl" not in s)


def _categorical():
  from dgmjax.models import categorical_vae  # pylint: disable=import-outside-toplevel
  model = categorical_vae.CategoricalVAE(image_shape=(2, 3, 1), num_vars=2, num_classes=3,
                                         hidden_dims=(8,))
  x = jnp.asarray(np.random.default_rng(2).integers(0, 2, (B, 2, 3, 1)), jnp.float32)
  return model, model.init(jax.random.key(0)), x


def test_the_score_function_estimators_are_the_ones_that_are_not_pathwise():
  assert set(SCORE) == {"rws", "reinforce", "vimco"}
  assert set(PATHWISE) == set(REGISTERED) - set(SCORE)


@pytest.mark.parametrize("model", [_BernoulliLatent(), _BernoulliLatent(jnp.float32, "discrete")],
                         ids=["int_z", "declared"])
def test_a_bernoulli_latent_is_refused_by_the_pathwise_estimators(model):
  params = _params()
  for name in PATHWISE:
    if name == "kl_controlled":  # needs the model's analytic KL: the categorical case below
      continue
    loss = losses.make_loss(model, name, K, **_settings(name))
    with pytest.raises(ValueError, match=f"estimator '{name}' .* latent is discrete .*{_FIT}"):
      loss(params, X, jax.random.key(0), 0)
    with pytest.raises(ValueError, match="latent is discrete"):  # at trace time under jit
      jax.jit(loss)(params, X, jax.random.key(0), 0)


@pytest.mark.parametrize("model", [_BernoulliLatent(), _BernoulliLatent(jnp.float32, "discrete")],
                         ids=["int_z", "declared"])
def test_the_score_function_estimators_train_a_bernoulli_latent(model):
  params = _params()
  for name in SCORE:
    loss = losses.make_loss(model, name, K, **_settings(name))
    (value, metrics), g = jax.value_and_grad(loss, has_aux=True)(params, X, jax.random.key(0), 0)
    lw = M.log_weights(model, params, X, jax.random.key(0), K)
    np.testing.assert_allclose(float(metrics["bound"]),
                               float(jnp.mean(objectives.iwae_bound(lw))), rtol=1e-5)
    assert np.isfinite(float(value))
    assert float(jnp.max(jnp.abs(g["phi"]["a"]))) > 0, name   # the score term reaches q


def test_a_categorical_latent_is_refused_by_pathwise_estimators_and_trained_by_the_others():
  model, params, x = _categorical()
  for name, settings in (("elbo", {"kl": "analytic"}), ("iwae", {}), ("dreg", {}),
                         ("stl", {"bound": "elbo"})):
    with pytest.raises(ValueError, match=rf"CategoricalVAE's latent is discrete \(z of dtype "
                                         rf"float32; latent='discrete'\).*{_FIT}"):
      losses.make_loss(model, name, 2, **settings)(params, x, jax.random.key(0), 0)
  for name, settings in (("reinforce", {"bound": "elbo", "kl": "analytic"}), ("vimco", {}),
                         ("rws", {})):
    g = jax.grad(lambda p, n=name, s=settings: losses.make_loss(model, n, 2, **s)(
        p, x, jax.random.key(0), 0)[0])(params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g)), name
  with pytest.raises(ValueError, match="'kl_controlled' .* latent is discrete"):  # it has a KL
    losses.make_loss(model, losses.KLControlled("elbo"), 1)(params, x, jax.random.key(0), 0)


def test_the_relaxations_of_a_categorical_latent_keep_the_pathwise_estimators():
  model, params, x = _categorical()
  for relaxed, name, settings in ((model.relaxed(0.5), "iwae", {}),
                                  (model.relaxed(0.5), "dreg", {}),
                                  (model.relaxed(0.5, hard=True), "elbo", {"kl": "analytic"})):
    loss = jax.jit(losses.make_loss(relaxed, name, 2, **settings))
    g = jax.grad(lambda p, f=loss: f(p, x, jax.random.key(0), 0)[0])(params)
    enc = g["params"]["encoder"]
    assert any(float(jnp.max(jnp.abs(a))) > 0 for a in jax.tree.leaves(enc)), name


def test_a_sampler_without_a_path_is_refused_by_the_pathwise_estimators():
  @dataclasses.dataclass(frozen=True)
  class Stopped(M.LatentModel):
    reparametrized = False
    sample_q = staticmethod(lambda p, x, key: jax.lax.stop_gradient(_sample_q(p, x, key)))
    log_q = staticmethod(_log_q)
    log_prior = staticmethod(_log_prior)
    log_likelihood = staticmethod(_log_likelihood)

  params = _params()
  with pytest.raises(ValueError, match=r"latent is not reparametrized .*reparametrized=False"):
    losses.make_loss(Stopped(), "iwae", K)(params, X, jax.random.key(0), 0)
  assert np.isfinite(float(losses.make_loss(Stopped(), "vimco", K)(params, X,
                                                                    jax.random.key(0), 0)[0]))


# ----------------------------------------------------------------------------- Relaxed


def _relaxed_categorical():
  from dgmjax.models import categorical_vae  # pylint: disable=import-outside-toplevel
  model = categorical_vae.CategoricalVAE((2, 3, 1), num_vars=2, num_classes=3, hidden_dims=(5,))
  x = (jax.random.uniform(jax.random.key(6), (4, 2, 3, 1)) < 0.5).astype(jnp.float32)
  return model, model.init(jax.random.key(7)), x


@pytest.mark.parametrize("hard,kl", [(False, "analytic"), (True, "analytic"), (False, None)])
def test_relaxed_is_the_elbo_of_the_relaxation_at_the_temperature_of_the_step(hard, kl):
  model, params, x = _relaxed_categorical()
  schedule = lambda step: jnp.maximum(0.5, 1.0 - 0.1 * step)
  loss = losses.make_loss(model, losses.Relaxed(schedule, hard=hard, kl=kl), 2)
  for step in (0, 3, 9):
    tau = schedule(step)
    want = losses.make_loss(model.relaxed(tau, hard=hard), estimators.ELBO(kl=kl), 2)
    value_and_grad = lambda f, s: jax.value_and_grad(f, has_aux=True)(params, x,
                                                                      jax.random.key(8), s)
    (got, metrics), g = value_and_grad(loss, jnp.int32(step))
    (ref, ref_metrics), g_ref = value_and_grad(want, jnp.int32(step))
    assert float(got) == float(ref) and float(metrics.pop("temperature")) == float(tau)
    jax.tree.map(np.testing.assert_array_equal, (metrics, g), (ref_metrics, g_ref))
  fixed = losses.make_loss(model, losses.Relaxed(0.7, hard=hard, kl=kl), 2)
  assert float(fixed(params, x, jax.random.key(8), 5)[1]["temperature"]) == np.float32(0.7)


def test_relaxed_train_step_traces_once():
  import chex  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from dgmjax import training  # pylint: disable=import-outside-toplevel
  model, params, x = _relaxed_categorical()
  loss = losses.make_loss(model, losses.Relaxed(lambda s: 1.0 / (1.0 + s)), 1)
  step = training.make_train_step(chex.assert_max_traces(loss, n=1), optax.adam(1e-3), seed=0)
  state = training.init_state(params, optax.adam(1e-3))
  taus = []
  for _ in range(3):
    state, metrics = step(state, x)
    taus.append(float(metrics["temperature"]))
  np.testing.assert_allclose(taus, [1.0, 0.5, 1.0 / 3.0], rtol=1e-6)


@pytest.mark.parametrize("settings,match", [
    (dict(temperature=0.0), "temperature must be a function step -> temperature or a finite "
                            "number > 0, got 0.0"),
    (dict(temperature=-1.0), "temperature"),
    (dict(temperature=np.nan), "temperature"),
    (dict(temperature=None), "temperature"),
    (dict(temperature="1.0"), "temperature"),
    (dict(temperature=True), "temperature"),
    (dict(temperature=np.ones(2)), "temperature"),
    (dict(temperature=1.0, hard="yes"), "hard must be a bool"),
    (dict(temperature=1.0, kl="exact"), "kl must be None or 'analytic'"),
    (dict(temperature=1.0, hard=True, kl=None), "hard=True .* needs kl='analytic'"),
])
def test_relaxed_checks_its_settings_when_built(settings, match):
  with pytest.raises(ValueError, match=match):
    losses.Relaxed(**settings)


def test_relaxed_needs_a_model_with_a_relaxation_and_is_not_registered():
  with pytest.raises(TypeError, match="relaxed"):
    losses.make_loss(MODEL, losses.Relaxed(1.0), K)
  assert losses.Relaxed not in estimators.ESTIMATORS.values()
  with pytest.raises(TypeError, match="no surrogate"):
    losses.Relaxed(1.0).surrogate(None)
