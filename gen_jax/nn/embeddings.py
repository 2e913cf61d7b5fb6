"""Conditioning embeddings: class labels and tokenized captions -> vectors ``[B, E]``."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD_ID = 0


class LabelEmbedding(nn.Module):
    """Class label ``[B]`` (int) -> learned vector ``[B, features]``."""

    num_classes: int
    features: int

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        if labels.ndim != 1:
            raise ValueError(f"labels must be [B], got shape {labels.shape}")
        return nn.Embed(self.num_classes, self.features, name="embed")(labels.astype(jnp.int32))


class CaptionEncoder(nn.Module):
    """Bag-of-words caption encoder: token embedding, mean over non-pad tokens, MLP.

    ``tokens [B, L]`` (int, ``0`` = pad) -> ``[B, features]``. A caption of only padding
    gives the MLP of a zero vector.

    Attributes:
      vocab_size: number of token ids (including pad and specials).
      embed_dim: token embedding width.
      hidden: hidden widths of the MLP after pooling.
      features: output width.
    """

    vocab_size: int
    embed_dim: int = 32
    hidden: Sequence[int] = (64,)
    features: int = 32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2:
            raise ValueError(f"caption tokens must be [B, L], got shape {tokens.shape}")
        tokens = tokens.astype(jnp.int32)
        emb = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens)  # [B, L, E]
        mask = (tokens != PAD_ID).astype(emb.dtype)[..., None]  # [B, L, 1]
        pooled = jnp.sum(emb * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)  # [B, E]
        h = pooled
        for i, width in enumerate(self.hidden):
            h = nn.gelu(nn.Dense(width, name=f"hidden{i}")(h))
        return nn.Dense(self.features, name="out")(h)
