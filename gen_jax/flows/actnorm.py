"""ActNorm: per-channel affine map with data-dependent initialization.

Kingma & Dhariwal 2018 (Glow), Sec. 3.1 and Table 1, row "Actnorm":

    forward:  y_{i,j} = s * x_{i,j} + b           (per channel, shared over positions)
    inverse:  x_{i,j} = (y_{i,j} - b) / s
    log-det:  h * w * sum_c log|s_c|

with ``s = exp(logs)`` (positive, so ``log|s| = logs``). "Spatial" is every axis between
the batch and the channel axis: ``h * w`` for images ``[B, H, W, C]``, ``1`` for vectors
``[B, C]``.

Data-dependent init (Glow Sec. 3.1): on the init batch, ``s = 1 / sqrt(var + eps)`` and
``b = -mean * s`` per channel, so the layer's outputs on that batch have zero mean and unit
variance per channel (``eps = 1e-6`` keeps a constant channel finite). The init statistics
are those of the tensor the layer is first called on (through ``forward``, as
``init(..., method='forward')`` does).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.flows.bijector import Bijector

INIT_EPS = 1e-6


def _spatial_size(x: jax.Array) -> int:
    return int(math.prod(x.shape[1:-1]))


class ActNorm(Bijector):
    """See module docstring. Params: ``bias [C]`` (``b``), ``logs [C]`` (``log s``)."""

    @nn.compact
    def _params(self, x):
        if x.ndim < 2:
            raise ValueError(f"ActNorm: input must be [B, ..., C], got shape {x.shape}")
        axes = tuple(range(x.ndim - 1))

        def init_logs(_):
            var = jnp.var(x, axis=axes)
            return -0.5 * jnp.log(var + INIT_EPS)

        logs = self.param("logs", init_logs)

        def init_bias(_):
            return -jnp.mean(x, axis=axes) * jnp.exp(logs)

        bias = self.param("bias", init_bias)
        return bias, logs

    def forward(self, x, cond=None):
        bias, logs = self._params(x)
        y = x * jnp.exp(logs) + bias
        ldj = _spatial_size(x) * jnp.sum(logs)
        return y, jnp.broadcast_to(ldj, (x.shape[0],))

    def inverse(self, y, cond=None):
        bias, logs = self._params(y)
        x = (y - bias) * jnp.exp(-logs)
        ldj = -_spatial_size(y) * jnp.sum(logs)
        return x, jnp.broadcast_to(ldj, (y.shape[0],))
