"""Setup shared by the experiment drivers; a study imports from here and from its own folder only.

* :mod:`~experiments.common.config`: flags, config strings and numeric field checks;
* :mod:`~experiments.common.resume`: the resume policy (the config keys that may change on resume);
* :mod:`~experiments.common.data`: data loading, validation and the fixed test binarization;
* :mod:`~experiments.common.run`: epochs -> steps, optimiser and schedule, the call into
  :func:`dgmjax.training.fit`;
* :mod:`~experiments.common.results`: standard errors, JSON results and resumable parts;
* :mod:`~experiments.common.figures`: matplotlib without a display;
* :mod:`~experiments.common.burda`: Burda et al.'s VAE run (default config, config strings,
  train and evaluate), shared by the IWAE, prior, evaluation and gradient-SNR studies.
"""
