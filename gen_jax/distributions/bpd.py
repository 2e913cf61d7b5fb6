"""Bits per dimension from per-example log densities.

Convention (README, Conventions; :mod:`gen_jax.model`): ``log_prob`` is the log *density* in nats of
uniformly dequantized data ``y = (level + u) / K``, ``u ~ U[0, 1)^D`` on ``[0, 1)^D``. The
density of ``y`` on the unit cube relates to the density of ``K y`` on ``[0, K)^D`` (the
convention of Theis et al. 2016, Sec. 3.1, where the discrete probability is bounded by the
continuous one) through ``log p_{[0,K)}(K y) = log p_{[0,1)}(y) - D log K``; hence

    bpd = -log2 p_{[0,K)}(K y) / D = (-log p(y) + D log K) / (D log 2).

For a lower bound on ``log p`` (ELBO, IWAE, VLB) the same formula gives an upper bound on the
bits per dimension.
"""
from __future__ import annotations

import math

import jax.numpy as jnp


def _check_num_dims(num_dims: int, num_levels: int | None = None) -> None:
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    if num_levels is not None:
        if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")


def nats_to_bits_per_dim(nats, num_dims: int):
    """Converts a negative log-likelihood in nats (any shape) to bits per dimension.

    ``bits/dim = nats / (D log 2)`` (Theis et al. 2016, "A note on the evaluation of
    generative models", Sec. 3.1). No change of measure is applied; use
    :func:`bits_per_dim` for log densities on ``[0, 1)^D``.

    Args:
      nats: negative log-likelihood(s) in nats, any shape (e.g. ``[B]``).
      num_dims: ``D``, the number of dimensions (``H * W * C`` for images).

    Returns:
      array of the same shape as ``nats``.
    """
    _check_num_dims(num_dims)
    return jnp.asarray(nats) / (num_dims * math.log(2.0))


def bits_per_dim(log_prob_nats, num_dims: int, num_levels: int):
    """Bits per dimension of uniformly dequantized discrete data, per example.

    ``bpd = (-log p(y) + D log K) / (D log 2)`` where ``log p(y)`` is the log density (nats)
    of the dequantized data on ``[0, 1)^D`` and ``K`` the number of levels per dimension
    (Theis et al. 2016, "A note on the evaluation of generative models", Sec. 3.1: the
    continuous log-likelihood of uniformly dequantized data lower-bounds the discrete one;
    the ``D log K`` term rescales ``[0, 1)^D`` to the integer grid ``[0, K)^D``).

    Args:
      log_prob_nats: ``[B]`` (or any shape, or a scalar) log densities in nats.
      num_dims: ``D = H * W * C``.
      num_levels: ``K`` (17 for the embedded digits, 256 for 8-bit images).

    Returns:
      bits per dimension with the shape of ``log_prob_nats``.
    """
    _check_num_dims(num_dims, num_levels)
    lp = jnp.asarray(log_prob_nats)
    return (-lp + num_dims * math.log(num_levels)) / (num_dims * math.log(2.0))
