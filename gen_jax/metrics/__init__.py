"""Evaluation metrics for generative models.

* :mod:`gen_jax.metrics.fid` -- Frechet distance / FID (Heusel et al. 2017) and KID
  (Binkowski et al. 2018).
* :mod:`gen_jax.metrics.precision_recall` -- improved precision and recall
  (Kynkaanniemi et al. 2019).
* :mod:`gen_jax.metrics.inception_score` -- Inception Score (Salimans et al. 2016).
* :mod:`gen_jax.metrics.mmd` -- kernel MMD and its permutation test (Gretton et al. 2012).
* :mod:`gen_jax.metrics.classifier` -- small CNN classifiers used as feature networks for
  the embedded datasets.
* :mod:`gen_jax.metrics.inception` -- Inception-v3 (Szegedy et al. 2016) in Flax linen, with
  user-supplied weights only (nothing is downloaded).
* :mod:`gen_jax.metrics.features` -- batched feature extraction and one-call sample scoring.

Library code imports the submodule it needs explicitly; this package exports nothing.
"""
