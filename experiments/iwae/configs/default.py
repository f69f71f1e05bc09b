"""Defaults shared by every IWAE configuration (Burda et al.'s protocol where it applies):
:func:`experiments.common.burda.default_config`."""

from experiments.common import burda


def get_config():
  return burda.default_config()
