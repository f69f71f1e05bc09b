"""Learnable priors (MoG, VampPrior, RealNVP, MAF) and an IAF posterior on a VAE, with ELBO surgery.

python -m experiments.priors.main --config=experiments/priors/configs/quick.py --workdir=/tmp/priors
python -m experiments.priors.main --config=experiments/priors/configs/mnist.py:vamp \\
    --workdir=/tmp/priors_mnist
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.common import config as common
from experiments.priors import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results and figures (one subfolder per "
                    "variant).")
flags.DEFINE_bool("resume", False, "Continue each training from its latest checkpoint in --workdir.")
flags.DEFINE_bool("allow_config_change", False,
                  "With --resume: continue although settings differ from the saved config.json "
                  "(the changes are recorded there under resume_changes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
                                     allow_config_change=FLAGS.allow_config_change)
  if "stopped_at" in results:
    print(f"stopped at step {results['stopped_at']} of {results['variant']}")
    return
  print(train.format_table(results))
  print(f"results and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
