"""unCLIP (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP
Latents"): text -> CLIP image embedding (diffusion prior) -> image (diffusion decoder), over a
frozen CLIP.

``make_unclip(config.model, info, stages)`` takes the trained CLIP ``stages['clip']``
(:mod:`gen_jax.multimodal.clip`, its :class:`~gen_jax.model.Embedder`), frozen, and builds a
:class:`~gen_jax.model.GenerativeModel` of family ``'diffusion'`` with

* ``training``: two phases per step, ``Phase('prior')`` -- the diffusion prior over the CLIP
  image embedding given the caption tokens and CLIP text embedding
  (:mod:`gen_jax.diffusion.embedding_prior`, Sec. 2.1, ``x_0``-prediction MSE, text
  conditioning dropped 10%) -- and ``Phase('decoder')`` -- the pixel diffusion decoder
  conditioned on the CLIP image embedding (:mod:`gen_jax.diffusion.unclip_decoder`, Sec. 2.2,
  embedding dropped 10%, caption 50%), in pixels or (``config.model.decoder.space='latent'``)
  in the latent space of the frozen VQ tokenizer ``stages['stage1']`` (frozen groups
  ``'stage1'`` and ``'latent_stats'``). Both read the batch's CLIP embeddings from the frozen
  ``'clip'`` group (``stop_gradient``); each group has its optimizer section
  (``config.optim.prior`` / ``config.optim.decoder`` when present).
* ``sampler`` (kind ``'image'``): ``sample(params, key, num, cond={'caption_tokens': int
  [num, L]}) -> [num, H, W, C]`` in [0, 1]: ``z_t = CLIP_text(y)``, ``z_i ~ prior(. | y, z_t)``
  (guidance ``config.model.prior.guidance_scale``), ``x ~ decoder(. | z_i)`` (guidance
  ``config.model.decoder.guidance_scale``), one jitted program (two ``lax.scan`` s).
* ``conditioning``: ``split_conditioning('caption_tokens')``, null = the empty caption.

Beyond the contract (:class:`UnCLIPParts`, from :func:`build_unclip`):

* ``variations(params, key, images, num)``: decode ``num`` images from each image's CLIP
  embedding (Sec. 3.1, "Variations");
* ``text_diff(params, key, images, caption_from, caption_to, thetas)``: Sec. 3.3 ("Text
  Diffs"): ``z_d = norm(z_t(to) - z_t(from))``, ``z_theta = slerp(z_i, z_d, theta)``
  (:func:`slerp`) decoded from the image's fixed DDIM-inverted latent ``x_T``;
* ``prior_embed`` / ``decode``: the two halves.

Errors: a prior and decoder built for CLIP embeddings of different widths -- configured
(``config.model.prior.embed_dim`` / ``config.model.decoder.embed_dim`` disagreeing with each
other or with the CLIP stage) or found in params (:func:`check_pair`) -- are a ``ValueError``
naming both widths; caption tokens and embeddings of the wrong shape are ``ValueError`` s naming
the argument and the shape expected.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import Checked, ConfigError, typed
from gen_jax.diffusion.embedding_prior import (EmbeddingPrior, PriorConfig, build_prior, check_caption_tokens,
                                               check_embeddings, l2_normalize, prior_width)
from gen_jax.diffusion.unclip_decoder import (DecoderConfig, EmbeddingDecoder, build_decoder, decoder_width,
                                              vq_latent_space)
from gen_jax.model import (DataSpec, GenerativeModel, Phase, Sampler, Stage, Training, check_image_batch,
                           split_conditioning)
from gen_jax.nn import conditioning as nn_cond

STAGE = "config.stages.clip"
LATENT_STATS_IMAGES = 2048  # training images the latent decoder's per-channel statistics come from


@dataclasses.dataclass(frozen=True)
class UnCLIPConfig(Checked):
    """``config.model`` of unCLIP: ``prior`` (:class:`~gen_jax.diffusion.embedding_prior.PriorConfig`)
    and ``decoder`` (:class:`~gen_jax.diffusion.unclip_decoder.DecoderConfig`)."""

    name: str = "unclip"
    prior: PriorConfig = dataclasses.field(default_factory=PriorConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)


# ----------------------------------------------------------------------------- geometry


def slerp(a: jax.Array, b: jax.Array, theta) -> jax.Array:
    """Spherical interpolation of unit vectors (Shoemake 1985; Ramesh et al. 2022, Sec. 3.2-3.3):

        slerp(a, b, theta) = sin((1 - theta) W) / sin W  a + sin(theta W) / sin W  b,
        W = arccos(a . b),

    along the great circle from ``a`` (``theta = 0``) to ``b`` (``theta = 1``); unit norm for all
    ``theta``. Where ``a`` and ``b`` are (anti)parallel within float precision the
    normalized linear interpolation is returned instead.

    Args:
      a, b: ``[..., D]`` unit vectors (broadcast against each other); theta: scalar or
        broadcastable to ``[...]``.

    Returns:
      ``[..., D]``.
    """
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    if a.ndim < 1 or b.ndim < 1 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"slerp: a {a.shape} and b {b.shape} must be [..., D] of the same width D")
    a, b = jnp.broadcast_arrays(a, b)
    theta = jnp.asarray(theta, jnp.float32)[..., None]
    cos = jnp.clip(jnp.sum(a * b, -1, keepdims=True), -1.0, 1.0)
    omega = jnp.arccos(cos)
    sin = jnp.sin(omega)
    safe = sin > 1e-6
    s = jnp.where(safe, sin, 1.0)
    out = jnp.sin((1.0 - theta) * omega) / s * a + jnp.sin(theta * omega) / s * b
    lerp = l2_normalize((1.0 - theta) * a + theta * b)
    return jnp.where(safe, out, lerp)


def text_diff_embeddings(z_img: jax.Array, z_from: jax.Array, z_to: jax.Array, thetas) -> jax.Array:
    """Ramesh et al. 2022, Sec. 3.3: ``z_d = norm(z_t(to) - z_t(from))`` and
    ``z_theta = slerp(z_i, z_d, theta)`` for each ``theta``: ``[B, K, D]`` from ``z_img, z_from,
    z_to [B, D]`` and ``thetas [K]`` (the paper takes ``theta`` from 0 to 0.5)."""
    z_d = l2_normalize(z_to - z_from)
    th = jnp.asarray(thetas, jnp.float32)
    if th.ndim != 1:
        raise ValueError(f"text_diff: thetas must be [K], got shape {th.shape}")
    return slerp(z_img[:, None], z_d[:, None], th[None, :])


# ----------------------------------------------------------------------------- checks


def check_widths(prior_dim: int, decoder_dim: int, clip_dim: Optional[int] = None) -> int:
    """The common embedding width; a ``ValueError`` naming both widths when the prior and the
    decoder were built for CLIP embeddings of different widths (or either differs from the CLIP
    model's ``clip_dim``)."""
    if int(prior_dim) != int(decoder_dim):
        raise ValueError(f"unCLIP: the prior predicts CLIP embeddings of width {prior_dim} but the decoder is "
                         f"conditioned on embeddings of width {decoder_dim}; a prior and a decoder must be "
                         f"built for the same CLIP model")
    if clip_dim is not None and int(clip_dim) != int(prior_dim):
        raise ValueError(f"unCLIP: the prior and decoder are built for CLIP embeddings of width {prior_dim}, "
                         f"the CLIP model ({STAGE}) embeds to width {clip_dim}")
    return int(prior_dim)


def check_pair(params: Mapping) -> int:
    """The embedding width of ``params['prior']`` and ``params['decoder']`` (read from their
    layers), via :func:`check_widths`: a prior and decoder trained on different CLIP models
    cannot be combined."""
    return check_widths(prior_width(params["prior"]), decoder_width(params["decoder"]))


def _configured_width(field: str, value: int, clip_dim: int) -> int:
    if value and value != clip_dim:
        raise ConfigError(f"config.model.{field}.embed_dim: the {field} is built for CLIP embeddings of width "
                          f"{value}, the CLIP stage ({STAGE}) embeds to width {clip_dim}")
    return clip_dim


def check_clip_stage(stages: Optional[Mapping[str, Stage]], info: Any) -> Stage:
    """``stages['clip']`` after checking it is a contrastive model (an embedder) of this dataset."""
    if not stages or "clip" not in stages:
        raise ConfigError(f"{STAGE}: unCLIP needs a trained CLIP (config.stages = {{'clip': {{'config': "
                          f"'clip_shapes', 'workdir': 'runs/clip_shapes'}}}})")
    stage = stages["clip"]
    if getattr(stage.model, "embedder", None) is None:
        raise ConfigError(f"{STAGE}.config: stage clip builds {stage.model.name!r}, which has no embedder")
    name = getattr(info, "name", None)
    ds = getattr(getattr(stage.config, "dataset", None), "name", None)
    if name is not None and ds is not None and ds != name:
        raise ConfigError(f"{STAGE}.config: CLIP was trained on {ds!r}, this model is on {name!r}")
    return stage


def check_tokenizer_stage(stages: Optional[Mapping[str, Stage]], info: Any) -> Stage:
    """``stages['stage1']`` for ``config.model.decoder.space = 'latent'``: a VQ tokenizer of this
    dataset (a codec with a continuous view of its latents)."""
    if not stages or "stage1" not in stages:
        raise ConfigError("config.stages.stage1: the latent decoder (config.model.decoder.space='latent') needs "
                          "a trained VQ tokenizer (config.stages.stage1 = {'config': 'vqvae_shapes', ...})")
    stage = stages["stage1"]
    ds = getattr(getattr(stage.config, "dataset", None), "name", None)
    if ds is not None and ds != getattr(info, "name", ds):
        raise ConfigError(f"config.stages.stage1.config: the tokenizer was trained on {ds!r}, this model is on "
                          f"{info.name!r}")
    return stage


# ----------------------------------------------------------------------------- the model


class UnCLIPParts(NamedTuple):
    """unCLIP and its functions beyond the contract (module docstring). Every function takes the
    full params ``{'prior', 'decoder', 'clip'}`` (:func:`gen_jax.model.full_params`).

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel`.
      stage: the frozen CLIP; prior, decoder: :class:`EmbeddingPrior`, :class:`EmbeddingDecoder`.
      embed_dim: ``D``; caption_len: ``L``.
      make_sampler: ``(prior_guidance, decoder_guidance, prior_steps, decoder_steps,
        candidates, return_embeddings=False) -> sample(params, key, num, cond)``.
      prior_embed: ``(params, key, tokens [B, L], guidance=cfg) -> z_img [B, D]``.
      decode: ``(params, key, z [B, D], tokens=None, guidance=cfg, x_T=None) -> [B, H, W, C]``.
      variations: ``(params, key, images [B, H, W, C], num, guidance=cfg) -> [B, num, H, W, C]``.
      text_diff: ``(params, key, images [B, H, W, C], caption_from [B, L], caption_to [B, L],
        thetas [K], guidance=cfg) -> [B, K, H, W, C]``.
    """

    model: GenerativeModel
    stage: Stage
    prior: EmbeddingPrior
    decoder: EmbeddingDecoder
    embed_dim: int
    caption_len: int
    make_sampler: Callable
    prior_embed: Callable
    decode: Callable
    variations: Callable
    text_diff: Callable


def build_unclip(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> UnCLIPParts:
    """unCLIP over ``stages['clip']`` on the captioned dataset ``info`` (module docstring).

    Raises:
      ConfigError naming the field (a missing or non-contrastive CLIP stage, a dataset without
      captions, an ``embed_dim`` other than CLIP's); ValueError naming both widths when the
      prior's and decoder's configured widths differ.
    """
    cfg = typed(UnCLIPConfig, cfg, "config.model")
    if not getattr(info, "has_captions", False):
        raise ConfigError(f"config.dataset.name: unCLIP needs captions; dataset {getattr(info, 'name', '?')!r} "
                          f"has none")
    stage = check_clip_stage(stages, info)
    emb = stage.model.embedder
    clip_dim = int(emb.dim)
    if cfg.prior.embed_dim and cfg.decoder.embed_dim:
        check_widths(cfg.prior.embed_dim, cfg.decoder.embed_dim)
    d = check_widths(_configured_width("prior", cfg.prior.embed_dim, clip_dim),
                     _configured_width("decoder", cfg.decoder.embed_dim, clip_dim), clip_dim)
    image_shape = tuple(int(s) for s in info.image_shape)
    levels, vocab, length = int(info.num_levels), int(info.vocab_size), int(info.caption_len)
    prior = build_prior(cfg.prior, d, vocab, length)
    space, frozen = None, {"clip": stage.params}
    if cfg.decoder.space == "latent":
        stage1 = check_tokenizer_stage(stages, info)
        from gen_jax.data.datasets import load_split

        train = load_split(info.name, "train")["image"][:LATENT_STATS_IMAGES]
        space, stats = vq_latent_space(stage1, train)
        frozen.update(stage1=stage1.params, latent_stats=stats)
    decoder = build_decoder(cfg.decoder, d, image_shape, levels, vocab, length, space)
    check_widths(prior.embed_dim, decoder.embed_dim, clip_dim)

    def space_params(params):
        return {"stage1": params["stage1"], "latent_stats": params["latent_stats"]} if space is not None else None

    def clip_params(params):
        return jax.lax.stop_gradient(params["clip"])

    def embed_text(params, tokens):
        return emb.embed_text(clip_params(params), tokens)

    def embed_image(params, x):
        return emb.embed_image(clip_params(params), x)

    def batch_tokens(batch, where):
        if "caption_tokens" not in batch:
            raise ValueError(f"{where}: unCLIP trains on captioned images; the batch has {sorted(batch)}")
        tok = batch["caption_tokens"]
        check_caption_tokens(tok, batch["image"].shape[0], length, f"{where}: batch['caption_tokens']")
        return tok.astype(jnp.int32)

    def init(key, batch):
        check_image_batch(batch["image"], image_shape, "init batch['image']")
        batch_tokens(batch, "init")
        k_p, k_d = jax.random.split(key)
        return {"prior": prior.init(k_p), "decoder": decoder.init(k_d)}

    def prior_loss(params, batch, key):
        x = batch["image"]
        check_image_batch(x, image_shape, "prior loss batch['image']")
        tok = batch_tokens(batch, "prior loss")
        terms = prior.loss(params["prior"], embed_image(params, x), embed_text(params, tok), tok, key)
        return jnp.mean(terms["loss"]), {"prior_mse": terms["mse"], "prior_dropped": terms["dropped"]}

    def decoder_loss(params, batch, key):
        x = batch["image"]
        check_image_batch(x, image_shape, "decoder loss batch['image']")
        tok = batch_tokens(batch, "decoder loss")
        terms = decoder.loss(params["decoder"], x, embed_image(params, x), tok if decoder.caption_len else None, key,
                             space_params(params))
        return jnp.mean(terms["loss"]), {"decoder_mse": terms["mse"]}

    def cond_tokens(tokens, num, where):
        if tokens is None:
            raise ValueError(f"{where}: unCLIP samples from captions; pass cond={{'caption_tokens': int "
                             f"[{num}, {length}]}}")
        check_caption_tokens(tokens, num, length, where)
        return jnp.asarray(tokens, jnp.int32)

    def _prior_embed(params, key, tokens, guidance, steps, candidates):
        return prior.sample(params["prior"], key, embed_text(params, tokens), tokens, guidance, steps, candidates)

    def _decode(params, key, z, tokens, guidance, steps, x_T=None):
        tok = tokens if decoder.caption_len else None
        return decoder.sample(params["decoder"], key, z, tok, guidance, steps, x_T, space_params(params))

    _prior_embed_jit = jax.jit(_prior_embed, static_argnums=(3, 4, 5))
    _decode_jit = jax.jit(_decode, static_argnums=(4, 5))

    def prior_embed(params, key, tokens, guidance: float = cfg.prior.guidance_scale,
                    steps: int = cfg.prior.sample_steps, candidates: int = cfg.prior.candidates):
        tokens = cond_tokens(tokens, getattr(tokens, "shape", (0,))[0], "prior_embed: tokens")
        return _prior_embed_jit(params, key, tokens, float(guidance), int(steps), int(candidates))

    def decode(params, key, z, tokens=None, guidance: float = cfg.decoder.guidance_scale,
               steps: int = cfg.decoder.sample_steps, x_T=None):
        check_embeddings(z, None, d, "decode: z")
        if decoder.caption_len and tokens is not None:
            tokens = cond_tokens(tokens, z.shape[0], "decode: tokens")
        return _decode_jit(params, key, z, tokens, float(guidance), int(steps), x_T)

    def make_sampler(prior_guidance: float = cfg.prior.guidance_scale,
                     decoder_guidance: float = cfg.decoder.guidance_scale,
                     prior_steps: int = cfg.prior.sample_steps, decoder_steps: int = cfg.decoder.sample_steps,
                     candidates: int = cfg.prior.candidates, return_embeddings: bool = False) -> Callable:
        """``sample(params, key, num, cond={'caption_tokens': [num, L]}) -> [num, H, W, C]`` (or
        ``(images, z_img [num, D])`` with ``return_embeddings``)."""
        @jax.jit
        def run(params, key, tokens):
            k_p, k_d = jax.random.split(key)
            z = _prior_embed(params, k_p, tokens, prior_guidance, prior_steps, candidates)
            return _decode(params, k_d, z, tokens, decoder_guidance, decoder_steps), z

        def sample(params, key, num, cond=None):
            tokens = cond_tokens(None if cond is None else cond.get("caption_tokens"), num,
                                 "sample: cond['caption_tokens']")
            x, z = run(params, key, tokens)
            return (x, z) if return_embeddings else x

        return sample

    def _variations(params, key, images, num, guidance):
        z = embed_image(params, images)
        x = _decode(params, key, jnp.repeat(z, num, axis=0), None, guidance, cfg.decoder.sample_steps)
        return x.reshape((images.shape[0], num) + image_shape)

    _variations_jit = jax.jit(_variations, static_argnums=(3, 4))

    def variations(params, key, images, num: int, guidance: float = cfg.decoder.guidance_scale):
        check_image_batch(images, image_shape, "variations: images")
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"variations: num must be a positive int, got {num!r}")
        return _variations_jit(params, key, images, num, float(guidance))

    def _text_diff(params, key, images, cap_from, cap_to, thetas, guidance):
        b, k = images.shape[0], thetas.shape[0]
        z_i = embed_image(params, images)
        z_th = text_diff_embeddings(z_i, embed_text(params, cap_from), embed_text(params, cap_to), thetas)
        tok = cap_to if decoder.caption_len else None
        x_T = decoder.invert(params["decoder"], images, z_i, tok, cfg.decoder.sample_steps, space_params(params))
        rep = lambda a: None if a is None else jnp.repeat(a, k, axis=0)
        x = decoder.sample(params["decoder"], key, z_th.reshape(b * k, d), rep(tok), guidance,
                           cfg.decoder.sample_steps, rep(x_T), space_params(params))
        return x.reshape((b, k) + image_shape)

    _text_diff_jit = jax.jit(_text_diff, static_argnums=(6,))

    def text_diff(params, key, images, caption_from, caption_to, thetas=np.linspace(0.0, 0.5, 6),
                  guidance: float = cfg.decoder.guidance_scale):
        check_image_batch(images, image_shape, "text_diff: images")
        b = images.shape[0]
        cf = cond_tokens(caption_from, b, "text_diff: caption_from")
        ct = cond_tokens(caption_to, b, "text_diff: caption_to")
        th = jnp.asarray(thetas, jnp.float32)
        if th.ndim != 1 or th.shape[0] < 1:
            raise ValueError(f"text_diff: thetas must be a non-empty [K] array, got shape {th.shape}")
        return _text_diff_jit(params, key, images, cf, ct, th, float(guidance))

    null = lambda num: {"caption_tokens": np.asarray(nn_cond.null_caption(num, length))}
    conditioning = split_conditioning("caption_tokens", with_label=False, null=null)
    training = Training(init=init, phases=(Phase("prior", prior_loss, name="prior"),
                                           Phase("decoder", decoder_loss, name="decoder")),
                        frozen=frozen)
    model = GenerativeModel(name=cfg.name, family="diffusion", training=training,
                            sampler=Sampler(make_sampler(), "image"), conditioning=conditioning,
                            data=DataSpec(image_shape, levels, 0, (("caption_tokens", vocab),)))
    return UnCLIPParts(model, stage, prior, decoder, d, length, make_sampler, prior_embed, decode, variations,
                       text_diff)


def make_unclip(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """The registry's factory: :func:`build_unclip` ``(cfg, info, stages).model``."""
    return build_unclip(cfg, info, stages).model
