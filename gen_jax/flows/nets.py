"""Networks inside the flows: the coupling conditioners and the zero-initialized outputs.

The bijectors only need *some* function of their conditioning half; these are the ones the
models use.

* :class:`ZeroConv` / :class:`ZeroDense`: Glow's ``Conv2DZeros`` (Kingma & Dhariwal 2018,
  Sec. 3.3: "we initialize the last convolution of each NN() with zeros, such that each
  affine coupling layer initially performs an identity function"): kernel and bias start at
  zero and the output is scaled by a learned ``exp(3 * logs)`` (zero-init) per feature.
* :class:`ConvNet`: Glow's NN() (Sec. 3.3): 3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3
  :class:`ZeroConv`. (Glow normalizes its hidden layers with ActNorm; here they are plain
  convolutions.) RealNVP uses deeper ResNets with batch norm (Dinh et al. 2017, Sec. 4.1);
  ``num_blocks`` adds residual 3x3 blocks in the hidden width instead.
* :class:`MLPNet`: the vector version, Dense -> ReLU (x ``depth``) -> :class:`ZeroDense`.

Conditioning ``cond [B, E]`` (class-conditional flows) enters as a learned bias of the first
hidden layer, broadcast over positions.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the hidden convs /
dense layers compute in ``dtype`` (params float32); the zero-initialized output layer (the
shift and log-scale a coupling reads) and the condition bias are float32 layers, so the
log-determinants and everything after them are float32.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

LOGSCALE_FACTOR = 3.0


class ZeroConv(nn.Module):
    """3x3 convolution, zero-initialized, output times ``exp(3 logs)`` (Glow ``Conv2DZeros``)."""

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        y = nn.Conv(self.features, (k, k), padding="SAME", kernel_init=nn.initializers.zeros)(x)
        logs = self.param("logs", nn.initializers.zeros, (self.features,))
        return y * jnp.exp(LOGSCALE_FACTOR * logs)


class ZeroDense(nn.Module):
    """Dense layer, zero-initialized, output times ``exp(3 logs)``."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Dense(self.features, kernel_init=nn.initializers.zeros)(x)
        logs = self.param("logs", nn.initializers.zeros, (self.features,))
        return y * jnp.exp(LOGSCALE_FACTOR * logs)


def _cond_bias(cond: Optional[jax.Array], features: int, ndim: int) -> jax.Array | float:
    if cond is None:
        return 0.0
    b = nn.Dense(features, name="cond_proj")(cond)  # [B, F]
    return b.reshape(b.shape[:1] + (1,) * (ndim - 2) + b.shape[1:])


class ConvNet(nn.Module):
    """``[B, H, W, Cin] (+ cond [B, E]) -> [B, H, W, out_features]`` (see module docstring)."""

    hidden: int
    out_features: int
    num_blocks: int = 0
    dtype: Optional[Any] = None  # compute dtype of the hidden convs (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
        conv = lambda k: nn.Conv(self.hidden, (k, k), padding="SAME", dtype=self.dtype)
        h = conv(3)(x)
        h = nn.relu(h + _cond_bias(cond, self.hidden, 4))
        h = nn.relu(conv(1)(h))
        for _ in range(self.num_blocks):
            r = nn.relu(conv(3)(h))
            h = nn.relu(h.astype(jnp.float32) + conv(3)(r))  # float32 residual stream
        return ZeroConv(self.out_features)(h.astype(jnp.float32))


class MLPNet(nn.Module):
    """``[B, Din] (+ cond [B, E]) -> [B, out_features]`` (see module docstring)."""

    hidden: int
    out_features: int
    depth: int = 2
    dtype: Optional[Any] = None  # compute dtype of the hidden layers (gen_jax.nn.precision)

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
        h = nn.Dense(self.hidden, dtype=self.dtype)(x)
        h = nn.relu(h + _cond_bias(cond, self.hidden, 2))
        for _ in range(self.depth - 1):
            h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
        return ZeroDense(self.out_features)(h.astype(jnp.float32))


def coupling_net(ndim: int, hidden: int, out_features: int, num_blocks: int = 0, dtype=None) -> nn.Module:
    """The conditioner for inputs of rank ``ndim``: :class:`ConvNet` for images (4),
    :class:`MLPNet` for vectors (2); hidden layers compute in ``dtype`` (``None``: float32)."""
    if ndim == 4:
        return ConvNet(hidden, out_features, num_blocks, dtype=dtype)
    if ndim == 2:
        return MLPNet(hidden, out_features, dtype=dtype)
    raise ValueError(f"coupling networks take [B, H, W, C] images or [B, D] vectors, got rank {ndim}")
