"""The training state and the jitted training step: NaN guard, step keys, microbatches.

A step is a pure function of the state and the minibatch: its PRNG key is
``fold_in(key(seed), step)`` (:func:`step_key`), so a run restored at step ``s`` draws what the
uninterrupted run draws.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import _checks, data

Array = jax.Array
LossFn = Callable[[Any, Array, Array, Array], tuple[Array, dict]]



@flax.struct.dataclass
class TrainState:
  """Training state: a pytree, checkpointed whole.

  Attributes:
    step: number of steps taken (skipped ones included).
    params: model parameters.
    opt_state: optimiser state.
    nonfinite_in_a_row: consecutive steps whose loss or gradient was not finite.
    nonfinite_total: all such steps so far.
  """
  step: Array
  params: Any
  opt_state: Any
  nonfinite_in_a_row: Array
  nonfinite_total: Array


def init_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  """The training state at step 0: ``params`` and ``optimizer.init(params)``, counters at 0.

  ``optimizer`` is checked by :func:`check_optimizer` on the structure of ``params``.
  """
  check_optimizer(optimizer, params)
  zero = jnp.zeros([], jnp.int32)
  return TrainState(zero, params, optimizer.init(params), zero, zero)


#: Steps of the probe of :func:`check_optimizer`.
_PROBE_UPDATES = 3


def check_optimizer(optimizer, params=None) -> None:
  """``optimizer`` must be an optax transformation that descends: a negative rate is refused.

  Beyond its type (``init`` and ``update``), the optimiser is probed before any work: from
  parameters at zero (the structure, shapes and dtypes of ``params``; without ``params`` one
  small vector), it makes :data:`_PROBE_UPDATES` updates with a gradient of ones. optax adds
  updates to the parameters, so a descent step moves against the gradient; an update that moves
  **every** coordinate up the gradient is gradient ascent: a negative learning rate
  (``optax.adam(-1e-3)``, ``optax.sgd(-0.1)``, ``optax.inject_hyperparams(optax.adam)(-1e-3)``) or
  a scaling without its ``optax.scale(-lr)`` (``optax.scale_by_adam()`` alone). A learning rate
  that the state shows (``optax.inject_hyperparams``: ``learning_rate`` in ``hyperparams``) must be
  finite and ``>= 0``.

  Accepted, as they should be: a warmup schedule that starts at 0 (the first updates are zero),
  sign-based and second-order-style optimisers (``lion``, ``optax.scale_by_sign``,
  ``adafactor``), weight decay (zero at zero parameters), ``optax.MultiSteps`` (zero updates
  while it accumulates).

  What the probe cannot see (a plain transformation hides its settings): a learning rate of
  exactly 0 (its zero updates look like a warmup's or an accumulation's), a rate that turns
  negative only after the first :data:`_PROBE_UPDATES` updates (a schedule inside the
  optimiser), and optimisers whose ``update`` needs more than ``(grads, state, params)``
  (``optax.lbfgs``, ``reduce_on_plateau`` alone: not probed). Check a schedule you pass to optax
  yourself with :func:`dgmjax.training.check_learning_rate` (``make_optimizer`` does). A NaN
  update from a NaN rate is caught by ``fit`` at its first checkpoint
  (:class:`~dgmjax.training.NonFiniteError`).

  Args:
    optimizer: the optax transformation.
    params: optional parameters whose structure the probe uses (their values are not used).

  Raises:
    ArgumentTypeError: not an optax transformation.
    ValueError: an ascending update or a visible learning rate that is negative or not finite;
      the message names the optimiser and what to pass instead.
  """
  if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update",
                                                                          None))):
    raise _checks.ArgumentTypeError(
        f"optimizer must be an optax GradientTransformation (with init and update, e.g. "
        f"optax.adam(1e-3)), got {type(optimizer).__name__} {optimizer!r}")
  probe = _probe_params(params)
  if probe is None:
    return
  try:
    state = optimizer.init(probe)
    grads = jax.tree.map(jnp.ones_like, probe)
    for i in range(_PROBE_UPDATES):
      _check_visible_rates(state, optimizer)
      updates, state = optimizer.update(grads, state, probe)
      leaves = [np.asarray(u) for u in jax.tree.leaves(updates)]
      if leaves and all(u.size and np.all(u > 0) for u in leaves):
        raise _AscentError(
            f"optimizer ascends: from zero parameters its update {i} moves every parameter up a "
            f"gradient of ones (optax adds updates to the parameters), so training would "
            f"increase the loss. A negative learning rate (e.g. optax.adam(-1e-3)) or a scaling "
            f"without optax.scale(-learning_rate) does this; pass a learning rate > 0, e.g. "
            f"optax.adam(1e-3). Got {optimizer!r}")
  except _AscentError as e:
    raise ValueError(str(e)) from None
  except Exception:  # pylint: disable=broad-except
    return  # an optimiser the probe cannot drive (needs extra arguments): not probed


class _AscentError(Exception):
  """An ascending optimiser found by the probe of :func:`check_optimizer`."""


def _probe_params(params):
  """Zeros with the structure, shapes and dtypes of ``params`` (concrete even when ``params``
  is traced), or one float32 vector; None if ``params`` holds no floating array."""
  if params is None:
    return {"probe": jnp.zeros((3,), jnp.float32)}
  try:
    leaves, treedef = jax.tree.flatten(params)
    zeros = [jnp.zeros(np.shape(a), jnp.result_type(a)) for a in leaves]
  except Exception:  # pylint: disable=broad-except
    return None
  if not any(jnp.issubdtype(z.dtype, jnp.floating) for z in zeros):
    return None
  return jax.tree.unflatten(treedef, zeros)


def _check_visible_rates(state, optimizer) -> None:
  """A ``learning_rate`` that the state shows (``optax.inject_hyperparams``) must be finite and
  ``>= 0``."""
  for node in jax.tree.leaves(state, is_leaf=lambda n: hasattr(n, "hyperparams")):
    hyper = getattr(node, "hyperparams", None)
    if not isinstance(hyper, dict):
      continue
    for key in ("learning_rate", "lr", "step_size"):
      if key in hyper:
        v = np.asarray(hyper[key])
        if v.size and not (np.all(np.isfinite(v)) and np.all(v >= 0)):
          raise _AscentError(
              f"optimizer has {key}={v.tolist()!r} in its state (optax.inject_hyperparams): a "
              f"learning rate must be finite and > 0 (a schedule may start at 0). Got "
              f"{optimizer!r}")


def step_key(seed: int, step) -> Array:
  """The PRNG key of a training step: a function of the seed and the step only."""
  if not isinstance(seed, jax.core.Tracer):  # a traced seed: runs vmapped over their seeds
    seed = _checks.check_seed("seed", seed)
  return jax.random.fold_in(jax.random.key(seed), step)


def auto_microbatch(batch_size: int, num_samples: int, *, max_rows: int = 2048,
                    backend: str | None = None) -> int:
  """Images per microbatch for :func:`make_train_step` that keep a CPU step in cache.

  A step's decoder works on ``num_samples * batch_size`` rows at once; on a CPU the ``[rows, D]``
  activations and logits of a large batch fall out of the caches and every elementwise pass and
  matmul of the step becomes memory-bound. Splitting the batch into microbatches of at most
  ``max_rows`` rows (``2048 x 784`` float32 is 6.4 MB) and summing their gradients keeps them in
  cache: measured on a 2-core AMD EPYC (Burda 1-layer / 2-layer, K=50) 1.31x faster at B=100 and
  1.57x / 1.72x at B=1000 (``benchmarks/bench.py``). On accelerators one large batch is fastest, so there the whole
  batch is returned.

  Args:
    batch_size: ``B``.
    num_samples: importance samples per image ``K`` (1 for a VAE).
    max_rows: the most rows ``K * microbatch`` of one microbatch.
    backend: ``'cpu'``, ``'gpu'``, ... (default: ``jax.default_backend()``).

  Returns:
    The largest divisor of ``batch_size`` with ``K * microbatch <= max_rows`` (at least 1) on CPU;
    ``batch_size`` on other backends.
  """
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  max_rows = _checks.check_int("max_rows", max_rows, minimum=1)
  if (backend or jax.default_backend()) != "cpu":
    return batch_size
  limit = max(1, max_rows // num_samples)
  return max(d for d in range(1, min(batch_size, limit) + 1) if batch_size % d == 0)


def resolve_microbatch(setting, batch_size: int, num_samples: int, *, name: str = "microbatch",
                       batch_name: str = "batch_size") -> int | None:
  """A microbatch setting (``None``/``'none'``, ``'auto'``, or a number of images, also as a string
  from a command line or config) -> the ``microbatch`` of :func:`make_train_step`.

  Returns:
    ``None`` for the whole batch at once (also when the setting covers the whole batch), else the
    number of images per microbatch, a divisor of ``batch_size``.

  Raises:
    ValueError: naming ``name`` (and ``batch_name``) for an unknown setting or a non-divisor.
  """
  text = "none" if setting is None else str(setting).strip().lower()
  if text == "none":
    return None
  if text == "auto":
    mb = auto_microbatch(batch_size, num_samples)
  elif text.isdigit() and int(text) >= 1 and not isinstance(setting, bool):
    mb = int(text)
  else:
    raise ValueError(f"{name} must be 'auto', 'none' or a positive integer, got {setting!r}")
  if batch_size % mb:
    raise ValueError(f"{name}={mb} must divide {batch_name}={batch_size}")
  return None if mb >= batch_size else mb


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, *, seed: int,
                    dynamic_binarization: bool = False, post_update: Callable | None = None,
                    microbatch: int | None = None):
  """A jitted ``step(state, images) -> (state, metrics)``.

  A step whose loss or any gradient is not finite leaves ``params`` and ``opt_state`` unchanged
  and increments the non-finite counters; a finite step resets ``nonfinite_in_a_row``.
  The loss is called as ``loss_fn(params, x, key, step)`` with the state's step, traced, so a
  schedule inside the loss (a Gumbel-softmax temperature, a KL weight) does not retrace.
  ``post_update(params, aux, key, step) -> params`` runs after the optimiser's update, for state that
  is not trained by gradients (an EMA codebook, usage counts, dead-code restarts); the loss hands
  it ``aux`` as ``metrics.pop('aux')``. Such leaves get zero gradients, hence zero Adam updates.

  With ``microbatch=m`` (a divisor of the batch size, e.g. from :func:`auto_microbatch`) the
  minibatch is split into ``B / m`` microbatches evaluated one after another (``lax.scan``), each
  with its own key ``jax.random.split(key, B / m)[i]``; the gradient and every metric are their
  means. For a loss that is a mean over images (every loss of :func:`~dgmjax.losses.make_loss`)
  this is the gradient of the whole minibatch with other noise: the same estimator, in less
  memory and, on a CPU, less time. One optimiser update is made per minibatch, as without it.

  A finite gradient can still give a non-finite update (a NaN learning rate or optimiser
  setting); the step does not pay for checking every parameter:
  :func:`~dgmjax.training.loop.fit` checks the parameters on the host before it writes a
  checkpoint and before it returns, and the next step's non-finite loss stops the run.
  """
  if not isinstance(seed, jax.core.Tracer):  # a traced seed: runs vmapped over their seeds
    seed = _checks.check_seed("seed", seed)
  check_optimizer(optimizer)
  if not callable(loss_fn):
    raise _checks.ArgumentTypeError(f"loss_fn must be a function (params, x, key, step) -> "
                                    f"(loss, metrics), got {type(loss_fn).__name__}")
  if microbatch is not None:
    if not isinstance(microbatch, (int, np.integer)) or isinstance(microbatch, bool) \
        or microbatch < 1:
      raise ValueError(f"microbatch must be None or an int >= 1, got {microbatch!r}")
    if post_update is not None:
      raise ValueError("microbatch cannot be combined with post_update (its aux statistics are "
                       "per minibatch)")

  def value_and_grad(params, x, key, step):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    b = x.shape[0]
    if microbatch is None or microbatch >= b:
      return grad_fn(params, x, key, step)
    if b % microbatch:
      raise ValueError(f"microbatch={microbatch} must divide the batch size {b}")
    n = b // microbatch
    xs = x.reshape((n, microbatch) + x.shape[1:])

    def body(acc, inp):
      (loss, metrics), grads = grad_fn(params, inp[0], inp[1], step)
      return jax.tree.map(jnp.add, acc, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (losses, metrics) = jax.lax.scan(body, zeros, (xs, jax.random.split(key, n)))
    mean = lambda a: jnp.mean(a, axis=0)
    return (mean(losses), jax.tree.map(mean, metrics)), jax.tree.map(lambda g: g / n, grads)

  @jax.jit
  def train_step(state: TrainState, images: Array):
    if post_update is None:
      key_bin, key_loss = jax.random.split(step_key(seed, state.step))
    else:
      key_bin, key_loss, key_post = jax.random.split(step_key(seed, state.step), 3)
    x = data.binarize(key_bin, images) if dynamic_binarization else images
    (loss, metrics), grads = value_and_grad(state.params, x, key_loss, state.step)
    finite = jnp.isfinite(loss) & jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    aux = metrics.pop("aux", None)
    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    if post_update is not None:
      new_params = post_update(new_params, aux, key_post, state.step)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    state = TrainState(
        step=state.step + 1,
        params=keep(new_params, state.params),
        opt_state=keep(new_opt_state, state.opt_state),
        nonfinite_in_a_row=jnp.where(finite, 0, state.nonfinite_in_a_row + 1),
        nonfinite_total=state.nonfinite_total + jnp.where(finite, 0, 1))
    metrics = dict(metrics, loss=loss, finite=finite,
                   grad_norm=jnp.where(finite, optax.tree.norm(grads), jnp.nan))
    return state, metrics

  return train_step
