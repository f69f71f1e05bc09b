"""Inference: fitting latent variables and parameters, and measuring ``log p(x)``, over models.

=========================================  =====================================================
:mod:`dgmjax.inference.em`                 EM for the Gaussian mixture and PPCA (closed-form
                                           steps)
:mod:`dgmjax.inference.local`              per-datapoint variational fits (a diagonal Gaussian
                                           per data point) and variational EM
:mod:`dgmjax.inference.gaps`               amortization gaps of an encoder, over any contract
                                           model with ``encode``; closed forms for the linear VAE
:mod:`dgmjax.inference.ais`                annealed importance sampling and BDMC (needs blackjax)
=========================================  =====================================================

Data flows one way: these modules read :mod:`dgmjax.models`, the objectives, distributions and
:mod:`dgmjax.numerics`; nothing in the core imports them.
"""

from dgmjax.inference import ais, em, gaps, local

__all__ = ["ais", "em", "gaps", "local"]
