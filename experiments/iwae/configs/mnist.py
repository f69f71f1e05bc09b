"""Burda et al.'s MNIST experiments (Table 1) and Rainforth et al.'s objectives, one per string.

``--config=experiments/iwae/configs/mnist.py:<objective>[-m<M>|-b<beta>]-k<K>-l<layers>-<budget>``,
e.g. ``iwae-k50-l1-full``, ``miwae-m8-k8-l1-e3``, ``ciwae-b0.05-k64-l1-e3``.

* ``objective``: ``vae``, ``iwae``; ``dreg`` (DReG for the encoder, IWAE for the decoder);
  ``miwae``, ``piwae``, ``piwae_dreg`` (need ``m<M>``: ``M`` groups of ``K``, so ``M * K`` samples
  in all); ``ciwae`` (needs ``b<beta>``: ``beta * ELBO + (1 - beta) * IWAE`` on ``K`` samples);
  ``stl``, ``rws``, ``rws_dreg``.
* ``K`` in {1, 5, 50} for Burda's table (any positive int works); ``layers`` in {1, 2}.
* ``budget``: ``full`` is Burda's 3280 epochs (8 passes of 3^i epochs, lr 1e-3 * 10^(-i/7));
  ``short`` is the first 3 passes of that schedule (1 + 3 + 9 = 13 epochs, exactly Burda's first
  13 epochs); ``e<N>`` is N epochs at the first 3 passes' shape scaled to N.

Append ``-ref`` to use the reference code's Adam variant and rounded learning rates.
"""

import ml_collections

from experiments.iwae.configs import default

OBJECTIVES = ("vae", "iwae", "dreg", "miwae", "piwae", "piwae_dreg", "ciwae", "stl", "rws",
              "rws_dreg")
GROUPED = ("miwae", "piwae", "piwae_dreg")

_FORMAT = ("config string must look like 'iwae-k50-l1-short', 'miwae-m8-k8-l1-e3' or "
           "'ciwae-b0.05-k64-l1-e3'")


def _number(token: str, cast, arg: str):
  try:
    return cast(token[1:])
  except ValueError:
    raise ValueError(f"{_FORMAT}; cannot read {token!r} in {arg!r}") from None


def get_config(arg: str = "iwae-k5-l1-short"):
  parts = arg.split("-")
  ref = parts[-1] == "ref"
  if ref:
    parts = parts[:-1]
  if len(parts) < 4 or parts[0] not in OBJECTIVES or parts[-2] not in ("l1", "l2"):
    raise ValueError(f"{_FORMAT}, with objective in {OBJECTIVES}; got {arg!r}")
  objective, extra, budget = parts[0], parts[1:-2], parts[-1]
  m = beta = k = None
  for token in extra:
    if token.startswith("k") and k is None:
      k = _number(token, int, arg)
    elif token.startswith("m") and m is None and objective in GROUPED:
      m = _number(token, int, arg)
    elif token.startswith("b") and beta is None and objective == "ciwae":
      beta = _number(token, float, arg)
    else:
      raise ValueError(f"{_FORMAT}; unexpected {token!r} for objective {objective!r} in {arg!r}")
  if k is None or k < 1:
    raise ValueError(f"{_FORMAT}; the number of samples k<K> (K >= 1) is missing in {arg!r}")
  if objective in GROUPED and (m is None or m < 1):
    raise ValueError(f"objective {objective!r} needs the number of groups m<M> (M >= 1), e.g. "
                     f"'{objective}-m8-k8-l1-e3'; got {arg!r}")
  if objective == "ciwae" and (beta is None or not 0.0 <= beta <= 1.0):
    raise ValueError(f"objective 'ciwae' needs b<beta> with beta in [0, 1], e.g. "
                     f"'ciwae-b0.05-k64-l1-e3'; got {arg!r}")

  c = default.get_config()
  c.dataset = "mnist"
  c.objective = objective
  c.num_samples = k * (m or 1)    # M * K samples in all for the grouped objectives
  c.num_groups = ml_collections.config_dict.placeholder(int)
  c.beta = ml_collections.config_dict.placeholder(float)
  if m is not None:
    c.num_groups = m
  if beta is not None:
    c.beta = beta
  c.model = "burda1" if parts[-2] == "l1" else "burda2"
  c.schedule = "burda"
  if budget == "full":
    c.num_passes = 8
    c.num_epochs = 0.0
    c.checkpoint_every_epochs = 9.0
    c.validate_at_checkpoints = True
  elif budget == "short":
    c.num_passes = 3
    c.num_epochs = 0.0
    c.checkpoint_every_epochs = 1.0
  elif budget.startswith("e"):
    c.num_passes = 3
    c.num_epochs = _number(budget, float, arg)
    c.checkpoint_every_epochs = 1.0
  else:
    raise ValueError(f"budget must be full, short or e<N>, got {budget!r}")
  c.log_every_steps = 298          # 10 lines per epoch of 2980 steps
  if ref:
    c.optimizer = "burda_adam"
    c.reference_rounding = True
  return c
