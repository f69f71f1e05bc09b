"""Old names that keep working for one release, with a ``DeprecationWarning``.

The public vocabulary (see the API reference's conventions): a *bound* is what is estimated
(``elbo``, ``iwae``, ...), an *estimator* is how its gradient is taken. Names from before that rule
map onto it here, in one place, so each shim warns the same way and is removed in one change.
"""

from __future__ import annotations

import warnings

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
