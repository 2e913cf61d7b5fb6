"""Text-conditioned latent diffusion (Rombach et al. 2022, Sec. 3.3): a U-Net over the latent grid of
a frozen autoencoder that cross-attends to the token states of a frozen CLIP text encoder, with
classifier-free guidance, negative prompts and static / dynamic thresholding.

Three stages, two of them frozen (the trained groups are only ``'denoiser'``):

1. **Stage one** ``stages['stage1']``: an autoencoder with a continuous latent grid
   ``z [B, h, w, D]``: the continuous view of a VQ tokenizer's codec
   (:attr:`gen_jax.model.Codec.continuous`: ``encode`` gives the pre-quantization ``z_e``,
   ``decode`` quantizes to the nearest codes and decodes -- the VQ-regularized autoencoder of
   Rombach et al. Sec. 3.1, "the quantization layer absorbed by the decoder"), or any codec of
   kind ``'continuous'`` whose ``encode`` returns such a grid. On shapes: ``vqvae_shapes``
   (8 x 8 x 64 latents of 32 x 32 images).
2. **Text encoder** ``stages['text']``: CLIP (:mod:`gen_jax.multimodal.clip`), of which only the
   text tower is used: its per-token features ``tau(y) [B, L, W]`` after ``ln_final`` with the
   padding mask (:func:`gen_jax.multimodal.clip.text_token_states`), and its pooled text embedding
   ``[B, E]``.
3. **Denoiser** (trained): the DDPM U-Net (:class:`gen_jax.nn.unet.UNet`) on the standardized
   latents, whose attention blocks cross-attend to ``tau(y)`` (Rombach et al. 2022, Sec. 3.3:
   ``Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V`` with ``Q = W_Q phi(z_t)``,
   ``K = W_K tau(y)``, ``V = W_V tau(y)``), and whose time embedding gets the pooled text
   embedding added (``pooled_text``; the pooled conditioning of Saharia et al. 2022, Sec. 2.2).
   Both text inputs are zero for the empty caption (the masked cross-attention returns zeros,
   the pooled vector is multiplied by "has a token"), which is the null condition.

Objective (Rombach et al. 2022, Eq. 3, the conditional ``L_LDM``):

    L = E_{z_0, y, eps, t} || eps - eps_theta(z_t, t, tau(y')) ||^2,   z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,

with ``z_0 = (E(x) - m) / s`` (per-channel mean and standard deviation of the training latents,
:func:`gen_jax.diffusion.latent.latent_channel_stats`; Rombach et al. rescale by one scalar, App.
G) and ``y'`` the caption replaced by the empty caption with probability ``cond_drop_prob``
(Ho & Salimans 2022, Alg. 1).

Sampling (``make_sampler``): DDPM (Ho et al. 2020, Alg. 2) or DDIM (Song et al. 2021, Eq. 12) in
latent space, one ``lax.scan``, with classifier-free guidance (Ho & Salimans 2022, Eq. 6)

    eps~ = (1 + w) eps(z_t, c) - w eps(z_t, c_neg),

``c`` = ``cond['caption_tokens']``, ``c_neg`` = the empty caption or the *negative prompt*
``cond['negative_caption_tokens']`` (the guided denoiser of :func:`gen_jax.diffusion.model.make_guided`,
shared with the pixel DDPM; ``w`` = ``guidance_scale``, so ``w = 0`` is the conditional model and
``1 + w`` the "guidance scale" of other write-ups), and the predicted ``z0_hat`` optionally
thresholded (``threshold``: ``'static'`` clip or Imagen's ``'dynamic'``, Saharia et al. 2022,
Sec. 2.3, :mod:`gen_jax.diffusion.thresholding`) to ``[-c, c]``, ``c`` = ``threshold_bound`` or, when
0, the largest ``|z_0|`` of the standardized training latents (the latent data range, the
analogue of ``[-1, 1]`` for pixels). Then ``z = s z_0 + m`` and the stage-one decoder.
Prompts from text: :func:`prompt_condition` (strict tokenization: words the closed vocabulary
cannot encode are an error naming them).

Keys: ``loss`` splits its key into ``(k_drop, k_loss)`` (the caption dropout; the ``(t, eps)`` of
:func:`gen_jax.diffusion.gaussian_diffusion.simple_loss`, and ``fold_in(k_loss, 1)`` the U-Net's
dropout); ``sample`` passes its key to the latent sampler (the decoder is deterministic).

References:
  * Rombach, Blattmann, Lorenz, Esser & Ommer 2022, "High-Resolution Image Synthesis with Latent
    Diffusion Models", Sec. 3.1 (VQ-regularized autoencoders), Sec. 3.3 (cross-attention, Eq. 3).
  * Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Alg. 1, Eq. 6.
  * Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep Language
    Understanding" (Imagen), Sec. 2.1-2.3.
  * Radford et al. 2021 (CLIP), Sec. 2.4.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import ConfigError, typed
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import thresholding
from gen_jax.diffusion.latent import LatentDiffusionParts, latent_channel_stats
from gen_jax.diffusion.model import DenoiserCondition, ProcessConfig, make_guided, process_sampler, process_schedule
from gen_jax.model import Codec, DataSpec, Denoiser, GenerativeModel, Phase, Sampler, Stage, Training, check_image_batch
from gen_jax.multimodal.clip import text_token_states
from gen_jax.nn.precision import compute_dtype, to_float32
from gen_jax.nn.unet import UNet, UNetConfig

STAGE1 = "config.stages.stage1"
TEXT = "config.stages.text"


@dataclasses.dataclass(frozen=True)
class TextLatentDiffusionConfig(ProcessConfig):
    """``config.model`` of ``text_ldm`` (stages: ``config.stages.stage1``, ``config.stages.text``).

    Attributes (besides the process fields of :class:`gen_jax.diffusion.model.ProcessConfig`;
    ``conditioning`` is always ``'caption'``):
      name: model name.
      scale_latents: standardize the latents per channel (module docstring).
      pooled_text: add the pooled CLIP text embedding to the U-Net's time embedding.
      unet: :class:`gen_jax.nn.unet.UNetConfig` over the ``(h, w, D)`` latent grid
        (``context_dim``, ``emb_dim`` and ``out_channels`` are set by the factory from the text
        encoder and the latents; ``attn_resolutions`` are where it cross-attends).
      threshold: ``'none'``, ``'static'`` or ``'dynamic'`` thresholding of ``z0_hat`` in sampling.
      threshold_percentile: ``p`` of dynamic thresholding.
      threshold_bound: the range ``c`` of the standardized latents (0: the training latents' max).
    """

    name: str = "text_ldm"
    conditioning: Literal["caption"] = "caption"
    scale_latents: bool = True
    pooled_text: bool = True
    unet: UNetConfig = dataclasses.field(default_factory=lambda: UNetConfig(
        ch=64, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8, 4), dropout=0.0, num_groups=16, num_heads=4))
    threshold: Literal["none", "static", "dynamic"] = "none"
    threshold_percentile: float = 0.995
    threshold_bound: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        self.in_range("threshold_percentile", 0.0, 1.0, lo_open=True)
        self.nonnegative("threshold_bound")


# ----------------------------------------------------------------------------------------
# The frozen stages.
# ----------------------------------------------------------------------------------------


def latent_codec(stages: Optional[Mapping[str, Stage]], info: Any) -> tuple[Stage, Codec, tuple[int, int, int]]:
    """``(stage, codec, (h, w, D))``: stage one's continuous codec over a latent grid, checked.

    Raises:
      ConfigError naming ``config.stages.stage1`` (missing) or ``config.stages.stage1.config``
      (no continuous grid codec, a conditional stage one, another dataset).
    """
    if not stages or "stage1" not in stages:
        raise ConfigError(f"{STAGE1}: text-conditioned latent diffusion needs a trained autoencoder "
                          "(config.stages.stage1 = {'config': 'vqvae_shapes', 'workdir': 'runs/vqvae_shapes'})")
    stage = stages["stage1"]
    codec = getattr(stage.model, "codec", None)
    if codec is not None and codec.kind == "ids":
        codec = codec.continuous
    if codec is None or codec.kind != "continuous":
        raise ConfigError(f"{STAGE1}.config: stage one builds model {stage.model.name!r}, which has no continuous "
                          f"codec (a VQ tokenizer with codec.continuous, or a continuous autoencoder)")
    if getattr(stage.model, "conditioning", None) is not None:
        raise ConfigError(f"{STAGE1}.config: the autoencoder must be unconditional")
    name = getattr(info, "name", None)
    if name is not None and stage.config.dataset.name != name:
        raise ConfigError(f"{STAGE1}.config: stage one was trained on {stage.config.dataset.name!r}, this model "
                          f"on {name!r}")
    probe = jax.ShapeDtypeStruct((1,) + tuple(int(s) for s in info.image_shape), jnp.float32)
    shape = tuple(jax.eval_shape(lambda p, x: codec.encode(p, x), stage.params, probe).shape[1:])
    if len(shape) != 3:
        raise ConfigError(f"{STAGE1}.config: the U-Net denoiser needs a latent grid [B, h, w, D]; stage one's "
                          f"latents are [B, {', '.join(map(str, shape))}]")
    return stage, codec, shape


def text_encoder(stages: Optional[Mapping[str, Stage]], info: Any):
    """``(stage, states_fn, width, dim)`` of the frozen CLIP ``stages['text']`` (its text tower,
    :func:`gen_jax.multimodal.clip.text_token_states`).

    Raises:
      ConfigError naming ``config.stages.text`` (missing) or ``config.stages.text.config`` (not a
      CLIP model, another dataset, a text context or vocabulary too small for the captions).
    """
    if not stages or "text" not in stages:
        raise ConfigError(f"{TEXT}: text-conditioned latent diffusion needs a trained CLIP text encoder "
                          "(config.stages.text = {'config': 'clip_shapes', 'workdir': 'runs/clip_shapes'})")
    stage = stages["text"]
    if getattr(stage.model, "embedder", None) is None:
        raise ConfigError(f"{TEXT}.config: stage {stage.model.name!r} is not a contrastive text encoder (no embedder)")
    name = getattr(info, "name", None)
    if name is not None and stage.config.dataset.name != name:
        raise ConfigError(f"{TEXT}.config: the text encoder was trained on {stage.config.dataset.name!r}, this "
                          f"model on {name!r}")
    try:
        fn, width, dim = text_token_states(stage.config.model, info)
    except ConfigError as e:
        raise ConfigError(f"{TEXT}.config: {e}") from None
    return stage, fn, width, dim


# ----------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------


def build_text_latent_diffusion(cfg: Any, info: Any,
                                stages: Optional[Mapping[str, Stage]] = None) -> LatentDiffusionParts:
    """Builds text-conditioned latent diffusion (family ``'diffusion'``; module docstring).

    Computes the per-channel latent statistics on the host, once, here.

    Returns:
      :class:`gen_jax.diffusion.latent.LatentDiffusionParts` (``latent_dim = h w D``;
      ``encode_latents(params, image) -> [B, h, w, D]`` standardized, ``decode_latents(params, z)``)
      whose ``model`` has

      * ``training``: ``init(key, batch) -> {'denoiser': U-Net params}``; one phase
        ``Phase('denoiser', loss)`` with ``loss(params, batch, key) -> (mean L_LDM, {'mse': [B]})``
        on ``batch['image'] [B, H, W, C]`` and ``batch['caption_tokens'] int [B, L]``;
        ``frozen = {'stage1', 'text', 'latent_stats'}`` (``latent_stats``: ``mean [D]``, ``std [D]`` and
        the thresholding range ``bound`` ``c``, a scalar);
      * ``sampler.sample(params, key, num, cond) -> [num, H, W, C]`` in [0, 1], ``cond =
        {'caption_tokens': int [num, L]}`` (+ ``'negative_caption_tokens'``);
      * ``denoiser``: ``denoise(params, z_t [B, h, w, D], t [B], tokens [B, L])``, ``guided``,
        ``make_sampler(sampler, steps, eta, guidance_scale, threshold, return_latents, use_scan)``;
      * ``conditioning``: ``split_conditioning('caption_tokens')`` with the empty caption as null.

    Raises:
      ConfigError naming the field (:class:`TextLatentDiffusionConfig`, :func:`latent_codec`,
      :func:`text_encoder`).
    """
    cfg = typed(TextLatentDiffusionConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    vocab_size, caption_len = int(getattr(info, "vocab_size", 0) or 0), int(getattr(info, "caption_len", 0) or 0)
    if vocab_size < 2 or caption_len < 1:
        raise ConfigError("config.dataset: text-conditioned latent diffusion needs a dataset with captions "
                          f"(info.vocab_size={vocab_size}, info.caption_len={caption_len})")
    condition = DenoiserCondition("caption", caption_len=caption_len, vocab_size=vocab_size)
    stage, codec, grid = latent_codec(stages, info)
    text_stage, text_fn, text_width, text_dim = text_encoder(stages, info)
    loc, scale, zmax = latent_channel_stats(stage, codec.encode, int(info.num_levels))
    if not cfg.scale_latents:
        if cfg.threshold != "none" and not cfg.threshold_bound:
            raise ConfigError("config.model.threshold_bound: thresholding unstandardized latents "
                              "(scale_latents=False) needs their range set explicitly")
        loc, scale = np.zeros_like(loc), np.ones_like(scale)
    bound = float(cfg.threshold_bound or zmax)
    stats = {"mean": loc.astype(np.float32), "std": scale.astype(np.float32), "bound": np.float32(bound)}
    ucfg = dataclasses.replace(cfg.unet, context_dim=text_width, emb_dim=text_dim if cfg.pooled_text else 0,
                               out_channels=grid[-1], num_classes=0)
    try:
        ucfg.check_image_shape(grid)
    except ValueError as e:
        raise ConfigError(f"config.model.unet: over the {grid} latent grid: {e}") from None
    net = UNet(ucfg, dtype=compute_dtype(cfg.compute_dtype), remat=cfg.remat)
    schedule = process_schedule(cfg)

    def text_condition(params, tokens):
        """``(states [B, L, W], mask [B, L], pooled [B, E] or None)``, frozen; zeros for empty captions."""
        states, mask, pooled = text_fn(jax.lax.stop_gradient(params["text"]), tokens)
        pooled = pooled * jnp.any(mask, axis=1, keepdims=True).astype(pooled.dtype)
        return states, mask, (pooled if cfg.pooled_text else None)

    def denoise(params, z_t, t, tokens, *, train=False, key=None):
        """``eps_theta(z_t, t, tau(y)) [B, h, w, D]`` at standardized latents ``z_t``, tokens ``[B, L]``."""
        states, mask, pooled = text_condition(params, tokens)
        rngs = {"dropout": key} if train else None
        return to_float32(net.apply(params["denoiser"], z_t, t, context=states, context_mask=mask, emb=pooled,
                                    train=train, rngs=rngs))  # the loss reads float32

    def encode_latents(params, image, key=None):
        del key
        check_image_batch(image, image_shape, "image")
        st = jax.lax.stop_gradient(params["latent_stats"])
        return (codec.encode(jax.lax.stop_gradient(params["stage1"]), image) - st["mean"]) / st["std"]

    def decode_latents(params, z, key=None):
        if z.ndim != 4 or tuple(z.shape[1:]) != grid:
            raise ValueError(f"z must be [B, {', '.join(map(str, grid))}] (standardized latents), got shape {z.shape}")
        st = params["latent_stats"]
        return codec.decode(params["stage1"], z * st["std"] + st["mean"], None, key)

    def init(key, batch):
        x = batch["image"]
        check_image_batch(x, image_shape, "init batch['image']")
        b = x.shape[0]
        states = jnp.zeros((b, caption_len, text_width), jnp.float32)
        pooled = jnp.zeros((b, text_dim), jnp.float32) if cfg.pooled_text else None
        z = jnp.zeros((b,) + grid, jnp.float32)
        return {"denoiser": net.init({"params": key, "dropout": key}, z, jnp.zeros((b,), jnp.int32), context=states,
                                     context_mask=jnp.ones((b, caption_len), bool), emb=pooled, train=False)}

    def loss(params, batch, key):
        x = batch["image"]
        check_image_batch(x, image_shape, "loss batch['image']")
        k_drop, k_loss = jax.random.split(key)
        z0 = encode_latents(params, x)
        tokens = condition.drop(k_drop, condition.of(batch, x.shape[0], "loss batch"), cfg.cond_drop_prob)
        k_net = jax.random.fold_in(k_loss, 1)
        model_fn = lambda z_t, t, tok: denoise(params, z_t, t, tok, train=True, key=k_net)
        terms = gd.simple_loss(model_fn, schedule, z0, k_loss, tokens, cfg.parameterization)
        return jnp.mean(terms["loss"]), {"mse": terms["mse"]}

    guided = make_guided(denoise, condition)

    def make_sampler(sampler: str = cfg.sampler, steps: int = cfg.sample_steps, eta: float = cfg.eta,
                     guidance_scale: float = cfg.guidance_scale, threshold: str = cfg.threshold,
                     return_latents: bool = False, use_scan: bool = True, percentile: float = cfg.threshold_percentile):
        """``sample(params, key, num, cond) -> [num, H, W, C]`` in [0, 1] (or the standardized latents
        ``[num, h, w, D]`` with ``return_latents``); ``steps=0`` means ``T``; ``threshold`` of ``z0_hat``
        (module docstring) with the latent range ``c`` of this model."""
        thr = thresholding.make_threshold(threshold, percentile, bound)

        def model_fn(z_t, t, ctx):
            params, cond = ctx
            return guided(params, cond, guidance_scale, z_t.shape[0])(z_t, t, None)

        run = process_sampler(model_fn, schedule, sampler, steps, eta, parameterization=cfg.parameterization,
                              var_type="fixed_small", clip_x0=thr if thr is not None else False, use_scan=use_scan)

        def sample_fn(params, key, num, cond=None):
            guided(params, cond, guidance_scale, num)  # checks cond against num
            z = run(key, (num,) + grid, cond, params=params)
            return z if return_latents else decode_latents(params, z)

        return sample_fn

    training = Training(init=init, phases=(Phase("denoiser", loss, name="denoiser"),),
                        frozen={"stage1": stage.params, "text": text_stage.params, "latent_stats": stats})
    model = GenerativeModel(
        name=cfg.name, family="diffusion", training=training, sampler=Sampler(make_sampler(), "image"),
        conditioning=condition.capability(cfg.cond_drop_prob > 0),
        denoiser=Denoiser(denoise, schedule, guided=guided, make_sampler=make_sampler,
                          parameterization=cfg.parameterization),
        data=DataSpec(image_shape, int(info.num_levels), 0, (("caption_tokens", vocab_size),)))
    return LatentDiffusionParts(model, stage, int(np.prod(grid)), encode_latents, decode_latents)


def make_text_latent_diffusion(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """The registry's factory (``text_ldm``): :func:`build_text_latent_diffusion` ``(cfg, info, stages).model``."""
    return build_text_latent_diffusion(cfg, info, stages).model


def prompt_condition(prompts, caption_len: int, negative=None, dataset: str = "shapes") -> dict:
    """``cond`` for ``sample`` from text: ``{'caption_tokens': int32 [N, L]}`` and, with ``negative``
    (one string for all, or one per prompt), ``'negative_caption_tokens'``. Strict tokenization
    (:func:`gen_jax.data.tokenizers.encode_prompts`): words the dataset's closed vocabulary cannot
    encode raise :class:`gen_jax.data.tokenizers.UnknownWordsError` naming them."""
    from gen_jax.data.datasets import get_tokenizer
    from gen_jax.data.tokenizers import encode_prompts

    tok = get_tokenizer(dataset)
    cond = {"caption_tokens": encode_prompts(tok, prompts, caption_len)}
    if negative is not None:
        n = len(cond["caption_tokens"])
        neg = [negative] * n if isinstance(negative, str) else list(negative)
        if len(neg) != n:
            raise ValueError(f"prompt_condition: {len(neg)} negative prompts for {n} prompts (give one, or one each)")
        cond["negative_caption_tokens"] = encode_prompts(tok, neg, caption_len)
    return cond
