"""Many small runs per accelerator (``vmap`` over runs) and data parallelism (``jax.sharding``).

**Runs side by side.** A table of small models (seeds, objectives, ``K``) trains in one jitted
program: :func:`make_runs_train_step` ``jax.vmap``-s the whole training step of
:func:`dgmjax.training.make_train_step` (loss, gradient, optimiser, NaN guard) over a leading
*run* axis of the state, the minibatches and the seeds. Run ``r`` takes exactly the steps it would
take alone with ``seed=seeds[r]`` (same step keys, same binarization, same samples), so the stacked
runs equal the runs done one by one up to float rounding (tested).

Shapes must be static inside one ``vmap``, so runs are grouped:

* runs that differ only in their seed, their initial parameters or their data order share a group;
* runs with the same ``K`` but different *bound* objectives (e.g. the VAE and the IWAE at ``K = 5``)
  also share a group: :func:`bounds_loss` computes the log-weights once and selects each
  run's reduction (``elbo``, ``iwae_bound``, ...) by an integer index, a masked formulation whose
  cost is one extra reduction of the ``[K, B]`` log-weights;
* runs with different ``K`` or batch sizes form different groups; :func:`make_groups_train_step`
  compiles all groups into one jitted program (one dispatch per step for the whole table).

**Data parallelism.** :func:`make_mesh` builds a ``Mesh`` with a ``"data"`` axis (and optionally a
``"samples"`` axis); :func:`make_sharded_train_step` jits the training step with the minibatch
sharded along ``"data"`` (``NamedSharding(mesh, P("data"))``) and the state replicated, and XLA
partitions the computation (GSPMD) and inserts the gradient all-reduce. :class:`SampleSharded`
additionally shards the importance samples along ``"samples"``. Random draws use JAX's
partitionable threefry, so a sharded run draws the same binarization and samples as a single
device, and its parameters equal the single-device ones up to the order of float sums (tested on
4 forced host devices). Several hosts: call :func:`initialize_distributed` first on every host,
build the mesh over ``jax.devices()`` (all hosts' devices) and give :func:`shard_batch` each host's
slice of the global batch (:func:`process_batch_slice`).

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016 (Table 1 rows).
  Xu et al., GSPMD: General and Scalable Parallelization for ML Computation Graphs, 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from dgmjax import _checks, losses, objectives, training
from dgmjax.models import base as models_base

Array = jax.Array


# ----------------------------------------------------------------------------- stacking


def stack(trees: Sequence[Any]) -> Any:
  """Pytrees of equal structure -> one pytree with a leading run axis ``[R, ...]``.

  Raises:
    ValueError: ``trees`` empty, or two trees that differ in structure or in a leaf's shape (the
      message names the tree and the leaf).
  """
  trees = list(trees)
  if not trees:
    raise ValueError("trees must hold at least one pytree (one per run), got none")
  first, treedef = jax.tree_util.tree_flatten_with_path(trees[0])
  for r, tree in enumerate(trees[1:], 1):
    leaves, other = jax.tree_util.tree_flatten_with_path(tree)
    if other != treedef:
      raise ValueError(f"trees must share one structure: trees[{r}] is {other}, trees[0] is "
                       f"{treedef}")
    for (path, a), (_, b) in zip(first, leaves):
      if np.shape(a) != np.shape(b):
        raise ValueError(f"trees must have equal leaf shapes: leaf "
                         f"{jax.tree_util.keystr(path)} of trees[{r}] has shape {np.shape(b)}, "
                         f"of trees[0] {np.shape(a)}")
  return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def unstack(tree: Any) -> list:
  """Inverse of :func:`stack`: ``[R, ...]`` leaves -> ``R`` pytrees.

  Raises:
    ValueError: ``tree`` without array leaves, a leaf without a leading axis, or leaves whose
      leading (run) sizes differ (the message names the leaves and their sizes).
  """
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  if not leaves:
    raise ValueError("tree must hold at least one array leaf with a leading run axis, got none")
  sizes = {}
  for path, a in leaves:
    if np.ndim(a) < 1:
      raise ValueError(f"tree must have a leading run axis [R, ...] on every leaf: leaf "
                       f"{jax.tree_util.keystr(path)} is a scalar (shape {np.shape(a)})")
    sizes.setdefault(int(np.shape(a)[0]), jax.tree_util.keystr(path))
  if len(sizes) > 1:
    desc = ", ".join(f"{where or 'the root'} has {n}" for n, where in sizes.items())
    raise ValueError(f"tree must have one leading run size R on every leaf, got different "
                     f"sizes: {desc}")
  num = next(iter(sizes))
  if num < 1:
    raise ValueError("tree must hold at least one run (a leading size R >= 1), got R = 0")
  return [jax.tree.map(lambda a, i=i: a[i], tree) for i in range(num)]


def init_runs(params: Sequence[Any] | Any, optimizer: optax.GradientTransformation, *,
              stacked: bool = False) -> training.TrainState:
  """Stacked :class:`~dgmjax.training.TrainState` of ``R`` runs.

  Args:
    params: a sequence of ``R`` parameter pytrees, or (``stacked=True``) one pytree with a
      leading run axis.
    optimizer: the optimiser every run of the group uses.
    stacked: ``params`` is already stacked.

  Returns:
    A ``TrainState`` whose every leaf has a leading ``[R]`` axis.
  """
  _checks.check_bool("stacked", stacked)
  if not stacked and not list(params):
    raise ValueError("params must hold one parameter pytree per run, got none")
  p = params if stacked else stack(list(params))
  return jax.vmap(lambda q: training.init_state(q, optimizer))(p)


# ----------------------------------------------------------------------------- losses


def bounds_loss(model, bounds: Sequence[str], num_samples: int, **kwargs) -> Callable:
  """One loss for runs that differ only in their bound: ``loss(params, x, key, index)``.

  The log-weights ``[K, B]`` are computed once; ``index`` (traced, per run) selects the reduction
  ``bounds[index]``. For one bound the value, metrics and gradient are those of
  ``dgmjax.losses.make_loss(model, name, num_samples, **kwargs)`` (same key, same samples).

  .. math:: \\ell_r(\\theta) = -\\frac1B \\sum_b R_{o(r)}(\\log w_{1:K, b}), \\quad R_{\\mathrm{elbo}} = \\mathrm{mean}_k, \\; R_{\\mathrm{iwae}} = \\log \\mathrm{mean}_k \\exp

  Args:
    model: a contract model (:mod:`dgmjax.models.base`).
    bounds: names from ``dgmjax.losses.BOUND_ESTIMATORS`` (``elbo``, ``iwae``, ``miwae``,
      ``ciwae``, ``renyi``).
    num_samples: ``K``, shared by the runs.
    **kwargs: ``num_groups`` (MIWAE), ``beta`` (CIWAE).

  Returns:
    ``loss(params, x, key, index) -> (loss, {"bound", "elbo"})``.
  """
  names = tuple(bounds)
  bad = [n for n in names if n not in losses.BOUND_ESTIMATORS]
  if not names or bad:
    raise ValueError(f"bounds must be non-empty names from "
                     f"{losses.BOUND_ESTIMATORS}, got {bounds!r}")
  for n in names:  # validates K, num_groups, beta exactly as make_loss does
    losses.make_loss(model, n, num_samples, **kwargs)
  num_groups = int(kwargs.get("num_groups") or 1)
  reducers = {"elbo": objectives.elbo, "iwae": objectives.iwae_bound,
              "miwae": lambda lw: objectives.miwae_bound(lw, num_groups),
              "ciwae": lambda lw: objectives.ciwae_bound(lw, kwargs.get("beta")),
              "renyi": lambda lw: objectives.renyi_bound(lw, kwargs.get("alpha"))}

  def loss(params, x, key, index):
    lw = models_base.log_weights(model, params, x, key, num_samples)
    bounds = jnp.stack([jnp.mean(reducers[n](lw)) for n in names])
    bound = bounds[index] if len(names) > 1 else bounds[0]
    return -bound, {"bound": bound, "elbo": jnp.mean(objectives.elbo(lw))}

  return loss


# ----------------------------------------------------------------------------- runs side by side


def _runs_step(loss_fn: Callable, optimizer, *, dynamic_binarization: bool, with_index: bool):
  """The unjitted vmapped step of one group (see :func:`make_runs_train_step`)."""

  def one(state, images, seed, index):
    fn = (lambda p, x, k, step: loss_fn(p, x, k, index)) if with_index else loss_fn
    # make_train_step derives the step keys from `seed`: here a traced per-run value, so run r
    # gets exactly the keys of training.make_train_step(..., seed=seeds[r]).
    step = training.make_train_step(fn, optimizer, seed=seed,
                                    dynamic_binarization=dynamic_binarization)
    return step(state, images)

  def step(states, images, seeds, indices=None):
    seeds = jnp.asarray(seeds, jnp.int32)
    if indices is None:
      indices = jnp.zeros_like(seeds)
    return jax.vmap(one)(states, images, seeds, jnp.asarray(indices, jnp.int32))

  return step


def make_runs_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *,
                         dynamic_binarization: bool = False, with_index: bool = False):
  """``step(states[R], images[R, B, ...], seeds[R], indices[R]=None) -> (states, metrics[R])``.

  The training step of :func:`dgmjax.training.make_train_step` (value and gradient of
  ``loss_fn``, optimiser update, non-finite guard), ``jax.vmap``-ed over ``R`` independent runs and
  jitted once. Run ``r`` uses the step keys of ``seed=seeds[r]``, so it equals the run trained
  alone. Seeds are traced: changing them does not recompile.

  Args:
    loss_fn: ``(params, x, key, step) -> (loss, metrics)``, e.g. ``losses.make_loss(model,
      'iwae', K)``; with ``with_index=True``, ``(params, x, key, index)`` (e.g.
      :func:`bounds_loss`) and each run passes its ``indices[r]``.
    optimizer: the optimiser of every run (a schedule counts each run's own steps).
    dynamic_binarization: binarize each run's minibatch with its own key.
    with_index: pass each run's integer ``indices[r]`` to the loss.

  Returns:
    The jitted step; ``metrics`` are ``[R]`` arrays.
  """
  training.step.check_optimizer(optimizer)
  return jax.jit(_runs_step(loss_fn, optimizer, dynamic_binarization=dynamic_binarization,
                            with_index=with_index))


@dataclasses.dataclass(frozen=True)
class RunGroup:
  """Runs that share static shapes: one loss, one optimiser, one batch size.

  Attributes:
    loss_fn: ``(params, x, key, step)`` or, with ``with_index``, ``(params, x, key, index)``.
    optimizer: the optimiser of the group.
    with_index: the loss takes each run's index (e.g. :func:`bounds_loss`).
    dynamic_binarization: binarize each minibatch afresh.
  """
  loss_fn: Callable
  optimizer: Any
  with_index: bool = False
  dynamic_binarization: bool = False


def make_groups_train_step(groups: Sequence[RunGroup]):
  """One jitted step for several groups of runs (different ``K``, batch sizes, optimisers).

  ``step(states, images, seeds, indices) -> (states, metrics)`` where each argument is a tuple
  with one entry per group (``indices[g]`` may be None): the groups' vmapped steps are traced into
  one XLA program, so a whole table of models advances with one dispatch.

  Raises:
    ValueError: ``groups`` empty or holding something other than :class:`RunGroup`, or a
      group's optimiser that :func:`dgmjax.training.step.check_optimizer` refuses.
  """
  groups = list(groups)
  if not groups:
    raise ValueError("groups must hold at least one RunGroup, got none")
  for g, group in enumerate(groups):
    if not isinstance(group, RunGroup):
      raise _checks.ArgumentTypeError(f"groups[{g}] must be a RunGroup, got "
                                      f"{type(group).__name__} {group!r}")
    training.step.check_optimizer(group.optimizer)
  fns = [_runs_step(g.loss_fn, g.optimizer, dynamic_binarization=g.dynamic_binarization,
                    with_index=g.with_index) for g in groups]

  @jax.jit
  def step(states, images, seeds, indices):
    if not (len(states) == len(images) == len(seeds) == len(indices) == len(fns)):
      raise ValueError(f"states, images, seeds and indices need one entry per group "
                       f"({len(fns)}), got {len(states)}, {len(images)}, {len(seeds)}, "
                       f"{len(indices)}")
    outs = [f(s, x, sd, ix) for f, s, x, sd, ix in zip(fns, states, images, seeds, indices)]
    return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

  return step


def runs_batches(images: np.ndarray, seeds: Sequence[int], step: int, batch_size: int, *,
                 shuffle: bool = True) -> np.ndarray:
  """The minibatch of every run at ``step``: ``[R, B, ...]``, each exactly as
  :func:`dgmjax.training.fit` picks it for that run's seed (epoch order from ``(seed, epoch)``).

  Raises:
    ValueError: ``seeds`` empty or holding a seed that is not an int >= 0, ``step`` not an
      int >= 0, ``batch_size`` not an int >= 1 or larger than the training set.
  """
  seeds = [_checks.check_seed(f"seeds[{r}]", s) for r, s in enumerate(seeds)]
  if not seeds:
    raise ValueError("seeds must hold one seed per run, got none")
  step = _checks.check_int("step", step, minimum=0)
  batch_size = _checks.check_int("batch_size", batch_size, minimum=1)
  _checks.check_bool("shuffle", shuffle)
  n = np.shape(images)[0]
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ValueError(f"batch_size={batch_size} is larger than the training set ({n} examples)")
  epoch, i = divmod(int(step), steps_per_epoch)
  out = []
  for seed in seeds:
    order = training.epoch_order(n, epoch, int(seed), shuffle=shuffle)
    out.append(images[order[i * batch_size:(i + 1) * batch_size]])
  return np.stack(out)


# ----------------------------------------------------------------------------- data parallelism


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           local_device_ids: Sequence[int] | None = None) -> dict:
  """Connects the hosts of a multi-host job (``jax.distributed.initialize``); call it first,
  on every host, before any other JAX call.

  With no arguments JAX detects the cluster (Slurm, Open MPI, Kubernetes/GKE, Cloud TPU);
  otherwise pass ``coordinator_address="host0:1234"``, ``num_processes`` and ``process_id``
  (``0 .. num_processes-1``) on each host. Afterwards ``jax.devices()`` lists every host's devices:
  build one mesh over them with :func:`make_mesh`, and let each host load only its rows of the
  global batch (:func:`process_batch_slice`) and pass them to :func:`shard_batch`.

  Returns:
    ``{"process_index", "process_count", "local_devices", "global_devices"}``.
  """
  kwargs = {k: v for k, v in dict(coordinator_address=coordinator_address,
                                  num_processes=num_processes, process_id=process_id,
                                  local_device_ids=local_device_ids).items() if v is not None}
  jax.distributed.initialize(**kwargs)
  return {"process_index": jax.process_index(), "process_count": jax.process_count(),
          "local_devices": jax.local_device_count(), "global_devices": jax.device_count()}


def make_mesh(num_data: int | None = None, num_samples: int = 1, *,
              devices: Sequence[Any] | None = None) -> Mesh:
  """A ``Mesh`` with axes ``("data", "samples")`` of shape ``(num_data, num_samples)``.

  Args:
    num_data: devices along the batch axis (default: all devices / ``num_samples``).
    num_samples: devices along the importance-sample axis (1: data parallelism only).
    devices: the devices (default ``jax.devices()``: every host's after
      :func:`initialize_distributed`).
  """
  devices = list(jax.devices() if devices is None else devices)
  num_samples = _checks.check_int("num_samples", num_samples, minimum=1)
  if num_data is not None:
    num_data = _checks.check_int("num_data", num_data, minimum=1)
  if len(devices) % num_samples:
    raise ValueError(f"num_samples={num_samples} must be >= 1 and divide the number of devices "
                     f"({len(devices)})")
  if num_data is None:
    num_data = len(devices) // num_samples
  if num_data < 1 or num_data * num_samples > len(devices):
    raise ValueError(f"num_data * num_samples = {num_data} * {num_samples} exceeds the "
                     f"{len(devices)} devices")
  grid = np.asarray(devices[:num_data * num_samples], dtype=object).reshape(num_data, num_samples)
  return Mesh(grid, ("data", "samples"))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Batch axis (axis 0) split along ``"data"``, other axes whole."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full array on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def process_batch_slice(global_batch_size: int) -> slice:
  """The rows of a global batch that this host loads (hosts in ``process_index`` order).

  Raises:
    ValueError: ``global_batch_size`` not an int >= 1, or not divisible by the number of
      processes.
  """
  global_batch_size = _checks.check_int("global_batch_size", global_batch_size, minimum=1)
  count, index = jax.process_count(), jax.process_index()
  if global_batch_size % count:
    raise ValueError(f"global_batch_size={global_batch_size} must be divisible by the number of "
                     f"processes ({count})")
  per = global_batch_size // count
  return slice(index * per, (index + 1) * per)


def shard_batch(images, mesh: Mesh) -> Array:
  """A minibatch as a global array sharded along ``"data"``.

  Single host: ``images`` is the whole batch ``[B, ...]``. Several hosts: ``images`` is this host's
  rows (:func:`process_batch_slice`) and the global array is assembled from every host's part.
  ``B`` must be divisible by the ``"data"`` size.
  """
  sharding = data_sharding(mesh)
  local = np.asarray(images)
  size = mesh.shape["data"]
  if jax.process_count() == 1:
    if local.shape[0] % size:
      raise ValueError(f"images has batch size {local.shape[0]}, not divisible by the mesh's "
                       f"'data' axis ({size})")
    return jax.device_put(local, sharding)
  global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
  if global_shape[0] % size:
    raise ValueError(f"global batch {global_shape[0]} is not divisible by the mesh's 'data' axis "
                     f"({size})")
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of ``tree`` (params, optimiser state) whole on every device of ``mesh``."""
  return jax.device_put(tree, replicated(mesh))


@dataclasses.dataclass(frozen=True)
class SampleSharded(models_base.LatentModel):
  """A contract model whose importance samples are split along the mesh's ``"samples"`` axis.

  The contract functions are the wrapped model's; the generic log-weights
  (:func:`dgmjax.models.log_weights` and every loss and evaluator built on them) call its
  ``shard_keys`` and ``shard_log_weights``, which constrain the per-sample keys ``[K]`` to
  ``P("samples")`` and the log-weights ``[K, B]`` to ``P("samples", "data")``, so XLA partitions
  the per-sample layers over both axes. Values equal the wrapped model's (sample ``k`` depends on
  ``keys[k]`` only).

  Attributes:
    model: a contract model.
    mesh: a mesh from :func:`make_mesh`; ``K`` must be divisible by its ``"samples"`` size.
  """
  model: Any
  mesh: Mesh

  @property
  def data_support(self):
    """The wrapped model's."""
    return getattr(self.model, "data_support", None)

  def __post_init__(self):
    models_base.check_contract(self.model)

  def __getattr__(self, name):  # the wrapped model's optional functions and attributes
    if name.startswith("_") or name in ("model", "mesh"):
      raise AttributeError(name)
    return getattr(object.__getattribute__(self, "model"), name)

  def sample_q(self, params, x, key):
    return self.model.sample_q(params, x, key)

  def sample_and_log_q(self, params, x, key):
    return models_base.draw_and_log_q(self.model, params, x, key)

  def log_q(self, params, x, z):
    return self.model.log_q(params, x, z)

  def log_prior(self, params, z):
    return self.model.log_prior(params, z)

  def log_likelihood(self, params, x, z):
    return self.model.log_likelihood(params, x, z)

  def shard_keys(self, keys: Array) -> Array:
    """``keys`` ``[K]`` constrained to ``P("samples")`` (``K`` divisible by its size)."""
    size = self.mesh.shape["samples"]
    if keys.shape[0] % size:
      raise ValueError(f"num_samples={keys.shape[0]} must be divisible by the mesh's 'samples' "
                       f"axis ({size})")
    return jax.lax.with_sharding_constraint(keys, NamedSharding(self.mesh, P("samples")))

  def shard_log_weights(self, log_w: Array) -> Array:
    """``log_w`` ``[K, B]`` constrained to ``P("samples", "data")``."""
    return jax.lax.with_sharding_constraint(log_w, NamedSharding(self.mesh, P("samples", "data")))


def make_sharded_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation,
                            mesh: Mesh, *, seed: int, dynamic_binarization: bool = False):
  """:func:`dgmjax.training.make_train_step` with the batch sharded along ``mesh``'s ``"data"``.

  ``step(state, images) -> (state, metrics)``: the state is replicated, ``images`` is placed with
  :func:`shard_batch` (pass an already sharded global array on several hosts). XLA partitions the
  step (GSPMD): each device runs its share of the batch (and of the samples, with a
  :class:`SampleSharded` model in ``loss_fn``), and the gradient mean becomes an all-reduce. The
  result equals the single-device step up to the order of float sums.

  Args:
    loss_fn: ``(params, x, key, step) -> (loss, metrics)``, e.g. ``losses.make_loss(model,
      'iwae', K)`` or ``losses.make_loss(SampleSharded(model, mesh), 'iwae', K)``.
    optimizer: an optax transformation.
    mesh: from :func:`make_mesh`.
    seed: as for ``make_train_step`` (the same step keys as a single-device run).
    dynamic_binarization: binarize each minibatch afresh.

  Returns:
    The step function (jitted once; state and metrics come back replicated).
  """
  inner = training.make_train_step(loss_fn, optimizer, seed=seed,
                                   dynamic_binarization=dynamic_binarization)
  rep, dat = replicated(mesh), data_sharding(mesh)
  jitted = jax.jit(inner, in_shardings=(rep, dat), out_shardings=(rep, rep))

  def step(state, images):
    if not (isinstance(images, jax.Array) and images.sharding == dat):
      images = shard_batch(images, mesh)
    return jitted(state, images)

  step.jitted = jitted
  return step


#: The public API of this module.
__all__ = [
    "stack", "unstack", "init_runs", "bounds_loss",
    "make_runs_train_step", "RunGroup", "make_groups_train_step", "runs_batches",
    "initialize_distributed", "make_mesh", "data_sharding", "replicated", "process_batch_slice",
    "shard_batch", "replicate", "SampleSharded", "make_sharded_train_step",
]
