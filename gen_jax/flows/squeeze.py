"""Squeeze (space-to-depth 2x2) and its inverse.

Dinh et al. 2017 (RealNVP), Sec. 3.6 and Fig. 3: "the squeezing operation ... divides the
image into subsquares of shape 2 x 2 x c, then reshapes them into subsquares of shape
1 x 1 x 4c"; used before each level of Glow too (Kingma & Dhariwal 2018, Fig. 2b).

    forward:  [B, H, W, C] -> [B, H/2, W/2, 4C],  y[b, i, j, (2 di + dj) C + c] = x[b, 2i + di, 2j + dj, c]
    inverse:  the reverse reshape (depth-to-space)
    log-det:  0 (a permutation of coordinates)

``H`` and ``W`` must be even.
"""
from __future__ import annotations

import jax

from gen_jax.flows.bijector import Bijector, batch_zeros


def squeeze2x2(x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H/2, W/2, 4C]``; ``ValueError`` for odd ``H`` or ``W``."""
    if x.ndim != 4:
        raise ValueError(f"squeeze: input must be [B, H, W, C], got shape {x.shape}")
    b, h, w, c = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze: spatial size must be even (H, W divisible by 2), got input shape {x.shape}")
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze2x2(y: jax.Array) -> jax.Array:
    """``[B, H, W, 4C] -> [B, 2H, 2W, C]``; ``ValueError`` if channels are not a multiple of 4."""
    if y.ndim != 4 or y.shape[-1] % 4:
        raise ValueError(f"unsqueeze: input must be [B, H, W, 4C], got shape {y.shape}")
    b, h, w, c4 = y.shape
    c = c4 // 4
    y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
    """Space-to-depth 2x2 as a bijector (see module docstring)."""

    def forward(self, x, cond=None):
        return squeeze2x2(x), batch_zeros(x)

    def inverse(self, y, cond=None):
        return unsqueeze2x2(y), batch_zeros(y)
