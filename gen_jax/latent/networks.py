"""Encoder and decoder networks (Flax linen) for latent-variable models.

Encoders map images ``[B, H, W, C]`` (and an optional conditioning vector ``[B, E]``) to the
mean and log-variance of a diagonal Gaussian over the latent, each ``[B, Z]``. Decoders map
latents ``[B, Z]`` (and the optional condition) to per-pixel likelihood parameters
``[B, H, W, F]``; ``F`` is set by the likelihood (see :mod:`gen_jax.latent.objectives`).
The condition is concatenated to the flattened features (encoders) or to the latent
(decoders), as in the conditional VAE of Sohn et al. 2015, Sec. 4.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the hidden dense and
conv layers compute in ``dtype`` (params float32); the output layers (the posterior's mean and
log-variance, the decoder's likelihood parameters) are float32 layers, so everything a loss or
a likelihood reads is float32.

Conv stacks adapt to the image size: they halve the spatial size with stride-2 convolutions
while it is even and larger than 4 (8x8 -> 4x4: one halving; 32x32 -> 4x4: three), using
``features[i]`` channels at stage ``i`` (the last entry repeats if there are more stages).
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Sequence, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Literal["relu", "gelu", "elu", "swish", "tanh", "softplus"]
"""The activation names a config may give (the keys of :data:`ACTIVATIONS`)."""

ACTIVATIONS: dict[str, Callable] = dict(zip(get_args(Activation), (
    nn.relu, nn.gelu, nn.elu, nn.swish, jnp.tanh, nn.softplus)))


def num_halvings(height: int, width: int, min_size: int = 4) -> int:
    """How many times a conv stack halves ``(H, W)``: while both are even and ``> min_size``."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > min_size:
        height, width, n = height // 2, width // 2, n + 1
    return n


def _stage_features(features: Sequence[int], n: int) -> list[int]:
    if not features:
        raise ValueError("conv features must be a non-empty sequence of channel counts")
    return [features[min(i, len(features) - 1)] for i in range(max(n, 1))]


def _concat_cond(h: jax.Array, cond: Optional[jax.Array]) -> jax.Array:
    if cond is None:
        return h
    if cond.ndim != 2 or cond.shape[0] != h.shape[0]:
        raise ValueError(f"condition must be [B, E] with B={h.shape[0]}, got {cond.shape}")
    return jnp.concatenate([h, cond.astype(h.dtype)], axis=-1)


class _GaussianHead(nn.Module):
    latent_dim: int
    gaussian: bool = True

    @nn.compact
    def __call__(self, h):
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        if not self.gaussian:
            return mean
        log_var = nn.Dense(self.latent_dim, name="log_var")(h)
        return mean, log_var


def dense_stack(h: jax.Array, widths: Sequence[int], act: Callable, dtype=None) -> jax.Array:
    """``act(Dense(w_i))`` layers named ``hidden{i}`` computing in ``dtype`` (``None``: float32);
    call inside a compact ``__call__``."""
    for i, width in enumerate(widths):
        h = act(nn.Dense(width, dtype=dtype, name=f"hidden{i}")(h))
    return h


class MLPEncoder(nn.Module):
    """``[B, H, W, C]`` (+ cond ``[B, E]``) -> ``(mean [B, Z], log_var [B, Z])``, or the
    code ``[B, Z]`` alone when ``gaussian=False`` (deterministic autoencoders)."""

    hidden: Sequence[int]
    latent_dim: int
    activation: str = "gelu"
    gaussian: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None):
        act = ACTIVATIONS[self.activation]
        h = _concat_cond(x.reshape(x.shape[0], -1), cond)
        h = dense_stack(h, self.hidden, act, self.dtype)
        return _GaussianHead(self.latent_dim, self.gaussian, name="head")(h)


class MLPDecoder(nn.Module):
    """``z [B, Z]`` (+ cond ``[B, E]``) -> per-pixel parameters ``[B, H, W, out_features]``."""

    hidden: Sequence[int]
    image_shape: tuple[int, int, int]
    out_features: int
    activation: str = "gelu"
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, z: jax.Array, cond: Optional[jax.Array] = None):
        act = ACTIVATIONS[self.activation]
        h = _concat_cond(z, cond)
        h = dense_stack(h, self.hidden, act, self.dtype)
        hh, ww, _ = self.image_shape
        out = nn.Dense(hh * ww * self.out_features, name="out")(h)
        return out.reshape(z.shape[0], hh, ww, self.out_features)


class ConvEncoder(nn.Module):
    """Conv stack (stride-2 halvings to about 4x4) + dense layers -> ``(mean, log_var)``.

    Attributes:
      features: channels per stage.
      hidden: dense widths after flattening (the condition is concatenated before them).
      latent_dim: ``Z``.
      gaussian: ``False`` returns the code ``[B, Z]`` alone (deterministic autoencoders).
    """

    features: Sequence[int]
    hidden: Sequence[int]
    latent_dim: int
    activation: str = "gelu"
    gaussian: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None):
        act = ACTIVATIONS[self.activation]
        n = num_halvings(x.shape[1], x.shape[2])
        feats = _stage_features(self.features, n)
        conv = lambda f, k, name, s=1: nn.Conv(f, (k, k), strides=(s, s), padding="SAME", dtype=self.dtype, name=name)
        h = act(conv(feats[0], 3, "conv_in")(x))
        for i in range(n):
            h = act(conv(feats[i], 4, f"down{i}", 2)(h))
            h = act(conv(feats[i], 3, f"conv{i}")(h))
        h = _concat_cond(h.reshape(h.shape[0], -1), cond)
        h = dense_stack(h, self.hidden, act, self.dtype)
        return _GaussianHead(self.latent_dim, self.gaussian, name="head")(h)


class ConvDecoder(nn.Module):
    """Dense layers to a ``(H / 2^n, W / 2^n)`` feature map, then stride-2 transposed convs
    up to ``(H, W)`` and a 3x3 conv to ``out_features`` per pixel: ``[B, H, W, F]``."""

    features: Sequence[int]
    hidden: Sequence[int]
    image_shape: tuple[int, int, int]
    out_features: int
    activation: str = "gelu"
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, z: jax.Array, cond: Optional[jax.Array] = None):
        act = ACTIVATIONS[self.activation]
        hh, ww, _ = self.image_shape
        n = num_halvings(hh, ww)
        feats = _stage_features(self.features, n)
        dt = self.dtype
        h = _concat_cond(z, cond)
        h = dense_stack(h, self.hidden, act, dt)
        h0, w0 = hh // 2 ** n, ww // 2 ** n
        h = act(nn.Dense(h0 * w0 * feats[-1], dtype=dt, name="to_map")(h)).reshape(z.shape[0], h0, w0, feats[-1])
        for i in reversed(range(n)):
            h = act(nn.Conv(feats[i], (3, 3), padding="SAME", dtype=dt, name=f"conv{i}")(h))
            h = act(nn.ConvTranspose(feats[i], (4, 4), strides=(2, 2), padding="SAME", dtype=dt, name=f"up{i}")(h))
        h = act(nn.Conv(feats[0], (3, 3), padding="SAME", dtype=dt, name="conv_out")(h))
        return nn.Conv(self.out_features, (3, 3), padding="SAME", name="out")(h)
