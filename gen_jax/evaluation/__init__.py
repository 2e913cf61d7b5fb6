"""Evaluation of trained models through the contract: test likelihoods (bits/dim or bits per
token, by ``model.likelihood.unit``), batched sampling, and sample metrics for image samplers.

Knows the contract (:mod:`gen_jax.model`), the data conventions and the metrics; never a
family. The command-line scripts under ``experiments/`` are thin wrappers around it.
"""
