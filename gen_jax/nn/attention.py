"""Multi-head scaled dot-product attention (Flax linen): the one attention of gen_jax.

Scaled dot-product attention (Vaswani et al. 2017, Eq. 1)::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

and multi-head attention (Vaswani et al. 2017, Sec. 3.2.2)::

    MultiHead(X, C) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(X W_i^Q, C W_i^K, C W_i^V)

with ``C = X`` for self-attention. Each head has width ``d_k = qkv_features / num_heads``.
The same module serves the U-Net's feature-map attention (:class:`FeatureMapAttention`),
the caption encoder (:mod:`gen_jax.nn.caption_encoder`) and the decoder-only transformer
(:mod:`gen_jax.nn.transformer`: causal, RoPE, KV cache).

Masks:

* **Padding** (as in ``flax.linen.attention``): ``mask [B, L]`` is boolean, **True marks a
  real token that may be attended to**, False a padding token. Masked logits are set to the
  most negative float before the softmax, so a padding token gets exactly zero weight and
  its value never reaches the output. A query whose keys are *all* masked (an empty
  condition, e.g. the null condition of classifier-free guidance) gets a zero output
  instead of the uniform average that the bare formula would give.
* **Causal** (Vaswani et al. 2017, Sec. 3.2.3, masked decoder attention): with query and
  key positions ``q_pos [T]``, ``k_pos [S]``, query ``t`` sees the keys ``s`` with
  ``k_pos[s] <= q_pos[t]`` (future keys get weight exactly 0, and the gradient of output
  ``t`` w.r.t. inputs at later positions is exactly zero).

Rotary positions (RoPE, Su et al. 2021, RoFormer, Eq. 34): queries and keys of position
``m`` are rotated pairwise, ``(x_{2i-1}, x_{2i}) -> (x_{2i-1} cos m t_i - x_{2i} sin m t_i,
x_{2i} cos m t_i + x_{2i-1} sin m t_i)`` with ``t_i = base^{-2(i-1)/d_head}``, so
``<R_m q, R_n k> = <q, R_{n-m} k>`` depends only on the offset ``n - m`` (Sec. 3.2).

Where the ``1 / sqrt(d_k)`` is applied (``scale_at``): to the queries before the product
(``'queries'``, the U-Net's and caption encoder's attention) or to the logits after it
(``'logits'``, the decoder's). The two are the same function; they differ in float rounding
unless ``d_k`` is a power of 4, and each path keeps its order so trained models reproduce bit
for bit.

Functions and modules:

* :func:`dot_product_attention` -- Eq. 1 on ``[B, L, N, D]`` heads, with optional padding and
  causal masks.
* :func:`cached_attention` -- Eq. 1 of new queries over a KV cache's past and the new keys.
* :class:`MultiHeadAttention` -- projections (separate ``query``, ``key``, ``value``, ``out``
  submodules) + Eq. 1 + output projection over sequences ``[B, Lq, F]`` (queries) and
  ``[B, Lk, E]`` (keys/values, default: the queries); optionally causal, with RoPE and a KV
  cache (:mod:`gen_jax.nn.kv_cache`).
* :class:`FeatureMapAttention` -- the same over a feature map ``[B, H, W, C]`` flattened to
  ``H W`` tokens: self-attention between pixels, or cross-attention from pixels to a
  condition sequence ``[B, L, E]`` with mask ``[B, L]``.

No normalization or residual is applied here; the blocks that use attention add them.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Literal, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.nn import kv_cache
from gen_jax.nn.partitioning import constrain

ScaleAt = Literal["queries", "logits"]


def _check_mask(mask: jax.Array, batch: int, length: int, name: str = "mask") -> jax.Array:
    if mask.ndim != 2 or mask.shape != (batch, length):
        raise ValueError(f"{name} must be [B, L] = [{batch}, {length}] (True = real token), "
                         f"got shape {mask.shape}")
    return mask.astype(bool)


# ----------------------------------------------------------------------------- RoPE


def rotary_angles(positions: jax.Array, head_dim: int, base: float = 10000.0) -> jax.Array:
    """``m t_i`` for positions ``m`` ``[T]`` and ``t_i = base^{-2(i-1)/head_dim}``,
    ``i = 1..head_dim/2`` (Su et al. 2021, Eq. 34 / Eq. 15) -> ``[T, head_dim / 2]``."""
    inv = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # [D/2]
    return positions.astype(jnp.float32)[:, None] * jnp.asarray(inv, jnp.float32)[None, :]


def apply_rotary(x: jax.Array, positions: jax.Array, base: float = 10000.0) -> jax.Array:
    """RoPE (Su et al. 2021, Eq. 34): rotate consecutive pairs of ``x [B, T, H, D]`` at
    positions ``[T]``: ``out_{2i-1} = x_{2i-1} cos m t_i - x_{2i} sin m t_i``,
    ``out_{2i} = x_{2i} cos m t_i + x_{2i-1} sin m t_i``."""
    b, t, h, d = x.shape
    if positions.shape != (t,):
        raise ValueError(f"apply_rotary: positions must be [T={t}], got shape {positions.shape}")
    ang = rotary_angles(positions, d, base)[None, :, None, :]  # [1, T, 1, D/2]
    cos, sin = jnp.cos(ang), jnp.sin(ang)
    pairs = x.reshape(b, t, h, d // 2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.reshape(b, t, h, d).astype(x.dtype)


# ----------------------------------------------------------------------------- Eq. 1


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: Optional[jax.Array] = None,
                          *, q_pos: Optional[jax.Array] = None, k_pos: Optional[jax.Array] = None,
                          scale_at: ScaleAt = "queries") -> jax.Array:
    """Scaled dot-product attention, Vaswani et al. 2017, Eq. 1, per head.

    ``out[b, i, n] = sum_j softmax_j(q[b, i, n] . k[b, j, n] / sqrt(D)) v[b, j, n]`` over the
    visible keys ``j``.

    Args:
      q: queries ``[B, Lq, N, D]`` (N heads of width D).
      k: keys ``[B, Lk, N, D]``.
      v: values ``[B, Lk, N, Dv]``.
      mask: optional boolean padding mask ``[B, Lk]``; False keys get zero weight. Rows whose
        keys are all masked return zeros.
      q_pos, k_pos: optional int positions ``[Lq]``, ``[Lk]`` of a causal mask (both or
        neither): query ``i`` sees keys with ``k_pos[j] <= q_pos[i]``; every query must see
        at least one key.
      scale_at: ``'queries'`` (``(q / sqrt(D)) . k``) or ``'logits'`` (``(q . k) / sqrt(D)``);
        see the module docstring.

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
    if (q_pos is None) != (k_pos is None):
        raise ValueError("a causal mask needs both q_pos [Lq] and k_pos [Lk]")
    if scale_at == "queries":
        scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
        logits = jnp.einsum("bind,bjnd->bnij", q * scale, k)  # [B, N, Lq, Lk]
    elif scale_at == "logits":
        logits = jnp.einsum("bind,bjnd->bnij", q, k) / math.sqrt(d)
    else:
        raise ValueError(f"scale_at must be 'queries' or 'logits', got {scale_at!r}")
    logits = logits.astype(jnp.float32)  # the softmax in float32 (mixed precision, gen_jax.nn.precision)
    neg = jnp.finfo(logits.dtype).min
    if mask is not None:
        mask = _check_mask(mask, b, k.shape[1])
        logits = jnp.where(mask[:, None, None, :], logits, neg)
    if q_pos is not None:
        visible = k_pos[None, :] <= q_pos[:, None]  # [Lq, Lk]
        logits = jnp.where(visible[None, None], logits, neg)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bnij,bjnd->bind", weights, v)  # [B, Lq, N, Dv]
    if mask is not None:
        out = out * jnp.any(mask, axis=-1).astype(out.dtype)[:, None, None, None]
    return out


def cached_attention(q: jax.Array, k_new: jax.Array, v_new: jax.Array, k_cache: jax.Array,
                     v_cache: jax.Array, pos: jax.Array) -> jax.Array:
    """Causal attention (Vaswani et al. 2017, Eq. 1 with the mask of Sec. 3.2.3) of ``T`` new
    queries at positions ``pos..pos+T-1`` over the cached past and the new keys: one softmax
    over the logits of the cache slots ``j < pos`` and of the new keys ``t' <= t`` (scaled
    after the product, as the decoder's ``scale_at='logits'``).

    Args:
      q, k_new, v_new: ``[B, T, H, D]``.
      k_cache: ``[B, H, D, S]``; v_cache: ``[B, H, S, D]`` (the :mod:`gen_jax.nn.kv_cache`
        layouts; slots ``>= pos`` are ignored).
      pos: int32 scalar, the position of the first new token.

    Returns:
      ``[B, T, H, D]``.
    """
    d = q.shape[-1]
    t, s = q.shape[1], v_cache.shape[2]
    neg = jnp.finfo(jnp.float32).min  # logits and softmax in float32
    past = jnp.einsum("bthd,bhds->bhts", q, k_cache).astype(jnp.float32) / math.sqrt(d)  # [B, H, T, S]
    past = jnp.where((jnp.arange(s) < pos)[None, None, None, :], past, neg)
    new = jnp.einsum("bthd,buhd->bhtu", q, k_new).astype(jnp.float32) / math.sqrt(d)  # [B, H, T, T]
    new = jnp.where(jnp.tril(jnp.ones((t, t), bool))[None, None], new, neg)
    w = jax.nn.softmax(jnp.concatenate([past, new], axis=-1), axis=-1)
    return (jnp.einsum("bhts,bhsd->bthd", w[..., :s].astype(v_cache.dtype), v_cache)
            + jnp.einsum("bhtu,buhd->bthd", w[..., s:].astype(v_new.dtype), v_new))


# ----------------------------------------------------------------------------- modules


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
      out_init: initializer of the output projection (overrides ``zero_init_out``).
      causal: causal self-attention by position (``context`` must be None).
      rope_base: if set, RoPE with this base (10000 in Su et al. 2021) on queries and keys.
      scale_at: where ``1 / sqrt(d_k)`` is applied (module docstring).
      dtype: compute dtype of the projections (``None``: float32; ``jnp.bfloat16`` for mixed
        precision, params stay float32; the softmax is always float32).
    """

    num_heads: int = 1
    qkv_features: Optional[int] = None
    out_features: Optional[int] = None
    zero_init_out: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()
    out_init: Optional[Callable] = None
    causal: bool = False
    rope_base: Optional[float] = None
    scale_at: ScaleAt = "queries"
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
                 mask: Optional[jax.Array] = None, *, positions: Optional[jax.Array] = None,
                 cache: Optional[tuple] = None):
        """Attention output.

        Args:
          x: queries ``[B, Lq, F]``.
          context: keys/values ``[B, Lk, E]`` (None: self-attention).
          mask: padding mask ``[B, Lk]`` (True = real token).
          positions: int ``[Lq]`` positions of ``x`` (causal mask and RoPE; default
            ``0..Lq-1``).
          cache: ``(k_layer [B, N, D, S], v_layer [B, N, S, D], pos)`` of a causal decoder:
            the queries at ``pos..pos+Lq-1`` attend over the cached slots ``< pos`` and the
            new keys (:func:`cached_attention`), then the new keys/values are written at
            those slots (:func:`gen_jax.nn.kv_cache.write_layer`).

        Returns:
          ``[B, Lq, out_features]``; with a ``cache``, ``(out, (k_layer', v_layer'))``.
        """
        if x.ndim != 3:
            raise ValueError(f"attention input x must be [B, L, F], got shape {x.shape}")
        if context is None:
            context = x
        elif self.causal:
            raise ValueError("causal attention is self-attention: context must be None")
        elif context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(f"context must be [B={x.shape[0]}, L, E], got shape {context.shape}")
        if cache is not None and not self.causal:
            raise ValueError("a KV cache needs causal attention (causal=True)")
        features = self.qkv_features or x.shape[-1]
        if self.num_heads < 1 or features % self.num_heads:
            raise ValueError(f"attention width {features} is not divisible by num_heads={self.num_heads}")
        head = features // self.num_heads
        proj = lambda name: nn.DenseGeneral((self.num_heads, head), kernel_init=self.kernel_init, dtype=self.dtype,
                                            name=name)
        heads = lambda a: constrain(a, "batch", None, "heads", None)  # TP: heads over 'model'
        q = heads(proj("query")(x))        # [B, Lq, N, D]
        k = heads(proj("key")(context))    # [B, Lk, N, D]
        v = heads(proj("value")(context))  # [B, Lk, N, D]
        if positions is None and (self.causal or self.rope_base is not None):
            positions = jnp.arange(x.shape[1], dtype=jnp.int32)
        if self.rope_base is not None:
            q = apply_rotary(q, positions, self.rope_base)
            k = apply_rotary(k, positions, self.rope_base)
        new = None
        if cache is not None:
            k_layer, v_layer, pos = cache
            h = cached_attention(q, k, v, k_layer, v_layer, pos)  # reads the cache, then writes
            new = kv_cache.write_layer(k_layer, v_layer, k, v, pos, after=h)
        elif self.causal:
            h = dot_product_attention(q, k, v, mask, q_pos=positions, k_pos=positions, scale_at=self.scale_at)
        else:
            h = dot_product_attention(q, k, v, mask, scale_at=self.scale_at)  # [B, Lq, N, D]
        h = heads(h)
        out_init = self.out_init
        if out_init is None:
            out_init = nn.initializers.zeros if self.zero_init_out else nn.initializers.lecun_normal()
        out = nn.DenseGeneral(self.out_features or x.shape[-1], axis=(-2, -1),
                              kernel_init=out_init, dtype=self.dtype, name="out")(h)
        return out if cache is None else (out, new)


class FeatureMapAttention(nn.Module):
    """Attention from the pixels of a feature map: self-attention or cross-attention.

    ``x [B, H, W, C]`` becomes ``H W`` query tokens ``[B, H W, C]``; keys and values come
    from the same tokens (``context=None``) or from a condition sequence ``context
    [B, L, E]`` whose padding is given by ``mask [B, L]`` (True = real token). The output
    ``[B, H, W, C]`` keeps the input width.

    Attributes:
      num_heads: heads ``N`` (``C`` must be divisible by it).
      zero_init_out: zero-initialize the output projection.
      dtype: compute dtype of the projections (:class:`MultiHeadAttention`).
    """

    num_heads: int = 1
    zero_init_out: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
                 mask: Optional[jax.Array] = None) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"feature map x must be [B, H, W, C], got shape {x.shape}")
        b, h, w, c = x.shape
        if mask is not None and context is None:
            raise ValueError("a mask is only meaningful with a context sequence (cross-attention)")
        tokens = x.reshape(b, h * w, c)
        out = MultiHeadAttention(self.num_heads, zero_init_out=self.zero_init_out, dtype=self.dtype, name="mha")(
            tokens, context, mask)
        return out.reshape(b, h, w, c)
