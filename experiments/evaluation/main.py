"""How far the k=5000 estimate understates log p(x): IS, JVI, AIS and BDMC on the Table 1 models.

python -m experiments.evaluation.main --config=experiments/evaluation/configs/quick.py \\
    --workdir=/tmp/evaluation
python -m experiments.evaluation.main --config=experiments/evaluation/configs/mnist.py \\
    --workdir=runs/evaluation [--config.runs_dir=runs]
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments.common import config as common
from experiments.evaluation import study

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results, figures and retrained models.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # orbax logs every checkpoint step at INFO
    logging.set_verbosity(logging.WARNING)
  results = study.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(study.format_table(results))
  print(f"results and figures in {FLAGS.workdir} ({results['total_seconds']:.0f} s)")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
