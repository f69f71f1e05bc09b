"""A plain PyTorch peer of :class:`dgmjax.models.vae.VAE`, for the benchmarks of ``bench.py``.

The same model as dgmjax, written the way a PyTorch user would write it (``nn.Linear`` layers,
``torch.optim.Adam``), with the same parametrisation so that both can be fed the same weights and
the same noise and checked to agree:

* encoder ``q(h_l | h_{l-1})`` and conditional prior ``p(h_l | h_{l+1})``: tanh MLP, then two linear
  heads, the mean and ``log sigma`` (``sigma = exp`` of a linear layer, as ``dgmjax.nn
  .GaussianHead`` and Burda et al.'s reference code);
* decoder ``p(x | h_1)``: tanh MLP with Bernoulli logits;
* ``log w_k = log p(x | h_1) + log p(h) - log q(h | x)``, ``[K, B]``; the first encoder runs once
  per image and its ``K`` samples are ``loc + exp(log_scale) * eps_k``;
* densities written as in :mod:`dgmjax.distributions`: ``log N(x; mu, sigma) = -0.5 ((x - mu) /
  sigma)^2 - log sigma - 0.5 log 2 pi`` and ``log Bern(x; l) = x l - softplus(l)``.

Shapes follow dgmjax: images are ``[B, 784]`` (flattened), noise of layer ``l`` is ``[K, B, D_l]``,
log-weights ``[K, B]`` (importance samples on axis 0).

Nothing here imports JAX: :func:`load_dgmjax_params` takes the dgmjax params pytree as nested
dicts of array-likes (numpy or jax arrays).

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5 and
  Appendix (architectures 784-200-200-50 and 784-200-200-100-100-100-50, tanh).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
  """Diagonal Normal log-density summed over the last axis (as ``dgmjax.normal_log_prob``)."""
  z = (x - loc) * torch.exp(-log_scale)
  return (-0.5 * z * z - log_scale - _HALF_LOG_2PI).sum(-1)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
  """``log N(x; 0, I)`` summed over the last axis."""
  return (-0.5 * x * x - _HALF_LOG_2PI).sum(-1)


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
  """``sum_d x_d l_d - softplus(l_d)`` over the last axis (as ``dgmjax.bernoulli_log_prob``)."""
  return (x * logits - F.softplus(logits)).sum(-1)


class MLP(nn.Module):
  """tanh hidden layers and a linear output: ``[..., D_in] -> [..., features[-1]]``."""

  def __init__(self, d_in: int, features: Sequence[int]):
    super().__init__()
    dims = [d_in] + list(features)
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-2], dims[1:-1]))
    self.out = nn.Linear(dims[-2], dims[-1])

  def forward(self, x):
    for layer in self.hidden:
      x = torch.tanh(layer(x))
    return self.out(x)


class GaussianHead(nn.Module):
  """tanh MLP, then ``loc`` and ``log_scale`` heads: ``[..., D_in] -> ([..., D], [..., D])``."""

  def __init__(self, d_in: int, hidden: Sequence[int], latent_dim: int):
    super().__init__()
    dims = [d_in] + list(hidden)
    self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
    self.loc = nn.Linear(dims[-1], latent_dim)
    self.log_scale = nn.Linear(dims[-1], latent_dim)

  def forward(self, x):
    for layer in self.hidden:
      x = torch.tanh(layer(x))
    return self.loc(x), self.log_scale(x)


class TorchVAE(nn.Module):
  """Gaussian VAE / IWAE with a Bernoulli decoder and ``len(latent_dims)`` stochastic layers.

  Args:
    x_dim: pixels per image (784).
    latent_dims: sizes of ``h_1, ..., h_L``, bottom first.
    hidden_dims: tanh widths of each stochastic layer's encoder, bottom first; the generative side
      mirrors them (as ``dgmjax.models.vae.VAE``).
  """

  def __init__(self, x_dim: int = 784, latent_dims: Sequence[int] = (50,),
               hidden_dims: Sequence[Sequence[int]] = ((200, 200),)):
    super().__init__()
    if len(latent_dims) != len(hidden_dims) or not latent_dims:
      raise ValueError(f"latent_dims {latent_dims} and hidden_dims {hidden_dims} must be non-empty "
                       "and of equal length")
    self.x_dim, self.latent_dims = x_dim, tuple(latent_dims)
    self.hidden_dims = tuple(tuple(h) for h in hidden_dims)
    n = len(latent_dims)
    ins = [x_dim] + list(latent_dims[:-1])
    self.encoders = nn.ModuleList(GaussianHead(ins[l], hidden_dims[l], latent_dims[l])
                                  for l in range(n))
    self.priors = nn.ModuleList(
        GaussianHead(latent_dims[l + 1], tuple(reversed(hidden_dims[l + 1])), latent_dims[l])
        for l in range(n - 1))
    self.decoder = MLP(latent_dims[0], tuple(reversed(hidden_dims[0])) + (x_dim,))

  @property
  def num_layers(self) -> int:
    return len(self.latent_dims)

  def log_weights(self, x: torch.Tensor, eps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Log-weights ``[K, B]`` for images ``x`` ``[B, x_dim]`` and noise ``eps[l]`` ``[K, B, D_l]``.

    .. math:: \\log w_k = \\log p(x | h_1^{(k)}) + \\log p(h^{(k)}) - \\log q(h^{(k)} | x), \\quad h_l^{(k)} = \\mu_l + \\sigma_l \\epsilon_l^{(k)}
    """
    if len(eps) != self.num_layers:
      raise ValueError(f"eps must hold one [K, B, D_l] tensor per stochastic layer "
                       f"({self.num_layers}), got {len(eps)}")
    hs, log_q, inp = [], 0.0, x
    for l, enc in enumerate(self.encoders):
      loc, log_scale = enc(inp)  # layer 0: [B, D] once per image; above: [K, B, D]
      h = loc + torch.exp(log_scale) * eps[l]
      log_q = log_q + normal_log_prob(h, loc, log_scale)
      hs.append(h)
      inp = h
    log_prior = standard_normal_log_prob(hs[-1])
    for l, prior in enumerate(self.priors):
      loc, log_scale = prior(hs[l + 1])
      log_prior = log_prior + normal_log_prob(hs[l], loc, log_scale)
    log_px = bernoulli_log_prob(x, self.decoder(hs[0]))
    return log_px + log_prior - log_q

  def sample_eps(self, num_samples: int, batch_size: int, generator=None,
                 dtype=torch.float32, device=None) -> list[torch.Tensor]:
    """Fresh standard-normal noise ``[K, B, D_l]`` per layer (``torch.randn``), on ``device``
    (default: the model's)."""
    if device is None:
      device = next(self.parameters()).device
    return [torch.randn(num_samples, batch_size, d, generator=generator, dtype=dtype,
                        device=device) for d in self.latent_dims]


def burda_one_layer() -> TorchVAE:
  """784-200-200-50 (tanh), mirrored decoder."""
  return TorchVAE(784, (50,), ((200, 200),))


def burda_two_layer() -> TorchVAE:
  """784-200-200-100 / 100-100-100-50 (tanh), mirrored."""
  return TorchVAE(784, (100, 50), ((200, 200), (100, 100)))


def _load_linear(linear: nn.Linear, p: dict) -> None:
  kernel = torch.from_numpy(np.array(p["kernel"])).to(linear.weight.dtype)  # a writable copy
  bias = torch.from_numpy(np.array(p["bias"])).to(linear.bias.dtype)
  if tuple(kernel.shape[::-1]) != tuple(linear.weight.shape):
    raise ValueError(f"kernel of shape {tuple(kernel.shape)} does not fit nn.Linear with weight "
                     f"{tuple(linear.weight.shape)}")
  linear.weight.copy_(kernel.T)  # flax kernels are [in, out], torch weights [out, in]
  linear.bias.copy_(bias)


def _load_head(head: nn.Module, p: dict) -> None:
  for i, layer in enumerate(head.hidden):
    _load_linear(layer, p[f"hidden_{i}"])
  if isinstance(head, GaussianHead):
    _load_linear(head.loc, p["loc"])
    _load_linear(head.log_scale, p["log_scale"])
  else:
    _load_linear(head.out, p["out"])


@torch.no_grad()
def load_dgmjax_params(model: TorchVAE, params: dict) -> TorchVAE:
  """Copies the weights of a dgmjax VAE params pytree (``{'params': {...}}``) into ``model``.

  Args:
    model: a :class:`TorchVAE` with the same sizes as the dgmjax model.
    params: ``dgmjax.models.vae.VAE.init`` output (or trained params): nested dicts with
      ``encoders_<l>``, ``priors_<l>``, ``decoder`` and flax ``kernel`` ``[in, out]`` / ``bias``.

  Returns:
    ``model`` (modified in place).
  """
  p = params["params"] if "params" in params else params
  for l, enc in enumerate(model.encoders):
    _load_head(enc, p[f"encoders_{l}"])
  for l, prior in enumerate(model.priors):
    _load_head(prior, p[f"priors_{l}"])
  _load_head(model.decoder, p["decoder"])
  return model


def dgmjax_name(torch_name: str) -> str:
  """``encoders.0.hidden.1.weight`` -> ``encoders_0/hidden_1/kernel`` (the flax path)."""
  parts = torch_name.split(".")
  top = parts[0] if parts[0] == "decoder" else f"{parts[0]}_{parts[1]}"
  rest = parts[1:] if parts[0] == "decoder" else parts[2:]
  layer = f"hidden_{rest[1]}" if rest[0] == "hidden" else rest[0]
  return f"{top}/{layer}/{'kernel' if rest[-1] == 'weight' else 'bias'}"


def as_dgmjax(model: TorchVAE, *, grads: bool = False) -> dict:
  """Parameters (or their ``.grad``) as numpy arrays keyed by flax path, kernels ``[in, out]``:
  ``{"encoders_0/hidden_0/kernel": array, ...}``."""
  out = {}
  for name, prm in model.named_parameters():
    t = prm.grad if grads else prm
    a = t.detach().cpu().numpy()
    key = dgmjax_name(name)
    out[key] = a.T if key.endswith("kernel") else a
  return out


def named_grads_as_dgmjax(model: TorchVAE) -> dict:
  """:func:`as_dgmjax` of the gradients."""
  return as_dgmjax(model, grads=True)


# ----------------------------------------------------------------------------- objectives


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
  """``logsumexp_k log w_k - log K``: ``[K, B] -> [B]``."""
  return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def loss_fn(model: TorchVAE, objective: str, x: torch.Tensor,
            eps: Sequence[torch.Tensor]) -> torch.Tensor:
  """Negative bound averaged over the batch: ``'vae'`` (mean of log-weights) or ``'iwae'``."""
  log_w = model.log_weights(x, eps)
  if objective == "vae":
    return -log_w.mean(0).mean()
  if objective == "iwae":
    return -iwae_bound(log_w).mean()
  raise ValueError(f"objective must be 'vae' or 'iwae', got {objective!r}")


def make_optimizer(model: TorchVAE, lr: float = 1e-3) -> torch.optim.Optimizer:
  """Adam with Burda's ``b1=0.9, b2=0.999, eps=1e-4`` (the same as ``dgmjax.training
  .make_optimizer('adam', lr)``); ``foreach`` (multi-tensor) kernels, PyTorch's CPU default."""
  return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-4, foreach=True)


class TrainStep:
  """One optimiser step on a minibatch, as a PyTorch user writes it.

  ``step(images)``: dynamic binarization (``rand < x``), fresh ``randn`` noise, the loss, backward,
  Adam. With ``compile=True`` the loss (binarization, noise and forward; its backward through
  AOTAutograd) and the optimiser step are each wrapped in ``torch.compile(dynamic=False)``
  (inductor, one graph specialised to each shape).

  Args:
    model: a :class:`TorchVAE`.
    objective: ``'vae'`` or ``'iwae'``.
    num_samples: ``K``.
    lr: Adam learning rate.
    compile: use ``torch.compile`` (inductor).
    dynamic_binarization: binarize each minibatch afresh (Burda et al.'s MNIST protocol).
  """

  def __init__(self, model: TorchVAE, objective: str, num_samples: int, lr: float = 1e-3, *,
               compile: bool = False, dynamic_binarization: bool = True):
    self.model, self.objective, self.num_samples = model, objective, int(num_samples)
    self.dynamic_binarization = dynamic_binarization
    self.opt = make_optimizer(model, lr)
    self._loss = self._loss_impl
    self._opt_step = self.opt.step
    if compile:  # one specialised graph per shape, as XLA compiles one program per shape
      self._loss = torch.compile(self._loss_impl, dynamic=False)
      self._opt_step = torch.compile(self.opt.step, dynamic=False)

  def _loss_impl(self, images: torch.Tensor) -> torch.Tensor:
    x = (torch.rand_like(images) < images).to(images.dtype) if self.dynamic_binarization else images
    eps = [torch.randn(self.num_samples, x.shape[0], d, dtype=x.dtype, device=x.device)
           for d in self.model.latent_dims]
    return loss_fn(self.model, self.objective, x, eps)

  def __call__(self, images: torch.Tensor) -> torch.Tensor:
    """One step on ``images`` ``[B, 784]``; returns the (detached) loss."""
    self.opt.zero_grad(set_to_none=True)
    loss = self._loss(images)
    loss.backward()
    self._opt_step()
    return loss.detach()


# ----------------------------------------------------------------------------- evaluation


def streaming_iwae_bound(model: TorchVAE, x: torch.Tensor, num_samples: int,
                         sample_chunk: int, *, generator=None,
                         chunk_fn: Callable | None = None) -> torch.Tensor:
  """``L_K`` ``[B]`` for one batch ``x`` ``[B, 784]``, ``sample_chunk`` samples at a time.

  The first encoder runs once; each chunk's log-weights are reduced by ``logsumexp`` and
  accumulated with ``logaddexp`` (peak memory: one chunk).
  """
  run = chunk_fn or _chunk_lse
  with torch.no_grad():
    loc, log_scale = model.encoders[0](x)
    acc, done = None, 0
    while done < num_samples:
      c = min(sample_chunk, num_samples - done)
      eps = model.sample_eps(c, x.shape[0], generator)
      lse = run(model, x, loc, log_scale, eps)
      acc = lse if acc is None else torch.logaddexp(acc, lse)
      done += c
  return acc - math.log(num_samples)


def _chunk_lse(model: TorchVAE, x, loc, log_scale, eps):
  """``logsumexp_k log w_k`` over one chunk of samples, reusing the first encoder's output."""
  h = loc + torch.exp(log_scale) * eps[0]
  log_q = normal_log_prob(h, loc, log_scale)
  hs, inp = [h], h
  for l in range(1, model.num_layers):
    loc_l, ls_l = model.encoders[l](inp)
    h = loc_l + torch.exp(ls_l) * eps[l]
    log_q = log_q + normal_log_prob(h, loc_l, ls_l)
    hs.append(h)
    inp = h
  log_prior = standard_normal_log_prob(hs[-1])
  for l, prior in enumerate(model.priors):
    ploc, pls = prior(hs[l + 1])
    log_prior = log_prior + normal_log_prob(hs[l], ploc, pls)
  log_w = bernoulli_log_prob(x, model.decoder(hs[0])) + log_prior - log_q
  return torch.logsumexp(log_w, 0)


def log_likelihood(model: TorchVAE, images: torch.Tensor, *, num_samples: int = 5000,
                   sample_chunk: int = 500, batch_size: int = 100, generator=None,
                   compile: bool = False) -> torch.Tensor:
  """Per-image ``L_K`` (``K = 5000``: Burda et al.'s test log-likelihood) ``[N]``.

  Args:
    model: a :class:`TorchVAE`.
    images: ``[N, 784]`` binary images.
    num_samples: ``K``.
    sample_chunk: samples per chunk.
    batch_size: images per batch.
    generator: optional ``torch.Generator`` for the noise.
    compile: ``torch.compile`` the per-chunk function (recompiles for a last, shorter chunk).
  """
  fn = torch.compile(_chunk_lse, dynamic=False) if compile else _chunk_lse
  out = [streaming_iwae_bound(model, images[i:i + batch_size], num_samples, sample_chunk,
                              generator=generator, chunk_fn=fn)
         for i in range(0, images.shape[0], batch_size)]
  return torch.cat(out)
