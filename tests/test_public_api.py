"""The public API: a curated ``__all__`` per module, subpackages reachable from ``import dgmjax``,
and the old names kept for one release with a ``DeprecationWarning``."""

import ast
import importlib
import inspect
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dgmjax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _defined_public_names(module):
  """Functions, classes and constants a module's source defines at its top level."""
  tree = ast.parse(open(module.__file__).read())
  out = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
      if not (ast.get_docstring(node) or "").startswith("Deprecated"):  # kept, not exported
        out.add(node.name)
    elif isinstance(node, ast.Assign):
      out |= {t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()
              and not t.id.startswith("_")}
  return out


def test_subpackages_are_reachable_from_import_dgmjax_alone():
  code = ("import sys, dgmjax\n"
          "assert 'dgmjax.training' not in sys.modules and 'matplotlib' not in sys.modules\n"
          "for name in dgmjax.SUBPACKAGES:\n"
          "  assert getattr(dgmjax, name).__name__ == 'dgmjax.' + name, name\n"
          "assert dgmjax.estimators.dreg_surrogate and dgmjax.models.from_networks\n"
          "print('ok')")
  out = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("name", dgmjax.SUBPACKAGES)
def test_every_module_has_a_curated_all_that_resolves_and_is_complete(name):
  module = importlib.import_module(f"dgmjax.{name}")
  assert hasattr(module, "__all__"), f"dgmjax.{name} has no __all__"
  exported = set(module.__all__)
  assert len(exported) == len(module.__all__), "duplicates in __all__"
  for n in exported:
    assert hasattr(module, n), f"dgmjax.{name}.__all__ names {n!r}, which does not exist"
  if not hasattr(module, "__path__"):  # a module (packages re-export from their modules)
    missing = _defined_public_names(module) - exported
    assert not missing, f"public names of dgmjax.{name} missing from __all__: {sorted(missing)}"


def test_top_level_all_resolves_without_warnings():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for n in dgmjax.__all__:
      assert getattr(dgmjax, n) is not None
  assert dgmjax.iwae_bound is dgmjax.objectives.iwae_bound
  assert issubclass(dgmjax.ArgumentTypeError, TypeError)
  assert issubclass(dgmjax.ArgumentTypeError, ValueError)
  assert set(dgmjax.SUBPACKAGES) <= set(dir(dgmjax))


@pytest.mark.parametrize("name, module", [("quantize", "vq"), ("ema_update", "vq"),
                                          ("normal_log_prob", "distributions"),
                                          ("gumbel_softmax", "gumbel")])
def test_old_top_level_names_warn_and_are_the_same_function(name, module):
  with pytest.warns(DeprecationWarning, match=f"use dgmjax.{module}.{name}"):
    old = getattr(dgmjax, name)
  assert old is getattr(importlib.import_module(f"dgmjax.{module}"), name)
  with pytest.raises(AttributeError):
    dgmjax.no_such_name  # pylint: disable=pointless-statement


def test_old_training_and_parallel_names_warn():
  from dgmjax import parallel, training
  with pytest.warns(DeprecationWarning, match="KL_BOUNDS"):
    assert training.KL_OBJECTIVES == ("vae", "iwae")
  assert training.KL_BOUNDS == ("elbo", "iwae")
  assert "vae" not in training.BOUND_ESTIMATORS
  assert "bound_objectives_loss" not in parallel.__all__


def _old_order_cases():
  """(name, old-order call, current-order call) of every function whose key moved after the
  parameters and data; each pair must give the same result."""
  from dgmjax import flows, pixelcnn, priors
  from dgmjax.models import linear_gaussian as lg
  k = lambda: jax.random.key(7)   # a fresh key per call (key reuse is checked)
  lgp = lg.init(jax.random.key(0), 3, 2)
  mog = priors.MixtureOfGaussians(2, num_components=3)
  mog_p = mog.init(jax.random.key(2))
  flow = flows.Flow(flows.real_nvp(2, 2, (8,)))
  cases = [
      ("MixtureOfGaussians.sample", lambda: mog.sample(k(), mog_p, 5),
       lambda: mog.sample(mog_p, k(), 5)),
      ("linear_gaussian.sample", lambda: lg.sample(k(), lgp, 3), lambda: lg.sample(lgp, k(), 3)),
  ]
  fp = flow.init(jax.random.key(3))
  # the old order fails the (test-time) jaxtyping check of `key`: call past the checker
  raw = inspect.unwrap(flows.Flow.sample)
  cases.append(("Flow.sample", lambda: raw(flow, k(), fp, 4), lambda: flow.sample(fp, k(), 4)))
  pcnn = pixelcnn.PixelCNN(num_classes=1, features=4, num_layers=1)
  pp = pcnn.init(jax.random.key(4), jnp.zeros((1, 2, 2, 1)))
  cases.append(("pixelcnn.sample", lambda: pixelcnn.sample(k(), pcnn, pp, (1, 2, 2)),
                lambda: pixelcnn.sample(pcnn, pp, k(), (1, 2, 2))))
  return cases


def test_old_key_first_argument_orders_warn_and_give_the_same_result():
  cases = _old_order_cases()
  assert len(cases) >= 4
  for name, old, new in cases:
    with pytest.warns(DeprecationWarning, match=rf"{name}\(key, .*deprecated"):
      got = old()
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      want = new()
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 got, want)
