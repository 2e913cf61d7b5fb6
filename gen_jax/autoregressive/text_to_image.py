"""A DALL-E-style text-to-image prior: one decoder-only transformer over [caption tokens, image tokens].

Stage one is a frozen image tokenizer (a :class:`gen_jax.model.Codec` of kind ``'ids'``: a
VQ-VAE, VQGAN or discrete VAE) mapping a 32x32 image to a grid of ``h x w`` ids in a codebook
of ``K`` codes (Esser et al. 2021, Sec. 3.2: "learning the composition of images with
transformers" over a frozen tokenizer's indices; Ramesh et al. 2021, Sec. 2.1 stage one).
Stage two (this model, Ramesh et al. 2021, Sec. 2, 2.2) models the concatenation of the
caption's ``T`` word ids and the ``N = h w`` image ids (raster order) autoregressively:

    log p(x, y) ~ log p(y_img | y_txt) (+ lambda log p(y_txt))
               = sum_j log p(img_j | txt, img_<j) (+ lambda sum_i log p(txt_i | txt_<i)).

Sequence layout (input ids; one embedding table)::

    [txt_0 .. txt_{T-1}] [<boi>] [img_0 .. img_{N-2}]          length T + N
    image id k -> k (0..K-1);  <boi> -> K;  word id w -> K + 1 + w

Logits have ``K + V_text`` columns: the image codebook first (read at positions
``T .. T+N-1``, predicting ``img_0 .. img_{N-1}``), then the caption vocabulary (read at
positions ``0 .. T-2``, predicting ``txt_1 .. txt_{T-1}`` up to and including ``<eos>``).
Caption padding is part of the fixed text context (Ramesh et al. pad every caption to 256
tokens; here to ``text_len``).

Loss (per example, nats): the mean NLL of the image tokens, plus ``text_loss_weight`` times
the mean NLL of the scored text tokens (Ramesh et al. weight text 1/8, image 7/8; the default
here scores the image only). The training batch's images are encoded to ids by the frozen
codec inside the loss (``stop_gradient``), so the trained group is ``'prior'`` only and the
tokenizer ``'stage1'`` comes in through ``Training.frozen``.

Caption dropout (Ho & Salimans 2022, Alg. 1): with probability ``caption_drop`` a training
caption is replaced by the null caption ``[<bos>, <eos>, 0, ...]`` (the empty caption), so
the same network also models ``p(img | null)``. Sampling uses classifier-free guidance on the
logits, ``l_u + s (l_c - l_u)`` (:mod:`gen_jax.autoregressive.guided_tokens`), both streams in
one KV-cached ``lax.scan``; the drawn ids ``[num, h, w]`` are decoded by the codec. Reranking
by a contrastive model (Sec. 2.5) is :func:`gen_jax.autoregressive.guided_tokens.best_of_n`.

Refusals (naming the field): a dataset caption longer than the text context
(``config.model.text_len``), a stage one that is not an id codec, whose codebook size or token
grid differ from ``config.model.codebook_size`` / ``config.model.token_grid``, caption
tokens at sampling longer than ``text_len`` or outside the caption vocabulary, and token ids
outside the codebook (``[0, K)``) given to :attr:`TextToImageParts.image_logits`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.autoregressive.guided_tokens import make_guided_generator, make_guided_recompute
from gen_jax.autoregressive.token_sampling import make_token_sampler
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import (GenerativeModel, Phase, Sampler, Stage, Training, check_image_batch,
                           split_conditioning)
from gen_jax.nn.transformer import Decoder, TransformerConfig, check_token_ids, make_decoder

BOS, EOS = 2, 3  # gen_jax.data.tokenizers
STAGE1 = "config.stages.stage1"


@dataclasses.dataclass(frozen=True)
class TextToImageConfig(Checked):
    """``config.model`` of the text-to-image prior.

    Attributes:
      name: model name (``'dalle'``).
      codebook_size: ``K``, the stage-one codebook size (checked against the tokenizer).
      token_grid: ``(h, w)``, the stage-one token grid (checked against the tokenizer).
      text_len: ``T``, the text context (captions are padded to it; longer ones refused).
      num_layers, d_model, num_heads, mlp_ratio, positions, dropout: the transformer.
      caption_drop: probability of the null caption at training (classifier-free guidance).
      text_loss_weight: ``lambda``, the weight of the caption tokens' NLL (0 = image only).
      guidance_scale: ``s`` of the default sampler (1 = conditional, no guidance).
      temperature, top_k: default token sampling settings (0 = greedy / off).
    """

    name: str = "dalle"
    codebook_size: int = 512
    token_grid: tuple[int, int] = (8, 8)
    text_len: int = 10
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    positions: str = "learned"
    dropout: float = 0.0
    caption_drop: float = 0.1
    text_loss_weight: float = 0.0
    guidance_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0

    def __post_init__(self):
        self.positive("codebook_size", "text_len", "num_layers", "d_model", "num_heads", "mlp_ratio")
        self.require(len(self.token_grid) == 2 and min(self.token_grid) >= 1, "token_grid",
                     f"must be (h, w) of positive sizes, got {self.token_grid}")
        self.require(self.text_len >= 2, "text_len", f"needs room for <bos> and <eos>, got {self.text_len}")
        self.require(self.d_model % self.num_heads == 0, "num_heads",
                     f"d_model = {self.d_model} is not divisible by num_heads = {self.num_heads}")
        self.in_range("dropout", 0, 1, hi_open=True)
        self.in_range("caption_drop", 0, 1)
        self.require(self.text_loss_weight >= 0, "text_loss_weight", f"must be >= 0, got {self.text_loss_weight}")
        self.require(self.guidance_scale >= 0, "guidance_scale", f"must be >= 0, got {self.guidance_scale}")
        self.require(self.temperature >= 0, "temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        self.require(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")

    @property
    def num_image_tokens(self) -> int:
        return int(self.token_grid[0] * self.token_grid[1])


# ----------------------------------------------------------------------------- stage one


def stage_codebook_size(stage: Stage) -> Optional[int]:
    """The stage-one codebook size read from its config (``num_codes``), or None if it has none."""
    m = stage.config.model
    value = m.get("num_codes") if hasattr(m, "get") else getattr(m, "num_codes", None)
    return None if value is None else int(value)


def check_tokenizer(stages: Optional[Mapping[str, Stage]], cfg: TextToImageConfig, image_shape) -> Stage:
    """``stages['stage1']`` after checking it is an id codec with ``cfg``'s codebook and grid.

    Raises:
      ConfigError naming ``config.stages.stage1`` (missing / not a tokenizer),
      ``config.model.codebook_size`` or ``config.model.token_grid`` (another architecture).
    """
    if not stages or "stage1" not in stages:
        raise ConfigError(f"{STAGE1}: the text-to-image prior needs a trained image tokenizer "
                          f"(config.stages = {{'stage1': {{'config': 'vqvae_shapes', 'workdir': ...}}}})")
    stage = stages["stage1"]
    codec = getattr(stage.model, "codec", None)
    if codec is None or codec.kind != "ids":
        raise ConfigError(f"{STAGE1}.config: stage one builds {stage.model.name!r}, which is not an image tokenizer "
                          f"(a codec of kind 'ids')")
    k = stage_codebook_size(stage)
    if k is not None and k != cfg.codebook_size:
        raise ConfigError(f"config.model.codebook_size: the prior is configured for {cfg.codebook_size} codes, "
                          f"the stage-one tokenizer ({stage.workdir}) has {k}")
    probe = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
    grid = tuple(int(s) for s in jax.eval_shape(lambda p, x: codec.encode(p, x), stage.params, probe).shape[1:])
    if grid != tuple(cfg.token_grid):
        raise ConfigError(f"config.model.token_grid: the prior is configured for a {tuple(cfg.token_grid)} grid, "
                          f"the stage-one tokenizer ({stage.workdir}) gives {grid}")
    return stage


# ----------------------------------------------------------------------------- captions


def null_captions(num: int, text_len: int) -> np.ndarray:
    """The null (empty) caption ``[<bos>, <eos>, 0, ...]`` for ``num`` rows, int32 ``[num, T]``."""
    out = np.zeros((num, text_len), np.int32)
    out[:, 0], out[:, 1] = BOS, EOS
    return out


def drop_captions(key: jax.Array, tokens: jax.Array, rate: float) -> tuple[jax.Array, jax.Array]:
    """Replaces each row of ``tokens [B, T]`` by the null caption with probability ``rate``
    (Ho & Salimans 2022, Alg. 1). Returns ``(tokens, dropped bool [B])``."""
    b, t = tokens.shape
    dropped = jax.random.bernoulli(key, rate, (b,))
    return jnp.where(dropped[:, None], jnp.asarray(null_captions(1, t)), tokens), dropped


def fit_captions(tokens, text_len: int, vocab: int, where: str) -> jax.Array:
    """Caption ids ``[B, L <= T]`` padded with 0 to ``[B, T]``; refuses ``L > T`` (naming
    ``config.model.text_len``) and ids outside ``[0, vocab)``."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"{where}: caption tokens must be int [B, L], got shape {tokens.shape}")
    if tokens.shape[1] > text_len:
        raise ValueError(f"{where}: a caption of {tokens.shape[1]} tokens is longer than the text context "
                         f"config.model.text_len = {text_len}")
    check_token_ids(tokens, vocab, where)
    return jnp.pad(tokens.astype(jnp.int32), ((0, 0), (0, text_len - tokens.shape[1])))


# ----------------------------------------------------------------------------- the model


class TextToImageParts(NamedTuple):
    """The prior and its functions beyond the contract.

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel` (sampler kind ``'image'``).
      stage: the frozen tokenizer.
      decoder: the transformer (:class:`gen_jax.nn.transformer.Decoder`).
      image_logits: ``(params, captions [B, T], ids [B, N]) -> [B, N, K]``: the logits of
        image token ``j`` given the caption and ids ``< j`` (ids checked against ``[0, K)``).
      prompts: ``(captions [B, T]) -> (cond prompt, null prompt)`` each ``[B, T + 1]``.
      make_sampler: ``(guidance_scale, temperature, top_k, use_cache=True, return_ids=False)
        -> sample(params, key, num, cond) -> images`` (or ``(ids [num, h, w], logits [num, N, K])``).
    """

    model: GenerativeModel
    stage: Stage
    decoder: Decoder
    image_logits: Callable
    prompts: Callable
    make_sampler: Callable


def build_text_to_image(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> TextToImageParts:
    """The prior of ``cfg`` over the tokenizer ``stages['stage1']`` (module docstring).

    Raises:
      ConfigError naming the field (:class:`TextToImageConfig`, :func:`check_tokenizer`, and
      ``config.model.text_len`` when the dataset's captions are longer).
    """
    cfg = typed(TextToImageConfig, cfg, "config.model")
    if not getattr(info, "has_captions", False):
        raise ConfigError(f"config.dataset.name: dataset {info.name!r} has no captions")
    if int(info.caption_len) > cfg.text_len:
        raise ConfigError(f"config.model.text_len: captions of {info.name!r} have {info.caption_len} tokens, longer "
                          f"than the text context text_len = {cfg.text_len}")
    image_shape = tuple(int(s) for s in info.image_shape)
    stage = check_tokenizer(stages, cfg, image_shape)
    codec = stage.model.codec
    k, t, n, vt = cfg.codebook_size, cfg.text_len, cfg.num_image_tokens, int(info.vocab_size)
    decoder = make_decoder(TransformerConfig(
        vocab_size=k + 1 + vt, max_len=t + n, num_layers=cfg.num_layers, d_model=cfg.d_model,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, positions=cfg.positions, dropout=cfg.dropout,
        out_size=k + vt))

    def prompts(captions):
        boi = jnp.full((captions.shape[0], 1), k, jnp.int32)
        null = jnp.asarray(null_captions(captions.shape[0], t))
        return (jnp.concatenate([captions + k + 1, boi], 1), jnp.concatenate([null + k + 1, boi], 1))

    def forward(params, captions, ids, key=None):
        """``(image logits [B, N, K], text logits [B, T - 1, V_text])``."""
        x = jnp.concatenate([prompts(captions)[0], ids[:, :-1]], axis=1)  # [B, T + N]
        logits = decoder.apply(params["prior"], x, key).astype(jnp.float32)
        return logits[:, t:, :k], logits[:, :t - 1, k:]

    forward_jit = jax.jit(forward)

    def image_logits(params, captions, ids):
        captions = fit_captions(captions, t, vt, "image_logits: captions")
        if ids.ndim != 2 or ids.shape != (captions.shape[0], n):
            raise ValueError(f"image_logits: ids must be int [B={captions.shape[0]}, N={n}], got shape {ids.shape}")
        check_token_ids(ids, k, "image_logits: ids (the codebook, config.model.codebook_size)")
        return forward_jit(params, captions, ids.astype(jnp.int32))[0]

    def encode_ids(params, x):
        check_image_batch(x, image_shape)
        ids = jax.lax.stop_gradient(codec.encode(params["stage1"], x))
        return ids.reshape(x.shape[0], n).astype(jnp.int32)

    def init(key, batch):
        check_image_batch(batch["image"], image_shape)
        fit_captions(batch["caption_tokens"], t, vt, "init batch['caption_tokens']")
        return {"prior": decoder.init(key)}

    def loss(params, batch, key):
        k_drop, k_net = jax.random.split(key)
        caps = fit_captions(batch["caption_tokens"], t, vt, "loss batch['caption_tokens']")
        caps, dropped = drop_captions(k_drop, caps, cfg.caption_drop)
        ids = encode_ids(params, batch["image"])
        img, txt = forward(params, caps, ids, k_net if cfg.dropout > 0 else None)
        nll_img = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(img), ids[..., None], -1)[..., 0], axis=1)
        metrics = {"image_nll": nll_img, "caption_dropped": dropped.astype(jnp.float32)}
        total = nll_img
        if cfg.text_loss_weight > 0:
            y = caps[:, 1:]
            is_end = (y == EOS).astype(jnp.int32)
            mask = ((jnp.cumsum(is_end, 1) - is_end) == 0).astype(jnp.float32)
            ll = jnp.take_along_axis(jax.nn.log_softmax(txt), y[..., None], -1)[..., 0]
            nll_txt = -jnp.sum(ll * mask, 1) / jnp.maximum(jnp.sum(mask, 1), 1.0)
            total = total + cfg.text_loss_weight * nll_txt
            metrics["text_nll"] = nll_txt
        return jnp.mean(total), metrics

    def make_sampler(guidance_scale: float = cfg.guidance_scale, temperature: float = cfg.temperature,
                     top_k: int = cfg.top_k, use_cache: bool = True, return_ids: bool = False) -> Callable:
        """``sample(params, key, num, cond={'caption_tokens': [num, L <= T]}) -> [num, H, W, C]``."""
        if guidance_scale < 0:
            raise ValueError(f"make_sampler: guidance_scale must be >= 0, got {guidance_scale}")
        pick = make_token_sampler(temperature, top_k, 1.0, k, "make_sampler")
        gen = (make_guided_generator if use_cache else make_guided_recompute)(decoder, pick, k)

        def sample(params, key, num, cond=None):
            if cond is None or "caption_tokens" not in cond:
                raise ValueError(f"sample: the prior is conditioned on captions; pass "
                                 f"cond={{'caption_tokens': int [{num}, <= {t}]}}")
            caps = fit_captions(cond["caption_tokens"], t, vt, "sample cond['caption_tokens']")
            if caps.shape[0] != num:
                raise ValueError(f"sample: cond['caption_tokens'] has {caps.shape[0]} rows for num = {num}")
            return run(params, key, caps)

        @jax.jit
        def run(params, key, caps):
            ids, logits = gen(params["prior"], key, *prompts(caps), n, guidance_scale)
            ids = ids.reshape((caps.shape[0],) + tuple(cfg.token_grid))
            if return_ids:
                return ids, logits
            return jnp.clip(codec.decode(params["stage1"], ids), 0.0, 1.0)

        return sample

    conditioning = split_conditioning("caption_tokens", with_label=False,
                                      null=lambda num: {"caption_tokens": null_captions(num, t)})
    training = Training(init=init, phases=(Phase("prior", loss, name="prior"),), frozen={"stage1": stage.params})
    model = GenerativeModel(name=cfg.name, family="autoregressive", training=training,
                            sampler=Sampler(make_sampler(), "image"), conditioning=conditioning)
    return TextToImageParts(model=model, stage=stage, decoder=decoder, image_logits=image_logits,
                            prompts=prompts, make_sampler=make_sampler)


def make_text_to_image(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """The registry's factory: :func:`build_text_to_image` ``(cfg, info, stages).model``."""
    return build_text_to_image(cfg, info, stages).model
