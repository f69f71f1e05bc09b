"""The full study (``default.py``): 500 test images, AIS up to T = 10,000, BDMC on 100 simulated
images per model. Hours on 2 CPU cores; minutes on an accelerator.

``--config=experiments/evaluation/configs/mnist.py``
"""

from experiments.evaluation.configs import default


def get_config():
  return default.get_config()
