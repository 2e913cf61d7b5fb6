"""A caption encoder and the caption-conditioned U-Net (text-to-image denoisers).

:class:`CaptionEncoder` maps token ids ``[B, L]`` (0 = padding) to

* ``context [B, L, dim]``: token embeddings plus learned position embeddings, refined by
  ``num_layers`` pre-norm transformer blocks (self-attention with the padding mask, then an
  MLP; Vaswani et al. 2017, Sec. 3.1, in the pre-norm arrangement), then a final LayerNorm --
  the sequence a U-Net cross-attends to (Rombach et al. 2022, Eq. 3:
  ``Attention(Q = W_Q phi(z_t), K = W_K tau(y), V = W_V tau(y))``);
* ``mask [B, L]``: True where the token is real (``id != 0``);
* ``pooled [B, dim]``: the masked mean of ``context`` (zeros for an empty caption), the
  vector that embedding conditioning adds to the time embedding (as the pooled text
  embedding of Saharia et al. 2022, Sec. 2.2).

An all-padding caption is the null condition of classifier-free guidance: the cross-attention
then returns zeros (:mod:`gen_jax.nn.attention`) and ``pooled`` is zero, so the U-Net sees no
condition at all.

:class:`CaptionUNet` is ``UNet(x_t, t, context=context, context_mask=mask, emb=pooled)`` with
the encoder trained jointly; its U-Net config must have ``context_dim = emb_dim = dim``.
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.attention import MultiHeadAttention
from gen_jax.nn.unet import UNet, UNetConfig


def check_tokens(tokens: jax.Array, batch: Optional[int], length: int, vocab_size: int,
                 where: str = "caption_tokens") -> None:
    """Shape / dtype checks of caption token ids (values are checked by the data pipeline)."""
    if tokens.ndim != 2 or tokens.shape[1] != length or (batch is not None and tokens.shape[0] != batch):
        raise ValueError(f"{where} must be int [B, L] = [{batch if batch is not None else 'B'}, {length}], "
                         f"got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{where} must hold integer token ids (vocabulary {vocab_size}), got {tokens.dtype}")


class CaptionEncoder(nn.Module):
    """``tokens [B, L] -> (context [B, L, dim], mask [B, L], pooled [B, dim])`` (module doc)."""

    vocab_size: int
    max_len: int
    dim: int = 64
    num_layers: int = 1
    num_heads: int = 2

    @nn.compact
    def __call__(self, tokens: jax.Array):
        check_tokens(tokens, None, self.max_len, self.vocab_size)
        mask = tokens != 0
        h = nn.Embed(self.vocab_size, self.dim, name="token_embed")(tokens)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
        h = h + pos[None, : tokens.shape[1]]
        for i in range(self.num_layers):
            a = MultiHeadAttention(num_heads=self.num_heads, qkv_features=self.dim, out_features=self.dim,
                                   name=f"layer{i}_attn")(nn.LayerNorm(name=f"layer{i}_norm1")(h), mask=mask)
            h = h + a
            m = nn.Dense(4 * self.dim, name=f"layer{i}_mlp0")(nn.LayerNorm(name=f"layer{i}_norm2")(h))
            h = h + nn.Dense(self.dim, name=f"layer{i}_mlp1")(nn.gelu(m))
        context = nn.LayerNorm(name="norm_out")(h)
        w = mask.astype(context.dtype)[..., None]
        pooled = jnp.sum(context * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)
        return context, mask, pooled


class CaptionUNet(nn.Module):
    """``(x_t [B, H, W, C], t [B], tokens [B, L]) -> [B, H, W, out_channels]``: a
    :class:`CaptionEncoder` feeding a :class:`~gen_jax.nn.unet.UNet` through cross-attention
    (``context``) and embedding conditioning (``emb`` = the pooled caption)."""

    unet: UNetConfig
    vocab_size: int
    max_len: int
    num_layers: int = 1
    num_heads: int = 2

    def setup(self):
        if self.unet.context_dim < 1 or self.unet.emb_dim != self.unet.context_dim:
            raise ValueError("CaptionUNet needs config.model.unet.context_dim = emb_dim > 0, got "
                             f"context_dim={self.unet.context_dim}, emb_dim={self.unet.emb_dim}")
        self.encoder = CaptionEncoder(self.vocab_size, self.max_len, self.unet.context_dim,
                                      self.num_layers, self.num_heads)
        self.denoiser = UNet(self.unet)

    def __call__(self, x: jax.Array, t: jax.Array, tokens: jax.Array, *, train: bool) -> jax.Array:
        check_tokens(tokens, x.shape[0], self.max_len, self.vocab_size)
        context, mask, pooled = self.encoder(tokens)
        return self.denoiser(x, t, context=context, context_mask=mask, emb=pooled, train=train)
