"""A residual MLP denoiser for vectors ``x_t [B, Z]`` (latent diffusion over a VAE's latents).

The vector analogue of the DDPM U-Net (:mod:`gen_jax.nn.unet`, Ho et al. 2020, App. B) for
data without spatial structure, as used for diffusion in a low-dimensional latent space
(Rombach et al. 2022, Sec. 3.2, replace the U-Net by whatever suits the latent's shape):

* **Time embedding.** ``e(t) = timestep_embedding(time_scale * t, time_dim)`` (the
  sinusoidal embedding of Vaswani et al. 2017, Sec. 3.5, shared with the U-Net), then
  ``Dense(width) -> SiLU -> Dense(width)`` gives ``temb [B, width]``.
* **Label conditioning** (``num_classes > 0``): a learned embedding with ``num_classes + 1``
  rows is added to ``temb``; row ``num_classes`` (:attr:`MLPDenoiserConfig.null_label`) is
  the null class of classifier-free guidance (Ho & Salimans 2022, Sec. 3.2).
* **Residual block** (pre-norm, as the U-Net's residual block with Dense for Conv)::

      r = Dense(SiLU(LayerNorm(h)));  r += Dense(SiLU(temb))
      r = Dense(Dropout(SiLU(LayerNorm(r))))      # zero-initialized
      h = h + r

* **Fourier input features** (``fourier_exponents``, Kingma et al. 2021, VDM App. C): the
  input is ``[x, sin(2^n pi x), cos(2^n pi x)]`` for each ``n``. With data on a lattice of
  spacing ``2^-m`` (e.g. 17 levels on ``[-1, 1]``: spacing ``2^-3``), ``n = m + 1`` has the
  lattice's period, so the network sees each value's offset from its nearest level -- what it
  needs to denoise at small ``t``, where the variational bound's terms are decided.
* **Output**: ``Dense(SiLU(LayerNorm(h)))`` to ``out_features`` (``Z``), zero-initialized, so
  the network outputs 0 at initialization (STYLE.md: start safe).

Shapes: ``x [B, Z]``, ``t [B]`` (int steps ``0..T-1`` or floats), ``label`` int ``[B]`` or
``None`` (the null class); output ``[B, out_features]``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import Checked, typed
from gen_jax.nn.remat import remat_block
from gen_jax.nn.unet import timestep_embedding


@dataclasses.dataclass(frozen=True)
class MLPDenoiserConfig(Checked):
    """``config.model.denoiser`` (``typed(MLPDenoiserConfig, cfg, 'config.model.denoiser')``).

    Attributes:
      width: hidden width of every residual block.
      num_blocks: residual blocks.
      time_dim: width of the sinusoidal time embedding (even, >= 4).
      dropout: dropout rate inside the residual blocks (train mode only).
      time_scale: the embedding sees ``time_scale * t`` (1 for integer steps ``0..T-1``).
      fourier_exponents: exponents ``n`` of the Fourier input features (empty: none).
      num_classes: ``> 0`` adds a label embedding with ``num_classes + 1`` rows (set by the
        model bundle from the dataset when it is class-conditional; 0 = unconditional).
    """

    width: int = 256
    num_blocks: int = 3
    time_dim: int = 128
    dropout: float = 0.0
    time_scale: float = 1.0
    num_classes: int = 0
    fourier_exponents: tuple[int, ...] = ()

    PATH = "config.model.denoiser"

    def __post_init__(self):
        self.positive("width", "num_blocks", "time_scale")
        self.require(self.time_dim >= 4 and self.time_dim % 2 == 0, "time_dim",
                     f"must be even and >= 4 (sinusoidal embedding), got {self.time_dim}")
        self.in_range("dropout", 0.0, 1.0, hi_open=True)
        self.require(all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 16
                         for n in self.fourier_exponents), "fourier_exponents",
                     f"must be ints in [0, 16], got {self.fourier_exponents!r}")
        self.nonnegative("num_classes")

    @property
    def null_label(self) -> int:
        """The reserved label id of the null (unconditional) class: ``num_classes``."""
        return self.num_classes


def as_mlp_denoiser_config(cfg) -> MLPDenoiserConfig:
    """``cfg`` as a :class:`MLPDenoiserConfig` (errors name ``config.model.denoiser.<field>``)."""
    return typed(MLPDenoiserConfig, cfg, "config.model.denoiser")


class ResidualBlock(nn.Module):
    """``h + Dense0(Dropout(SiLU(LN(Dense(SiLU(LN(h))) + Dense(SiLU(temb))))))``; ``[B, W]``."""

    width: int
    dropout: float = 0.0
    dtype: Optional[Any] = None  # compute dtype of the dense layers (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, h, temb, train: bool = False):
        r = nn.Dense(self.width, dtype=self.dtype, name="dense1")(nn.silu(nn.LayerNorm(name="norm1")(h)))
        r = r + nn.Dense(self.width, dtype=self.dtype, name="temb_proj")(nn.silu(temb))
        r = nn.silu(nn.LayerNorm(name="norm2")(r))
        r = nn.Dropout(self.dropout, deterministic=not train)(r)
        r = nn.Dense(self.width, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="dense2")(r)
        return (h + r).astype(jnp.float32)  # the residual stream stays float32


class MLPDenoiser(nn.Module):
    """``(x [B, Z], t [B], label [B] | None) -> [B, out_features]`` (module docstring)."""

    cfg: MLPDenoiserConfig
    out_features: int
    dtype: Optional[Any] = None  # mixed precision: the blocks' matmuls in this dtype; head and norms float32
    remat: str = "none"  # 'none' | 'full' | 'dots_saveable' per residual block (gen_jax.nn.remat)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, label: Optional[jax.Array] = None,
                 train: bool = False) -> jax.Array:
        cfg = self.cfg
        if x.ndim != 2:
            raise ValueError(f"x must be [B, Z], got shape {x.shape}")
        b = x.shape[0]
        if t.shape != (b,):
            raise ValueError(f"t must be [B] with B={b} (from x {x.shape}), got shape {t.shape}")
        temb = timestep_embedding(cfg.time_scale * t.astype(jnp.float32), cfg.time_dim)
        temb = nn.Dense(cfg.width, name="temb0")(temb)
        temb = nn.Dense(cfg.width, name="temb1")(nn.silu(temb))
        if cfg.num_classes > 0:
            if label is None:
                label = jnp.full((b,), cfg.null_label, jnp.int32)
            if label.shape != (b,):
                raise ValueError(f"label must be [B] with B={b}, got shape {label.shape}")
            temb = temb + nn.Embed(cfg.num_classes + 1, cfg.width, name="label_embed")(
                label.astype(jnp.int32))
        elif label is not None:
            raise ValueError("label given to an unconditional MLPDenoiser (num_classes=0)")
        if cfg.fourier_exponents:
            freqs = jnp.pi * 2.0 ** jnp.asarray(cfg.fourier_exponents, jnp.float32)  # [F]
            ang = x[..., None] * freqs  # [B, Z, F]
            x = jnp.concatenate([x, jnp.sin(ang).reshape(b, -1), jnp.cos(ang).reshape(b, -1)], -1)
        h = nn.Dense(cfg.width, dtype=self.dtype, name="dense_in")(x).astype(jnp.float32)
        block = remat_block(ResidualBlock, self.remat, static_argnums=(3,))  # train
        for i in range(cfg.num_blocks):
            h = block(cfg.width, cfg.dropout, self.dtype, name=f"block{i}")(h, temb, train)
        h = nn.silu(nn.LayerNorm(name="norm_out")(h))
        return nn.Dense(self.out_features, kernel_init=nn.initializers.zeros, name="dense_out")(h)
