"""The agreement check: dgmjax and the PyTorch peer (:mod:`benchmarks.torch_peer`) compute the
same model.

For Burda's 1-layer (784-200-200-50) and 2-layer (784-200-200-100-100-100-50) models, the peer is
loaded with dgmjax's weights and fed dgmjax's noise (the ``eps`` that
``dgmjax.models.log_weights_from_keys`` draws from its keys); the log-weights must agree to 1e-5
(relative, float32), every gradient of the VAE and IWAE losses to 1e-4 (relative to the largest
entry of its tensor), the parameters after one Adam step to 1e-10 of the learning rate (float64),
the per-chunk ``logsumexp`` of the evaluation path to 1e-5, and the log-weights in float64 to
1e-10. Nothing here is timed; ``tests/test_benchmarks.py`` runs it where torch is installed.
"""

from __future__ import annotations

from benchmarks import cases


def dgmjax_noise(model, keys, batch: int, dtype=None) -> list:
  """The standard-normal ``eps`` ``[K, B, D_l]`` that ``dgmjax.models.log_weights_from_keys(model,
  params, x, keys)`` draws for each stochastic layer (same keys, same draws): sample ``k`` is
  ``model.sample_q(params, x, keys[k])``, which splits its key into one key per layer."""
  import jax
  import jax.numpy as jnp
  dtype = dtype or jnp.float32

  @jax.jit
  def draw(keys):
    def one(k):
      layer_keys = model._layer_keys(k)  # pylint: disable=protected-access
      return [jax.random.normal(lk, (batch, d), dtype)
              for lk, d in zip(layer_keys, model.latent_dims)]
    return jax.vmap(one)(keys)

  return draw(keys)


class AgreementError(AssertionError):
  """dgmjax and the PyTorch peer disagree beyond the tolerances."""


def check_agreement(name: str, *, batch: int = 8, num_samples: int = 7, data=None,
                    lw_tol: float = 1e-5, grad_tol: float = 1e-4, adam_tol: float = 1e-10,
                    f64_tol: float = 1e-10, raise_on_failure: bool = True) -> dict:
  """Feeds dgmjax and the PyTorch peer the same weights and noise and compares them.

  Args:
    name: ``'burda1'`` or ``'burda2'``.
    batch, num_samples: ``B`` and ``K`` of the check.
    data: optional ``[N, 28, 28, 1]`` grey-level images (default: random); binarized here.
    lw_tol: relative tolerance of the float32 log-weights, ``|a - b| / max(|b|, 1)``.
    grad_tol: per parameter tensor, ``max |g_a - g_b| / max |g_b|``.
    adam_tol: parameters after one Adam step from the same gradient, in float64,
      ``max |p_a - p_b| / learning_rate``.
    f64_tol: relative tolerance of the log-weights in float64.
    raise_on_failure: raise :class:`AgreementError` (else only report).

  Returns:
    ``{"ok": bool, "log_weights_rel": float, "grad_rel": {objective: float}, ...}``.
  """
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import torch
  from benchmarks import torch_peer
  from dgmjax import losses, models, training

  rng = np.random.default_rng(1)
  log_weights_from_keys = jax.jit(lambda p, xx, ks: models.log_weights_from_keys(model, p, xx, ks))
  grey = data[:batch] if data is not None else rng.uniform(size=(batch, 28, 28, 1))
  x = (rng.uniform(size=grey.shape) < grey).astype(np.float32)
  mean = (data if data is not None else grey).mean(0)
  model, params, tmodel = cases.make_models(name, data_mean=mean, key_seed=3)
  xt = torch.from_numpy(x.reshape(batch, -1).copy())
  out = {"model": name, "B": batch, "K": num_samples}

  with jax.debug_key_reuse(False):  # the same keys feed both sides on purpose
    key = jax.random.key(7)
    keys = jax.random.split(key, num_samples)
    eps = [torch.from_numpy(np.asarray(e).copy()) for e in dgmjax_noise(model, keys, batch)]
    # 1. log-weights, float32
    lw = np.asarray(log_weights_from_keys(params, x, keys), np.float64)
    with torch.no_grad():
      tlw = tmodel.log_weights(xt, eps).double().numpy()
    out["log_weights_rel"] = float(np.max(np.abs(lw - tlw) / np.maximum(np.abs(tlw), 1.0)))
    # 2. evaluation path: per-chunk logsumexp, encoder run once
    with torch.no_grad():
      loc, log_scale = tmodel.encoders[0](xt)
      chunk_lse = torch_peer._chunk_lse  # pylint: disable=protected-access
      tlse = chunk_lse(tmodel, xt, loc, log_scale, eps).double().numpy()
    lse = np.asarray(jax.nn.logsumexp(jnp.asarray(lw), axis=0))
    out["eval_lse_rel"] = float(np.max(np.abs(lse - tlse) / np.maximum(np.abs(tlse), 1.0)))
    # 3. gradients of the VAE and IWAE losses (make_loss splits the key into the same K keys)
    out["grad_rel"] = {}
    grads_j = {}
    for objective in ("vae", "iwae"):
      loss = losses.make_loss(model, cases.BOUND.get(objective, objective), num_samples)
      g = jax.jit(jax.grad(lambda p: loss(p, x, key, 0)[0]))(params)
      flat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v)
              for path, v in jax.tree_util.tree_flatten_with_path(g)[0]}
      tmodel.zero_grad(set_to_none=True)
      torch_peer.loss_fn(tmodel, objective, xt, eps).backward()
      tg = torch_peer.named_grads_as_dgmjax(tmodel)
      if set(tg) != set(flat):
        raise AgreementError(f"parameter names differ: {sorted(set(tg) ^ set(flat))}")
      out["grad_rel"][objective] = max(
          float(np.max(np.abs(flat[k] - tg[k])) / max(np.max(np.abs(tg[k])), 1e-30))
          for k in flat)
      grads_j[objective] = g
    # 4. one Adam step from the same (dgmjax's IWAE) gradient, in float64 on both sides, so that
    # only the optimisers are compared: in float32 the first step, lr * g / (|g| + eps), amplifies
    # gradient rounding by up to 1 / (4 eps), and the parameters round to their own ulp.
    lr = 1e-3
    gflat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v, np.float64)
             for path, v in jax.tree_util.tree_flatten_with_path(grads_j["iwae"])[0]}
    with jax.enable_x64(True):
      opt = training.make_optimizer("adam", lr)
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      g64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), grads_j["iwae"])
      new = jax.jit(lambda p, g: optax.apply_updates(p, opt.update(g, opt.init(p), p)[0]))(p64,
                                                                                           g64)
      newflat = {"/".join(str(getattr(k, "key", k)) for k in path[1:]): np.asarray(v)
                 for path, v in jax.tree_util.tree_flatten_with_path(new)[0]}
    tm64 = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims).double()
    torch_peer.load_dgmjax_params(tm64, params)
    topt = torch_peer.make_optimizer(tm64, lr)
    for nm, prm in tm64.named_parameters():
      g = gflat[torch_peer.dgmjax_name(nm)]
      prm.grad = torch.from_numpy(np.ascontiguousarray(g.T if g.ndim == 2 else g).copy())
    topt.step()
    tnew = torch_peer.as_dgmjax(tm64)
    out["adam_step_rel_lr"] = max(float(np.max(np.abs(newflat[k] - tnew[k]))) / lr
                                  for k in newflat)
    # 5. float64: the same maths exactly
    with jax.enable_x64(True):
      p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
      e64 = dgmjax_noise(model, keys, batch, jnp.float64)
      lw64 = np.asarray(log_weights_from_keys(p64, jnp.asarray(x, jnp.float64), keys))
    t64 = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims).double()
    torch_peer.load_dgmjax_params(t64, params)
    with torch.no_grad():
      tlw64 = t64.log_weights(xt.double(), [torch.from_numpy(np.array(e)) for e in e64]).numpy()
    out["log_weights_rel_f64"] = float(np.max(np.abs(lw64 - tlw64) / np.maximum(np.abs(tlw64), 1)))

  checks = {"log_weights_rel": (out["log_weights_rel"], lw_tol),
            "eval_lse_rel": (out["eval_lse_rel"], lw_tol),
            "grad_rel_vae": (out["grad_rel"]["vae"], grad_tol),
            "grad_rel_iwae": (out["grad_rel"]["iwae"], grad_tol),
            "adam_step_rel_lr": (out["adam_step_rel_lr"], adam_tol),
            "log_weights_rel_f64": (out["log_weights_rel_f64"], f64_tol)}
  failed = {k: v for k, v in checks.items() if not v[0] <= v[1]}
  out["tolerances"] = {k: t for k, (_, t) in checks.items()}
  out["ok"] = not failed
  if failed and raise_on_failure:
    raise AgreementError(f"dgmjax and the PyTorch peer disagree for {name}: " + ", ".join(
        f"{k} = {v:.3g} > {t:g}" for k, (v, t) in failed.items()))
  return out
