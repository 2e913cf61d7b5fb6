"""Group normalization (Wu & He 2018, Eqs. 1-3), optionally fused with SiLU, with a hand-written VJP.

For ``x [B, *S, C]`` (``S`` the spatial axes, possibly none) and ``G`` groups of ``C / G``
channels, with ``mu_bg, var_bg`` the mean and variance over ``S`` and the channels of group
``g`` (``N = |S| C / G`` values)::

    xhat = (x - mu_bg) / sqrt(var_bg + eps)        (Eqs. 1-2)
    u    = gamma_c xhat + beta_c                   (Eq. 3)
    y    = u            or   y = SiLU(u) = u sigmoid(u)   (Elfwing et al. 2018; ``silu=True``)

The statistics come from per-channel moments ``E_S[x], E_S[x^2]`` pooled per group (no
``[.., G, C/G]`` reshape of the feature map), and the forward pass is one affine pass
``u = x a_bc + s_bc``. It computes the same function as ``flax.linen.GroupNorm`` (followed by
``nn.silu``).

The backward pass is written out (``jax.custom_vjp``), with ``du = dy * SiLU'(u)``,
``SiLU'(u) = s (1 + u (1 - s))``, ``s = sigmoid(u)`` (``u`` recomputed from ``x``), and the
per-channel sums ``S1_bc = sum_S du``, ``S2_bc = sum_S du (x - mu_bg)``::

    dbeta_c  = sum_b S1_bc
    dgamma_c = sum_b inv_bg S2_bc
    P_bg = (1/N) sum_{c in g} gamma_c S1_bc          = mean_g(dxhat)
    Q_bg = (inv_bg/N) sum_{c in g} gamma_c S2_bc     = mean_g(dxhat xhat)
    dx   = a_bc du - inv_bg^2 Q_bg (x - mu_bg) - inv_bg P_bg

(the standard normalization gradient ``dx = inv (dxhat - mean(dxhat) - xhat mean(dxhat xhat))``
with ``dxhat = gamma du``), so only ``x`` and the ``[B, G]`` statistics are saved, the
per-element work is two short passes over the feature map, and the ``[B, G] -> [B, C]``
coefficients are small arrays. Written out because XLA's CPU fusion of the autodiff graph of
a U-Net's norm chain recomputed long elementwise chains in several consumers
(``experiments/benchmarks/unet_profile.py``).
"""
from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check(x: jax.Array, num_groups: int) -> None:
    if x.ndim < 2:
        raise ValueError(f"GroupNorm: x must be [B, ..., C], got shape {x.shape}")
    if x.shape[-1] % num_groups:
        raise ValueError(f"GroupNorm: {x.shape[-1]} channels are not divisible by num_groups={num_groups} "
                         "(config.model.unet.num_groups)")


def _pool(v: jax.Array, g: int) -> jax.Array:
    """``[B, C] -> [B, G]``: sum over the channels of each group."""
    b, c = v.shape
    return v.reshape(b, g, c // g).sum(-1)


def _expand(v: jax.Array, c: int) -> jax.Array:
    """``[B, G] -> [B, C]``: each group's value on its channels."""
    b, g = v.shape
    return jnp.broadcast_to(v[:, :, None], (b, g, c // g)).reshape(b, c)


def _bcast(v: jax.Array, ndim: int) -> jax.Array:
    """``[B, C] -> [B, 1, ..., 1, C]`` against a ``ndim``-dimensional feature map."""
    return v.reshape((v.shape[0],) + (1,) * (ndim - 2) + (v.shape[1],))


def _stats(xf: jax.Array, g: int, eps: float):
    """Group mean and inverse standard deviation ``[B, G]`` of ``xf [B, *S, C]``."""
    axes = tuple(range(1, xf.ndim - 1))
    c = xf.shape[-1]
    m1 = _pool(jnp.mean(xf, axis=axes), g) / (c // g)
    m2 = _pool(jnp.mean(jnp.square(xf), axis=axes), g) / (c // g)
    var = jnp.maximum(m2 - jnp.square(m1), 0.0)
    return m1, jax.lax.rsqrt(var + eps)


def _affine(xf, scale, bias, mu, inv):
    c = xf.shape[-1]
    a = _expand(inv, c) * scale  # [B, C]
    shift = bias - _expand(mu * inv, c) * scale
    return xf * _bcast(a, xf.ndim) + _bcast(shift, xf.ndim), a


@partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int, epsilon: float = 1e-6,
               silu: bool = False) -> jax.Array:
    """Group normalization of ``x [B, *S, C]`` with per-channel ``scale``, ``bias`` ``[C]``,
    followed by SiLU if ``silu`` (see the module docstring). Computed in float32; returns
    ``x.dtype``."""
    return _forward(x, scale, bias, num_groups, epsilon, silu)[0]


def _forward(x, scale, bias, g, eps, silu):
    _check(x, g)
    xf = x.astype(jnp.float32)
    mu, inv = _stats(xf, g, eps)
    u, _ = _affine(xf, scale, bias, mu, inv)
    y = u * jax.nn.sigmoid(u) if silu else u
    return y.astype(x.dtype), (x, scale, bias, mu, inv)


def _backward(g, eps, silu, res, dy):
    x, scale, bias, mu, inv = res
    xf = x.astype(jnp.float32)
    dyf = dy.astype(jnp.float32)
    b, c, nd = x.shape[0], x.shape[-1], x.ndim
    axes = tuple(range(1, nd - 1))
    n = (xf.size // (b * c)) * (c // g)
    if silu:
        u, _ = _affine(xf, scale, bias, mu, inv)
        s = jax.nn.sigmoid(u)
        du = dyf * (s * (1.0 + u * (1.0 - s)))
    else:
        du = dyf
    xc = xf - _bcast(_expand(mu, c), nd)
    s1 = jnp.sum(du, axis=axes)  # [B, C]
    s2 = jnp.sum(du * xc, axis=axes)  # [B, C]
    inv_c = _expand(inv, c)
    dbias = jnp.sum(s1, axis=0)
    dscale = jnp.sum(inv_c * s2, axis=0)
    p = _pool(scale * s1, g) / n  # [B, G]
    q = _pool(scale * s2, g) * inv / n
    a = inv_c * scale
    k1 = _expand(-inv * inv * q, c)
    k0 = _expand(-inv * p, c)
    dx = du * _bcast(a, nd) + xc * _bcast(k1, nd) + _bcast(k0, nd)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


group_norm.defvjp(lambda x, scale, bias, g, eps, silu: _forward(x, scale, bias, g, eps, silu), _backward)


class GroupNorm(nn.Module):
    """Group normalization (Wu & He 2018) of ``x [B, *S, C]``: parameters ``scale`` (ones)
    and ``bias`` (zeros) ``[C]``, as ``flax.linen.GroupNorm``; ``silu=True`` returns
    ``SiLU(GroupNorm(x))`` in one fused op (:func:`group_norm`)."""

    num_groups: int = 32
    epsilon: float = 1e-6
    silu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check(x, self.num_groups)
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return group_norm(x, scale, bias, self.num_groups, self.epsilon, self.silu)
