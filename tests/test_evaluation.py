"""Tests of dgmjax.evaluation (chunked k=5000 estimator, bounds) and plotting."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import evaluation, models, numerics, objectives, plotting
from dgmjax.models import vae
from tests import bad_input as bi


# ----------------------------------------------------------------------------- bad input


def _unit_interval_model():
  return models.from_functions(
      sample_q=lambda p, x, k: jnp.zeros(x.shape[:1]), log_q=lambda p, x, z: jnp.zeros_like(z),
      log_prior=lambda p, z: jnp.zeros_like(z),
      log_likelihood=lambda p, x, z: jnp.zeros(x.shape[:1]), data_support="unit_interval")


RAISES = [
    ("log_likelihood_uint8_images_for_a_bernoulli_model",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.uint8_images(), num_samples=4),
     ValueError, r"images must be binary values in \{0, 1\}.*VAE.*uint8.*scale it by 1/255.*"
                 r"24 of 48 value\(s\).*255"),
    ("log_likelihood_grey_levels_for_a_bernoulli_model",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.grey_images(), num_samples=4),
     ValueError, r"images must be binary.*binarize.*48 of 48.*0\.5 at index \(0, 0, 0, 0\)"),
    ("log_likelihood_nan_images",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.nan_images(), num_samples=4),
     ValueError, r"images contains 1 NaN value\(s\), the first at index \(1, 2, 3, 0\)"),
    ("bounds_grey_levels_for_a_bernoulli_model",
     lambda: bi.with_vae(evaluation.bounds, bi.grey_images(), ks=(1, 2)),
     ValueError, r"images must be binary"),
    ("bounds_uint8_images", lambda: bi.with_vae(evaluation.bounds, bi.uint8_images(), ks=(1,)),
     ValueError, r"images must be binary.*uint8"),
    ("write_sample_figures_grey_levels_for_a_bernoulli_model",
     lambda: bi.with_vae(evaluation.write_sample_figures, bi.grey_images(),
                         workdir="/nonexistent/never/written"),
     ValueError, r"images must be binary"),
    ("log_likelihood_uint8_images_for_a_unit_interval_model",
     lambda: evaluation.log_likelihood(_unit_interval_model(), None, bi.uint8_images(), bi.key(),
                                       num_samples=2),
     ValueError, r"images must be values in \[0, 1\].*scale it by 1/255"),
    ("bounds_batch_size_negative",
     lambda: bi.with_vae(evaluation.bounds, bi.binary_images(), ks=(1,), batch_size=-2),
     ValueError, r"batch_size must be an int >= 1, got -2"),
    ("bounds_ks_an_int", lambda: bi.with_vae(evaluation.bounds, bi.binary_images(), ks=5),
     TypeError, r"ks must be a sequence of ints"),
    ("log_likelihood_sample_chunk_float",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.binary_images(), num_samples=4,
                         sample_chunk=2.5),
     TypeError, r"sample_chunk must be an int, got float 2\.5"),
    ("log_likelihood_batch_size_bool",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.binary_images(), num_samples=4,
                         batch_size=True),
     TypeError, r"batch_size must be an int, got the bool"),
    ("log_likelihood_emulate_precision_string",
     lambda: bi.with_vae(evaluation.log_likelihood, bi.binary_images(), num_samples=4,
                         emulate_precision="yes"),
     TypeError, r"emulate_precision must be a bool"),
    ("log_likelihood_key_an_int",
     lambda: evaluation.log_likelihood(*bi.bernoulli_vae(), bi.binary_images(), 0, num_samples=4),
     TypeError, r"key must be a PRNG key \(jax.random.key\(seed\)\), got int 0"),
    ("write_sample_figures_num_reconstructions_zero",
     lambda: bi.with_vae(evaluation.write_sample_figures, bi.binary_images(),
                         workdir="/nonexistent", num_reconstructions=0),
     ValueError, r"num_reconstructions must be an int >= 1"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _binary(n, shape=(4, 4, 1), seed=0):
  return (np.random.default_rng(seed).uniform(size=(n,) + shape) < 0.4).astype(np.float32)


def _counting(model, traces):
  """``model`` as a contract model of functions that records each trace of its likelihood."""

  def log_likelihood(p, x, z):
    traces.append(1)
    return model.log_likelihood(p, x, z)

  return models.from_functions(sample_q=model.sample_q, log_q=model.log_q,
                               log_prior=model.log_prior, log_likelihood=log_likelihood,
                               sample_and_log_q=model.sample_and_log_q)


@pytest.mark.parametrize("model", [vae.VAE((4, 4, 1), (3,), ((8,),)),
                                   vae.VAE((4, 4, 1), (3, 2), ((8,), (6,)))])
def test_chunked_k5000_equals_unchunked_iwae_bound(model):
  params = model.init(jax.random.key(0))
  x = _binary(5)
  with jax.debug_key_reuse(False):  # the oracle redraws the same samples on purpose
    key = jax.random.key(1)
    # 3 batches of 2 (the last one padded) and chunks of 700 (5000 = 7 * 700 + 100).
    got = evaluation.log_likelihood(model, params, x, key,
                                    num_samples=5000, sample_chunk=700, batch_size=2)
    want = np.concatenate([
        np.asarray(objectives.iwae_bound(
            models.log_weights(model, params, x[i:i + 2], jax.random.fold_in(key, b), 5000)))
        for b, i in enumerate(range(0, 5, 2))])
  assert got.shape == (5,) and got.dtype == np.float64
  np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-4)


def test_streaming_bound_is_independent_of_the_chunk_size():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  x = jnp.asarray(_binary(3))
  with jax.debug_key_reuse(False):
    keys = jax.random.split(jax.random.key(2), 1000)
    vals = [evaluation.streaming_iwae_bound(model, params, x, keys, c)
            for c in (1000, 250, 300, 1, 5000)]
  for v in vals[1:]:
    np.testing.assert_allclose(v, vals[0], rtol=1e-6, atol=1e-5)


def test_log_likelihood_is_compiled_once_and_validates():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  traces = []
  lw = _counting(model, traces)
  evaluation.log_likelihood(lw, params, _binary(7), jax.random.key(1), num_samples=100,
                            sample_chunk=50, batch_size=3)
  assert len(traces) == 2  # the first chunk and the scan body; the padded batches reuse them
  with pytest.raises(ValueError, match="empty"):
    evaluation.log_likelihood(lw, params, np.zeros((0, 4, 4, 1)), jax.random.key(2))
  with pytest.raises(ValueError, match=">= 1"):
    evaluation.log_likelihood(lw, params, _binary(2), jax.random.key(3), sample_chunk=0)


def test_bounds_are_ordered_and_l1_is_the_elbo():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  b = evaluation.bounds(model, params, _binary(6), jax.random.key(1),
                        ks=(1, 5, 50), batch_size=4)
  assert b["elbo"] == pytest.approx(b["iwae_1"], rel=1e-6)
  assert b["elbo"] < b["iwae_5"] < b["iwae_50"] < 0


def test_image_grid_and_pngs(tmp_path):
  imgs = np.random.default_rng(0).uniform(size=(5, 3, 2, 1))
  g = plotting.image_grid(imgs, ncol=3, pad=1)
  assert g.shape == (2 * 4 + 1, 3 * 3 + 1)
  np.testing.assert_allclose(g[1:4, 1:3], imgs[0, ..., 0], rtol=1e-6)
  with pytest.raises(ValueError):
    plotting.image_grid(np.zeros((2, 3, 3, 2)))
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  paths = evaluation.write_sample_figures(model, params, _binary(4), jax.random.key(1),
                                          str(tmp_path), num_samples=9)
  for p in paths.values():
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert os.path.basename(paths["samples"]) == "samples.png"


# ----------------------------------------------------------------------------- near the roofline


def test_bernoulli_stable_form_matches_softplus_with_exact_derivatives(x64):
  from dgmjax import distributions
  logits = jnp.array([-1e4, -50.0, -3.0, -1e-3, 0.0, 1e-3, 2.5, 40.0, 1e4])
  for xv in (0.0, 0.3, 1.0):
    x = jnp.full_like(logits, xv)
    # a grey level is the cross-entropy on [0, 1] (binary data is the default support)
    support = "binary" if xv in (0.0, 1.0) else "unit_interval"
    lp = lambda xx, l: distributions.bernoulli_log_prob(xx, l, event_ndims=0, support=support)
    got = lp(x, logits)
    np.testing.assert_allclose(got, xv * logits - jax.nn.softplus(logits), rtol=1e-14, atol=1e-300)
    g = jax.vmap(jax.grad(lambda l, xx: lp(xx, l)))(logits, x)
    s = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(g, xv - s, rtol=1e-14, atol=1e-300)  # 1/2 at l = 0, not 0 or 1
    h = jax.vmap(jax.grad(jax.grad(lambda l, xx: lp(xx, l))))(logits, x)
    np.testing.assert_allclose(h, -s * (1 - s), rtol=1e-12, atol=1e-300)
  assert distributions.bernoulli_log_prob(jnp.ones(3, jnp.bfloat16),
                                          jnp.zeros(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_auto_chunk_follows_the_memory_budget_and_leaves_the_estimate_unchanged():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  x = _binary(4)
  per_sample = evaluation._bytes_per_sample(evaluation._FromKeys(model), params, x, 16, None)
  assert per_sample > 4 * 16 * 4  # at least the [B, D] pixel terms of one sample
  auto = lambda budget: evaluation.auto_sample_chunk(
      model, params, x, num_samples=1000, budget_bytes=budget)
  assert auto(10**12) == 1000 and auto(1) == 1
  small, large = auto(int(40 * per_sample)), auto(int(300 * per_sample))
  assert 34 <= small <= 40 and 250 <= large <= 334  # floor(budget / per sample), spread evenly
  assert -(-1000 // small) * small - 1000 < -(-1000 // small)  # the last chunk is not a remnant
  budget = numerics.memory_budget()
  assert budget["bytes"] > 0 and isinstance(budget["source"], str)
  with jax.debug_key_reuse(False):
    key = jax.random.key(1)
    kw = dict(num_samples=120, batch_size=3)
    got = evaluation.log_likelihood(model, params, _binary(5), key,
                                    sample_chunk="auto", memory_budget_bytes=int(37 * per_sample),
                                    **kw)
    want = evaluation.log_likelihood(model, params, _binary(5), key,
                                     sample_chunk=120, **kw)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
  with pytest.raises(ValueError, match="sample_chunk"):
    evaluation.log_likelihood(model, params, x, key, sample_chunk="big")


def _computations(hlo: str) -> dict:
  """Optimized HLO text -> {computation name: its text}."""
  comps, name, lines = {}, None, []
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if name is None and m:
      name, lines = m.group(1), [line]
    elif name is not None:
      lines.append(line)
      if line.startswith("}"):
        comps[name] = "\n".join(lines)
        name = None
  return comps


def _reachable_from_loops(comps: dict) -> set:
  refs = lambda text: set(re.findall(r"(?:body|calls|to_apply|condition)=%?([\w.\-]+)", text)) | {
      n.strip().lstrip("%") for group in re.findall(r"branch_computations=\{([^}]*)\}", text)
      for n in group.split(",")}
  todo = [n for text in comps.values() for n in re.findall(r"body=%?([\w.\-]+)", text)]
  seen = set()
  while todo:
    n = todo.pop()
    if n in seen or n not in comps:
      continue
    seen.add(n)
    todo.extend(refs(comps[n]))
  return seen


@pytest.mark.parametrize("latent_dims,hidden_dims", [((3,), ((9,),)), ((3, 2), ((9,), (6,)))])
def test_encoder_runs_once_per_image_in_the_compiled_estimator(latent_dims, hidden_dims):
  # The first encoder's kernel is f32[37,9]; the per-sample loop (lax.scan over chunks) must not
  # touch it: XLA hoists the first encoder out of the loop, so it runs once per image for all K
  # samples. The decoder (kernel f32[9,37]) necessarily runs inside the loop.
  model = vae.VAE((37, 1, 1), latent_dims, hidden_dims)
  params = model.init(jax.random.key(0))
  fn = evaluation._streaming_fn(model, 1000, 100, None, None)
  hlo = fn.lower(params, jnp.zeros((5, 37, 1, 1)), jax.random.key(1)).compile().as_text()
  comps = _computations(hlo)
  in_loop = _reachable_from_loops(comps)
  assert in_loop, "expected a while loop over the sample chunks"
  loop_text = "\n".join(comps[n] for n in in_loop)
  assert "f32[9,37]" in loop_text        # the decoder runs per sample
  assert "f32[37,9]" not in loop_text    # the encoder does not
  assert "f32[37,9]" in hlo


def test_low_precision_evaluation_shifts_the_nll_slightly_and_reduces_in_float32():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  x = _binary(6)
  with jax.debug_key_reuse(False):
    key = jax.random.key(1)
    kw = dict(num_samples=200, sample_chunk=50, batch_size=3)
    fp32 = evaluation.log_likelihood(model, params, x, key, **kw)
    bf16 = evaluation.log_likelihood(model, params, x, key,
                                     matmul_precision="bfloat16", **kw)
    with numerics.matmul_precision("bfloat16"):
      lw = models.log_weights_from_keys(model, params, x, jax.random.split(key, 4))
  assert lw.dtype == jnp.float32
  shift = np.abs(bf16 - fp32)
  assert 0 < shift.max() < 0.05  # bf16 inputs (8 bits), float32 sums: a tiny, nonzero shift
  with pytest.raises(ValueError, match="matmul_precision"):
    evaluation.log_likelihood(model, params, x, key,
                              matmul_precision="fp8")


def test_low_precision_log_weights_are_accumulated_in_float32():
  # A model whose log-weights are bfloat16 (~N(-200, 30^2), far apart: a bfloat16 log-sum-exp
  # would be visibly off); the streaming bound must accumulate them in float32.
  bf16 = jnp.bfloat16
  model = models.from_functions(
      sample_q=lambda p, x, key: jax.random.normal(key, x.shape[:1]),
      log_q=lambda p, x, z: jnp.zeros(z.shape, bf16),
      log_prior=lambda p, z: jnp.zeros(z.shape, bf16),
      log_likelihood=lambda p, x, z: (z * 30 - 200).astype(bf16))
  x = jnp.zeros((4, 1))
  with jax.debug_key_reuse(False):
    keys = jax.random.split(jax.random.key(0), 300)
    lw = models.log_weights_from_keys(model, None, x, keys)
    got = evaluation.streaming_iwae_bound(model, None, x, keys, 300)
    chunked = evaluation.streaming_iwae_bound(model, None, x, keys, 70)
  assert lw.dtype == bf16 and lw.shape == (300, 4)
  want = jax.nn.logsumexp(lw.astype(jnp.float32), axis=0) - np.log(300)
  for g in (got, chunked):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, want, rtol=1e-6)


def test_log_likelihood_compiles_once_for_any_number_of_images():
  model = vae.VAE((4, 4, 1), (3,), ((8,),))
  params = model.init(jax.random.key(0))
  traces = []
  lw = _counting(model, traces)
  kw = dict(num_samples=100, sample_chunk=50, batch_size=3)
  evaluation.log_likelihood(lw, params, _binary(7), jax.random.key(1), **kw)
  n = len(traces)
  evaluation.log_likelihood(lw, params, _binary(40, seed=1), jax.random.key(2), **kw)
  assert len(traces) == n  # same compiled batch function: memory does not grow with N


# ----------------------------------------------------------------------------- non-finite results


def _gaussian_model(nan_image=None):
  """A tiny linear-Gaussian model of the contract (D_x = 3, D_z = 2); with ``nan_image``, its
  log_likelihood is NaN for that image (found by content, as a model's bug would be)."""
  import math  # pylint: disable=import-outside-toplevel

  def gauss(v):
    return jnp.sum(-0.5 * v ** 2 - 0.5 * math.log(2 * math.pi), -1)

  def ll(p, x, z):
    out = gauss(x - z @ p["w"].T)
    if nan_image is None:
      return out
    return jnp.where(jnp.all(x == jnp.asarray(nan_image)[None], -1), jnp.nan, out)

  return models.from_functions(
      sample_q=lambda p, x, k: x[:, :2] * 0.5 + jax.random.normal(k, (x.shape[0], 2)),
      log_q=lambda p, x, z: gauss(z - x[:, :2] * 0.5), log_prior=lambda p, z: gauss(z),
      log_likelihood=ll)


_IMAGES = np.random.default_rng(3).normal(size=(7, 3)).astype(np.float32)
_PARAMS = {"w": jnp.asarray(np.random.default_rng(4).normal(size=(3, 2)), jnp.float32)}


def test_log_likelihood_names_the_image_and_the_function_of_a_nan():
  model = _gaussian_model(nan_image=_IMAGES[5])
  # batch_size=3: image 5 is row 2 of the second batch; the message numbers it as the user does
  with pytest.raises(ValueError, match=re.escape(
      "evaluation.log_likelihood's estimate is not finite for 1 of 7 image(s) (images [5]). "
      "Re-evaluated eagerly, FunctionModel.log_likelihood returns nan for images[5]")):
    evaluation.log_likelihood(model, _PARAMS, _IMAGES, jax.random.key(0), num_samples=20,
                              sample_chunk=8, batch_size=3)
  with pytest.raises(ValueError, match=r"evaluation.bounds is not finite .*images \[5\].*"
                                       r"log_likelihood returns nan for images\[5\]"):
    evaluation.bounds(model, _PARAMS, _IMAGES, jax.random.key(0), ks=(1, 2), batch_size=3)
  # finite models are unaffected
  ok = evaluation.log_likelihood(_gaussian_model(), _PARAMS, _IMAGES, jax.random.key(0),
                                 num_samples=20, sample_chunk=8, batch_size=3)
  assert np.all(np.isfinite(ok))


def test_log_likelihood_names_non_finite_params():
  bad = {"w": _PARAMS["w"].at[0, 0].set(jnp.nan)}
  with pytest.raises(ValueError, match=r"not finite for 7 of 7 .*parameters hold non-finite "
                                       r"values \(1 leaves, the first \"\['w'\]\"\)"):
    evaluation.log_likelihood(_gaussian_model(), bad, _IMAGES, jax.random.key(0),
                              num_samples=4, sample_chunk=4)


def test_streaming_bound_under_jit_gives_nan_for_the_bad_image_only():
  model = _gaussian_model(nan_image=_IMAGES[1])
  keys = jax.random.split(jax.random.key(0), 10)
  out = np.asarray(jax.jit(lambda p, x: evaluation.streaming_iwae_bound(model, p, x, keys, 4))(
      _PARAMS, _IMAGES))
  assert np.isnan(out[1]) and np.all(np.isfinite(np.delete(out, 1)))


def test_integer_log_likelihood_is_refused_by_evaluation():
  base = _gaussian_model()
  model = models.from_functions(
      sample_q=base.sample_q, log_q=base.log_q, log_prior=base.log_prior,
      log_likelihood=lambda p, x, z: base.log_likelihood(p, x, z).astype(jnp.int32))
  with pytest.raises(TypeError, match="log_likelihood must return a floating.*int32"):
    evaluation.log_likelihood(model, _PARAMS, _IMAGES, jax.random.key(0), num_samples=4)
  with pytest.raises(TypeError, match="log_likelihood must return a floating.*int32"):
    evaluation.bounds(model, _PARAMS, _IMAGES, jax.random.key(0), ks=(1,))
