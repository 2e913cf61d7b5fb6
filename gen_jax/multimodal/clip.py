"""CLIP (Radford et al. 2021): an image encoder and a text encoder trained contrastively.

``make_clip(config.model, info)`` builds a :class:`~gen_jax.model.GenerativeModel` of family
``'multimodal'`` whose only capability besides training is an
:class:`~gen_jax.model.Embedder`:

* ``embed_image(params, x [B, H, W, C] in [0, 1]) -> [B, D]`` (l2-normalized);
* ``embed_text(params, tokens int [B, L <= text_len], 0 = padding) -> [B, D]`` (l2-normalized).

Encoders (Sec. 2.4):

* **ViT** (Dosovitskiy et al. 2021, as modified by CLIP): a ``p x p`` stride-``p`` convolution
  without bias (optionally after a small convolutional stem, ``conv_stem``) patchifies the
  image (fed as ``2 x - 1``) into ``(H/p)(W/p)`` tokens of width
  ``w``; a learned class token is prepended, learned positions added, then ``ln_pre`` (CLIP's
  extra LayerNorm), ``N`` pre-LN blocks ``x + MHA(LN x)``, ``x + MLP(LN x)`` (GELU, ratio 4;
  non-causal :class:`gen_jax.nn.attention.MultiHeadAttention`), ``ln_post`` of the class token
  (or of the mean of the patch tokens with ``pool='mean'``) and a linear projection without bias
  to ``D``.
* **ResNet** (``image_encoder='resnet'``, a small stand-in for CLIP's modified ResNet):
  stages of two pre-activation residual 3x3 blocks (GroupNorm, SiLU), 2x average-pool
  downsampling between stages, global mean pool, LayerNorm, linear projection to ``D``.
* **Text**: the project's decoder blocks (:class:`gen_jax.nn.transformer.Block`: causal
  masked self-attention, pre-LN, GPT-2 init) over token embeddings plus learned positions
  (``text_len`` of them), ``ln_final``, and the features of the **last non-pad token** (the
  ``<eos>`` of the caption tokenizer; CLIP takes the ``[EOS]`` token's activations, Sec. 2.4),
  projected linearly (no bias) to ``D``. The causal mask makes padding after that token
  irrelevant.

Objective: the symmetric InfoNCE loss of Fig. 3 over the batch (``loss='infonce'``) with the
learned log scale ``log_scale`` (init ``log(1 / 0.07)``, scale clamped at ``max_logit_scale =
100``, :func:`gen_jax.multimodal.contrastive.logit_scale`), or SigLIP's sigmoid loss (Zhai et
al. 2023, Eq. 1; ``loss='siglip'``: ``log_scale`` is ``t'`` with init ``log 10`` and a learned
``bias`` init ``-10``). The temperature (and bias) are scalars, so the generic weight-decay mask
of :func:`gen_jax.train.optim.decay_mask` (``config.optim.decay = "weights"``: ``ndim >= 2``,
not named ``bias``; the CLIP configs set it) leaves them, the biases and the norms undecayed. Under the loop's ``jit`` over a data-sharded batch the loss is the one of the
global batch (XLA gathers the embeddings); :func:`gen_jax.multimodal.contrastive.sharded_loss`
is the same loss written with ``shard_map``.

Logged per step: ``loss``, ``logit_scale`` (the clamped scale; SigLIP: ``exp(t')``), ``bias``
(SigLIP), ``acc_i2t`` / ``acc_t2i`` (in-batch retrieval accuracy of the batch's own pairs).

Refused with an error naming the field: captions longer than the text context
(``config.model.text_len``; at build time from the dataset's caption length, at call time from
``batch['caption_tokens']`` / ``tokens``), token ids outside ``[0, vocab_size)`` (checked on the
host for concrete arrays; under ``jit`` an out-of-vocabulary id embeds to NaN so the loss and
the embedding come out NaN instead of silently wrong), images whose size the patch size does not
divide (``config.model.patch_size``) and images of another size than the model's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.checks import DataSpec, InputError, check_ids
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import Embedder, GenerativeModel, Phase, Training, check_image_batch
from gen_jax.multimodal import contrastive as C
from gen_jax.nn.attention import MultiHeadAttention
from gen_jax.nn.resnet import preact_resnet
from gen_jax.nn.transformer import Block, TransformerConfig


@dataclasses.dataclass(frozen=True)
class CLIPConfig(Checked):
    """``config.model`` of ``clip`` (module docstring).

    Attributes:
      embed_dim: ``D``, the joint embedding width.
      image_encoder: ``'vit'`` or ``'resnet'``.
      image_size: input side (0: the dataset's); must match the dataset when it has images.
      patch_size, vision_width, vision_layers, vision_heads, pool: the ViT (``pool`` ``'cls'`` or
        ``'mean'``).
      conv_stem: ``n`` stride-2 3x3 convolutions (GELU) before the patchify convolution, whose
        kernel and stride become ``patch_size / 2^n`` (the same tokens; Xiao et al. 2021, "Early
        convolutions help transformers see better"); 0 is CLIP's plain patchify.
      resnet_widths: channels per ResNet stage (``image_encoder='resnet'``).
      text_len: the text context (longest caption in tokens).
      vocab_size: text vocabulary (0: the dataset's caption vocabulary).
      text_width, text_layers, text_heads: the text transformer.
      mlp_ratio: MLP width / model width in both transformers.
      loss: ``'infonce'`` or ``'siglip'``.
      init_temperature: InfoNCE's ``tau`` at init (0.07: ``log_scale = log(1 / 0.07)``).
      max_logit_scale: the clamp of ``1 / tau`` (100).
    """

    PATH = "config.model"

    name: str = "clip"
    embed_dim: int = 64
    image_encoder: Literal["vit", "resnet"] = "vit"
    image_size: int = 0
    patch_size: int = 4
    conv_stem: int = 0
    vision_width: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    pool: Literal["cls", "mean"] = "cls"
    resnet_widths: tuple = (32, 64, 128)
    text_len: int = 10
    vocab_size: int = 0
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    mlp_ratio: int = 4
    loss: Literal["infonce", "siglip"] = "infonce"
    init_temperature: float = 0.07
    max_logit_scale: float = C.MAX_LOGIT_SCALE

    def __post_init__(self):
        self.positive("embed_dim", "patch_size", "vision_width", "vision_layers", "vision_heads",
                      "text_len", "text_width", "text_layers", "text_heads", "mlp_ratio",
                      "init_temperature", "max_logit_scale")
        self.nonnegative("image_size", "vocab_size", "conv_stem")
        self.require(self.patch_size % (2 ** self.conv_stem) == 0, "conv_stem",
                     f"{self.conv_stem} stride-2 convolutions do not divide patch_size = {self.patch_size}")
        self.require(self.vision_width % self.vision_heads == 0, "vision_width",
                     f"{self.vision_width} is not divisible by vision_heads={self.vision_heads}")
        self.require(self.text_width % self.text_heads == 0, "text_width",
                     f"{self.text_width} is not divisible by text_heads={self.text_heads}")
        self.require(len(self.resnet_widths) >= 1 and all(int(w) > 0 for w in self.resnet_widths),
                     "resnet_widths", f"must be positive channel counts, got {self.resnet_widths}")
        self.require(1.0 / self.init_temperature <= self.max_logit_scale, "init_temperature",
                     f"1 / {self.init_temperature} exceeds max_logit_scale = {self.max_logit_scale}")


# ----------------------------------------------------------------------------- encoders


class ViTBlock(nn.Module):
    """Pre-LN encoder block (no causal mask): ``x + MHA(LN x)``, ``x + W2 GELU(W1 LN x)``."""

    width: int
    heads: int
    mlp_ratio: int
    num_layers: int

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.normal(0.02)
        res = nn.initializers.normal(0.02 / math.sqrt(2 * self.num_layers))
        h = nn.LayerNorm(name="ln1")(x)
        x = x + MultiHeadAttention(self.heads, kernel_init=init, out_init=res, name="attn")(h)
        h = nn.Dense(self.mlp_ratio * self.width, kernel_init=init, name="mlp_in")(nn.LayerNorm(name="ln2")(x))
        return x + nn.Dense(self.width, kernel_init=res, name="mlp_out")(nn.gelu(h))


class ViTEncoder(nn.Module):
    """``x [B, H, W, C]`` in [0, 1] -> unnormalized ``[B, D]`` (module docstring)."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        p, w = c.patch_size, c.vision_width
        h = 2.0 * x - 1.0
        for i in range(c.conv_stem):
            h = nn.gelu(nn.Conv(max(w // 2 ** (c.conv_stem - i), 8), (3, 3), strides=(2, 2), padding="SAME",
                                name=f"stem_{i}")(h))
        q = p // 2 ** c.conv_stem
        h = nn.Conv(w, (q, q), strides=(q, q), padding="VALID", use_bias=False,
                    kernel_init=nn.initializers.normal(0.02), name="patchify")(h)
        b = h.shape[0]
        h = h.reshape(b, -1, w)
        cls = self.param("class_token", nn.initializers.normal(0.02), (w,))
        h = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, w)), h], axis=1)
        h = h + self.param("pos_embed", nn.initializers.normal(0.01), (h.shape[1], w))[None]
        h = nn.LayerNorm(name="ln_pre")(h)
        for i in range(c.vision_layers):
            h = ViTBlock(w, c.vision_heads, c.mlp_ratio, c.vision_layers, name=f"block_{i}")(h)
        f = h[:, 0] if c.pool == "cls" else jnp.mean(h[:, 1:], axis=1)
        f = nn.LayerNorm(name="ln_post")(f)
        return nn.Dense(c.embed_dim, use_bias=False, kernel_init=nn.initializers.normal(w ** -0.5), name="proj")(f)


class ResNetEncoder(nn.Module):
    """A small pre-activation ResNet: ``x [B, H, W, C]`` -> unnormalized ``[B, D]``."""

    cfg: CLIPConfig

    @nn.compact
    def __call__(self, x):
        c = self.cfg
        h = preact_resnet(x, c.resnet_widths, 2)
        f = nn.LayerNorm(name="ln_post")(jnp.mean(nn.silu(h), axis=(1, 2)))
        return nn.Dense(c.embed_dim, use_bias=False, name="proj")(f)


class TextEncoder(nn.Module):
    """``tokens int [B, L]`` (0 = padding) -> unnormalized ``[B, D]`` from the last non-pad token."""

    cfg: CLIPConfig
    vocab_size: int

    @nn.compact
    def __call__(self, tokens, return_states: bool = False):
        c = self.cfg
        tcfg = TransformerConfig(vocab_size=self.vocab_size, max_len=c.text_len, num_layers=c.text_layers,
                                 d_model=c.text_width, num_heads=c.text_heads, mlp_ratio=c.mlp_ratio,
                                 positions="learned")
        table = self.param("tok_embed", nn.initializers.normal(0.02), (self.vocab_size, c.text_width))
        pos = self.param("pos_embed", nn.initializers.normal(0.01), (c.text_len, c.text_width))
        v, length = self.vocab_size, tokens.shape[1]
        ids = jnp.where((tokens >= 0) & (tokens < v), tokens, v)       # out of vocabulary -> NaN row
        h = jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan) + pos[None, :length]
        positions = jnp.arange(length, dtype=jnp.int32)
        for i in range(c.text_layers):
            h, _ = Block(tcfg, name=f"block_{i}")(h, positions)
        h = nn.LayerNorm(name="ln_final")(h)
        last = jnp.max(jnp.where(tokens != 0, positions[None], 0), axis=1)   # last non-pad token
        f = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]
        out = nn.Dense(c.embed_dim, use_bias=False, kernel_init=nn.initializers.normal(c.text_width ** -0.5),
                       name="proj")(f)
        return (h, out) if return_states else out


class CLIP(nn.Module):
    """Both encoders and the temperature (``log_scale``; SigLIP also ``bias``)."""

    cfg: CLIPConfig
    vocab_size: int

    def setup(self):
        c = self.cfg
        self.image = (ViTEncoder if c.image_encoder == "vit" else ResNetEncoder)(c, name="image")
        self.text = TextEncoder(c, self.vocab_size, name="text")
        init_log = (math.log(1.0 / c.init_temperature) if c.loss == "infonce" else C.SIGLIP_INIT_LOG_T)
        self.log_scale = self.param("log_scale", nn.initializers.constant(init_log), ())
        if c.loss == "siglip":
            self.bias = self.param("bias", nn.initializers.constant(C.SIGLIP_INIT_BIAS), ())

    def temperature(self):
        return {"log_scale": self.log_scale, **({"bias": self.bias} if self.cfg.loss == "siglip" else {})}

    def embed_image(self, x):
        return l2_normalize(self.image(x))

    def embed_text(self, tokens):
        return l2_normalize(self.text(tokens))

    def text_states(self, tokens):
        """``(states [B, L, text_width], embedding [B, D])``: the per-token features after
        ``ln_final`` and the l2-normalized text embedding (:func:`text_token_states`)."""
        h, out = self.text(tokens, return_states=True)
        return h, l2_normalize(out)

    def __call__(self, x, tokens):
        return self.embed_image(x), self.embed_text(tokens), self.temperature()


def l2_normalize(z: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``z / ||z||`` along the last axis (``eps`` under the square root guards zero vectors)."""
    return z * jax.lax.rsqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True) + eps)


# ----------------------------------------------------------------------------- factory


def _sizes(cfg: CLIPConfig, info: Any) -> tuple[tuple[int, int, int], int]:
    """The image shape and vocabulary of the model, checked against the dataset."""
    shape = tuple(int(s) for s in (getattr(info, "image_shape", None) or (cfg.image_size, cfg.image_size, 3)))
    if cfg.image_size and (shape[0], shape[1]) != (cfg.image_size, cfg.image_size):
        raise ConfigError(f"config.model.image_size: {cfg.image_size}, but the dataset's images are "
                          f"{shape[0]}x{shape[1]}")
    if len(shape) != 3 or shape[0] < 1:
        raise ConfigError(f"config.model.image_size: no image size (dataset image_shape {shape})")
    if cfg.image_encoder == "vit" and (shape[0] % cfg.patch_size or shape[1] % cfg.patch_size):
        raise ConfigError(f"config.model.patch_size: {cfg.patch_size} does not divide the image size "
                          f"{shape[0]}x{shape[1]}")
    if cfg.image_encoder == "resnet" and (2 ** (len(cfg.resnet_widths) - 1)) > min(shape[:2]):
        raise ConfigError(f"config.model.resnet_widths: {len(cfg.resnet_widths)} stages downsample a "
                          f"{shape[0]}x{shape[1]} image below 1 pixel")
    data_vocab = int(getattr(info, "vocab_size", 0) or 0)
    vocab = cfg.vocab_size or data_vocab
    if vocab < 1:
        raise ConfigError("config.model.vocab_size: the dataset has no caption vocabulary; set it")
    if data_vocab and vocab < data_vocab:
        raise ConfigError(f"config.model.vocab_size: {vocab} is smaller than the dataset's caption "
                          f"vocabulary ({data_vocab})")
    cap = int(getattr(info, "caption_len", 0) or 0)
    if cap > cfg.text_len:
        raise ConfigError(f"config.model.text_len: the text context {cfg.text_len} is shorter than the "
                          f"dataset's captions ({cap} tokens)")
    return shape, vocab


def make_clip(model_cfg: Any, info: Any) -> GenerativeModel:
    """CLIP (module docstring) on a captioned dataset ``info`` (``image_shape``, ``vocab_size``,
    ``caption_len``): a :class:`GenerativeModel` of family ``'multimodal'`` with one gradient
    phase over batches ``{'image' [B, H, W, C], 'caption_tokens' int [B, L]}`` and an
    :class:`Embedder` of width ``embed_dim``."""
    cfg = typed(CLIPConfig, model_cfg, "config.model")
    shape, vocab = _sizes(cfg, info)
    module = CLIP(cfg, vocab)
    max_scale = float(cfg.max_logit_scale)

    def check_image(x, where):
        check_image_batch(x, shape, where)

    def check_tokens(tokens, where):
        if getattr(tokens, "ndim", None) != 2:
            raise InputError(f"{where}: caption tokens must be int [B, L], got shape "
                             f"{getattr(tokens, 'shape', None)}")
        if tokens.shape[1] > cfg.text_len:
            raise InputError(f"{where}: captions of {tokens.shape[1]} tokens are longer than the text "
                             f"context config.model.text_len = {cfg.text_len}")
        check_ids(tokens, vocab, where, "token ids")

    def init(key, batch):
        x, t = batch["image"], batch["caption_tokens"]
        check_image(x, "init batch['image']")
        check_tokens(t, "init batch['caption_tokens']")
        return module.init(key, x[:1], t[:1])

    def loss(params, batch, key):
        """The contrastive loss of the batch (``config.model.loss``) and the per-step metrics."""
        del key
        x, t = batch["image"], batch["caption_tokens"]
        check_image(x, "loss batch['image']")
        check_tokens(t, "loss batch['caption_tokens']")
        if x.shape[0] != t.shape[0]:
            raise InputError(f"loss: batch['image'] has {x.shape[0]} rows, batch['caption_tokens'] {t.shape[0]}")
        zi, zt, temp = module.apply(params, x, t)
        value = C.contrastive_loss(cfg.loss, zi, zt, temp, max_scale)
        if cfg.loss == "infonce":
            scale = C.logit_scale(temp["log_scale"], max_scale)
            logits = scale * (zi @ zt.T)
            m = {"logit_scale": scale}
        else:
            logits = C.siglip_logits(zi, zt, temp["log_scale"], temp["bias"])
            m = {"logit_scale": jnp.exp(temp["log_scale"]), "bias": temp["bias"]}
        return value, {"loss": value, **m, **C.in_batch_accuracy(logits)}

    def embed_image(params, x):
        """``x [B, H, W, C]`` in [0, 1] -> l2-normalized ``[B, embed_dim]``."""
        check_image(x, "embed_image x")
        return module.apply(params, x, method=CLIP.embed_image)

    def embed_text(params, tokens):
        """``tokens int [B, L <= text_len]`` (0 = padding) -> l2-normalized ``[B, embed_dim]``."""
        tokens = jnp.asarray(tokens) if isinstance(tokens, np.ndarray) else tokens
        check_tokens(tokens, "embed_text tokens")
        return module.apply(params, tokens, method=CLIP.embed_text)

    return GenerativeModel(
        name=cfg.name, family="multimodal",
        training=Training(init=init, phases=(Phase(None, loss=loss, name="clip"),)),
        embedder=Embedder(embed_image, embed_text, int(cfg.embed_dim)),
        data=DataSpec(shape, int(getattr(info, "num_levels", 0) or 0), 0, (("caption_tokens", vocab),)))


def text_token_states(model_cfg: Any, info: Any):
    """The text tower's per-token features, for a model that cross-attends to a frozen CLIP text
    encoder (Rombach et al. 2022, Sec. 3.3: ``tau_theta(y)`` of Eq. 3, here CLIP's text transformer
    as in Saharia et al. 2022, Sec. 2.1, which condition on a frozen text encoder's token states).

    Args:
      model_cfg: the CLIP ``config.model`` the params were trained with; info: its dataset.

    Returns:
      ``(fn, width, dim)``: ``fn(params, tokens int [B, L <= text_len]) -> (states [B, L, width],
      mask bool [B, L], embedding [B, dim])``, ``states`` the features after ``ln_final`` (of the
      causal blocks: position ``i`` has read tokens ``<= i``), ``mask`` True at the real (non-pad)
      tokens, ``embedding`` the l2-normalized text embedding of :attr:`Embedder.embed_text`;
      ``width = text_width`` and ``dim = embed_dim``. Token ids are checked as ``embed_text``'s.
    """
    cfg = typed(CLIPConfig, model_cfg, "config.model")
    _, vocab = _sizes(cfg, info)
    module = CLIP(cfg, vocab)

    def fn(params, tokens):
        if getattr(tokens, "ndim", None) != 2:
            raise InputError(f"text_token_states: tokens must be int [B, L], got shape {getattr(tokens, 'shape', None)}")
        if tokens.shape[1] > cfg.text_len:
            raise InputError(f"text_token_states: captions of {tokens.shape[1]} tokens are longer than the text "
                             f"context config.model.text_len = {cfg.text_len}")
        check_ids(tokens, vocab, "text_token_states tokens", "token ids")
        states, emb = module.apply(params, tokens, method=CLIP.text_states)
        return states, tokens != 0, emb

    return fn, int(cfg.text_width), int(cfg.embed_dim)


def logit_scale_of(params: Any, max_scale: float = C.MAX_LOGIT_SCALE) -> float:
    """The clamped logit scale ``min(exp(log_scale), max_scale)`` of trained CLIP params."""
    return float(C.logit_scale(params["params"]["log_scale"], max_scale))


def count_params(tree: Any) -> int:
    """Number of scalars in a (possibly abstract, ``jax.eval_shape``) params pytree."""
    return int(sum(int(np.prod(getattr(x, "shape", ()))) for x in jax.tree.leaves(tree)))


def abstract_params(model: GenerativeModel, image_shape: tuple, text_len: int) -> Any:
    """The params of ``model`` as ``ShapeDtypeStruct`` s (``jax.eval_shape``, nothing allocated)."""
    batch = {"image": jax.ShapeDtypeStruct((1, *image_shape), jnp.float32),
             "caption_tokens": jax.ShapeDtypeStruct((1, text_len), jnp.int32)}
    return jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)


