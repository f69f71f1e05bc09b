"""Classical latent-variable models: GMM / PPCA EM, PPCA vs linear VAE, amortization gaps.

python -m experiments.classical.main --config=experiments/classical/configs/default.py \\
    --workdir=/tmp/classical
python -m experiments.classical.main --config=experiments/classical/configs/quick.py \\
    --workdir=/tmp/classical_quick [--config.ppca.vae_steps=3000]
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import config as common
from experiments.classical import study

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results.json, results.md and the figures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = study.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  print(study.format_results(results))
  print(f"results.json, results.md and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
