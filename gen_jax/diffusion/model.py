"""The DDPM / DDIM model bundle: a U-Net denoiser + a discrete Gaussian diffusion.

``make_ddpm(cfg, info)`` returns a :class:`gen_jax.model.GenerativeModel` (family
``'diffusion'``) whose pure functions the train loop, checkpoints and bake-off use unchanged:

* ``loss``: ``L_simple`` (Ho et al. 2020, Eq. 14) or the hybrid loss with learned variances
  (Nichol & Dhariwal 2021, Sec. 3.1) on ``x_0 = 2 image - 1``; for class-conditional models
  the label is replaced by the null class with probability ``cond_drop_prob`` (classifier-free
  guidance training, Ho & Salimans 2022, Alg. 1).
* ``log_prob``: the full variational bound (Ho et al. 2020, Eq. 5: ``L_T + sum L_{t-1} + L_0``
  with the discretized decoder over the ``K`` levels), as ``log P(levels) + D log K``, so
  ``bits_per_dim`` gives the bound in bits/dim (``bpd_kind='vlb'``).
* ``sample``: ancestral DDPM (Ho Alg. 2) or DDIM with ``sample_steps`` and ``eta`` (Song et
  al. 2021, Eq. 12), one ``lax.scan``; with ``guidance_scale = w > 0`` the denoiser is the
  classifier-free combination (Ho & Salimans 2022, Eq. 6)

      eps_guided = (1 + w) eps(x_t, c) - w eps(x_t, c_neg),

  where ``c_neg`` is the null class, or the *negative* label ``cond['negative_label']`` when
  given (negative prompting). Samples are quantized to the ``K`` levels (the decoder's mode).
* ``extras``: ``denoise(params, x_t, t, cond)``, ``guided_denoiser(params, cond, scale)``,
  ``make_sampler(sampler, steps, eta, guidance_scale)``, ``vlb_terms``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, from_config
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import likelihood
from gen_jax.diffusion import sde as sde_lib
from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import SCHEDULES, make_schedule
from gen_jax.model import GenerativeModel, check_image_batch, condition_labels
from gen_jax.nn.caption_encoder import CaptionUNet, check_tokens
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from gen_jax.nn.unet import UNet, UNetConfig

SAMPLERS = ("ddpm", "ddim")
LOSSES = ("simple", "hybrid")
CONDITIONINGS = ("none", "label")
DDPM_CONDITIONINGS = ("none", "label", "caption")
NETWORKS = ("unet", "mlp")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """``config.model`` of a DDPM (``from_config(DiffusionConfig, cfg, 'config.model')``).

    Attributes:
      name: model name.
      timesteps: ``T``.
      beta_schedule: ``'linear'`` or ``'cosine'``; ``beta_start``/``beta_end`` for linear.
      parameterization: ``'eps' | 'x0' | 'v'`` (what the U-Net predicts).
      loss: ``'simple'`` (``L_simple``) or ``'hybrid'`` (needs ``learn_variance``).
      learn_variance: the U-Net outputs ``2C`` channels and the variance is learned
        (Nichol & Dhariwal Eq. 15); otherwise ``var_type`` fixes it.
      var_type: ``'fixed_small'`` (``beta~_t``) or ``'fixed_large'`` (``beta_t``).
      vlb_weight: ``lambda`` of the hybrid loss.
      clip_x0: clip the predicted ``x_0`` to ``[-1, 1]`` when sampling.
      sampler: ``'ddpm'`` or ``'ddim'`` (what ``sample`` uses).
      sample_steps: DDIM steps ``S`` (``0`` = ``T``).
      eta: DDIM ``eta``.
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
        is the DESIGN.md bits/dim; the discrete bound ``log_prob`` stays valid but is loose
        for such a model. Off: train on the levels (the bound ``log_prob`` is the target).
      caption_dim, caption_layers, caption_heads: the caption encoder (``'caption'`` only):
        width (= the U-Net's ``context_dim`` and ``emb_dim``), transformer blocks, heads.
      cond_drop_prob: probability of the null label at training (classifier-free guidance).
      guidance_scale: ``w`` of classifier-free guidance in ``sample`` (0 = plain conditional).
      vlb_chunk: timesteps evaluated at once by ``log_prob`` (memory vs speed).
      network: ``'unet'`` (the DDPM U-Net, ``unet``) or ``'mlp'`` (the residual MLP
        ``denoiser`` on the flattened image ``[B, H*W*C]``: for small images such as the
        8x8 digits, where it trains several times faster on a CPU than a conv U-Net).
      unet: :class:`gen_jax.nn.unet.UNetConfig` (``num_classes``/``out_channels`` are set
        from the dataset and ``learn_variance``).
      denoiser: :class:`gen_jax.nn.mlp_denoiser.MLPDenoiserConfig` (``network='mlp'``;
        ``num_classes`` is set from the dataset).
    """

    name: str = "ddpm"
    timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    parameterization: str = "eps"
    loss: str = "simple"
    learn_variance: bool = False
    var_type: str = "fixed_small"
    vlb_weight: float = 1e-3
    clip_x0: bool = True
    sampler: str = "ddpm"
    sample_steps: int = 0
    eta: float = 0.0
    conditioning: str = "none"
    cond_drop_prob: float = 0.0
    guidance_scale: float = 0.0
    vlb_chunk: int = 50
    train_dequantize: bool = False
    level_posterior: bool = False
    caption_dim: int = 64
    caption_layers: int = 1
    caption_heads: int = 2
    network: str = "unet"
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)
    denoiser: MLPDenoiserConfig = dataclasses.field(default_factory=MLPDenoiserConfig)

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        check_process_fields(self, DDPM_CONDITIONINGS)
        if self.loss not in LOSSES:
            bad("loss", f"must be one of {list(LOSSES)}, got {self.loss!r}")
        if self.loss == "hybrid" and not self.learn_variance:
            bad("loss", "'hybrid' trains the variance: set config.model.learn_variance=True")
        if self.var_type not in ("fixed_small", "fixed_large"):
            bad("var_type", f"must be 'fixed_small' or 'fixed_large', got {self.var_type!r}")
        if self.vlb_chunk < 1:
            bad("vlb_chunk", f"must be >= 1, got {self.vlb_chunk}")
        if self.caption_dim < 1 or self.caption_layers < 0 or self.caption_heads < 1:
            bad("caption_dim", f"caption_dim/caption_heads must be >= 1 and caption_layers >= 0, got "
                               f"{self.caption_dim}/{self.caption_heads}/{self.caption_layers}")
        if self.caption_dim % self.caption_heads:
            bad("caption_heads", f"must divide caption_dim={self.caption_dim}, got {self.caption_heads}")
        if self.level_posterior and self.parameterization != "eps":
            bad("level_posterior", "the level posterior is converted to an eps prediction: needs "
                                   f"config.model.parameterization='eps', got {self.parameterization!r}")
        if self.level_posterior and self.train_dequantize:
            bad("level_posterior", "models the levels; it contradicts train_dequantize=True")
        if self.network not in NETWORKS:
            bad("network", f"must be one of {list(NETWORKS)}, got {self.network!r}")


def check_process_fields(c: Any, conditionings: tuple = CONDITIONINGS) -> None:
    """Validates the diffusion-process fields a DDPM-style config shares (``timesteps``,
    ``beta_schedule``, ``parameterization``, ``sampler``, ``sample_steps``, ``eta``,
    ``conditioning``, ``cond_drop_prob``, ``guidance_scale``); errors name ``config.model.<field>``."""
    def bad(field, msg):
        raise ConfigError(f"config.model.{field}: {msg}")

    if c.timesteps < 1:
        bad("timesteps", f"must be >= 1, got {c.timesteps}")
    if c.beta_schedule not in SCHEDULES:
        bad("beta_schedule", f"must be one of {list(SCHEDULES)}, got {c.beta_schedule!r}")
    if c.parameterization not in gd.PARAMETERIZATIONS:
        bad("parameterization", f"must be one of {list(gd.PARAMETERIZATIONS)}, got {c.parameterization!r}")
    if c.sampler not in SAMPLERS:
        bad("sampler", f"must be one of {list(SAMPLERS)}, got {c.sampler!r}")
    if not 0 <= c.sample_steps <= c.timesteps:
        bad("sample_steps", f"S={c.sample_steps} must be in [0, T={c.timesteps}] (0 = T)")
    if c.eta < 0:
        bad("eta", f"must be >= 0, got {c.eta}")
    if c.conditioning not in conditionings:
        bad("conditioning", f"must be one of {list(conditionings)}, got {c.conditioning!r}")
    if not 0.0 <= c.cond_drop_prob < 1.0:
        bad("cond_drop_prob", f"must be in [0, 1), got {c.cond_drop_prob}")
    if c.guidance_scale < 0:
        bad("guidance_scale", f"must be >= 0, got {c.guidance_scale}")
    if c.guidance_scale > 0 and c.conditioning == "none":
        bad("guidance_scale", "guidance needs a conditional model (config.model.conditioning="
                              f"one of {[k for k in conditionings if k != 'none']})")
    if c.guidance_scale > 0 and c.cond_drop_prob == 0:
        bad("guidance_scale", "classifier-free guidance needs a model trained with "
                              "config.model.cond_drop_prob > 0 (it has no unconditional mode)")


def process_schedule(c: Any):
    """The :class:`~gen_jax.diffusion.schedules.Schedule` of a config's process fields
    (``beta_schedule``, ``timesteps``; ``beta_start``/``beta_end`` for the linear one)."""
    kw = {"beta_start": c.beta_start, "beta_end": c.beta_end} if c.beta_schedule == "linear" else {}
    return make_schedule(c.beta_schedule, c.timesteps, **kw)


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


def as_diffusion_config(cfg: Any) -> DiffusionConfig:
    return cfg if isinstance(cfg, DiffusionConfig) else from_config(DiffusionConfig, cfg, "config.model")


def make_ddpm(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the DDPM bundle for images of ``info.image_shape`` with ``info.num_levels`` levels.

    Raises:
      ConfigError / ValueError naming the field when the config and the dataset disagree
      (image size the U-Net cannot halve, label conditioning without labels, ...).
    """
    cfg = as_diffusion_config(cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    num_levels = int(info.num_levels)
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning != "none"
    by_caption = cfg.conditioning == "caption"
    if cfg.conditioning == "label" and num_classes < 1:
        raise ConfigError(f"config.model.conditioning: 'label' needs a dataset with labels "
                          f"(info.num_classes={num_classes})")
    vocab_size = int(getattr(info, "vocab_size", 0) or 0)
    caption_len = int(getattr(info, "caption_len", 0) or 0)
    if by_caption and (vocab_size < 2 or caption_len < 1):
        raise ConfigError("config.model.conditioning: 'caption' needs a dataset with captions "
                          f"(info.vocab_size={vocab_size}, info.caption_len={caption_len})")
    if by_caption and cfg.network != "unet":
        raise ConfigError("config.model.conditioning: 'caption' needs config.model.network='unet' "
                          "(the caption is cross-attended by the U-Net)")
    n_lab = num_classes if cfg.conditioning == "label" else 0
    c = image_shape[-1]
    out_c = (c * num_levels if cfg.level_posterior else c) + (c if cfg.learn_variance else 0)
    ucfg = dataclasses.replace(cfg.unet, num_classes=n_lab, out_channels=out_c)
    d = math.prod(image_shape)
    if by_caption:
        ucfg = dataclasses.replace(ucfg, context_dim=cfg.caption_dim, emb_dim=cfg.caption_dim)
    elif ucfg.context_dim or ucfg.emb_dim:
        raise ConfigError("config.model.unet.context_dim / emb_dim: set by conditioning='caption' "
                          f"(from config.model.caption_dim); got {ucfg.context_dim} / {ucfg.emb_dim} "
                          f"with conditioning={cfg.conditioning!r}")
    if cfg.network == "unet":
        try:
            ucfg.check_image_shape(image_shape)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if by_caption:
            net = CaptionUNet(ucfg, vocab_size, caption_len, cfg.caption_layers, cfg.caption_heads)
            apply_net = lambda params, x_t, t, tok, train=False, rngs=None: net.apply(
                params, x_t, t, tok, train=train, rngs=rngs)
        else:
            net = UNet(ucfg)
            apply_net = net.apply
        null = ucfg.null_label
    else:
        mcfg = dataclasses.replace(cfg.denoiser, num_classes=n_lab)
        net = MLPDenoiser(mcfg, out_features=(d // c) * out_c)
        null = mcfg.null_label

        def apply_net(params, x_t, t, label, train=False, rngs=None):
            b = x_t.shape[0]
            out = net.apply(params, x_t.reshape(b, d), t, label, train=train, rngs=rngs)
            return out.reshape((b,) + image_shape[:-1] + (out_c,))

    var_type = "learned_range" if cfg.learn_variance else cfg.var_type
    schedule = process_schedule(cfg)
    abar_grid = jnp.concatenate([jnp.ones((1,), jnp.float32), jnp.asarray(schedule.alpha_bars, jnp.float32)])

    def alpha_bar_at(t):
        """``abar`` of (possibly fractional) steps ``t [B]``: ``abar_t`` at integers, linear in
        between, 1 at ``t = -1`` (no noise)."""
        return jnp.interp(jnp.asarray(t, jnp.float32) + 1.0, jnp.arange(cfg.timesteps + 1, dtype=jnp.float32),
                          abar_grid)
    cond_key = "caption_tokens" if by_caption else "label"

    def check_image(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)

    def on_levels(img):
        """Nearest of the ``K`` levels ``level / (K - 1)`` (the discretized decoder's bins)."""
        return dist.to_levels(img, num_levels).astype(jnp.float32) / (num_levels - 1)

    def labels_of(cond, b, where):
        """The condition array of ``cond`` (label ``[b]`` or caption tokens ``[b, L]``), or None."""
        if not conditional:
            return None
        if not by_caption:
            return condition_labels(cond, b, where)
        if cond is None or "caption_tokens" not in cond:
            raise ValueError(f"{where}: the model is caption-conditional; pass "
                             f"cond={{'caption_tokens': int [{b}, {caption_len}]}}")
        tok = jnp.asarray(cond["caption_tokens"])
        check_tokens(tok, b, caption_len, vocab_size, f"{where}: cond['caption_tokens']")
        return tok.astype(jnp.int32)

    def null_of(b):
        """The null condition of classifier-free guidance: the null class / the empty caption."""
        if by_caption:
            return jnp.zeros((b, caption_len), jnp.int32)
        return jnp.full((b,), null, jnp.int32)

    def denoise(params, x_t, t, label=None, *, train=False, key=None):
        """``[B, H, W, C or 2C]`` network output at ``x_t`` (on ``[-1, 1]``), times ``t [B]``;
        ``label`` is the condition array (class ids ``[B]`` or caption tokens ``[B, L]``)."""
        rngs = {"dropout": key} if train else None
        out = apply_net(params, x_t, t, label, train=train, rngs=rngs)
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
        label = null_of(b) if conditional else None
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
        label = None
        if conditional:
            label = labels_of(batch, x.shape[0], "loss batch")
            if cfg.cond_drop_prob > 0:
                drop = jax.random.bernoulli(k_drop, cfg.cond_drop_prob, (x.shape[0],))
                label = jnp.where(drop.reshape((-1,) + (1,) * (label.ndim - 1)), null_of(x.shape[0]), label)
        model_fn = lambda x_t, t, lab: denoise(params, x_t, t, lab, train=True, key=k_net)
        if cfg.loss == "simple":
            terms = gd.simple_loss(model_fn, schedule, x0, k_loss, label, cfg.parameterization, var_type)
        else:
            terms = gd.hybrid_loss(model_fn, schedule, x0, k_loss, num_levels, label,
                                   cfg.parameterization, cfg.vlb_weight)
        metrics = {k: v for k, v in terms.items() if k != "t"}
        return jnp.mean(terms["loss"]), metrics

    def guided_denoiser(params, cond, scale: float, num: int):
        """``model_fn(x_t, t, _)`` for the samplers: conditional, or classifier-free guided
        (Ho & Salimans 2022, Eq. 6) when ``scale > 0``; one batched network call of ``2B``.
        The negative condition is ``cond['negative_label']`` / ``cond['negative_caption_tokens']``
        when given, else the null class / the empty caption."""
        if not conditional:
            if scale:
                raise ValueError("guidance_scale > 0 needs a conditional model "
                                 "(config.model.conditioning='label' or 'caption')")
            return lambda x_t, t, _: denoise(params, x_t, t)
        label = labels_of(cond, num, "sample")
        if not scale:
            return lambda x_t, t, _: denoise(params, x_t, t, label)
        neg_key = "negative_" + cond_key
        if cond is not None and cond.get(neg_key) is not None:
            neg = labels_of({cond_key: cond[neg_key]}, num, f"sample: cond[{neg_key!r}]")
        else:
            neg = null_of(num)

        def fn(x_t, t, _):
            out = denoise(params, jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]),
                          jnp.concatenate([label, neg]))
            o_c, o_u = out[:num], out[num:]
            # Guide the mean prediction channels; keep the conditional variance channels.
            g = o_c[..., :c] + scale * (o_c[..., :c] - o_u[..., :c])
            return jnp.concatenate([g, o_c[..., c:]], -1) if cfg.learn_variance else g

        return fn

    def make_sampler(sampler: str = cfg.sampler, steps: int = cfg.sample_steps, eta: float = cfg.eta,
                     guidance_scale: float = cfg.guidance_scale, return_trajectory: bool = False,
                     use_scan: bool = True):
        """``sample(params, key, num, cond=None) -> [num, H, W, C]`` in ``[0, 1]`` with the given
        sampler settings (``steps=0`` means ``T``)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        s = steps or cfg.timesteps
        if s > cfg.timesteps:
            raise ValueError(f"steps S={s} must be <= T={cfg.timesteps}")

        def model_fn(x_t, t, ctx):
            params, cond = ctx
            return guided_denoiser(params, cond, guidance_scale, x_t.shape[0])(x_t, t, None)

        common = dict(parameterization=cfg.parameterization, var_type=var_type, clip_x0=cfg.clip_x0,
                      return_trajectory=return_trajectory, use_scan=use_scan)
        if sampler == "ddpm":
            run = samplers.make_ddpm_sampler(model_fn, schedule, **common)
        else:
            run = samplers.make_ddim_sampler(model_fn, schedule, s, eta, **common)

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
        label = labels_of(batch, x.shape[0], "log_prob batch")
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
        ``[0, 1)^D`` (DESIGN.md), the same convention as ``log_prob``, so ``bits_per_dim``
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
        label = labels_of(batch, x.shape[0], "ode_log_prob batch")
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
        name=cfg.name, family="diffusion", init=init, loss=loss, sample=make_sampler(),
        log_prob=log_prob, bpd_kind="vlb", conditional=conditional, condition_key=cond_key,
        extras={"denoise": denoise, "guided_denoiser": guided_denoiser, "make_sampler": make_sampler,
                "vlb_terms": vlb_terms, "ode_log_prob": ode_log_prob, "schedule": lambda: schedule, "unet_config": lambda: ucfg})
