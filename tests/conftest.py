"""Test configuration: strict rank promotion and key-reuse checking for the whole suite."""

import os

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def x64():
  """Runs the test body with 64-bit floats enabled."""
  with jax.enable_x64(True):
    yield


def shared_data_dir():
  """The directory of staged datasets: ``DGMJAX_DATA_DIR`` or ``../shared/data`` next to the repo."""
  path = os.environ.get("DGMJAX_DATA_DIR") or os.path.join(REPO_ROOT, "..", "shared", "data")
  return path if os.path.isdir(path) else None
