"""2-D density estimation with normalizing flows (issue 6, build 5)."""
