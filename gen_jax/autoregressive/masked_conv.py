"""Masked convolutions over raster order with channel-group dependencies (PixelCNN masks).

van den Oord, Kalchbrenner & Kavukcuoglu 2016a ("Pixel Recurrent Neural Networks"),
Sec. 3.4 and Fig. 4. An image is modelled sub-pixel by sub-pixel in raster order, R then G
then B inside a pixel (Eq. 2):

    p(x_{i,R} | x_<i) p(x_{i,G} | x_<i, x_{i,R}) p(x_{i,B} | x_<i, x_{i,R}, x_{i,G}).

Every feature map of a masked network is split into ``C`` contiguous channel groups (one per
image channel: R, G, B; a single group for ``C = 1``). A kernel tap that reads a pixel
*before* the current one in raster order is unmasked; taps *after* it are zero; at the
current pixel (the kernel's ``center`` tap) output group ``g`` may read input group ``g'``
only if

    mask A:  g' <  g   (first layer: a sub-pixel never sees itself),
    mask B:  g' <= g   (later layers: a group may see its own features, which already
                        exclude the sub-pixel they predict).

For the first layer the input groups are the image channels themselves. Layers whose output
channels are several blocks (the two halves of a gated activation, the four gates of an LSTM)
use ``out_splits``: each block is split into the ``C`` groups, so ``tanh(a) * sigmoid(b)``
combines channels of the same group.

Shapes: inputs ``[B, H, W, I]`` -> outputs ``[B, H, W, O]`` (NHWC, kernels ``[kh, kw, I, O]``).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MASK_TYPES = ("A", "B")


def check_channel_split(num_channels: int, num_groups: int, where: str, splits: int = 1) -> None:
    """Raises ``ValueError`` (naming ``where``) unless ``num_channels`` splits into ``splits``
    blocks of ``num_groups`` equal channel groups."""
    if num_groups < 1:
        raise ValueError(f"{where}: the number of channel groups (image channels C) must be >= 1, got {num_groups}")
    if num_channels < 1 or num_channels % (splits * num_groups) != 0:
        raise ValueError(f"{where}: {num_channels} channels cannot be split into "
                         f"{'%d blocks of ' % splits if splits > 1 else ''}{num_groups} equal channel groups "
                         f"(one per image channel, C={num_groups}); use a multiple of {splits * num_groups}")


def channel_groups(num_channels: int, num_groups: int, splits: int = 1, where: str = "channels") -> np.ndarray:
    """The group (image channel ``0..C-1``) of every channel: int ``[num_channels]``.

    Channels form ``splits`` equal blocks; each block is ``num_groups`` contiguous groups,
    e.g. ``channel_groups(12, 3, splits=2) = [0 0 1 1 2 2 0 0 1 1 2 2]``.
    """
    check_channel_split(num_channels, num_groups, where, splits)
    per_block = num_channels // splits
    return np.tile(np.arange(per_block) // (per_block // num_groups), splits)


def raster_mask(kernel_size: Sequence[int], center: Sequence[int], in_groups: np.ndarray,
                out_groups: np.ndarray, mask_type: str) -> np.ndarray:
    """The 0/1 kernel mask ``[kh, kw, I, O]`` (float32) of 2016a Sec. 3.4 / Fig. 4.

    Tap ``(a, b)`` reads pixel ``(i + a - center_h, j + b - center_w)`` for output ``(i, j)``:
    taps before ``center`` in raster order are 1, taps after it are 0, and the center tap
    holds the channel-group rule (``in_group < out_group`` for A, ``<=`` for B).
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    kh, kw = (int(k) for k in kernel_size)
    ch, cw = (int(c) for c in center)
    if not (0 <= ch < kh and 0 <= cw < kw):
        raise ValueError(f"center {tuple(center)} lies outside the kernel {kh}x{kw}")
    in_groups, out_groups = np.asarray(in_groups), np.asarray(out_groups)
    mask = np.zeros((kh, kw, in_groups.size, out_groups.size), np.float32)
    mask[:ch] = 1.0                      # rows above the current pixel
    mask[ch, :cw] = 1.0                  # same row, left of the current pixel
    if mask_type == "A":
        rule = in_groups[:, None] < out_groups[None, :]
    else:
        rule = in_groups[:, None] <= out_groups[None, :]
    mask[ch, cw] = rule.astype(np.float32)
    return mask


def layer_mask(kernel_size: Sequence[int], center: Sequence[int], in_channels: int, features: int,
               num_groups: int, mask_type: str, out_splits: int = 1, where: str = "MaskedConv") -> np.ndarray:
    """The :func:`raster_mask` ``[kh, kw, in_channels, features]`` of a :class:`MaskedConv`
    layer (input one block of ``num_groups`` groups, output ``out_splits`` blocks)."""
    in_groups = channel_groups(in_channels, num_groups, 1, f"{where} input")
    out_groups = channel_groups(features, num_groups, out_splits, f"{where} features")
    return raster_mask(kernel_size, center, in_groups, out_groups, mask_type)


class MaskedConv(nn.Module):
    """A convolution whose kernel is multiplied by :func:`raster_mask` (2016a Sec. 3.4).

    ``x [B, H, W, I] -> [B, H, W, features]``; output ``(i, j)`` sees input ``(i, j)`` at the
    kernel's ``center`` tap (default: the middle of an odd kernel). The padding places the
    center on the output pixel, so the spatial size is kept.

    Attributes:
      features: output channels ``O``.
      kernel_size: ``(kh, kw)``.
      mask_type: ``'A'`` (first layer) or ``'B'``.
      num_groups: channel groups ``C`` (image channels).
      center: the tap that reads the current pixel; default ``(kh // 2, kw // 2)``.
      out_splits: output blocks (2 for a gated activation, 4 for LSTM gates), each split into
        the ``C`` groups; the input is one block (its groups are contiguous).
      use_bias: add a bias.
      dtype: compute dtype of the convolution (``None``: float32): the input and the masked
        float32 kernel are cast to it; the float32 bias makes the output float32
        (:mod:`gen_jax.nn.precision`).
    """

    features: int
    kernel_size: tuple[int, int]
    mask_type: str
    num_groups: int = 1
    center: Optional[tuple[int, int]] = None
    out_splits: int = 1
    use_bias: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"MaskedConv input must be [B, H, W, I], got shape {x.shape}")
        kh, kw = self.kernel_size
        center = self.center if self.center is not None else (kh // 2, kw // 2)
        in_ch = x.shape[-1]
        mask = jnp.asarray(layer_mask(self.kernel_size, center, in_ch, self.features, self.num_groups,
                                      self.mask_type, self.out_splits, f"MaskedConv ({self.name})"))
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, in_ch, self.features))
        pad = ((center[0], kh - 1 - center[0]), (center[1], kw - 1 - center[1]))
        kernel = kernel * mask
        if self.dtype is not None:
            x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def down_shift(x: jax.Array) -> jax.Array:
    """``[B, H, W, C]`` shifted one row down (row 0 becomes zeros): output row ``i`` holds
    input row ``i - 1``. Used to feed the vertical stack to the horizontal stack of the gated
    PixelCNN (2016b Sec. 2.2) so that row ``i`` only sees rows ``< i``."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
