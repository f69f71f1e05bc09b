"""Tests of dgmjax.estimators: values equal bounds, gradient identities, unbiasedness on the
linear-Gaussian oracle, STL's zero variance at the exact posterior and its bias for K > 1.

Surrogates are built on stop_gradient, so they are checked by value and by known-gradient
identities (never by finite differences, which cannot see stop_gradient).
"""

import dataclasses
import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax import diagnostics, distributions, estimators, models, objectives
from dgmjax.models import linear_gaussian as lg
from dgmjax.nn import NVILBaseline
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("reinforce_baseline_wrong_shape",
     lambda: estimators.reinforce_surrogate(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                                            baseline=jnp.zeros(4)),
     ValueError, r"baseline must be a scalar or one value per data point.*\(4,\)"),
    ("estimator_snr_grey_levels",
     lambda: diagnostics.estimator_snr(*bi.bernoulli_vae(), bi.grey_images(), "iwae", 2,
                                       bi.key(), 4),
     ValueError, r"x must be binary"),
    ("gradient_snr_group_naming_no_parameters",
     lambda: diagnostics.gradient_snr(lambda p, k: jnp.sum(p["w"]), {"w": jnp.ones(2)}, bi.key(),
                                      4, groups={"a": "nope"}),
     ValueError, r"groups: 'nope' names no parameters.*keys: \['w'\]"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


# ----------------------------------------------------------------------------- gradient SNR


def _snr_oracle(mean, var):
  """Mean and median of |mean| / std over the entries with nonzero variance (float64 NumPy)."""
  mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
  live = var > 0
  r = np.abs(mean[live]) / np.sqrt(var[live])
  return r.mean(), np.median(r), np.sqrt(np.mean(np.square(mean[live]) / var[live]))


def test_group_snr_leaves_out_a_zero_variance_entry_with_nonzero_mean_instead_of_inf():
  # A deterministic gradient (variance exactly 0, mean 2): its SNR is inf; the group mean is not.
  mean = {"w": jnp.array([0.5, -1.0, 2.0, 0.3])}
  var = {"w": jnp.array([1.0, 4.0, 0.0, 0.09])}
  r = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 100))
  g = r.groups["w"]
  assert np.isinf(np.asarray(r.snr["w"])[2])          # per parameter: documented inf
  want_mean, want_median, want_rms = _snr_oracle(mean["w"], var["w"])
  np.testing.assert_allclose(g.mean_snr, want_mean, rtol=1e-6)
  np.testing.assert_allclose(g.median_snr, want_median, rtol=1e-6)
  np.testing.assert_allclose(g.rms_snr, want_rms, rtol=1e-6)
  assert int(g.num_zero_variance) == 1 and int(g.num_infinite_snr) == 1


def test_group_snr_leaves_out_a_dead_unit_with_zero_mean_and_zero_variance():
  # A dead ReLU unit: gradient identically 0. Averaging its 0/0 as 0 would drag the mean down.
  mean = {"w": jnp.array([0.5, -1.0, 0.0, 0.3])}
  var = {"w": jnp.array([1.0, 4.0, 0.0, 0.09])}
  g = diagnostics.snr_from_moments(diagnostics.Moments(mean, var, 100)).groups["w"]
  want_mean, want_median, _ = _snr_oracle(mean["w"], var["w"])
  np.testing.assert_allclose(g.mean_snr, want_mean, rtol=1e-6)
  np.testing.assert_allclose(g.median_snr, want_median, rtol=1e-6)
  assert int(g.num_zero_variance) == 1 and int(g.num_infinite_snr) == 0


def test_gradient_snr_of_a_network_with_a_dead_relu_and_a_deterministic_gradient_is_finite():
  # w[0]: noisy gradient N(1, 1); w[1]: deterministic gradient 2; w[2]: behind a dead ReLU.
  def loss(p, key):
    noise = 1.0 + jax.random.normal(key)
    return noise * p["w"][0] + 2.0 * p["w"][1] + jax.nn.relu(p["w"][2] - 10.0)

  params = {"w": jnp.zeros(3)}
  r = diagnostics.gradient_snr(loss, params, bi.key(3), 64, chunk_size=16)
  g = r.groups["w"]
  assert np.all(np.isfinite([g.mean_snr, g.median_snr, g.rms_snr, g.rms_snr_debiased]))
  want = abs(float(r.mean["w"][0])) / float(r.std["w"][0])
  np.testing.assert_allclose([g.mean_snr, g.median_snr], [want, want], rtol=1e-6)
  assert int(g.num_zero_variance) == 2 and int(g.num_infinite_snr) == 1
  # a group with no noisy parameter has no SNR to summarise: NaN, never 0 or inf
  only_dead = diagnostics.gradient_snr(loss, params, bi.key(3), 8,
                                       groups={"dead": lambda t: t["w"][2:]}).groups["dead"]
  assert np.isnan(float(only_dead.mean_snr)) and int(only_dead.num_zero_variance) == 1


DX, DZ, B = 4, 2, 3
#: The surrogates of the registry as this module was imported (a docs page run in the same process
#: registers more; dgmjax.losses registers losses of their own over the model, with no views).
REGISTERED = tuple(n for n, c in estimators.ESTIMATORS.items() if c.views)


# ----------------------------------------------------------------------------- the oracle model


def _q_loc(params, x):
  phi = params["phi"]
  return x @ phi["c"].T + phi["d"][None]


def _tril(params):
  return jnp.tril(params["phi"]["tril"])


def _sample_q(params, x, key):
  return distributions.sample_mvn(key, _q_loc(params, x), _tril(params))


def _log_q(params, x, z):
  return distributions.mvn_log_prob(z, _q_loc(params, x), _tril(params))


def _log_prior(params, z):
  del params
  return distributions.standard_normal_log_prob(z)


def _log_likelihood(params, x, z):
  return lg.log_likelihood(params["theta"], x, z)


MODEL = models.from_functions(sample_q=_sample_q, log_q=_log_q, log_prior=_log_prior,
                              log_likelihood=_log_likelihood)


def exact_phi(theta):
  """Amortized q(z|x) = N(c x + d, L L^T), the exact posterior of the linear-Gaussian model."""
  inv_var = jnp.exp(-2.0 * theta.log_scale)
  m = jnp.eye(DZ, dtype=theta.w.dtype) + inv_var * theta.w.T @ theta.w
  cov = jnp.linalg.inv(m)
  cov = 0.5 * (cov + cov.T)
  c = inv_var * cov @ theta.w.T
  return {"c": c, "d": -(c @ theta.b), "tril": jnp.linalg.cholesky(cov)}


@functools.lru_cache(maxsize=None)
def make_problem(seed=0, dtype=jnp.float32):
  """``(x, exact params, perturbed params)``: one compiled call, cached."""
  return jax.jit(_make_problem, static_argnums=(0, 1))(seed, dtype)


def _make_problem(seed, dtype):
  k_theta, k_x, k_c, k_d, k_l = jax.random.split(jax.random.key(seed), 5)
  theta = lg.init(k_theta, DX, DZ, dtype=dtype)
  x, _ = lg.sample(theta, k_x, B)
  phi = exact_phi(theta)
  perturbed = {"c": phi["c"] + 0.3 * jax.random.normal(k_c, phi["c"].shape, dtype),
               "d": phi["d"] + 0.3 * jax.random.normal(k_d, phi["d"].shape, dtype),
               "tril": 0.8 * phi["tril"] + 0.1 * jnp.tril(
                   jax.random.normal(k_l, phi["tril"].shape, dtype))}
  return x, {"theta": theta, "phi": phi}, {"theta": theta, "phi": perturbed}


def loss_fn(name, x, k, **kw):
  est = estimators.from_name(name, **kw)

  def loss(params, key):
    terms = models.log_weight_terms(MODEL, params, x, key, k)
    return -jnp.sum(est.surrogate(terms))
  return loss


def assert_tree_close(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw), a, b)


# ----------------------------------------------------------------------------- values


@pytest.fixture(scope="module")
def terms():
  x, _, params = make_problem()
  return jax.jit(lambda p, k: models.log_weight_terms(MODEL, p, x, k, 6))(params,
                                                                          jax.random.key(1))


def test_terms_share_one_value(terms):
  assert terms.log_w.shape == (6, B)
  np.testing.assert_allclose(terms.log_w_theta, terms.log_w, rtol=1e-6)
  np.testing.assert_allclose(terms.log_w_path, terms.log_w, rtol=1e-6)
  x, _, params = make_problem()
  z = models.draws(MODEL, params, x, jax.random.split(jax.random.key(1), 6)).z
  np.testing.assert_allclose(terms.log_q_score, jax.vmap(lambda zk: _log_q(params, x, zk))(z),
                             rtol=1e-5, atol=1e-5)  # jitted vs eager float32 rounding


def test_surrogate_values_equal_bounds(terms):
  lw = terms.log_w
  iwae, elbo = objectives.iwae_bound(lw), objectives.elbo(lw)
  e = estimators
  expected = [
      (e.IWAE(), iwae), (e.ELBO(), elbo), (e.STL(), iwae), (e.STL(bound="elbo"), elbo),
      (e.DReG(), iwae), (e.DReG(num_groups=2), objectives.miwae_bound(lw, 2)),
      (e.Reinforce(), iwae), (e.Reinforce(baseline=-7.0), iwae),
      (e.Reinforce(bound="elbo", baseline=jnp.ones(B)), elbo),
      (e.Reinforce(baseline="batch_mean"), iwae),
      (e.VIMCO(), iwae), (e.RWS(), iwae), (e.RWSDReG(), iwae),
      (e.MIWAE(3), objectives.miwae_bound(lw, 3)),
      (e.CIWAE(0.05), objectives.ciwae_bound(lw, 0.05)),
      (e.PIWAE(2), iwae), (e.PIWAEDReG(2), iwae),
      (e.Renyi(0.5), objectives.renyi_bound(lw, 0.5)), (e.Renyi(0.0), iwae),
      (e.RenyiDReG(0.5), objectives.renyi_bound(lw, 0.5)),
  ]
  assert {est.name for est, _ in expected} == set(REGISTERED)
  values = jax.jit(lambda t: [est.surrogate(t) for est, _ in expected])(terms)
  for (est, bound), value in zip(expected, values):
    np.testing.assert_allclose(value, bound, rtol=1e-6, err_msg=repr(est))


def test_sample_axis_argument(terms):
  e = estimators
  ests = (e.IWAE(), e.STL(), e.DReG(), e.Reinforce(), e.Reinforce(baseline="batch_mean"),
          e.Reinforce(bound="elbo", baseline="batch_mean"), e.VIMCO(), e.RWS(), e.RWSDReG(),
          e.PIWAE(2))

  @jax.jit
  def both(t):
    t1 = jax.tree.map(lambda a: a.T, t)
    return ([est.surrogate(t1, axis=1) for est in ests], [est.surrogate(t) for est in ests])

  for a, b in zip(*both(terms)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_all_neg_inf_slice_gives_neg_inf_value_and_finite_gradients():
  lw = jnp.array([[0.5, -jnp.inf], [-1.0, -jnp.inf], [0.2, -jnp.inf]])
  lq = jnp.array([[-1.0, -2.0], [-1.5, -0.5], [-0.3, -0.7]])
  names = ("stl", "dreg", "reinforce", "vimco", "rws", "rws_dreg", "piwae")

  def f(a, b, c, name):
    t = estimators.LogWeightTerms(a, a, b, c)
    return estimators.from_name(name, num_groups=3 if name == "piwae" else None).surrogate(t)

  def finite_sum(a, b, c, name):
    v = f(a, b, c, name)
    return jnp.sum(jnp.where(jnp.isfinite(v), v, 0.0))

  values, grads = jax.jit(lambda a, b, c: (
      [f(a, b, c, n) for n in names],
      [jax.grad(finite_sum, argnums=(0, 1, 2))(a, b, c, n) for n in names]))(lw, lw, lq)
  for name, value, g in zip(names, values, grads):
    assert np.isfinite(value[0]) and value[1] == -np.inf, name
    for gi in g:
      assert np.all(np.isfinite(gi)), name


def test_bfloat16_follows_input(terms):
  t = jax.tree.map(lambda a: a.astype(jnp.bfloat16), terms)
  names = ("iwae", "dreg", "stl", "vimco", "rws")
  out = jax.eval_shape(lambda t: [estimators.from_name(n).surrogate(t) for n in names], t)
  for name, o in zip(names, out):
    assert o.dtype == jnp.bfloat16, name


def test_errors():
  lw = jnp.zeros((4, 2))
  with pytest.raises(ValueError, match="K >= 2"):
    estimators.vimco_learning_signals(jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match="num_groups"):
    estimators.dreg_surrogate(lw, lw, num_groups=3)
  with pytest.raises(ValueError, match="estimator must be one of"):
    estimators.from_name("nope")
  with pytest.raises(ValueError, match=r"bound must be 'iwae' or 'elbo', got 'vae'"):
    estimators.reinforce_surrogate(lw, lw, bound="vae")
  with pytest.raises(ValueError, match="share one shape"):
    estimators.dreg_surrogate(lw, jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="sample axis"):
    estimators.reinforce_surrogate(lw, lw, baseline=jnp.zeros((4, 2)))


_OLD_KEYWORD_CASES = [
    ("learning_signal", lambda lw, **kw: estimators.learning_signal(lw, **kw)),
    ("stl_surrogate", lambda lw, **kw: estimators.stl_surrogate(lw, lw, **kw)),
    ("reinforce_surrogate", lambda lw, **kw: estimators.reinforce_surrogate(lw, lw, **kw)),
    ("STL", lambda lw, **kw: estimators.STL(**kw).surrogate(
        estimators.LogWeightTerms(lw, lw, lw, lw))),
    ("Reinforce", lambda lw, **kw: estimators.Reinforce(**kw).surrogate(
        estimators.LogWeightTerms(lw, lw, lw, lw))),
]


@pytest.mark.parametrize("f", [c[1] for c in _OLD_KEYWORD_CASES],
                         ids=[c[0] for c in _OLD_KEYWORD_CASES])
def test_bound_is_the_only_keyword_for_the_bound(f):
  # One name per setting: the keyword names the bound; there is no other spelling of it.
  lw = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  with pytest.raises(TypeError, match="objective"):
    f(lw, objective="iwae")
  with pytest.raises(ValueError, match="bound must be 'iwae' or 'elbo'"):
    f(lw, bound="vae")


# ----------------------------------------------------------------------------- objects, registry


_BAD_SETTINGS = [
    ("miwae_zero", lambda: estimators.MIWAE(0), ValueError,
     r"num_groups must be a positive int \(M\), got 0"),
    ("dreg_bool", lambda: estimators.DReG(True), ValueError, r"num_groups must be a positive int"),
    ("piwae_float", lambda: estimators.PIWAE(2.0), ValueError,
     r"num_groups must be a positive int"),
    ("ciwae_beta", lambda: estimators.CIWAE(1.5), ValueError,
     r"beta must be a finite number >= 0 and <= 1, got 1.5"),
    ("renyi_nan", lambda: estimators.Renyi(np.nan), ValueError,
     r"alpha must be a real number, got nan"),
    ("renyi_inf", lambda: estimators.Renyi(np.inf), ValueError, r"alpha must be a real number"),
    ("renyi_dreg_minus_inf", lambda: estimators.RenyiDReG(-np.inf), ValueError,
     r"alpha must be a real number \(finite\), got -inf"),
    ("stl_bound", lambda: estimators.STL("vae"), ValueError,
     r"bound must be 'iwae' or 'elbo', got 'vae'"),
    ("reinforce_baseline_name", lambda: estimators.Reinforce(baseline="mean"), ValueError,
     r"baseline must be None, one of \('batch_mean',\)"),
    ("reinforce_baseline_bool", lambda: estimators.Reinforce(baseline=True), ValueError,
     r"baseline must be None"),
    ("reinforce_kl", lambda: estimators.Reinforce(kl="exact"), ValueError,
     r"kl must be None or 'analytic', got 'exact'"),
    ("reinforce_kl_iwae", lambda: estimators.Reinforce(kl="analytic"), ValueError,
     r"kl='analytic' with 'reinforce' needs bound='elbo'"),
    ("elbo_kl", lambda: estimators.ELBO(kl="exact"), ValueError, r"kl must be None or 'analytic'"),
    ("miwae_missing", lambda: estimators.MIWAE(), TypeError, r"num_groups"),
    ("from_name_unknown", lambda: estimators.from_name("nope"), ValueError,
     r"estimator must be one of \['ciwae', "),
    ("from_name_not_its_setting", lambda: estimators.from_name("stl", num_groups=2), ValueError,
     r"num_groups applies to 'miwae', 'piwae', 'piwae_dreg' and 'dreg' only, got estimator 'stl'"),
    ("from_name_needs", lambda: estimators.from_name("renyi_dreg"), ValueError,
     r"estimator 'renyi_dreg' needs alpha"),
    ("from_name_no_such_setting", lambda: estimators.from_name("iwae", temperature=1.0),
     TypeError, r"'temperature' is a setting of no estimator"),
]


@pytest.mark.parametrize("f,error,match", [c[1:] for c in _BAD_SETTINGS],
                         ids=[c[0] for c in _BAD_SETTINGS])
def test_an_estimator_checks_its_settings_when_built(f, error, match):
  with pytest.raises(error, match=match):
    f()


def test_estimators_are_frozen_values_with_their_settings():
  d = estimators.DReG(num_groups=np.int64(2))
  assert d == estimators.DReG(2) and hash(d) == hash(estimators.DReG(2))
  assert type(d.num_groups) is int and d != estimators.DReG()
  with pytest.raises(dataclasses.FrozenInstanceError):
    d.num_groups = 3
  assert estimators.Reinforce("elbo", "batch_mean", "analytic").kl == "analytic"
  assert estimators.IWAE().kl is None and estimators.Renyi(-np.inf).alpha == -np.inf
  assert estimators.from_name("dreg", bound="iwae", kl=None, alpha=None) == estimators.DReG()
  d.check_num_samples(4)
  with pytest.raises(ValueError, match="dividing num_samples=5, got 2"):
    d.check_num_samples(5)
  with pytest.raises(ValueError, match="num_samples >= 2, got 1"):
    estimators.VIMCO().check_num_samples(1)


def test_a_traced_setting_is_checked_when_concrete_only(terms):
  betas = jnp.array([0.0, 0.5])
  swept = jax.jit(jax.vmap(lambda b: estimators.CIWAE(b).surrogate(terms)))(betas)
  for beta, value in zip(betas, swept):
    np.testing.assert_allclose(value, objectives.ciwae_bound(terms.log_w, beta), rtol=1e-6)


def test_the_registry_names_each_class_once():
  assert len(REGISTERED) == 14
  for name in REGISTERED:
    cls = estimators.ESTIMATORS[name]
    assert cls.name == name and issubclass(cls, estimators.Estimator)
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    assert set(cls.views) <= set(estimators.LogWeightTerms._fields)


def test_register_checks_the_class():
  class NotADataclass(estimators.Estimator):
    name = "not_a_dataclass"

  @dataclasses.dataclass
  class NotFrozen(estimators.Estimator):
    name = "not_frozen"

  @dataclasses.dataclass(frozen=True)
  class NoName(estimators.Estimator):
    pass

  @dataclasses.dataclass(frozen=True)
  class Taken(estimators.Estimator):
    name = "iwae"

  for cls in (NotADataclass, NotFrozen):
    with pytest.raises(TypeError, match="frozen dataclass subclass of Estimator"):
      estimators.register(cls)
  with pytest.raises(ValueError, match="needs a name of its own"):
    estimators.register(NoName)
  with pytest.raises(ValueError, match="an estimator named 'iwae' is registered already"):
    estimators.register(Taken)
  assert estimators.ESTIMATORS["iwae"] is estimators.IWAE
  assert estimators.register(estimators.IWAE) is estimators.IWAE  # registering again: no change


def test_a_baseline_function_is_evaluated_by_the_loss(terms):
  est = estimators.Reinforce(baseline=lambda p, x: jnp.zeros(B))
  with pytest.raises(ValueError, match="evaluated by the loss"):
    est.surrogate(terms)
  value = dataclasses.replace(est, baseline=jnp.zeros(B)).surrogate(terms)
  np.testing.assert_allclose(value, objectives.iwae_bound(terms.log_w), rtol=1e-6)


# ----------------------------------------------------------------------------- the kind of latent


class _Declares:
  """A stand-in for a model: only the optional attributes ``latent`` and ``reparametrized``."""

  def __init__(self, latent=None, reparametrized=None):
    self.latent, self.reparametrized = latent, reparametrized


def test_pathwise_is_read_off_the_views_unless_a_class_says():
  assert {n for n, c in estimators.ESTIMATORS.items() if not c.pathwise} >= {
      "reinforce", "vimco", "rws"}
  for name in ("elbo", "iwae", "miwae", "ciwae", "renyi", "piwae", "piwae_dreg", "dreg", "stl",
               "rws_dreg", "renyi_dreg"):
    assert estimators.ESTIMATORS[name].pathwise, name

  class Score(estimators.Estimator):
    views = ("log_w_theta", "log_q_score")

  class Declared(Score):
    pathwise = True

  assert not Score.pathwise and Declared.pathwise


@pytest.mark.parametrize("z,model,kind", [
    (jnp.zeros((B, DZ)), None, "reparametrized"),
    (jnp.zeros((B, DZ), jnp.int32), None, "discrete"),
    (jnp.zeros((B, DZ), bool), None, "discrete"),
    (jax.ShapeDtypeStruct((B, DZ), jnp.uint8), None, "discrete"),
    ({"top": jnp.zeros((B, 2)), "bottom": jnp.zeros((B, 2), jnp.int32)}, None, "discrete"),
    (jnp.zeros((B, 3, 4)), _Declares("discrete"), "discrete"),          # one-hot float draws
    (jnp.zeros((B, DZ), jnp.int32), _Declares("continuous"), "discrete"),  # the dtype wins
    (jnp.zeros((B, DZ)), _Declares("continuous"), "reparametrized"),
    (jnp.zeros((B, DZ)), _Declares(reparametrized=False), "not reparametrized"),
    (jnp.zeros((B, DZ)), _Declares(reparametrized=True), "reparametrized"),
], ids=["float", "int", "bool", "abstract_uint8", "one_int_layer", "declared_discrete",
        "int_declared_continuous", "declared_continuous", "not_reparametrized", "reparametrized"])
def test_latent_kind_from_the_dtype_and_the_declaration(z, model, kind):
  assert estimators.latent_kind(z, model) == kind


def test_latent_kind_refuses_a_declaration_it_does_not_know():
  with pytest.raises(ValueError, match=r"_Declares.latent must be None, 'continuous' or "
                                       r"'discrete', got 'categorical'"):
    estimators.latent_kind(jnp.zeros(B), _Declares("categorical"))
  with pytest.raises(ValueError, match="_Declares.reparametrized must be None, True or False"):
    estimators.latent_kind(jnp.zeros(B), _Declares(reparametrized="no"))


def test_pathwise_estimators_refuse_a_discrete_latent_naming_the_estimators_that_fit():
  z = jnp.zeros((B, DZ), jnp.int32)
  for name in ("iwae", "dreg", "stl", "piwae", "renyi_dreg"):
    est = estimators.ESTIMATORS[name]
    with pytest.raises(ValueError) as info:
      est.__new__(est).check_latent(z)   # the check reads no setting
    msg = str(info.value)
    assert f"estimator '{name}'" in msg and "discrete (z of dtype int32)" in msg, msg
    assert "'rws', 'reinforce' and 'vimco'" in msg and "relaxed(tau)" in msg, msg
  with pytest.raises(ValueError, match=r"not reparametrized \(z of dtype float32; "
                                       r"reparametrized=False\)"):
    estimators.DReG().check_latent(jnp.zeros((B, DZ)), _Declares(reparametrized=False))
  for est in (estimators.Reinforce(), estimators.VIMCO(), estimators.RWS()):
    est.check_latent(z)                                  # score-function: every latent
    est.check_latent(jnp.zeros((B, 3)), _Declares("discrete"))
    est.check_latent(jnp.zeros((B, DZ)))
  estimators.IWAE().check_latent(jnp.zeros((B, DZ)))     # a continuous latent: every estimator


def test_the_latent_check_runs_at_trace_time_under_jit():
  calls = []

  @jax.jit
  def f(z):
    estimators.DReG().check_latent(z)
    calls.append(1)
    return z

  f(jnp.zeros((B, DZ)))
  with pytest.raises(ValueError, match="latent is discrete"):
    f(jnp.zeros((B, DZ), jnp.int32))
  assert len(calls) == 1


@pytest.mark.parametrize("bound", ["iwae", "elbo"])
def test_a_nan_baseline_gives_nan_for_its_data_point_not_a_zero_gradient(bound):
  rng = np.random.default_rng(3)
  lw = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  lq = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  good = jnp.asarray([0.5, -1.0, 0.2], jnp.float32)
  bad = good.at[1].set(jnp.nan)

  def value_and_grad(b):
    f = lambda q: estimators.reinforce_surrogate(lw, q, b, bound=bound)
    return np.asarray(f(lq)), np.asarray(jax.jacrev(f)(lq))    # [B], [B, K, B]

  v_good, g_good = value_and_grad(good)
  v_bad, g_bad = value_and_grad(bad)
  assert np.all(np.isfinite(v_good)) and np.all(np.isfinite(g_good))
  assert np.isnan(v_bad[1]) and np.all(np.isnan(g_bad[1][:, 1]))
  # The other data points keep their values, and their gradients in their own samples, bit for
  # bit (a Jacobian row meets the NaN of the bad column as 0 * NaN: the mean loss's gradient is
  # NaN, as it must be).
  np.testing.assert_array_equal(v_bad[[0, 2]], v_good[[0, 2]])
  np.testing.assert_array_equal(g_bad[0][:, 0], g_good[0][:, 0])
  np.testing.assert_array_equal(g_bad[2][:, 2], g_good[2][:, 2])
  mean_grad = jax.grad(lambda q: jnp.mean(estimators.reinforce_surrogate(lw, q, bad, bound=bound)))
  assert np.all(np.isnan(mean_grad(lq)[:, 1]))
  # ... and without a NaN the estimator is the one it was (value and gradient).
  f0 = lambda q: estimators.reinforce_surrogate(lw, q, good, bound=bound)
  np.testing.assert_allclose(f0(lq), objectives.iwae_bound(lw) if bound == "iwae"
                             else objectives.elbo(lw), rtol=1e-6)


# ----------------------------------------------------------------------------- VIMCO, baselines


def test_vimco_signals_match_brute_force():
  rng = np.random.default_rng(0)
  lw = rng.normal(size=(5, 3)) * 3.0
  got = np.asarray(estimators.vimco_learning_signals(jnp.asarray(lw)))
  w = np.exp(lw.astype(np.float64))
  for k in range(5):
    others = np.delete(w, k, axis=0)
    geo = np.exp(np.mean(np.log(others), axis=0))
    loo = np.log((others.sum(0) + geo) / 5)
    np.testing.assert_allclose(got[k], np.log(w.mean(0)) - loo, rtol=1e-5, atol=1e-5)


def test_running_mean_is_bias_corrected():
  state = estimators.running_mean_init()
  assert float(state.mean) == 0.0
  for _ in range(3):
    state = estimators.running_mean_update(state, jnp.full((4,), 2.5), decay=0.9)
  np.testing.assert_allclose(state.mean, 2.5, rtol=1e-6)
  state = jax.jit(estimators.running_mean_update)(state, jnp.full((4,), 3.5))
  assert 2.5 < float(state.mean) < 3.5
  with pytest.raises(ValueError, match="decay"):
    estimators.running_mean_update(state, jnp.ones(2), decay=1.0)


def test_nvil_baseline_learns_the_signal_and_gets_no_estimator_gradient():
  x, _, params = make_problem()
  net = NVILBaseline(hidden=(16,))
  bparams = net.init(jax.random.key(2), x)
  assert net.apply(bparams, x).shape == (B,)
  opt = optax.adam(0.05)

  @jax.jit
  def train(bparams, keys):
    def step(carry, key):
      bparams, opt_state = carry
      terms = models.log_weight_terms(MODEL, params, x, key, 4)
      signal = estimators.learning_signal(terms.log_w)
      loss, g = jax.value_and_grad(
          lambda bp: jnp.mean(estimators.baseline_loss(signal, net.apply(bp, x))))(bparams)
      updates, opt_state = opt.update(g, opt_state)
      return (optax.apply_updates(bparams, updates), opt_state), loss
    return jax.lax.scan(step, (bparams, opt.init(bparams)), keys)

  (bparams, _), losses = train(bparams, jax.random.split(jax.random.key(3), 60))
  losses = np.asarray(losses)
  assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:5])

  @jax.jit
  def check(bparams, key):
    terms = models.log_weight_terms(MODEL, params, x, key, 4)
    g = jax.grad(lambda bp: jnp.sum(estimators.reinforce_surrogate(
        terms.log_w_theta, terms.log_q_score, net.apply(bp, x))))(bparams)
    per_sample = estimators.learning_signal(terms.log_w, bound="elbo")
    return g, estimators.baseline_loss(per_sample, net.apply(bparams, x))

  g, per_sample_loss = check(bparams, jax.random.key(4))
  # The baseline is stopped inside the estimator: the surrogate gives its parameters no gradient.
  assert all(float(jnp.max(jnp.abs(leaf))) == 0.0 for leaf in jax.tree.leaves(g))
  # Elementwise per-sample signal [K, B] against a [B] baseline.
  assert per_sample_loss.shape == (B,)


# ----------------------------------------------------------------------------- gradient identities


def grads_on_shared_samples(x, params, key, k, surrogates):
  """``{name: jax.grad of -sum(surrogate(terms))}`` for several surrogates of one set of samples.

  This is the chain rule ``jax.grad`` applies to a loss built on
  :func:`dgmjax.models.log_weight_terms`,
  with the model's backward pass shared (vmapped over the surrogates' cotangents) so that one
  small program serves every estimator.
  """
  def run(params, key):
    terms, vjp = jax.vjp(lambda p: models.log_weight_terms(MODEL, p, x, key, k), params)
    cts = [jax.grad(lambda t, f=f: -jnp.sum(f(t)))(terms) for f in surrogates.values()]
    grads = jax.vmap(lambda ct: vjp(ct)[0])(jax.tree.map(lambda *a: jnp.stack(a), *cts))
    return {name: jax.tree.map(lambda g, i=i: g[i], grads) for i, name in enumerate(surrogates)}
  return jax.jit(run)(params, key)


def _sur(name, **kw):
  return estimators.from_name(name, **kw).surrogate


@pytest.fixture(scope="module")
def same_sample_grads():
  """Gradients of every estimator on common random numbers (one compiled call per K)."""
  x, _, params = make_problem()
  six = {
      "iwae": _sur("iwae"), "stl": _sur("stl"), "dreg": _sur("dreg"),
      "reinforce": _sur("reinforce"), "reinforce_b2": _sur("reinforce", baseline=2.0),
      "vimco": _sur("vimco"), "rws": _sur("rws"), "rws_dreg": _sur("rws_dreg"),
      "piwae": _sur("piwae", num_groups=2), "miwae": _sur("miwae", num_groups=2),
      "piwae_dreg": _sur("piwae_dreg", num_groups=2), "dreg_m2": _sur("dreg", num_groups=2),
      "piwae_dreg_m3": _sur("piwae_dreg", num_groups=3),
      "score": lambda t: t.log_q_score,  # sum_k log q(sg z_k | x): the score-function term alone
  }
  one = {"stl1": _sur("stl"), "dreg1": _sur("dreg"), "rws_dreg1": _sur("rws_dreg")}
  k6, k1 = jax.random.split(jax.random.key(5))
  return {**grads_on_shared_samples(x, params, k6, 6, six),
          **grads_on_shared_samples(x, params, k1, 1, one)}


def test_shared_samples_helper_is_jax_grad_of_the_loss(same_sample_grads):
  x, _, params = make_problem()
  k6, _ = jax.random.split(jax.random.key(5))  # the fixture's key for K = 6
  direct = jax.jit(jax.grad(loss_fn("dreg", x, 6)))(params, k6)
  assert_tree_close(direct, same_sample_grads["dreg"], rtol=1e-5, atol=1e-6)


def test_theta_gradient_is_iwae_for_every_iwae_estimator(same_sample_grads):
  g = same_sample_grads
  for name in ("stl", "dreg", "reinforce", "reinforce_b2", "vimco", "rws", "rws_dreg", "piwae",
               "piwae_dreg", "piwae_dreg_m3"):
    assert_tree_close(g[name]["theta"], g["iwae"]["theta"], rtol=2e-5, atol=1e-6)


def test_reparam_phi_gradient_is_path_minus_score(same_sample_grads):
  # grad_phi IWAE = sum_k w_k (d log w_k / dz dz/dphi) - sum_k w_k grad_phi log q(z_k)
  #               =        STL phi gradient           -       RWS wake-phi gradient.
  g = same_sample_grads
  assert_tree_close(jax.tree.map(jnp.subtract, g["stl"]["phi"], g["rws"]["phi"]),
                    g["iwae"]["phi"], rtol=1e-4, atol=1e-5)


def test_k1_identities(same_sample_grads):
  g = same_sample_grads
  assert_tree_close(g["dreg1"]["phi"], g["stl1"]["phi"], rtol=1e-6)
  # RWS-DReG weights w - w^2 vanish at K = 1.
  assert all(float(jnp.max(jnp.abs(a))) == 0.0 for a in jax.tree.leaves(g["rws_dreg1"]["phi"]))


def test_piwae_routes_miwae_to_phi(same_sample_grads):
  g = same_sample_grads
  assert_tree_close(g["piwae"]["phi"], g["miwae"]["phi"], rtol=1e-4, atol=1e-6)
  assert_tree_close(g["piwae_dreg"]["phi"], g["dreg_m2"]["phi"], rtol=1e-4, atol=1e-6)


def test_reinforce_baseline_shifts_by_score(same_sample_grads):
  # Subtracting b changes the phi gradient by exactly -b * sum_k grad_phi log q(z_k)
  # (the losses are minus the surrogates, as is the score loss).
  g = same_sample_grads
  assert_tree_close(jax.tree.map(lambda a, s: a - 2.0 * s, g["reinforce"]["phi"],
                                 g["score"]["phi"]),
                    g["reinforce_b2"]["phi"], rtol=1e-4, atol=1e-4)


def test_loss_is_jitted_once():
  x, _, params = make_problem()
  step = jax.jit(jax.grad(chex.assert_max_traces(loss_fn("dreg", x, 4), n=1)))
  keys = jax.random.split(jax.random.key(10), 3)
  for k in keys:
    step(params, k)


# ----------------------------------------------------------------------------- unbiasedness


N_DRAWS = 10_000


@pytest.fixture(scope="module")
def bias_moments():
  """The estimators at one perturbed point (far from the posterior), in one compiled pass with
  independent keys."""
  x, _, params = make_problem()

  @jax.jit
  def pilot(keys):  # a running-mean baseline from pilot learning signals (pure updates)
    def step(state, k):
      t = models.log_weight_terms(MODEL, params, x, k, 1)
      return estimators.running_mean_update(
          state, estimators.learning_signal(t.log_w, bound="elbo")), None
    return jax.lax.scan(step, estimators.running_mean_init(), keys)[0]

  state = pilot(jax.random.split(jax.random.key(11), 20))
  losses = {
      "elbo1": loss_fn("elbo", x, 1), "stl1": loss_fn("stl", x, 1),
      "reinforce1": loss_fn("reinforce", x, 1, bound="elbo", baseline=state.mean),
      "iwae5": loss_fn("iwae", x, 5), "dreg5": loss_fn("dreg", x, 5),
      "stl5": loss_fn("stl", x, 5), "reinforce5": loss_fn("reinforce", x, 5, baseline=state.mean),
      "vimco5": loss_fn("vimco", x, 5),
  }
  return _moments(params, losses, 12)


@pytest.fixture(scope="module")
def extra_bias_moments():
  """Reweighted wake-sleep and PIWAE pairs (a second compiled pass; slow tests only)."""
  x, _, params = make_problem()
  losses = {
      "rws5": loss_fn("rws", x, 5), "rws_dreg5": loss_fn("rws_dreg", x, 5),
      "piwae": loss_fn("piwae", x, 6, num_groups=2),
      "piwae_dreg": loss_fn("piwae_dreg", x, 6, num_groups=2),
  }
  return _moments(params, losses, 14)


def _moments(params, losses, seed):
  joint = diagnostics.joint_loss(losses, common_random_numbers=False)
  moments = diagnostics.gradient_moments(joint, {n: params for n in losses},
                                         jax.random.key(seed), N_DRAWS, chunk_size=2500)
  return params, moments


def _compare(bias_moments, name, ref):
  params, m = bias_moments
  return diagnostics.gradient_bias_variance(m.select(name), m.select(ref), params,
                                            jax.random.key(0), N_DRAWS)


@pytest.mark.parametrize("name,ref", [
    ("stl1", "elbo1"), ("reinforce1", "elbo1"), ("dreg5", "iwae5"), ("reinforce5", "iwae5"),
    ("vimco5", "iwae5"),
    pytest.param("rws_dreg5", "rws5", marks=pytest.mark.slow),
    pytest.param("piwae_dreg", "piwae", marks=pytest.mark.slow)])
def test_unbiased_against_reparametrization(request, name, ref):
  fixture = "extra_bias_moments" if ref in ("rws5", "piwae") else "bias_moments"
  r = _compare(request.getfixturevalue(fixture), name, ref)
  z = np.concatenate([np.ravel(a) for a in jax.tree.leaves(r.z_score)])
  assert np.all(np.isfinite(z))
  # Within 3 standard errors, allowing for the multiplicity of ~25 parameters.
  assert np.mean(np.abs(z) < 3.0) >= 0.95, np.round(z, 2)
  assert np.max(np.abs(z)) < 4.5, np.round(z, 2)
  # No gross bias either (for score-function estimators the difference is mostly noise).
  assert float(r.groups["phi"].relative_bias) < 0.2


def test_stl_with_k_greater_than_one_is_detectably_biased(bias_moments):
  r = _compare(bias_moments, "stl5", "iwae5")
  assert float(r.groups["phi"].max_abs_z) > 6.0
  assert float(r.groups["theta"].max_abs_z) < 4.5  # theta gets the IWAE gradient


def test_variance_ordering(bias_moments):
  # Score-function gradients are far noisier than reparametrization at the same budget (and a
  # leave-one-out baseline, VIMCO, removes most of that). DReG's variance advantage holds near the
  # posterior (see the zero-variance test), not at this far-off point.
  r = _compare(bias_moments, "reinforce5", "iwae5")
  assert float(r.groups["phi"].variance_ratio) > 5.0
  assert float(_compare(bias_moments, "vimco5", "reinforce5").groups["phi"].variance_ratio) < 0.5


def test_stl_and_dreg_have_zero_variance_at_the_exact_posterior(x64):
  x, exact, _ = make_problem(dtype=jnp.float64)
  # 50 independent draws of each gradient, K = 4 samples each; STL of the ELBO averages four
  # single-sample STL gradients (the K = 1 estimator of the issue).
  surrogates = {"stl": _sur("stl", bound="elbo"), "dreg": _sur("dreg"), "iwae": _sur("iwae")}
  g = jax.vmap(lambda kk: grads_on_shared_samples(x, exact, kk, 4, surrogates))(
      jax.random.split(jax.random.key(13), 50))
  total_var = lambda tree: sum(float(np.sum(np.var(np.asarray(a), axis=0)))
                               for a in jax.tree.leaves(tree))
  for name in ("stl", "dreg"):
    assert total_var(g[name]["phi"]) < 1e-20, name
  assert total_var(g["iwae"]["phi"]) > 1e-2


# ----------------------------------------------------------------------------- diagnostics


def _linear_loss(signal, noise):
  """``loss(params, key)`` whose gradient in ``params['a']`` is ``signal + noise * eps``."""
  def loss(params, key):
    eps = jax.random.normal(key, signal.shape)
    return jnp.sum(params["a"] * (signal + noise * eps)) + jnp.sum(params["b"] * signal[:2])
  return loss


def test_gradient_snr_of_a_known_estimator_and_chunking():
  signal = jnp.linspace(-1.0, 1.0, 8)
  loss = _linear_loss(signal, 0.5)
  params = {"a": jnp.zeros(8), "b": jnp.zeros(2)}
  whole = diagnostics.gradient_snr(loss, params, jax.random.key(0), 4000)
  chunked = diagnostics.gradient_snr(loss, params, jax.random.key(0), 4000,
                                     chunk_size=500)  # the same keys, in 8 chunks
  assert_tree_close(whole.mean, chunked.mean, rtol=1e-4, atol=1e-6)
  assert_tree_close(whole.variance, chunked.variance, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(whole.mean["a"], signal, atol=4 * 0.5 / np.sqrt(4000))
  np.testing.assert_allclose(whole.std["a"], 0.5, rtol=0.05)
  np.testing.assert_allclose(whole.snr["a"], np.abs(signal) / 0.5, atol=0.1)
  # A noiseless gradient: zero variance, SNR inf (0 where the gradient is 0 too).
  assert np.all(np.asarray(whole.variance["b"]) == 0.0)
  assert set(whole.groups) == {"a", "b"} and whole.groups["a"].num_params == 8
  moments = diagnostics.Moments(whole.mean, whole.variance, whole.num_draws)
  g = diagnostics.snr_from_moments(moments, groups={"enc": "a", "all": lambda t: t})
  assert g.groups["all"].num_params == 10 and g.groups["enc"].num_params == 8
  with pytest.raises(ValueError, match="num_draws"):
    diagnostics.gradient_snr(loss, params, jax.random.key(9), 1)
  with pytest.raises(ValueError, match="chunk_size"):
    diagnostics.gradient_moments(loss, params, jax.random.key(9), 10, chunk_size=0)


def test_debiased_snr_resolves_below_the_noise_floor():
  # True SNR 0.02 on 500 parameters, N = 2000 draws: the plain estimate sits near the floor
  # sqrt(0.02^2 + 1/N) ~ 0.03, the debiased root-mean-square recovers 0.02.
  n, true_snr = 2000, 0.02
  loss = _linear_loss(jnp.full((500,), true_snr), 1.0)
  params = {"a": jnp.zeros(500), "b": jnp.zeros(2)}
  r = diagnostics.gradient_snr(loss, params, jax.random.key(1), n, chunk_size=600,
                               groups={"a": "a"})  # 3 chunks of 600 and a remainder of 200
  s = r.groups["a"]
  assert float(s.rms_snr) > 0.028
  np.testing.assert_allclose(float(s.rms_snr_debiased), true_snr, rtol=0.25)


def test_bias_variance_against_an_exact_reference():
  signal = jnp.array([1.0, -2.0, 0.5])
  loss = _linear_loss(signal, 1.0)
  params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
  exact = {"a": signal, "b": signal[:2]}
  r = diagnostics.gradient_bias_variance(loss, exact, params, jax.random.key(2), 5000)
  assert float(jnp.max(jnp.abs(r.z_score["a"]))) < 4.0
  np.testing.assert_allclose(r.variance["a"], 1.0, rtol=0.1)
  assert float(r.groups["b"].bias_norm) == 0.0
  shifted = {"a": signal + 0.2, "b": signal[:2]}
  r = diagnostics.gradient_bias_variance(loss, shifted, params, jax.random.key(2), 5000)
  assert float(r.groups["a"].max_abs_z) > 10.0


def test_power_law_fit():
  k = np.array([1, 10, 100, 1000.0])
  slope, icpt = diagnostics.fit_power_law(k, 3.0 * k ** -0.5)
  assert slope == pytest.approx(-0.5) and np.exp(icpt) == pytest.approx(3.0)
  with pytest.raises(ValueError, match="two positive"):
    diagnostics.fit_power_law([1.0, 2.0], [0.0, -1.0])


@pytest.mark.slow
def test_toy_snr_slopes_end_to_end(tmp_path):
  """The toy study's quick config: the expected slopes of Rainforth et al. and Tucker et al."""
  from experiments.gradient_snr import run
  from experiments.gradient_snr.configs import quick
  r = run.train_and_evaluate(quick.get_config(), str(tmp_path))
  assert (tmp_path / "snr_vs_k.png").exists() and (tmp_path / "results.json").exists()
  assert 0.4 <= r["slopes"]["iwae_theta"] <= 0.6
  assert -0.6 <= r["slopes"]["iwae_phi"] <= -0.4
  assert -0.6 <= r["slopes"]["iwae_phi_direct"] <= -0.4


def test_rainforth_table_prints_ours_beside_the_paper(tmp_path, capsys):
  from experiments.gradient_snr import table
  for name, obj, k, extra, nll in (("a", "piwae", 64, {"num_groups": 8}, 90.5),
                                   ("b", "ciwae", 64, {"beta": 0.05}, 91.0),
                                   ("c", "dreg", 64, {}, 90.0)):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(
        {"estimator": obj, "k": k, "epochs": 3.0, "test_nll": nll, "test_nll_stderr": 0.5,
         "test_examples": 1000, **extra}))
  assert table.main([str(tmp_path / "*")]) == 0
  out = capsys.readouterr().out
  assert "PIWAE(8,8)" in out and "-84.46" in out and "CIWAE(0.05)" in out and "-84.57" in out
  assert out.index("DReG-IWAE") < out.index("PIWAE") < out.index("CIWAE")  # best first


def test_ten_thousand_draws_on_the_toy_model_take_seconds():
  import time
  from experiments.gradient_snr import toy
  problem = toy.make_problem(jax.random.key(0))
  loss = toy.make_loss("iwae", problem.data[:1], 10)
  groups = {"theta": "theta", "phi": "phi"}
  diagnostics.gradient_snr(loss, problem.params, jax.random.key(1), 10_000, groups=groups)
  t0 = time.perf_counter()  # compiled: the same loss object, a new key
  r = diagnostics.gradient_snr(loss, problem.params, jax.random.key(2), 10_000, groups=groups)
  jax.block_until_ready(r.mean)
  assert time.perf_counter() - t0 < 10.0  # ~0.1 s on an idle 2-core CPU
  assert r.num_draws == 10_000 and r.groups["phi"].num_params == 20 * 20 + 20
  assert float(r.groups["theta"].mean_snr) > 1.0 > float(r.groups["phi"].mean_snr)
