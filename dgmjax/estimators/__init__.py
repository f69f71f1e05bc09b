"""Gradient estimators for variational bounds, written as surrogate losses.

Each ``*_surrogate`` function returns, per datapoint (``[B]``), a surrogate whose **value equals the
bound** it stands for and whose ``jax.grad`` **is the estimator**. Training maximises
``mean(surrogate)`` (minimise its negative); :func:`dgmjax.diagnostics.gradient_snr` measures it.

Why surrogates need more than log-weights
-----------------------------------------
An estimator is a choice of which gradient paths to keep and how to weight them. Every path of
``log w_k = log p_theta(x, z_k) - log q_phi(z_k | x)``, with ``z_k = z(eps_k; phi)`` reparametrized,
falls in one of three channels, and :class:`LogWeightTerms` carries one ``[K, B]`` array per channel
(all with the value ``log w_k`` except the score term, whose value is ``log q``):

* ``log_w_theta`` = ``log p(x, sg z; theta) - sg(log q)``: only the model parameters ``theta``
  (the direct dependence of ``log p``);
* ``log_w_path`` = ``log p(x, z; sg theta) - log q(z | x; sg phi)``: only the path through the
  sample ``z`` into ``phi`` (zero for non-reparametrizable latents);
* ``log_q_score`` = ``log q(sg z | x; phi)``: the score function, the direct dependence of
  ``log q`` on ``phi`` (it enters ``log w`` with a minus sign).

plus ``log_w`` itself with every path live (the plain reparametrization estimator). The routing is
by *role*: ``theta`` is whatever ``log p`` depends on, ``phi`` whatever ``q`` depends on, so one
``params`` pytree serves (a parameter shared by both gets both gradients, as it should).
:func:`dgmjax.models.log_weight_terms` builds the four arrays from any model of the contract
(:mod:`dgmjax.models.base`); inside ``jit`` the arrays a surrogate does not use are dead code and
cost nothing.

A surrogate is the bound evaluated on ``log_w_theta`` (giving the ``theta`` gradient
``sum_k w~_k grad log p``) plus terms ``sum_k sg(c_k) (t_k - sg(t_k))`` with ``t`` one of the
``phi`` channels: such a term is exactly zero in value and has gradient ``sum_k c_k grad t_k``, so it
changes the estimator without changing the value. ``sg`` is ``jax.lax.stop_gradient`` and
``w~_k = w_k / sum_j w_j`` the normalised importance weights.

Importance samples live on ``axis`` (default 0): arrays are ``[K, B]`` and surrogates ``[B]``.

Estimators as objects
---------------------
Each estimator is also a small frozen object that carries and checks its settings when it is
built (``IWAE()``, ``DReG(num_groups=2)``, ``CIWAE(beta)``, ``Renyi(alpha)``,
``Reinforce(bound, baseline, kl)``, ...) and gives its surrogate over the views in one method,
``estimator.surrogate(terms, axis) -> [B]``. :data:`ESTIMATORS` is the one registry, name -> class,
that :func:`dgmjax.losses.make_loss` looks names up in; :func:`register` adds a class to it.
An estimator whose gradient runs through the sample (``Estimator.pathwise``: the reparametrized
bounds, STL, DReG and their relatives) refuses a discrete or non-reparametrized latent, naming the
score-function estimators that fit (:meth:`Estimator.check_latent`, :func:`latent_kind`).

The package re-exports every public name of its two modules: :mod:`dgmjax.estimators.surrogates`
(the gradient views, the surrogate functions, learning signals and baselines: the maths) and
:mod:`dgmjax.estimators.objects` (the :class:`Estimator` base, its classes and the registry).

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
  Williams, Simple Statistical Gradient-Following Algorithms for Connectionist Reinforcement
  Learning, Machine Learning 1992 (REINFORCE).
  Mnih & Gregor, Neural Variational Inference and Learning in Belief Networks, ICML 2014 (NVIL).
  Mnih & Rezende, Variational Inference for Monte Carlo Objectives, ICML 2016 (VIMCO).
  Roeder, Wu & Duvenaud, Sticking the Landing, NeurIPS 2017 (STL).
  Bornschein & Bengio, Reweighted Wake-Sleep, ICLR 2015 (RWS).
  Tucker, Lawson, Gu & Maddison, Doubly Reparameterized Gradient Estimators for Monte Carlo
  Objectives, ICLR 2019 (DReG, RWS-DReG).
  Rainforth et al., Tighter Variational Bounds are Not Necessarily Better, ICML 2018 (MIWAE,
  CIWAE, PIWAE).
"""

from dgmjax.estimators.surrogates import (
    BOUNDS, LogWeightTerms, RunningMean, baseline_loss, ciwae_surrogate, dreg_surrogate,
    elbo_surrogate, iwae_surrogate, learning_signal, miwae_surrogate, piwae_surrogate,
    reinforce_surrogate, renyi_dreg_surrogate, running_mean_init, running_mean_update,
    rws_dreg_surrogate, rws_surrogate, stl_surrogate, vimco_learning_signals, vimco_surrogate,
    zero_with_grad)
from dgmjax.estimators.objects import (
    BASELINES, CIWAE, ELBO, ESTIMATORS, IWAE, LATENTS, MIWAE, PIWAE, RWS, STL, VIMCO, DReG,
    Estimator, PIWAEDReG, Reinforce, Renyi, RenyiDReG, RWSDReG, from_name, latent_kind, register)

__all__ = [
    "BASELINES", "BOUNDS", "CIWAE", "DReG", "ELBO", "ESTIMATORS", "Estimator", "IWAE", "LATENTS",
    "MIWAE", "LogWeightTerms", "PIWAE", "PIWAEDReG", "RWS", "RWSDReG", "Reinforce", "Renyi",
    "RenyiDReG", "RunningMean", "STL", "VIMCO", "baseline_loss", "ciwae_surrogate",
    "dreg_surrogate", "elbo_surrogate", "from_name", "iwae_surrogate", "latent_kind",
    "learning_signal", "miwae_surrogate", "piwae_surrogate", "register", "reinforce_surrogate",
    "renyi_dreg_surrogate", "running_mean_init", "running_mean_update", "rws_dreg_surrogate",
    "rws_surrogate", "stl_surrogate", "vimco_learning_signals", "vimco_surrogate",
    "zero_with_grad",
]
