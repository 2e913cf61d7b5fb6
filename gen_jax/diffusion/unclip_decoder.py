"""The unCLIP decoder: a diffusion model of the image conditioned on its CLIP image embedding
(Ramesh et al. 2022, Sec. 2.2), with classifier-free guidance, in pixel space or in the latent
space of a frozen VQ tokenizer.

Process: DDPM (Ho et al. 2020, Eq. 4) on ``x_0`` of a :class:`DiffusionSpace` -- the pixels
``2 image - 1`` (:func:`pixel_space`) or the standardized pre-quantization latents of a VQ-VAE
(:func:`vq_latent_space`) -- with ``L_simple`` (Eq. 14) in the ``eps`` (or ``x0`` / ``v``)
parameterization, sampled by DDIM (Song et al. 2021, Eq. 12; ``x_0`` clipped to ``[-1, 1]``
in pixel space), decoded to the image and quantized to the data's ``K`` levels.

Conditioning (Sec. 2.2): the l2-normalized CLIP image embedding ``z [B, D]`` is projected and
added to the timestep embedding and projected into ``context_tokens`` extra tokens the net's
attention reads (:mod:`gen_jax.diffusion.unclip_networks`); optionally (``caption=True``) the
caption tokens too ("we retained the text conditioning pathway ... but find that it offers
little help"). Classifier-free guidance training: ``z`` is set to zero with probability
``emb_drop_prob`` (their 10%) and the caption to the empty one with probability
``caption_drop_prob`` (their 50%), independently (Ho & Salimans 2022, Alg. 1). Sampling with
guidance ``w`` uses ``out(x, c) + w (out(x, c) - out(x, null))`` with both conditions null in
the second branch (Ho & Salimans 2022, Eq. 6; ``w = 0`` is the conditional model).

**Network and space choice.** The paper's decoder is the GLIDE U-Net in pixel space. On this
2-core CPU a conv U-Net step at 32x32 costs about 3x a DiT step of the same parameter count
(measured: batch 32, a ch-32 two-halving U-Net with attention at 8x8, 1.2M params, 1.28 s; a
DiT on 4x4 patches, 1.3M params, 0.45 s), so the nets here are DiTs (Peebles & Xie 2023), the
embedding added to the adaLN conditioning vector and its context tokens appended to the patch
tokens (in-context conditioning). A pixel DiT on 4x4 patches trained for 2400 steps (21 min)
on shapes still drew blotchy patch-tiled shapes (the feature network read the requested shape
in 31% of test samples, colour in 96%); the shapes config therefore diffuses in the 8x8x64
latent space of the frozen vqvae_shapes tokenizer (``space='latent'``, a DiT with 1x1 patches:
the same 64 tokens and cost), whose nearest-code decoder turns any nearby latent into a crisp
shape. ``network='unet'`` is the paper's arrangement (``emb`` + cross-attended context) on
:class:`gen_jax.nn.unet.UNet`.

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
import numpy as np

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
      space: ``'pixel'`` (the image) or ``'latent'`` (the VQ tokenizer ``config.stages.stage1``'s
        pre-quantization latents, :func:`vq_latent_space`).
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
    space: Literal["pixel", "latent"] = "pixel"
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


class DiffusionSpace(NamedTuple):
    """Where the decoder's diffusion runs: ``shape`` ``(h, w, c)`` of one element;
    ``encode(space_params, image [B, H, W, C] in [0, 1]) -> x_0 [B, h, w, c]`` and
    ``decode(space_params, x_0) -> image in [0, 1]``; ``clip``: whether ``x_0`` lives in
    ``[-1, 1]`` (pixels), so that samplers may clip it."""

    shape: tuple
    encode: Callable
    decode: Callable
    clip: bool


def pixel_space(image_shape) -> DiffusionSpace:
    """Pixels: ``x_0 = 2 image - 1`` (Ho et al. 2020, Sec. 3.3)."""
    return DiffusionSpace(tuple(int(s) for s in image_shape), lambda sp, x: 2.0 * x - 1.0,
                          lambda sp, z: (jnp.clip(z, -1.0, 1.0) + 1.0) / 2.0, True)


def vq_latent_space(stage, train_images: np.ndarray, batch: int = 256) -> tuple[DiffusionSpace, dict]:
    """The pre-quantization latents ``z_e [B, h, w, c]`` of a frozen VQ tokenizer
    (``stage.model.codec.continuous``: van den Oord et al. 2017's encoder output and nearest-code
    decoder), standardized per channel by their mean and standard deviation over
    ``train_images`` (uint8 ``[N, H, W, C]``; computed here, on the host). Decoding snaps each
    position to its nearest code (Eq. 1 of van den Oord et al.) before the stage's decoder, so
    sampled latents decode to the tokenizer's crisp images (latent diffusion, Rombach et al.
    2022, Sec. 3, with a VQ-regularized first stage).

    Returns ``(space, stats)``: ``space`` reads ``space_params = {'stage1': params,
    'latent_stats': stats}``; ``stats = {'mean': [c], 'std': [c]}`` float32.
    """
    cont = getattr(getattr(stage.model, "codec", None), "continuous", None)
    if cont is None:
        raise ConfigError(f"config.stages.stage1.config: stage one {stage.model.name!r} has no continuous view "
                          f"of a VQ latent space (codec.continuous); the latent decoder needs a VQ tokenizer")
    enc = jax.jit(cont.encode)
    zs = [np.asarray(enc(stage.params, jnp.asarray(train_images[i:i + batch], jnp.float32) / 255.0), np.float64)
          for i in range(0, len(train_images), batch)]
    z = np.concatenate(zs, 0)
    axes = tuple(range(z.ndim - 1))
    stats = {"mean": z.mean(axes).astype(np.float32), "std": np.maximum(z.std(axes), 1e-5).astype(np.float32)}

    def encode(sp, x):
        st = jax.lax.stop_gradient(sp["latent_stats"])
        return (cont.encode(jax.lax.stop_gradient(sp["stage1"]), x) - st["mean"]) / st["std"]

    def decode(sp, z):
        st = sp["latent_stats"]
        return cont.decode(sp["stage1"], z * st["std"] + st["mean"])

    return DiffusionSpace(tuple(int(s) for s in z.shape[1:]), encode, decode, False), stats


class EmbeddingDecoder(NamedTuple):
    """The decoder's pure functions. ``params`` is the decoder's own (``params['decoder']``);
    ``space_params`` what its :class:`DiffusionSpace` reads (``None`` for pixels).

    Attributes:
      embed_dim: ``D``; image_shape: ``(H, W, C)``; space: the :class:`DiffusionSpace`;
        caption_len: ``L`` (0 without the caption pathway); schedule: the forward process.
      init: ``(key) -> params``.
      denoise: ``(params, x_t [B, h, w, c], t [B], z [B, D], tokens [B, L] | None) -> [B, h, w, c]``.
      loss: ``(params, image [B, H, W, C] in [0, 1], z [B, D], tokens | None, key, space_params=None)
        -> {'loss', 'mse'}`` each ``[B]``.
      sample: ``(params, key, z [B, D], tokens=None, guidance_scale=cfg, steps=cfg, x_T=None,
        space_params=None) -> images [B, H, W, C]`` in [0, 1] on the levels.
      invert: ``(params, image, z, tokens=None, steps=cfg, space_params=None) -> x_T [B, h, w, c]``
        (DDIM inversion).
    """

    embed_dim: int
    image_shape: tuple
    space: DiffusionSpace
    caption_len: int
    schedule: Schedule
    init: Callable
    denoise: Callable
    loss: Callable
    sample: Callable
    invert: Callable


def _network(cfg: DecoderConfig, d: int, shape: tuple, vocab: int, length: int):
    """The denoiser over elements of ``shape`` (``(h, w, c)`` of the diffusion space)."""
    if cfg.network == "dit":
        dcfg = dataclasses.replace(cfg.dit, num_classes=0, out_channels=0)
        try:
            dcfg.check_image_shape(shape)
        except ValueError as e:
            raise ConfigError(f"config.model.decoder.dit: {e}") from None
        return EmbeddingDiT(dcfg, d, cfg.context_tokens, vocab, length)
    ucfg = decoder_unet_config(cfg.unet, d, cfg.context_tokens, cfg.caption)
    try:
        ucfg.check_image_shape(shape)
    except ValueError as e:
        raise ConfigError(f"config.model.decoder.unet: {e}") from None
    return EmbeddingUNet(ucfg, d, cfg.context_tokens, vocab, length)


def build_decoder(cfg: DecoderConfig, embed_dim: int, image_shape, num_levels: int, vocab_size: int = 0,
                  caption_len: int = 0, space: Optional[DiffusionSpace] = None) -> EmbeddingDecoder:
    """The decoder of ``cfg`` for images of ``image_shape`` with ``num_levels`` levels,
    conditioned on CLIP embeddings of width ``embed_dim`` (and, with ``cfg.caption``, on
    captions of ``caption_len`` ids below ``vocab_size``), diffusing in ``space`` (default
    :func:`pixel_space`)."""
    d = int(embed_dim)
    img_shape = tuple(int(s) for s in image_shape)
    space = space or pixel_space(img_shape)
    shape = space.shape
    length = int(caption_len) if cfg.caption else 0
    if cfg.caption and (length < 1 or vocab_size < 2):
        raise ConfigError("config.model.decoder.caption: the caption pathway needs a dataset with captions "
                          f"(vocab_size={vocab_size}, caption_len={caption_len})")
    net = _network(cfg, d, shape, int(vocab_size) if cfg.caption else 0, length)
    kw = {} if cfg.beta_schedule == "cosine" else {"beta_start": 1e-4, "beta_end": 0.02}
    schedule = make_schedule(cfg.beta_schedule, cfg.timesteps, **kw)
    levels = int(num_levels)
    clip_x0 = bool(cfg.clip_x0 and space.clip)

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

    def loss(params, image, z, tokens, key, space_params=None):
        check_image_batch(image, img_shape, "decoder loss: image")
        b = image.shape[0]
        check_embeddings(z, b, d, "decoder loss: z")
        tok = tokens_of(tokens, b, "decoder loss: tokens")
        k_e, k_c, k_loss, k_net = jax.random.split(key, 4)
        z = jnp.where(nn_cond.drop_mask(k_e, cfg.emb_drop_prob, b)[:, None], 0.0, z)
        if tok is not None:
            tok = nn_cond.drop_captions(k_c, tok, cfg.caption_drop_prob)
        model_fn = lambda x, t, c: denoise(params, x, t, *c, train=True, key=k_net)
        x0 = space.encode(space_params, image)
        terms = gd.simple_loss(model_fn, schedule, x0, k_loss, (z, tok), cfg.parameterization)
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
               steps: int = cfg.sample_steps, x_T: Optional[jax.Array] = None, space_params=None):
        check_embeddings(z, None, d, "decoder sample: z")
        b = z.shape[0]
        tok = tokens_of(tokens, b, "decoder sample: tokens")
        w = samplers.check_nonneg(guidance_scale, "decoder guidance_scale")
        run = samplers.make_ddim_sampler(guided_fn(w), schedule, int(steps), cfg.eta,
                                         parameterization=cfg.parameterization, clip_x0=clip_x0)
        x = run(key, (b,) + shape, (z, tok), x_T=x_T, params=params)
        img = jnp.clip(space.decode(space_params, x), 0.0, 1.0)
        return jnp.round(img * (levels - 1)) / (levels - 1)

    def invert(params, image, z, tokens=None, steps: int = cfg.sample_steps, space_params=None):
        """DDIM inversion: ``x_{tau_i} = sqrt(abar_i) x0_hat + sqrt(1 - abar_i) eps_hat`` with
        ``eps_hat`` the conditional prediction at the previous point ``x_{tau_{i-1}}``
        (``x_{tau_{-1}} = x_0``), ascending over the sampler's steps."""
        check_image_batch(image, img_shape, "decoder invert: image")
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

        x, _ = jax.lax.scan(body, space.encode(space_params, image), jnp.arange(seq.shape[0]))
        return x

    return EmbeddingDecoder(d, img_shape, space, length, schedule, init, denoise, loss, sample, invert)


def decoder_width(params) -> int:
    """The embedding width ``D`` a decoder's params were built for (the projection of the
    embedding into the timestep embedding)."""
    p = params["params"]
    if "emb_proj" in p:
        return int(p["emb_proj"]["kernel"].shape[0])
    return int(p["unet"]["emb_proj"]["kernel"].shape[0])
