"""Tests of dgmjax.parallel: vmapped runs equal runs done one by one; sharded training on 4 forced
host devices equals single-device training."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import losses, parallel, training
from dgmjax.models import vae

from tests.conftest import REPO_ROOT

MODEL = vae.VAE((4, 4, 1), (2,), ((8,),))
_init = jax.jit(MODEL.init)


def _images(n, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, 4, 4, 1)).astype(np.float32)


def _alone(loss_fn, params, batches, seed, opt):
  """One run on its own: training.make_train_step, the reference."""
  step = training.make_train_step(loss_fn, opt, seed=seed, dynamic_binarization=True)
  state, metrics = training.init_state(params, opt), []
  for x in batches:
    state, m = step(state, x)
    metrics.append(m)
  return state, metrics


def _run(states, r):
  """Run ``r`` of stacked states, on the host (no per-leaf compilation)."""
  return jax.tree.map(lambda a: a[r], jax.device_get(states))


def _assert_trees_close(a, b, rtol=2e-5, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_vmapped_runs_equal_runs_one_by_one():
  opt = training.make_optimizer("adam", 1e-2)
  seeds = [0, 5]
  params = [_init(jax.random.key(10 + s)) for s in seeds]
  images = _images(12)
  num_steps, batch = 2, 4
  loss = losses.make_loss(MODEL, "iwae", 3)
  traces = []

  def counted(p, x, k, step):  # runs at trace time only: counts the compilations of the step
    traces.append(1)
    return loss(p, x, k, step)

  step = parallel.make_runs_train_step(counted, opt, dynamic_binarization=True)
  states = parallel.init_runs(params, opt)
  hist = []
  for s in range(num_steps):
    states, m = step(states, parallel.runs_batches(images, seeds, s, batch), jnp.array(seeds))
    hist.append(m)
  assert len(traces) == 1  # one compilation for both steps (seeds are traced)
  for r, (seed, p) in enumerate(zip(seeds, params)):
    batches = [parallel.runs_batches(images, [seed], s, batch)[0] for s in range(num_steps)]
    state, metrics = _alone(loss, p, batches, seed, opt)
    _assert_trees_close(_run(states, r).params, state.params)
    _assert_trees_close(_run(states, r).opt_state, state.opt_state)
    for s in range(num_steps):
      for k in ("loss", "bound", "elbo", "grad_norm"):
        np.testing.assert_allclose(hist[s][k][r], metrics[s][k], rtol=2e-5, atol=2e-6)
  assert int(states.step[0]) == num_steps
  # The runs really differ (different seeds and inits), so the comparison is not vacuous.
  assert float(jnp.abs(hist[-1]["loss"][0] - hist[-1]["loss"][1])) > 1e-3


def test_vae_and_iwae_rows_share_a_group_and_groups_share_a_program():
  opt = training.make_optimizer("adam", 1e-2)
  images = _images(8, seed=1)
  p0, p1, p2 = (_init(jax.random.key(i)) for i in range(3))
  k5 = parallel.bounds_loss(MODEL, ("elbo", "iwae"), 5)
  k1 = losses.make_loss(MODEL, "elbo", 1)
  groups = [parallel.RunGroup(k5, opt, with_index=True, dynamic_binarization=True),
            parallel.RunGroup(k1, opt, dynamic_binarization=True)]
  step = parallel.make_groups_train_step(groups)
  states = (parallel.init_runs([p0, p1], opt), parallel.init_runs([p2], opt))
  seeds = (jnp.array([3, 3]), jnp.array([4]))
  indices = (jnp.array([0, 1]), None)
  for s in range(2):
    xs = (parallel.runs_batches(images, [3, 3], s, 4), parallel.runs_batches(images, [4], s, 4))
    states, metrics = step(states, xs, seeds, indices)
  # Each run equals make_loss with its own objective and K, trained alone.
  for (objective, k, p, seed, st) in [("elbo", 5, p0, 3, _run(states[0], 0)),
                                      ("iwae", 5, p1, 3, _run(states[0], 1)),
                                      ("elbo", 1, p2, 4, _run(states[1], 0))]:
    batches = [parallel.runs_batches(images, [seed], s, 4)[0] for s in range(2)]
    ref, _ = _alone(losses.make_loss(MODEL, objective, k), p, batches, seed, opt)
    _assert_trees_close(st.params, ref.params)
  assert metrics[0]["loss"].shape == (2,) and metrics[1]["loss"].shape == (1,)
  with pytest.raises(ValueError, match="bounds must be"):
    parallel.bounds_loss(MODEL, ("dreg",), 5)
  assert not hasattr(parallel, "bound_objectives_loss")


def test_stack_unstack_and_mesh_validation():
  trees = [{"a": jnp.full((2,), i), "b": jnp.float32(i)} for i in range(3)]
  st = parallel.stack(trees)
  assert st["a"].shape == (3, 2)
  back = parallel.unstack(st)
  assert float(back[2]["b"]) == 2.0
  with pytest.raises(ValueError, match="num_samples"):
    parallel.make_mesh(num_samples=3, devices=jax.devices() * 2)
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data", "samples")
  with pytest.raises(ValueError, match="batch size"):
    parallel.shard_batch(np.zeros((3, 2)), parallel.make_mesh(devices=jax.devices() * 2)
                         if len(jax.devices()) == 1 else mesh)


_SHARDED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_debug_key_reuse", True)
    from dgmjax import evaluation, losses, models, parallel, training
    from dgmjax.models import vae

    assert jax.device_count() == 4, jax.devices()
    model = vae.VAE((4, 4, 1), (2,), ((8,),))
    params = model.init(jax.random.key(0))
    opt = training.make_optimizer("adam", 1e-2)
    images = np.random.default_rng(0).uniform(size=(24, 4, 4, 1)).astype(np.float32)
    batches = [images[i * 8:(i + 1) * 8] for i in range(3)]

    def run(step):
      state, ms = training.init_state(params, opt), []
      for x in batches:
        state, m = step(state, x)
        ms.append({{k: float(v) for k, v in m.items()}})
      return state, ms

    loss = losses.make_loss(model, "iwae", 4)
    single = training.make_train_step(loss, opt, seed=7, dynamic_binarization=True)
    with jax.default_device(jax.devices()[0]):
      ref, ref_m = run(single)
    out = {{}}
    mesh = parallel.make_mesh()  # data = 4
    st, ms = run(parallel.make_sharded_train_step(loss, opt, mesh, seed=7,
                                                  dynamic_binarization=True))
    shard = parallel.shard_batch(batches[0], mesh)
    out["data4_shards"] = len(shard.addressable_shards)
    out["data4_shard_rows"] = shard.addressable_shards[0].data.shape[0]
    mesh2 = parallel.make_mesh(2, 2)  # data = 2, samples = 2
    loss2 = losses.make_loss(parallel.SampleSharded(model, mesh2), "iwae", 4)
    st2, ms2 = run(parallel.make_sharded_train_step(loss2, opt, mesh2, seed=7,
                                                    dynamic_binarization=True))
    # a surrogate estimator (the gradient views of models.log_weight_terms) over the sharded model
    dreg = training.make_train_step(losses.make_loss(model, "dreg", 4), opt, seed=7,
                                    dynamic_binarization=True)
    with jax.default_device(jax.devices()[0]):
      ref3, ref3_m = run(dreg)
    st3, ms3 = run(parallel.make_sharded_train_step(losses.make_loss(
        parallel.SampleSharded(model, mesh2), "dreg", 4), opt, mesh2, seed=7,
        dynamic_binarization=True))
    # the contract wrapper: the wrapped model's log-weights and k-sample estimate, its optional
    # functions, and K checked against the "samples" axis
    sm = parallel.SampleSharded(model, mesh2)
    binary = (images[:16] > 0.5).astype(np.float32)  # the Bernoulli likelihood's support
    with jax.debug_key_reuse(False):  # the same samples, sharded and not
      k = jax.random.key(3)
      lw_s = jax.jit(lambda p, xx, kk: models.log_weights(sm, p, xx, kk, 4))(params, binary[:8], k)
      lw_m = models.log_weights(model, params, binary[:8], k, 4)
      kw = dict(num_samples=8, sample_chunk=4, batch_size=8)
      nll_s = evaluation.log_likelihood(sm, params, binary, k, **kw)
      nll_m = evaluation.log_likelihood(model, params, binary, k, **kw)
    out["wrapped_log_weights_max_abs_diff"] = float(np.max(np.abs(np.asarray(lw_s) - lw_m)))
    out["wrapped_log_weights_sharding"] = list(lw_s.sharding.spec)
    out["wrapped_nll_max_abs_diff"] = float(np.max(np.abs(nll_s - nll_m)))
    out["wrapped_has_kl"] = models.base.has(sm, "kl")
    try:
      models.log_weights(sm, params, binary[:8], jax.random.key(4), 3)
      out["odd_k_error"] = ""
    except ValueError as e:
      out["odd_k_error"] = str(e)
    for name, (s, m), (r, r_m) in (("data4", (st, ms), (ref, ref_m)),
                                   ("data2_samples2", (st2, ms2), (ref, ref_m)),
                                   ("dreg_data2_samples2", (st3, ms3), (ref3, ref3_m))):
      out[name + "_param_max_abs_diff"] = max(
          float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
          for a, b in zip(jax.tree.leaves(s.params), jax.tree.leaves(r.params)))
      out[name + "_metric_max_rel_diff"] = max(
          abs(a[k] - b[k]) / max(abs(b[k]), 1e-6) for a, b in zip(m, r_m) for k in b)
    out["param_change"] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                              for a, b in zip(jax.tree.leaves(ref.params),
                                              jax.tree.leaves(params)))
    out["sharded_params_replicated"] = all(
        a.sharding.is_fully_replicated for a in jax.tree.leaves(st.params))
    print("RESULT " + json.dumps(out))
""")


def test_sharded_training_on_4_host_devices_matches_one_device():
  # four host devices, with the session's compile flags (tests/conftest.py): the sharded and the
  # single-device runs are compiled alike
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=(
      os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip())
  proc = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT.format(root=REPO_ROOT)],
                        env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
  out = json.loads(line[len("RESULT "):])
  assert out["data4_shards"] == 4 and out["data4_shard_rows"] == 2  # the batch is really split
  assert out["sharded_params_replicated"]
  assert out["param_change"] > 1e-3  # three Adam steps at lr 1e-2 moved the parameters
  for name in ("data4", "data2_samples2", "dreg_data2_samples2"):
    assert out[name + "_param_max_abs_diff"] < 1e-5, out   # float rounding only
    assert out[name + "_metric_max_rel_diff"] < 1e-5, out
  assert out["wrapped_log_weights_max_abs_diff"] < 1e-5, out
  assert out["wrapped_log_weights_sharding"] == ["samples", "data"], out
  assert out["wrapped_nll_max_abs_diff"] < 1e-5, out
  assert out["wrapped_has_kl"], out
  assert "num_samples=3 must be divisible by the mesh's 'samples' axis (2)" in out["odd_k_error"]


@pytest.mark.slow  # end to end; the vmapped step itself is tested above
def test_vmap_table_smoke(tmp_path):
  from experiments.iwae import vmap_table
  res = vmap_table.train_table(dataset="digits", model_name="custom", latent_dims=(2,),
                               hidden_dims=((8,),), epochs=0.05, seeds=(0,), eval_images=6,
                               eval_k=20, bound_ks=(5,), compare_steps=2, log=lambda *_: None)
  assert [(r["objective"], r["k"]) for r in res["rows"]] == list(vmap_table.ROWS)
  t = res["timing"]
  assert len(t["alone_step_ms"]) == len(vmap_table.ROWS) and t["together_step_ms"] > 0
  assert t["alone_sum_step_ms"] == pytest.approx(sum(t["alone_step_ms"].values()))
  vmap_table.plot_history(res, str(tmp_path / "curves.png"))
  assert (tmp_path / "curves.png").stat().st_size > 1000
  assert res["steps"] >= 8 and all(np.isfinite(r["test_nll"]) for r in res["rows"])
  assert all(r["elbo"] <= r["iwae_5"] + 1e-3 for r in res["rows"])
  # rows with the same K and seed start from the same weights and see the same data and noise,
  # so VAE and IWAE at K=5 differ only by their objective
  nll = {(r["objective"], r["k"]): r["test_nll"] for r in res["rows"]}
  assert nll[("vae", 5)] != nll[("iwae", 5)]
  assert "| VAE | 1 |" in vmap_table.format_table(res)


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize("tree,match", [
    ({"a": jnp.zeros(3), "b": jnp.zeros(2)},
     r"one leading run size R .*\['a'\] has 3, \['b'\] has 2"),
    ({"a": jnp.zeros(())}, r"leading run axis .*\['a'\] is a scalar"),
    ({"a": jnp.zeros((0, 2))}, "at least one run"),
    ({}, "at least one array leaf"),
], ids=["different_leading_sizes", "scalar_leaf", "zero_runs", "no_leaves"])
def test_unstack_refuses_trees_without_one_run_axis(tree, match):
  with pytest.raises(ValueError, match=match):
    parallel.unstack(tree)


@pytest.mark.parametrize("trees,match", [
    ([], "trees must hold at least one pytree"),
    ([jnp.zeros(2), jnp.zeros(3)], r"equal leaf shapes: .*trees\[1\] has shape \(3,\)"),
    ([{"a": 1}, {"b": 1}], r"one structure: trees\[1\]"),
], ids=["empty", "shape_mismatch", "structure_mismatch"])
def test_stack_refuses_trees_that_do_not_match(trees, match):
  with pytest.raises(ValueError, match=match):
    parallel.stack(trees)


@pytest.mark.parametrize("value,match", [
    (0, "global_batch_size must be an int >= 1, got 0"),
    (-4, "global_batch_size must be an int >= 1"),
    (True, "global_batch_size must be an int, got the bool"),
    (2.5, "global_batch_size must be an int"),
])
def test_process_batch_slice_refuses_bad_sizes(value, match):
  with pytest.raises(ValueError, match=match):
    parallel.process_batch_slice(value)
  assert parallel.process_batch_slice(8) == slice(0, 8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(seeds=[0], step=0, batch_size=0), "batch_size must be an int >= 1"),
    (dict(seeds=[0], step=0, batch_size=True), "batch_size must be an int"),
    (dict(seeds=[0], step=-1, batch_size=2), "step must be an int >= 0"),
    (dict(seeds=[0], step=1.5, batch_size=2), "step must be an int"),
    (dict(seeds=[], step=0, batch_size=2), "seeds must hold one seed per run"),
    (dict(seeds=[-1], step=0, batch_size=2), r"seeds\[0\] must be an int >= 0"),
], ids=["batch_zero", "batch_bool", "step_negative", "step_float", "no_seeds", "seed_negative"])
def test_runs_batches_settings_are_checked(kwargs, match):
  with pytest.raises(ValueError, match=match):
    parallel.runs_batches(np.zeros((10, 2), np.float32), **kwargs)


def test_mesh_and_group_settings_are_checked():
  with pytest.raises(ValueError, match="num_samples must be an int, got the bool"):
    parallel.make_mesh(num_samples=True)
  with pytest.raises(ValueError, match="num_data must be an int >= 1"):
    parallel.make_mesh(num_data=0)
  with pytest.raises(ValueError, match="groups must hold at least one RunGroup"):
    parallel.make_groups_train_step([])
  with pytest.raises(ValueError, match="params must hold one parameter pytree per run"):
    parallel.init_runs([], training.make_optimizer("adam", 1e-3))


def test_runs_refuse_an_ascending_optimiser():
  import optax
  loss = lambda p, x, k, step=None: (jnp.sum(p["w"] ** 2), {})
  with pytest.raises(ValueError, match="optimizer ascends"):
    parallel.make_runs_train_step(loss, optax.adam(-1e-3))
  with pytest.raises(ValueError, match="optimizer ascends"):
    parallel.make_groups_train_step([parallel.RunGroup(loss, optax.sgd(-0.1))])
  with pytest.raises(ValueError, match="optimizer ascends"):
    parallel.init_runs([{"w": jnp.zeros(2)}] * 2, optax.adam(-1e-3))
