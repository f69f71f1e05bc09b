"""What the bad-input tests of every module share: the three checks and the small inputs.

The rule (see ``dgmjax/_checks.py``): a concrete bad value raises ``ValueError`` naming the
argument, what was expected and what was given; a wrong type (a bool or float where an int is
needed, a float array of indices) raises ``ArgumentTypeError``, a ``TypeError`` that is also a
``ValueError``; a traced bad value (inside ``jit``) gives NaN, or follows a documented contract
where NaN cannot be represented (integer counts).

Each module's test file (``tests/test_<module>.py``) holds its own cases, in a section
``bad input`` right after its imports, as tables of rows:

1. ``RAISES``: ``(id, thunk, exception, message regex)``, each a concrete bad input, run by
   :func:`raises_cases` and :func:`check_raises`.
2. ``TRACED_NAN``: ``(id, thunk)``, each a bad value passed through ``jax.jit``; the thunk returns
   ``(result, bad_mask)`` and :func:`check_nan_exactly_where_bad` checks NaN exactly where
   ``bad_mask`` is True.
3. ``ON_SUPPORT``: ``(id, f, x, logits)``, each a density whose traced values and gradients on
   its support must equal the eager ones (:func:`check_traced_equals_eager`).
4. ``ACCEPTS``: ``(id, thunk)``, each a valid input that must keep working (NumPy integers,
   ``[B, 1]`` temperatures, ...); the thunk asserts its own oracle.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

#: Logits ``[2, 3]`` of the on-support rows (densities of distributions and gumbel).
ON_SUPPORT_LOGITS = jnp.array([[0.3, -2.0, 1.5], [4.0, -0.1, 0.0]])


def key(i=0):
  """A typed PRNG key."""
  return jax.random.key(i)


def z(*shape):
  """float32 zeros of ``shape``."""
  return jnp.zeros(shape, jnp.float32)


def raises_cases(table):
  """``pytest.mark.parametrize`` over ``RAISES`` rows ``(id, thunk, exception, regex)``."""
  return pytest.mark.parametrize("thunk,exc,match", [c[1:] for c in table],
                                 ids=[c[0] for c in table])


def thunk_cases(table):
  """``pytest.mark.parametrize`` over ``(id, thunk)`` rows (``TRACED_NAN``, ``ACCEPTS``)."""
  return pytest.mark.parametrize("thunk", [c[1] for c in table], ids=[c[0] for c in table])


def on_support_cases(table):
  """``pytest.mark.parametrize`` over ``ON_SUPPORT`` rows ``(id, f, x, logits)``."""
  return pytest.mark.parametrize("f,x,l", [c[1:] for c in table], ids=[c[0] for c in table])


def check_raises(thunk, exc, match):
  """``thunk()`` raises ``exc`` with a message matching the regex ``match``."""
  with pytest.raises(exc, match=match):
    thunk()


def check_nan_exactly_where_bad(thunk):
  """``thunk() = (out, bad)``: ``out`` has ``bad``'s shape, NaN where ``bad``, finite elsewhere."""
  out, bad = thunk()
  out = np.asarray(out)
  assert out.shape == np.shape(bad), (out.shape, np.shape(bad))
  np.testing.assert_array_equal(np.isnan(out), bad)
  assert np.all(np.isfinite(out[~np.asarray(bad)]))


def check_traced_equals_eager(f, x, l):
  """``f(x, l)`` and its gradient in ``l`` are finite and the same under ``jit`` as eagerly."""
  eager = f(x, l)
  traced = jax.jit(f)(x, l)
  np.testing.assert_allclose(traced, eager, rtol=1e-6)
  assert np.all(np.isfinite(eager))
  g_eager = jax.grad(lambda l: jnp.sum(f(x, l)))(l)
  g_traced = jax.jit(jax.grad(lambda l, x: jnp.sum(f(x, l))))(l, x)
  np.testing.assert_allclose(g_traced, g_eager, rtol=1e-6, atol=1e-7)
  assert np.all(np.isfinite(g_eager))


# ----------------------------------------------------------------------------- a tiny VAE


@functools.lru_cache(maxsize=None)
def bernoulli_vae():
  """A tiny Bernoulli VAE on 4x4 images (``data_support = 'binary'``) and its parameters."""
  from dgmjax.models import vae  # pylint: disable=import-outside-toplevel
  model = vae.VAE((4, 4, 1), (2,), ((4,),))
  return model, model.init(key(0))


def with_vae(fn, images, **kw):
  """``fn(model, params, images, key, **kw)`` on :func:`bernoulli_vae`."""
  model, params = bernoulli_vae()
  return fn(model, params, images, key(1), **kw)


def grey_images():
  """``[3, 4, 4, 1]`` grey levels 0.5: not binary."""
  return np.full((3, 4, 4, 1), 0.5, np.float32)


def uint8_images():
  """``[3, 4, 4, 1]`` 8-bit images of 0 and 255 (unscaled)."""
  return np.where(np.arange(48).reshape(3, 4, 4, 1) % 2 == 0, 0, 255).astype(np.uint8)


def nan_images():
  """``[3, 4, 4, 1]`` zeros with one NaN, at index ``(1, 2, 3, 0)``."""
  x = np.zeros((3, 4, 4, 1), np.float32)
  x[1, 2, 3, 0] = np.nan
  return x


def binary_images(n=3):
  """``[n, 4, 4, 1]`` binary float32 images."""
  return (np.arange(n * 16).reshape(n, 4, 4, 1) % 3 == 0).astype(np.float32)
