"""Posterior collapse with PixelCNN decoders, and its remedies (KL annealing, free bits, weak decoder).

python -m experiments.posterior_collapse.main \\
    --config=experiments/posterior_collapse/configs/quick.py --workdir=/tmp/collapse
python -m experiments.posterior_collapse.main \\
    --config=experiments/posterior_collapse/configs/default.py --workdir=runs/collapse
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.common import config as common
from experiments.posterior_collapse import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py[:runs]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and figures "
                    "(one subfolder per run).")
flags.DEFINE_bool("resume", False, "Continue each run from its latest checkpoint in --workdir.")
flags.DEFINE_bool("allow_config_change", False,
                  "With --resume: continue although training settings differ from the saved "
                  "config.json (the changes are recorded there under resume_changes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  out = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
      allow_config_change=FLAGS.allow_config_change)
  if "stopped_at" in out:
    print(f"stopped at step {out['stopped_at']} of run {out['run']}")
    return
  print(train.format_table(out))
  print(f"results and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
