"""Gradient signal-to-noise ratio of variational estimators: Rainforth et al. (ICML 2018)."""
