"""The layers of the library: the pure core and the model contract load without Flax (and the core
without optax); the Flax modules live in ``dgmjax.nn``.

Each import runs in a fresh interpreter, so what another test imported cannot hide a dependency.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The pure core: arrays and keys in, arrays out; neither Flax nor optax.
CORE = ("distributions", "estimators", "flows", "gumbel", "objectives", "priors", "vq")
#: Written over the model contract: no Flax.
OVER_THE_CONTRACT = ("diagnostics", "evaluation", "models")


def _loaded_after(code: str) -> set:
  """The top-level packages among flax / optax that ``code`` leaves in ``sys.modules``."""
  probe = code + "\nimport sys\nprint(' '.join(m for m in ('flax', 'optax') if m in sys.modules))"
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return set(out.stdout.split())


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_neither_flax_nor_optax(name):
  assert _loaded_after(f"import dgmjax.{name}") == set()


@pytest.mark.parametrize("name", OVER_THE_CONTRACT)
def test_the_contract_layer_imports_no_flax(name):
  assert "flax" not in _loaded_after(f"import dgmjax.{name}")


def test_a_model_from_plain_functions_needs_no_flax():
  code = ("import jax, jax.numpy as jnp\n"
          "from dgmjax import models\n"
          "enc = lambda p, x: (x @ p, jnp.zeros((x.shape[0], 2)))\n"
          "dec = lambda p, z: z @ p\n"
          "m = models.from_networks(enc, dec)\n"
          "p = m.init(jax.random.key(0), jnp.ones((3, 4)), encoder_params=jnp.ones((4, 2)),\n"
          "           decoder_params=jnp.ones((2, 4)))\n"
          "assert models.log_weights(m, p, jnp.ones((3, 4)), jax.random.key(1), 2).shape == (2, 3)\n"
          "assert m.encoder.kind == 'function'")
  assert "flax" not in _loaded_after(code)


def test_the_flax_models_load_on_first_use():
  code = ("import sys, dgmjax.models as M\n"
          "assert not any(f'dgmjax.models.{n}' in sys.modules for n in M.FLAX_MODELS)\n"
          "assert [getattr(M, n).__name__ for n in M.FLAX_MODELS] == "
          "[f'dgmjax.models.{n}' for n in M.FLAX_MODELS]")
  assert "flax" in _loaded_after(code)


def test_the_flax_modules_live_in_nn():
  from dgmjax import estimators, flows, nn, vq  # pylint: disable=import-outside-toplevel
  for name in ("MLP", "GaussianHead", "PixelCNN", "MaskedConv2D", "VectorQuantizer",
               "NVILBaseline", "FlowModule"):
    assert getattr(nn, name).__module__.startswith("dgmjax.nn."), name
  assert not hasattr(vq, "VectorQuantizer") and not hasattr(estimators, "NVILBaseline")
  assert not hasattr(flows, "FlowModule")
