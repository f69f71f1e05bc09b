"""Test configuration: strict rank promotion, key-reuse checking, shape checking and cheap compiles.

Shape annotations: the core modules (:data:`CHECKED_MODULES`) carry jaxtyping annotations
(``Float[Array, "K B"]``, ...) that are inert at run time. Here, before anything imports
:mod:`dgmjax`, jaxtyping's import hook decorates every function of those modules with
``jaxtyped(typechecker=beartype)``, so each call in the test session (in every pytest-xdist
worker: each one imports this file) checks the dtypes and shapes of its arguments and its return
value; inside ``jit`` the check runs once, at trace time. ``tests/test_shapes.py`` proves the
hook is active.

The checker does not check Python ``int`` / ``bool`` settings (``axis``, ``event_ndims``,
``num_groups``, ``hard``, ...): the library validates those itself, accepting NumPy integers and
raising :class:`~dgmjax._checks.ArgumentTypeError` that names the argument (tested in the
``bad input`` section of each module's test file, with ``tests/bad_input.py``), so those hints
are overridden by ``object``. A ``float`` hint
accepts any real number (``numbers.Real``: Python and NumPy ints and floats, not arrays), as
PEP 484's numeric tower intends.
"""

import os
import sys

#: XLA's CPU backend without its optimisation passes, for the test session and the subprocesses it
#: starts (set before jax is imported): the suite's programs are small and compiled once or twice,
#: so compiling is most of their cost, and these flags cut it by about a third. What a test checks
#: (oracles, identities, bitwise agreement of two paths) holds at every optimisation level; timings
#: are measured by ``benchmarks/``, never here. The device suite's ``--smoke`` uses the same flags.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + TEST_XLA_FLAGS).strip()

import jax  # pylint: disable=wrong-import-position
import pytest
from jaxtyping import install_import_hook

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The modules whose annotations are checked in the test session.
CHECKED_MODULES = ("dgmjax.distributions", "dgmjax.gumbel", "dgmjax.objectives",
                   "dgmjax.estimators", "dgmjax.flows", "dgmjax.vq")

#: The typechecker of ``jaxtyping.install_import_hook``: an expression over ``beartype``.
TYPECHECKER = ("beartype.beartype(conf=beartype.BeartypeConf(hint_overrides=beartype.FrozenDict("
               "{int: object, bool: object, float: __import__('numbers').Real})))")

_already = sorted(m for m in CHECKED_MODULES if m in sys.modules)
if _already:  # pragma: no cover - a plugin or an earlier conftest imported dgmjax first
  raise RuntimeError(f"jaxtyping cannot check modules that are already imported: {_already}")
install_import_hook(list(CHECKED_MODULES), TYPECHECKER)


@pytest.fixture
def x64():
  """Runs the test body with 64-bit floats enabled."""
  with jax.enable_x64(True):
    yield


def shared_data_dir():
  """The directory of staged datasets: ``DGMJAX_DATA_DIR`` or ``../shared/data`` next to the repo."""
  path = os.environ.get("DGMJAX_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared", "data")
  return path if os.path.isdir(path) else None
