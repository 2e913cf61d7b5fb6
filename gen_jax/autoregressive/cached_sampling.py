"""Activation caches for sampling causal convolutional image models in raster order.

Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang
2017 ("Fast Generation for Convolutional Autoregressive Models", Sec. 3, Fig. 2; the
image case of Paine et al. 2016, "Fast Wavenet Generation Algorithm"): a masked or shifted
convolutional network's activation at a position depends only on positions that come
earlier in raster order, so sampling need not re-run the whole network for every new
(sub-)pixel. Each layer keeps its activations in a cache, and every sampling step computes
only the activations that have just become computable -- the new pixel of every layer whose
receptive field ends at the current pixel, or, once a row is complete, the new row of the
layers that see whole rows (a gated PixelCNN's vertical stack, PixelCNN++'s up stream). Every
activation is computed once, from cached inputs that are already final, so a full sample
costs about one forward pass plus a per-step overhead instead of ``H W`` (or ``H W C``)
passes, and it draws the same samples from the same keys (same logits up to float
rounding).

This module holds the shared pieces: :class:`Layout` (a zero-padded activation map that is
read by windows and written by rows or pixels), :func:`conv` (a convolution over such a
window), :func:`dense` (a 1x1 convolution) and :func:`raster_keys` (the per-position keys of
:func:`gen_jax.autoregressive.common.raster_scan_sample`, laid out per row). The samplers
are :mod:`gen_jax.autoregressive.pixelcnn_cached` and
:mod:`gen_jax.autoregressive.pixelcnnpp_cached`.

Shapes: caches are ``[N, H + top, W + left + right, F]`` (map position ``(r, c)`` at
``[:, r + top, c + left]``, zeros in the padding, as the convolutions' zero padding).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp


class Layout(NamedTuple):
    """The zero padding of a cached activation map (static ints, never traced).

    ``top`` / ``left`` / ``right``: rows above and columns either side that the map's
    consumers read outside the image (their convolutions' zero padding).
    """

    top: int = 0
    left: int = 0
    right: int = 0

    def empty(self, num: int, height: int, width: int, features: int) -> jax.Array:
        """A zero cache ``[num, height + top, width + left + right, features]`` (float32)."""
        return jnp.zeros((num, height + self.top, width + self.left + self.right, features), jnp.float32)

    def read(self, cache: jax.Array, row, col, height: int, width: int) -> jax.Array:
        """The window ``[N, height, width, F]`` whose top-left is map position ``(row, col)``
        (``row >= -top``, ``col >= -left``; traced indices allowed)."""
        return jax.lax.dynamic_slice(cache, (0, row + self.top, col + self.left, 0),
                                     (cache.shape[0], height, width, cache.shape[-1]))

    def write(self, cache: jax.Array, value: jax.Array, row, col, channel=0) -> jax.Array:
        """``cache`` with ``value [N, h, w, f]`` written at map position ``(row, col)`` and
        channel offset ``channel``."""
        return jax.lax.dynamic_update_slice(cache, value.astype(cache.dtype),
                                            (0, row + self.top, col + self.left, channel))


def conv(window: jax.Array, kernel: jax.Array, stride: Sequence[int] = (1, 1)) -> jax.Array:
    """VALID convolution of a cache window: ``[N, h, w, I] x [kh, kw, I, O] -> [N, h', w', O]``."""
    return jax.lax.conv_general_dilated(window, kernel, tuple(stride), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """A 1x1 convolution on the last axis: ``[..., I] @ [I, O] + [O]`` (``kernel`` may be
    ``[1, 1, I, O]``)."""
    return x @ kernel.reshape(kernel.shape[-2:]) + bias


def raster_keys(key: jax.Array, rows: int, per_row: int) -> jax.Array:
    """The keys of :func:`gen_jax.autoregressive.common.raster_scan_sample` (one per position,
    ``jax.random.split(key, rows * per_row)`` in raster order) as ``[rows, per_row, ...]``."""
    keys = jax.random.split(key, rows * per_row)
    return keys.reshape((rows, per_row) + keys.shape[1:])
