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
"""
from __future__ import annotations

from typing import Optional

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

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
        h = nn.Conv(self.hidden, (3, 3), padding="SAME")(x)
        h = nn.relu(h + _cond_bias(cond, self.hidden, 4))
        h = nn.relu(nn.Conv(self.hidden, (1, 1))(h))
        for _ in range(self.num_blocks):
            r = nn.relu(nn.Conv(self.hidden, (3, 3), padding="SAME")(h))
            h = nn.relu(h + nn.Conv(self.hidden, (3, 3), padding="SAME")(r))
        return ZeroConv(self.out_features)(h)


class MLPNet(nn.Module):
    """``[B, Din] (+ cond [B, E]) -> [B, out_features]`` (see module docstring)."""

    hidden: int
    out_features: int
    depth: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
        h = nn.Dense(self.hidden)(x)
        h = nn.relu(h + _cond_bias(cond, self.hidden, 2))
        for _ in range(self.depth - 1):
            h = nn.relu(nn.Dense(self.hidden)(h))
        return ZeroDense(self.out_features)(h)


def coupling_net(ndim: int, hidden: int, out_features: int, num_blocks: int = 0) -> nn.Module:
    """The conditioner for inputs of rank ``ndim``: :class:`ConvNet` for images (4),
    :class:`MLPNet` for vectors (2)."""
    if ndim == 4:
        return ConvNet(hidden, out_features, num_blocks)
    if ndim == 2:
        return MLPNet(hidden, out_features)
    raise ValueError(f"coupling networks take [B, H, W, C] images or [B, D] vectors, got rank {ndim}")
