"""Log-densities, reparametrized samplers and analytic KL divergences.

Pure functions of arrays. Parameters broadcast against each other and against the value; the event
lives on the trailing axes: ``event_ndims`` of them are summed (default 1 for vector-valued
distributions, 0 for per-variable categorical log-probabilities). Every function returns the dtype
of its inputs; constants are Python scalars so that bfloat16 and float16 stay as they are.

Samplers draw one sample; K samples come from ``jax.vmap`` over ``jax.random.split(key, K)``.

Bad input (see :mod:`dgmjax._checks`): a value off the support of a density (``x`` not in
{0, 1} for a Bernoulli, a class index outside ``[0, C)``, a one-hot vector that is not one-hot,
a pixel outside [0, 1], NaN or infinite data) raises ``ValueError`` naming the argument when it
is concrete, and gives NaN at the offending entries when it is traced (inside ``jit`` / ``vmap``
/ ``grad``), never a plausible number. Wrong dtypes and shapes raise under ``jit`` too; a complex
array anywhere raises :class:`~dgmjax._checks.ArgumentTypeError` (a ``TypeError``) naming it.

Samplers never turn invalid parameters into a valid draw: concrete invalid parameters (NaN, an
all ``-inf`` categorical, a ``scale_tril`` that is not lower triangular with a positive
diagonal) raise ``ValueError`` naming the argument; traced ones give NaN for floating draws and
``-1`` (:data:`dgmjax._checks.INVALID_DRAW`) for integer draws, whose log-probability is then NaN
under ``jit`` (and a ``ValueError`` when concrete).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, DTypeLike, Float, Int, PRNGKeyArray, Real, Shaped

from dgmjax import _checks

__all__ = [
    "BERNOULLI_SUPPORTS", "bernoulli_log_prob", "categorical_entropy", "categorical_log_prob",
    "categorical_log_prob_one_hot", "discretized_logistic_log_prob", "kl_categorical_categorical",
    "kl_categorical_uniform", "kl_normal_normal", "kl_normal_standard_normal", "mvn_log_prob",
    "normal_entropy", "normal_log_prob", "sample_bernoulli", "sample_categorical", "sample_mvn",
    "sample_normal", "standard_normal_log_prob",
]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _reduce(x: Float[ArrayLike, "..."], name: str, event_ndims: int) -> Float[Array, "..."]:
  axes = _checks.event_axes(name, x, event_ndims)
  return jnp.sum(x, axis=axes) if axes else jnp.asarray(x)


# ----------------------------------------------------------------------------- Normal


def normal_log_prob(x: Real[ArrayLike, "..."], loc: Real[ArrayLike, "..."],
                    log_scale: Real[ArrayLike, "..."], event_ndims: int = 1) -> Float[Array, "..."]:
  """Log-density of a diagonal Normal, summed over the trailing ``event_ndims`` axes.

  .. math:: \\log N(x; \\mu, \\sigma^2) = -\\tfrac12 ((x-\\mu)/\\sigma)^2 - \\log\\sigma - \\tfrac12\\log 2\\pi

  Args:
    x: value, ``[..., D]``.
    loc: mean ``mu``, broadcastable to ``x``.
    log_scale: ``log sigma``, broadcastable to ``x``.
    event_ndims: number of trailing axes summed over (0 gives elementwise log-densities).

  Returns:
    ``[...]``: the broadcast shape of the arguments less its last ``event_ndims`` axes.

  Raises:
    ValueError: ``x`` is concrete and holds NaN or infinite values. Traced NaN gives NaN.
  """
  _checks.check_finite("x", x)
  x, loc, log_scale = _checks.broadcast(x=x, loc=loc, log_scale=log_scale)
  z = (x - loc) * jnp.exp(-log_scale)
  lp = -0.5 * jnp.square(z) - log_scale - _HALF_LOG_2PI
  return _reduce(lp, "x", event_ndims)


def standard_normal_log_prob(x: Real[ArrayLike, "..."],
                             event_ndims: int = 1) -> Float[Array, "..."]:
  """Log-density of ``N(0, I)``, summed over the trailing ``event_ndims`` axes.

  .. math:: \\log N(x; 0, I) = -\\tfrac12 \\|x\\|^2 - \\tfrac{D}{2}\\log 2\\pi

  Args:
    x: value, ``[..., D]``.
    event_ndims: number of trailing axes summed over.

  Returns:
    ``[...]``.

  Raises:
    ValueError: ``x`` is concrete and holds NaN or infinite values. Traced NaN gives NaN.
  """
  _checks.check_finite("x", x)
  return _reduce(-0.5 * jnp.square(x) - _HALF_LOG_2PI, "x", event_ndims)


def sample_normal(key: PRNGKeyArray, loc: Real[ArrayLike, "..."],
                  log_scale: Real[ArrayLike, "..."]) -> Float[Array, "..."]:
  """One reparametrized draw from a diagonal Normal.

  .. math:: z = \\mu + \\sigma \\odot \\epsilon, \\quad \\epsilon \\sim N(0, I)

  Args:
    key: a JAX PRNG key.
    loc: mean, ``[..., D]``.
    log_scale: log standard deviation, broadcastable to ``loc``.

  Returns:
    One sample with the broadcast shape of ``loc`` and ``log_scale``; differentiable in both.

  Raises:
    ValueError: ``loc`` or ``log_scale`` concrete with NaN or infinite entries (traced NaN gives
      NaN draws); shapes that do not broadcast.

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014.
  """
  _checks.check_finite("loc", loc)
  _checks.check_finite("log_scale", log_scale)
  loc, log_scale = _checks.broadcast(loc=loc, log_scale=log_scale)
  eps = jax.random.normal(key, loc.shape, jnp.result_type(loc, log_scale))
  return loc + jnp.exp(log_scale) * eps


def normal_entropy(log_scale: Real[ArrayLike, "..."],
                   event_ndims: int = 1) -> Float[Array, "..."]:
  """Entropy of a diagonal Normal. ``[..., D] -> [...]``.

  .. math:: H = \\sum_d \\log\\sigma_d + \\tfrac12 (1 + \\log 2\\pi)
  """
  return _reduce(log_scale + (0.5 + _HALF_LOG_2PI), "log_scale", event_ndims)


def kl_normal_standard_normal(loc: Real[ArrayLike, "..."], log_scale: Real[ArrayLike, "..."],
                              event_ndims: int = 1) -> Float[Array, "..."]:
  """Analytic ``KL(N(mu, diag sigma^2) || N(0, I))``, summed over the event axes.

  .. math:: KL = \\tfrac12 \\sum_d (\\sigma_d^2 + \\mu_d^2 - 1 - 2\\log\\sigma_d)

  Args:
    loc: ``[..., D]``.
    log_scale: ``[..., D]`` (broadcastable).
    event_ndims: trailing axes summed over; 0 gives the KL per latent dimension.

  Returns:
    ``[...]``.

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014, Appendix B.
  """
  loc, log_scale = _checks.broadcast(loc=loc, log_scale=log_scale)
  kl = 0.5 * (jnp.exp(2.0 * log_scale) + jnp.square(loc) - 1.0) - log_scale
  return _reduce(kl, "loc", event_ndims)


def kl_normal_normal(loc_q: Real[ArrayLike, "..."], log_scale_q: Real[ArrayLike, "..."],
                     loc_p: Real[ArrayLike, "..."], log_scale_p: Real[ArrayLike, "..."],
                     event_ndims: int = 1) -> Float[Array, "..."]:
  """Analytic ``KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))`` for diagonal Normals.

  .. math:: KL = \\sum_d \\log\\frac{\\sigma_p}{\\sigma_q} + \\frac{\\sigma_q^2 + (\\mu_q - \\mu_p)^2}{2\\sigma_p^2} - \\tfrac12

  Args:
    loc_q, log_scale_q: parameters of ``q``, ``[..., D]``.
    loc_p, log_scale_p: parameters of ``p``, broadcastable.
    event_ndims: trailing axes summed over.

  Returns:
    ``[...]``.
  """
  loc_q, log_scale_q, loc_p, log_scale_p = _checks.broadcast(
      loc_q=loc_q, log_scale_q=log_scale_q, loc_p=loc_p, log_scale_p=log_scale_p)
  log_ratio = log_scale_q - log_scale_p
  kl = 0.5 * (jnp.exp(2.0 * log_ratio) + jnp.square((loc_q - loc_p) * jnp.exp(-log_scale_p))
              - 1.0) - log_ratio
  return _reduce(kl, "loc_q", event_ndims)


# ----------------------------------------------------------------------------- full-covariance Normal


def _check_scale_tril(scale_tril: Shaped[ArrayLike, "..."]) -> int:
  """Checks a Cholesky factor ``[..., D, D]``; returns ``D``.

  Shape and dtype always (also under ``jit``); when concrete, finite entries, zeros above the
  diagonal and a positive diagonal (``ValueError`` naming ``scale_tril``).
  """
  _checks.check_numeric("scale_tril", scale_tril)
  shape = jnp.shape(scale_tril)
  if len(shape) < 2 or shape[-1] != shape[-2]:
    raise ValueError(f"scale_tril must be [..., D, D], got shape {shape}")
  if _checks.is_concrete(scale_tril):
    _checks.check_finite("scale_tril", scale_tril)
    arr = np.asarray(scale_tril)
    upper = np.triu(np.ones(shape[-2:], bool), 1) & (arr != 0)
    if np.any(upper):
      raise ValueError(
          "scale_tril must be lower triangular (zeros above the diagonal; it is not symmetrised "
          f"or read as a full matrix): {int(np.count_nonzero(upper))} non-zero entries above "
          f"the diagonal, the first at index {tuple(int(i) for i in np.argwhere(upper)[0])} "
          "(use jnp.linalg.cholesky(cov) or jnp.tril(...))")
    diag = np.diagonal(arr, axis1=-2, axis2=-1)
    if np.any(diag <= 0):
      idx = tuple(int(i) for i in np.argwhere(diag <= 0)[0])
      raise ValueError(
          "scale_tril must have a positive diagonal (a Cholesky factor of a positive-definite "
          f"covariance): {int(np.count_nonzero(diag <= 0))} diagonal entries are <= 0, the "
          f"first {diag[idx].item()!r} at index {idx} of the diagonal (shape {diag.shape})")
  return shape[-1]


def _scale_tril_valid(tril: Float[Array, "... D D"]) -> Bool[Array, "..."]:
  """The traced form of :func:`_check_scale_tril`: lower triangular with a positive diagonal."""
  return (jnp.all(jnp.diagonal(tril, axis1=-2, axis2=-1) > 0, axis=-1)
          & jnp.all(jnp.triu(tril, 1) == 0, axis=(-2, -1)))


def mvn_log_prob(x: Real[ArrayLike, "..."], loc: Real[ArrayLike, "..."],
                 scale_tril: Real[ArrayLike, "..."]) -> Float[Array, "..."]:
  """Log-density of a multivariate Normal with covariance ``L L^T``.

  .. math:: \\log N(x; \\mu, LL^T) = -\\tfrac12\\|L^{-1}(x-\\mu)\\|^2 - \\sum_d \\log|L_{dd}| - \\tfrac{D}{2}\\log 2\\pi

  Args:
    x: ``[..., D]``.
    loc: ``[..., D]`` (broadcastable).
    scale_tril: lower-triangular Cholesky factor ``[..., D, D]`` with a positive diagonal
      (broadcastable).

  Returns:
    ``[...]``.

  Raises:
    ValueError: wrong shapes; ``x`` concrete with NaN or infinite values (traced NaN gives NaN);
      ``scale_tril`` concrete and not finite, lower triangular with a positive diagonal (a full
      matrix is not read as its lower triangle, a singular factor is not a density). Traced, such
      a ``scale_tril`` gives NaN for the distributions it parametrizes.
  """
  _checks.check_finite("x", x)
  d = _check_scale_tril(scale_tril)
  x, loc = _checks.broadcast(x=x, loc=loc)
  diff = x - loc
  if jnp.shape(diff)[-1:] != (d,):
    raise ValueError(f"x - loc has event size {jnp.shape(diff)[-1:]}, scale_tril expects {d}")
  batch = jnp.broadcast_shapes(jnp.shape(diff)[:-1], jnp.shape(scale_tril)[:-2])
  diff = jnp.broadcast_to(diff, batch + (d,))
  tril = jnp.broadcast_to(scale_tril, batch + (d, d))
  white = jax.scipy.linalg.solve_triangular(tril, diff[..., None], lower=True)[..., 0]
  log_det = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(tril, axis1=-2, axis2=-1))), axis=-1)
  lp = -0.5 * jnp.sum(jnp.square(white), axis=-1) - log_det - d * _HALF_LOG_2PI
  if not _checks.is_concrete(scale_tril):
    lp = _checks.nan_unless(_scale_tril_valid(tril), lp)
  return lp


def sample_mvn(key: PRNGKeyArray, loc: Real[ArrayLike, "*#batch D"],
               scale_tril: Real[ArrayLike, "*#batch D D"]) -> Float[Array, "*batch D"]:
  """One reparametrized draw ``mu + L eps`` from a multivariate Normal. ``[..., D]``.

  ``scale_tril`` as for :func:`mvn_log_prob`: concrete ``loc`` / ``scale_tril`` that are not
  finite, or a ``scale_tril`` that is not lower triangular with a positive diagonal, raise
  ``ValueError``; a traced such ``scale_tril`` gives NaN draws.
  """
  _checks.check_finite("loc", loc)
  d = _check_scale_tril(scale_tril)
  if jnp.ndim(loc) < 1 or jnp.shape(loc)[-1] != d:
    raise ValueError(f"loc must be [..., D] with D = {d} (that of scale_tril, shape "
                     f"{jnp.shape(scale_tril)}), got shape {jnp.shape(loc)}")
  try:
    batch = jnp.broadcast_shapes(jnp.shape(loc)[:-1], jnp.shape(scale_tril)[:-2])
  except ValueError:
    raise ValueError(f"the batch shapes of loc {jnp.shape(loc)[:-1]} and scale_tril "
                     f"{jnp.shape(scale_tril)[:-2]} do not broadcast") from None
  dtype = jnp.result_type(loc, scale_tril)
  eps = jax.random.normal(key, batch + (d,), dtype)
  z = jnp.broadcast_to(loc, batch + (d,)) + jnp.einsum("...ij,...j->...i", scale_tril, eps)
  if not _checks.is_concrete(scale_tril):
    z = _checks.nan_unless(jnp.broadcast_to(_scale_tril_valid(scale_tril), batch)[..., None], z)
  return z


# ----------------------------------------------------------------------------- Bernoulli


@jax.custom_jvp
def _softplus(logits: Real[Array, "*shape"]) -> Float[Array, "*shape"]:
  """``log(1 + e^l)`` as ``max(l, 0) + log1p(e^{-|l|})``: never overflows, one fused loop.

  The derivative is ``sigmoid(l)`` by a custom JVP (so also ``1/2`` at ``l = 0``, where the
  branches of ``max`` and ``|l|`` meet), and it differentiates again.
  """
  return jnp.maximum(logits, 0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
  (logits,), (t,) = primals, tangents
  return _softplus(logits), jax.nn.sigmoid(logits) * t


BERNOULLI_SUPPORTS = ("binary", "unit_interval")


def bernoulli_log_prob(x: Shaped[ArrayLike, "..."], logits: Real[ArrayLike, "..."],
                       event_ndims: int = 1, *, support: str = "binary") -> Float[Array, "..."]:
  """Log-probability of binary ``x`` under a Bernoulli with the given logits.

  Written as ``x * l - softplus(l)``: one softplus per pixel, exact for ``x`` in {0, 1}; finite
  for logits of any finite magnitude (tested at +-1e4). The softplus is spelled out in its stable
  form ``max(l, 0) + log1p(exp(-|l|))`` (one ``exp`` and one ``log1p``, never overflowing;
  derivative ``sigmoid(l)``), which XLA fuses into one elementwise loop; ``jax.nn.softplus`` (a
  ``logaddexp``) computes the same values at about 1.7x the cost forward and backward on CPU, and
  this term is the main elementwise work on the ``[K, B, D]`` decoder output of a VAE.

  .. math:: \\log p(x) = x\\,l - \\log(1 + e^{l}) = x\\,l - \\max(l, 0) - \\log(1 + e^{-|l|})

  Support: with the default ``support="binary"`` every entry of ``x`` must be 0 or 1 (a Bernoulli
  is a distribution on {0, 1}: grey levels are not data for it; binarize them with
  :func:`dgmjax.data.binarize`). ``support="unit_interval"`` accepts ``x`` in [0, 1] and returns
  the same expression, which is then the negative binary cross-entropy (not a normalised
  log-density: the continuous Bernoulli's normaliser is not included).

  Off-support ``x``: concrete ``x`` raises ``ValueError`` naming ``x`` (the first bad entry and
  its index); traced ``x`` gives NaN at the offending entries (so NaN in their event sums). The
  check on traced ``x`` is one compare-and-select per entry of ``x`` (before ``x`` is broadcast
  against ``[K, ...]`` logits); values and gradients on the support are unchanged.

  Args:
    x: values in {0, 1} (or [0, 1] with ``support="unit_interval"``), ``[..., D]``.
    logits: ``l``, broadcastable to ``x``.
    event_ndims: trailing axes summed over (use 3 for ``[B, H, W, C]`` images).
    support: ``"binary"`` (default) or ``"unit_interval"``.

  Returns:
    ``[...]``.

  Raises:
    ValueError: ``x`` concrete and off the support; ``support`` unknown; shapes do not broadcast.
  """
  if support not in BERNOULLI_SUPPORTS:
    raise ValueError(f"support must be one of {BERNOULLI_SUPPORTS}, got {support!r}")
  binary = support == "binary"
  if binary:
    _checks.check_values("x", x, lambda a: (a == 0) | (a == 1),
                         "binary (0 or 1) for a Bernoulli likelihood (binarize grey levels, or "
                         "pass support='unit_interval' for a cross-entropy on [0, 1])")
  else:
    _checks.check_values("x", x, lambda a: (a >= 0) & (a <= 1), "in [0, 1]")
  if not _checks.is_concrete(x):
    # NaN into x itself, before it is broadcast against [K, ...] logits: x * l carries it to the
    # result, and the backward pass has nothing extra to do.
    ok = ((x == 0) | (x == 1)) if binary else ((x >= 0) & (x <= 1))
    x = _checks.nan_unless(ok, jnp.asarray(x, jnp.result_type(x, logits)))
  x, logits = _checks.broadcast(x=x, logits=logits)
  lp = x * logits - _softplus(logits)
  return _reduce(lp, "x", event_ndims)


def sample_bernoulli(key: PRNGKeyArray, logits: Real[ArrayLike, "*batch"],
                     dtype: DTypeLike | None = None) -> Shaped[Array, "*batch"]:
  """One draw in {0, 1} from a Bernoulli with the given logits (not reparametrizable).

  ``logits`` of ``+inf`` / ``-inf`` give 1 / 0 surely. NaN logits: concrete ones raise
  ``ValueError`` naming ``logits``; traced ones give NaN draws (a floating ``dtype``) or ``-1``
  (an integer ``dtype``), never a 0 or 1; :func:`bernoulli_log_prob` of either is NaN under
  ``jit``.

  Args:
    key: a JAX PRNG key.
    logits: ``[...]``.
    dtype: of the draws, floating or signed integer (default: that of ``logits``); a bool or
      unsigned dtype cannot hold the invalid marker and raises ``TypeError``.

  Returns:
    ``[...]`` of ``dtype``.
  """
  _checks.check_numeric("logits", logits)
  if dtype is None:
    dtype = jnp.result_type(logits)
  try:
    dtype = jnp.dtype(dtype)
  except TypeError:
    raise _checks.ArgumentTypeError(f"dtype must be a floating or signed integer dtype, got "
                                    f"{dtype!r}") from None
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.signedinteger)):
    raise _checks.ArgumentTypeError(
        f"dtype must be a floating or signed integer dtype (to hold NaN or -1 for a draw from "
        f"NaN logits), got {dtype}; convert the draws afterwards if a bool is needed")
  _checks.check_values("logits", logits, lambda a: ~np.isnan(a),
                       "not NaN (+-inf are valid: a sure 1 or 0)")
  u = jax.random.uniform(key, jnp.shape(logits), dtype=jnp.float32)
  draw = (jnp.log(u) - jnp.log1p(-u) < logits).astype(dtype)
  if not _checks.is_concrete(logits):
    marker = jnp.nan if jnp.issubdtype(dtype, jnp.floating) else _checks.INVALID_DRAW
    draw = jnp.where(jnp.isnan(logits), jnp.asarray(marker, dtype), draw)
  return draw


# ----------------------------------------------------------------------------- Categorical


def categorical_log_prob(x: Shaped[ArrayLike, "..."], logits: Real[ArrayLike, "..."],
                         event_ndims: int = 0, axis: int = -1) -> Float[Array, "..."]:
  """Log-probability of class indices ``x`` under ``softmax(logits)``.

  .. math:: \\log p(x = k) = l_k - \\log\\sum_j e^{l_j}

  Off-support ``x`` (an index outside ``[0, C)``; negative indices do not wrap): concrete ``x``
  raises ``ValueError`` naming ``x``; traced ``x`` gives NaN for those entries. A non-integer
  dtype of ``x`` raises :class:`~dgmjax._checks.ArgumentTypeError` (also under ``jit``).

  Args:
    x: integer indices ``[...]`` in ``[0, C)``.
    logits: ``[..., C]`` with classes on ``axis`` (default last).
    event_ndims: trailing axes of the result summed over (for several categorical variables).
    axis: class axis of ``logits``.

  Returns:
    ``[...]`` less ``event_ndims`` trailing axes.
  """
  _checks.check_numeric("logits", logits)
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  _checks.check_dtype("x", x, "integer")
  logits = jnp.moveaxis(logits, axis, -1)
  c = jnp.shape(logits)[-1]
  _checks.check_values("x", x, lambda a: (a >= 0) & (a < c), f"class indices in [0, {c})")
  _checks.check_broadcast(x=x, logits_batch=jax.ShapeDtypeStruct(jnp.shape(logits)[:-1], jnp.bool_))
  log_p = jax.nn.log_softmax(logits, axis=-1)
  batch = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(log_p)[:-1])
  log_p = jnp.broadcast_to(log_p, batch + jnp.shape(log_p)[-1:])
  x = jnp.broadcast_to(jnp.asarray(x), batch)
  idx = jnp.clip(x, 0, c - 1)[..., None].astype(jnp.int32)
  lp = jnp.take_along_axis(log_p, idx, axis=-1)[..., 0]
  if not _checks.is_concrete(x):
    lp = _checks.nan_unless((x >= 0) & (x < c), lp)
  return _reduce(lp, "x", event_ndims)


def categorical_log_prob_one_hot(x: Real[ArrayLike, "..."], logits: Real[ArrayLike, "..."],
                                 event_ndims: int = 0, axis: int = -1) -> Float[Array, "..."]:
  """Log-probability of one-hot ``x`` under ``softmax(logits)``.

  .. math:: \\log p(x) = \\sum_k x_k (l_k - \\log\\sum_j e^{l_j})

  ``x`` must be one-hot on ``axis``: entries in {0, 1}, exactly one 1 per vector (a
  straight-through sample is one-hot in value and qualifies). For relaxed (Gumbel-softmax)
  samples use :func:`dgmjax.gumbel.concrete_log_prob`. Off-support ``x``: concrete ``x`` raises
  ``ValueError`` naming ``x``; traced ``x`` gives NaN for the vectors that are not one-hot.

  Args:
    x: one-hot vectors ``[..., C]``.
    logits: ``[..., C]``.
    event_ndims: trailing axes of the result (after the class axis is summed) summed over.
    axis: class axis.

  Returns:
    ``[...]``.
  """
  x, logits = _checks.broadcast(x=x, logits=logits)
  axis = _checks.normalize_axis("x", axis, jnp.ndim(x))
  if _checks.is_concrete(x):
    _checks.check_values("x", x, lambda a: (a == 0) | (a == 1),
                         f"one-hot on axis {axis} (entries 0 or 1)")
    _checks.check_values(f"x summed over its class axis {axis}", jnp.sum(x, axis=axis),
                         lambda a: a == 1, "1 (exactly one 1 per one-hot vector)")
  log_p = jax.nn.log_softmax(logits, axis=axis)
  # 0 * -inf = nan would arise for impossible classes that x does not select: mask them.
  lp = jnp.sum(jnp.where(x == 0, 0.0, x * log_p), axis=axis)
  if not _checks.is_concrete(x):
    ok = jnp.all((x == 0) | (x == 1), axis=axis) & (jnp.sum(x, axis=axis) == 1)
    lp = _checks.nan_unless(ok, lp)
  return _reduce(lp, "x", event_ndims)


def sample_categorical(key: PRNGKeyArray, logits: Real[ArrayLike, "..."],
                       axis: int = -1) -> Int[Array, "..."]:
  """One draw of class indices from ``softmax(logits)`` (not reparametrizable).

  Invalid logits (a NaN or ``+inf`` entry, or every entry ``-inf`` on ``axis``; single ``-inf``
  entries are valid and mask their classes): concrete ones raise ``ValueError`` naming
  ``logits``; traced ones give ``-1`` for that variable, never a class, and
  :func:`categorical_log_prob` of ``-1`` is NaN under ``jit`` (a ``ValueError`` when concrete).

  Args:
    key: a JAX PRNG key.
    logits: ``[..., C]``, floating, classes on ``axis``.
    axis: class axis.

  Returns:
    int32 indices in ``[0, C)`` (or ``-1``), ``logits`` shape without ``axis``.
  """
  _checks.check_dtype("logits", logits, "floating")
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  _checks.check_logits("logits", logits, axis)
  draw = jax.random.categorical(key, logits, axis=axis)
  if not _checks.is_concrete(logits):
    draw = jnp.where(_checks.logits_valid(logits, axis), draw, _checks.INVALID_DRAW)
  return draw


def categorical_entropy(logits: Real[ArrayLike, "..."], axis: int = -1) -> Float[Array, "..."]:
  """Entropy of ``softmax(logits)`` per categorical variable.

  .. math:: H = -\\sum_k p_k \\log p_k
  """
  _checks.check_numeric("logits", logits)
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  log_p = jax.nn.log_softmax(logits, axis=axis)
  p = jnp.exp(log_p)
  # p * log p -> 0 as p -> 0; where() avoids 0 * -inf for classes with -inf logits.
  return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=axis)


def kl_categorical_uniform(logits: Real[ArrayLike, "..."],
                           axis: int = -1) -> Float[Array, "..."]:
  """``KL(Cat(softmax(logits)) || Uniform(C))`` per categorical variable.

  .. math:: KL = \\log C - H(q)

  References:
    Jang, Gu & Poole, Categorical Reparameterization with Gumbel-Softmax, ICLR 2017.
  """
  _checks.check_numeric("logits", logits)
  axis = _checks.normalize_axis("logits", axis, jnp.ndim(logits))
  c = jnp.shape(logits)[axis]
  return math.log(c) - categorical_entropy(logits, axis=axis)


def kl_categorical_categorical(logits_q: Real[ArrayLike, "..."],
                               logits_p: Real[ArrayLike, "..."],
                               axis: int = -1) -> Float[Array, "..."]:
  """``KL(Cat(softmax(logits_q)) || Cat(softmax(logits_p)))`` per categorical variable."""
  logits_q, logits_p = _checks.broadcast(logits_q=logits_q, logits_p=logits_p)
  axis = _checks.normalize_axis("logits_q", axis, jnp.ndim(logits_q))
  log_q = jax.nn.log_softmax(logits_q, axis=axis)
  log_p = jax.nn.log_softmax(logits_p, axis=axis)
  q = jnp.exp(log_q)
  return jnp.sum(jnp.where(q > 0, q * (log_q - log_p), 0.0), axis=axis)


def _log1mexp(d: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
  """``log(1 - e^{-d})`` for ``d > 0``, accurate for small and large ``d`` (Maechler 2012)."""
  return jnp.where(d < math.log(2.0), jnp.log(-jnp.expm1(-d)), jnp.log1p(-jnp.exp(-d)))


def discretized_logistic_log_prob(x: Real[ArrayLike, "..."], loc: Real[ArrayLike, "..."],
                                  log_scale: Real[ArrayLike, "..."], num_bins: int = 256,
                                  event_ndims: int = 0) -> Float[Array, "..."]:
  """Log-mass of ``x`` in [0, 1] on a grid of ``num_bins`` levels under a discretized logistic.

  Pixel ``x = i / (num_bins - 1)`` gets the logistic mass of the bin ``[x - h, x + h]`` with
  ``h = 1 / (2 (num_bins - 1))``; the edge bins take the tails, so the masses of all levels sum to
  one. With ``a = (x - h - mu) / s`` and ``b = (x + h - mu) / s`` an interior bin's mass is
  written without a difference of nearly equal numbers,

  .. math:: \\sigma(b) - \\sigma(a) = \\sigma(b)\\,\\sigma(-a)\\,(1 - e^{-(b - a)}), \\quad b - a = 2h/s,

  so its log is ``log_sigmoid(b) + log_sigmoid(-a) + log1mexp(2h / s)``: accurate to a few ulps
  of float32 at any scale (a difference of two log-CDFs loses up to 1e-2 nats in float32 at
  ``log_scale = 5``), in either tail and with no density approximation.

  Off-support ``x`` (outside [0, 1], NaN, infinite): concrete ``x`` raises ``ValueError`` naming
  ``x``; traced ``x`` gives NaN for those entries. Values in [0, 1] between grid levels are not
  rejected: they get the mass of the bin of width ``2h`` centred on them.

  Args:
    x: values on the grid ``{0, 1/(n-1), ..., 1}`` (e.g. 8-bit pixels / 255).
    loc: logistic location, broadcast against ``x``.
    log_scale: log of the logistic scale.
    num_bins: number of levels ``n >= 2`` (a Python or NumPy int).
    event_ndims: trailing axes summed over.

  References:
    Salimans et al., PixelCNN++, ICLR 2017.
  """
  num_bins = _checks.check_int("num_bins", num_bins, minimum=2)
  _checks.check_values("x", x, lambda a: (a >= 0) & (a <= 1),
                       "in [0, 1] (pixels scaled by 1/255, not 8-bit integers)")
  if not _checks.is_concrete(x):
    x = jnp.asarray(x, jnp.result_type(x, loc, log_scale))
    x = _checks.nan_unless((x >= 0) & (x <= 1), x)   # NaN propagates through every branch
  x, loc, log_scale = _checks.broadcast(x=x, loc=loc, log_scale=log_scale)
  half = 0.5 / (num_bins - 1)
  inv_s = jnp.exp(-log_scale)
  centred = x - loc
  plus = inv_s * (centred + half)                # b
  minus = inv_s * (centred - half)               # a
  log_cdf_plus = jax.nn.log_sigmoid(plus)        # log F(x + h)
  log_sf_minus = jax.nn.log_sigmoid(-minus)      # log (1 - F(x - h))
  interior = log_cdf_plus + log_sf_minus + _log1mexp(inv_s * (2.0 * half))
  lp = jnp.where(x < half, log_cdf_plus, jnp.where(x > 1.0 - half, log_sf_minus, interior))
  return _reduce(lp, "x", event_ndims)
