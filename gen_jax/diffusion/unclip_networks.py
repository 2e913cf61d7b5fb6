"""The networks of unCLIP (Ramesh et al. 2022): the diffusion prior's transformer and the
decoder's CLIP-embedding-conditioned denoisers.

**Prior** (:class:`PriorTransformer`, Sec. 2.1 and App. C: "a decoder-only Transformer with a
causal attention mask on a sequence consisting of, in order: the encoded text, the CLIP text
embedding, an embedding for the diffusion timestep, the noised CLIP image embedding, and a
final embedding whose output from the Transformer is used to predict the unnoised CLIP image
embedding")::

    seq = [E_tok[caption_0..L-1], W_txt z_t, MLP(e(t)), W_img z_noised, q] + P      [B, L + 4, w]
    h   = Block_N(... Block_1(seq))                  causal pre-LN blocks (gen_jax.nn.transformer.Block)
    x0_hat = W_out LN(h[:, -1])                                                       [B, D]

``E_tok`` a learned token table, ``P`` learned positions, ``e(t)`` the sinusoidal timestep
embedding (:func:`gen_jax.nn.unet.timestep_embedding`), ``q`` a learned query vector. The
causal mask lets the final query see the whole sequence; each earlier position sees only what
precedes it (so the caption and text-embedding positions do not depend on the noised input).

**Decoder** (Sec. 2.2: "projecting and adding CLIP embeddings to the existing timestep
embedding, and by projecting CLIP embeddings into four extra tokens of context"), for a noised
image ``x_t [B, H, W, C]``, times ``t [B]``, the CLIP image embedding ``z [B, D]`` (the null
condition is ``z = 0``, their "setting the CLIP embeddings to zero") and optionally the
caption ``tokens [B, L]`` (the null caption is all padding):

* :class:`EmbeddingDiT` (``network='dit'``): the DiT of Peebles & Xie 2023 (its blocks,
  patchify and final layer from :mod:`gen_jax.nn.dit`) whose adaLN conditioning vector is
  ``MLP(e(t)) + W_c z`` (the embedding added to the timestep embedding), with ``k`` context
  tokens ``W_k z`` (and the embedded caption) appended to the patch tokens (DiT's "in-context
  conditioning", Sec. 3.2 of Peebles & Xie): every block's self-attention reads them; the
  final layer decodes the patch tokens only.
* :class:`EmbeddingUNet` (``network='unet'``): the DDPM U-Net (:class:`gen_jax.nn.unet.UNet`)
  with ``emb = z`` (projected and added to its time embedding) and the ``k`` context tokens
  ``W_k z`` (plus the embedded caption, padding masked) as the sequence its attention layers
  cross-attend to -- the paper's arrangement on the GLIDE U-Net.

Shapes: see each ``__call__``. All networks output ``[B, H, W, C]`` (eps, x0 or v: the
process decides), zero at initialization for the DiT.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.nn.conditioning import PAD_ID
from gen_jax.nn.dit import DiTBlock, DiTConfig, FinalLayer, patchify, sincos_position_embedding_2d, unpatchify
from gen_jax.nn.transformer import Block, TransformerConfig
from gen_jax.nn.unet import UNet, UNetConfig, timestep_embedding

PRIOR_EXTRA_TOKENS = 4  # text embedding, timestep, noised image embedding, final query


class PriorTransformer(nn.Module):
    """``(z_noised [B, D], t [B], text_emb [B, D], tokens int [B, L]) -> x0_hat [B, D]``.

    Attributes:
      embed_dim: ``D``, the CLIP embedding width.
      vocab_size, caption_len: the caption vocabulary and length ``L``.
      width, depth, num_heads, mlp_ratio: the transformer.
      time_dim: width of the sinusoidal timestep embedding.
    """

    embed_dim: int
    vocab_size: int
    caption_len: int
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    time_dim: int = 128

    @nn.compact
    def __call__(self, z_noised, t, text_emb, tokens):
        b, d, w = z_noised.shape[0], self.embed_dim, self.width
        init = nn.initializers.normal(0.02)
        tok = nn.Embed(self.vocab_size, w, embedding_init=init, name="token_embed")(tokens.astype(jnp.int32))
        e_txt = nn.Dense(w, name="text_proj")(text_emb)
        temb = timestep_embedding(t.astype(jnp.float32), self.time_dim)
        e_t = nn.Dense(w, name="time_mlp1")(nn.silu(nn.Dense(w, name="time_mlp0")(temb)))
        e_z = nn.Dense(w, name="image_proj")(z_noised)
        query = self.param("query", init, (w,))
        seq = jnp.concatenate([tok, e_txt[:, None], e_t[:, None], e_z[:, None],
                               jnp.broadcast_to(query, (b, 1, w))], axis=1)
        n = seq.shape[1]
        seq = seq + self.param("pos_embed", init, (n, w))[None]
        tcfg = TransformerConfig(vocab_size=max(self.vocab_size, 1), max_len=n, num_layers=self.depth,
                                 d_model=w, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                                 positions="learned")
        positions = jnp.arange(n, dtype=jnp.int32)
        for i in range(self.depth):
            seq, _ = Block(tcfg, name=f"block_{i}")(seq, positions)
        h = nn.LayerNorm(name="ln_f")(seq[:, -1])
        return nn.Dense(d, name="out")(h)


class CaptionContext(nn.Module):
    """``tokens [B, L] -> (context [B, L, width], mask [B, L])``: token + learned position
    embeddings (the decoder's caption pathway; padding masked where the net masks)."""

    vocab_size: int
    caption_len: int
    width: int

    @nn.compact
    def __call__(self, tokens):
        init = nn.initializers.normal(0.02)
        h = nn.Embed(self.vocab_size, self.width, embedding_init=init, name="embed")(tokens.astype(jnp.int32))
        h = h + self.param("pos_embed", init, (self.caption_len, self.width))[None, :tokens.shape[1]]
        return h, tokens != PAD_ID


class EmbeddingDiT(nn.Module):
    """``(x_t [B, H, W, C], t [B], z [B, D], tokens [B, L] | None) -> [B, H, W, C]``
    (module docstring).

    Attributes:
      config: the :class:`gen_jax.nn.dit.DiTConfig` (``num_classes`` must be 0).
      embed_dim: ``D``.
      context_tokens: ``k``, the extra tokens projected from ``z``.
      vocab_size, caption_len: ``> 0``: the caption pathway (tokens required).
    """

    config: DiTConfig
    embed_dim: int
    context_tokens: int = 4
    vocab_size: int = 0
    caption_len: int = 0

    @nn.compact
    def __call__(self, x, t, z, tokens=None, *, train: bool = False):
        del train
        cfg = self.config
        b, h, w, c_in = x.shape
        p, d = cfg.patch_size, cfg.width
        out_c = cfg.out_channels or c_in
        init = nn.initializers.normal(0.02)
        temb = timestep_embedding(cfg.time_scale * t.astype(jnp.float32), cfg.time_dim)
        cvec = nn.Dense(d, kernel_init=init, name="t_embed0")(temb)
        cvec = nn.Dense(d, kernel_init=init, name="t_embed1")(nn.silu(cvec))
        cvec = cvec + nn.Dense(d, name="emb_proj")(z)
        pos = jnp.asarray(sincos_position_embedding_2d(h // p, w // p, d))
        patches = nn.Dense(d, kernel_init=nn.initializers.xavier_uniform(), name="patch_embed")(patchify(x, p))
        parts = [patches + pos[None]]
        if self.context_tokens:
            ctx = nn.Dense(self.context_tokens * d, name="context_proj")(z).reshape(b, self.context_tokens, d)
            parts.append(ctx)
        if self.vocab_size:
            cap, _ = CaptionContext(self.vocab_size, self.caption_len, d, name="caption")(tokens)
            parts.append(cap)
        seq = jnp.concatenate(parts, axis=1)
        for i in range(cfg.depth):
            seq = DiTBlock(cfg.num_heads, cfg.mlp_width, name=f"block{i}")(seq, cvec)
        n = (h // p) * (w // p)
        out = FinalLayer(p * p * out_c, name="final")(seq[:, :n], cvec)
        return unpatchify(out, h // p, w // p, p)


class EmbeddingUNet(nn.Module):
    """``(x_t [B, H, W, C], t [B], z [B, D], tokens [B, L] | None) -> [B, H, W, C]``: the
    DDPM U-Net with ``emb = z`` and the context ``[W_k z (k tokens); caption]`` cross-attended
    (module docstring). ``unet.emb_dim`` must be ``D`` and ``unet.context_dim > 0``."""

    unet: UNetConfig
    embed_dim: int
    context_tokens: int = 4
    vocab_size: int = 0
    caption_len: int = 0

    @nn.compact
    def __call__(self, x, t, z, tokens=None, *, train: bool = False):
        cfg = self.unet
        b, cw = x.shape[0], cfg.context_dim
        parts, masks = [], []
        if self.context_tokens:
            parts.append(nn.Dense(self.context_tokens * cw, name="context_proj")(z).reshape(b, self.context_tokens, cw))
            masks.append(jnp.ones((b, self.context_tokens), bool))
        if self.vocab_size:
            cap, m = CaptionContext(self.vocab_size, self.caption_len, cw, name="caption")(tokens)
            parts.append(cap)
            masks.append(m)
        context = jnp.concatenate(parts, 1) if parts else None
        mask = jnp.concatenate(masks, 1) if masks else None
        return UNet(cfg, name="unet")(x, t, context=context, context_mask=mask, emb=z, train=train)


def decoder_unet_config(unet: UNetConfig, embed_dim: int, context_tokens: int, caption: bool) -> UNetConfig:
    """The U-Net config of :class:`EmbeddingUNet`: ``emb_dim = D``; ``context_dim`` the U-Net's
    base width when it reads a context (else 0), no classes."""
    has_ctx = context_tokens > 0 or caption
    return dataclasses.replace(unet, num_classes=0, emb_dim=int(embed_dim),
                               context_dim=int(unet.context_dim or unet.ch) if has_ctx else 0)
