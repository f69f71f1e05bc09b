"""The shape annotations of the core are checked in the test session.

``tests/conftest.py`` installs jaxtyping's import hook (with beartype) for the core modules before
anything imports :mod:`dgmjax`, in every pytest-xdist worker. These tests prove that it is active
(every public function of the core is jaxtyping's checking wrapper), that wrongly shaped input the
library does not check itself raises jaxtyping's ``TypeCheckError`` (a ``TypeError``), that return
values are checked, and that what the annotations allow (Python scalars, NumPy arrays, raw keys,
``jit`` tracers) keeps working. Input the library does check keeps raising the library's own
``ValueError`` naming the argument (the ``bad input`` section of each module's test file); a
few of those cases are repeated here, since they are where an annotation must stay loose.
"""

import inspect
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from dgmjax import distributions as D
from dgmjax import estimators as E
from dgmjax import flows as F
from dgmjax import gumbel as G
from dgmjax import objectives as O
from dgmjax import vq
from dgmjax.flows import _nets
from dgmjax.flows import autoregressive

from tests import conftest

MODULES = (D, G, O, E.surrogates, E.objects, vq, F.base, F.distribution, F.linear,
           F.autoregressive, F.coupling, F.actnorm, F.permutation)


def _is_checked(fn) -> bool:
  """True when ``fn`` is (or wraps, e.g. under ``nn.compact``) jaxtyping's checking wrapper."""
  while fn is not None:
    code = getattr(fn, "__code__", None)
    if code is not None and code.co_filename.endswith(os.path.join("jaxtyping", "_decorator.py")):
      return hasattr(fn, "__wrapped__")
    fn = getattr(fn, "__wrapped__", None)
  return False


def _public_functions():
  for mod in MODULES:
    for name, fn in vars(mod).items():
      if (not name.startswith("_") and inspect.isfunction(fn)
          and getattr(fn.__wrapped__ if hasattr(fn, "__wrapped__") else fn, "__module__", None)
          == mod.__name__):
        yield f"{mod.__name__}.{name}", fn


# ----------------------------------------------------------------------------- the hook is active


def test_the_import_hook_is_installed_in_this_process():
  # Under pytest-xdist this runs in a worker (PYTEST_XDIST_WORKER=gw0, gw1, ...): each worker
  # imports conftest.py, which installs the hook before any test module imports dgmjax.
  finders = [type(f).__name__ for f in sys.meta_path]
  assert "_JaxtypingFinder" in finders
  assert tuple(conftest.CHECKED_MODULES) == ("dgmjax.distributions", "dgmjax.gumbel",
                                             "dgmjax.objectives", "dgmjax.estimators",
                                             "dgmjax.flows", "dgmjax.vq")
  print("checked in worker", os.environ.get("PYTEST_XDIST_WORKER", "main"))


def test_every_public_function_of_the_core_is_checked():
  functions = dict(_public_functions())
  assert len(functions) > 60, sorted(functions)
  unchecked = sorted(name for name, fn in functions.items() if not _is_checked(fn))
  assert not unchecked, unchecked
  # ... and the methods of the flow classes, their static and class methods included.
  for fn in (F.Bijector.forward_and_log_det, F.Bijector.inverse_and_log_det, F.Bijector.forward,
             F.Flow.log_prob, F.Flow.sample_and_log_prob, F.QRLinear.apply_q,
             F.LULinear.weight, F.LULinear.params_from_matrix, F.MAF.conditioner,
             E.RunningMean.mean.fget, E.Estimator.check_num_samples):
    assert _is_checked(fn), fn


def test_the_hook_reaches_the_modules_of_a_checked_package():
  # "dgmjax.estimators" is a package: the hook matches its name as a prefix, so the functions of
  # its modules are checked, and so are the names the package re-exports (the same objects).
  assert E.iwae_surrogate.__module__ == "dgmjax.estimators.surrogates"
  assert E.from_name.__module__ == "dgmjax.estimators.objects"
  for fn in (E.iwae_surrogate, E.dreg_surrogate, E.baseline_loss, E.from_name, E.register,
             E.DReG.surrogate, E.surrogates._route):  # pylint: disable=protected-access
    assert _is_checked(fn), fn
  with pytest.raises(TypeCheckError, match="log_w_path"):
    E.dreg_surrogate(jnp.zeros((4, 2)), jnp.zeros((4, 2), jnp.int32))


def test_the_annotations_are_jaxtyping_shapes():
  sig = inspect.signature(E.surrogates._route.__wrapped__)  # pylint: disable=protected-access
  assert [str(p.annotation).replace("'", '"') for p in sig.parameters.values()] == [
      'Float[Array, "K *batch"]', 'Float[Array, "K *batch"]']
  assert str(sig.return_annotation).replace("'", '"') == 'Float[Array, "*batch"]'


# ----------------------------------------------------------------------------- wrong shapes raise


K, B = 4, 3


def test_mvn_sample_with_mismatched_event_sizes():
  # loc [B, 3] against a [2, 2] Cholesky factor: D is 3 in one and 2 in the other.
  with pytest.raises(TypeCheckError, match="scale_tril"):
    D.sample_mvn(jax.random.key(0), jnp.zeros((B, 3)), jnp.eye(2))


def test_mvn_sample_with_a_wrong_rank_cholesky_factor():
  with pytest.raises(TypeCheckError, match="scale_tril"):
    D.sample_mvn(jax.random.key(0), jnp.zeros(3), jnp.ones(3))


def test_route_with_transposed_terms():
  # A [B, K] term against [K, B] coefficients: the internal contract of every surrogate.
  coeff = jnp.ones((K, B))
  with pytest.raises(TypeCheckError, match="term"):
    E.surrogates._route(coeff, jnp.ones((B, K)))  # pylint: disable=protected-access


def test_sampler_with_an_array_in_place_of_a_key():
  with pytest.raises(TypeCheckError, match="key"):
    D.sample_normal(jnp.zeros(2), jnp.zeros(3), jnp.zeros(3))
  with pytest.raises(TypeCheckError, match="key"):
    G.gumbel_softmax(jnp.zeros(()), jnp.zeros(3), 1.0)


def test_householder_rows_of_the_wrong_rank():
  b = F.QRLinear(3)
  params = b.init(jax.random.key(0))
  with pytest.raises(TypeCheckError, match="y"):
    b.apply_q(params, jnp.ones(3))          # rows must be [N, D]


def test_linear_flow_bias_of_the_wrong_rank():
  # Without the annotation a [3, 1] bias would be stored and broadcast into a wrong flow.
  with pytest.raises(TypeCheckError, match="bias"):
    F.LULinear(3).params_from_matrix(np.eye(3), bias=np.zeros((3, 1)))


def test_conditioner_with_a_context_of_another_batch():
  params = _nets.mlp_init(jax.random.key(0), 2, (4,), 6, jnp.float32, context_size=1)
  with pytest.raises(TypeCheckError, match="context"):
    _nets.mlp_apply(params, jnp.ones((5, 2)), "relu", jnp.ones((4, 1)))


def test_a_log_weight_of_an_integer_dtype():
  with pytest.raises(TypeCheckError, match="log_weights"):
    O.iwae_bound(jnp.zeros((K, B), jnp.int32))


def test_the_return_value_is_checked(monkeypatch):
  # A conditioner (MADE) returning the wrong batch size: caught at the conditioner's return.
  b = F.MAF(3, (8,))
  params = b.init(jax.random.key(0))
  monkeypatch.setattr(autoregressive, "made_apply", lambda *a, **k: jnp.zeros((7, 6)))
  with pytest.raises(TypeCheckError, match="return value"):
    b.conditioner(params, jnp.zeros((2, 3)))


def test_checks_run_at_trace_time_under_jit():
  f = jax.jit(lambda c, t: E.surrogates._route(c, t))  # pylint: disable=protected-access
  with pytest.raises(TypeCheckError):
    f(jnp.ones((K, B)), jnp.ones((B, K)))


# ----------------------------------------------------------------------------- the library speaks first


@pytest.mark.parametrize("thunk,match", [
    (lambda: E.dreg_surrogate(jnp.zeros((4, 2)), jnp.zeros((3, 2))), "share one shape"),
    (lambda: vq.quantize(jnp.ones((2, 3)), jnp.ones((4, 2))), "codebook"),
    (lambda: G.gumbel_softmax(jax.random.key(0), jnp.zeros((3, 3)), jnp.ones(3)),
     "temperature with shape"),
    (lambda: D.normal_log_prob(jnp.zeros((4, 3)), 0.0, jnp.zeros(2)), "do not broadcast"),
    (lambda: O.iwae_bound(jnp.zeros((2, 3)), axis=0.0), "axis must be an int, got float"),
    (lambda: F.LULinear(3.0), "event_size must be an int, got float"),
], ids=["dreg_shapes", "vq_embedding_dim", "temperature_per_row", "normal_broadcast",
        "axis_float", "bijector_config"])
def test_inputs_the_library_checks_raise_its_own_error(thunk, match):
  with pytest.raises(ValueError, match=match) as info:
    thunk()
  assert not isinstance(info.value, TypeCheckError)


# ----------------------------------------------------------------------------- valid input passes


def test_what_the_annotations_allow_keeps_working():
  lw = np.random.default_rng(0).normal(size=(K, B)).astype(np.float32)
  # NumPy arrays, Python scalars and NumPy integers for static settings.
  assert O.iwae_bound(lw, axis=np.int64(0)).shape == (B,)
  assert O.iwae_bound(lw.T, axis=1).shape == (B,)             # samples on another axis
  assert D.normal_log_prob(np.zeros((K, B, 2)), 0.0, 0, event_ndims=np.int32(1)).shape == (K, B)
  assert D.bernoulli_log_prob(1.0, 2.0, event_ndims=0).shape == ()
  # Typed keys and raw uint32 keys.
  for key in (jax.random.key(0), jax.random.PRNGKey(0)):
    k1, k2 = jax.random.split(key)
    assert D.sample_normal(k1, jnp.zeros(3), 0.0).shape == (3,)
    assert G.gumbel_softmax(k2, jnp.zeros((2, 3)), 0.5).shape == (2, 3)
  # Broadcast batches of a Cholesky factor and its mean.
  k1, k2 = jax.random.split(jax.random.key(1))
  assert D.sample_mvn(k1, jnp.zeros((B, 2)), jnp.eye(2)).shape == (B, 2)
  assert D.sample_mvn(k2, jnp.zeros(2), jnp.broadcast_to(jnp.eye(2), (B, 2, 2))).shape == (B, 2)
  # Traced scalars (an annealed temperature, a traced EMA decay) and vmapped keys.
  y = jax.jit(lambda t: G.gumbel_softmax(jax.random.key(2), jnp.zeros(3), t))(0.5)
  assert y.shape == (3,)
  keys = jax.random.split(jax.random.key(3), K)
  z = jax.vmap(lambda k: D.sample_normal(k, jnp.zeros(2), jnp.zeros(2)))(keys)
  assert z.shape == (K, 2)
  state = vq.ema_init(jnp.ones((4, 2)))
  new = jax.jit(vq.ema_update)(state, jnp.ones((3, 2)), jnp.array([0, 1, 1]), 0.5)
  assert new.codebook.shape == (4, 2)
  # Flows on vectors and on images (log-determinants of the batch shape).
  conv = F.InvertibleConv1x1((2, 2, 3))
  x, ld = conv.forward_and_log_det(conv.init(jax.random.key(4)), jnp.ones((5, 2, 2, 3)))
  assert x.shape == (5, 2, 2, 3) and ld.shape == (5,)
