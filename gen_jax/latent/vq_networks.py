"""Convolutional encoder and decoder of image tokenizers (VQ-VAE, VQGAN, the DALL-E dVAE).

After van den Oord et al. 2017, Sec. 4.1 (images): stride-2 4x4 convolutions down to the code
grid, residual blocks ``x + conv1x1(relu(conv3x3(relu(x))))``, and a mirrored decoder. With
``n = downsample`` stages, stage ``i`` (``0 <= i < n``) of width ``channels[min(i, len - 1)]``:

* :class:`Encoder`: ``x [B, H, W, C] -> [B, H / 2^n, W / 2^n, out_dim]``: per stage a stride-2
  4x4 conv then ``res_blocks`` residual blocks, then a 1x1 conv to ``out_dim`` (the code
  dimension ``D`` of a VQ-VAE, or the ``K`` logits of a dVAE). The input is whatever the model
  feeds (the models here pass ``2 x - 1`` for images ``x`` in ``[0, 1]``).
* :class:`Decoder`: ``z [B, h, w, D] -> [B, h 2^n, w 2^n, out_channels]``: a 3x3 conv to the
  deepest width, then per stage (deepest first) ``res_blocks`` residual blocks, a nearest
  2x upsampling and a 3x3 conv (instead of the paper's transposed convolutions, which leave
  checkerboard artifacts), and the last layer ``Conv(out_channels, 3x3)`` named ``conv_out``
  (linear output; the models clip or squash it). ``conv_out`` is the layer at which VQGAN's
  adaptive weight takes its gradient norms (Esser et al. 2021, Eq. 7):
  ``params['conv_out']['kernel']`` of the decoder's params.

``norm='group'`` puts a GroupNorm (``groups`` groups; every width must be divisible by it, see
:func:`check_widths`) before each activation, as in VQGAN's networks; ``'none'`` is the plain
VQ-VAE. No batch statistics, so the networks need no mutable collections.
"""
from __future__ import annotations

from typing import Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import ConfigError

Norm = Literal["none", "group"]


def stage_widths(channels: Sequence[int], downsample: int) -> list[int]:
    """The width of each of the ``downsample`` stages: ``channels[min(i, len - 1)]``."""
    return [int(channels[min(i, len(channels) - 1)]) for i in range(downsample)]


def check_widths(channels: Sequence[int], downsample: int, norm: str, groups: int,
                 field: str = "config.model.channels") -> None:
    """A ``ConfigError`` naming ``field`` unless ``channels`` is non-empty and positive and, with
    ``norm='group'``, every stage width is divisible by ``groups``."""
    if not channels or min(channels) < 1:
        raise ConfigError(f"{field}: need positive channel counts, got {tuple(channels)}")
    if downsample < 1:
        raise ConfigError(f"{field}: downsample must be >= 1 stride-2 stage, got {downsample}")
    if norm == "group":
        bad = [w for w in stage_widths(channels, downsample) if w % groups]
        if bad:
            raise ConfigError(f"{field}: GroupNorm with {groups} groups needs widths divisible by {groups}; "
                              f"got {bad}")


def grid_shape(image_shape: Sequence[int], downsample: int, field: str = "config.model.downsample") -> tuple[int, int]:
    """``(h, w) = (H / 2^n, W / 2^n)``; a ``ConfigError`` naming ``field`` unless ``2^n`` divides
    ``H`` and ``W``."""
    h, w = int(image_shape[0]), int(image_shape[1])
    f = 2 ** int(downsample)
    if h % f or w % f:
        raise ConfigError(f"{field}: {downsample} stride-2 stages (factor {f}) need H and W divisible by {f}; "
                          f"the images are {h}x{w}")
    return h // f, w // f


class _Act(nn.Module):
    norm: Norm
    groups: int

    @nn.compact
    def __call__(self, x):
        if self.norm == "group":
            x = nn.GroupNorm(num_groups=self.groups)(x)
        return nn.relu(x)


class ResBlock(nn.Module):
    """``x + conv1x1(act(conv3x3(act(x))))`` (van den Oord et al. 2017, Sec. 4.1); width kept.
    ``hidden`` channels inside (0 = the input width)."""

    hidden: int = 0
    norm: Norm = "none"
    groups: int = 32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = nn.Conv(self.hidden or c, (3, 3), padding="SAME")(_Act(self.norm, self.groups)(x))
        h = nn.Conv(c, (1, 1))(_Act(self.norm, self.groups)(h))
        return x + h


class Encoder(nn.Module):
    """``x [B, H, W, C] -> [B, H / 2^n, W / 2^n, out_dim]`` (module docstring)."""

    channels: Sequence[int]
    downsample: int
    out_dim: int
    res_blocks: int = 2
    norm: Norm = "none"
    groups: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i, w in enumerate(stage_widths(self.channels, self.downsample)):
            if i > 0:
                h = _Act(self.norm, self.groups)(h)
            h = nn.Conv(w, (4, 4), strides=(2, 2), padding="SAME", name=f"down_{i}")(h)
            for j in range(self.res_blocks):
                h = ResBlock(norm=self.norm, groups=self.groups, name=f"res_{i}_{j}")(h)
        h = _Act(self.norm, self.groups)(h)
        return nn.Conv(self.out_dim, (1, 1), name="conv_out")(h)


class Decoder(nn.Module):
    """``z [B, h, w, D] -> [B, h 2^n, w 2^n, out_channels]`` linear (module docstring)."""

    channels: Sequence[int]
    downsample: int
    out_channels: int
    res_blocks: int = 2
    norm: Norm = "none"
    groups: int = 32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        widths = stage_widths(self.channels, self.downsample)[::-1]   # deepest first
        h = nn.Conv(widths[0], (3, 3), padding="SAME", name="conv_in")(z)
        for i, w in enumerate(widths):
            for j in range(self.res_blocks):
                h = ResBlock(norm=self.norm, groups=self.groups, name=f"res_{i}_{j}")(h)
            h = _Act(self.norm, self.groups)(h)
            b, hh, ww, c = h.shape
            h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
            out = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            h = nn.Conv(out, (3, 3), padding="SAME", name=f"up_{i}")(h)
        h = _Act(self.norm, self.groups)(h)
        return nn.Conv(self.out_channels, (3, 3), padding="SAME", name="conv_out")(h)


def last_layer_kernel(decoder_params) -> jnp.ndarray:
    """The decoder's last-layer kernel ``[3, 3, width, C]`` (for the adaptive weight)."""
    return decoder_params["conv_out"]["kernel"]
