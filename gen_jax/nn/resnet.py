"""A pre-activation ResNet trunk (He et al. 2016, "Identity Mappings in Deep Residual Networks",
Sec. 4: GroupNorm -> SiLU -> conv, twice, added to the identity) for the small image encoders.

:func:`preact_resnet` is called inside a ``flax.linen`` module's ``@nn.compact`` method and
creates its layers *in that module* (names ``stem``, ``s{stage}_b{block}_{gn1,conv1,gn2,conv2,skip}``),
so the encoders that share it keep flat, readable parameter trees.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax


def preact_resnet(x: jax.Array, widths: Sequence[int], blocks: int) -> jax.Array:
    """``x [B, H, W, C]`` in [0, 1] -> features ``[B, H / 2^(S-1), W / 2^(S-1), widths[-1]]``.

    A 3x3 stem on ``2x - 1``, then ``S = len(widths)`` stages of ``blocks`` residual blocks each
    (stage ``s > 0`` first halves the resolution by 2x2 average pooling; a 1x1 conv projects the
    skip where the width changes; the last conv of a block starts at zero, so every block starts
    as the identity). No output norm: the caller finishes the trunk.
    """
    h = nn.Conv(int(widths[0]), (3, 3), padding="SAME", name="stem")(2.0 * x - 1.0)
    for s, width in enumerate(int(w) for w in widths):
        if s > 0:
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        for r in range(int(blocks)):
            skip = h if h.shape[-1] == width else nn.Conv(width, (1, 1), name=f"s{s}_b{r}_skip")(h)
            g = nn.GroupNorm(min(8, h.shape[-1]), name=f"s{s}_b{r}_gn1")(h)
            g = nn.Conv(width, (3, 3), padding="SAME", name=f"s{s}_b{r}_conv1")(nn.silu(g))
            g = nn.GroupNorm(min(8, width), name=f"s{s}_b{r}_gn2")(g)
            g = nn.Conv(width, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                        name=f"s{s}_b{r}_conv2")(nn.silu(g))
            h = skip + g
    return h
