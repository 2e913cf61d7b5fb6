"""Normalizing flows: bijectors with exact, vectorized log-determinants, and the RealNVP,
Glow and MAF models built from them.

Modules (one concept each):

* :mod:`~gen_jax.flows.bijector`: the interface (``forward`` / ``inverse`` returning the
  output and ``log|det J|`` per example), :class:`Chain`, :class:`Invert`, checks;
* bijectors: :mod:`actnorm`, :mod:`conv1x1`, :mod:`coupling`, :mod:`squeeze`,
  :mod:`multiscale` (split / top prior), :mod:`preprocess` (logit, affine),
  :mod:`permute`, :mod:`autoregressive` (MAF, IAF over :mod:`made`);
* networks of the couplings: :mod:`nets`;
* models (``GenerativeModel`` bundles): :mod:`image_flow` (shared), :mod:`glow`,
  :mod:`realnvp`, :mod:`maf`.
"""
