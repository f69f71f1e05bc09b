"""Figures of the experiments: matplotlib without a display (the one ``matplotlib.use`` call)."""

from __future__ import annotations


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend (files only, no display needed)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt
