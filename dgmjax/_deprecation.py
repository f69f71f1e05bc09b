"""Old names that keep working for one release, with a ``DeprecationWarning``.

The public vocabulary (see the API reference's conventions): a *bound* is what is estimated
(``elbo``, ``iwae``, ...), an *estimator* is how its gradient is taken. Names from before that rule
map onto it here, in one place, so each shim warns the same way and is removed in one change.
"""

from __future__ import annotations

import warnings

from dgmjax import _checks

#: Old bound names and their current ones ("vae" and "elbo" named the same bound).
BOUND_ALIASES = {"vae": "elbo"}


def warn(message: str, stacklevel: int = 3) -> None:
  """Emits a ``DeprecationWarning`` pointing at the caller's caller."""
  warnings.warn(message + " (it will be removed in the next release)", DeprecationWarning,
                stacklevel=stacklevel)


def bound_name(name, argument: str, stacklevel: int = 4):
  """``name`` with a deprecated alias (``'vae'``) replaced by its current name, warning once."""
  if isinstance(name, str) and name in BOUND_ALIASES:
    new = BOUND_ALIASES[name]
    warn(f"{argument}={name!r} is deprecated: use {new!r} (the same bound)", stacklevel)
    return new
  return name


def renamed_kwarg(new_value, old_value, *, new: str, old: str, stacklevel: int = 4):
  """The value of a keyword renamed from ``old`` to ``new``: ``old``'s (with a warning) if given.

  Raises:
    TypeError: both keywords given.
  """
  if old_value is None:
    return new_value
  if new_value is not None:
    raise TypeError(f"got both {new}= and its deprecated name {old}=; pass {new}= only")
  warn(f"the keyword {old}= is deprecated: use {new}=", stacklevel)
  return old_value


def key_last(name: str, *args, stacklevel: int = 4):
  """``args`` (in the current order, the key last) from a call in the old, key-first order.

  Functions of parameters take ``params`` first and the key after the data
  (``prior.sample(params, key, num)``); before that rule some took the key first
  (``prior.sample(key, params, num)``). A call whose first argument is a key and whose last is not
  is such an old call: its key is moved last, with a ``DeprecationWarning``. Parameters are
  pytrees, never a bare key, so the two orders cannot be confused.

  Args:
    name: the function, for the warning (``'StandardNormal.sample'``).
    *args: the arguments bound to ``(params, ..., key)`` of the current signature.

  Returns:
    ``args`` in the current order (unchanged for a current call).
  """
  if len(args) >= 2 and _checks.is_key(args[0]) and not _checks.is_key(args[-1]):
    order = ", ".join(["key"] + ["..."] * (len(args) - 1))
    warn(f"{name}({order}) with the key first is deprecated: pass the key after the parameters "
         f"and data, {name}(params, ..., key)", stacklevel)
    return args[1:] + args[:1]
  return args
