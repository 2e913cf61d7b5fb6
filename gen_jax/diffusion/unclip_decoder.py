"""The unCLIP decoder: a pixel-space diffusion model of the image conditioned on its CLIP image
embedding (Ramesh et al. 2022, Sec. 2.2), with classifier-free guidance.

Process: DDPM on ``x_0 = 2 image - 1`` (Ho et al. 2020, Eq. 4), ``L_simple`` (Eq. 14) in the
``eps`` (or ``x0`` / ``v``) parameterization, sampled by DDIM (Song et al. 2021, Eq. 12) with
``x_0`` clipped to ``[-1, 1]``; samples are quantized to the data's ``K`` levels.

Conditioning (Sec. 2.2): the l2-normalized CLIP image embedding ``z [B, D]`` is projected and
added to the timestep embedding and projected into ``context_tokens`` extra tokens the net's
attention reads (:mod:`gen_jax.diffusion.unclip_networks`); optionally (``caption=True``) the
caption tokens too ("we retained the text conditioning pathway ... but find that it offers
little help"). Classifier-free guidance training: ``z`` is set to zero with probability
``emb_drop_prob`` (their 10%) and the caption to the empty one with probability
``caption_drop_prob`` (their 50%), independently (Ho & Salimans 2022, Alg. 1). Sampling with
guidance ``w`` uses ``out(x, c) + w (out(x, c) - out(x, null))`` with both conditions null in
the second branch (Ho & Salimans 2022, Eq. 6; ``w = 0`` is the conditional model).

**Network choice.** The paper's decoder is the GLIDE U-Net. On this 2-core CPU a conv U-Net
step at 32x32 costs about 3x a DiT step of the same parameter count (measured: batch 32,
a ch-32 two-halving U-Net with attention at 8x8, 1.2M params, 1.28 s; the DiT below, 1.3M
params, 0.45 s), so the shapes config uses ``network='dit'``: the diffusion transformer of
Peebles & Xie 2023 on 4x4 patches (64 tokens), the embedding added to its adaLN conditioning
vector and its context tokens appended to the patch tokens (in-context conditioning), which
trains to legible shapes within the time budget. ``network='unet'`` is the paper's
arrangement (``emb`` + cross-attended context) on :class:`gen_jax.nn.unet.UNet`.

DDIM inversion (:attr:`EmbeddingDecoder.invert`, Song et al. 2021, Sec. 4.3 / Eq. 13 run
forward): the deterministic map from an image to the decoder latent ``x_T`` whose DDIM
(``eta = 0``) decoding reproduces it; Ramesh et al. (Sec. 3.1, 3.3) fix it when they vary the
embedding (text diffs).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gen_jax.config import Checked, ConfigError
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import samplers
from gen_jax.diffusion.embedding_prior import check_caption_tokens, check_embeddings
from gen_jax.diffusion.schedules import Schedule, make_schedule
from gen_jax.diffusion.unclip_networks import EmbeddingDiT, EmbeddingUNet, decoder_unet_config
from gen_jax.model import check_image_batch
from gen_jax.nn import conditioning as nn_cond
from gen_jax.nn.dit import DiTConfig
from gen_jax.nn.unet import UNetConfig


@dataclasses.dataclass(frozen=True)
class DecoderConfig(Checked):
    """``config.model.decoder`` (module docstring).

    Attributes:
      embed_dim: ``D`` the decoder is built for; 0 = the CLIP stage's (a nonzero value must
        equal it).
      network: ``'dit'`` or ``'unet'``; dit / unet: their configs (classes and output channels
        are set here).
      context_tokens: extra tokens projected from the embedding (4 in the paper).
      caption: also condition on the caption tokens.
      emb_drop_prob, caption_drop_prob: classifier-free guidance dropout (0.1 / 0.5).
      timesteps, beta_schedule, parameterization: the process.
      sample_steps, eta: DDIM; clip_x0: clip the predicted ``x_0`` when sampling.
      guidance_scale: ``w`` of the default sampler (0 = conditional).
    """

    PATH = "config.model.decoder"

    embed_dim: int = 0
    network: Literal["dit", "unet"] = "dit"
    dit: DiTConfig = dataclasses.field(default_factory=lambda: DiTConfig(patch_size=4, width=128, depth=4,
                                                                         num_heads=4, time_dim=128))
    unet: UNetConfig = dataclasses.field(default_factory=lambda: UNetConfig(ch=32, ch_mult=(1, 2, 2),
                                                                            num_res_blocks=1,
                                                                            attn_resolutions=(8,),
                                                                            num_groups=8, dropout=0.0))
    context_tokens: int = 4
    caption: bool = False
    emb_drop_prob: float = 0.1
    caption_drop_prob: float = 0.5
    timesteps: int = 1000
    beta_schedule: Literal["cosine", "linear"] = "cosine"
    parameterization: Literal["eps", "x0", "v"] = "eps"
    sample_steps: int = 50
    eta: float = 0.0
    clip_x0: bool = True
    guidance_scale: float = 2.0

    def __post_init__(self):
        self.nonnegative("embed_dim", "context_tokens", "eta", "guidance_scale")
        self.positive("timesteps", "sample_steps")
        self.require(self.sample_steps <= self.timesteps, "sample_steps",
                     f"S={self.sample_steps} must be <= timesteps T={self.timesteps}")
        self.in_range("emb_drop_prob", 0.0, 1.0, hi_open=True)
        self.in_range("caption_drop_prob", 0.0, 1.0)
        self.require(self.guidance_scale == 0 or self.emb_drop_prob > 0, "guidance_scale",
                     "classifier-free guidance needs a decoder trained with emb_drop_prob > 0")


class EmbeddingDecoder(NamedTuple):
    """The decoder's pure functions (all take the decoder's own params, ``params['decoder']``).

    Attributes:
      embed_dim: ``D``; image_shape: ``(H, W, C)``; caption_len: ``L`` (0 without the caption
        pathway); schedule: the forward process.
      init: ``(key) -> params``.
      denoise: ``(params, x_t [B, H, W, C], t [B], z [B, D], tokens [B, L] | None) -> [B, H, W, C]``.
      loss: ``(params, image [B, H, W, C] in [0, 1], z [B, D], tokens | None, key) -> {'loss',
        'mse'}`` each ``[B]``.
      sample: ``(params, key, z [B, D], tokens=None, guidance_scale=cfg, steps=cfg, x_T=None)
        -> images [B, H, W, C]`` in [0, 1] on the levels.
      invert: ``(params, image, z, tokens=None, steps=cfg) -> x_T [B, H, W, C]`` (DDIM inversion).
    """

    embed_dim: int
    image_shape: tuple
    caption_len: int
    schedule: Schedule
    init: Callable
    denoise: Callable
    loss: Callable
    sample: Callable
    invert: Callable


def _network(cfg: DecoderConfig, d: int, image_shape: tuple, vocab: int, length: int):
    if cfg.network == "dit":
        dcfg = dataclasses.replace(cfg.dit, num_classes=0, out_channels=0)
        try:
            dcfg.check_image_shape(image_shape)
        except ValueError as e:
            raise ConfigError(f"config.model.decoder.dit: {e}") from None
        return EmbeddingDiT(dcfg, d, cfg.context_tokens, vocab, length)
    ucfg = decoder_unet_config(cfg.unet, d, cfg.context_tokens, cfg.caption)
    try:
        ucfg.check_image_shape(image_shape)
    except ValueError as e:
        raise ConfigError(f"config.model.decoder.unet: {e}") from None
    return EmbeddingUNet(ucfg, d, cfg.context_tokens, vocab, length)


def build_decoder(cfg: DecoderConfig, embed_dim: int, image_shape, num_levels: int, vocab_size: int = 0,
                  caption_len: int = 0) -> EmbeddingDecoder:
    """The decoder of ``cfg`` for images of ``image_shape`` with ``num_levels`` levels,
    conditioned on CLIP embeddings of width ``embed_dim`` (and, with ``cfg.caption``, on
    captions of ``caption_len`` ids below ``vocab_size``)."""
    d = int(embed_dim)
    shape = tuple(int(s) for s in image_shape)
    length = int(caption_len) if cfg.caption else 0
    if cfg.caption and (length < 1 or vocab_size < 2):
        raise ConfigError("config.model.decoder.caption: the caption pathway needs a dataset with captions "
                          f"(vocab_size={vocab_size}, caption_len={caption_len})")
    net = _network(cfg, d, shape, int(vocab_size) if cfg.caption else 0, length)
    kw = {} if cfg.beta_schedule == "cosine" else {"beta_start": 1e-4, "beta_end": 0.02}
    schedule = make_schedule(cfg.beta_schedule, cfg.timesteps, **kw)
    levels = int(num_levels)

    def tokens_of(tokens, b, where):
        if not length:
            return None
        if tokens is None:
            return nn_cond.null_caption(b, length)
        check_caption_tokens(tokens, b, length, where)
        return jnp.asarray(tokens, jnp.int32)

    def null(b):
        return jnp.zeros((b, d), jnp.float32), (nn_cond.null_caption(b, length) if length else None)

    def init(key):
        z, tok = null(1)
        return net.init({"params": key, "dropout": key}, jnp.zeros((1,) + shape), jnp.zeros((1,), jnp.int32), z,
                        tok)

    def denoise(params, x_t, t, z, tokens=None, *, train=False, key=None):
        rngs = {"dropout": key} if train and key is not None else None
        return net.apply(params, x_t, t, z, tokens, train=train, rngs=rngs)

    def loss(params, image, z, tokens, key):
        check_image_batch(image, shape, "decoder loss: image")
        b = image.shape[0]
        check_embeddings(z, b, d, "decoder loss: z")
        tok = tokens_of(tokens, b, "decoder loss: tokens")
        k_e, k_c, k_loss, k_net = jax.random.split(key, 4)
        z = jnp.where(nn_cond.drop_mask(k_e, cfg.emb_drop_prob, b)[:, None], 0.0, z)
        if tok is not None:
            tok = nn_cond.drop_captions(k_c, tok, cfg.caption_drop_prob)
        model_fn = lambda x, t, c: denoise(params, x, t, *c, train=True, key=k_net)
        terms = gd.simple_loss(model_fn, schedule, 2.0 * image - 1.0, k_loss, (z, tok), cfg.parameterization)
        return {"loss": terms["loss"], "mse": terms["mse"]}

    def guided_fn(w):
        def model_fn(x, t, ctx):
            params, (z, tok) = ctx
            apply = lambda xx, tt, c: denoise(params, xx, tt, *c)
            if not w:
                return apply(x, t, (z, tok))
            return nn_cond.guided_call(apply, x, t, (z, tok), null(x.shape[0]), w)
        return model_fn

    def sample(params, key, z, tokens=None, guidance_scale: float = cfg.guidance_scale,
               steps: int = cfg.sample_steps, x_T: Optional[jax.Array] = None):
        check_embeddings(z, None, d, "decoder sample: z")
        b = z.shape[0]
        tok = tokens_of(tokens, b, "decoder sample: tokens")
        w = samplers.check_nonneg(guidance_scale, "decoder guidance_scale")
        run = samplers.make_ddim_sampler(guided_fn(w), schedule, int(steps), cfg.eta,
                                         parameterization=cfg.parameterization, clip_x0=cfg.clip_x0)
        x = run(key, (b,) + shape, (z, tok), x_T=x_T, params=params)
        img = (jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0
        return jnp.round(img * (levels - 1)) / (levels - 1)

    def invert(params, image, z, tokens=None, steps: int = cfg.sample_steps):
        """DDIM inversion: ``x_{tau_i} = sqrt(abar_i) x0_hat + sqrt(1 - abar_i) eps_hat`` with
        ``eps_hat`` the conditional prediction at the previous point ``x_{tau_{i-1}}``
        (``x_{tau_{-1}} = x_0``), ascending over the sampler's steps."""
        check_image_batch(image, shape, "decoder invert: image")
        b = image.shape[0]
        check_embeddings(z, b, d, "decoder invert: z")
        tok = tokens_of(tokens, b, "decoder invert: tokens")
        seq = jnp.asarray(samplers.ddim_timesteps(cfg.timesteps, int(steps)))
        ab = schedule.alpha_bars[seq]
        t_eval = jnp.concatenate([seq[:1], seq[:-1]])

        def body(x, i):
            t = jnp.full((b,), t_eval[i], jnp.int32)
            out = denoise(params, x, t, z, tok)
            x0, eps = gd.to_x0_eps(schedule, x, t, out, cfg.parameterization)
            x0 = jnp.where(i == 0, x, x0)  # at x_0 itself the data is known exactly
            return jnp.sqrt(ab[i]) * x0 + jnp.sqrt(1.0 - ab[i]) * eps, None

        x, _ = jax.lax.scan(body, 2.0 * image - 1.0, jnp.arange(seq.shape[0]))
        return x

    return EmbeddingDecoder(d, shape, length, schedule, init, denoise, loss, sample, invert)


def decoder_width(params) -> int:
    """The embedding width ``D`` a decoder's params were built for (the projection of the
    embedding into the timestep embedding)."""
    p = params["params"]
    if "emb_proj" in p:
        return int(p["emb_proj"]["kernel"].shape[0])
    return int(p["unet"]["emb_proj"]["kernel"].shape[0])
