"""Multi-head scaled dot-product attention (Flax linen): self-attention and cross-attention.

Scaled dot-product attention (Vaswani et al. 2017, Eq. 1)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

and multi-head attention (Vaswani et al. 2017, Sec. 3.2.2)::

    MultiHead(X, C) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(X W_i^Q, C W_i^K, C W_i^V)

with ``C = X`` for self-attention. Each head has width ``d_k = qkv_features / num_heads``.

Padding mask convention (as in ``flax.linen.attention``): ``mask [B, L]`` is boolean, **True
marks a real token that may be attended to**, False a padding token. Masked logits are set to
the most negative float before the softmax, so a padding token gets exactly zero weight and
its value never reaches the output. A query whose keys are *all* masked (an empty condition,
e.g. the null condition of classifier-free guidance) gets a zero output instead of the
uniform average that the bare formula would give.

Modules:

* :func:`dot_product_attention` -- Eq. 1 on ``[B, L, N, D]`` heads, with an optional mask.
* :class:`MultiHeadAttention` -- projections + Eq. 1 + output projection over sequences
  ``[B, Lq, F]`` (queries) and ``[B, Lk, E]`` (keys/values, default: the queries). It keeps
  the query/key/value projections as separate submodules (``query``, ``key``, ``value``,
  ``out``) so a decoder can later cache the projected keys/values (a KV cache) without
  changing parameter names.
* :class:`FeatureMapAttention` -- the same over a feature map ``[B, H, W, C]`` flattened to
  ``H W`` tokens: self-attention between pixels, or cross-attention from pixels to a
  condition sequence ``[B, L, E]`` with mask ``[B, L]``.

No normalization or residual is applied here; the U-Net block adds them.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_mask(mask: jax.Array, batch: int, length: int, name: str = "mask") -> jax.Array:
    if mask.ndim != 2 or mask.shape != (batch, length):
        raise ValueError(f"{name} must be [B, L] = [{batch}, {length}] (True = real token), "
                         f"got shape {mask.shape}")
    return mask.astype(bool)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          mask: Optional[jax.Array] = None) -> jax.Array:
    """Scaled dot-product attention, Vaswani et al. 2017, Eq. 1, per head.

    ``out[b, i, n] = sum_j softmax_j(q[b, i, n] . k[b, j, n] / sqrt(D)) v[b, j, n]``

    Args:
      q: queries ``[B, Lq, N, D]`` (N heads of width D).
      k: keys ``[B, Lk, N, D]``.
      v: values ``[B, Lk, N, Dv]``.
      mask: optional boolean ``[B, Lk]``; False keys get zero weight. Rows whose keys are all
        masked return zeros.

    Returns:
      ``[B, Lq, N, Dv]``.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be [B, L, N, D], got shapes {q.shape}, {k.shape}, {v.shape}")
    b, lq, n, d = q.shape
    if k.shape[0] != b or k.shape[2:] != (n, d):
        raise ValueError(f"k must be [B={b}, Lk, N={n}, D={d}], got shape {k.shape}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must be [B, Lk, N] = {k.shape[:3]} + [Dv], got shape {v.shape}")
    scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
    logits = jnp.einsum("bind,bjnd->bnij", q * scale, k)  # [B, N, Lq, Lk]
    if mask is not None:
        mask = _check_mask(mask, b, k.shape[1])
        logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bnij,bjnd->bind", weights, v)  # [B, Lq, N, Dv]
    if mask is not None:
        out = out * jnp.any(mask, axis=-1).astype(out.dtype)[:, None, None, None]
    return out


class MultiHeadAttention(nn.Module):
    """Multi-head attention over sequences (Vaswani et al. 2017, Sec. 3.2.2).

    Attributes:
      num_heads: number of heads ``N``; ``qkv_features`` must be divisible by it.
      qkv_features: total width of the projected queries/keys/values (default: the query
        input width ``F``).
      out_features: output width (default: ``F``).
      zero_init_out: initialize the output projection to zero (the block then starts as the
        identity in a residual network, as in Ho et al. 2020's U-Net).
      kernel_init: initializer of the q/k/v projections.
    """

    num_heads: int = 1
    qkv_features: Optional[int] = None
    out_features: Optional[int] = None
    zero_init_out: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
                 mask: Optional[jax.Array] = None) -> jax.Array:
        """``x [B, Lq, F]``, ``context [B, Lk, E]`` (None: self-attention), ``mask [B, Lk]``
        -> ``[B, Lq, out_features]``."""
        if x.ndim != 3:
            raise ValueError(f"attention input x must be [B, L, F], got shape {x.shape}")
        if context is None:
            context = x
        elif context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(f"context must be [B={x.shape[0]}, L, E], got shape {context.shape}")
        features = self.qkv_features or x.shape[-1]
        if self.num_heads < 1 or features % self.num_heads:
            raise ValueError(f"attention width {features} is not divisible by num_heads={self.num_heads}")
        head = features // self.num_heads
        proj = lambda name: nn.DenseGeneral((self.num_heads, head), kernel_init=self.kernel_init, name=name)
        q = proj("query")(x)        # [B, Lq, N, D]
        k = proj("key")(context)    # [B, Lk, N, D]
        v = proj("value")(context)  # [B, Lk, N, D]
        h = dot_product_attention(q, k, v, mask)  # [B, Lq, N, D]
        out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
        return nn.DenseGeneral(self.out_features or x.shape[-1], axis=(-2, -1),
                               kernel_init=out_init, name="out")(h)


class FeatureMapAttention(nn.Module):
    """Attention from the pixels of a feature map: self-attention or cross-attention.

    ``x [B, H, W, C]`` becomes ``H W`` query tokens ``[B, H W, C]``; keys and values come
    from the same tokens (``context=None``) or from a condition sequence ``context
    [B, L, E]`` whose padding is given by ``mask [B, L]`` (True = real token). The output
    ``[B, H, W, C]`` keeps the input width.

    Attributes:
      num_heads: heads ``N`` (``C`` must be divisible by it).
      zero_init_out: zero-initialize the output projection.
    """

    num_heads: int = 1
    zero_init_out: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
                 mask: Optional[jax.Array] = None) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"feature map x must be [B, H, W, C], got shape {x.shape}")
        b, h, w, c = x.shape
        if mask is not None and context is None:
            raise ValueError("a mask is only meaningful with a context sequence (cross-attention)")
        tokens = x.reshape(b, h * w, c)
        out = MultiHeadAttention(self.num_heads, zero_init_out=self.zero_init_out, name="mha")(
            tokens, context, mask)
        return out.reshape(b, h, w, c)
