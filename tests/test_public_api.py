"""The public API: a curated ``__all__`` per module, subpackages reachable from ``import dgmjax``,
and no pre-release aliases."""

import ast
import importlib
import importlib.util
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


@pytest.mark.parametrize("name", ["quantize", "ema_update", "normal_log_prob", "gumbel_softmax"])
def test_module_names_are_not_re_exported_at_the_top_level(name):
  # One place per name: dgmjax.vq.quantize, not dgmjax.quantize.
  with pytest.raises(AttributeError):
    getattr(dgmjax, name)


def test_no_pre_release_aliases():
  from dgmjax import losses, parallel, training
  assert not hasattr(training, "KL_OBJECTIVES")
  assert losses.KL_BOUNDS == ("elbo", "iwae")
  assert "vae" not in losses.BOUND_ESTIMATORS
  assert not hasattr(parallel, "bound_objectives_loss")
  assert not hasattr(training, "make_loss") and not hasattr(training, "RESUME_IGNORED")
  assert importlib.util.find_spec("dgmjax._deprecation") is None
