"""Image-to-image GAN networks (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks"): the U-Net generator (Sec. 3.2.1, App. 6.1.1) and the PatchGAN
discriminator (Sec. 3.2.2, App. 6.1.2). Pix2Pix and CycleGAN build on these.

Conventions: images float32 ``[B, H, W, C]`` in ``[0, 1]`` (mapped to ``[-1, 1]`` inside);
the generator returns ``[B, H, W, out_channels]`` in ``[0, 1]``; the discriminator returns
patch logits ``[B, h, w]``, one per (overlapping) patch of the input.

Variables (what ``init`` / ``apply`` need):

* ``init(rngs, ...)`` needs ``'params'`` (and ``'dropout'`` for a generator called with
  ``noise=True``, the default).
* ``norm='batch'`` keeps running averages in ``'batch_stats'``: ``train=True`` normalizes with
  batch statistics and updates them (``mutable=['batch_stats']``), ``train=False`` uses them.
  ``norm='instance'`` (the default) and ``'none'`` are stateless. Isola et al. run the generator
  with batch statistics at test time too, which at batch size 1 is instance normalization (their
  Sec. 3.3): the default keeps exactly that behaviour at every batch size, with no state.
* The generator's dropout (rate ``dropout``, on the first ``dropout_layers`` decoder layers) is
  the only noise of the model (Isola et al. Sec. 3.1: "we provide noise only in the form of
  dropout ... at both training and test time"); ``noise=True`` applies it and needs
  ``rngs={'dropout': key}``, ``noise=False`` is deterministic.

Architectures:

* :class:`UNetGenerator`: encoder ``C_0 ... C_{d-1}`` of 4x4 stride-2 convs (``base *
  min(2^i, 8)`` channels; ``Conv -> Norm -> LeakyReLU(0.2)``, no norm on the first and on the
  innermost layer), decoder of ``d`` 2x upsamplings (4x4 stride-2 transposed convs, or nearest
  resize then 3x3 conv with ``upsample='resize'`` to avoid checkerboards) ``-> Norm -> Dropout
  -> ReLU``, where decoder layer ``j`` takes the concatenation of the previous decoder output
  and the encoder output of the same resolution (the skips of Sec. 3.2.1, Fig. 3); the last
  layer maps to ``out_channels`` with ``(tanh + 1) / 2``. ``H`` and ``W`` must be divisible by
  ``2^depth`` (32x32 with ``depth=5`` has a 1x1 bottleneck).
* :class:`PatchDiscriminator`: ``n_layers`` 4x4 stride-2 convs (``base * min(2^i, 8)``
  channels, no norm on the first), one 4x4 stride-1 conv, then a 4x4 stride-1 conv to one
  logit channel, all with zero padding 1 (App. 6.1.2; ``n_layers=3`` is the paper's 70x70
  PatchGAN). With ``conditional=True`` it scores the pair ``(source, x)`` concatenated on the
  channel axis (Eq. 1: ``D(x, y)``). :func:`patch_receptive_field` gives the input window of each
  logit (16x16 for ``n_layers=1``, 34x34 for 2, 70x70 for 3); with ``norm='none'`` or
  evaluation-mode batch norm a logit depends on nothing outside it (instance norm and
  training-mode batch norm couple all positions through their statistics).

Weights ~ N(0, 0.02) (Isola et al. App. 6.2).

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the hidden convs and
transposed convs compute in ``dtype`` (params float32); instance / batch norms compute their
statistics in float32 and return float32; the generator's output layer and the patch-logit
conv are float32 layers.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

NORMS = ("instance", "batch", "none")
UPSAMPLES = ("transpose", "resize")
_INIT = nn.initializers.normal(0.02)
_BN_MOMENTUM, _EPS = 0.9, 1e-5
_PAD1 = ((1, 1), (1, 1))
_KERNEL, _PAD = 4, 1  # every PatchGAN conv: 4x4, zero padding 1


def _channels(base: int, i: int) -> int:
    return base * min(2 ** i, 8)


def _check_images(x, who: str, what: str) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{who}: {what} must be [B, H, W, C], got shape {jnp.shape(x)}")


def _check_choice(value: str, choices: tuple, who: str, field: str) -> None:
    if value not in choices:
        raise ValueError(f"{who}: {field} must be one of {list(choices)}, got {value!r}")


def _norm(kind: str, h: jax.Array, train: bool, name: str) -> jax.Array:
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_EPS, name=name)(h)
    if kind == "instance":  # per example and channel, over H, W
        return nn.GroupNorm(num_groups=None, group_size=1, epsilon=_EPS, name=name)(h)
    return h


class UNetGenerator(nn.Module):
    """U-Net generator (Isola et al. 2017, Sec. 3.2.1): ``source [B, H, W, C_in] -> [B, H, W,
    out_channels]`` in ``[0, 1]``.

    Attributes:
      out_channels: channels of the output image.
      base: channels of the first encoder layer (layer ``i`` has ``base * min(2^i, 8)``).
      depth: number of stride-2 encoder layers (and of decoder upsamplings); ``H, W`` must be
        divisible by ``2^depth``.
      norm: ``'instance'``, ``'batch'`` or ``'none'`` (module docstring).
      dropout: dropout rate of the noisy decoder layers (0.5 in the paper; 0 = none).
      dropout_layers: how many decoder layers, from the bottleneck, have dropout (3 in the
        paper); at most ``depth - 1`` (never the output layer).
      upsample: ``'transpose'`` (the paper's) or ``'resize'`` (nearest 2x then 3x3 conv).

    ``__call__(source, train=True, noise=True)``: ``train`` selects batch vs running statistics
    (``norm='batch'`` only); ``noise`` applies dropout (needs ``rngs={'dropout': key}``).
    """

    out_channels: int = 3
    base: int = 64
    depth: int = 5
    norm: str = "instance"
    dropout: float = 0.5
    dropout_layers: int = 3
    upsample: str = "transpose"
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (module docstring)

    def __post_init__(self):
        who = "UNetGenerator"
        _check_choice(self.norm, NORMS, who, "norm")
        _check_choice(self.upsample, UPSAMPLES, who, "upsample")
        if self.out_channels < 1 or self.base < 1 or self.depth < 1:
            raise ValueError(f"{who}: out_channels, base and depth must be >= 1, got out_channels="
                             f"{self.out_channels}, base={self.base}, depth={self.depth}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{who}: dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.dropout_layers <= self.depth - 1:
            raise ValueError(f"{who}: dropout_layers must be in [0, depth - 1] = [0, {self.depth - 1}], "
                             f"got {self.dropout_layers}")
        super().__post_init__()

    def _up(self, h: jax.Array, features: int, name: str, dtype=None) -> jax.Array:
        if self.upsample == "transpose":
            return nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding="SAME", kernel_init=_INIT, dtype=dtype,
                                    name=name)(h)
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), method="nearest")
        return nn.Conv(features, (3, 3), padding="SAME", kernel_init=_INIT, dtype=dtype, name=name)(h)

    @nn.compact
    def __call__(self, source: jax.Array, train: bool = True, noise: bool = True) -> jax.Array:
        _check_images(source, "UNetGenerator", "source")
        _, height, width, _ = source.shape
        if height % 2 ** self.depth or width % 2 ** self.depth:
            raise ValueError(f"UNetGenerator: source H, W = ({height}, {width}) must be divisible by "
                             f"2^depth = {2 ** self.depth} (depth={self.depth})")
        h, skips = 2.0 * source - 1.0, []
        for i in range(self.depth):  # encoder: [B, H/2^(i+1), W/2^(i+1), C_i]
            h = nn.Conv(_channels(self.base, i), (4, 4), strides=2, padding=_PAD1, kernel_init=_INIT,
                        dtype=self.dtype, name=f"enc_{i}")(h)
            if 0 < i < self.depth - 1:
                h = _norm(self.norm, h, train, f"enc_norm_{i}")
            h = nn.leaky_relu(h, 0.2)
            skips.append(h)
        for j in range(self.depth - 1):  # decoder: back to the resolution of skips[-2 - j]
            if j > 0:
                h = jnp.concatenate([h, skips[-1 - j]], axis=-1)
            h = self._up(h, _channels(self.base, self.depth - 2 - j), f"dec_{j}", self.dtype)
            h = _norm(self.norm, h, train, f"dec_norm_{j}")
            if j < self.dropout_layers and self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not noise)(h)
            h = nn.relu(h)
        if self.depth > 1:
            h = jnp.concatenate([h, skips[0]], axis=-1)
        h = self._up(h.astype(jnp.float32), self.out_channels, "out")  # [B, H, W, out_channels], float32 layer
        return (jnp.tanh(h) + 1.0) / 2.0


def patch_receptive_field(n_layers: int) -> tuple[int, int]:
    """``(size, stride)`` of a :class:`PatchDiscriminator` logit's input window: logit ``(i, j)``
    sees input rows ``[i * stride - pad, i * stride - pad + size)`` (likewise columns, clipped to
    the image), with ``pad`` from :func:`patch_window`. For 4x4 kernels with strides
    ``s_1..s_L``: ``size = 1 + 3 * sum_l prod_{m<l} s_m`` (``n_layers=3``: 70)."""
    strides = [2] * n_layers + [1, 1]
    size, jump = 1, 1
    for s in strides:
        size += (_KERNEL - 1) * jump
        jump *= s
    return size, jump


def patch_window(n_layers: int, i: int) -> tuple[int, int]:
    """Input index range ``[lo, hi)`` (unclipped) seen by logit row (or column) ``i``."""
    size, stride = patch_receptive_field(n_layers)
    pad = _PAD * sum(2 ** min(l, n_layers) for l in range(n_layers + 2))  # padding times the jump before each layer
    lo = i * stride - pad
    return lo, lo + size


def patch_logits_shape(n_layers: int, height: int, width: int) -> tuple[int, int]:
    """``(h, w)`` of the patch logits for an ``H x W`` input: each stride-2 layer maps ``n`` to
    ``floor(n / 2)``, each stride-1 layer to ``n - 1`` (4x4 kernel, padding 1)."""
    def size(n: int) -> int:
        for _ in range(n_layers):
            n = (n + 2 * _PAD - _KERNEL) // 2 + 1
        return n - 2
    return size(height), size(width)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, Sec. 3.2.2): ``x [B, H, W, C]`` (and
    ``source [B, H, W, C_s]`` when ``conditional``) ``-> patch logits [B, h, w]``
    (:func:`patch_logits_shape`), each judging one :func:`patch_receptive_field` window.

    Attributes:
      base: channels of the first conv (layer ``i`` has ``base * min(2^i, 8)``).
      n_layers: stride-2 convs (3 = the paper's 70x70 PatchGAN; 1 = 16x16 patches, the size
        that suits 32x32 images).
      norm: ``'batch'`` (the paper's), ``'instance'`` or ``'none'``; never on the first layer nor
        on the logits.
      conditional: score ``concat([source, x], channels)`` (Eq. 1's ``D(x, y)``, Pix2Pix);
        then ``source`` is required, otherwise (CycleGAN, Eq. 1 of Zhu et al. 2017) it must be None.

    ``__call__(x, source=None, train=True)``; ``train`` matters for ``norm='batch'`` only.
    """

    base: int = 64
    n_layers: int = 1
    norm: str = "batch"
    conditional: bool = True
    dtype: Optional[Any] = None  # compute dtype of the hidden convs (module docstring); logits float32

    def __post_init__(self):
        _check_choice(self.norm, NORMS, "PatchDiscriminator", "norm")
        if self.base < 1 or self.n_layers < 0:
            raise ValueError(f"PatchDiscriminator: base must be >= 1 and n_layers >= 0, got base={self.base}, "
                             f"n_layers={self.n_layers}")
        super().__post_init__()

    def _inputs(self, x: jax.Array, source: Optional[jax.Array]) -> jax.Array:
        who = "PatchDiscriminator"
        _check_images(x, who, "x")
        if not self.conditional:
            if source is not None:
                raise ValueError(f"{who}: source given but conditional=False; pass source=None")
            return x
        if source is None:
            raise ValueError(f"{who}: conditional=True needs source [B, H, W, C_s] (the input image)")
        _check_images(source, who, "source")
        if source.shape[:3] != x.shape[:3]:
            raise ValueError(f"{who}: source {source.shape} and x {x.shape} must share [B, H, W]")
        return jnp.concatenate([source, x], axis=-1)

    @nn.compact
    def __call__(self, x: jax.Array, source: Optional[jax.Array] = None, train: bool = True) -> jax.Array:
        h = 2.0 * self._inputs(x, source) - 1.0
        hh, ww = patch_logits_shape(self.n_layers, x.shape[1], x.shape[2])
        if hh < 1 or ww < 1:
            raise ValueError(f"PatchDiscriminator: x of H, W = {x.shape[1:3]} is too small for n_layers="
                             f"{self.n_layers} (patch logits would be {hh}x{ww})")
        for i in range(self.n_layers + 1):
            stride = 2 if i < self.n_layers else 1
            h = nn.Conv(_channels(self.base, i), (_KERNEL, _KERNEL), strides=stride, padding=_PAD1,
                        kernel_init=_INIT, dtype=self.dtype, name=f"conv_{i}")(h)
            if i > 0:
                h = _norm(self.norm, h, train, f"norm_{i}")
            h = nn.leaky_relu(h, 0.2)
        h = nn.Conv(1, (_KERNEL, _KERNEL), strides=1, padding=_PAD1, kernel_init=_INIT, name="logits")(h)
        return h[..., 0]  # [B, h, w]
