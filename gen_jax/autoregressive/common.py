"""Pieces shared by the autoregressive image models (PixelCNN family, PixelRNN, PixelCNN++).

Conventions (see :mod:`gen_jax.model`): batches hold ``x = level / (K - 1)`` in ``[0, 1]``;
an autoregressive model defines the exact probability mass ``P(levels)`` of an image by the
chain rule over a fixed order (raster order over pixels, R then G then B inside a pixel,
van den Oord et al. 2016a, eq. 1-2),

    log P(x) = sum_i log p(x_i | x_<i),

and reports ``log_prob = log P + D log K`` (the piecewise-constant density of the uniformly
dequantized data), so ``bpd = -log P / (D log 2)`` exactly.

:func:`raster_scan_sample` draws images position by position inside one ``lax.scan`` whose
carry is the partially sampled image; each step re-runs the network on the whole image (the
cost is ``num_positions`` forward passes, which is what a masked convolutional model needs
without activation caching).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.distributions import to_levels  # noqa: F401  (x = level / (K - 1) -> int32 levels)


def from_levels(levels: jax.Array, num_levels: int) -> jax.Array:
    """int levels ``0..K-1`` -> float32 ``level / (K - 1)``."""
    return levels.astype(jnp.float32) / (num_levels - 1)


def density_log_prob(log_mass: jax.Array, image_shape: Sequence[int], num_levels: int) -> jax.Array:
    """``log P(levels)`` ``[B]`` -> the library's ``log_prob`` convention ``log P + D log K``."""
    d = int(np.prod(image_shape))
    return log_mass + d * jnp.log(float(num_levels))


def check_image_size(image_shape: Sequence[int], min_size: int, where: str) -> None:
    """Raises ``ValueError`` (naming ``where``) unless ``H, W >= min_size``."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h < min_size or w < min_size:
        raise ValueError(f"{where}: image size {h}x{w} is smaller than the {min_size}x{min_size} "
                         f"the masked kernels need")


def raster_scan_sample(step: Callable, init: jax.Array, positions: Sequence[tuple], key: jax.Array) -> jax.Array:
    """Samples positions in order with one ``lax.scan``.

    Args:
      step: ``(x, pos, key) -> x`` fills position ``pos`` (an int32 vector, e.g. ``(row, col)``
        or ``(row, col, channel)``) of the partially sampled ``x`` given everything before it.
      init: the starting array (e.g. zeros ``[N, H, W, C]``).
      positions: the order, a list of equal-length int tuples.
      key: PRNG key (split once per position).

    Returns:
      the filled array.
    """
    pos = jnp.asarray(np.asarray(positions, np.int32))
    keys = jax.random.split(key, pos.shape[0])

    def body(x, inp):
        p, k = inp
        return step(x, p, k), None

    x, _ = jax.lax.scan(body, init, (pos, keys))
    return x


def raster_positions(image_shape: Sequence[int], per_channel: bool) -> list[tuple]:
    """Raster order ``(row, col)`` (``per_channel=False``) or ``(row, col, channel)``."""
    h, w, c = (int(s) for s in image_shape)
    if per_channel:
        return [(i, j, k) for i in range(h) for j in range(w) for k in range(c)]
    return [(i, j) for i in range(h) for j in range(w)]
