"""Learn 2-D densities with normalizing flows and report KL(target || flow).

python -m experiments.flows.main --config=experiments/flows/configs/two_d.py --workdir=/tmp/flows2d
python -m experiments.flows.main --config=experiments/flows/configs/quick.py --workdir=/tmp/flowsq
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import config as common
from experiments.flows import two_d

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results.json and the figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = two_d.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(two_d.format_results(results))
  print(f"wall time {results['meta']['wall_time_s']:.1f}s; results and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
