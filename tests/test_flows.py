"""Tests of dgmjax.flows: log-determinants against jax.jacobian, round trips, one-pass structure,
invertibility under training, bad inputs, the flow distribution and flows seen as VAEs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

from dgmjax import distributions, objectives
from dgmjax import flows as F
from dgmjax.flows import autoregressive


def perturb(params, key, scale=0.3):
  """Params moved off their identity initialisation (random, reproducible)."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, max(len(leaves), 1))
  return jax.tree_util.tree_unflatten(
      tree, [l + scale * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)])


BIJECTORS = {
    "lu": lambda: F.LULinear(4),
    "lu_nobias": lambda: F.LULinear(3, use_bias=False),
    "qr": lambda: F.QRLinear(4),
    "qr_2reflections": lambda: F.QRLinear(4, num_reflections=2),
    "conv1x1_lu": lambda: F.InvertibleConv1x1((2, 3, 3)),
    "conv1x1_qr": lambda: F.InvertibleConv1x1((3, 2, 2), "qr"),
    "maf": lambda: F.MAF(4, (16, 16)),
    "maf_random_order": lambda: F.MAF(5, (12,), order=F.random_order(5, 0), activation="tanh"),
    "maf_context": lambda: F.MAF(3, (8,), context_size=2),
    "iaf": lambda: F.IAF(4, (16,), order="reversed"),
    "iaf_context": lambda: F.IAF(3, (8,), context_size=2, log_scale_clamp=2.0),
    "made_d1": lambda: F.MAF(1, (4,), context_size=2),
    "coupling": lambda: F.AffineCoupling(4, F.alternating_mask(4), (16,)),
    "coupling_half_clamped": lambda: F.AffineCoupling(5, F.half_mask(5, 1), (8,),
                                                      log_scale_clamp=3.0),
    "actnorm": lambda: F.ActNorm(4),
    "actnorm_image": lambda: F.ActNorm((2, 2, 3)),
    "reverse": lambda: F.Reverse(4),
    "permute": lambda: F.random_permutation(5, 1),
    "invert_maf": lambda: F.Invert(F.MAF(3, (8,))),
    "real_nvp_actnorm": lambda: F.real_nvp(4, 3, (8,), actnorm=True),
    "maf_chain_context": lambda: F.masked_autoregressive_flow(3, 2, (8,), context_size=2),
    "iaf_chain": lambda: F.inverse_autoregressive_flow(3, 2, (8,)),
    "glow_step": lambda: F.Chain((F.ActNorm((2, 2, 3)), F.InvertibleConv1x1((2, 2, 3)))),
}


def _setup(name, key, batch=(), dtype=None):
  b = BIJECTORS[name]()
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = perturb(b.init(k1, dtype), k2)
  dtype = dtype or jnp.result_type(float)
  u = jax.random.normal(k3, batch + b.event_shape, dtype)
  ctx = jax.random.normal(k4, batch + (b.context_size,), dtype) if b.context_size else None
  return b, params, u, ctx


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_log_det_matches_jacobian_and_round_trip_x64(name, x64):
  b, params, u, ctx = _setup(name, jax.random.key(0))
  es = b.event_shape
  x, ld = b.forward_and_log_det(params, u, ctx)
  assert x.dtype == jnp.float64 and ld.shape == ()
  jac = jax.jacobian(lambda v: b.forward(params, v.reshape(es), ctx).reshape(-1))(u.reshape(-1))
  sign, want = jnp.linalg.slogdet(jac)
  assert sign != 0
  np.testing.assert_allclose(ld, want, atol=1e-10, rtol=1e-10)
  u2, ild = b.inverse_and_log_det(params, x, ctx)
  jac_inv = jax.jacobian(
      lambda v: b.inverse(params, v.reshape(es), ctx).reshape(-1))(x.reshape(-1))
  np.testing.assert_allclose(ild, jnp.linalg.slogdet(jac_inv)[1], atol=1e-10, rtol=1e-10)
  np.testing.assert_allclose(ild, -ld, atol=1e-10)
  np.testing.assert_allclose(u2, u, atol=1e-10)


@pytest.mark.parametrize("name", sorted(BIJECTORS))
def test_round_trip_float32_batched_jit_and_vmap(name):
  b, params, u, ctx = _setup(name, jax.random.key(1), batch=(7,), dtype=jnp.float32)
  fwd = jax.jit(b.forward_and_log_det)
  inv = jax.jit(b.inverse_and_log_det)
  x, ld = fwd(params, u, ctx)
  assert x.shape == u.shape and x.dtype == jnp.float32 and ld.shape == (7,)
  u2, ild = inv(params, x, ctx)
  np.testing.assert_allclose(u2, u, atol=1e-5)
  np.testing.assert_allclose(ild, -ld, atol=1e-4, rtol=1e-5)
  # The jitted batched call agrees with the eager call and with vmap over single events.
  x_eager, ld_eager = b.forward_and_log_det(params, u, ctx)
  np.testing.assert_allclose(x, x_eager, atol=1e-5)
  x_vmap, ld_vmap = jax.vmap(b.forward_and_log_det, in_axes=(None, 0, 0 if ctx is not None
                                                                    else None))(params, u, ctx)
  np.testing.assert_allclose(x_vmap, x, atol=1e-5)
  np.testing.assert_allclose(ld_vmap, ld, atol=1e-4, rtol=1e-5)


def test_context_broadcasts_against_batch():
  b = F.IAF(3, (8,), context_size=2)
  params = perturb(b.init(jax.random.key(0)), jax.random.key(1))
  u = jax.random.normal(jax.random.key(2), (4, 5, 3))
  h = jax.random.normal(jax.random.key(3), (5, 2))  # one context per batch column
  x, ld = b.forward_and_log_det(params, u, h)
  assert x.shape == (4, 5, 3) and ld.shape == (4, 5)
  x0, _ = b.forward_and_log_det(params, u[0], h)
  np.testing.assert_allclose(x[0], x0, atol=1e-6)
  # The context changes the map (also for the first variable, through the direct connection).
  x_other, _ = b.forward_and_log_det(params, u, h + 1.0)
  assert np.all(np.abs(np.asarray(x_other - x))[..., 0] > 0)


# ----------------------------------------------------------------------------- MADE / MAF / IAF


def test_made_is_autoregressive_in_its_order(x64):
  order = F.random_order(5, 3)
  b = F.MAF(5, (7, 9), order=order, context_size=2)
  params = perturb(b.init(jax.random.key(0)), jax.random.key(1))
  x = jax.random.normal(jax.random.key(2), (5,))
  h = jax.random.normal(jax.random.key(3), (2,))
  for out in jax.jacobian(lambda v: b.conditioner(params, v, h))(x):
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
  d = 6
  b = cls(d, (16,))
  params = perturb(b.init(jax.random.key(0)), jax.random.key(1))
  v = jax.random.normal(jax.random.key(2), (3, d))
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
  flow = F.Flow(F.IAF(5, (8,)))
  params = perturb(flow.init(jax.random.key(0)), jax.random.key(1))
  n = _count_made_calls(monkeypatch,
                        lambda: flow.sample_and_log_prob(jax.random.key(2), params, 4))
  assert n == 1
  x, lq = flow.sample_and_log_prob(jax.random.key(3), params, 4)
  np.testing.assert_allclose(lq, flow.log_prob(params, x), atol=1e-4)


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
  params = jax.jit(b.init)(jax.random.key(0))
  w = b.weight(params)
  np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-10)
  assert not np.allclose(w, np.eye(4))
  params2 = b.init(jax.random.key(1))
  assert not np.allclose(b.weight(params2), w)


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
  u = jax.random.normal(jax.random.key(0), (2, 4, 5, 3))
  x, ld = b.forward_and_log_det(params, u)
  np.testing.assert_allclose(x, np.einsum("ij,bhwj->bhwi", w, u), atol=1e-12)
  np.testing.assert_allclose(ld, np.full(2, 20 * np.linalg.slogdet(w)[1]), atol=1e-10)


@pytest.mark.parametrize("cls", [F.LULinear, F.QRLinear])
def test_linear_flow_stays_invertible_during_training(cls):
  # Learn a correlated Gaussian with a large learning rate; the flow must stay invertible and fit.
  cov = np.array([[4.0, 1.8, 0.0], [1.8, 1.0, 0.3], [0.0, 0.3, 0.05]])
  mean = np.array([1.0, -2.0, 0.5])
  data = jnp.asarray(np.random.RandomState(0).multivariate_normal(mean, cov, 4000), jnp.float32)
  flow = F.Flow(cls(3))
  params = flow.init(jax.random.key(0))
  opt = optax.adam(0.05)
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(lambda p: -jnp.mean(flow.log_prob(p, data)))(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  for _ in range(400):
    params, state, loss = step(params, state)
  w = flow.bijector.weight(params)
  sign, logdet = np.linalg.slogdet(np.asarray(w, np.float64))
  assert sign != 0 and np.isfinite(logdet)
  np.testing.assert_allclose(logdet, float(jnp.sum(params.log_diag)), atol=1e-4)
  x = data[:16]
  np.testing.assert_allclose(flow.bijector.forward(params, flow.bijector.inverse(params, x)), x,
                             atol=1e-5)
  np.testing.assert_allclose(w @ w.T, cov, atol=0.15)
  np.testing.assert_allclose(params.bias, mean, atol=0.1)
  assert params.sign == (1.0,) * 3  # the static signs are untouched by the optimiser


# ----------------------------------------------------------------------------- ActNorm


def test_actnorm_data_init_and_chain_data_init():
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (256, 2, 2, 3))
  b = F.ActNorm((2, 2, 3))
  params = b.data_init(b.init(jax.random.key(1)), x)
  u = b.inverse(params, x)
  np.testing.assert_allclose(jnp.mean(u, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.std(u, axis=(0, 1, 2)), 1.0, atol=1e-4)
  with pytest.raises(ValueError, match="zero variance"):
    b.data_init(params, jnp.ones((8, 2, 2, 3)))

  chain = F.real_nvp(2, 2, (8,), actnorm=True)
  params = perturb(chain.init(jax.random.key(2)), jax.random.key(3), 0.1)
  data = 5.0 + 3.0 * jax.random.normal(jax.random.key(4), (512, 2))
  params = chain.data_init(params, data)
  # The last (data-side) ActNorm whitens the data it sees.
  z = chain.layers[-1].inverse(params[-1], data)
  np.testing.assert_allclose(jnp.mean(z, 0), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(z, 0), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- bad inputs


def test_wrong_event_size_raises_naming_the_argument():
  b = F.MAF(3, (8,))
  params = b.init(jax.random.key(0))
  with pytest.raises(ValueError, match=r"^x must have event shape \(3,\)"):
    b.inverse_and_log_det(params, jnp.zeros((5, 4)))
  with pytest.raises(ValueError, match=r"^u must have event shape \(3,\)"):
    b.forward_and_log_det(params, jnp.zeros((4,)))
  with pytest.raises(ValueError, match="event shape"):
    jax.jit(F.Flow(b).log_prob)(params, jnp.zeros((2, 2)))
  with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
    F.InvertibleConv1x1((2, 2, 3)).forward(F.InvertibleConv1x1((2, 2, 3)).init(
        jax.random.key(1)), jnp.zeros((1, 2, 3)))
  with pytest.raises(TypeError, match="floating"):
    b.forward(params, jnp.zeros((3,), jnp.int32))


def test_context_errors():
  cond = F.IAF(3, (8,), context_size=2)
  params = cond.init(jax.random.key(0))
  with pytest.raises(ValueError, match="context"):
    cond.forward(params, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="context must have size 2"):
    cond.forward(params, jnp.zeros((3,)), jnp.zeros((3,)))
  with pytest.raises(ValueError, match="do not broadcast"):
    cond.forward(params, jnp.zeros((4, 3)), jnp.zeros((5, 2)))
  plain = F.MAF(3, (8,))
  with pytest.raises(ValueError, match="takes no context"):
    plain.forward(plain.init(jax.random.key(1)), jnp.zeros((3,)), jnp.zeros((2,)))


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
  params = perturb(flow.init(jax.random.key(0)), jax.random.key(1))
  x = jnp.array([[0.1, 0.2], [jnp.nan, 0.0]])
  with pytest.raises(ValueError, match=r"x contains 1 NaN .* index \(1, 0\)"):
    flow.log_prob(params, x)
  with pytest.raises(ValueError, match="context contains"):
    F.IAF(2, (4,), context_size=1).forward(
        F.IAF(2, (4,), context_size=1).init(jax.random.key(2)), jnp.zeros((2,)),
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
  x = jax.random.normal(jax.random.key(0), (10, 3))
  want = distributions.mvn_log_prob(x, params.bias, np.linalg.cholesky(w @ w.T))
  np.testing.assert_allclose(flow.log_prob(params, x), want, atol=1e-10)


def test_flow_sampling_shapes_and_consistency():
  flow = F.Flow(F.masked_autoregressive_flow(2, 2, (8,), context_size=3))
  params = perturb(flow.init(jax.random.key(0)), jax.random.key(1))
  h = jax.random.normal(jax.random.key(2), (4, 3))
  x = jax.jit(flow.sample, static_argnums=2)(jax.random.key(3), params, 5, h)
  assert x.shape == (5, 4, 2)
  x2, lq = flow.sample_and_log_prob(jax.random.key(4), params, 5, h)
  assert x2.shape == (5, 4, 2) and lq.shape == (5, 4)
  np.testing.assert_allclose(lq, flow.log_prob(params, x2, h), atol=1e-4)
  with pytest.raises(ValueError, match="num_samples"):
    flow.sample(jax.random.key(5), params, 0, h)


def test_flow_density_integrates_to_one(x64):
  flow = F.Flow(F.real_nvp(2, 4, (16,)))
  params = perturb(flow.init(jax.random.key(0)), jax.random.key(1), 0.5)
  g = np.linspace(-12.0, 12.0, 601)
  xx, yy = np.meshgrid(g, g)
  grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1))
  mass = float(jnp.sum(jnp.exp(flow.log_prob(params, grid))) * (g[1] - g[0]) ** 2)
  np.testing.assert_allclose(mass, 1.0, atol=2e-3)


def test_flow_module_matches_pure_api():
  bij = F.real_nvp(2, 2, (8,))
  module = F.FlowModule(bij)
  x = jax.random.normal(jax.random.key(0), (6, 2))
  variables = jax.jit(module.init)(jax.random.key(1), x)
  variables = {"params": {"flow": perturb(variables["params"]["flow"], jax.random.key(2))}}
  params = variables["params"]["flow"]
  np.testing.assert_allclose(module.apply(variables, x), F.Flow(bij).log_prob(params, x),
                             atol=1e-6)
  u, ld = module.apply(variables, x, method="inverse_and_log_det")
  x2, ld2 = module.apply(variables, u, method="forward_and_log_det")
  np.testing.assert_allclose(x2, x, atol=1e-5)
  np.testing.assert_allclose(ld2, -ld, atol=1e-5)
  s = module.apply(variables, jax.random.key(3), 7, method="sample")
  assert s.shape == (7, 2)
  lin = F.FlowModule(F.LULinear(3))
  v = lin.init(jax.random.key(4), jnp.ones((2, 3)))
  assert isinstance(v["params"]["flow"], F.LUParams)


# ----------------------------------------------------------------------------- flows as VAEs


def _toy_flow():
  flow = F.Flow(F.real_nvp(2, 4, (16,)))
  params = perturb(flow.init(jax.random.key(10)), jax.random.key(11), 0.4)
  x = jax.random.normal(jax.random.key(12), (5, 2)) * 1.5
  return flow, params, x


def test_flow_log_likelihood_is_the_change_of_variables_identity(x64):
  # Deterministic encoder z = f^{-1}(x): log p(x) = log p(z) + log|det dz/dx| (Jacobian by autodiff).
  flow, params, x = _toy_flow()
  inv = lambda v: flow.bijector.inverse(params, v)
  z = inv(x)
  log_det = jnp.stack([jnp.linalg.slogdet(jax.jacobian(inv)(xi))[1] for xi in x])
  want = distributions.standard_normal_log_prob(z) + log_det
  np.testing.assert_allclose(flow.log_prob(params, x), want, atol=1e-10)


def _vae_log_weights(key, flow, params, x, sigma, k, encoder):
  """Log-weights ``[K, B]`` of a VAE with prior N(0, I), decoder N(x; f(z), sigma^2 I) and an encoder
  built around z0 = f^{-1}(x) with noise scale sigma; all terms computed from their definitions."""
  f = lambda z: flow.bijector.forward(params, z)
  f_inv = lambda v: flow.bijector.inverse(params, v)
  d = x.shape[-1]
  eps = jax.random.normal(key, (k,) + x.shape, x.dtype)
  if encoder == "pushforward":
    # q(z|x) = law of f^{-1}(x + sigma eps): log q(z|x) = log N(f(z); x, sigma^2) + log|det f'(z)|.
    z = f_inv(x + sigma * eps)
    jac = jax.vmap(jax.vmap(jax.jacobian(f)))(z)
    log_q = distributions.normal_log_prob(f(z), x, jnp.log(sigma)) + jnp.linalg.slogdet(jac)[1]
  elif encoder == "linearised":
    # q(z|x) = N(z0, sigma^2 J^{-1} J^{-T}), J = f'(z0): the Laplace posterior of the decoder.
    jac_inv = jax.vmap(jax.jacobian(f_inv))(x)  # [B, D, D] = J^{-1}
    z = f_inv(x) + sigma * jnp.einsum("bij,kbj->kbi", jac_inv, eps)
    log_q = (distributions.standard_normal_log_prob(eps) - d * jnp.log(sigma)
             - jnp.linalg.slogdet(jac_inv)[1])
  else:  # isotropic Gaussian encoder N(z0, sigma^2 I)
    z = f_inv(x) + sigma * eps
    log_q = distributions.normal_log_prob(z, f_inv(x), jnp.log(sigma))
  log_lik = distributions.normal_log_prob(x, f(z), jnp.log(sigma))
  return distributions.standard_normal_log_prob(z) + log_lik - log_q


def test_flow_is_the_vanishing_noise_limit_of_a_vae(x64):
  flow, params, x = _toy_flow()
  log_px = flow.log_prob(params, x)
  keys = iter(jax.random.split(jax.random.key(0), 16))
  # Pushforward encoder: every log-weight equals the flow log-density at x + sigma * eps, so the
  # ELBO is the Gaussian-smoothed flow likelihood; at sigma -> 0 it is exact.
  errs = []
  for sigma in (1e-1, 1e-2, 1e-3):
    lw = _vae_log_weights(next(keys), flow, params, x, sigma, 256, "pushforward")
    assert lw.shape == (256, 5)
    errs.append(float(jnp.max(jnp.abs(objectives.elbo(lw) - log_px))))
  assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4, errs
  # Linearised Gaussian encoder and Gaussian decoder of the same sigma: ELBO -> log p(x) too.
  errs = []
  for sigma in (1e-1, 1e-2, 1e-3):
    lw = _vae_log_weights(next(keys), flow, params, x, sigma, 256, "linearised")
    errs.append(float(jnp.max(jnp.abs(objectives.elbo(lw) - log_px))))
  assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4, errs
  # The ELBO is a lower bound and IWAE tightens it.
  lw = _vae_log_weights(next(keys), flow, params, x, 1e-1, 256, "linearised")
  assert np.all(objectives.iwae_bound(lw) >= objectives.elbo(lw))
  # An isotropic encoder N(z0, sigma^2 I) does not close the gap unless f is volume-preserving and
  # orthogonal: the limit is log p(x) - KL(N(0, I) || N(0, (J^T J)^{-1})).
  lw = _vae_log_weights(next(keys), flow, params, x, 1e-4, 2048, "isotropic")
  jac = jax.vmap(jax.jacobian(lambda z: flow.bijector.forward(params, z)))(
      flow.bijector.inverse(params, x))
  lam = jnp.linalg.eigvalsh(jnp.einsum("bki,bkj->bij", jac, jac))
  gap = 0.5 * jnp.sum(1.0 + jnp.log(lam) - lam, axis=-1)
  np.testing.assert_allclose(objectives.elbo(lw), log_px + gap, atol=0.1)
  assert np.all(gap < -1e-3)
