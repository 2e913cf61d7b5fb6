"""The DDPM U-Net denoiser (Ho et al. 2020, App. B), with class, embedding and text conditioning.

Architecture (Ho et al. 2020, App. B: "a U-Net backbone similar to an unmasked PixelCNN++",
Wide-ResNet blocks, group normalization, self-attention at 16x16, sinusoidal time embedding):

* **Time embedding.** ``e(t) = [sin(t w_0), ..., sin(t w_{d/2-1}), cos(t w_0), ...]`` with
  ``w_i = 10000^{-i / (d/2 - 1)}`` (the Transformer position encoding of Vaswani et al. 2017,
  Sec. 3.5, of the *float* time ``time_scale * t``; ``d = ch``), followed by
  ``Dense(4 ch) -> SiLU -> Dense(4 ch)``.
* **Conditioning** is added to the time embedding ``temb``: a learned label embedding
  (``num_classes + 1`` rows; row ``num_classes`` is the reserved *null* class of
  classifier-free guidance, Ho & Salimans 2022, Sec. 3.2) and/or ``Dense(emb)`` of a
  condition vector ``emb [B, emb_dim]``. A condition *sequence* ``context [B, L, E]`` with
  padding mask ``[B, L]`` is read by cross-attention after each self-attention block
  (as in Rombach et al. 2022, Sec. 3.3).
* **Residual block** (Zagoruyko & Komodakis 2016 wide ResNet, as in the DDPM code)::

      h = Conv3x3(SiLU(GN(x)));  h += Dense(SiLU(temb))[:, None, None, :]
      h = Conv3x3(Dropout(SiLU(GN(h))))          # zero-initialized
      out = h + (x if C_in == C_out else Dense1x1(x))

* **Attention block**: ``x + FeatureMapAttention(GN(x))`` (zero-initialized output
  projection), optionally followed by ``x + FeatureMapAttention(GN(x), context, mask)``.
* **Down path**: ``conv_in``; per level ``i`` (resolution ``H / 2^i``), ``num_res_blocks``
  residual blocks of width ``ch * ch_mult[i]`` (each followed by attention if the current
  resolution is in ``attn_resolutions``), then a stride-2 3x3 conv (not after the last level).
  Every block output is kept as a skip connection.
* **Middle**: residual block, attention, residual block.
* **Up path**: per level in reverse, ``num_res_blocks + 1`` residual blocks on
  ``concat(h, skip)`` (+ attention), then nearest-neighbour 2x upsampling and a 3x3 conv
  (not after level 0).
* **Output**: ``GN -> SiLU -> Conv3x3`` to ``out_channels`` (``C``, or ``2 C`` for learned
  variances), zero-initialized, so the network outputs 0 at initialization.

With ``ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,)`` on 32x32x3
this has 35.7M parameters (DDPM CIFAR-10, Ho et al. 2020, Sec. 4 / App. B).

Group normalization (Wu & He 2018, Eq. 1-3) is :class:`gen_jax.nn.norm.GroupNorm`: the same
function as ``flax.linen.GroupNorm``, fused with the SiLU that follows it in the residual
blocks and the output head, with a written-out backward pass (faster on CPU:
``python -m experiments.benchmarks.unet_step``).

Layout is NHWC throughout: ``x [B, H, W, C]``, ``t [B]``, output ``[B, H, W, out_channels]``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import Checked, typed
from gen_jax.nn.attention import FeatureMapAttention
from gen_jax.nn.conditioning import check_denoiser_inputs, embed_labels
from gen_jax.nn.norm import GroupNorm
from gen_jax.nn.remat import remat_block
from gen_jax.nn.partitioning import constrain


@dataclasses.dataclass(frozen=True)
class UNetConfig(Checked):
    """``config.model.unet``: the DDPM U-Net (built with :func:`as_unet_config`).

    Attributes:
      ch: base channel count (width at the full resolution).
      ch_mult: width multiplier per resolution level; ``len(ch_mult) - 1`` halvings.
      num_res_blocks: residual blocks per level on the down path (``+1`` on the up path).
      attn_resolutions: feature-map heights (e.g. ``(16,)``) at which self-attention is used.
      dropout: dropout rate inside residual blocks (train mode only).
      num_groups: GroupNorm groups; every width ``ch * m`` must be divisible by it (32 in the
        paper; use fewer for narrow networks).
      num_heads: attention heads (every attended width must be divisible by it).
      num_classes: ``> 0`` adds a label embedding with ``num_classes + 1`` rows; id
        ``num_classes`` (:attr:`null_label`, :func:`gen_jax.nn.conditioning.null_label`) is
        the unconditional / null class.
      emb_dim: ``> 0`` expects a condition vector ``emb [B, emb_dim]``.
      context_dim: ``> 0`` adds cross-attention to a condition sequence ``[B, L, context_dim]``.
      out_channels: output channels; ``0`` = the input's ``C`` (use ``2 C`` for learned
        variances).
      time_scale: the embedding sees ``time_scale * t`` (1 for integer steps ``0..T-1``; e.g.
        1000 for continuous ``t`` in ``[0, 1]``).
    """

    PATH = "config.model.unet"

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    num_heads: int = 1
    num_classes: int = 0
    emb_dim: int = 0
    context_dim: int = 0
    out_channels: int = 0
    time_scale: float = 1.0

    def __post_init__(self):
        self.positive("ch")
        self.require(self.ch % 2 == 0, "ch", f"must be even (sinusoidal time embedding of width ch), got {self.ch}")
        self.require(bool(self.ch_mult) and all(m >= 1 for m in self.ch_mult), "ch_mult",
                     f"needs positive multipliers, got {self.ch_mult}")
        self.positive("num_res_blocks")
        self.require(all(r >= 1 for r in self.attn_resolutions), "attn_resolutions",
                     f"resolutions must be >= 1, got {self.attn_resolutions}")
        self.in_range("dropout", 0.0, 1.0, hi_open=True)
        self.positive("num_groups")
        for m in sorted(set(self.ch_mult)):
            self.require((self.ch * m) % self.num_groups == 0, "num_groups",
                         f"channel count ch * ch_mult = {self.ch} * {m} = {self.ch * m} is not "
                         f"divisible by num_groups={self.num_groups}; use a divisor of "
                         f"{math.gcd(*[self.ch * k for k in self.ch_mult])}")
            self.require((self.ch * m) % max(self.num_heads, 1) == 0, "num_heads",
                         f"channel count {self.ch * m} is not divisible by num_heads={self.num_heads}")
        self.positive("num_heads")
        self.nonnegative("num_classes", "emb_dim", "context_dim", "out_channels")
        self.positive("time_scale")

    @property
    def null_label(self) -> int:
        """The reserved label id of the null (unconditional) class: ``num_classes``."""
        return self.num_classes

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    def resolutions(self, height: int) -> tuple[int, ...]:
        """Feature-map heights of the levels for an input of height ``height``."""
        return tuple(height // 2 ** i for i in range(self.num_levels))

    def check_image_shape(self, image_shape) -> None:
        """Raises ``ValueError`` unless ``image_shape = (H, W, C)`` fits this U-Net: ``H`` and
        ``W`` divisible by ``2^(len(ch_mult) - 1)``, every attention resolution reached."""
        if len(image_shape) != 3:
            raise ValueError(f"image shape must be (H, W, C), got {tuple(image_shape)}")
        h, w, _ = image_shape
        f = 2 ** (self.num_levels - 1)
        if h % f or w % f:
            raise ValueError(
                f"image size {h}x{w} is not divisible by 2^(len(ch_mult) - 1) = {f} "
                f"(config.model.unet.ch_mult={self.ch_mult} halves the resolution {self.num_levels - 1} times)")
        missing = sorted(set(self.attn_resolutions) - set(self.resolutions(h)))
        if missing:
            raise ValueError(
                f"config.model.unet.attn_resolutions {missing} never occur: the feature-map heights "
                f"for {h}x{w} images are {self.resolutions(h)}")


def as_unet_config(cfg) -> UNetConfig:
    """``cfg`` as a :class:`UNetConfig` read at ``config.model.unet`` (unknown / mistyped
    fields raise ``ConfigError`` naming them)."""
    return typed(UNetConfig, cfg, "config.model.unet")


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of (float) times, Vaswani et al. 2017, Sec. 3.5 (as in DDPM).

    ``emb[b] = [sin(t_b w_0), ..., sin(t_b w_{h-1}), cos(t_b w_0), ..., cos(t_b w_{h-1})]``,
    ``w_i = max_period^{-i / (h - 1)}``, ``h = dim / 2``.

    Args:
      t: ``[B]`` times (any real dtype; integers are cast to float32).
      dim: even embedding width.

    Returns:
      ``[B, dim]`` float32.
    """
    if t.ndim != 1:
        raise ValueError(f"t must be [B], got shape {t.shape}")
    if dim % 2 or dim < 4:
        raise ValueError(f"timestep embedding width must be even and >= 4, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]  # [B, half]
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def _conv(features: int, kernel: int = 3, stride: int = 1, zero: bool = False, name: Optional[str] = None,
          dtype=None):
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding="SAME",
                   kernel_init=nn.initializers.zeros if zero else nn.initializers.lecun_normal(),
                   dtype=dtype, name=name)


class ResBlock(nn.Module):
    """Wide-ResNet block with time-embedding injection (see the module docstring)."""

    out_ch: int
    num_groups: int
    dropout: float
    dtype: Optional[Any] = None  # compute dtype of the convs/dense layers (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = GroupNorm(self.num_groups, silu=True, name="norm1")(x)
        h = _conv(self.out_ch, name="conv1", dtype=self.dtype)(h)
        h = h + nn.Dense(self.out_ch, dtype=self.dtype, name="temb_proj")(nn.silu(temb))[:, None, None, :]
        h = constrain(h, "batch", None, None, "mlp")  # TP: conv1 column-, conv2 row-parallel
        h = GroupNorm(self.num_groups, silu=True, name="norm2")(h)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = _conv(self.out_ch, zero=True, name="conv2", dtype=self.dtype)(h)
        if x.shape[-1] != self.out_ch:
            x = nn.Dense(self.out_ch, dtype=self.dtype, name="shortcut")(x)
        return (x + h).astype(jnp.float32)  # the residual stream stays float32


class AttnBlock(nn.Module):
    """``x + SelfAttn(GN(x))`` then, with a context, ``x + CrossAttn(GN(x), context, mask)``."""

    num_groups: int
    num_heads: int
    cross: bool = False
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x, context=None, mask=None):
        x = x + FeatureMapAttention(self.num_heads, dtype=self.dtype, name="self_attn")(
            GroupNorm(self.num_groups, name="norm")(x))
        if self.cross:
            x = x + FeatureMapAttention(self.num_heads, dtype=self.dtype, name="cross_attn")(
                GroupNorm(self.num_groups, name="cross_norm")(x), context, mask)
        return x


class UNet(nn.Module):
    """The DDPM U-Net denoiser ``(x_t, t, cond) -> [B, H, W, out_channels]``.

    Attributes:
      config: a :class:`UNetConfig`.
    """

    config: UNetConfig
    dtype: Optional[Any] = None  # mixed precision: convs/matmuls in this dtype (gen_jax.nn.precision)
    remat: str = "none"  # 'none' | 'full' | 'dots_saveable' per ResBlock / AttnBlock (gen_jax.nn.remat)

    def _check_inputs(self, x, t, label, context, context_mask, emb):
        cfg = self.config
        check_denoiser_inputs(cfg, x, t, label, net="U-Net", path="config.model.unet")
        b = x.shape[0]
        if cfg.emb_dim > 0:
            if emb is None or emb.shape != (b, cfg.emb_dim):
                raise ValueError(f"emb must be [B, emb_dim] = [{b}, {cfg.emb_dim}], got "
                                 f"{None if emb is None else emb.shape}")
        elif emb is not None:
            raise ValueError("emb given but config.model.unet.emb_dim=0 (no embedding conditioning)")
        if cfg.context_dim > 0:
            if context is None or context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg.context_dim:
                raise ValueError(f"context must be [B, L, context_dim] = [{b}, L, {cfg.context_dim}], got "
                                 f"{None if context is None else context.shape}")
            if context_mask is not None and context_mask.shape != context.shape[:2]:
                raise ValueError(f"context_mask must be [B, L] = {list(context.shape[:2])} (True = real "
                                 f"token), got shape {context_mask.shape}")
        elif context is not None or context_mask is not None:
            raise ValueError("context given but config.model.unet.context_dim=0 (no cross-attention)")

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, label: Optional[jax.Array] = None,
                 context: Optional[jax.Array] = None, context_mask: Optional[jax.Array] = None,
                 emb: Optional[jax.Array] = None, *, train: bool) -> jax.Array:
        """Denoiser output.

        Args:
          x: noisy images ``[B, H, W, C]``.
          t: times ``[B]`` (int steps ``0..T-1`` or floats; embedded as float ``time_scale t``).
          label: int ``[B]`` class ids in ``0..num_classes`` (``num_classes`` = null class);
            required iff ``num_classes > 0``.
          context: condition sequence ``[B, L, context_dim]``; required iff ``context_dim > 0``.
          context_mask: boolean ``[B, L]``, True = real token (default: all real).
          emb: condition vector ``[B, emb_dim]``; required iff ``emb_dim > 0``.
          train: enables dropout (needs an ``rngs={'dropout': key}``).

        Returns:
          ``[B, H, W, out_channels]`` (``out_channels = C`` when the config says 0).
        """
        cfg = self.config
        t = jnp.asarray(t)
        self._check_inputs(x, t, label, context, context_mask, emb)
        out_ch = cfg.out_channels or x.shape[-1]
        tdim = 4 * cfg.ch
        cross = cfg.context_dim > 0

        # Time (+ condition) embedding [B, 4 ch].
        temb = timestep_embedding(cfg.time_scale * t.astype(jnp.float32), cfg.ch)
        temb = nn.Dense(tdim, name="temb_dense0")(temb)
        temb = nn.Dense(tdim, name="temb_dense1")(nn.silu(temb))
        if cfg.num_classes > 0:
            temb = temb + embed_labels(label, cfg.num_classes, tdim, null=True, name="label_embed")
        if cfg.emb_dim > 0:
            temb = temb + nn.Dense(tdim, name="emb_proj")(emb.astype(jnp.float32))

        res_cls = remat_block(ResBlock, self.remat, static_argnums=(3,))  # train
        attn_cls = remat_block(AttnBlock, self.remat)
        res = lambda ch, name: res_cls(ch, cfg.num_groups, cfg.dropout, self.dtype, name=name)
        attn = lambda name: attn_cls(cfg.num_groups, cfg.num_heads, cross, self.dtype, name=name)

        # Down path.
        h = _conv(cfg.ch, name="conv_in")(x)
        hs = [h]
        for i, mult in enumerate(cfg.ch_mult):
            for j in range(cfg.num_res_blocks):
                h = res(cfg.ch * mult, f"down{i}_res{j}")(h, temb, train)
                if h.shape[1] in cfg.attn_resolutions:
                    h = attn(f"down{i}_attn{j}")(h, context, context_mask)
                hs.append(h)
            if i != cfg.num_levels - 1:
                h = _conv(h.shape[-1], stride=2, name=f"down{i}_downsample", dtype=self.dtype)(h).astype(jnp.float32)
                hs.append(h)

        # Middle.
        h = res(h.shape[-1], "mid_res0")(h, temb, train)
        h = attn("mid_attn")(h, context, context_mask)
        h = res(h.shape[-1], "mid_res1")(h, temb, train)

        # Up path.
        for i in reversed(range(cfg.num_levels)):
            for j in range(cfg.num_res_blocks + 1):
                h = res(cfg.ch * cfg.ch_mult[i], f"up{i}_res{j}")(
                    jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
                if h.shape[1] in cfg.attn_resolutions:
                    h = attn(f"up{i}_attn{j}")(h, context, context_mask)
            if i != 0:
                b, hh, ww, c = h.shape
                h = jnp.broadcast_to(h[:, :, None, :, None, :], (b, hh, 2, ww, 2, c)).reshape(b, 2 * hh, 2 * ww, c)
                h = _conv(c, name=f"up{i}_upsample", dtype=self.dtype)(h).astype(jnp.float32)
        assert not hs

        h = GroupNorm(cfg.num_groups, silu=True, name="norm_out")(h)
        return _conv(out_ch, zero=True, name="conv_out")(h)
