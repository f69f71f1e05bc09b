"""Experiments: one folder per study; each composes the library and writes results to a workdir."""
