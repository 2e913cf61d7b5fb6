"""The DDPM / DDIM model: a U-Net (or DiT, or pixel MLP) denoiser + a discrete Gaussian diffusion.

``make_ddpm(cfg, info)`` returns a :class:`gen_jax.model.GenerativeModel` (family
``'diffusion'``) with these capabilities:

* ``training``: one loss, ``L_simple`` (Ho et al. 2020, Eq. 14) or the hybrid loss with
  learned variances (Nichol & Dhariwal 2021, Sec. 3.1) on ``x_0 = 2 image - 1``; for
  conditional models the condition is replaced by the null one with probability
  ``cond_drop_prob`` (classifier-free guidance training, Ho & Salimans 2022, Alg. 1).
* ``likelihood`` (kind ``'vlb'``): the full variational bound (Ho et al. 2020, Eq. 5:
  ``L_T + sum L_{t-1} + L_0`` with the discretized decoder over the ``K`` levels), as
  ``log P(levels) + D log K``, so ``bits_per_dim`` gives the bound in bits/dim.
* ``sampler`` (kind ``'image'``): ancestral DDPM (Ho Alg. 2) or DDIM with ``sample_steps``
  and ``eta`` (Song et al. 2021, Eq. 12), one ``lax.scan``; with ``guidance_scale = w > 0``
  the denoiser is the classifier-free combination (Ho & Salimans 2022, Eq. 6)

      eps_guided = (1 + w) eps(x_t, c) - w eps(x_t, c_neg),

  where ``c_neg`` is the null class, or the *negative* label ``cond['negative_label']`` when
  given (negative prompting). Samples are quantized to the ``K`` levels (the decoder's mode).
* ``denoiser``: ``denoise(params, x_t, t, cond)``, ``guided(params, cond, scale, num)``,
  ``make_sampler(sampler, steps, eta, guidance_scale, ...)``, ``vlb_terms``,
  ``ode_log_prob`` and the schedule.
* ``conditioning`` (``'label'`` / ``'caption'`` models): labels cycling ``0..C-1``, or the
  captions of a split; the null condition when trained with condition dropout.

The diffusion-process config fields, the conditioning of a denoiser (:class:`DenoiserCondition`)
and the guided denoiser (:func:`make_guided`) are shared with latent diffusion
(:mod:`gen_jax.diffusion.latent`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, Checked, typed
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import likelihood
from gen_jax.diffusion import sde as sde_lib
from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import Schedule, make_schedule
from gen_jax.model import (Conditioning, DataSpec, Denoiser, GenerativeModel, Likelihood, Sampler, check_image_batch,
                           condition_labels, label_conditioning, loss_training, require_labels,
                           split_conditioning)
from gen_jax.nn import conditioning as nn_cond
from gen_jax.nn.caption_encoder import CaptionUNet, check_tokens
from gen_jax.nn.dit import DiT, DiTConfig
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from gen_jax.nn.precision import check_compute_dtype, compute_dtype, to_float32
from gen_jax.nn.remat import check_remat
from gen_jax.nn.unet import UNet, UNetConfig

SAMPLERS = ("ddpm", "ddim")


# ------------------------------------------------------------------------------------------
# Configs.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScheduleConfig(Checked):
    """The forward process of a config: ``timesteps`` ``T`` and ``beta_schedule``
    (``'linear'``: Ho et al. 2020, Sec. 4, from ``beta_start`` to ``beta_end``; ``'cosine'``:
    Nichol & Dhariwal 2021, Eq. 17). Shared by DDPMs, latent diffusion and the noise-aware
    classifier (which must be trained on the process of the DDPM it guides)."""

    timesteps: int = 1000
    beta_schedule: Literal["linear", "cosine"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        self.positive("timesteps")
        if self.beta_schedule == "linear":
            self.require(0.0 < self.beta_start <= self.beta_end < 1.0, "beta_start",
                         f"the linear schedule needs 0 < beta_start <= beta_end < 1, got "
                         f"beta_start={self.beta_start}, beta_end={self.beta_end}")


@dataclasses.dataclass(frozen=True)
class ProcessConfig(ScheduleConfig):
    """The diffusion-process fields a DDPM-style config shares (besides the schedule):
    ``parameterization`` (what the network predicts), the sampler (``'ddpm'`` ancestral or
    ``'ddim'`` with ``sample_steps`` ``S``, 0 = ``T``, and ``eta``), the ``conditioning`` and
    classifier-free guidance (``cond_drop_prob`` at training, ``guidance_scale`` ``w`` in
    ``sample``), and the network's ``compute_dtype`` (``'float32'`` or ``'bfloat16'``: its
    matmuls / convs in that dtype; params, norms, softmax, the network output, losses and the
    bound float32, :mod:`gen_jax.nn.precision`) and ``remat`` (``'none'``, ``'full'``,
    ``'dots_saveable'`` per repeated block, :mod:`gen_jax.nn.remat`). Errors name
    ``config.model.<field>``."""

    parameterization: Literal["eps", "x0", "v"] = "eps"
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    sample_steps: int = 0
    eta: float = 0.0
    conditioning: Literal["none", "label"] = "none"
    cond_drop_prob: float = 0.0
    guidance_scale: float = 0.0
    compute_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        super().__post_init__()
        check_compute_dtype(self.compute_dtype)
        check_remat(self.remat)
        self.require(0 <= self.sample_steps <= self.timesteps, "sample_steps",
                     f"S={self.sample_steps} must be in [0, T={self.timesteps}] (0 = T)")
        self.nonnegative("eta", "guidance_scale")
        self.in_range("cond_drop_prob", 0.0, 1.0, hi_open=True)
        if self.guidance_scale > 0:
            self.require(self.conditioning != "none", "guidance_scale",
                         "guidance needs a conditional model (set config.model.conditioning)")
            self.require(self.cond_drop_prob > 0, "guidance_scale",
                         "classifier-free guidance needs a model trained with "
                         "config.model.cond_drop_prob > 0 (it has no unconditional mode)")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(ProcessConfig):
    """``config.model`` of a DDPM (``typed(DiffusionConfig, cfg, 'config.model')``).

    Attributes (besides those of :class:`ProcessConfig`):
      name: model name.
      loss: ``'simple'`` (``L_simple``) or ``'hybrid'`` (needs ``learn_variance``).
      learn_variance: the U-Net outputs ``2C`` channels and the variance is learned
        (Nichol & Dhariwal Eq. 15); otherwise ``var_type`` fixes it.
      var_type: ``'fixed_small'`` (``beta~_t``) or ``'fixed_large'`` (``beta_t``).
      vlb_weight: ``lambda`` of the hybrid loss.
      clip_x0: clip the predicted ``x_0`` to ``[-1, 1]`` when sampling.
      conditioning: ``'none'``, ``'label'`` (class ids) or ``'caption'`` (caption tokens,
        through a :class:`gen_jax.nn.caption_encoder.CaptionEncoder` cross-attended by the
        U-Net and pooled into its embedding).
      level_posterior: the network outputs, per pixel, logits ``f_k`` over the ``K`` levels
        ``l_k`` (``[B, H, W, C * K]``, plus ``C`` variance channels), and the denoiser is the
        posterior mean under them (:func:`level_posterior_eps`): exact denoising where the
        noise is small against the level spacing, where the discrete bound is decided.
        Needs ``parameterization='eps'`` (its output is converted to eps).
      train_dequantize: train on uniformly dequantized images (each value uniform within its
        level's bin, :func:`gen_jax.diffusion.likelihood.dequantize_for_diffusion`): the model
        of the continuous density whose probability-flow ODE likelihood (``ode_log_prob``)
        is the bits/dim of the README's Conventions; the discrete bound ``log_prob`` stays valid but is loose
        for such a model. Off: train on the levels (the bound ``log_prob`` is the target).
      caption_dim, caption_layers, caption_heads: the caption encoder (``'caption'`` only):
        width (= the U-Net's ``context_dim`` and ``emb_dim``), transformer blocks, heads.
      vlb_chunk: timesteps evaluated at once by ``log_prob`` (memory vs speed).
      network: ``'unet'`` (the DDPM U-Net, ``unet``), ``'dit'`` (the diffusion transformer
        ``dit``, Peebles & Xie 2023: patches of the image as tokens, label and time through
        adaLN-Zero; label and unconditional models, not captions) or ``'mlp'`` (the residual
        MLP ``denoiser`` on the flattened image ``[B, H*W*C]``: for small images such as the
        8x8 digits, where it trains several times faster on a CPU than a conv U-Net).
      unet: :class:`gen_jax.nn.unet.UNetConfig` (``num_classes``/``out_channels`` are set
        from the dataset and ``learn_variance``).
      dit: :class:`gen_jax.nn.dit.DiTConfig` (``network='dit'``; ``num_classes`` /
        ``out_channels`` are set like the U-Net's; the image size must be divisible by
        ``dit.patch_size``).
      denoiser: :class:`gen_jax.nn.mlp_denoiser.MLPDenoiserConfig` (``network='mlp'``;
        ``num_classes`` is set from the dataset).
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the network's matmuls / convs (and the
        caption encoder's) in that dtype; params, norms, softmax, the network output, losses
        and the bound float32 (:mod:`gen_jax.nn.precision`).
      remat: rematerialization of the network's repeated blocks (U-Net ResBlock/AttnBlock,
        DiT blocks, MLP residual blocks): ``'none'``, ``'full'``, ``'dots_saveable'``
        (:mod:`gen_jax.nn.remat`).
    """

    name: str = "ddpm"
    conditioning: Literal["none", "label", "caption"] = "none"
    loss: Literal["simple", "hybrid"] = "simple"
    learn_variance: bool = False
    var_type: Literal["fixed_small", "fixed_large"] = "fixed_small"
    vlb_weight: float = 1e-3
    clip_x0: bool = True
    vlb_chunk: int = 50
    train_dequantize: bool = False
    level_posterior: bool = False
    caption_dim: int = 64
    caption_layers: int = 1
    caption_heads: int = 2
    network: Literal["unet", "dit", "mlp"] = "unet"
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    denoiser: MLPDenoiserConfig = dataclasses.field(default_factory=MLPDenoiserConfig)

    def __post_init__(self):
        super().__post_init__()
        self.require(self.loss != "hybrid" or self.learn_variance, "loss",
                     "'hybrid' trains the variance: set config.model.learn_variance=True")
        self.positive("vlb_chunk", "caption_dim", "caption_heads")
        self.nonnegative("caption_layers")
        self.require(self.caption_dim % self.caption_heads == 0, "caption_heads",
                     f"must divide caption_dim={self.caption_dim}, got {self.caption_heads}")
        if self.level_posterior:
            self.require(self.parameterization == "eps", "level_posterior",
                         "the level posterior is converted to an eps prediction: needs "
                         f"config.model.parameterization='eps', got {self.parameterization!r}")
            self.require(not self.train_dequantize, "level_posterior",
                         "models the levels; it contradicts train_dequantize=True")

    @property
    def sampler_var_type(self) -> str:
        """The reverse-process variance of the samplers: ``'learned_range'`` or ``var_type``."""
        return "learned_range" if self.learn_variance else self.var_type


def process_schedule(c: ScheduleConfig) -> Schedule:
    """The :class:`~gen_jax.diffusion.schedules.Schedule` of a config's process fields
    (``beta_schedule``, ``timesteps``; ``beta_start``/``beta_end`` for the linear one)."""
    kw = {"beta_start": c.beta_start, "beta_end": c.beta_end} if c.beta_schedule == "linear" else {}
    return make_schedule(c.beta_schedule, c.timesteps, **kw)


# ------------------------------------------------------------------------------------------
# Conditioning and guidance of a denoiser (shared with latent diffusion).
# ------------------------------------------------------------------------------------------


class DenoiserCondition(NamedTuple):
    """What conditions a diffusion denoiser: nothing (``kind='none'``), class ids ``[B]``
    (``'label'``; null = :func:`gen_jax.nn.conditioning.null_label`) or caption tokens
    ``[B, L]`` (``'caption'``; null = the empty caption)."""

    kind: str = "none"
    num_classes: int = 0
    caption_len: int = 0
    vocab_size: int = 0

    @property
    def key(self) -> str:
        """The batch / ``cond`` key of the condition array."""
        return "caption_tokens" if self.kind == "caption" else "label"

    def of(self, cond, b: int, where: str) -> Optional[jax.Array]:
        """The condition array of ``cond`` (labels int32 ``[b]`` or tokens ``[b, L]``), or
        None for an unconditional denoiser; a clear ``ValueError`` naming ``where``."""
        if self.kind == "none":
            return None
        if self.kind == "label":
            return condition_labels(cond, b, where)
        if cond is None or "caption_tokens" not in cond:
            raise ValueError(f"{where}: the model is caption-conditional; pass "
                             f"cond={{'caption_tokens': int [{b}, {self.caption_len}]}}")
        tok = jnp.asarray(cond["caption_tokens"])
        check_tokens(tok, b, self.caption_len, self.vocab_size, f"{where}: cond['caption_tokens']")
        return tok.astype(jnp.int32)

    def null(self, b: int) -> jax.Array:
        """The null condition of ``b`` examples (classifier-free guidance)."""
        if self.kind == "caption":
            return nn_cond.null_caption(b, self.caption_len)
        return nn_cond.null_labels(self.num_classes, b)

    def drop(self, key: jax.Array, c: Optional[jax.Array], p: float) -> Optional[jax.Array]:
        """Condition dropout (Ho & Salimans 2022, Alg. 1): each example's condition becomes
        the null one with probability ``p``."""
        if c is None or not p:
            return c
        if self.kind == "caption":
            return nn_cond.drop_captions(key, c, p)
        return nn_cond.drop_labels(key, c, p, nn_cond.null_label(self.num_classes))

    def capability(self, guidance: bool) -> Optional[Conditioning]:
        """The contract's :class:`gen_jax.model.Conditioning` (None when unconditional); with
        ``guidance`` (trained with condition dropout) it has the null condition."""
        if self.kind == "none":
            return None
        if self.kind == "label":
            return label_conditioning(self.num_classes, null_label=self.num_classes if guidance else None)
        null = (lambda num: {"caption_tokens": nn_cond.null_caption(num, self.caption_len)}) if guidance else None
        return split_conditioning("caption_tokens", with_label=True, null=null)


def make_guided(denoise: Callable, condition: DenoiserCondition, guide_channels: Optional[int] = None) -> Callable:
    """``guided(params, cond, scale, num) -> model_fn(x_t, t, _)`` for the samplers.

    The conditional denoiser, or for ``scale = w > 0`` the classifier-free guided one (Ho &
    Salimans 2022, Eq. 6), ``(1 + w) eps(x_t, c) - w eps(x_t, c_neg)`` from one network call
    of batch ``2B`` (:func:`gen_jax.nn.conditioning.guided_call`); ``c_neg`` is
    ``cond['negative_label']`` / ``cond['negative_caption_tokens']`` when given, else the
    null condition. ``guide_channels``: only those leading output channels are guided (the
    others, learned variances, are the conditional output's).

    Args:
      denoise: ``(params, x_t [B, ...], t [B], c=None) -> out [B, ...]``.
    """
    def guided(params, cond, scale: float, num: int):
        if condition.kind == "none":
            if scale:
                raise ValueError("guidance_scale > 0 needs a conditional model "
                                 "(config.model.conditioning='label' or 'caption')")
            return lambda x_t, t, _: denoise(params, x_t, t)
        c = condition.of(cond, num, "sample")
        if not scale:
            return lambda x_t, t, _: denoise(params, x_t, t, c)
        neg_key = "negative_" + condition.key
        if cond is not None and cond.get(neg_key) is not None:
            neg = condition.of({condition.key: cond[neg_key]}, num, f"sample: cond[{neg_key!r}]")
        else:
            neg = condition.null(num)
        apply = lambda x, t, lab: denoise(params, x, t, lab)
        return lambda x_t, t, _: nn_cond.guided_call(apply, x_t, t, c, neg, scale, guide_channels=guide_channels)

    return guided


def process_sampler(model_fn: Callable, schedule: Schedule, sampler: str, steps: int, eta: float,
                    **common) -> Callable:
    """The scan sampler ``run(key, shape, cond, params=...)`` of ``sampler``: ancestral
    ``'ddpm'`` (Ho et al. 2020, Alg. 2; all ``T`` steps) or ``'ddim'`` with ``steps`` ``S``
    (0 = ``T``) and ``eta`` (Song et al. 2021, Eq. 12); ``common`` are the samplers' keywords."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    big_t = schedule.num_timesteps
    s = steps or big_t
    if s > big_t:
        raise ValueError(f"steps S={s} must be <= T={big_t}")
    if sampler == "ddpm":
        return samplers.make_ddpm_sampler(model_fn, schedule, **common)
    return samplers.make_ddim_sampler(model_fn, schedule, s, eta, **common)


def level_posterior_eps(logits: jax.Array, x_t: jax.Array, alpha_bar: jax.Array, num_levels: int) -> jax.Array:
    """eps of the per-pixel posterior mean over the ``K`` data levels.

    With ``x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps`` (Ho et al. 2020, Eq. 4) and ``x_0`` on
    the levels ``l_k = 2k / (K - 1) - 1``, Bayes' rule with the network's logits ``f_k`` as the
    (context-dependent) prior gives, per pixel,

        p(x_0 = l_k | x_t) = softmax_k( f_k - (x_t - sqrt(abar) l_k)^2 / (2 (1 - abar)) ),
        x0_hat = sum_k p_k l_k,   eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar),

    the score interpolation of Dieleman et al. 2022 (CDCD, Sec. 3.1) with the Gaussian
    likelihood of the level added to the network's logits. When the noise is small against
    the level spacing the likelihood term snaps ``x0_hat`` to the nearest level.

    Args:
      logits: ``[B, H, W, C, K]``; x_t: ``[B, H, W, C]``; alpha_bar: ``[B]``.

    Returns:
      ``eps_hat [B, H, W, C]``.
    """
    levels = jnp.linspace(-1.0, 1.0, num_levels, dtype=jnp.float32)
    a = alpha_bar.reshape((-1,) + (1,) * (x_t.ndim - 1))
    var = jnp.maximum(1.0 - a, 1e-12)
    ll = -jnp.square(x_t[..., None] - jnp.sqrt(a)[..., None] * levels) / (2.0 * var[..., None])
    p = jax.nn.softmax(logits + ll, axis=-1)
    x0 = jnp.sum(p * levels, axis=-1)
    return (x_t - jnp.sqrt(a) * x0) / jnp.sqrt(var)


def matched_ode_eps(beta_min: float, beta_max: float, num_levels: int) -> float:
    """The VP-SDE time ``t`` with ``1 - exp(-int_0^t beta) = (2 / (K - 1))^2 / 12``, the variance
    of uniform dequantization noise of ``K`` levels on ``[-1, 1]`` (Song et al. 2021, Eq. 33:
    ``int_0^t beta = beta_min t + (beta_max - beta_min) t^2 / 2``)."""
    target = -math.log1p(-((2.0 / (num_levels - 1)) ** 2) / 12.0)
    a, b = 0.5 * (beta_max - beta_min), beta_min
    return (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a) if a > 0 else target / b


# ------------------------------------------------------------------------------------------
# The model.
# ------------------------------------------------------------------------------------------


def _condition(cfg: DiffusionConfig, info: Any) -> DenoiserCondition:
    """The :class:`DenoiserCondition` of a DDPM config on a dataset (errors name the field)."""
    if cfg.conditioning == "label":
        return DenoiserCondition("label", num_classes=require_labels(getattr(info, "num_classes", 0)))
    if cfg.conditioning == "caption":
        vocab_size = int(getattr(info, "vocab_size", 0) or 0)
        caption_len = int(getattr(info, "caption_len", 0) or 0)
        if vocab_size < 2 or caption_len < 1:
            raise ConfigError("config.model.conditioning: 'caption' needs a dataset with captions "
                              f"(info.vocab_size={vocab_size}, info.caption_len={caption_len})")
        if cfg.network != "unet":
            raise ConfigError("config.model.conditioning: 'caption' needs config.model.network='unet' "
                              f"(the caption is cross-attended by the U-Net), got {cfg.network!r}")
        return DenoiserCondition("caption", caption_len=caption_len, vocab_size=vocab_size)
    return DenoiserCondition()


def dit_network(dcfg: DiTConfig, image_shape: tuple, num_classes: int, out_c: int, dtype=None,
                remat: str = "none") -> DiT:
    """The :class:`gen_jax.nn.dit.DiT` of ``config.model.dit`` for images of ``image_shape``
    (``num_classes`` labels + the null class, ``out_c`` output channels); a ``ConfigError``
    naming ``config.model.dit.patch_size`` when the image size is not divisible by it."""
    dcfg = dataclasses.replace(dcfg, num_classes=num_classes, out_channels=out_c)
    try:
        dcfg.check_image_shape(image_shape)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return DiT(dcfg, dtype=dtype, remat=remat)


def _network(cfg: DiffusionConfig, image_shape: tuple, cond: DenoiserCondition, out_c: int):
    """``(net, apply_net)``: the denoiser network (U-Net, caption U-Net, DiT or pixel MLP) and
    ``apply_net(params, x_t [B, H, W, C], t [B], c, train, rngs) -> [B, H, W, out_c]``."""
    n_lab = cond.num_classes if cond.kind == "label" else 0
    dtype = compute_dtype(cfg.compute_dtype)
    if cfg.network == "dit":
        net = dit_network(cfg.dit, image_shape, n_lab, out_c, dtype, cfg.remat)
        return net, net.apply
    if cfg.network == "mlp":
        d = math.prod(image_shape)
        net = MLPDenoiser(dataclasses.replace(cfg.denoiser, num_classes=n_lab),
                          out_features=(d // image_shape[-1]) * out_c, dtype=dtype, remat=cfg.remat)

        def apply_mlp(params, x_t, t, label, train=False, rngs=None):
            b = x_t.shape[0]
            out = net.apply(params, x_t.reshape(b, d), t, label, train=train, rngs=rngs)
            return out.reshape((b,) + image_shape[:-1] + (out_c,))

        return net, apply_mlp
    ucfg = dataclasses.replace(cfg.unet, num_classes=n_lab, out_channels=out_c)
    if cond.kind == "caption":
        ucfg = dataclasses.replace(ucfg, context_dim=cfg.caption_dim, emb_dim=cfg.caption_dim)
    elif ucfg.context_dim or ucfg.emb_dim:
        raise ConfigError("config.model.unet.context_dim / emb_dim: set by conditioning='caption' "
                          f"(from config.model.caption_dim); got {ucfg.context_dim} / {ucfg.emb_dim} "
                          f"with conditioning={cfg.conditioning!r}")
    try:
        ucfg.check_image_shape(image_shape)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cond.kind != "caption":
        net = UNet(ucfg, dtype=dtype, remat=cfg.remat)
        return net, net.apply
    net = CaptionUNet(ucfg, cond.vocab_size, cond.caption_len, cfg.caption_layers, cfg.caption_heads,
                      dtype=dtype, remat=cfg.remat)
    return net, lambda params, x_t, t, tok, train=False, rngs=None: net.apply(params, x_t, t, tok, train=train,
                                                                              rngs=rngs)


def make_ddpm(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the DDPM for images of ``info.image_shape`` with ``info.num_levels`` levels
    (module docstring for its capabilities).

    Raises:
      ConfigError / ValueError naming the field when the config and the dataset disagree
      (image size the U-Net cannot halve, label conditioning without labels, ...).
    """
    cfg = typed(DiffusionConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    num_levels = int(info.num_levels)
    condition = _condition(cfg, info)
    c = image_shape[-1]
    d = math.prod(image_shape)
    out_c = (c * num_levels if cfg.level_posterior else c) + (c if cfg.learn_variance else 0)
    net, apply_net = _network(cfg, image_shape, condition, out_c)
    var_type = cfg.sampler_var_type
    schedule = process_schedule(cfg)
    abar_grid = jnp.concatenate([jnp.ones((1,), jnp.float32), jnp.asarray(schedule.alpha_bars, jnp.float32)])

    def alpha_bar_at(t):
        """``abar`` of (possibly fractional) steps ``t [B]``: ``abar_t`` at integers, linear in
        between, 1 at ``t = -1`` (no noise)."""
        return jnp.interp(jnp.asarray(t, jnp.float32) + 1.0, jnp.arange(cfg.timesteps + 1, dtype=jnp.float32),
                          abar_grid)

    def check_image(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)

    def on_levels(img):
        """Nearest of the ``K`` levels ``level / (K - 1)`` (the discretized decoder's bins)."""
        return dist.to_levels(img, num_levels).astype(jnp.float32) / (num_levels - 1)

    def denoise(params, x_t, t, label=None, *, train=False, key=None):
        """``[B, H, W, C or 2C]`` network output at ``x_t`` (on ``[-1, 1]``), times ``t [B]``;
        ``label`` is the condition array (class ids ``[B]`` or caption tokens ``[B, L]``)."""
        rngs = {"dropout": key} if train else None
        out = to_float32(apply_net(params, x_t, t, label, train=train, rngs=rngs))  # losses / bound in float32
        if not cfg.level_posterior:
            return out
        ck = c * num_levels
        logits = out[..., :ck].reshape(x_t.shape + (num_levels,))
        eps = level_posterior_eps(logits, x_t, alpha_bar_at(t), num_levels)
        return jnp.concatenate([eps, out[..., ck:]], -1)

    def init(key, batch):
        x = batch["image"]
        check_image(x)
        b = x.shape[0]
        t = jnp.zeros((b,), jnp.int32)
        label = None if condition.kind == "none" else condition.null(b)
        if cfg.network == "mlp":
            x = x.reshape(b, d)
        return net.init({"params": key, "dropout": key}, x, t, label, train=False)

    def loss(params, batch, key):
        x = batch["image"]
        check_image(x)
        k_drop, k_loss, k_net, k_deq = jax.random.split(key, 4)
        if cfg.train_dequantize:
            x0 = likelihood.dequantize_for_diffusion(k_deq, on_levels(x), num_levels)[0]
        else:
            x0 = 2.0 * x - 1.0
        label = condition.drop(k_drop, condition.of(batch, x.shape[0], "loss batch"), cfg.cond_drop_prob)
        model_fn = lambda x_t, t, lab: denoise(params, x_t, t, lab, train=True, key=k_net)
        if cfg.loss == "simple":
            terms = gd.simple_loss(model_fn, schedule, x0, k_loss, label, cfg.parameterization, var_type)
        else:
            terms = gd.hybrid_loss(model_fn, schedule, x0, k_loss, num_levels, label,
                                   cfg.parameterization, cfg.vlb_weight)
        metrics = {k: v for k, v in terms.items() if k != "t"}
        return jnp.mean(terms["loss"]), metrics

    guided_denoiser = make_guided(denoise, condition, guide_channels=c if cfg.learn_variance else None)

    def make_sampler(sampler: str = cfg.sampler, steps: int = cfg.sample_steps, eta: float = cfg.eta,
                     guidance_scale: float = cfg.guidance_scale, return_trajectory: bool = False,
                     use_scan: bool = True, *, clip_x0: Optional[bool] = None,
                     guide: Optional[Callable] = None):
        """``sample(params, key, num, cond=None) -> [num, H, W, C]`` in ``[0, 1]`` with the given
        sampler settings (``steps=0`` means ``T``; ``clip_x0=None`` is the config's; a function
        ``x0 -> x0`` thresholds ``x0_hat`` instead, e.g.
        :func:`gen_jax.diffusion.thresholding.dynamic_threshold`).

        ``guide(model_fn, var_type) -> model_fn`` transforms the (classifier-free guided)
        denoiser the sampler steps with, e.g. classifier guidance
        (:func:`gen_jax.diffusion.classifier_guidance.make_classifier_guided_sampler`)."""
        def model_fn(x_t, t, ctx):
            params, cond = ctx
            return guided_denoiser(params, cond, guidance_scale, x_t.shape[0])(x_t, t, None)

        run = process_sampler(model_fn if guide is None else guide(model_fn, var_type), schedule, sampler,
                              steps, eta, parameterization=cfg.parameterization, var_type=var_type,
                              clip_x0=cfg.clip_x0 if clip_x0 is None else
                              (clip_x0 if callable(clip_x0) else bool(clip_x0)),
                              return_trajectory=return_trajectory, use_scan=use_scan)

        def sample_fn(params, key, num, cond=None):
            guided_denoiser(params, cond, guidance_scale, num)  # checks cond against num
            res = run(key, (num,) + image_shape, cond, params=params)
            x = res[0] if isinstance(res, tuple) else res
            img = on_levels((jnp.clip(x, -1.0, 1.0) + 1.0) / 2.0)
            return (img, res[1]) if isinstance(res, tuple) else img

        return sample_fn

    def vlb_terms(params, batch, key):
        x = batch["image"]
        check_image(x)
        label = condition.of(batch, x.shape[0], "log_prob batch")
        x0 = 2.0 * on_levels(x) - 1.0
        return gd.vlb_terms(lambda x_t, t, lab: denoise(params, x_t, t, lab), schedule, x0, key,
                            num_levels, label, cfg.parameterization, var_type, False, cfg.vlb_chunk)

    def log_prob(params, batch, key):
        return gd.vlb_to_log_prob(vlb_terms(params, batch, key), d, num_levels)["log_prob"]

    def ode_log_prob(params, batch, key, *, num_steps: int = 100, method: str = "heun",
                     divergence: str = "hutchinson", eps: Optional[float] = None):
        """Probability-flow ODE log-likelihood of a batch (Song et al. 2021, Eq. 39 with the
        dequantization of :func:`gen_jax.diffusion.likelihood.ode_bits_per_dim`).

        The discrete linear schedule is the VP SDE with ``beta_min = T beta_start``,
        ``beta_max = T beta_end`` (Song et al. 2021, App. B); the network is queried at the
        fractional step ``t T - 1`` (the step whose marginal the continuous time ``t`` matches).
        Returns ``log_prob [B]``: the log density of the uniformly dequantized image on
        ``[0, 1)^D`` (README, Conventions), the same convention as ``log_prob``, so ``bits_per_dim``
        applies to both. ``divergence='exact'`` costs ``D`` JVPs per evaluation.

        ``eps`` (the time the ODE starts from; any value gives a normalized density of ``y``,
        hence a valid bound): by default the time whose noise variance ``1 - abar`` equals the
        variance of the dequantization noise, ``(2 / (K - 1))^2 / 12`` on ``[-1, 1]``, so a model
        of the levels is evaluated at the blur the dequantization itself applies.
        """
        if cfg.beta_schedule != "linear":
            raise ValueError("ode_log_prob: the probability-flow ODE of this bundle is the VP SDE of "
                             "the linear schedule; config.model.beta_schedule is "
                             f"{cfg.beta_schedule!r}")
        if cfg.parameterization != "eps":
            raise ValueError("ode_log_prob needs config.model.parameterization='eps', got "
                             f"{cfg.parameterization!r}")
        x = batch["image"]
        check_image(x)
        label = condition.of(batch, x.shape[0], "ode_log_prob batch")
        T = cfg.timesteps
        vp = sde_lib.make_sde("vp", beta_min=T * cfg.beta_start, beta_max=T * cfg.beta_end)
        if eps is None:
            eps = matched_ode_eps(vp.beta_min, vp.beta_max, num_levels)

        def eps_fn(x_t, t, _):
            return denoise(params, x_t, t * T - 1.0, label)[..., :c]

        out = likelihood.ode_bits_per_dim(sde_lib.score_from_eps(eps_fn, vp), vp, on_levels(x), key,
                                          num_levels, num_steps=num_steps, method=method,
                                          divergence=divergence, eps=eps)
        return out["log_prob"]

    return GenerativeModel(
        name=cfg.name, family="diffusion", training=loss_training(init, loss),
        sampler=Sampler(make_sampler(), "image"), likelihood=Likelihood(log_prob, "vlb"),
        conditioning=condition.capability(cfg.cond_drop_prob > 0),
        denoiser=Denoiser(denoise, schedule, guided=guided_denoiser, make_sampler=make_sampler,
                          vlb_terms=vlb_terms, ode_log_prob=ode_log_prob,
                          parameterization=cfg.parameterization),
        data=DataSpec(image_shape, num_levels, condition.num_classes,
                      (('caption_tokens', condition.vocab_size),) if condition.vocab_size else ()))
