"""Learning-rate schedules and optimisers: Burda et al.'s passes of ``3^i`` epochs, their Adam.

The schedules are optax schedules of the optimiser's step count; :func:`make_optimizer` names the
two optimisers of the studies (``'adam'``, ``'burda_adam'``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dgmjax import _checks

Array = jax.Array


def burda_epochs(num_passes: int = 8) -> list[int]:
  """Epochs of each pass of Burda et al.'s schedule: ``3^i`` for ``i = 0 .. num_passes-1``.

  Raises:
    ValueError: ``num_passes`` not an int >= 1 (a bool or float is an ``ArgumentTypeError``).
  """
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  return [3**i for i in range(num_passes)]


def burda_learning_rates(num_passes: int = 8, *, reference_rounding: bool = False) -> list[float]:
  """Learning rate of each pass: ``1e-3 * 10^(-i/7)``.

  With ``reference_rounding`` the rates are those of the reference code,
  ``1e-4 * round(10^(1 - i/7), 1)`` (``1e-3, 7.2e-4, 5.2e-4, ...``).

  Raises:
    ValueError: ``num_passes`` not an int >= 1, or ``reference_rounding`` not a bool.
  """
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  reference_rounding = _checks.check_bool("reference_rounding", reference_rounding)
  if reference_rounding:
    return [1e-4 * round(10.0 ** (1 - i / 7.0), 1) for i in range(num_passes)]
  return [1e-3 * 10.0 ** (-i / 7.0) for i in range(num_passes)]


def burda_schedule(steps_per_epoch: int, num_passes: int = 8, *, num_epochs: float | None = None,
                   base_learning_rate: float = 1e-3,
                   reference_rounding: bool = False) -> optax.Schedule:
  """Burda et al.'s piecewise-constant schedule in steps: pass ``i`` lasts ``3^i`` epochs.

  .. math:: \\eta_i = 10^{-3} \\cdot 10^{-i/7} \\text{ for } 3^i \\text{ epochs}, \\quad i = 0, \\dots, 7

  Eight passes make 3280 epochs. A shorter budget keeps the shape: either fewer passes
  (``num_passes=3`` is 13 epochs), or ``num_epochs`` which scales every pass by
  ``num_epochs / sum_i 3^i`` (each pass keeps at least one step).

  Args:
    steps_per_epoch: optimiser steps per epoch.
    num_passes: number of passes ``i = 0 .. num_passes - 1``.
    num_epochs: total budget in epochs; default ``sum_i 3^i`` (the paper's).
    base_learning_rate: the rate of pass 0 (``1e-3``); pass ``i`` uses ``base * 10^(-i/7)``.
    reference_rounding: use the reference code's rounded rates.

  Returns:
    An optax schedule of the step count.

  References:
    Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016, Section 5.
  """
  steps_per_epoch = _checks.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  if num_epochs is not None:
    num_epochs = _checks.check_real("num_epochs", num_epochs, minimum=0.0, strict_minimum=True)
  check_learning_rate(base_learning_rate, "base_learning_rate")
  reference_rounding = _checks.check_bool("reference_rounding", reference_rounding)
  rates = [r * base_learning_rate / 1e-3
           for r in burda_learning_rates(num_passes, reference_rounding=reference_rounding)]
  epochs = np.asarray(burda_epochs(num_passes), np.float64)
  if num_epochs is not None:
    if num_epochs <= 0:
      raise ValueError(f"num_epochs must be > 0, got {num_epochs}")
    epochs = epochs * (num_epochs / epochs.sum())
  bounds = [int(b) for b in np.round(np.cumsum(epochs)[:-1] * steps_per_epoch)]
  for i in range(len(bounds)):  # every pass keeps >= 1 step
    bounds[i] = max(bounds[i], (bounds[i - 1] if i else 0) + 1)
  return optax.join_schedules([optax.constant_schedule(r) for r in rates], bounds)


def burda_num_steps(steps_per_epoch: int, num_passes: int = 8, *,
                    num_epochs: float | None = None) -> int:
  """Total steps of :func:`burda_schedule` with the same arguments."""
  steps_per_epoch = _checks.check_int("steps_per_epoch", steps_per_epoch, minimum=1)
  num_passes = _checks.check_int("num_passes", num_passes, minimum=1)
  if num_epochs is not None:
    num_epochs = _checks.check_real("num_epochs", num_epochs, minimum=0.0, strict_minimum=True)
  total = num_epochs if num_epochs is not None else sum(burda_epochs(num_passes))
  return max(int(round(total * steps_per_epoch)), num_passes)


class BurdaAdamState(NamedTuple):
  """State of :func:`burda_adam`: timestep (starts at 1), first and second moments."""
  count: Array
  mu: Any
  nu: Any


def burda_adam(learning_rate, b1: float = 0.99, b2: float = 0.999,
               eps: float = 1e-4) -> optax.GradientTransformation:
  """The Adam variant of Burda et al.'s reference code, as an optax transformation.

  Second moments start at one, first moments at zero, the timestep at one; ``eps`` is added to
  ``sqrt(v)``. Theano applied all updates of a step simultaneously, so the parameter step of step
  ``t`` uses the moments *before* this step's update (the first step therefore does not move):

  .. math:: \\theta_t = \\theta_{t-1} - \\alpha_t \\frac{m_{t-1}}{\\sqrt{v_{t-1}} + \\epsilon}, \\quad \\alpha_t = \\eta_t \\frac{\\sqrt{1 - \\beta_2^t}}{1 - \\beta_1^t}

  Args:
    learning_rate: a float or an optax schedule of the step count (from 0), checked by
      :func:`check_learning_rate` (a schedule may start at 0, as a warmup does).
    b1, b2: moment decay rates, in ``[0, 1)``.
    eps: added to ``sqrt(v)``, finite and ``>= 0``.

  Raises:
    ValueError: a learning rate that is not finite and > 0, or a decay rate or ``eps`` out of
      range; each message names the argument.

  References:
    Burda et al., ICLR 2016, reference implementation (``optimizers.py`` of yburda/iwae).
  """
  check_learning_rate(learning_rate)
  for name, value in (("b1", b1), ("b2", b2)):
    if _checks.check_real(name, value, minimum=0.0) >= 1.0:
      raise ValueError(f"{name} must be a finite number in [0, 1) (a moment decay rate), got "
                       f"{value!r}")
  _checks.check_real("eps", eps, minimum=0.0)

  def init(params):
    return BurdaAdamState(jnp.ones([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                          jax.tree.map(jnp.ones_like, params))

  def update(grads, state, params=None):
    del params
    t = state.count.astype(jnp.result_type(float))  # float64 under x64
    lr = learning_rate(state.count - 1) if callable(learning_rate) else learning_rate
    alpha = lr * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    updates = jax.tree.map(lambda m, v: (-alpha * m / (jnp.sqrt(v) + eps)).astype(m.dtype),
                           state.mu, state.nu)
    mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * jnp.square(g), state.nu, grads)
    return updates, BurdaAdamState(state.count + 1, mu, nu)

  return optax.GradientTransformation(init, update)


#: Steps at which :func:`check_learning_rate` evaluates a schedule.
_PROBE_STEPS = (0, 1, 2, 3, 10, 100, 1_000, 10_000, 100_000)


def check_learning_rate(learning_rate, name: str = "learning_rate") -> None:
  """A learning rate (a number or an optax schedule of the step) must be finite and > 0.

  A number must be finite and ``> 0``. A schedule is evaluated at the steps
  ``0, 1, 2, 3, 10, 100, 1000, 10^4, 10^5``: every value must be finite and ``>= 0`` and at least
  one ``> 0``, so a warmup that starts at 0 (``optax.linear_schedule(0.0, peak, n)``, optax's
  idiom) is accepted, while a schedule that is negative, NaN or zero at every one of those steps
  is refused. Between and beyond those steps a schedule (a function of a traced step) cannot be
  seen. A rate inside an optax transformation is checked by
  :func:`dgmjax.training.step.check_optimizer`, where it can be seen.

  Raises:
    ValueError: naming ``name``, the value given and (for a schedule) the step.
  """
  if callable(learning_rate):
    values = []
    for step in _PROBE_STEPS:
      v = _rate_value(learning_rate(step), name, learning_rate)
      if not (np.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number > 0 at every step (a schedule may start "
                         f"at 0, as a warmup does), got a schedule whose value at step {step} is "
                         f"{v!r}")
      values.append(v)
    if not any(v > 0 for v in values):
      raise ValueError(f"{name} must be a finite number > 0 at some step, got a schedule that "
                       f"is 0 at steps {', '.join(map(str, _PROBE_STEPS))}: training would "
                       f"never move")
    return
  v = _rate_value(learning_rate, name, learning_rate)
  if not (np.isfinite(v) and v > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def _rate_value(value, name: str, given) -> float:
  """One learning rate as a float, or a ValueError naming ``name``."""
  if isinstance(value, (bool, np.bool_, str, bytes)):
    raise ValueError(f"{name} must be a finite number > 0, got {type(value).__name__} {value!r}")
  try:
    arr = np.asarray(value)
    if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
      raise TypeError
    return float(arr.reshape(()))
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be a finite number > 0 (or a schedule giving one), got "
                     f"{given!r}") from None


def make_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
  """``'adam'`` (stock optax Adam with Burda's b1=0.9, b2=0.999, eps=1e-4) or ``'burda_adam'``.

  Raises:
    ValueError: an unknown name, or a learning rate that is not a finite number > 0.
  """
  check_learning_rate(learning_rate)
  if name == "adam":
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-4)
  if name == "burda_adam":
    return burda_adam(learning_rate)
  raise ValueError(f"optimizer must be 'adam' or 'burda_adam', got {name!r}")
