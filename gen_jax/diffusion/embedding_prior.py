"""The unCLIP diffusion prior: a Gaussian diffusion over CLIP image embeddings conditioned on
the caption (Ramesh et al. 2022, "Hierarchical Text-Conditional Image Generation with CLIP
Latents", Sec. 2.1 and App. C).

The prior models ``p(z_i | y)``, ``z_i`` the (l2-normalized) CLIP image embedding of width
``D`` and ``y`` the caption, given to the network as its tokens and as its CLIP text
embedding ``z_t``. The diffusion runs on ``x_0 = sqrt(D) z_i`` (each coordinate of unit scale,
matching the unit-variance noise of the forward process; Ramesh et al. likewise rescale the
embeddings before diffusion) with the forward process of DDPM,
``x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps`` (Ho et al. 2020, Eq. 4; cosine schedule,
Nichol & Dhariwal 2021, Eq. 17). The network (:class:`gen_jax.diffusion.unclip_networks.PriorTransformer`)
predicts the unnoised ``x_0`` directly, trained with the mean-squared error (Ramesh et al.,
Sec. 2.1: "we find it better to train our model to predict the unnoised z_i directly, and use
a mean-squared error loss on this prediction"):

    L_prior = E_{s, z_i, eps} || f_theta(x_s, s, z_t, y) - x_0 ||^2        (mean over the D dims)

Classifier-free guidance (Ho & Salimans 2022, Alg. 1; Ramesh et al., Sec. 2.1: "randomly
dropping this text conditioning information 10% of the time"): the conditioning -- caption
tokens and text embedding together -- is replaced with probability ``cond_drop_prob`` by the
null one (all-padding tokens, the zero embedding). Sampling guides the ``x_0`` prediction,
``x0_guided = x0(x, c) + w (x0(x, c) - x0(x, null))`` (Eq. 6 of Ho & Salimans in the library's
convention, :func:`gen_jax.nn.conditioning.guidance_combine`: ``w = 0`` is the conditional
model); for a fixed ``x_s`` the eps implied by ``x_0`` is affine in it, so this is the same as
guiding eps. Sampling is DDIM (Song et al. 2021, Eq. 12; Ramesh et al. sample the prior with 64
strided steps) through :mod:`gen_jax.diffusion.samplers`; the result is l2-normalized back to
the sphere, and with ``candidates = n > 1`` the draw of the ``n`` whose dot product with
``z_t`` is highest is kept (Ramesh et al., Sec. 2.1: "we sample two copies of z_i and choose
the one with a higher dot product with z_t").

Shapes: embeddings ``[B, D]`` (float), tokens int ``[B, L]``, times int ``[B]``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp

from gen_jax.config import Checked
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import Schedule, make_schedule
from gen_jax.diffusion.unclip_networks import PriorTransformer
from gen_jax.nn import conditioning as nn_cond


@dataclasses.dataclass(frozen=True)
class PriorConfig(Checked):
    """``config.model.prior`` (module docstring).

    Attributes:
      embed_dim: ``D`` the prior is built for; 0 = the CLIP stage's width (a nonzero value
        must equal it).
      width, depth, num_heads, mlp_ratio, time_dim: the causal transformer.
      timesteps, beta_schedule: the forward process (``'cosine'`` or ``'linear'``).
      sample_steps: DDIM steps ``S`` (64 in the paper); eta: DDIM's ``eta``.
      cond_drop_prob: probability of the null text conditioning at training (0.1).
      guidance_scale: ``w`` of the default sampler (0 = conditional).
      candidates: draws per caption, the one closest to the text embedding kept (2 in the paper).
    """

    PATH = "config.model.prior"

    embed_dim: int = 0
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    time_dim: int = 128
    timesteps: int = 1000
    beta_schedule: Literal["cosine", "linear"] = "cosine"
    sample_steps: int = 64
    eta: float = 0.0
    cond_drop_prob: float = 0.1
    guidance_scale: float = 0.0
    candidates: int = 2

    def __post_init__(self):
        self.nonnegative("embed_dim", "eta", "guidance_scale")
        self.positive("width", "depth", "num_heads", "mlp_ratio", "timesteps", "sample_steps", "candidates")
        self.require(self.width % self.num_heads == 0, "num_heads",
                     f"must divide width={self.width}, got {self.num_heads}")
        self.require(self.time_dim >= 4 and self.time_dim % 2 == 0, "time_dim",
                     f"must be even and >= 4, got {self.time_dim}")
        self.require(self.sample_steps <= self.timesteps, "sample_steps",
                     f"S={self.sample_steps} must be <= timesteps T={self.timesteps}")
        self.in_range("cond_drop_prob", 0.0, 1.0, hi_open=True)
        self.require(self.guidance_scale == 0 or self.cond_drop_prob > 0, "guidance_scale",
                     "classifier-free guidance needs a prior trained with cond_drop_prob > 0")


def check_embeddings(z, batch, width: int, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` unless ``z`` is float ``[batch, width]`` (any batch
    when ``batch`` is None)."""
    shape = tuple(getattr(z, "shape", ()))
    if len(shape) != 2 or shape[1] != width or (batch is not None and shape[0] != batch):
        raise ValueError(f"{where} must be [B, D] = [{'B' if batch is None else batch}, {width}] (CLIP embeddings "
                         f"of width {width}), got shape {shape}")
    if not jnp.issubdtype(jnp.asarray(z).dtype, jnp.floating):
        raise ValueError(f"{where} must be float, got {jnp.asarray(z).dtype}")


def check_caption_tokens(tokens, batch: int, length: int, where: str) -> None:
    """Raises ``ValueError`` naming ``where`` unless ``tokens`` is int ``[batch, length]``."""
    shape = tuple(getattr(tokens, "shape", ()))
    if len(shape) != 2 or shape != (batch, length):
        raise ValueError(f"{where} must be int [B, L] = [{batch}, {length}], got shape {shape}")
    if not jnp.issubdtype(jnp.asarray(tokens).dtype, jnp.integer):
        raise ValueError(f"{where} must hold integer token ids, got {jnp.asarray(tokens).dtype}")


def l2_normalize(z: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``z / ||z||`` along the last axis."""
    return z * jax.lax.rsqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True) + eps)


class EmbeddingPrior(NamedTuple):
    """The prior's pure functions (all take the prior's own params, ``params['prior']``).

    Attributes:
      embed_dim: ``D``; caption_len: ``L``; schedule: the forward process.
      init: ``(key) -> params``.
      predict: ``(params, x_s [B, D], s [B], z_txt [B, D], tokens [B, L]) -> x0_hat [B, D]``
        (scaled space ``sqrt(D) z``).
      guided: ``(params, z_txt, tokens, w) -> model_fn(x_s, s, _)``: conditional (``w = 0``) or
        classifier-free guided ``x_0`` prediction.
      loss: ``(params, z_img [B, D], z_txt [B, D], tokens [B, L], key) -> {'loss', 'mse',
        'dropped'}`` each ``[B]``.
      sample: ``(params, key, z_txt, tokens, guidance_scale=cfg, steps=cfg, candidates=cfg) ->
        z_img [B, D]`` unit norm.
    """

    embed_dim: int
    caption_len: int
    schedule: Schedule
    init: Callable
    predict: Callable
    guided: Callable
    loss: Callable
    sample: Callable


def build_prior(cfg: PriorConfig, embed_dim: int, vocab_size: int, caption_len: int) -> EmbeddingPrior:
    """The prior of ``cfg`` over CLIP embeddings of width ``embed_dim`` conditioned on captions
    of ``caption_len`` ids below ``vocab_size`` (module docstring)."""
    d, length = int(embed_dim), int(caption_len)
    net = PriorTransformer(d, int(vocab_size), length, cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_ratio,
                           cfg.time_dim)
    kw = {} if cfg.beta_schedule == "cosine" else {"beta_start": 1e-4, "beta_end": 0.02}
    schedule = make_schedule(cfg.beta_schedule, cfg.timesteps, **kw)
    scale = math.sqrt(d)

    def null(b):
        return jnp.zeros((b, d), jnp.float32), nn_cond.null_caption(b, length)

    def init(key):
        z, tok = null(1)
        return net.init(key, z, jnp.zeros((1,), jnp.int32), z, tok)

    def predict(params, x_s, s, z_txt, tokens):
        return net.apply(params, x_s, s, z_txt, tokens)

    def guided(params, z_txt, tokens, w: float):
        apply = lambda x, s, c: predict(params, x, s, *c)
        if not w:
            return lambda x, s, _: apply(x, s, (z_txt, tokens))
        neg = null(z_txt.shape[0])
        return lambda x, s, _: nn_cond.guided_call(apply, x, s, (z_txt, tokens), neg, w)

    def loss(params, z_img, z_txt, tokens, key):
        b = z_img.shape[0]
        check_embeddings(z_img, b, d, "prior loss: z_img")
        check_embeddings(z_txt, b, d, "prior loss: z_txt")
        check_caption_tokens(tokens, b, length, "prior loss: tokens")
        k_drop, k_loss = jax.random.split(key)
        drop = nn_cond.drop_mask(k_drop, cfg.cond_drop_prob, b)
        z0, tok0 = null(b)
        z_c = jnp.where(drop[:, None], z0, z_txt)
        tok_c = jnp.where(drop[:, None], tok0, tokens.astype(jnp.int32))
        model_fn = lambda x, s, c: predict(params, x, s, *c)
        terms = gd.simple_loss(model_fn, schedule, scale * z_img, k_loss, (z_c, tok_c), "x0")
        return {"loss": terms["loss"], "mse": terms["mse"], "dropped": drop.astype(jnp.float32)}

    def sample(params, key, z_txt, tokens, guidance_scale: float = cfg.guidance_scale,
               steps: int = cfg.sample_steps, candidates: int = cfg.candidates):
        b = z_txt.shape[0]
        check_embeddings(z_txt, b, d, "prior sample: z_txt")
        check_caption_tokens(tokens, b, length, "prior sample: tokens")
        w = samplers.check_nonneg(guidance_scale, "prior guidance_scale")
        n = int(candidates)
        if n < 1:
            raise ValueError(f"prior sample: candidates must be >= 1, got {candidates}")
        zt = jnp.repeat(z_txt, n, axis=0)
        tk = jnp.repeat(tokens.astype(jnp.int32), n, axis=0)

        def model_fn(x, s, ctx):
            p, (zc, tc) = ctx
            return guided(p, zc, tc, w)(x, s, None)

        run = samplers.make_ddim_sampler(model_fn, schedule, int(steps), cfg.eta, parameterization="x0")
        z = l2_normalize(run(key, (b * n, d), (zt, tk), params=params)).reshape(b, n, d)
        best = jnp.argmax(jnp.einsum("bnd,bd->bn", z, z_txt), axis=1)
        return jnp.take_along_axis(z, best[:, None, None], axis=1)[:, 0]

    return EmbeddingPrior(d, length, schedule, init, predict, guided, loss, sample)


def prior_width(params) -> int:
    """The embedding width ``D`` a prior's params were built for (its output layer)."""
    return int(params["params"]["out"]["kernel"].shape[-1])
