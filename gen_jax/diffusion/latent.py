"""Latent diffusion (Rombach et al. 2022): a Gaussian diffusion in the latent space of a frozen,
already trained VAE, sampled in latent space and then decoded.

Two stages (Rombach et al. 2022, Sec. 3):

1. **Stage one** (Sec. 3.1, "perceptual image compression"): a VAE ``q(z | x)``,
   ``p(x | z)`` trained on its own (here any ``vae`` config, e.g. ``vae_digits``, trained
   into ``stage1_workdir``). Its params are restored on the host when the bundle is built
   and are never trained again: they live in the param group ``'stage1'``, which no phase
   names (:class:`gen_jax.model.Phase`), so the train step leaves them bit-identical.
2. **Stage two** (Sec. 3.2, Eq. 2): a DDPM on the latents ``z_0`` of the training images,

       L_LDM = E_{z_0 ~ q(z|x), eps ~ N(0, I), t} || eps - eps_theta(z_t, t) ||^2,
       z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,

   i.e. ``L_simple`` of Ho et al. 2020 (Eq. 14) with the image replaced by the latent. The
   denoiser is a residual MLP on ``[B, Z]`` (:mod:`gen_jax.nn.mlp_denoiser`).

Details:

* ``latent='mean'`` trains on the posterior mean ``z_0 = mu(x)``; ``'sample'`` on a draw
  ``z_0 = mu(x) + sigma(x) eps'`` of ``q(z | x)`` (what Rombach et al. do for their
  KL-regularized autoencoders, Sec. 3.1 / App. G).
* ``scale_latents``: the diffusion runs on ``(z - m) / s`` with ``m, s`` the per-dimension
  mean and standard deviation of the posterior means ``mu(x)`` over the stage-one training
  split (for ``latent='sample'``: of the draws, ``s^2 = Var[mu] + E[sigma^2]``, see
  :func:`latent_stats`), computed once at build time and stored in the params
  (``params['latent_stats']``) so a checkpoint carries them. Rombach et al. (Sec. 4.3.2 and
  App. G) rescale by one scalar standard deviation estimated on a batch, so that the latents
  have about unit variance as the diffusion prior ``N(0, I)`` assumes; per-dimension
  statistics on the whole split are a deliberate variant here (a VAE's latent dimensions
  have very different scales, unused ones almost none).
* **No clipping**: the latent space is unbounded, so the samplers never clip the predicted
  ``z_0`` (the image DDPM clips ``x_0`` to ``[-1, 1]``).
* ``sample``: DDPM ancestral (Ho et al. 2020, Alg. 2) or DDIM (Song et al. 2021, Eq. 12) in
  latent space, one ``lax.scan`` (:mod:`gen_jax.diffusion.samplers`, which accept any
  ``[B, ...]`` shape), then ``z = s z_0 + m`` and a draw ``x ~ p(x | z)`` from the VAE's
  likelihood (``sample_mean=True`` in the stage-one config gives its mean on the levels
  instead, as the VAE's own ``sample`` does), on the ``K`` levels in ``[0, 1]``.
* Class conditioning of the denoiser with classifier-free guidance (Ho & Salimans 2022,
  Alg. 1 and Eq. 6): ``eps~ = (1 + w) eps(z_t, c) - w eps(z_t, c_neg)``; the stage-one VAE
  stays unconditional.
* ``log_prob`` is ``None``: the latent diffusion gives a bound on ``log p(z)`` of the
  *latents*, and a density of the images would need ``log p(x) >= E_q[log p(x|z) +
  log p_theta(z) - log q(z|x)]`` with the diffusion's own bound inside, which is neither
  tight nor what was trained here (the latent prior is trained on posterior means, not on
  draws of ``q``); no tractable bound is reported.

Keys: ``loss`` splits its key into ``(k_enc, k_drop, k_loss)``: ``k_enc`` draws ``z ~ q(z|x)``
(``latent='sample'``), ``k_drop`` the condition dropout, ``k_loss`` the ``(t, eps)`` of
:func:`gen_jax.diffusion.gaussian_diffusion.simple_loss` (and ``fold_in(k_loss, 1)`` the
denoiser's dropout). ``sample`` splits its key into
``(k_diff, k_dec)``: the latent sampler and the decoder's draw.

References:
  * Rombach, Blattmann, Lorenz, Esser & Ommer 2022, "High-Resolution Image Synthesis with
    Latent Diffusion Models", Sec. 3-4 (Eq. 2), App. G.
  * Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models", Eq. 14, Alg. 2.
  * Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", Eq. 12.
  * Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Alg. 1, Eq. 6.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, from_config
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import samplers
from gen_jax.diffusion.model import SAMPLERS, check_process_fields, process_schedule
from gen_jax.latent import objectives
from gen_jax.latent.vae import VAEConfig, VAENet, as_vae_config, make_vae
from gen_jax.model import GenerativeModel, Phase, check_image_batch, condition_labels
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig

LATENTS = ("mean", "sample")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class LatentDiffusionConfig:
    """``config.model`` of a latent diffusion model.

    Attributes:
      name: model name.
      stage1_config: the stage-one VAE's experiment config: a file path, or a name in
        ``experiments/configs`` (``'vae_digits'``).
      stage1_overrides: ``'section.field=value'`` overrides of that config (as
        ``--config.section.field=value``), e.g. ``('model.latent_dim=4',)``.
      stage1_workdir: the workdir stage one was trained into (relative paths are tried
        against the working directory, then the repository root).
      latent: ``'mean'`` (posterior mean) or ``'sample'`` (a draw of ``q(z | x)``).
      scale_latents: standardize the latents per dimension (module docstring).
      timesteps, beta_schedule, beta_start, beta_end: the discrete schedule (``T``).
      parameterization: ``'eps' | 'x0' | 'v'`` (what the denoiser predicts).
      sampler: ``'ddpm'`` or ``'ddim'``; sample_steps: DDIM ``S`` (0 = ``T``); eta: DDIM eta.
      conditioning: ``'none'`` or ``'label'`` (the denoiser's class conditioning).
      cond_drop_prob: probability of the null label at training (classifier-free guidance).
      guidance_scale: ``w`` of classifier-free guidance in ``sample``.
      denoiser: :class:`gen_jax.nn.mlp_denoiser.MLPDenoiserConfig` (``num_classes`` is set
        from the dataset when ``conditioning='label'``).
    """

    name: str = "latent_diffusion"
    stage1_config: str = "vae_digits"
    stage1_overrides: tuple[str, ...] = ()
    stage1_workdir: str = "results/demo/runs/vae"
    latent: str = "mean"
    scale_latents: bool = True
    timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    parameterization: str = "eps"
    sampler: str = "ddpm"
    sample_steps: int = 0
    eta: float = 0.0
    conditioning: str = "none"
    cond_drop_prob: float = 0.0
    guidance_scale: float = 0.0
    denoiser: MLPDenoiserConfig = dataclasses.field(default_factory=MLPDenoiserConfig)

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        if not self.stage1_config:
            bad("stage1_config", "must name the stage-one VAE config (e.g. 'vae_digits')")
        for o in self.stage1_overrides:
            if "=" not in o:
                bad("stage1_overrides", f"entries must be 'section.field=value', got {o!r}")
        if not self.stage1_workdir:
            bad("stage1_workdir", "must name the workdir stage one was trained into")
        if self.latent not in LATENTS:
            bad("latent", f"must be one of {list(LATENTS)}, got {self.latent!r}")
        check_process_fields(self)


def as_latent_diffusion_config(cfg: Any) -> LatentDiffusionConfig:
    if isinstance(cfg, LatentDiffusionConfig):
        return cfg
    return from_config(LatentDiffusionConfig, cfg, "config.model")


# ----------------------------------------------------------------------------------------
# Stage one: config, restore, latent statistics (host side, at build time).
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stage1:
    """The restored stage-one VAE: its experiment config, typed model config, params
    (numpy, the EMA params when the run kept them), bundle, and the checkpoint step."""

    exp: Any
    vae_cfg: VAEConfig
    params: Any
    model: GenerativeModel
    step: int
    workdir: str


def _stage1_config_path(name: str) -> str:
    cands = [name, os.path.join(REPO, "experiments", "configs", name if name.endswith(".py") else name + ".py")]
    for c in cands:
        if os.path.isfile(c):
            return c
    raise ConfigError(f"config.model.stage1_config: no config file {name!r} (tried {cands})")


def _resolve_workdir(path: str) -> str:
    if os.path.isabs(path) or os.path.isdir(path):
        return os.path.abspath(path)
    in_repo = os.path.join(REPO, path)
    return in_repo if os.path.isdir(in_repo) else os.path.abspath(path)


def load_stage1_experiment(cfg: LatentDiffusionConfig):
    """The stage-one experiment config (``stage1_config`` plus ``stage1_overrides``)."""
    from gen_jax.train.experiment import apply_overrides, load_config_file, parse_config

    raw = load_config_file(_stage1_config_path(cfg.stage1_config))
    overrides = dict(o.split("=", 1) for o in cfg.stage1_overrides)
    try:
        apply_overrides(raw, overrides)
        exp = parse_config(raw)
    except ConfigError as e:
        raise ConfigError(f"config.model.stage1_config / stage1_overrides: {e}") from None
    return exp


def restore_stage1(cfg: LatentDiffusionConfig, info: Any) -> Stage1:
    """Builds the stage-one VAE from its config and restores its trained params on the host.

    The abstract train state is built exactly as the train loop built it
    (:func:`gen_jax.train.loop.init_state`), so :class:`gen_jax.train.checkpoint.Checkpointer`
    compares the checkpoint's shape signature against the config before reading arrays.

    Raises:
      ConfigError naming ``config.model.stage1_config`` (not a VAE, conditional, another
      dataset) or ``config.model.stage1_workdir`` (no checkpoint there, or a checkpoint of
      another architecture than ``stage1_config`` describes).
    """
    from gen_jax.train import sharding as shd
    from gen_jax.train.checkpoint import CheckpointError, Checkpointer
    from gen_jax.train.loop import init_state

    exp = load_stage1_experiment(cfg)
    if exp.model_name != "vae":
        raise ConfigError(f"config.model.stage1_config: {cfg.stage1_config!r} builds model "
                          f"{exp.model_name!r}; latent diffusion needs a 'vae' stage one")
    vcfg = as_vae_config(exp.model)
    if vcfg.conditioning != "none":
        raise ConfigError(f"config.model.stage1_config: the stage-one VAE must be unconditional "
                          f"(its conditioning is {vcfg.conditioning!r})")
    name = getattr(info, "name", None)
    if name is not None and exp.dataset.name != name:
        raise ConfigError(f"config.model.stage1_config: stage one was configured on dataset "
                          f"{exp.dataset.name!r}, this model on {name!r}")
    vae = make_vae(vcfg, info)
    workdir = _resolve_workdir(cfg.stage1_workdir)
    hint = (f"train stage one first: python -m experiments.train --config "
            f"{_stage1_config_path(cfg.stage1_config)} --workdir {cfg.stage1_workdir}")
    mesh = shd.make_mesh(1)
    example = {"image": jax.ShapeDtypeStruct((exp.train.batch_size,) + tuple(info.image_shape), jnp.float32)}
    _, _, abstract, state_sh, _ = init_state(exp, vae, example, mesh, shd.batch_sharding(mesh))
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, state_sh)
    try:
        ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
        try:
            state, meta = ckpt.restore(abstract)
        finally:
            ckpt.close()
    except CheckpointError as e:
        raise ConfigError(f"config.model.stage1_workdir: cannot restore the stage-one VAE "
                          f"({cfg.stage1_config!r}) from {workdir}: {e}. Either {hint}, or point "
                          f"stage1_config/stage1_overrides at the config that workdir was "
                          f"trained with.") from None
    params = state.ema_params if state.ema_params is not None else state.params
    params = jax.tree.map(np.asarray, jax.device_get(params))
    return Stage1(exp, vcfg, params, vae, int(meta.get("step", int(state.step))), workdir)


def latent_stats(stage1: Stage1, num_levels: int, latent: str = "mean", batch_size: int = 512,
                 min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension location and scale ``[Z]`` of the training latents (float64, host).

    Location: the mean of the posterior means ``mu(x)`` over the stage-one training split.
    Scale: their standard deviation for ``latent='mean'``; for ``latent='sample'`` the
    standard deviation of the draws ``z ~ q(z | x)`` (the aggregate posterior),
    ``sqrt(Var_x[mu(x)] + E_x[sigma^2(x)])`` by the law of total variance, so that dimensions
    the VAE leaves unused (``mu ~ 0``, ``sigma ~ 1``) are not blown up. Floored at
    ``min_std``. One compiled encoder call per chunk of ``batch_size`` (the last chunk padded
    by repetition).
    """
    from gen_jax.data.datasets import load_split

    exp = stage1.exp
    levels = load_split(exp.dataset.name, "train", exp.dataset.data_dir or None)["image"]
    encode = jax.jit(lambda p, x: stage1.model.extras["encode"](p, x))
    bs = min(batch_size, len(levels))
    means, variances = [], []
    for start in range(0, len(levels), bs):
        chunk = levels[start:start + bs]
        n = len(chunk)
        if n < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, 0)], 0)
        mu, log_var = encode(stage1.params, chunk.astype(np.float32) / (num_levels - 1))
        means.append(np.asarray(mu)[:n])
        variances.append(np.exp(np.asarray(log_var, np.float64))[:n])
    mu = np.concatenate(means, 0).astype(np.float64)
    var = mu.var(0)
    if latent == "sample":
        var = var + np.concatenate(variances, 0).mean(0)
    return mu.mean(0), np.maximum(np.sqrt(var), min_std)


# ----------------------------------------------------------------------------------------
# The bundle.
# ----------------------------------------------------------------------------------------


def make_latent_diffusion(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the latent diffusion bundle (family ``'diffusion'``) over a restored VAE.

    Restores stage one (:func:`restore_stage1`) and computes the latent statistics
    (:func:`latent_stats`) on the host, once, here.

    Returns:
      :class:`GenerativeModel` with

      * ``init(key, batch) -> {'stage1': VAE params, 'denoiser': MLP params,
        'latent_stats': {'mean': [Z], 'std': [Z]}}``;
      * ``phases = (Phase('denoiser', loss),)``: only the denoiser trains;
      * ``loss(params, batch, key) -> (mean L_simple, {'mse': [B]})`` on the scaled latents
        of the frozen encoder (``stop_gradient``);
      * ``sample(params, key, num, cond=None) -> [num, H, W, C]`` on the levels in [0, 1];
      * ``log_prob = None`` (module docstring);
      * extras ``denoise(params, z_t, t, label=None)``, ``encode_latents(params, image, key)
        -> [B, Z]`` (scaled), ``decode_latents(params, z, key) -> [B, H, W, C]`` (a draw of
        ``p(x | z)`` from scaled latents), ``guided_denoiser(params, cond, scale, num)``,
        ``make_sampler(sampler, steps, eta, guidance_scale, return_latents, use_scan)``,
        ``schedule()``, ``stage1()`` (the :class:`Stage1` record), ``latent_dim()``.

    Raises:
      ConfigError naming the field (see :class:`LatentDiffusionConfig`, :func:`restore_stage1`).
    """
    cfg = as_latent_diffusion_config(cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    num_levels = int(info.num_levels)
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning == "label"
    if conditional and num_classes < 1:
        raise ConfigError(f"config.model.conditioning: 'label' needs a dataset with labels "
                          f"(info.num_classes={num_classes})")
    stage1 = restore_stage1(cfg, info)
    vcfg = stage1.vae_cfg
    z_dim = vcfg.latent_dim
    loc, scale = latent_stats(stage1, num_levels, cfg.latent)
    if not cfg.scale_latents:
        loc, scale = np.zeros_like(loc), np.ones_like(scale)
    stats = {"mean": loc.astype(np.float32), "std": scale.astype(np.float32)}

    # The VAE's own decoder network and likelihood, to draw x ~ p(x | z) at given z (the
    # pieces make_vae's sample uses; its extras only expose the decoder mean).
    lik = objectives.PixelLikelihood(vcfg.likelihood, image_shape, num_levels, vcfg.num_mixtures,
                                     vcfg.gaussian_scale)
    vae_net = VAENet(vcfg, image_shape, lik.out_features)
    encode = stage1.model.extras["encode"]

    dcfg = dataclasses.replace(cfg.denoiser, num_classes=num_classes if conditional else 0)
    net = MLPDenoiser(dcfg, z_dim)
    null = dcfg.null_label
    schedule = process_schedule(cfg)

    def check_image(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)

    def labels_of(cond, b, where):
        return condition_labels(cond, b, where) if conditional else None

    def denoise(params, z_t, t, label=None, *, train=False, key=None):
        """``[B, Z]`` denoiser output at scaled latents ``z_t [B, Z]``, times ``t [B]``."""
        rngs = {"dropout": key} if train else None
        return net.apply(params["denoiser"], z_t, t, label, train=train, rngs=rngs)

    def encode_latents(params, image, key=None):
        """Scaled latents ``(z - m) / s`` ``[B, Z]`` of images ``[B, H, W, C]`` through the
        frozen encoder (``stop_gradient``): the posterior mean, or a draw with ``key``
        (``latent='sample'``)."""
        check_image(image)
        s1 = jax.lax.stop_gradient(params["stage1"])
        st = jax.lax.stop_gradient(params["latent_stats"])
        mu, log_var = encode(s1, image)
        z = mu if cfg.latent == "mean" else dist.gaussian_sample(key, mu, log_var)
        return (z - st["mean"]) / st["std"]

    def decode_latents(params, z, key):
        """Images ``[B, H, W, C]`` on the levels in [0, 1] from scaled latents ``z [B, Z]``: a
        draw of the VAE's ``p(x | s z + m)`` (its mean on the levels if ``sample_mean``)."""
        if z.ndim != 2 or z.shape[1] != z_dim:
            raise ValueError(f"z must be [B, {z_dim}], got shape {z.shape}")
        st = params["latent_stats"]
        out = vae_net.apply(params["stage1"], z * st["std"] + st["mean"], None, method=VAENet.decode)
        img = lik.mean(out) if vcfg.sample_mean else lik.sample(key, out)
        return dist.to_levels(img, num_levels).astype(jnp.float32) / (num_levels - 1)

    def init(key, batch):
        x = batch["image"]
        check_image(x)
        b = x.shape[0]
        z = jnp.zeros((b, z_dim), jnp.float32)
        t = jnp.zeros((b,), jnp.int32)
        label = jnp.full((b,), null, jnp.int32) if conditional else None
        den = net.init({"params": key, "dropout": key}, z, t, label, train=False)
        return {"stage1": jax.tree.map(jnp.asarray, stage1.params), "denoiser": den,
                "latent_stats": {k: jnp.asarray(v) for k, v in stats.items()}}

    def loss(params, batch, key):
        x = batch["image"]
        check_image(x)
        k_enc, k_drop, k_loss = jax.random.split(key, 3)
        z0 = encode_latents(params, x, k_enc)  # [B, Z]
        label = None
        if conditional:
            label = labels_of(batch, x.shape[0], "loss batch")
            if cfg.cond_drop_prob > 0:
                drop = jax.random.bernoulli(k_drop, cfg.cond_drop_prob, label.shape)
                label = jnp.where(drop, null, label)
        k_net = jax.random.fold_in(k_loss, 1)
        model_fn = lambda z_t, t, lab: denoise(params, z_t, t, lab, train=True, key=k_net)
        terms = gd.simple_loss(model_fn, schedule, z0, k_loss, label, cfg.parameterization)
        return jnp.mean(terms["loss"]), {"mse": terms["mse"]}

    def guided_denoiser(params, cond, scale: float, num: int):
        """``model_fn(z_t, t, _)`` for the samplers: conditional, or classifier-free guided
        (Ho & Salimans 2022, Eq. 6) when ``scale > 0``; one batched call of ``2B``."""
        if not conditional:
            if scale:
                raise ValueError("guidance_scale > 0 needs a class-conditional model")
            return lambda z_t, t, _: denoise(params, z_t, t)
        label = labels_of(cond, num, "sample")
        if not scale:
            return lambda z_t, t, _: denoise(params, z_t, t, label)
        neg = cond.get("negative_label")
        neg = jnp.full((num,), null, jnp.int32) if neg is None else jnp.asarray(neg, jnp.int32)
        if neg.shape != (num,):
            raise ValueError(f"sample: cond['negative_label'] must be [{num}], got shape {neg.shape}")

        def fn(z_t, t, _):
            out = denoise(params, jnp.concatenate([z_t, z_t]), jnp.concatenate([t, t]),
                          jnp.concatenate([label, neg]))
            return out[:num] + scale * (out[:num] - out[num:])

        return fn

    def make_sampler(sampler: str = cfg.sampler, steps: int = cfg.sample_steps, eta: float = cfg.eta,
                     guidance_scale: float = cfg.guidance_scale, return_latents: bool = False,
                     use_scan: bool = True):
        """``sample(params, key, num, cond=None) -> [num, H, W, C]`` in [0, 1] (or the scaled
        latents ``[num, Z]`` with ``return_latents``); ``steps=0`` means ``T``;
        ``use_scan=False`` runs the same step from a Python loop (reference)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        s = steps or cfg.timesteps
        if s > cfg.timesteps:
            raise ValueError(f"steps S={s} must be <= T={cfg.timesteps}")

        def sample_fn(params, key, num, cond=None):
            k_diff, k_dec = jax.random.split(key)
            fn = guided_denoiser(params, cond, guidance_scale, num)
            common = dict(parameterization=cfg.parameterization, var_type="fixed_small",
                          clip_x0=False, use_scan=use_scan)
            if sampler == "ddpm":
                run = samplers.make_ddpm_sampler(fn, schedule, **common)
            else:
                run = samplers.make_ddim_sampler(fn, schedule, s, eta, **common)
            z = run(k_diff, (num, z_dim), None)  # [num, Z], scaled latents
            return z if return_latents else decode_latents(params, z, k_dec)

        return sample_fn

    return GenerativeModel(
        name=cfg.name, family="diffusion", init=init, loss=loss, sample=make_sampler(),
        phases=(Phase("denoiser", loss, name="denoiser"),), conditional=conditional,
        extras={"denoise": denoise, "encode_latents": encode_latents,
                "decode_latents": decode_latents, "guided_denoiser": guided_denoiser,
                "make_sampler": make_sampler, "schedule": lambda: schedule,
                "stage1": lambda: stage1, "latent_dim": lambda: z_dim})
