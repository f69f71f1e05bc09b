"""Gradient SNR study (Rainforth et al. 2018): SNR against K for IWAE, DReG and STL.

python -m experiments.gradient_snr.main --config=experiments/gradient_snr/configs/toy.py \\
    --workdir=/tmp/gradient_snr_toy
python -m experiments.gradient_snr.main --config=experiments/gradient_snr/configs/quick.py \\
    --workdir=/tmp/gradient_snr_quick [--config.toy.num_draws=20000]
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.common import config as common
from experiments.gradient_snr import run

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Configuration file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for results.json and the figures.")
flags.DEFINE_bool("resume", False, "Continue in --workdir: reuse the parts of the study already "
                  "measured there (parts/*.json).")
flags.DEFINE_bool("allow_config_change", False,
                  "With --resume: continue although settings differ from the saved config.json "
                  "(the changes are recorded there under resume_changes).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  results = run.train_and_evaluate(FLAGS.config, FLAGS.workdir, resume=FLAGS.resume,
                                   allow_config_change=FLAGS.allow_config_change)
  print(run.format_results(results))
  print(f"results.json and figures in {FLAGS.workdir}")


if __name__ == "__main__":
  common.run(main)  # app.run with short messages for a bad --config
