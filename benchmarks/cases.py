"""What the benchmarks measure: Burda's models, the training cases, Table 1's rows, the data, and
the analytic matmul FLOPs of a training step or an ``L_K`` evaluation.

FLOPs are analytic matmul FLOPs (``2 * rows * in * out`` per dense layer; the backward pass
doubles them, except for the input layer of the encoder, whose input needs no gradient); the
first encoder runs once per image, every other layer once per importance sample.
"""

from __future__ import annotations

import os

#: ``(B, K)`` of the training-step table (``K = 1``: the VAE; otherwise IWAE).
TRAIN_CASES = ((20, 1), (20, 5), (20, 50), (100, 50), (1000, 50))
MODELS = ("burda1", "burda2")
#: The row label "vae" (as in the saved results and the PyTorch peer) names the ELBO.
BOUND = {"vae": "elbo"}
#: Burda et al.'s Table 1 rows as ``(objective, K)``: VAE and IWAE at K = 1, 5, 50, where at
#: K = 1 the two are one run (the rows of ``experiments.iwae.vmap_table``).
TABLE1_ROWS = (("vae", 1), ("vae", 5), ("iwae", 5), ("vae", 50), ("iwae", 50))
#: Burda et al.'s protocol: the MNIST training split of experiments.iwae (60,000 - 400 validation
#: images) in minibatches of 20, for 3280 epochs (training.burda_num_steps).
PROTOCOL_TRAIN_IMAGES, PROTOCOL_BATCH = 59600, 20


def objective_of(num_samples: int) -> str:
  """The row label of a training case: ``'vae'`` at ``K = 1``, else ``'iwae'``."""
  return "vae" if num_samples == 1 else "iwae"


def minibatch_indices(num_images: int, batch: int, num_samples: int) -> list:
  """The four minibatches (image indices, without replacement) that a training case cycles
  through; seeded by ``(B, K)``, so that every side of a case trains on the same images."""
  import numpy as np
  rng = np.random.default_rng(batch * 7919 + num_samples)
  return [rng.choice(num_images, batch, replace=False) for _ in range(4)]


def protocol_steps() -> int:
  """Optimiser steps of Burda's full protocol (3280 epochs of B=20)."""
  from dgmjax import training
  return training.burda_num_steps(PROTOCOL_TRAIN_IMAGES // PROTOCOL_BATCH, 8)


# ----------------------------------------------------------------------------- FLOPs


def dense_layers(model) -> list[tuple[int, int, bool, bool]]:
  """``(in, out, per_sample, data_input)`` for every dense layer of a dgmjax VAE."""
  layers = []
  ins = [model.x_dim] + list(model.latent_dims[:-1])
  for l in range(model.num_layers):  # encoders q(h_l | h_{l-1})
    dims = [ins[l]] + list(model.hidden_dims[l])
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
      layers.append((a, b, l > 0, l == 0 and i == 0))
    layers += [(dims[-1], model.latent_dims[l], l > 0, False)] * 2  # loc, log_scale
  for l in range(model.num_layers - 1):  # priors p(h_l | h_{l+1})
    dims = [model.latent_dims[l + 1]] + list(reversed(model.hidden_dims[l + 1]))
    layers += [(a, b, True, False) for a, b in zip(dims[:-1], dims[1:])]
    layers += [(dims[-1], model.latent_dims[l], True, False)] * 2
  dims = [model.latent_dims[0]] + list(reversed(model.hidden_dims[0])) + [model.x_dim]
  layers += [(a, b, True, False) for a, b in zip(dims[:-1], dims[1:])]  # decoder
  return layers


def matmul_flops(model, batch: int, num_samples: int, *, train: bool) -> float:
  """Analytic matmul FLOPs of one training step or one ``L_K`` evaluation of ``batch`` images."""
  total = 0.0
  for a, b, per_sample, data_input in dense_layers(model):
    fwd = 2.0 * (num_samples * batch if per_sample else batch) * a * b
    total += fwd if not train else (2.0 if data_input else 3.0) * fwd
  return total


# ----------------------------------------------------------------------------- the models


def make_models(name: str, data_mean=None, key_seed: int = 0):
  """``(dgmjax model, params, torch model)`` with the same weights."""
  import jax
  from benchmarks import torch_peer
  from dgmjax.models import vae
  model = vae.make(name, (28, 28, 1))
  params = jax.jit(lambda k: model.init(k, data_mean=data_mean))(jax.random.key(key_seed))
  tmodel = torch_peer.TorchVAE(model.x_dim, model.latent_dims, model.hidden_dims)
  torch_peer.load_dgmjax_params(tmodel, params)
  return model, params, tmodel


def cached_model(ctx: dict, name: str):
  """A dgmjax Burda model and its initial parameters (seed 0, output bias from the training
  mean ``ctx["train"]``, as ``experiments.iwae``), built once per name into ``ctx["models"]``."""
  cache = ctx.setdefault("models", {})
  if name not in cache:
    import jax
    from dgmjax.models import vae
    model = vae.make(name, (28, 28, 1))
    cache[name] = (model, model.init(jax.random.key(0), data_mean=ctx["train"].mean(0)))
  return cache[name]


def restore_params(run_dir: str, name: str = "burda1"):
  """The parameters of the latest checkpoint of an experiments/iwae run (read-only): ``(params,
  step)``, checked against the shapes of model ``name`` (:func:`dgmjax.training.restore`)."""
  import jax
  from dgmjax import training
  from dgmjax.models import vae
  model = vae.make(name, (28, 28, 1))
  template = jax.eval_shape(model.init, jax.random.key(0))
  try:
    params, _, step = training.restore(run_dir, like=template)
  except ValueError as e:
    raise ValueError(f"the checkpoint of {run_dir} does not hold {name} parameters: {e}") from e
  return params, step


# ----------------------------------------------------------------------------- data


def find_data_dir(arg: str, root: str) -> str:
  """The first of ``arg``, ``DGMJAX_DATA_DIR``, ``root/shared/data`` and ``root/../shared/data``
  that holds a folder ``mnist/`` (absolute), else ``''``."""
  for cand in (arg, os.environ.get("DGMJAX_DATA_DIR", ""), os.path.join(root, "shared", "data"),
               os.path.join(root, "..", "shared", "data")):
    if cand and os.path.isdir(os.path.join(cand, "mnist")):
      return os.path.abspath(cand)
  return ""


def load_data(data_dir: str = ""):
  """``(train grey levels [N,28,28,1], test binarized once [M,28,28,1], source)``: MNIST from
  ``data_dir`` (default ``DGMJAX_DATA_DIR``) through ``dgmjax.data``'s numpy backend, else random
  grey levels."""
  import jax
  import numpy as np
  from dgmjax import data
  data_dir = data_dir or os.environ.get("DGMJAX_DATA_DIR", "")
  if data_dir:
    train = data.load("mnist", "train", data_dir=data_dir, backend="numpy")["image"]
    test = data.load("mnist", "test", data_dir=data_dir, backend="numpy")["image"]
    source = f"MNIST from {data_dir}"
  else:
    rng = np.random.default_rng(0)
    train = rng.uniform(size=(4000, 28, 28, 1)).astype(np.float32) ** 3
    test = rng.uniform(size=(1000, 28, 28, 1)).astype(np.float32) ** 3
    source = "random grey levels (no DGMJAX_DATA_DIR)"
  key = jax.random.fold_in(jax.random.key(0), 0x5EED)  # experiments/iwae's fixed binarization
  test_binary = np.asarray(data.binarize(key, jax.numpy.asarray(test)))
  return np.asarray(train, np.float32), test_binary, source
