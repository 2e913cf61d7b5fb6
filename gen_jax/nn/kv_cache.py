"""The key/value cache of a decoder-only transformer (incremental decoding).

In causal self-attention (Vaswani et al. 2017, Sec. 3.2.3, masked decoder attention) the keys
and values of position ``j`` depend only on tokens ``<= j``, so once computed they never
change. A decoder that generates one token at a time therefore keeps them ("the past" ``H_t``
of Dathathri et al. 2020, Eq. 2) and computes, for each new token, only its own query, key and
value: the cost of a step is linear in the filled length instead of the full quadratic
recomputation.

Layout (preallocated, fixed shapes, so the cache can be a ``lax.scan`` carry)::

    k, v:  [layers, B, max_len, heads, head_dim]   (keys already position-rotated for RoPE)
    index: int32 []                                (number of filled positions)

Entries at positions ``>= index`` are unused; attention masks them out by position, so their
values never matter (they start at zero).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class KVCache(NamedTuple):
    """Keys/values of every layer, ``[layers, B, max_len, heads, head_dim]``, and ``index``
    (int32 scalar), the number of positions written so far."""

    k: jax.Array
    v: jax.Array
    index: jax.Array

    @property
    def batch_size(self) -> int:
        return int(self.k.shape[1])

    @property
    def max_len(self) -> int:
        return int(self.k.shape[2])


def init_cache(num_layers: int, batch: int, max_len: int, num_heads: int, head_dim: int,
               dtype=jnp.float32) -> KVCache:
    """An empty cache (zeros, ``index = 0``) of the given sizes."""
    shape = (num_layers, batch, max_len, num_heads, head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


def check_cache(cache: KVCache, num_layers: int, max_len: int, num_heads: int, head_dim: int,
                where: str = "cache") -> None:
    """Raises ``ValueError`` (naming ``where`` and the shapes) unless ``cache`` has the layout
    ``[num_layers, B, max_len, num_heads, head_dim]``."""
    if not isinstance(cache, KVCache):
        raise ValueError(f"{where} must be a KVCache (from init_cache / prefill), got {type(cache).__name__}")
    want = (num_layers, max_len, num_heads, head_dim)
    for name, a in (("k", cache.k), ("v", cache.v)):
        if a.ndim != 5 or (a.shape[0],) + tuple(a.shape[2:]) != want:
            raise ValueError(f"{where}.{name} must be [layers={num_layers}, B, max_len={max_len}, "
                             f"heads={num_heads}, head_dim={head_dim}], got shape {a.shape}")
    if cache.k.shape != cache.v.shape:
        raise ValueError(f"{where}.k and {where}.v differ in shape: {cache.k.shape} vs {cache.v.shape}")
