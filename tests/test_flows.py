"""Tests of dgmjax.flows: log-determinants against jax.jacobian, round trips, one-pass structure,
invertibility under training, bad inputs, the flow distribution and flows seen as VAEs."""

import ast
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

from dgmjax import distributions, objectives
from dgmjax import flows as F
from dgmjax.flows import autoregressive
from dgmjax.nn import FlowModule
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("qr_num_reflections_float", lambda: F.QRLinear(3, num_reflections=2.0),
     TypeError, r"num_reflections must be an int, got float"),
    ("qr_num_reflections_zero", lambda: F.QRLinear(3, num_reflections=0),
     ValueError, r"num_reflections must be an int >= 1, got 0"),
    ("qr_event_size_bool", lambda: F.QRLinear(True),
     TypeError, r"event_size must be an int, got the bool"),
    ("lu_event_size_float", lambda: F.LULinear(3.0),
     TypeError, r"event_size must be an int, got float"),
    ("lu_event_size_zero", lambda: F.LULinear(0),
     ValueError, r"event_size must be an int >= 1"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _accept_numpy_flow_sizes():
  flow = F.QRLinear(np.int64(3), num_reflections=np.int32(2))
  assert flow.event_size == 3 and flow.num_reflections == 2


ACCEPTS = [
    ("numpy_int_flow_sizes", _accept_numpy_flow_sizes),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


# ----------------------------------------------------------------------------- QR linear flow


def _qr_with_vectors(vectors, d=3):
  b = F.QRLinear(d, num_reflections=len(vectors))
  rng = np.random.default_rng(3)
  params = F.QRParams(vectors=jnp.asarray(vectors, jnp.float32),
                      upper=jnp.asarray(rng.normal(size=(d, d)), jnp.float32),
                      log_diag=jnp.asarray(0.3 * rng.normal(size=d), jnp.float32),
                      bias=jnp.asarray(rng.normal(size=d), jnp.float32), sign=(1.0, -1.0, 1.0))
  return b, params


def _numpy_weight(vectors, params):
  """W = H_1 ... H_K R in float64, a zero vector contributing the identity."""
  d = params.log_diag.shape[0]
  q = np.eye(d)
  for v in np.asarray(vectors, np.float64):
    n2 = v @ v
    q = q @ (np.eye(d) - 2.0 * np.outer(v, v) / n2 if n2 > 0 else np.eye(d))
  r = np.triu(np.asarray(params.upper, np.float64), 1) + np.diag(
      np.asarray(params.sign) * np.exp(np.asarray(params.log_diag, np.float64)))
  return q @ r


@pytest.mark.parametrize("vectors", [
    [[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [0.3, 0.1, -1.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[1e-30, 2e-30, -1e-30], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]],
], ids=["one_zero_vector", "all_zero_vectors", "tiny_and_zero_vectors"])
def test_qr_linear_with_zero_householder_vectors_is_invertible(vectors):
  b, params = _qr_with_vectors(vectors)
  u = jnp.asarray(np.random.default_rng(4).normal(size=(16, 3)), jnp.float32)
  x, ld = b.forward_and_log_det(params, u)
  back, ld_inv = b.inverse_and_log_det(params, x)
  assert np.all(np.isfinite(x)) and np.all(np.isfinite(ld))
  np.testing.assert_allclose(back, u, atol=1e-5)
  np.testing.assert_allclose(ld, -ld_inv, atol=1e-6)
  np.testing.assert_allclose(ld, np.full(16, float(jnp.sum(params.log_diag))), rtol=1e-6)
  # the oracle: the tiny vector still reflects along its direction, a zero one is the identity
  w = _numpy_weight(vectors, params)
  np.testing.assert_allclose(b.weight(params), w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x, np.asarray(u, np.float64) @ w.T + np.asarray(params.bias),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.linalg.slogdet(w)[1], float(jnp.sum(params.log_diag)), rtol=1e-5)
  # gradients are finite at the zero vector (training cannot step into NaN)
  grads = jax.grad(lambda p: jnp.sum(F.Flow(b).log_prob(p, x)))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def perturb(params, seed, scale=0.3):
  """Params moved off their identity initialisation (NumPy noise: no extra XLA compilation)."""
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda l: l + jnp.asarray(scale * rng.standard_normal(l.shape), l.dtype), params)


def random_params(bijector, seed=0, scale=0.3, dtype=None):
  """Params with the structure of ``bijector.init`` filled with ``N(0, scale^2)`` NumPy noise.

  ``jax.eval_shape`` traces ``init`` without compiling it; every bijector here is invertible for
  any finite param values, so random params exercise the maths away from the identity init.
  """
  shapes = jax.eval_shape(functools.partial(bijector.init, dtype=dtype), jax.random.key(0))
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def randn(seed, shape, dtype=None):
  return jnp.asarray(np.random.RandomState(seed).standard_normal(shape),
                     dtype or jnp.result_type(float))


BIJECTORS = {
    "lu": lambda: F.LULinear(4),
    "qr_2reflections": lambda: F.QRLinear(4, num_reflections=2),
    "qr": lambda: F.QRLinear(3, use_bias=False),
    "conv1x1_qr": lambda: F.InvertibleConv1x1((2, 2, 3), "qr"),
    "maf_random_order": lambda: F.MAF(5, (12,), order=F.random_order(5, 0), activation="tanh"),
    "maf_context": lambda: F.MAF(3, (8,), context_size=2),
    "iaf_context": lambda: F.IAF(3, (8,), order="reversed", context_size=2, log_scale_clamp=2.0),
    "made_d1": lambda: F.MAF(1, (4,), context_size=2),
    "coupling_half_clamped": lambda: F.AffineCoupling(5, F.half_mask(5, 1), (8,),
                                                      log_scale_clamp=3.0),
    "permute": lambda: F.random_permutation(5, 1),
    "invert_maf": lambda: F.Invert(F.MAF(3, (8,))),
    "real_nvp_actnorm_permute": lambda: F.real_nvp(4, 3, (8,), actnorm=True, permute_seed=0),
    "iaf_chain": lambda: F.inverse_autoregressive_flow(3, 2, (8,)),
    "glow_step": lambda: F.Chain((F.ActNorm((2, 2, 3)), F.InvertibleConv1x1((2, 2, 3)))),
}


def _setup(name, batch=(), dtype=None):
  b = BIJECTORS[name]()
  params = random_params(b, 0, dtype=dtype)
  u = randn(1, batch + b.event_shape, dtype)
  ctx = randn(2, batch + (b.context_size,), dtype) if b.context_size else None
  return b, params, u, ctx


@pytest.mark.parametrize("name", list(BIJECTORS))
def test_bijector_contract_x64(name, x64):
  """log|det| = log|det jax.jacobian| both ways, round trip, batch = vmap, all under jit."""
  b, params, u, ctx = _setup(name, batch=(3,))
  es = b.event_shape
  ctx_axis = None if ctx is None else 0

  @jax.jit  # one compilation per bijector keeps the suite fast
  def check(params, u, ctx):
    x, ld = b.forward_and_log_det(params, u, ctx)
    u2, ild = b.inverse_and_log_det(params, x, ctx)
    c0 = None if ctx is None else ctx[0]
    jac = jax.jacfwd(lambda v: b.forward(params, v.reshape(es), c0).reshape(-1))(u[0].reshape(-1))
    jac_inv = jax.jacfwd(
        lambda v: b.inverse(params, v.reshape(es), c0).reshape(-1))(x[0].reshape(-1))
    x_vmap, ld_vmap = jax.vmap(b.forward_and_log_det, in_axes=(None, 0, ctx_axis))(params, u, ctx)
    return (x, ld, u2, ild, jnp.linalg.slogdet(jac), jnp.linalg.slogdet(jac_inv)[1], x_vmap,
            ld_vmap)

  x, ld, u2, ild, (sign, want), want_inv, x_vmap, ld_vmap = check(params, u, ctx)
  assert x.shape == u.shape and x.dtype == jnp.float64 and ld.shape == (3,)
  assert sign != 0
  np.testing.assert_allclose(ld[0], want, atol=1e-10, rtol=1e-10)
  np.testing.assert_allclose(ild[0], want_inv, atol=1e-10, rtol=1e-10)
  np.testing.assert_allclose(ild, -ld, atol=1e-10)
  np.testing.assert_allclose(u2, u, atol=1e-10)
  np.testing.assert_allclose(x_vmap, x, atol=1e-12)
  np.testing.assert_allclose(ld_vmap, ld, atol=1e-12)


def test_round_trip_float32():
  """All vector bijectors chained, and a Glow step, round-trip to 1e-5 in float32 under jit."""
  kinds = [F.LULinear(4), F.MAF(4, (16,), context_size=2),
           F.IAF(4, (16,), order="reversed", context_size=2),
           F.AffineCoupling(4, F.alternating_mask(4), (16,), context_size=2), F.ActNorm(4),
           F.Reverse(4), F.QRLinear(4)]
  for b, batch, ctx_size in ((F.Chain(tuple(kinds)), (64,), 2),
                             (F.Chain((F.ActNorm((3, 3, 2)), F.InvertibleConv1x1((3, 3, 2)))),
                              (8,), 0)):
    params = random_params(b, 0, 0.2, jnp.float32)
    u = randn(1, batch + b.event_shape, jnp.float32)
    ctx = randn(2, batch + (ctx_size,), jnp.float32) if ctx_size else None

    @jax.jit
    def round_trip(params, u, ctx, b=b):
      x, ld = b.forward_and_log_det(params, u, ctx)
      return (x, ld) + b.inverse_and_log_det(params, x, ctx)

    x, ld, u2, ild = round_trip(params, u, ctx)
    assert x.dtype == jnp.float32 and ld.shape == batch
    assert np.max(np.abs(np.asarray(x - u))) > 0.1  # not the identity
    np.testing.assert_allclose(u2, u, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, atol=1e-4, rtol=1e-5)


def test_bfloat16_and_mixed_precision_follow_the_input_dtype():
  b = F.Chain((F.LULinear(3), F.MAF(3, (8,)), F.IAF(3, (8,), order="reversed"),
               F.AffineCoupling(3, F.alternating_mask(3), (8,)), F.ActNorm(3), F.QRLinear(3)))
  u = randn(0, (16, 3), jnp.bfloat16)

  @jax.jit
  def round_trips(params_bf16, params_f32, u):
    out = []
    for params in (params_bf16, params_f32):
      x, ld = b.forward_and_log_det(params, u)
      out.append((x, ld) + b.inverse_and_log_det(params, x))
    return out

  params_f32 = random_params(b, 0, 0.2, jnp.float32)
  params_bf16 = jax.tree_util.tree_map(lambda l: l.astype(jnp.bfloat16), params_f32)
  # init lowers in bfloat16 too (the LU decomposition runs in float32; no compilation needed here).
  lowered = jax.jit(b.init, static_argnums=1).lower(jax.random.key(0), jnp.bfloat16)
  assert {l.dtype for l in jax.tree_util.tree_leaves(lowered.out_info)} == {
      jnp.dtype(jnp.bfloat16)}
  # bfloat16 keeps 8 bits of mantissa: six layers round-trip to ~0.1 with bfloat16 params and to
  # bfloat16 resolution with float32 params, against a map that moves points by ~3.
  for (x, ld, u2, ild), tol in zip(round_trips(params_bf16, params_f32, u), (0.15, 0.03)):
    assert {x.dtype, ld.dtype, u2.dtype, ild.dtype} == {jnp.dtype(jnp.bfloat16)}
    assert np.max(np.abs(np.asarray(x - u, np.float32))) > 1.0
    np.testing.assert_allclose(np.asarray(u2, np.float32), np.asarray(u, np.float32), atol=tol)
    np.testing.assert_allclose(np.asarray(ild, np.float32), -np.asarray(ld, np.float32),
                               atol=tol)


def test_pure_core_does_not_import_flax_or_optax():
  """No flow module imports Flax or optax (the Flax wrapper is ``dgmjax.nn.FlowModule``)."""
  flows_dir = os.path.dirname(F.__file__)
  for name in sorted(os.listdir(flows_dir)):
    if not name.endswith(".py"):
      continue
    with open(os.path.join(flows_dir, name)) as f:
      tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported |= {a.name.split(".")[0] for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module:
        imported.add(node.module.split(".")[0])
    assert not imported & {"flax", "optax"}, (name, imported)
  assert not hasattr(F, "FlowModule")


def test_fresh_layers_are_the_identity():
  """Conditioners start with a zero output layer and ActNorm at zero: ``init`` is the identity."""
  b = F.Chain((F.MAF(3, (8,), context_size=2), F.IAF(3, (8,), context_size=2),
               F.AffineCoupling(3, F.alternating_mask(3), (8,), context_size=2), F.ActNorm(3)))
  u = randn(0, (5, 3), jnp.float32)
  h = randn(1, (5, 2), jnp.float32)
  x, ld = jax.jit(lambda key, u, h: b.forward_and_log_det(b.init(key), u, h))(
      jax.random.key(0), u, h)
  np.testing.assert_allclose(x, u, atol=1e-6)
  np.testing.assert_allclose(ld, 0.0, atol=1e-6)


def test_context_broadcasts_against_batch_eagerly_and_under_jit():
  b = F.IAF(3, (8,), context_size=2)
  params = random_params(b, 0)
  u = randn(2, (4, 5, 3), jnp.float32)
  h = randn(3, (5, 2), jnp.float32)  # one context per batch column
  x, ld = b.forward_and_log_det(params, u, h)  # eager: the concrete input checks run
  assert x.shape == (4, 5, 3) and ld.shape == (4, 5)
  fwd = jax.jit(b.forward_and_log_det)
  x_jit, ld_jit = fwd(params, u, h)
  np.testing.assert_allclose(x, x_jit, atol=1e-5)
  np.testing.assert_allclose(ld, ld_jit, atol=1e-5)
  x0, _ = fwd(params, u[0], h)
  np.testing.assert_allclose(x[0], x0, atol=1e-6)
  # The context changes the map (also for the first variable, through the direct connection).
  x_other, _ = fwd(params, u, h + 1.0)
  assert np.all(np.abs(np.asarray(x_other - x))[..., 0] > 0)


# ----------------------------------------------------------------------------- MADE / MAF / IAF


def test_made_is_autoregressive_in_its_order(x64):
  order = F.random_order(5, 3)
  b = F.MAF(5, (7, 9), order=order, context_size=2)
  params = random_params(b, 0)
  x = randn(2, (5,))
  h = randn(3, (2,))
  for out in jax.jit(jax.jacfwd(lambda v: b.conditioner(params, v, h)))(x):
    deg = np.asarray(order)
    allowed = deg[None, :] < deg[:, None]  # d out_i / d x_j may be nonzero only if j precedes i
    assert np.all(np.asarray(out)[~allowed] == 0.0)
    assert np.any(np.asarray(out)[allowed] != 0.0)


def _count_made_calls(monkeypatch, fn):
  calls = []
  real = autoregressive.made_apply

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(autoregressive, "made_apply", counting)
  with jax.disable_jit():  # loops run in Python, so each conditioner pass is one call
    fn()
  return len(calls)


@pytest.mark.parametrize("cls", [F.MAF, F.IAF])
def test_one_pass_directions(cls, monkeypatch):
  d = 4
  b = cls(d, (8,))
  params = random_params(b, 0)
  v = randn(2, (3, d), jnp.float32)
  n_fwd = _count_made_calls(monkeypatch, lambda: b.forward_and_log_det(params, v))
  n_inv = _count_made_calls(monkeypatch, lambda: b.inverse_and_log_det(params, v))
  one_pass, sequential = ("inverse", "forward") if cls is F.MAF else ("forward", "inverse")
  counts = {"forward": n_fwd, "inverse": n_inv}
  assert counts[one_pass] == 1
  assert counts[sequential] == d
  # Structure of the compiled program: the one-pass direction has no loop.
  for direction in ("forward", "inverse"):
    fn = getattr(b, f"{direction}_and_log_det")
    prims = {e.primitive.name for e in jax.make_jaxpr(fn)(params, v).jaxpr.eqns}
    has_loop = bool(prims & {"scan", "while"})
    assert has_loop == (direction == sequential), (direction, prims)


def test_iaf_sample_and_log_prob_is_one_pass(monkeypatch):
  flow = F.Flow(F.IAF(4, (8,)))
  params = random_params(flow, 0)
  n = _count_made_calls(monkeypatch,
                        lambda: flow.sample_and_log_prob(params, jax.random.key(2), 4))
  assert n == 1
  x, lq = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.key(3), 4)
  np.testing.assert_allclose(lq, jax.jit(flow.log_prob)(params, x), atol=1e-4)


@pytest.mark.parametrize("cls", [F.MAF, F.IAF])
def test_sequential_solve_survives_overflow_of_entries_not_yet_final(cls, monkeypatch):
  """A pass may overflow entries that are not final yet; the masked zeros must not turn them into
  NaN in the final entries (0 * inf). With a linear autoregressive conditioner the solution is
  y_i = t_i exp(40 sum_{j<i} y_j); for t = (-1, 4, 0.5) the second pass overflows entry 2
  (0.5 e^120) while the solution is finite (-1, 4 e^-40, 0.5 e^-40...)."""
  d = 3
  upper = jnp.triu(jnp.ones((d, d), jnp.float32), 1)  # entry i reads y_j for j < i
  sign = -1.0 if cls is F.IAF else 1.0                 # IAF solves with exp(-alpha), MAF exp(alpha)

  def linear_made(params, y, masks, activation, context=None):
    return jnp.concatenate([jnp.zeros_like(y), sign * 40.0 * (y @ upper)], -1)

  monkeypatch.setattr(autoregressive, "made_apply", linear_made)
  b = cls(d, (4,))
  params = random_params(b, 0)
  target = np.array([-1.0, 4.0, 0.5])
  solve = b.inverse_and_log_det if cls is F.IAF else b.forward_and_log_det
  y, log_det = solve(params, jnp.asarray(target[None], jnp.float32))
  ref = np.zeros(d)
  for i in range(d):  # the exact solution, sequentially in float64
    ref[i] = target[i] * np.exp(40.0 * ref[:i].sum())
  np.testing.assert_allclose(np.asarray(y[0], np.float64), ref, rtol=1e-5)
  assert np.isfinite(float(log_det[0]))


# ----------------------------------------------------------------------------- linear flows


@pytest.mark.parametrize("cls", [F.LULinear, F.QRLinear])
def test_params_from_matrix_reproduces_the_matrix(cls, x64):
  w = np.random.RandomState(0).randn(5, 5)
  b = cls(5)
  params = b.params_from_matrix(w, bias=np.arange(5.0))
  np.testing.assert_allclose(b.weight(params), w, atol=1e-12)
  x = b.forward(params, jnp.ones((5,)))
  np.testing.assert_allclose(x, w @ np.ones(5) + np.arange(5.0), atol=1e-12)
  assert np.all(np.abs(params.sign) == 1)


@pytest.mark.parametrize("cls", [F.LULinear, F.QRLinear])
def test_init_is_a_random_rotation_and_jittable(cls, x64):
  b = cls(4)
  w, w2 = jax.jit(jax.vmap(lambda k: b.weight(b.init(k))))(jax.random.split(jax.random.key(0), 2))
  np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-10)
  np.testing.assert_allclose(w2 @ w2.T, np.eye(4), atol=1e-10)
  assert not np.allclose(w, np.eye(4))
  assert not np.allclose(w2, w)


@pytest.mark.parametrize("make", [lambda: F.LULinear(3), lambda: F.QRLinear(3),
                                  lambda: F.InvertibleConv1x1((2, 2, 3))])
def test_non_invertible_initialisation_raises(make):
  b = make()
  singular = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])
  with pytest.raises(ValueError, match="singular"):
    b.params_from_matrix(singular)
  with pytest.raises(ValueError, match="singular"):
    b.params_from_matrix(np.zeros((3, 3)))
  with pytest.raises(ValueError, match=r"\[3, 3\]"):
    b.params_from_matrix(np.eye(4))
  with pytest.raises(ValueError, match="NaN"):
    b.params_from_matrix(np.full((3, 3), np.nan))
  with pytest.raises(ValueError, match="concrete"):
    jax.jit(b.params_from_matrix)(jnp.eye(3))


def test_conv1x1_log_det_is_positions_times_channel_log_det(x64):
  b = F.InvertibleConv1x1((4, 5, 3))
  w = np.random.RandomState(1).randn(3, 3)
  params = b.params_from_matrix(w)
  u = randn(0, (2, 4, 5, 3))
  x, ld = b.forward_and_log_det(params, u)
  np.testing.assert_allclose(x, np.einsum("ij,bhwj->bhwi", w, u), atol=1e-12)
  np.testing.assert_allclose(ld, np.full(2, 20 * np.linalg.slogdet(w)[1]), atol=1e-10)


@pytest.mark.parametrize("cls", [F.LULinear, F.QRLinear])
def test_linear_flow_stays_invertible_during_training(cls):
  # Learn a correlated Gaussian with a large learning rate; the flow must stay invertible and fit.
  cov = np.array([[4.0, 1.8, 0.0], [1.8, 1.0, 0.1], [0.0, 0.1, 0.1]])
  mean = np.array([1.0, -2.0, 0.5])
  data = jnp.asarray(np.random.RandomState(0).multivariate_normal(mean, cov, 1000), jnp.float32)
  flow = F.Flow(cls(3))
  opt = optax.adam(0.05)

  @jax.jit
  def fit(key, data):
    def step(carry, _):
      params, state = carry
      loss, grads = jax.value_and_grad(lambda p: -jnp.mean(flow.log_prob(p, data)))(params)
      updates, state = opt.update(grads, state)
      return (optax.apply_updates(params, updates), state), loss
    params = flow.init(key)
    params = jax.lax.scan(step, (params, opt.init(params)), None, length=400)[0][0]
    x = data[:16]
    return params, flow.bijector.weight(params), flow.bijector.forward(
        params, flow.bijector.inverse(params, x)), x

  params, w, x_round_trip, x = fit(jax.random.key(0), data)
  sign, logdet = np.linalg.slogdet(np.asarray(w, np.float64))
  assert sign != 0 and np.isfinite(logdet)
  np.testing.assert_allclose(logdet, float(jnp.sum(params.log_diag)), atol=1e-4)
  np.testing.assert_allclose(x_round_trip, x, atol=1e-5)
  # The maximum-likelihood Gaussian is the sample mean and (biased) sample covariance.
  np.testing.assert_allclose(w @ w.T, np.cov(np.asarray(data).T, bias=True), atol=0.02)
  np.testing.assert_allclose(params.bias, np.mean(np.asarray(data), 0), atol=0.02)
  assert params.sign == (1.0,) * 3  # the static signs are untouched by the optimiser


# ----------------------------------------------------------------------------- ActNorm


def test_actnorm_data_init_and_chain_data_init():
  x = 3.0 + 2.0 * randn(0, (256, 2, 2, 3), jnp.float32)
  b = F.ActNorm((2, 2, 3))
  params = b.data_init(b.init(jax.random.key(1)), x)
  u = jax.jit(b.inverse)(params, x)
  np.testing.assert_allclose(jnp.mean(u, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.std(u, axis=(0, 1, 2)), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match="zero variance"):
    b.data_init(params, jnp.ones((8, 2, 2, 3)))

  chain = F.real_nvp(2, 2, (8,), actnorm=True)
  params = random_params(chain, 2, 0.1)
  data = 5.0 + 3.0 * randn(4, (512, 2), jnp.float32)
  params = jax.jit(chain.data_init)(params, data)
  # The last (data-side) ActNorm whitens the data it sees.
  z = chain.layers[-1].inverse(params[-1], data)
  np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(z, 0), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- bad inputs


def test_wrong_event_size_raises_naming_the_argument():
  b = F.MAF(3, (8,))
  params = random_params(b)
  with pytest.raises(ValueError, match=r"^x must have event shape \(3,\)"):
    b.inverse_and_log_det(params, jnp.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"^u must have event shape \(3,\)"):
    b.forward_and_log_det(params, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="event shape"):
    jax.jit(F.Flow(b).log_prob)(params, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
    conv = F.InvertibleConv1x1((2, 2, 3))
    conv.forward(random_params(conv), jnp.zeros((1, 2, 3)))
  with pytest.raises(TypeError, match="floating"):
    b.forward(params, jnp.zeros((3,), jnp.int32))


def test_context_errors():
  cond = F.IAF(3, (8,), context_size=2)
  params = random_params(cond)
  with pytest.raises(ValueError, match="context"):
    cond.forward(params, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="context must have size 2"):
    cond.forward(params, jnp.zeros((3,)), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="do not broadcast"):
    cond.forward(params, jnp.zeros((4, 3)), jnp.zeros((5, 2)))
  plain = F.MAF(3, (8,))
  with pytest.raises(ValueError, match="takes no context"):
    plain.forward(random_params(plain), jnp.zeros((3,)), jnp.zeros((2,)))


def test_bad_configuration_raises():
  with pytest.raises(ValueError, match="mask"):
    F.AffineCoupling(3, (1, 1, 1))
  with pytest.raises(ValueError, match="mask"):
    F.AffineCoupling(3, (1, 0))
  with pytest.raises(ValueError, match="order"):
    F.MAF(3, order=(1, 1, 2))
  with pytest.raises(ValueError, match="permutation"):
    F.Permute((0, 2))
  with pytest.raises(ValueError, match="activation"):
    F.MAF(3, activation="sigmoidal")
  with pytest.raises(ValueError, match="event shapes"):
    F.Chain((F.MAF(3), F.MAF(4)))


def test_nan_input_raises_eagerly_and_is_caught_by_checkify_under_jit():
  flow = F.Flow(F.real_nvp(2, 2, (8,)))
  params = random_params(flow, 0)
  x = jnp.array([[0.1, 0.2], [jnp.nan, 0.0]])
  with pytest.raises(ValueError, match=r"x contains 1 NaN .* index \(1, 0\)"):
    flow.log_prob(params, x)
  with pytest.raises(ValueError, match="context contains"):
    F.IAF(2, (4,), context_size=1).forward(
        random_params(F.IAF(2, (4,), context_size=1)), jnp.zeros((2,)),
        jnp.array([jnp.inf]))
  # Under jit values are not checked; NaN stays in its own row ...
  lp = jax.jit(flow.log_prob)(params, x)
  assert np.isfinite(lp[0]) and np.isnan(lp[1])
  # ... and checkify reports it.
  err, _ = checkify.checkify(jax.jit(flow.log_prob), errors=checkify.float_checks)(params, x)
  assert err.get() is not None and "nan" in err.get()


# ----------------------------------------------------------------------------- Flow distribution


def test_linear_flow_log_prob_is_the_gaussian_closed_form(x64):
  b = F.LULinear(3)
  w = np.random.RandomState(2).randn(3, 3)
  params = b.params_from_matrix(w, bias=np.array([0.5, -1.0, 2.0]))
  flow = F.Flow(b)
  x = randn(0, (10, 3))
  want = distributions.mvn_log_prob(x, params.bias, np.linalg.cholesky(w @ w.T))
  np.testing.assert_allclose(flow.log_prob(params, x), want, atol=1e-10)


def test_flow_sampling_shapes_and_consistency():
  flow = F.Flow(F.masked_autoregressive_flow(2, 2, (8,), context_size=3))
  params = random_params(flow, 0)
  h = randn(2, (4, 3), jnp.float32)

  @jax.jit
  def run(key, params, h):
    k1, k2 = jax.random.split(key)
    x = flow.sample(params, k1, 5, h)
    x2, lq = flow.sample_and_log_prob(params, k2, 5, h)
    return x, x2, lq, flow.log_prob(params, x2, h)

  x, x2, lq, lq_inverse = run(jax.random.key(3), params, h)
  assert x.shape == (5, 4, 2) and x2.shape == (5, 4, 2) and lq.shape == (5, 4)
  assert not np.allclose(x, x2)
  # Forward-pass density (MAF: D sequential passes) = density pass (one pass) at the samples.
  np.testing.assert_allclose(lq, lq_inverse, atol=1e-4)
  with pytest.raises(ValueError, match="num_samples"):
    flow.sample(params, jax.random.key(5), 0, h)


def test_flow_density_integrates_to_one(x64):
  flow = F.Flow(F.real_nvp(2, 4, (16,), activation="tanh", log_scale_clamp=1.0))
  params = random_params(flow, 0, 0.3)
  g = np.linspace(-15.0, 15.0, 501)
  xx, yy = np.meshgrid(g, g)
  grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1))
  mass = float(jnp.sum(jnp.exp(jax.jit(flow.log_prob)(params, grid))) * (g[1] - g[0]) ** 2)
  np.testing.assert_allclose(mass, 1.0, atol=2e-3)


def test_flow_module_matches_pure_api():
  bij = F.real_nvp(2, 2, (8,))
  module = FlowModule(bij)
  flow = F.Flow(bij)
  x = randn(0, (6, 2), jnp.float32)
  variables = jax.jit(module.init)(jax.random.key(1), x)
  variables = {"params": {"flow": perturb(variables["params"]["flow"], 2)}}

  @jax.jit
  def run(variables, x, key, same_key):
    params = variables["params"]["flow"]
    u, ld = module.apply(variables, x, method="inverse_and_log_det")
    s = module.apply(variables, key, 7, method="sample")
    return (module.apply(variables, x), flow.log_prob(params, x), u, ld,
            bij.inverse_and_log_det(params, x), s, flow.sample(params, same_key, 7))

  lp, lp_pure, u, ld, (u_pure, ld_pure), s, s_pure = run(variables, x, jax.random.key(3),
                                                         jax.random.key(3))
  np.testing.assert_allclose(lp, lp_pure, atol=1e-6)
  np.testing.assert_allclose(u, u_pure, atol=1e-6)
  np.testing.assert_allclose(ld, ld_pure, atol=1e-6)
  assert s.shape == (7, 2)
  np.testing.assert_allclose(s, s_pure, atol=1e-6)  # the key is an argument: same key, same draws
  lin = FlowModule(F.LULinear(3))
  v = jax.eval_shape(lin.init, jax.random.key(4), jnp.ones((2, 3)))
  assert isinstance(v["params"]["flow"], F.LUParams)


# ----------------------------------------------------------------------------- flows as VAEs


def _toy_flow():
  flow = F.Flow(F.real_nvp(2, 2, (16,), activation="tanh", log_scale_clamp=1.0))
  params = random_params(flow, 10, 0.3)
  x = randn(12, (5, 2))
  return flow, params, x


def test_flow_log_likelihood_is_the_change_of_variables_identity(x64):
  # Deterministic encoder z = f^{-1}(x): log p(x) = log p(z) + log|det dz/dx| (Jacobian by autodiff).
  flow, params, x = _toy_flow()

  @jax.jit
  def both(params, x):
    inv = lambda v: flow.bijector.inverse(params, v)
    log_det = jnp.linalg.slogdet(jax.vmap(jax.jacfwd(inv))(x))[1]
    return flow.log_prob(params, x), distributions.standard_normal_log_prob(inv(x)) + log_det

  got, want = both(params, x)
  np.testing.assert_allclose(got, want, atol=1e-10)


def _vae_log_weights(key, flow, params, x, sigma, k, encoder):
  """Log-weights ``[K, B]`` of a VAE with prior N(0, I), decoder N(x; f(z), sigma^2 I) and an encoder
  built around z0 = f^{-1}(x) with noise scale sigma; all terms computed from their definitions."""
  f = lambda z: flow.bijector.forward(params, z)
  f_inv = lambda v: flow.bijector.inverse(params, v)
  d = x.shape[-1]
  # Antithetic pairs (eps, -eps) cancel the O(sigma) Monte Carlo noise, leaving the O(sigma^2) bias.
  half = jax.random.normal(key, (k // 2,) + x.shape, x.dtype)
  eps = jnp.concatenate([half, -half], axis=0)
  if encoder == "pushforward":
    # q(z|x) = law of f^{-1}(x + sigma eps): log q(z|x) = log N(f(z); x, sigma^2) + log|det f'(z)|.
    z = f_inv(jnp.broadcast_to(x, eps.shape) + sigma * eps)
    jac = jax.vmap(jax.vmap(jax.jacfwd(f)))(z)
    log_q = distributions.normal_log_prob(f(z), x, jnp.log(sigma)) + jnp.linalg.slogdet(jac)[1]
  elif encoder == "linearised":
    # q(z|x) = N(z0, sigma^2 J^{-1} J^{-T}), J = f'(z0): the Laplace posterior of the decoder.
    jac_inv = jax.vmap(jax.jacfwd(f_inv))(x)  # [B, D, D] = J^{-1}
    z = jnp.broadcast_to(f_inv(x), eps.shape) + sigma * jnp.einsum("bij,kbj->kbi", jac_inv, eps)
    log_q = (distributions.standard_normal_log_prob(eps) - d * jnp.log(sigma)
             - jnp.linalg.slogdet(jac_inv)[1][None, :])
  else:  # isotropic Gaussian encoder N(z0, sigma^2 I)
    z0 = jnp.broadcast_to(f_inv(x), eps.shape)
    z = z0 + sigma * eps
    log_q = distributions.normal_log_prob(z, z0, jnp.log(sigma))
  log_lik = distributions.normal_log_prob(x, f(z), jnp.log(sigma))
  return distributions.standard_normal_log_prob(z) + log_lik - log_q


@functools.partial(jax.jit, static_argnums=1)
def _flow_vae_study(key, flow, params, x):
  """The flow log-density and VAE log-weights for three encoders (one compilation)."""
  sigmas = jnp.asarray([1e-1, 1e-2, 1e-3], x.dtype)
  k_push, k_lin, k_iso = jax.random.split(key, 3)

  def sweep(k, encoder):
    return jax.vmap(lambda kk, s: _vae_log_weights(kk, flow, params, x, s, 64, encoder))(
        jax.random.split(k, 3), sigmas)

  iso = _vae_log_weights(k_iso, flow, params, x, 1e-4, 1024, "isotropic")
  jac = jax.vmap(jax.jacfwd(lambda z: flow.bijector.forward(params, z)))(
      flow.bijector.inverse(params, x))
  return (flow.log_prob(params, x), sweep(k_push, "pushforward"), sweep(k_lin, "linearised"),
          iso, jac)


def test_flow_is_the_vanishing_noise_limit_of_a_vae(x64):
  flow, params, x = _toy_flow()
  log_px, push, lin, iso, jac = _flow_vae_study(jax.random.key(0), flow, params, x)
  assert push.shape == (3, 64, 5) and iso.shape == (1024, 5)
  # Pushforward encoder: every log-weight equals the flow log-density at x + sigma * eps, so the
  # ELBO is the Gaussian-smoothed flow likelihood; it converges at rate sigma^2 to the flow's.
  # Linearised Gaussian encoder and Gaussian decoder of the same sigma: ELBO -> log p(x) too.
  for lw in (push, lin):
    errs = [float(jnp.max(jnp.abs(objectives.elbo(lw[i]) - log_px))) for i in range(3)]
    # An O(sigma^2) error shrinks 100x per decade of sigma (an O(sigma) one only 10x).
    assert errs[0] > 30 * errs[1] > 900 * errs[2] and errs[2] < 1e-4, errs
  # IWAE tightens the bound.
  assert np.all(objectives.iwae_bound(lin[0]) >= objectives.elbo(lin[0]))
  # An isotropic encoder N(z0, sigma^2 I) does not close the gap unless f is volume-preserving and
  # orthogonal: the limit is log p(x) - KL(N(0, I) || N(0, (J^T J)^{-1})).
  lam = np.linalg.eigvalsh(np.einsum("bki,bkj->bij", jac, jac))
  gap = 0.5 * np.sum(1.0 + np.log(lam) - lam, axis=-1)
  stderr = np.std(iso, axis=0) / np.sqrt(iso.shape[0])
  assert np.all(gap < -10 * stderr), (gap, stderr)  # the gap is resolved by the estimate
  assert np.all(np.abs(objectives.elbo(iso) - (log_px + gap)) < 4 * stderr + 1e-3)


# ---------------------------------------------------------------------------------------------
# Complex params, inputs and contexts are refused by name; num_samples checked
# ---------------------------------------------------------------------------------------------


def test_flow_sample_num_samples_must_be_a_positive_int():
  flow = F.Flow(F.real_nvp(2, 2, (4,)))
  params = flow.init(jax.random.key(0))
  for bad in (True, 0, 2.0):
    with pytest.raises(ValueError, match="num_samples"):
      flow.sample(params, jax.random.key(1), bad)
  assert flow.sample(params, jax.random.key(2), np.int64(3)).shape == (3, 2)


def test_flows_refuse_complex_params_inputs_and_contexts_without_the_test_hook():
  from tests.unhooked import assert_raises_naming, errors_without_hook
  results = errors_without_hook("""
      import jax, jax.numpy as jnp
      from dgmjax import flows as F
      K = jax.random.key(0)
      C = jnp.array([[0.3, 0.2], [1.0, -1.0]]) + 1j
      R = jnp.array([[0.3, 0.2], [1.0, -1.0]])
      nvp = F.real_nvp(2, 2, (4,))
      P = nvp.init(K)
      PC = jax.tree.map(lambda a: a + 0j, P)
      iaf = F.inverse_autoregressive_flow(2, 1, (4,), context_size=2)
      PI = iaf.init(K)
      CASES = {
          "forward u": lambda: nvp.forward(P, C),
          "inverse x": lambda: nvp.inverse_and_log_det(P, C),
          "log_prob x": lambda: F.Flow(nvp).log_prob(P, C),
          "forward params": lambda: nvp.forward(PC, R),
          "inverse params": lambda: nvp.inverse(PC, R),
          "jit params": lambda: jax.jit(nvp.forward)(PC, R),
          "context": lambda: iaf.forward(PI, R, C),
          "sample context": lambda: F.Flow(iaf).sample(PI, K, 2, C),
      }
  """)
  assert_raises_naming(results, {"forward u": "u", "inverse x": "x", "log_prob x": "x"},
                       says="floating")
  assert_raises_naming(results, {
      "forward params": "params", "inverse params": "params", "jit params": "params",
      "context": "context", "sample context": "context"}, says="complex")


# ------------------------------------------------------------- settings of masks and constructors


@pytest.mark.parametrize("fn", [F.alternating_mask, F.half_mask])
@pytest.mark.parametrize("args,match", [
    ((4, 2), "parity must be 0 or 1"), ((4, -1), "parity must be an int >= 0"),
    ((4, True), "parity must be an int, got the bool"), ((0, 0), "event_size must be an int >= 1"),
    ((2.5, 0), "event_size must be an int"),
], ids=["parity_2", "parity_negative", "parity_bool", "event_size_zero", "event_size_float"])
def test_mask_settings_are_refused_naming_the_argument(fn, args, match):
  with pytest.raises(ValueError, match=match):
    fn(*args)


def test_masks_accept_numpy_ints():
  assert F.alternating_mask(np.int64(4), np.int64(1)) == (0, 1, 0, 1)
  assert F.half_mask(3, 1) == (0, 0, 1)


@pytest.mark.parametrize("call,match", [
    (lambda: F.real_nvp(4, True), "num_layers must be an int, got the bool"),
    (lambda: F.real_nvp(4, 2.5), "num_layers must be an int"),
    (lambda: F.real_nvp(1, 2), "event_size must be an int >= 2"),
    (lambda: F.real_nvp(4, 2, hidden_sizes=(2.5,)), "hidden_sizes"),
    (lambda: F.real_nvp(4, 2, hidden_sizes=(True,)), "hidden_sizes"),
    (lambda: F.real_nvp(4, 2, context_size=-1), "context_size must be an int >= 0"),
    (lambda: F.real_nvp(4, 2, context_size=2.5), "context_size must be an int"),
    (lambda: F.real_nvp(4, 2, log_scale_clamp=0.0), "log_scale_clamp must be a finite number > 0"),
    (lambda: F.real_nvp(4, 2, log_scale_clamp=float("nan")), "log_scale_clamp"),
    (lambda: F.real_nvp(4, 2, actnorm="yes"), "actnorm must be a bool"),
    (lambda: F.real_nvp(4, 2, permute_seed=-1), "permute_seed must be an int >= 0"),
    (lambda: F.AffineCoupling(4, (2, 0, 1, 0)), "mask must be a 1-D sequence of 0/1"),
    (lambda: F.masked_autoregressive_flow(4, True), "num_layers must be an int"),
    (lambda: F.inverse_autoregressive_flow(4, 2, log_scale_clamp=-1.0), "log_scale_clamp"),
    (lambda: F.MAF(4, context_size=1.5), "context_size must be an int"),
    (lambda: F.random_order(0, 0), "event_size must be an int >= 1"),
    (lambda: F.random_order(4, 1.5), "seed must be an int"),
    (lambda: F.random_permutation(4, -1), "seed must be an int >= 0"),
    (lambda: F.Reverse(0), "event_size must be an int >= 1"),
], ids=["real_nvp_layers_bool", "real_nvp_layers_float", "real_nvp_event_1", "hidden_float",
        "hidden_bool", "context_negative", "context_float", "clamp_zero", "clamp_nan",
        "actnorm_str", "permute_seed_negative", "coupling_mask_2", "maf_layers_bool",
        "iaf_clamp_negative", "maf_context_float", "random_order_0", "random_order_seed_float",
        "random_permutation_seed_negative", "reverse_0"])
def test_flow_constructor_settings_are_refused_naming_the_argument(call, match):
  with pytest.raises(ValueError, match=match):
    call()
