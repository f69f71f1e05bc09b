"""Burda et al.'s MNIST experiments (Table 1), one row per config string.

``--config=experiments/iwae/configs/mnist.py:<objective>-k<K>-l<layers>-<budget>``, e.g.
``iwae-k50-l1-full``. ``objective`` in {vae, iwae}; ``K`` in {1, 5, 50}; ``layers`` in {1, 2};
``budget``: ``full`` is Burda's 3280 epochs (8 passes of 3^i epochs, lr 1e-3 * 10^(-i/7)); ``short``
is the first 3 passes of that schedule (1 + 3 + 9 = 13 epochs, exactly Burda's first 13 epochs);
``e<N>`` is N epochs at the first 3 passes' shape scaled to N.
Append ``-ref`` to use the reference code's Adam variant and rounded learning rates.
"""

from experiments.iwae.configs import default


def get_config(arg: str = "iwae-k5-l1-short"):
  parts = arg.split("-")
  ref = parts[-1] == "ref"
  if ref:
    parts = parts[:-1]
  if len(parts) != 4 or parts[0] not in ("vae", "iwae") or not parts[1].startswith("k") \
      or parts[2] not in ("l1", "l2"):
    raise ValueError(f"config string must look like 'iwae-k50-l1-short', got {arg!r}")
  c = default.get_config()
  c.dataset = "mnist"
  c.objective = parts[0]
  c.num_samples = int(parts[1][1:])
  c.model = "burda1" if parts[2] == "l1" else "burda2"
  budget = parts[3]
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
    c.num_epochs = float(budget[1:])
    c.checkpoint_every_epochs = 1.0
  else:
    raise ValueError(f"budget must be full, short or e<N>, got {budget!r}")
  c.log_every_steps = 298          # 10 lines per epoch of 2980 steps
  if ref:
    c.optimizer = "burda_adam"
    c.reference_rounding = True
  return c
