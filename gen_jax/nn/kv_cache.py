"""The key/value cache of a decoder-only transformer (incremental decoding).

In causal self-attention (Vaswani et al. 2017, Sec. 3.2.3, masked decoder attention) the keys
and values of position ``j`` depend only on tokens ``<= j``, so once computed they never
change. A decoder that generates one token at a time therefore keeps them ("the past" ``H_t``
of Dathathri et al. 2020, Eq. 2) and computes, for each new token, only its own query, key and
value: the cost of a step is linear in the filled length instead of the full quadratic
recomputation.

Layout (preallocated, fixed shapes, so the cache can be a ``lax.scan`` carry)::

    k:     layers x [B, heads, head_dim, max_len]   (one buffer per layer; keys already
                                                    position-rotated for RoPE)
    v:     layers x [B, heads, max_len, head_dim]
    index: int32 []                                 (number of filled positions)

``stacked(cache)`` gives the ``[layers, B, max_len, heads, head_dim]`` view of each. Why not
store that: XLA (CPU) materializes a copy of a layer sliced out of one stacked array, and a
transposed copy of any key buffer whose layout is not the ``[head_dim, max_len]`` operand
its matmul wants, before the attention reads it, at every decode step. Those O(max_len)
copies made the per-token decode time grow ~7x from 64 to 1024 slots
(``experiments/benchmarks/kv_cache.py``); with per-layer buffers in these layouts, updated
in place by ``dynamic_update_slice``, the compiled decode step copies no cache buffer.

Entries at positions ``>= index`` are unused; attention masks them out by position, so their
values never matter (they start at zero).
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    """Keys ``[B, heads, head_dim, max_len]`` and values ``[B, heads, max_len, head_dim]`` of
    every layer (tuples, one buffer per layer) and ``index`` (int32 scalar), the number of
    positions written so far."""

    k: Tuple[jax.Array, ...]
    v: Tuple[jax.Array, ...]
    index: jax.Array

    @property
    def batch_size(self) -> int:
        return int(self.v[0].shape[0])

    @property
    def max_len(self) -> int:
        return int(self.v[0].shape[2])


def stacked(cache: KVCache) -> tuple[jax.Array, jax.Array]:
    """``(k, v)`` as ``[layers, B, max_len, heads, head_dim]`` arrays (a copy)."""
    return (jnp.transpose(jnp.stack(cache.k), (0, 1, 4, 2, 3)),
            jnp.transpose(jnp.stack(cache.v), (0, 1, 3, 2, 4)))


def init_cache(num_layers: int, batch: int, max_len: int, num_heads: int, head_dim: int,
               dtype=jnp.float32) -> KVCache:
    """An empty cache (zeros, ``index = 0``) of the given sizes."""
    k = tuple(jnp.zeros((batch, num_heads, head_dim, max_len), dtype) for _ in range(num_layers))
    v = tuple(jnp.zeros((batch, num_heads, max_len, head_dim), dtype) for _ in range(num_layers))
    return KVCache(k, v, jnp.zeros((), jnp.int32))


def check_cache(cache: KVCache, num_layers: int, max_len: int, num_heads: int, head_dim: int,
                where: str = "cache") -> None:
    """Raises ``ValueError`` (naming ``where`` and the shapes) unless ``cache`` holds
    ``num_layers`` key buffers ``[B, num_heads, head_dim, max_len]`` and value buffers
    ``[B, num_heads, max_len, head_dim]`` (same ``B``)."""
    if not isinstance(cache, KVCache):
        raise ValueError(f"{where} must be a KVCache (from init_cache / prefill), got {type(cache).__name__}")
    b = cache.v[0].shape[0] if len(cache.v) else None
    for name, bufs, dims in (("k", cache.k, ("heads", "head_dim", "max_len")),
                             ("v", cache.v, ("heads", "max_len", "head_dim"))):
        if len(bufs) != num_layers:
            raise ValueError(f"{where}.{name} must hold {num_layers} layer buffers, got {len(bufs)}")
        sizes = {"heads": num_heads, "max_len": max_len, "head_dim": head_dim}
        want = tuple(sizes[x] for x in dims)
        for i, a in enumerate(bufs):
            if a.ndim != 4 or tuple(a.shape[1:]) != want or a.shape[0] != b:
                raise ValueError(f"{where}.{name}[{i}] must be [B={b}, " + ", ".join(f"{x}={sizes[x]}" for x in dims)
                                 + f"], got shape {a.shape}")


def write_layer(k_layer: jax.Array, v_layer: jax.Array, k: jax.Array, v: jax.Array, pos: jax.Array,
                after: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One layer's buffers with ``T`` new keys/values ``k, v [B, T, heads, head_dim]`` written at
    slots ``pos..pos+T-1`` (``dynamic_update_slice``, in place under ``jit``).

    ``after`` is the attention output that read the buffers: the write is made to depend on
    it (through a zero term) so it is ordered after the read; without that ordering XLA (CPU)
    copies both buffers at every decode step.

    Returns:
      ``(k_layer [B, heads, head_dim, S], v_layer [B, heads, S, head_dim])``.
    """
    after_read = jnp.zeros((), after.dtype) * jnp.sum(after)
    zero, p = jnp.zeros((), jnp.int32), jnp.asarray(pos, jnp.int32)
    k_t = jnp.transpose(k + after_read, (0, 2, 3, 1)).astype(k_layer.dtype)  # [B, H, D, T]
    v_t = jnp.transpose(v + after_read, (0, 2, 1, 3)).astype(v_layer.dtype)  # [B, H, T, D]
    return (jax.lax.dynamic_update_slice(k_layer, k_t, (zero, zero, zero, p)),
            jax.lax.dynamic_update_slice(v_layer, v_t, (zero, zero, p, zero)))
