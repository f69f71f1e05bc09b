"""Figures written as PNG with matplotlib's Agg backend: image grids and training curves."""

from __future__ import annotations

import json
import math

import numpy as np


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def image_grid(images, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tiles ``[N, H, W]`` or ``[N, H, W, C]`` images in [0, 1] into one ``[H', W']`` (or ``[H', W', C]``).

  Args:
    images: ``N`` images; ``C`` must be 1 or 3.
    ncol: images per row (default: ``ceil(sqrt(N))``).
    pad: pixels of white padding between images.

  Returns:
    The tiled array, 2-D for grey images.
  """
  images = np.asarray(images, np.float32)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
    raise ValueError(f"images must be [N, H, W] or [N, H, W, C] with C in (1, 3), got shape "
                     f"{images.shape}")
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, ncol)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = img
  return grid[..., 0] if c == 1 else grid


def save_image_grid(path: str, images, *, ncol: int | None = None,
                    title: str | None = None) -> str:
  """Writes a grid of images in [0, 1] as a PNG (ink dark on white) and returns the path."""
  plt = _plt()
  grid = image_grid(images, ncol)
  fig, ax = plt.subplots(figsize=(6, max(1.0, 6 * grid.shape[0] / grid.shape[1])))
  ax.imshow(np.clip(grid, 0.0, 1.0), cmap="gray_r" if grid.ndim == 2 else None, vmin=0.0,
            vmax=1.0, interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


def save_reconstructions(path: str, originals, reconstructions, *, num: int = 16) -> str:
  """Originals (top row) above their reconstructions (bottom row), as a PNG."""
  a = np.asarray(originals, np.float32)[:num]
  b = np.asarray(reconstructions, np.float32)[:num]
  return save_image_grid(path, np.concatenate([a, b], 0), ncol=a.shape[0],
                         title="data (top) and reconstructions (bottom)")


def save_training_curve(path: str, metrics_jsonl: str, *, key: str = "bound") -> str:
  """Plots a metric of a ``metrics.jsonl`` log against the epoch and writes a PNG."""
  plt = _plt()
  with open(metrics_jsonl) as f:
    rows = [json.loads(l) for l in f if l.strip()]
  rows = [r for r in rows if key in r and "epoch" in r]
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot([r["epoch"] for r in rows], [r[key] for r in rows])
  ax.set_xlabel("epoch")
  ax.set_ylabel(f"train {key} (nats)")
  ax.grid(alpha=0.3)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


#: The public API of this module.
__all__ = [
    "image_grid", "save_image_grid", "save_reconstructions", "save_training_curve",
]
