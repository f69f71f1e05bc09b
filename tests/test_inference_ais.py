"""Tests of dgmjax.inference.ais: AIS and BDMC against the exact log p(x) of the linear-Gaussian model.

Oracles: the closed-form marginal ``log N(x; b, W W^T + s^2 I)`` (dgmjax.models.linear_gaussian);
the identity "AIS with one temperature is importance sampling" (its log-weights equal
``models.log_weights`` of the same key, exactly); Jensen's sandwich of BDMC
(``E[lower] <= log p(x) <= E[upper]``) on data simulated from the model.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import objectives
from dgmjax.inference import ais
from dgmjax import models as M
from dgmjax.models import linear_gaussian as lg, vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("ais_schedule_delta_inf", lambda: ais.schedule(5, delta=np.inf),
     ValueError, r"delta must be a finite number > 0"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


DX, DZ = 10, 3


def _lg(seed=1):
  """A linear-Gaussian model whose posterior is much narrower than its prior (s = 0.3), with a
  deliberately poor q(z|x): the exact posterior mean shifted by 0.3, independent scales 2x the
  posterior's marginal ones."""
  params = lg.init(jax.random.key(seed), DX, DZ, noise_scale=0.3)

  def enc(p, x):
    loc, tril = lg.posterior(p, x)
    scale = 2.0 * jnp.sqrt(jnp.sum(tril ** 2, -1))
    return loc + 0.3, jnp.broadcast_to(jnp.log(scale), loc.shape)

  def sample_q(p, x, key):
    loc, log_s = enc(p, x)
    return loc + jnp.exp(log_s) * jax.random.normal(key, loc.shape, loc.dtype)

  def log_q(p, x, z):
    loc, log_s = enc(p, x)
    u = (z - loc) / jnp.exp(log_s)
    return jnp.sum(-0.5 * u ** 2 - log_s - 0.5 * math.log(2 * math.pi), -1)

  def log_prior(p, z):
    return jnp.sum(-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi), -1)

  model = M.from_functions(
      sample_q=sample_q, log_q=log_q, log_prior=log_prior, log_likelihood=lg.log_likelihood,
      sample_prior=lambda p, key, n: jax.random.normal(key, (n, DZ)))
  return model, params


MODEL, PARAMS = _lg()
X, Z = lg.sample(PARAMS, jax.random.key(2), 16)      # exact joint draws: Z[i] ~ p(z | X[i])
EXACT = np.asarray(lg.log_marginal(PARAMS, X))


TMAX = 4000


def _padded(num_temps, tmax=TMAX):
  """The sigmoid schedule of ``num_temps`` followed by ``tmax - num_temps`` betas of 1: the same
  AIS estimator as ``num_temps`` temperatures (the extra transitions run at beta = 1 and add
  zero to every log-weight), so one compiled program serves every T <= tmax."""
  return jnp.concatenate([ais.schedule(num_temps), jnp.ones((tmax - num_temps,))])


@functools.lru_cache(maxsize=None)
def _ais_fn(init):
  return jax.jit(lambda p, x, k, betas: ais.ais(MODEL, p, x, k, num_temps=TMAX, num_chains=16,
                                                 init=init, schedule=betas))


def _ais(num_temps, init="prior", seed=3):
  return _ais_fn(init)(PARAMS, X, jax.random.key(seed), _padded(num_temps))


# ----------------------------------------------------------------------------- oracles


def test_ais_converges_to_the_exact_log_marginal_as_T_grows():
  """From the prior (a poor start: the posterior is ~6x narrower per dimension) the mean
  absolute error over 16 datapoints falls with T; at T = 4000 it is within 0.1 nats of the
  exact log p(x) per datapoint and 0.03 nats on average."""
  errs = {}
  for t in (1, 10, 100, 1000, 4000):
    r = _ais(t)
    err = np.asarray(r.log_marginal) - EXACT
    errs[t] = float(np.mean(np.abs(err)))
    if t == 10:
      var10 = r.log_weight_variance
  chex.assert_shape([r.log_marginal, r.log_weight_variance], (16,))
  chex.assert_shape(r.log_weights, (16, 16))
  chex.assert_shape([r.acceptance, r.step_size], (TMAX - 1, 16))
  np.testing.assert_allclose(r.betas, _padded(4000))     # an explicit schedule is used as given
  assert errs[1] > errs[10] > errs[100] > errs[1000] > errs[4000], errs
  assert errs[1] > 3.0                                   # the problem is not trivial
  assert errs[4000] < 0.1, errs
  assert abs(float(np.mean(err))) < 0.03, float(np.mean(err))
  # the chains agree at the end: the log-weight variance collapses with T
  assert float(jnp.mean(r.log_weight_variance)) < 0.3 < float(jnp.mean(var10))
  # adaptation holds the acceptance near its target once the step size has settled
  settled = np.asarray(r.acceptance[200:]).mean()
  assert abs(settled - 0.65) < 0.1, settled
  assert np.all(np.asarray(r.step_size) >= 1e-4) and np.all(np.asarray(r.step_size) <= 0.5)


def test_ais_from_q_beats_importance_sampling_and_converges():
  is_err = float(np.mean(np.abs(np.asarray(_ais(1, "q").log_marginal) - EXACT)))
  ais_err = float(np.mean(np.abs(np.asarray(_ais(TMAX, "q").log_marginal) - EXACT)))
  assert ais_err < 0.04 and is_err > 0.5, (is_err, ais_err)


def test_one_temperature_is_importance_sampling_with_the_same_draws():
  key = jax.random.key(7)
  with jax.debug_key_reuse(False):  # the oracle redraws the same samples on purpose
    r = jax.jit(functools.partial(ais.ais, MODEL, num_temps=1, num_chains=16))(PARAMS, X, key)
    lw = jax.jit(lambda k: M.log_weights(MODEL, PARAMS, X, jax.random.split(k)[0], 16))(key)
  np.testing.assert_allclose(r.log_weights, lw, rtol=1e-5)   # float32: batched vs per-datapoint
  np.testing.assert_allclose(r.log_marginal, objectives.iwae_bound(lw), rtol=1e-5)
  assert r.acceptance.shape == (0, 16)


def test_bdmc_brackets_the_exact_value_and_the_gap_closes_with_T():
  """From the prior, with pilot-adapted step sizes (neither direction's kernels depend on its
  own chains, so both bounds hold exactly in expectation): the sandwich contains the exact value
  and its width falls from > 1 nat at T = 10 to < 0.1 nats at T = 1000."""
  tmax = 1000
  run = jax.jit(lambda p, x, z, k, betas: ais.bdmc(MODEL, p, x, z, k, num_temps=tmax,
                                                    num_chains=16, init="prior",
                                                    schedule=betas, pilot_chains=4))
  gaps = []
  for t in (10, 100, 1000):
    r = run(PARAMS, X, Z, jax.random.key(5), _padded(t, tmax))
    lower, upper = np.asarray(r.lower), np.asarray(r.upper)
    np.testing.assert_allclose(r.gap, upper - lower, rtol=1e-6)
    # the sandwich holds for the mean over datapoints, up to 2 standard errors of that mean
    for est, sign in ((lower, 1.0), (upper, -1.0)):
      d = est - EXACT
      se = d.std(ddof=1) / math.sqrt(d.size)
      assert sign * d.mean() <= 2 * se + 1e-6, (t, sign, d.mean(), se)
    if t == 10:   # a wide sandwich: each side strictly on its side of the exact value
      assert lower.mean() < EXACT.mean() - 0.3 and upper.mean() > EXACT.mean() + 0.3
    gaps.append(float(np.mean(upper - lower)))
  # once the sandwich is as narrow as the Monte Carlo error, its width is noise of either sign
  assert gaps[0] > 1.0 and gaps[0] > gaps[1] > abs(gaps[2]), gaps
  assert abs(gaps[2]) < 0.1, gaps
  # the reverse chain ran at the forward chain's step sizes, in reverse order
  np.testing.assert_allclose(r.reverse.step_size, r.forward.step_size[::-1])
  np.testing.assert_allclose(r.reverse.betas, r.forward.betas[::-1])


def test_ais_is_jittable_compiles_once_and_uses_fixed_step_sizes_as_given():
  calls = []

  def counted(*a, **k):
    calls.append(1)
    return ais.ais(*a, **k)

  run = jax.jit(functools.partial(counted, MODEL, num_temps=4, num_chains=3,
                                  adapt_step_size=False))
  eps = jnp.full((3, 16), 0.07)
  a = run(PARAMS, X, jax.random.key(0), step_size=eps)
  b = run(PARAMS, X + 0.1, jax.random.key(1), step_size=eps * 2)
  assert len(calls) == 1
  np.testing.assert_allclose(a.step_size, eps)
  np.testing.assert_allclose(b.step_size, eps * 2)
  assert np.all(np.isfinite(np.asarray(a.log_marginal)))
  assert not np.allclose(a.log_marginal, b.log_marginal)


def test_pytree_latent_two_stochastic_layers_and_simulate():
  model = vae.VAE((4, 4, 1), (3, 2), ((8,), (6,)))
  params = jax.jit(model.init)(jax.random.key(0))
  x, z = jax.jit(functools.partial(ais.simulate, model, num=5, sample_x_given_z="bernoulli"))(
      params, jax.random.key(1))
  assert x.shape == (5, 4, 4, 1) and set(np.unique(np.asarray(x))) <= {0.0, 1.0}
  assert isinstance(z, tuple) and z[0].shape == (5, 3) and z[1].shape == (5, 2)
  r = jax.jit(functools.partial(ais.bdmc, model, num_temps=3, num_chains=2,
                                step_size_sharing="batch"))(params, x, z, jax.random.key(2))
  assert r.lower.shape == r.upper.shape == (5,)
  s = np.asarray(r.forward.step_size)
  np.testing.assert_allclose(s, np.broadcast_to(s[:, :1], s.shape))   # one step size per batch
  assert r.forward.z[0].shape == (2, 5, 3) and r.forward.z[1].shape == (2, 5, 2)
  assert np.all(np.isfinite(np.asarray(r.gap)))
  # a custom sampler of x given z
  xs, zs = ais.simulate(MODEL, PARAMS, jax.random.key(1), 5,
                        sample_x_given_z=lambda p, zz, k: lg._affine(p, zz))
  np.testing.assert_allclose(xs, lg._affine(PARAMS, zs), rtol=1e-6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_temps=0), "num_temps"),
    (dict(num_temps=2.5), "num_temps"),
    (dict(num_chains=0), "num_chains"),
    (dict(num_leapfrog=0), "num_leapfrog"),
    (dict(init="posterior"), "init"),
    (dict(target_accept=1.5), "target_accept"),
    (dict(target_accept=0.0), "target_accept"),
    (dict(step_size=-0.1), "step_size"),
    (dict(step_size=float("nan")), "step_size"),
    (dict(step_size=jnp.ones((2, 16))), "step_size"),          # [T-1, B] with adaptation on
    (dict(adapt_rate=-1.0), "adapt_rate"),
    (dict(step_size_range=(0.5, 0.1)), "step_size_range"),
    (dict(step_size_sharing="chain"), "step_size_sharing"),
    (dict(pilot_chains=0), "pilot_chains"),
    (dict(pilot_chains=2, adapt_step_size=False), "pilot_chains"),
    (dict(schedule="cosine"), "schedule"),
    (dict(schedule=[0.0, 0.5, 0.9, 0.95]), "schedule"),       # does not end at 1
    (dict(schedule=[0.0, 1.0]), "schedule"),                   # T + 1 = 4 betas needed
    (dict(schedule=[0.0, 0.7, 0.5, 1.0]), "schedule"),         # not increasing
])
def test_bad_arguments_raise_value_errors_naming_them(kwargs, match):
  settings = dict(num_temps=3, num_chains=2)
  settings.update(kwargs)
  with pytest.raises(ValueError, match=match):
    ais.ais(MODEL, PARAMS, X, jax.random.key(0), **settings)


def test_bad_models_and_data_raise():
  discrete = M.from_functions(
      sample_q=lambda p, x, k: jax.random.randint(k, (x.shape[0], 2), 0, 3),
      log_q=lambda p, x, z: jnp.zeros(x.shape[0]), log_prior=lambda p, z: jnp.zeros(z.shape[0]),
      log_likelihood=lambda p, x, z: jnp.zeros(x.shape[0]))
  with pytest.raises(ValueError, match="continuous latent"):
    ais.ais(discrete, {}, jnp.zeros((2, 3)), jax.random.key(0), num_temps=2)
  one_hot = M.from_functions(  # float one-hot draws: discrete by declaration, not by dtype
      sample_q=lambda p, x, k: jax.nn.one_hot(jax.random.randint(k, (x.shape[0],), 0, 3), 3),
      log_q=lambda p, x, z: jnp.zeros(x.shape[0]), log_prior=lambda p, z: jnp.zeros(z.shape[0]),
      log_likelihood=lambda p, x, z: jnp.zeros(x.shape[0]), latent="discrete")
  with pytest.raises(ValueError, match="continuous latent.*latent='discrete'"):
    ais.ais(one_hot, {}, jnp.zeros((2, 3)), jax.random.key(0), num_temps=2)
  no_prior = M.from_functions(sample_q=MODEL.sample_q, log_q=MODEL.log_q,
                              log_prior=MODEL.log_prior, log_likelihood=MODEL.log_likelihood)
  with pytest.raises(TypeError, match="sample_prior"):
    ais.ais(no_prior, PARAMS, X, jax.random.key(0), num_temps=2, init="prior")
  with pytest.raises(TypeError, match="sample_prior"):
    ais.simulate(no_prior, PARAMS, jax.random.key(0), 3, sample_x_given_z="bernoulli")
  with pytest.raises(ValueError, match="sample_x_given_z"):
    ais.simulate(MODEL, PARAMS, jax.random.key(0), 3, sample_x_given_z="gaussian")
  with pytest.raises(ValueError, match="num"):
    ais.simulate(MODEL, PARAMS, jax.random.key(0), 0, sample_x_given_z="bernoulli")
  with pytest.raises(ValueError, match="z must"):
    ais.bdmc(MODEL, PARAMS, X, Z[:3], jax.random.key(0), num_temps=2)
  with pytest.raises(ValueError, match="z must"):
    ais.bdmc(MODEL, PARAMS, X, jnp.zeros((16, DZ + 1)), jax.random.key(0), num_temps=2)
  per_dim = M.from_functions(sample_q=MODEL.sample_q, log_q=MODEL.log_q,
                             log_prior=lambda p, z: -0.5 * z ** 2,         # [B, D]: not summed
                             log_likelihood=MODEL.log_likelihood)
  with pytest.raises(ValueError, match="log_prior"):
    ais.ais(per_dim, PARAMS, X, jax.random.key(0), num_temps=2)
  with pytest.raises(ValueError, match="x must"):
    ais.ais(MODEL, PARAMS, jnp.zeros(()), jax.random.key(0), num_temps=2)
  with pytest.raises(ValueError, match="num_temps"):
    ais.schedule(0)
  with pytest.raises(ValueError, match="delta"):
    ais.schedule(5, delta=-1.0)


def test_schedules():
  s = np.asarray(ais.schedule(10))
  assert s[0] == 0.0 and s[-1] == 1.0 and np.all(np.diff(s) > 0)
  # the sigmoid crowds temperatures near both ends: its first and last steps are the smallest
  d = np.diff(s)
  assert d[0] < d[5] and d[-1] < d[5]
  np.testing.assert_allclose(ais.schedule(4, "linear"), [0.0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_allclose(ais.schedule(1), [0.0, 1.0])


def test_traced_betas_that_do_not_rise_from_0_to_1_give_nan():
  fn = jax.jit(lambda b: ais.ais(MODEL, PARAMS, X[:2], jax.random.key(9), num_temps=3,
                                 num_chains=2, schedule=b).log_marginal)
  good = np.asarray(fn(jnp.array([0.0, 0.3, 0.6, 1.0])))
  assert np.all(np.isfinite(good))
  for bad in ([0.0, 0.6, 0.4, 1.0], [0.0, 0.3, 0.6, 0.9], [0.1, 0.3, 0.6, 1.0],
              [0.0, np.nan, 0.6, 1.0]):
    assert np.all(np.isnan(np.asarray(fn(jnp.array(bad))))), bad


# ----------------------------------------------------------------------------- non-finite results


def _nan_model(row):
  """MODEL with a log_likelihood that is NaN for the datapoint X[row] (found by content)."""
  def ll(p, x, z):
    hit = jnp.all(x == X[row][None], axis=-1)
    return jnp.where(hit, jnp.nan, lg.log_likelihood(p, x, z))

  return M.from_functions(sample_q=MODEL.sample_q, log_q=MODEL.log_q,
                          log_prior=MODEL.log_prior, log_likelihood=ll,
                          sample_prior=MODEL.sample_prior)


def test_ais_names_the_datapoint_and_the_function_of_a_nan():
  model = _nan_model(3)
  with pytest.raises(ValueError, match=r"ais's estimate is not finite for 1 of 4 image\(s\) "
                                       r"\(x \[3\]\).*log_likelihood returns nan for x\[3\]"):
    ais.ais(model, PARAMS, X[:4], jax.random.key(0), num_temps=3, num_chains=2, num_leapfrog=2)
  with pytest.raises(ValueError, match=r"x \[3\].*log_likelihood returns nan"):
    ais.bdmc(model, PARAMS, X[:4], Z[:4], jax.random.key(0), num_temps=3, num_chains=2,
             num_leapfrog=2)


def test_ais_under_jit_gives_nan_for_the_bad_datapoint_never_a_number():
  model = _nan_model(3)
  run = jax.jit(functools.partial(ais.ais, model, num_temps=3, num_chains=2, num_leapfrog=2))
  est = np.asarray(run(PARAMS, X[:4], jax.random.key(0)).log_marginal)
  assert np.isnan(est[3]) and np.all(np.isfinite(est[:3]))


def test_ais_refuses_a_complex_log_likelihood_naming_it():
  model = M.from_functions(
      sample_q=MODEL.sample_q, log_q=MODEL.log_q, log_prior=MODEL.log_prior,
      log_likelihood=lambda p, x, z: lg.log_likelihood(p, x, z).astype(jnp.complex64))
  with pytest.raises(TypeError, match="log_likelihood must return a floating.*complex64"):
    ais.ais(model, PARAMS, X[:2], jax.random.key(0), num_temps=2, num_chains=2, num_leapfrog=2)
