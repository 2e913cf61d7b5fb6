"""Class-conditional batch normalization (de Vries et al. 2017, "Modulating early visual
processing by language", Sec. 3.1, Eq. 2-3; the conditional BN of the projection-GAN
generator, Miyato & Koyama 2018, Sec. 4).

For features ``x [B, ..., C]`` and labels ``y [B]``::

    xhat = (x - mu) / sqrt(var + eps)            (batch norm without its own affine)
    out  = gamma[y] * xhat + beta[y]             (per-class scale and shift, [num_classes, C])

``mu, var [C]`` are the batch statistics over every axis but the last in training
(``train=True``; the running averages in ``'batch_stats'`` are updated with
``momentum``, so ``apply`` needs ``mutable=['batch_stats']``) and the running averages in
evaluation (``train=False``). ``gamma`` is initialized to 1 and ``beta`` to 0, so at
initialization the layer is a plain batch norm.

Labels must lie in ``[0, num_classes)``. Their values cannot be checked under ``jit`` (an
out-of-range id gathers NaN rows: ``jnp.take``'s default ``'fill'`` mode); the GAN model
checks them where the batch enters (``gen_jax.gan.model``). Only their shape is checked here.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ConditionalBatchNorm(nn.Module):
    """``__call__(x [B, ..., C], label int [B], train) -> [B, ..., C]``.

    Variables: ``params/{gamma, beta}/embedding [num_classes, C]``;
    ``batch_stats/bn/{mean, var} [C]``.
    """

    num_classes: int
    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, label: jax.Array, train: bool) -> jax.Array:
        if self.num_classes < 1:
            raise ValueError(f"ConditionalBatchNorm: num_classes must be >= 1, got {self.num_classes}")
        if x.ndim < 2:
            raise ValueError(f"ConditionalBatchNorm: x must be [B, ..., C], got shape {x.shape}")
        label = jnp.asarray(label)
        if label.shape != (x.shape[0],) or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(f"ConditionalBatchNorm: label must be int [B] = [{x.shape[0]}], "
                             f"got {label.dtype} {label.shape}")
        c = x.shape[-1]
        xhat = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
                            use_scale=False, use_bias=False, name="bn")(x)
        gamma = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.ones_init(), name="gamma")(label)
        beta = nn.Embed(self.num_classes, c, embedding_init=nn.initializers.zeros_init(), name="beta")(label)
        bshape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        return xhat * gamma.reshape(bshape) + beta.reshape(bshape)
