"""Tests of dgmjax.training: Burda's schedule and Adam variant, the jitted step, NaN guard,
checkpoint/resume equality, and fit's checks of its training data."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from dgmjax import losses, models, objectives, training
from dgmjax.models import vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input


def _fit_tiny_vae(**kw):
  """``training.fit`` of the tiny VAE with one bad setting in ``kw`` (never gets to train)."""
  model, params = bi.bernoulli_vae()
  args = dict(optimizer=optax.adam(1e-3), num_steps=2, batch_size=2, seed=0,
              workdir="/nonexistent/never/written")
  args.update(kw)
  return training.fit(losses.make_loss(model, "iwae", 2), params, bi.binary_images(4), **args)


RAISES = [
    ("fit_batch_size_float", lambda: _fit_tiny_vae(batch_size=2.0),
     TypeError, r"batch_size must be an int, got float 2\.0"),
    ("fit_batch_size_zero", lambda: _fit_tiny_vae(batch_size=0),
     ValueError, r"batch_size must be an int >= 1"),
    ("fit_seed_negative", lambda: _fit_tiny_vae(seed=-1),
     ValueError, r"seed must be an int >= 0, got -1"),
    ("fit_seed_none", lambda: _fit_tiny_vae(seed=None),
     TypeError, r"seed must be an int >= 0, got None"),
    ("fit_optimizer_a_number", lambda: _fit_tiny_vae(optimizer=1e-3),
     TypeError, r"optimizer must be an optax GradientTransformation"),
    ("fit_max_consecutive_nonfinite_zero", lambda: _fit_tiny_vae(max_consecutive_nonfinite=0),
     ValueError, r"max_consecutive_nonfinite must be an int >= 1"),
    ("fit_stop_after_negative", lambda: _fit_tiny_vae(stop_after=-1),
     ValueError, r"stop_after must be"),
    ("fit_workdir_a_file", lambda: _fit_tiny_vae(workdir=__file__),
     ValueError, r"workdir=.*exists and is not a directory"),
    ("make_optimizer_learning_rate_string", lambda: training.make_optimizer("adam", "1e-3"),
     ValueError, r"learning_rate must be a finite number > 0, got str"),
    ("burda_num_steps_zero_steps_per_epoch", lambda: training.burda_num_steps(0),
     ValueError, r"steps_per_epoch must be an int >= 1, got 0"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


# ----------------------------------------------------------------------------- schedule


def test_burda_schedule_passes_and_rates():
  spe = 10
  sched = training.burda_schedule(spe)
  starts = np.cumsum([0] + [3**i for i in range(8)])[:-1] * spe
  for i, s in enumerate(starts):
    want = 1e-3 * 10 ** (-i / 7)
    np.testing.assert_allclose(float(sched(s)), want, rtol=1e-6)
    np.testing.assert_allclose(float(sched(s + 3**i * spe - 1)), want, rtol=1e-6)
  assert sum(training.burda_epochs()) == 3280
  assert training.burda_num_steps(spe) == 3280 * spe
  np.testing.assert_allclose(float(sched(3280 * spe + 5)), 1e-4, rtol=1e-6)


def test_burda_schedule_reference_rounding_and_short_budgets():
  np.testing.assert_allclose(training.burda_learning_rates(reference_rounding=True),
                             [1e-3, 7.2e-4, 5.2e-4, 3.7e-4, 2.7e-4, 1.9e-4, 1.4e-4, 1e-4],
                             rtol=1e-9)
  # Three passes: Burda's first 13 epochs.
  s3 = training.burda_schedule(5, 3)
  assert [float(s3(i)) for i in (0, 4, 5, 19, 20, 64)] == pytest.approx(
      [1e-3, 1e-3, 1e-3 * 10**(-1 / 7), 1e-3 * 10**(-1 / 7), 1e-3 * 10**(-2 / 7),
       1e-3 * 10**(-2 / 7)], rel=1e-6)
  assert training.burda_num_steps(5, 3) == 65
  # num_epochs scales the passes: 26 epochs = every pass twice as long.
  s = training.burda_schedule(5, 3, num_epochs=26)
  assert float(s(9)) == pytest.approx(1e-3, rel=1e-6)
  assert float(s(10)) == pytest.approx(1e-3 * 10**(-1 / 7), rel=1e-6)
  assert float(s(40)) == pytest.approx(1e-3 * 10**(-2 / 7), rel=1e-6)
  assert training.burda_num_steps(5, 3, num_epochs=26) == 130
  with pytest.raises(ValueError):
    training.burda_schedule(0)


# ----------------------------------------------------------------------------- burda_adam


def _reference_adam_ascent(theta, grad_bound, lrs, b1=0.99, b2=0.999, eps=1e-4):
  """yburda/iwae optimizers.Adam on a bound, with Theano's simultaneous updates, in numpy."""
  m, v, t = np.zeros_like(theta), np.ones_like(theta), 1.0
  out = []
  for lr in lrs:
    g = grad_bound(theta)
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    new_theta = theta + alpha * m / (np.sqrt(v) + eps)  # reads m, v, t before this update
    m, v, t = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2, t + 1
    theta = new_theta
    out.append(theta.copy())
  return out


def test_burda_adam_matches_reference_implementation(x64):
  c = np.array([1.0, -2.0, 0.5])
  grad_bound = lambda th: -(th - c) * np.array([1.0, 3.0, 10.0])  # bound = -sum a (th-c)^2 / 2
  lrs = [1e-1] * 3 + [5e-2] * 4
  want = _reference_adam_ascent(np.zeros(3), grad_bound, lrs)
  sched = optax.piecewise_constant_schedule(1e-1, {3: 0.5})
  opt = training.burda_adam(sched)
  theta = jnp.zeros(3)
  state = opt.init(theta)
  for i in range(len(lrs)):
    g_loss = -grad_bound(np.asarray(theta))  # optax minimises the negative bound
    upd, state = opt.update(jnp.asarray(g_loss), state, theta)
    theta = optax.apply_updates(theta, upd)
    np.testing.assert_allclose(theta, want[i], rtol=1e-12, atol=1e-14)
  np.testing.assert_array_equal(want[0], 0.0)  # the first step does not move (m starts at 0)


def test_make_optimizer():
  assert isinstance(training.make_optimizer("adam", 1e-3), optax.GradientTransformation)
  assert isinstance(training.make_optimizer("burda_adam", 1e-3), optax.GradientTransformation)
  with pytest.raises(ValueError, match="optimizer"):
    training.make_optimizer("sgd", 1e-3)


# ----------------------------------------------------------------------------- loss and step


def _tiny():
  return vae.VAE((4, 4, 1), (2,), ((8,),))


def _grey(n, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, 4, 4, 1)).astype(np.float32)


def test_make_loss_is_the_negative_bound():
  model = _tiny()
  params = model.init(jax.random.key(0))
  x = (_grey(3) > 0.5).astype(np.float32)
  with jax.debug_key_reuse(False):  # same samples for the loss and its oracle
    key = jax.random.key(1)
    lw = models.log_weights(model, params, x, key, 5)
    for name, reduce in (("elbo", objectives.elbo), ("iwae", objectives.iwae_bound)):
      loss, aux = losses.make_loss(model, name, 5)(params, x, key, 0)
      np.testing.assert_allclose(loss, -jnp.mean(reduce(lw)), rtol=1e-6)
      np.testing.assert_allclose(aux["elbo"], jnp.mean(objectives.elbo(lw)), rtol=1e-6)
  with pytest.raises(ValueError, match="estimator must be one of"):
    losses.make_loss(model, "wake-sleep", 5)


def test_one_name_per_bound_vae_is_not_an_alias_of_elbo():
  model = _tiny()
  with pytest.raises(ValueError, match="estimator must be one of"):
    losses.make_loss(model, "vae", 5)
  with pytest.raises(ValueError, match="bound must be 'iwae' or 'elbo'"):
    losses.make_loss(model, "reinforce", 5, bound="vae")


_ESTIMATOR_CASES = [
    ("dreg", {}), ("piwae", {"num_groups": 2}), ("piwae_dreg", {"num_groups": 2}),
    ("miwae", {"num_groups": 2}), ("ciwae", {"beta": 0.05}), ("stl", {}), ("rws", {}),
    ("rws_dreg", {}), ("reinforce", {}), ("vimco", {}), ("renyi", {"alpha": 0.5}),
    ("renyi_dreg", {"alpha": 0.5})]


def test_every_estimator_of_make_loss_is_tested():
  tested = {name for name, _ in _ESTIMATOR_CASES} | {"elbo", "iwae"}
  assert tested == set(losses.BOUND_ESTIMATORS) | set(losses.SURROGATE_ESTIMATORS)
  assert not set(losses.BOUND_ESTIMATORS) & set(losses.SURROGATE_ESTIMATORS)


@pytest.mark.parametrize("objective,kwargs", _ESTIMATOR_CASES)
def test_estimator_objectives_step_and_equal_the_negative_bound(objective, kwargs):
  model = _tiny()
  params = model.init(jax.random.key(0))
  x = (_grey(3) > 0.5).astype(np.float32)
  with jax.debug_key_reuse(False):  # same samples for the loss and its oracle
    key = jax.random.key(1)
    lw = models.log_weights(model, params, x, key, 8)
    loss_fn = losses.make_loss(model, objective, 8, **kwargs)
    loss, aux = loss_fn(params, x, key, 0)
  want = {"miwae": objectives.miwae_bound(lw, 2),
          "ciwae": objectives.ciwae_bound(lw, 0.05),
          "renyi": objectives.renyi_bound(lw, 0.5),
          "renyi_dreg": objectives.renyi_bound(lw, 0.5)}.get(objective, objectives.iwae_bound(lw))
  np.testing.assert_allclose(loss, -jnp.mean(want), rtol=1e-6)
  np.testing.assert_allclose(aux["elbo"], jnp.mean(objectives.elbo(lw)), rtol=1e-6)
  opt = optax.adam(1e-3)
  step = training.make_train_step(loss_fn, opt, seed=0, dynamic_binarization=True)
  state, metrics = step(training.init_state(params, opt), _grey(4))
  assert bool(metrics["finite"]) and int(state.step) == 1
  assert np.isfinite(float(metrics["loss"]))


def test_dreg_and_piwae_gradients_route_by_network():
  """Same samples: DReG's decoder gradient is IWAE's; PIWAE's decoder gradient is IWAE(MK)'s and
  its encoder gradient is MIWAE(M, K)'s (exact identities of the routing)."""
  model = _tiny()
  params = model.init(jax.random.key(0))
  x = (_grey(3) > 0.5).astype(np.float32)

  def grad(objective, **kw):
    with jax.debug_key_reuse(False):
      f = losses.make_loss(model, objective, 8, **kw)
      return jax.grad(lambda p: f(p, x, jax.random.key(1), 0)[0])(params)["params"]

  close = lambda a, b: jax.tree.all(jax.tree.map(
      lambda u, v: bool(np.allclose(u, v, rtol=1e-5, atol=1e-6)), a, b))
  g_iwae, g_dreg = grad("iwae"), grad("dreg")
  g_miwae, g_piwae = grad("miwae", num_groups=2), grad("piwae", num_groups=2)
  assert close(g_dreg["decoder"], g_iwae["decoder"])
  assert not close(g_dreg["encoders_0"], g_iwae["encoders_0"])
  assert close(g_piwae["decoder"], g_iwae["decoder"])
  assert close(g_piwae["encoders_0"], g_miwae["encoders_0"])
  with pytest.raises(ValueError, match="num_groups"):
    losses.make_loss(model, "piwae", 8)
  with pytest.raises(ValueError, match="num_groups"):
    losses.make_loss(model, "miwae", 8, num_groups=3)
  with pytest.raises(ValueError, match="beta"):
    losses.make_loss(model, "ciwae", 8)


def test_train_step_is_traced_once():
  model = _tiny()
  traces = []
  base = losses.make_loss(model, "iwae", 3)

  def loss(params, x, key, step):
    traces.append(1)  # Python side effect: runs once per trace
    return base(params, x, key, step)

  opt = optax.adam(1e-3)
  step = training.make_train_step(loss, opt, seed=0, dynamic_binarization=True)
  state = training.init_state(model.init(jax.random.key(0)), opt)
  for i in range(5):
    state, metrics = step(state, _grey(4, seed=i))
  assert len(traces) == 1
  assert int(state.step) == 5 and bool(metrics["finite"])


def test_the_loss_gets_the_step_of_the_state_traced():
  """Every loss is ``(params, x, key, step)``: the step is the state's, traced (one compile),
  also with microbatches."""
  def loss(params, x, key, step):
    del key
    value = jnp.sum(params["w"]) * jnp.mean(x)
    return value, {"step_seen": step}

  opt = optax.sgd(0.0)
  for mb in (None, 2):
    step = training.make_train_step(chex.assert_max_traces(loss, n=1), opt, seed=0,
                                    microbatch=mb)
    state = training.init_state({"w": jnp.ones(2)}, opt)
    seen = []
    for _ in range(3):
      state, metrics = step(state, _grey(4))
      seen.append(int(metrics["step_seen"]))
    assert seen == [0, 1, 2]
    chex.clear_trace_counter()
  with pytest.raises(TypeError, match=r"loss_fn must be a function \(params, x, key, step\) "
                                      r"-> \(loss, metrics\)"):
    training.make_train_step("iwae", opt, seed=0)
  no_such_setting = {"pass_step": True}  # gone: every loss gets the step
  with pytest.raises(TypeError, match="pass_step"):
    training.make_train_step(loss, opt, seed=0, **no_such_setting)


def test_microbatched_step_is_the_mean_of_microbatch_gradients():
  """``microbatch=m``: loss, metrics and gradient are the means over the B/m microbatches, each
  with key ``split(key_loss, B/m)[i]``; the Adam update is the one of that mean gradient."""
  model = _tiny()
  params = model.init(jax.random.key(0))
  loss_fn = losses.make_loss(model, "iwae", 5)
  images = _grey(6)
  opt = optax.adam(1e-2)
  step = training.make_train_step(loss_fn, opt, seed=3, dynamic_binarization=True, microbatch=2)
  state, metrics = step(training.init_state(params, opt), images)

  key_bin, key_loss = jax.random.split(training.step_key(3, 0))
  from dgmjax import data
  x = data.binarize(key_bin, images)
  keys = jax.random.split(key_loss, 3)
  grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  parts = [grad_fn(params, x[2 * i:2 * i + 2], keys[i], 0) for i in range(3)]
  grads = jax.tree.map(lambda *g: sum(g) / 3, *[p[1] for p in parts])
  np.testing.assert_allclose(metrics["loss"], np.mean([p[0][0] for p in parts]), rtol=1e-6)
  np.testing.assert_allclose(metrics["elbo"], np.mean([p[0][1]["elbo"] for p in parts]), rtol=1e-6)
  updates, _ = opt.update(grads, opt.init(params), params)
  want = optax.apply_updates(params, updates)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               state.params, want)
  np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-5)


def test_microbatch_of_a_mean_loss_gives_the_full_batch_gradient():
  # A key-free loss that is a mean over images: microbatching changes nothing but rounding.
  def loss(params, x, key, step):
    del key, step
    value = jnp.mean(jnp.sum(jnp.tanh(x.reshape(x.shape[0], -1) @ params["w"]) ** 2, axis=-1))
    return value, {"bound": -value}

  params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(16, 3)), jnp.float32)}
  opt = optax.adam(1e-2)
  outs = []
  for mb in (None, 8, 4, 1):
    step = training.make_train_step(loss, opt, seed=0, microbatch=mb)
    state, m = step(training.init_state(params, opt), _grey(8))
    outs.append((state.params["w"], m["loss"]))
  for w, l in outs[1:]:
    np.testing.assert_allclose(w, outs[0][0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(l, outs[0][1], rtol=1e-6)


def test_microbatch_bad_values_raise():
  model = _tiny()
  opt = optax.adam(1e-3)
  state = training.init_state(model.init(jax.random.key(0)), opt)
  loss_fn = losses.make_loss(model, "iwae", 3)
  step = training.make_train_step(loss_fn, opt, seed=0, microbatch=4)
  with pytest.raises(ValueError, match="microbatch=4 must divide the batch size 6"):
    step(state, _grey(6))
  for bad in (0, -2, 2.5, True):
    with pytest.raises(ValueError, match="microbatch"):
      training.make_train_step(loss_fn, opt, seed=0, microbatch=bad)
  with pytest.raises(ValueError, match="post_update"):
    training.make_train_step(loss_fn, opt, seed=0, microbatch=2,
                             post_update=lambda p, aux, k, s: p)


@pytest.mark.parametrize("batch,k,want", [
    (20, 50, 20), (100, 50, 25), (1000, 50, 40), (20, 1, 20), (20, 5, 20), (7, 5000, 1),
    (96, 64, 32), (1024, 1, 1024)])
def test_auto_microbatch(batch, k, want):
  got = training.auto_microbatch(batch, k, backend="cpu")
  assert got == want and batch % got == 0 and (got * k <= 2048 or got == 1)
  assert training.auto_microbatch(batch, k, backend="gpu") == batch
  with pytest.raises(ValueError, match="batch_size"):
    training.auto_microbatch(0, k)


def test_resolve_microbatch_parses_settings_and_names_the_argument():
  r = training.resolve_microbatch
  assert r(None, 100, 50) is None and r("none", 100, 50) is None and r(" NONE ", 100, 50) is None
  assert r("25", 100, 50) == 25 and r(25, 100, 50) == 25 and r(np.int64(20), 100, 50) == 20
  assert r("100", 100, 50) is None  # the whole batch
  assert r("auto", 100, 50) == training.auto_microbatch(100, 50)
  for bad in ("half", "0", -5, 2.5, True):
    with pytest.raises(ValueError, match="--mb must be 'auto', 'none' or a positive integer"):
      r(bad, 100, 50, name="--mb")
  with pytest.raises(ValueError, match="--mb=30 must divide B=100"):
    r("30", 100, 50, name="--mb", batch_name="B")


def test_nonfinite_steps_are_skipped_and_counted():
  # loss = sum sqrt(w^2 + s) with s = mean(x): value 0 but gradient 0/0 = NaN when w = 0 and
  # s = 0; finite otherwise. A batch of NaN gives a NaN loss.
  def loss(params, x, key, step):
    del key, step
    value = jnp.sum(jnp.sqrt(jnp.square(params["w"]) + jnp.mean(x)))
    return value, {"bound": -value, "elbo": -value}

  opt = optax.sgd(0.1)
  step = training.make_train_step(loss, opt, seed=0)
  state = training.init_state({"w": jnp.zeros(3)}, opt)
  zeros, ones, nans = (np.full((2, 2), v, np.float32) for v in (0.0, 1.0, np.nan))
  state, m = step(state, zeros)  # finite loss, NaN gradient
  assert not bool(m["finite"]) and np.isfinite(float(m["loss"]))
  assert int(state.nonfinite_in_a_row) == 1 and int(state.nonfinite_total) == 1
  np.testing.assert_array_equal(state.params["w"], 0.0)
  state, m = step(state, nans)  # NaN loss
  assert int(state.nonfinite_in_a_row) == 2
  state = state.replace(params={"w": jnp.ones(3)})
  state, m = step(state, ones)  # finite: applied, the run of failures resets
  assert bool(m["finite"]) and int(state.nonfinite_in_a_row) == 0
  assert int(state.nonfinite_total) == 2 and int(state.step) == 3
  assert np.all(np.asarray(state.params["w"]) < 1.0)


def test_fit_stops_after_too_many_nonfinite_steps(tmp_path):
  model = _tiny()
  opt = optax.adam(1e-3)
  images = np.ones((16, 4, 4, 1), np.float32)
  nan_params = jax.tree.map(lambda a: a * jnp.nan, model.init(jax.random.key(0)))
  loss = losses.make_loss(model, "elbo", 1)
  # a loss from make_loss carries its model, whose outputs fit checks on the first minibatch:
  # NaN parameters are named before any step
  with pytest.raises(ValueError, match=r"not finite for 4 of 4 .*parameters hold non-finite"):
    training.fit(loss, nan_params, images, optimizer=opt, num_steps=20, batch_size=4, seed=0,
                 workdir=str(tmp_path / "checked"))
  # a loss without a model: the steps' own guard skips them, then stops
  with pytest.raises(training.NonFiniteError, match="3 consecutive"):
    training.fit(lambda p, x, k, s: loss(p, x, k, s), nan_params, images,
                 optimizer=opt, num_steps=20, batch_size=4, seed=0, workdir=str(tmp_path),
                 max_consecutive_nonfinite=3, log_every=1, checkpoint_every=4)
  events = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert events[-1]["event"] == "stopped" and events[-1]["step"] == 3
  assert sum(e.get("event") == "nonfinite_skipped" for e in events) == 3


@pytest.mark.parametrize("images, dynamic, match", [
    (np.full((8, 4, 4, 1), 255, np.uint8), False, r"binary values .* uint8 array of 0\.\.255"),
    (np.full((8, 4, 4, 1), 255, np.uint8), True, "uint8 array"),
    (np.full((8, 4, 4, 1), 0.5, np.float32), False, "binary values in {0, 1}.* for VAE"),
    (np.full((8, 4, 4, 1), 1.5, np.float32), True, r"values in \[0, 1\]"),
    (np.full((8, 4, 4, 1), np.nan, np.float32), True, "1 NaN|NaN value"),
])
def test_fit_checks_the_data_against_the_models_likelihood_before_any_work(
    tmp_path, images, dynamic, match):
  model = _tiny()
  with pytest.raises(ValueError, match=match):
    training.fit(losses.make_loss(model, "elbo", 1), model.init(jax.random.key(0)), images,
                 optimizer=optax.adam(1e-3), num_steps=2, batch_size=4, seed=0,
                 workdir=str(tmp_path / "w"), dynamic_binarization=dynamic, log_every=1,
                 checkpoint_every=2)
  assert not (tmp_path / "w").exists()  # refused before the workdir was made


def test_fit_accepts_grey_levels_when_it_binarizes_them(tmp_path):
  model = _tiny()
  state, _ = training.fit(losses.make_loss(model, "elbo", 1), model.init(jax.random.key(0)),
                          _grey(8), optimizer=optax.adam(1e-3), num_steps=2, batch_size=4,
                          seed=0, workdir=str(tmp_path), dynamic_binarization=True, log_every=1,
                          checkpoint_every=2)
  assert int(state.step) == 2


# ----------------------------------------------------------------------------- resume


def _fit(workdir, **kw):
  model = _tiny()
  images = _grey(64)
  sched = training.burda_schedule(8, 3)
  opt = training.make_optimizer("adam", sched)
  return training.fit(
      losses.make_loss(model, "iwae", 3), model.init(jax.random.key(0)), images,
      optimizer=opt, num_steps=20, batch_size=8, seed=3, workdir=str(workdir),
      dynamic_binarization=True, shuffle=True, checkpoint_every=4, log_every=2,
      learning_rate_fn=sched, **kw)


def _scalars(logdir, tag):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(str(logdir))
  acc.Reload()
  return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_writer_mirrors_the_metrics_log_across_a_kill(tmp_path):
  pytest.importorskip("tensorboard")
  _, killed = _fit(tmp_path / "b", stop_after=10, tensorboard=True)  # killed at 10, checkpoint 8
  first = _scalars(tmp_path / "b" / "tensorboard", "loss")
  assert [s for s, _ in first] == [2, 4, 6, 8, 10]
  _fit(tmp_path / "b", resume=True, tensorboard=True)
  lines = [json.loads(l) for l in open(tmp_path / "b" / "metrics.jsonl")]
  want = [(l["step"], l["loss"]) for l in lines if "loss" in l]
  got = _scalars(tmp_path / "b" / "tensorboard", "loss")  # step 10 of the killed run purged
  assert [s for s, _ in got] == [s for s, _ in want] == list(range(2, 21, 2))
  np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
  assert [s for s, _ in _scalars(tmp_path / "b" / "tensorboard", "lr")] == list(range(2, 21, 2))
  with pytest.raises(TypeError, match="tensorboard must be"):
    _fit(tmp_path / "c", tensorboard=1.0)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
  full, summary = _fit(tmp_path / "a")
  assert summary["resumed_from"] is None
  _, killed = _fit(tmp_path / "b", stop_after=10)  # "killed" at step 10: last checkpoint is 8
  assert killed["stopped_at"] == 10
  resumed, summary = _fit(tmp_path / "b", resume=True)
  assert summary["resumed_from"] == 8
  assert int(resumed.step) == int(full.step) == 20
  for a, b in zip(jax.tree.leaves((full.params, full.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.opt_state))):
    np.testing.assert_array_equal(a, b)
  lines = lambda d: open(d / "metrics.jsonl").read().splitlines()
  assert lines(tmp_path / "a") == lines(tmp_path / "b")
  assert sorted(os.listdir(tmp_path / "b" / "checkpoints"))[-1] == "20"


def test_fit_validates_intervals(tmp_path):
  with pytest.raises(ValueError, match="multiple of"):
    training.fit(
        None, None, _grey(8), optimizer=optax.adam(1e-3), num_steps=4, batch_size=2, seed=0,
        workdir=str(tmp_path), checkpoint_every=3, log_every=2)
  with pytest.raises(ValueError, match="larger than the training set"):
    training.fit(None, None, _grey(8), optimizer=optax.adam(1e-3), num_steps=4, batch_size=9,
                 seed=0, workdir=str(tmp_path))


def test_epoch_order_is_a_seeded_permutation():
  a = training.epoch_order(10, 3, 0, shuffle=True)
  np.testing.assert_array_equal(a, training.epoch_order(10, 3, 0, shuffle=True))
  assert sorted(a) == list(range(10)) and not np.array_equal(
      a, training.epoch_order(10, 4, 0, shuffle=True))
  np.testing.assert_array_equal(training.epoch_order(5, 1, 0, shuffle=False), np.arange(5))


# ----------------------------------------------------------------------------- the first step


def test_fit_names_the_function_and_the_train_image_of_a_nan_before_the_first_step(tmp_path):
  model = _tiny()
  params = model.init(jax.random.key(0))
  images = (_grey(16) < 0.4).astype(np.float32)
  bad_image = 11  # shuffled into the first minibatch of seed 3 below (checked)
  assert bad_image in training.epoch_order(16, 0, 3, shuffle=True)[:8]
  images[bad_image] = 1.0

  class NaNOnImage(vae.VAE):
    """The tiny VAE with a likelihood that is NaN for an all-white image (a bug)."""

    def log_likelihood(self, params, x, z):
      out = super().log_likelihood(params, x, z)
      return jnp.where(jnp.all(x == 1.0, axis=(1, 2, 3)), jnp.nan, out)

  loss = losses.make_loss(NaNOnImage((4, 4, 1), (2,), ((8,),)), "iwae", 2)
  with pytest.raises(ValueError, match=rf"what NaNOnImage returns in the first step of "
                                       rf"training.fit is not finite for 1 of 8 image\(s\) "
                                       rf"\(train_images \[{bad_image}\]\).*log_likelihood "
                                       rf"returns nan for train_images\[{bad_image}\]"):
    training.fit(loss, params, images, optimizer=optax.adam(1e-3), num_steps=2, batch_size=8,
                 seed=3, workdir=str(tmp_path / "run"), shuffle=True)
  ckpts = tmp_path / "run" / "checkpoints"
  assert not ckpts.exists() or not os.listdir(ckpts)
  # the workdir's lock was released: a corrected model trains in the same workdir
  training.fit(losses.make_loss(model, "iwae", 2), params, images, optimizer=optax.adam(1e-3),
               num_steps=1, batch_size=8, seed=3, workdir=str(tmp_path / "run"), shuffle=True,
               checkpoint_every=1, log_every=1)


# ------------------------------------------------------------- learning rates (issue: settings)


def _quadratic(p, x, key, step=None):  # also the four-argument loss signature
  del key, step
  return jnp.sum((p["w"] - jnp.mean(x)) ** 2), {}


@pytest.mark.parametrize("optimizer", [
    optax.adam(-1e-3), optax.sgd(-0.1), optax.adamw(-1e-3), optax.lion(-1e-4),
    optax.chain(optax.clip_by_global_norm(1.0), optax.adam(-1e-3)),
    optax.scale_by_adam(),   # a scaling without optax.scale(-lr): ascends
], ids=["adam", "sgd", "adamw", "lion", "chain", "scale_by_adam_alone"])
def test_negative_learning_rate_through_an_optax_optimiser_is_refused(optimizer):
  with pytest.raises(ValueError, match="optimizer ascends"):
    training.make_train_step(_quadratic, optimizer, seed=0)
  with pytest.raises(ValueError, match="optimizer ascends"):
    training.init_state({"w": jnp.zeros((3,))}, optimizer)


def test_negative_learning_rate_in_inject_hyperparams_state_is_refused():
  opt = optax.inject_hyperparams(optax.adam)(learning_rate=-1e-3)
  with pytest.raises(ValueError, match=r"learning_rate=-0\.001"):
    training.init_state({"w": jnp.zeros((3,))}, opt)


def test_fit_refuses_a_negative_optax_learning_rate_before_any_work(tmp_path):
  x = np.full((8, 4), 0.5, np.float32)
  with pytest.raises(ValueError, match="optimizer ascends"):
    training.fit(_quadratic, {"w": jnp.zeros((4,))}, x, optimizer=optax.adam(-1e-3), num_steps=2,
                 batch_size=4, seed=0, workdir=str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


WARMUP = optax.linear_schedule(0.0, 1e-3, 100)


@pytest.mark.parametrize("optimizer", [
    optax.adam(WARMUP), optax.adam(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)),
    optax.inject_hyperparams(optax.adam)(learning_rate=WARMUP), optax.lion(1e-4),
    optax.chain(optax.scale_by_sign(), optax.scale(-1e-3)), optax.adafactor(1e-3),
    optax.MultiSteps(optax.adam(1e-3), 4), optax.adamw(1e-3), optax.lbfgs(),
    optax.masked(optax.adam(1e-3), {"w": True}), training.burda_adam(1e-3),
    training.burda_adam(WARMUP), optax.adam(0.0),
], ids=["warmup", "warmup_cosine", "inject_warmup", "lion", "sign", "adafactor", "multisteps",
        "adamw", "lbfgs", "masked", "burda_adam", "burda_adam_warmup", "zero_rate_unseen"])
def test_optimisers_that_descend_or_warm_up_from_zero_are_accepted(optimizer):
  training.init_state({"w": jnp.zeros((3,))}, optimizer)
  training.make_train_step(_quadratic, optimizer, seed=0)


def test_fit_accepts_a_warmup_schedule_from_zero(tmp_path):
  x = np.full((8, 4), 0.5, np.float32)
  state, _ = training.fit(_quadratic, {"w": jnp.zeros((4,))}, x, optimizer=optax.adam(WARMUP),
                          learning_rate_fn=WARMUP, num_steps=2, batch_size=4, seed=0,
                          workdir=str(tmp_path / "w"), checkpoint_every=2, log_every=1)
  assert int(state.step) == 2


@pytest.mark.parametrize("rate,match", [
    (0.0, r"> 0, got 0\.0"), (-1e-3, "> 0"), (float("nan"), "nan"), (float("inf"), "inf"),
    (True, "bool"), ("1e-3", "str"),
    (optax.constant_schedule(0.0), "0 at steps"),
    (optax.linear_schedule(1e-3, -1e-3, 10), "at step 10 is"),
    (optax.constant_schedule(float("nan")), "at step 0 is nan"),
], ids=["zero", "negative", "nan", "inf", "bool", "str", "schedule_zero", "schedule_negative_later",
        "schedule_nan"])
def test_burda_adam_and_make_optimizer_refuse_bad_learning_rates(rate, match):
  with pytest.raises(ValueError, match=f"learning_rate.*{match}"):
    training.burda_adam(rate)
  with pytest.raises(ValueError, match=f"learning_rate.*{match}"):
    training.make_optimizer("adam", rate)


def test_warmup_schedule_from_zero_passes_check_learning_rate():
  training.check_learning_rate(WARMUP)
  training.make_optimizer("burda_adam", WARMUP)


@pytest.mark.parametrize("kwargs,match", [
    (dict(b1=1.0), r"b1 must be .*\[0, 1\)"), (dict(b1=-0.1), "b1"), (dict(b2=float("nan")), "b2"),
    (dict(eps=-1.0), "eps"), (dict(b1=True), "b1"),
])
def test_burda_adam_refuses_bad_decays_and_eps(kwargs, match):
  with pytest.raises(ValueError, match=match):
    training.burda_adam(1e-3, **kwargs)


@pytest.mark.parametrize("call,match", [
    (lambda: training.burda_epochs(0), "num_passes must be an int >= 1"),
    (lambda: training.burda_epochs(True), "num_passes must be an int"),
    (lambda: training.burda_learning_rates(-1), "num_passes must be an int >= 1"),
    (lambda: training.burda_learning_rates(3, reference_rounding="yes"), "reference_rounding"),
    (lambda: training.burda_schedule(10, reference_rounding=1), "reference_rounding"),
], ids=["epochs_zero", "epochs_bool", "rates_negative", "rates_rounding", "schedule_rounding"])
def test_burda_schedule_settings_are_checked(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("call, match", [
    (lambda: training.auto_microbatch(100, 5, max_rows=True), "max_rows must be an int"),
    (lambda: training.auto_microbatch(100.0, 5), "batch_size must be an int"),
    (lambda: training.auto_microbatch(100, 0), "num_samples must be an int >= 1"),
    (lambda: training.step_key(-1, 0), "seed must be an int >= 0"),
    (lambda: training.step_key(1.5, 0), "seed must be an int"),
    (lambda: training.epoch_order(-1, 0, 0, shuffle=True), "num_examples must be an int >= 0"),
    (lambda: training.epoch_order(10, -1, 0, shuffle=True), "epoch must be an int >= 0"),
    (lambda: training.epoch_order(10, 0, -3, shuffle=True), "seed must be an int >= 0"),
    (lambda: training.epoch_order(10, 0, 0, shuffle="no"), "shuffle must be a bool"),
], ids=["max_rows_bool", "batch_float", "k_zero", "seed_negative", "seed_float",
        "examples_negative", "epoch_negative", "order_seed_negative", "shuffle_string"])
def test_step_and_order_settings_are_refused_naming_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
