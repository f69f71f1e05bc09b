"""Train and evaluate a VAE / IWAE (Burda et al. 2016, Table 1).

python -m experiments.iwae.main --config=experiments/iwae/configs/quickstart.py --workdir=/tmp/qs
python -m experiments.iwae.main --config=experiments/iwae/configs/mnist.py:iwae-k50-l1-short \\
    --workdir=/tmp/iwae-k50-l1-short [--resume] [--config.eval.sample_chunk=250]
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.common import burda
from experiments.common import config as common
from experiments.iwae import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, results and figures.")
flags.DEFINE_bool("resume", False, "Continue from the latest checkpoint in --workdir.")
flags.DEFINE_bool("allow_config_change", False,
                  "With --resume: continue although training settings differ from the saved "
                  "config.json (the changes are recorded there under resume_changes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  results = burda.train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
      allow_config_change=FLAGS.allow_config_change)
  if "stopped_at" in results:
    print(f"stopped at step {results['stopped_at']}")
    return
  print(train.format_results(results))
  print(f"results, figures and checkpoints in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
