"""Fixed permutations of the feature axis.

Between autoregressive layers MAF reverses the variable order (Papamakarios et al. 2017,
Sec. 3.1: "we reverse the order of the inputs between each MADE"), RealNVP/Glow permute
channels by reversal or a learned 1x1 convolution (Kingma & Dhariwal 2018, Sec. 3.2).

    forward:  y = x[..., perm]
    inverse:  x = y[..., argsort(perm)]
    log-det:  0
"""
from __future__ import annotations

import jax.numpy as jnp

from gen_jax.flows.bijector import Bijector, batch_zeros


class Reverse(Bijector):
    """Reverses the last axis (see module docstring)."""

    def forward(self, x, cond=None):
        return jnp.flip(x, axis=-1), batch_zeros(x)

    def inverse(self, y, cond=None):
        return jnp.flip(y, axis=-1), batch_zeros(y)
