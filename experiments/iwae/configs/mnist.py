"""Burda et al.'s MNIST experiments (Table 1) and Rainforth et al.'s objectives, one per string.

``--config=experiments/iwae/configs/mnist.py:<name>[-m<M>|-b<beta>]-k<K>-l<layers>-<budget>``,
e.g. ``iwae-k50-l1-full``, ``miwae-m8-k8-l1-e3``, ``ciwae-b0.05-k64-l1-e3``.

* ``name`` (the run's name; it sets ``config.estimator``): ``vae`` (estimator ``elbo``, the
  ``K``-sample ELBO average), ``iwae``; ``dreg`` (DReG for the encoder, IWAE for the decoder);
  ``miwae``, ``piwae``, ``piwae_dreg`` (need ``m<M>``: ``M`` groups of ``K``, so ``M * K``
  samples in all); ``ciwae`` (needs ``b<beta>``: ``beta * ELBO + (1 - beta) * IWAE`` on ``K``
  samples); ``stl``, ``rws``, ``rws_dreg``.
* ``K`` in {1, 5, 50} for Burda's table (any positive int works); ``layers`` in {1, 2}.
* ``budget``: ``full`` is Burda's 3280 epochs (8 passes of 3^i epochs, lr 1e-3 * 10^(-i/7));
  ``short`` is the first 3 passes of that schedule (1 + 3 + 9 = 13 epochs, exactly Burda's first
  13 epochs); ``e<N>`` is N > 0 epochs at the first 3 passes' shape scaled to N.

Append ``-ref`` to use the reference code's Adam variant and rounded learning rates. The string is
parsed strictly: an unknown or malformed part raises ``ValueError`` listing the valid forms.
"""

import ml_collections

from experiments.common import config as common
from experiments.iwae.configs import default

#: Run names of the config string; each names the training estimator (``vae``: ``elbo``).
OBJECTIVES = ("vae", "iwae", "dreg", "miwae", "piwae", "piwae_dreg", "ciwae", "stl", "rws",
              "rws_dreg")
GROUPED = ("miwae", "piwae", "piwae_dreg")
#: The estimator each run name trains with (``dgmjax.training.make_loss``).
ESTIMATOR_OF = {name: common.VALUE_ALIASES.get(name, name) for name in OBJECTIVES}

FORMS = (f"'<name>[-m<M>][-b<beta>]-k<K>-l<1|2>-<full|short|e<N>>[-ref]' with name in "
         f"{OBJECTIVES}, K >= 1, m<M> (M >= 1) for {GROUPED} only, b<beta> (beta in [0, 1]) for "
         f"ciwae only, N > 0 epochs; e.g. 'iwae-k50-l1-short', 'miwae-m8-k8-l1-e3', "
         f"'ciwae-b0.05-k64-l1-e3', 'vae-k1-l2-full-ref'")


def _error(arg: str, why: str) -> ValueError:
  return common.config_string_error(arg, FORMS, why)


def get_config(arg: str = "iwae-k5-l1-short"):
  parts = arg.split("-")
  ref = parts[-1] == "ref"
  if ref:
    parts = parts[:-1]
  if len(parts) < 4:
    raise _error(arg, "too few parts")
  name, extra, layers, budget = parts[0], parts[1:-2], parts[-2], parts[-1]
  if name not in OBJECTIVES:
    raise _error(arg, f"unknown name {name!r}")
  if layers not in ("l1", "l2"):
    raise _error(arg, f"the number of stochastic layers must be l1 or l2, got {layers!r}")
  m = beta = k = None
  for token in extra:
    if token.startswith("k") and k is None:
      k = common.parse_number(token[1:], int, what="K in k<K>", arg=arg, forms=FORMS, minimum=0)
    elif token.startswith("m") and m is None and name in GROUPED:
      m = common.parse_number(token[1:], int, what="M in m<M>", arg=arg, forms=FORMS, minimum=0)
    elif token.startswith("b") and beta is None and name == "ciwae":
      beta = common.parse_number(token[1:], float, what="beta in b<beta>", arg=arg, forms=FORMS,
                                 minimum=0.0, strict=False)
      if beta > 1.0:
        raise _error(arg, f"beta in b<beta> must be in [0, 1], got {token[1:]!r}")
    else:
      raise _error(arg, f"unexpected {token!r} for {name!r} (a repeated or misplaced part)")
  if k is None:
    raise _error(arg, "the number of samples k<K> is missing")
  if name in GROUPED and m is None:
    raise _error(arg, f"{name!r} needs the number of groups m<M>")
  if name == "ciwae" and beta is None:
    raise _error(arg, "'ciwae' needs b<beta>")
  if budget not in ("full", "short") and not budget.startswith("e"):
    raise _error(arg, f"the budget must be full, short or e<N>, got {budget!r}")
  num_epochs = (common.parse_epochs(budget[1:], arg=arg, forms=FORMS, what="N in e<N>")
                if budget.startswith("e") else 0.0)

  c = default.get_config()
  c.dataset = "mnist"
  c.estimator = ESTIMATOR_OF[name]
  c.num_samples = k * (m or 1)    # M * K samples in all for the grouped estimators
  c.num_groups = ml_collections.config_dict.placeholder(int)
  c.beta = ml_collections.config_dict.placeholder(float)
  if m is not None:
    c.num_groups = m
  if beta is not None:
    c.beta = beta
  c.model = "burda1" if layers == "l1" else "burda2"
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
  else:  # e<N>
    c.num_passes = 3
    c.num_epochs = num_epochs
    c.checkpoint_every_epochs = 1.0
  c.log_every_steps = 298          # 10 lines per epoch of 2980 steps
  if ref:
    c.optimizer = "burda_adam"
    c.reference_rounding = True
  return c
