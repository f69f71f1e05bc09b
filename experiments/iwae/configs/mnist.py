"""Burda et al.'s MNIST experiments (Table 1) and Rainforth et al.'s objectives, one per string.

``--config=experiments/iwae/configs/mnist.py:<name>[-m<M>|-b<beta>]-k<K>-l<layers>-<budget>``,
e.g. ``iwae-k50-l1-full``, ``miwae-m8-k8-l1-e3``, ``ciwae-b0.05-k64-l1-e3``.

* ``name`` (the run's name; it sets ``config.estimator``): ``vae`` (estimator ``elbo``, the
  ``K``-sample ELBO average), ``iwae``; ``dreg`` (DReG for the encoder, IWAE for the decoder);
  ``miwae``, ``piwae``, ``piwae_dreg`` (need ``m<M>``: ``M`` groups of ``K``, so ``M * K``
  samples in all); ``ciwae`` (needs ``b<beta>``: ``beta * ELBO + (1 - beta) * IWAE`` on ``K``
  samples); ``stl``, ``rws``, ``rws_dreg``.
* ``K`` in {1, 5, 50} for Burda's table (any positive int works); ``layers`` in {1, 2}.
* ``budget``: ``full`` is Burda's 3280 epochs (8 passes of 3^i epochs, lr 1e-3 * 10^(-i/7));
  ``short`` is the first 3 passes of that schedule (1 + 3 + 9 = 13 epochs, exactly Burda's first
  13 epochs); ``e<N>`` is N > 0 epochs at the first 3 passes' shape scaled to N.

Append ``-ref`` to use the reference code's Adam variant and rounded learning rates. The string is
parsed strictly: an unknown or malformed part raises ``ValueError`` listing the valid forms.
"""

from experiments.common import burda


def get_config(arg: str = "iwae-k5-l1-short"):
  return burda.named_config(arg)
