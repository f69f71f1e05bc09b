"""Data of the experiments: the data directory, validated splits, the fixed test binarization."""

from __future__ import annotations

import os

import jax
import numpy as np

from dgmjax import data


def default_data_dir() -> str | None:
  """``DGMJAX_DATA_DIR`` if set, else ``../shared/data`` next to the repository if it exists."""
  env = os.environ.get("DGMJAX_DATA_DIR")
  if env:
    return env
  staged = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared",
                                        "data"))
  return staged if os.path.isdir(staged) else None


def load_images(config, split: str, image_shape=None) -> np.ndarray:
  """Loads and validates one split of ``config.dataset`` (from ``config.data_dir`` or
  :func:`default_data_dir`): float32 ``[N, H, W, C]`` in [0, 1] (raises ValueError)."""
  name = f"{config.dataset}/{split} image"
  ds = data.load(config.dataset, split, data_dir=config.get("data_dir") or default_data_dir())
  images = np.asarray(ds["image"])
  if images.ndim == 3:  # [N, H, W] -> [N, H, W, 1]
    images = images[..., None]
  return data.check_images(images, name=name, image_shape=image_shape,
                               binary_likelihood=True)


def binarize_fixed(images: np.ndarray, seed: int) -> np.ndarray:
  """One stochastic binarization of an evaluation split (a fixed draw, as the reference code)."""
  key = jax.random.fold_in(jax.random.key(seed), 0x5EED)
  return np.asarray(data.binarize(key, jax.numpy.asarray(images)))


def random_subset(x: np.ndarray, num: int, seed: int) -> np.ndarray:
  """``num`` examples drawn without replacement (kept in order), or all when ``num`` is 0.

  A random subset, not the first ``num``: binarized MNIST's test split is ordered by class.
  """
  if not num or num >= len(x):
    return x
  return x[np.sort(np.random.default_rng(seed).permutation(len(x))[:num])]
