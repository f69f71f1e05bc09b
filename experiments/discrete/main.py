"""Discrete latents: categorical VAE (Gumbel-softmax), VQ-VAE / VQ-VAE-2 with PixelCNN priors.

python -m experiments.discrete.main --config=experiments/discrete/configs/categorical.py \\
    --workdir=runs/categorical
python -m experiments.discrete.main --config=experiments/discrete/configs/vqvae.py --workdir=runs/vq
python -m experiments.discrete.main --config=experiments/discrete/configs/codebook.py \\
    --workdir=runs/codebook
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.common import config as common
from experiments.discrete import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and figures.")
flags.DEFINE_bool("resume", False, "Continue from the latest checkpoints in --workdir.")
flags.DEFINE_bool("allow_config_change", False,
                  "With --resume: continue although training settings differ from the saved "
                  "config.json (the changes are recorded there under resume_changes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  out = train.run(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
      allow_config_change=FLAGS.allow_config_change)
  if "stopped_at" in out:
    print(f"stopped at step {out['stopped_at']}")
    return
  print(train.format_summary(out))
  print(f"results and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
