"""The IWAE study's summary of a run of :func:`experiments.common.burda.train_and_evaluate`.

That function trains a VAE or an IWAE and measures it as Burda et al. (the evaluation study
retrains its models with it too). It writes into ``workdir``:
  ``config.json``          the configuration;
  ``metrics.jsonl``        training metrics (and validation bounds at checkpoints);
  ``checkpoints/``         orbax checkpoints (``--resume`` continues from the latest);
  ``results.json``         test ELBO, IWAE bounds, the k=5000 NLL, active units, timings;
  ``test_log_likelihoods.npy``  the per-image k=5000 estimates (runs share the test binarization
                           for a given seed, so two runs can be compared image by image);
  ``samples.png``, ``reconstructions.png``, ``training_curve.png``.

References:
  Burda, Grosse & Salakhutdinov, Importance Weighted Autoencoders, ICLR 2016.
"""

from __future__ import annotations


def format_results(r: dict) -> str:
  """A short human-readable summary of the results of
  :func:`experiments.common.burda.train_and_evaluate`."""
  ks = [k for k in r if k.startswith("test_iwae_")]
  lines = [
      f"{r['dataset']}: {r['estimator'].upper()} k={r['k']}, {r['num_layers']} stochastic "
      f"layer(s), {r['epochs']:g} epochs ({r['steps']} steps, {r['train_seconds']:.0f}s)",
      f"  test ELBO            {r['test_elbo']:.3f}",
      *[f"  test IWAE L_{k[len('test_iwae_'):]:<12s} {r[k]:.3f}" for k in ks],
      f"  test NLL (k={r['eval_num_samples']})   {r['test_nll']:.3f} +- {r['test_nll_stderr']:.3f} "
      f"on {r['test_examples']} images",
      f"  active units         {'+'.join(map(str, r['active_units']))}",
  ]
  return "\n".join(lines)
