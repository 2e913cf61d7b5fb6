"""The caption encoder (the one text encoder of gen_jax) and the caption-conditioned U-Net.

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

With a pooled head (``features > 0``) it returns ``MLP(pooled) [B, features]`` instead: the
condition vector of the conditional VAE and the Gated PixelCNN. Their bag-of-words encoder
(:func:`bag_of_words_encoder`: no positions, no blocks, no final norm; token embedding,
masked mean over the non-pad tokens, ``Dense -> GELU`` per hidden width, ``Dense``) is this
module with ``num_layers=0``; a caption of only padding gives the MLP of a zero vector.

An all-padding caption is the null condition of classifier-free guidance
(:mod:`gen_jax.nn.conditioning`): the cross-attention then returns zeros
(:mod:`gen_jax.nn.attention`) and ``pooled`` is zero, so the U-Net sees no condition at all.

:class:`CaptionUNet` is ``UNet(x_t, t, context=context, context_mask=mask, emb=pooled)`` with
the encoder trained jointly; its U-Net config must have ``context_dim = emb_dim = dim``.

Mixed precision (``dtype=jnp.bfloat16``, :mod:`gen_jax.nn.precision`): the attention
projections and the MLPs (and the pooled head's hidden layers) compute in ``dtype``; the
embeddings, LayerNorms, the softmax, the residual stream, ``context``, ``pooled`` and the
pooled head's output layer are float32.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.attention import MultiHeadAttention
from gen_jax.nn.conditioning import PAD_ID
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
    """``tokens [B, L] -> (context [B, L, dim], mask [B, L], pooled [B, dim])``, or
    ``[B, features]`` with a pooled head (module docstring).

    Attributes:
      vocab_size: number of token ids (including pad and specials).
      max_len: ``L``; ``> 0`` adds learned positions ``[max_len, dim]`` and checks that
        captions have exactly this length; ``0``: no positions, any ``L``.
      dim: token embedding (and block) width.
      num_layers: pre-norm transformer blocks (0: none).
      num_heads: attention heads of the blocks.
      final_norm: LayerNorm of the context (``norm_out``).
      hidden: hidden widths of the pooled head's MLP.
      features: ``> 0``: return ``MLP(pooled) [B, features]`` only.
      embed_name: name of the token embedding's params.
      dtype: compute dtype of the projections and MLPs (``None``: float32; module docstring).
    """

    vocab_size: int
    max_len: int = 0
    dim: int = 64
    num_layers: int = 1
    num_heads: int = 2
    final_norm: bool = True
    hidden: Sequence[int] = ()
    features: int = 0
    embed_name: str = "token_embed"
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, tokens: jax.Array):
        if self.max_len > 0:
            check_tokens(tokens, None, self.max_len, self.vocab_size)
        elif tokens.ndim != 2:
            raise ValueError(f"caption tokens must be [B, L], got shape {tokens.shape}")
        tokens = tokens.astype(jnp.int32)
        mask = tokens != PAD_ID
        h = nn.Embed(self.vocab_size, self.dim, name=self.embed_name)(tokens)  # [B, L, dim]
        if self.max_len > 0:
            pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
            h = h + pos[None, : tokens.shape[1]]
        for i in range(self.num_layers):
            a = MultiHeadAttention(num_heads=self.num_heads, qkv_features=self.dim, out_features=self.dim,
                                   dtype=self.dtype, name=f"layer{i}_attn")(nn.LayerNorm(name=f"layer{i}_norm1")(h),
                                                                            mask=mask)
            h = h + a  # float32 residual stream
            m = nn.Dense(4 * self.dim, dtype=self.dtype, name=f"layer{i}_mlp0")(nn.LayerNorm(name=f"layer{i}_norm2")(h))
            h = h + nn.Dense(self.dim, dtype=self.dtype, name=f"layer{i}_mlp1")(nn.gelu(m))
        context = nn.LayerNorm(name="norm_out")(h) if self.final_norm else h
        w = mask.astype(context.dtype)[..., None]  # [B, L, 1]
        pooled = jnp.sum(context * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)  # [B, dim]
        if self.features <= 0:
            return context, mask, pooled
        for i, width in enumerate(self.hidden):
            pooled = nn.gelu(nn.Dense(width, dtype=self.dtype, name=f"hidden{i}")(pooled))
        return nn.Dense(self.features, name="out")(pooled)


def bag_of_words_encoder(vocab_size: int, embed_dim: int = 32, hidden: Sequence[int] = (64,),
                         features: int = 32, name: Optional[str] = None) -> CaptionEncoder:
    """The bag-of-words :class:`CaptionEncoder`: token embedding ``[B, L, embed_dim]``, mean
    over the non-pad tokens, ``Dense(w) -> GELU`` for each ``w`` in ``hidden``, then
    ``Dense(features)``: ``tokens [B, L] -> [B, features]`` (params ``embed``,
    ``hidden{i}``, ``out``)."""
    return CaptionEncoder(vocab_size, max_len=0, dim=embed_dim, num_layers=0, final_norm=False,
                          hidden=tuple(hidden), features=features, embed_name="embed", name=name)


class CaptionUNet(nn.Module):
    """``(x_t [B, H, W, C], t [B], tokens [B, L]) -> [B, H, W, out_channels]``: a
    :class:`CaptionEncoder` feeding a :class:`~gen_jax.nn.unet.UNet` through cross-attention
    (``context``) and embedding conditioning (``emb`` = the pooled caption); ``dtype`` is the
    compute dtype of both (:mod:`gen_jax.nn.precision`), ``remat`` the U-Net's block policy
    (:mod:`gen_jax.nn.remat`)."""

    unet: UNetConfig
    vocab_size: int
    max_len: int
    num_layers: int = 1
    num_heads: int = 2
    dtype: Optional[Any] = None
    remat: str = "none"

    def setup(self):
        if self.unet.context_dim < 1 or self.unet.emb_dim != self.unet.context_dim:
            raise ValueError("CaptionUNet needs config.model.unet.context_dim = emb_dim > 0, got "
                             f"context_dim={self.unet.context_dim}, emb_dim={self.unet.emb_dim}")
        self.encoder = CaptionEncoder(self.vocab_size, self.max_len, self.unet.context_dim,
                                      self.num_layers, self.num_heads, dtype=self.dtype)
        self.denoiser = UNet(self.unet, dtype=self.dtype, remat=self.remat)

    def __call__(self, x: jax.Array, t: jax.Array, tokens: jax.Array, *, train: bool) -> jax.Array:
        check_tokens(tokens, x.shape[0], self.max_len, self.vocab_size)
        context, mask, pooled = self.encoder(tokens)
        return self.denoiser(x, t, context=context, context_mask=mask, emb=pooled, train=train)
