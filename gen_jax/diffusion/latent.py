"""Latent diffusion (Rombach et al. 2022): a Gaussian diffusion in the latent space of a frozen,
already trained VAE, sampled in latent space and then decoded.

Two stages (Rombach et al. 2022, Sec. 3):

1. **Stage one** (Sec. 3.1, "perceptual image compression"): a VAE ``q(z | x)``,
   ``p(x | z)`` trained on its own (here any ``vae`` config, e.g. ``vae_digits``). The
   experiment edge restores it (``config.stages.stage1``: its config and workdir) and hands
   it to :func:`make_latent_diffusion` as a :class:`gen_jax.model.Stage`; this module uses it
   only through the contract's :class:`gen_jax.model.Codec` (``posterior`` for the latents,
   ``decode`` with a key for a draw of ``p(x | z)``). Its params are never trained again:
   they are the frozen group ``'stage1'`` of :attr:`gen_jax.model.Training.frozen`.
2. **Stage two** (Sec. 3.2, Eq. 2): a DDPM on the latents ``z_0`` of the training images,

       L_LDM = E_{z_0 ~ q(z|x), eps ~ N(0, I), t} || eps - eps_theta(z_t, t) ||^2,
       z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps,

   i.e. ``L_simple`` of Ho et al. 2020 (Eq. 14) with the image replaced by the latent. The
   denoiser is a residual MLP on ``[B, Z]`` (:mod:`gen_jax.nn.mlp_denoiser`), or
   (``network='dit'``) a diffusion transformer (:mod:`gen_jax.nn.dit`, Peebles & Xie 2023,
   whose Sec. 3.1 runs it in exactly this latent-diffusion setting) over the latents viewed as
   an ``(h, w, c)`` grid (``latent_grid``, ``h w c = Z``; row-major reshape of ``[B, Z]``).

Details:

* ``latent='mean'`` trains on the posterior mean ``z_0 = mu(x)``; ``'sample'`` on a draw
  ``z_0 = mu(x) + sigma(x) eps'`` of ``q(z | x)`` (what Rombach et al. do for their
  KL-regularized autoencoders, Sec. 3.1 / App. G).
* ``scale_latents``: the diffusion runs on ``(z - m) / s`` with ``m, s`` the per-dimension
  mean and standard deviation of the posterior means ``mu(x)`` over the stage-one training
  split (for ``latent='sample'``: of the draws, ``s^2 = Var[mu] + E[sigma^2]``, see
  :func:`latent_stats`), computed once at build time and kept as the frozen group
  ``'latent_stats'`` (``params['latent_stats']`` in every model function). Rombach et al.
  (Sec. 4.3.2 and App. G) rescale by one scalar standard deviation estimated on a batch, so that the latents
  have about unit variance as the diffusion prior ``N(0, I)`` assumes; per-dimension
  statistics on the whole split are a deliberate variant here (a VAE's latent dimensions
  have very different scales, unused ones almost none).
* **No clipping**: the latent space is unbounded, so the samplers never clip the predicted
  ``z_0`` (the image DDPM clips ``x_0`` to ``[-1, 1]``).
* ``sample``: DDPM ancestral (Ho et al. 2020, Alg. 2) or DDIM (Song et al. 2021, Eq. 12) in
  latent space, one ``lax.scan`` (:mod:`gen_jax.diffusion.samplers`, which accept any
  ``[B, ...]`` shape), then ``z = s z_0 + m`` and
  ``codec.decode(params['stage1'], z, None, key)``: a draw ``x ~ p(x | z)`` of the VAE's
  likelihood (its mean on the levels when its config says ``sample_mean``: exactly what the
  VAE's own sampler returns for that ``z``), on the ``K`` levels in ``[0, 1]``.
* Class conditioning of the denoiser with classifier-free guidance (Ho & Salimans 2022,
  Alg. 1 and Eq. 6): ``eps~ = (1 + w) eps(z_t, c) - w eps(z_t, c_neg)``, the same
  conditioning and guidance code as the image DDPM
  (:class:`gen_jax.diffusion.model.DenoiserCondition`, :func:`gen_jax.diffusion.model.make_guided`);
  the stage-one VAE stays unconditional.
* No ``likelihood``: the latent diffusion gives a bound on ``log p(z)`` of the
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
import math
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, typed
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion.model import (DenoiserCondition, ProcessConfig, dit_network, make_guided, process_sampler,
                                     process_schedule)
from gen_jax.model import (DataSpec, Denoiser, GenerativeModel, Phase, Sampler, Stage, Training, check_image_batch,
                           require_labels)
from gen_jax.nn.dit import DiTConfig
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from gen_jax.nn.precision import compute_dtype, to_float32

STAGE1_CONFIG = "config.stages.stage1.config"


@dataclasses.dataclass(frozen=True)
class LatentDiffusionConfig(ProcessConfig):
    """``config.model`` of a latent diffusion model (stage one is ``config.stages.stage1``).

    Attributes (besides the process fields of :class:`gen_jax.diffusion.model.ProcessConfig`;
    ``conditioning`` is ``'none'`` or ``'label'``, the denoiser's class conditioning):
      name: model name.
      latent: ``'mean'`` (posterior mean) or ``'sample'`` (a draw of ``q(z | x)``).
      scale_latents: standardize the latents per dimension (module docstring).
      network: ``'mlp'`` (the residual MLP ``denoiser`` on ``[B, Z]``) or ``'dit'`` (the
        diffusion transformer ``dit`` on the latents reshaped to ``latent_grid``).
      denoiser: :class:`gen_jax.nn.mlp_denoiser.MLPDenoiserConfig` (``num_classes`` is set
        from the dataset when ``conditioning='label'``).
      latent_grid: ``(h, w, c)`` with ``h w c = Z``: the grid the DiT sees (``network='dit'``).
      dit: :class:`gen_jax.nn.dit.DiTConfig` (``network='dit'``; ``num_classes`` and
        ``out_channels = c`` are set by the factory; ``patch_size`` must divide ``h`` and ``w``).
    """

    name: str = "latent_diffusion"
    latent: Literal["mean", "sample"] = "mean"
    scale_latents: bool = True
    network: Literal["mlp", "dit"] = "mlp"
    denoiser: MLPDenoiserConfig = dataclasses.field(default_factory=MLPDenoiserConfig)
    latent_grid: tuple[int, ...] = ()
    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)

    def __post_init__(self):
        super().__post_init__()
        self.require(not self.latent_grid or (len(self.latent_grid) == 3 and min(self.latent_grid) >= 1),
                     "latent_grid", f"must be (h, w, c) of positive sizes, got {self.latent_grid}")


# ----------------------------------------------------------------------------------------
# Stage one: checks and latent statistics (host side, at build time).
# ----------------------------------------------------------------------------------------


def check_stage_one(stages: Optional[Mapping[str, Stage]], info: Any) -> Stage:
    """``stages['stage1']`` after checking it can serve as the latent space: a Gaussian codec
    (``codec.posterior``), unconditional, trained on this dataset.

    Raises:
      ConfigError naming ``config.stages.stage1`` (missing) or ``config.stages.stage1.config``.
    """
    if not stages or "stage1" not in stages:
        raise ConfigError("config.stages.stage1: latent diffusion needs a trained stage one "
                          "(config.stages = {'stage1': {'config': 'vae_digits', 'workdir': ...}})")
    stage = stages["stage1"]
    codec = getattr(stage.model, "codec", None)
    if codec is None or codec.posterior is None:
        raise ConfigError(f"{STAGE1_CONFIG}: stage one builds model {stage.model.name!r}, which has no "
                          f"Gaussian encoder (codec.posterior); latent diffusion needs a VAE stage one")
    cond = getattr(stage.model, "conditioning", None)
    if cond is not None:
        raise ConfigError(f"{STAGE1_CONFIG}: the stage-one model must be unconditional (it is "
                          f"conditioned on {list(cond.keys)})")
    name = getattr(info, "name", None)
    if name is not None and stage.config.dataset.name != name:
        raise ConfigError(f"{STAGE1_CONFIG}: stage one was configured on dataset "
                          f"{stage.config.dataset.name!r}, this model on {name!r}")
    return stage


def latent_stats(stage: Stage, num_levels: int, latent: str = "mean", batch_size: int = 512,
                 min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension location and scale ``[Z]`` of the training latents (float64, host).

    Location: the mean of the posterior means ``mu(x)`` (``stage.model.codec.posterior``)
    over the stage-one training split. Scale: their standard deviation for
    ``latent='mean'``; for ``latent='sample'`` the standard deviation of the draws
    ``z ~ q(z | x)`` (the aggregate posterior), ``sqrt(Var_x[mu(x)] + E_x[sigma^2(x)])`` by
    the law of total variance, so that dimensions the VAE leaves unused (``mu ~ 0``,
    ``sigma ~ 1``) are not blown up. Floored at ``min_std``. One compiled encoder call per
    chunk of ``batch_size`` (the last chunk padded by repetition).
    """
    means, variances = [], []
    for mu, log_var in encode_train_split(stage, stage.model.codec.posterior, num_levels, batch_size):
        means.append(mu)
        variances.append(np.exp(np.asarray(log_var, np.float64)))
    mu = np.concatenate(means, 0).astype(np.float64)
    var = mu.var(0)
    if latent == "sample":
        var = var + np.concatenate(variances, 0).mean(0)
    return mu.mean(0), np.maximum(np.sqrt(var), min_std)


def encode_train_split(stage: Stage, encode: Callable, num_levels: int, batch_size: int = 512):
    """Yields ``encode(stage.params, x)`` (host numpy pytrees of ``[n, ...]``) over the stage-one
    training split in chunks of ``batch_size`` images ``x`` in [0, 1], one compiled call per chunk
    (the last chunk padded by repetition, the padding dropped)."""
    from gen_jax.data.datasets import load_split

    ds = stage.config.dataset
    levels = load_split(ds.name, "train", ds.data_dir or None)["image"]
    fn = jax.jit(lambda p, x: encode(p, x))
    bs = min(batch_size, len(levels))
    for start in range(0, len(levels), bs):
        chunk = levels[start:start + bs]
        n = len(chunk)
        if n < bs:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, 0)], 0)
        out = fn(stage.params, chunk.astype(np.float32) / (num_levels - 1))
        yield jax.tree.map(lambda a: np.asarray(a)[:n], out)


def latent_channel_stats(stage: Stage, encode: Callable, num_levels: int, batch_size: int = 512,
                         min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean [D], std [D], zmax)`` of a latent grid ``encode(params, x) -> [B, h, w, D]`` over the
    stage-one training split: per channel, over examples and positions (std floored at
    ``min_std``), and ``zmax`` the largest ``|(z - mean) / std|`` (the range of the standardized
    latents). Float64 on the host, accumulated chunk by chunk."""
    n, s1, s2, zmin, zmaxv = 0, 0.0, 0.0, None, None
    for z in encode_train_split(stage, encode, num_levels, batch_size):
        z = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
        n, s1, s2 = n + len(z), s1 + z.sum(0), s2 + np.square(z).sum(0)
        zmin = z.min(0) if zmin is None else np.minimum(zmin, z.min(0))
        zmaxv = z.max(0) if zmaxv is None else np.maximum(zmaxv, z.max(0))
    mean = s1 / n
    std = np.maximum(np.sqrt(np.maximum(s2 / n - np.square(mean), 0.0)), min_std)
    zmax = float(np.max(np.maximum(np.abs(zmin - mean), np.abs(zmaxv - mean)) / std))
    return mean, std, zmax


# ----------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------


def _latent_network(cfg: LatentDiffusionConfig, z_dim: int, num_classes: int):
    """``(net, apply_net, latent_input)``: the denoiser network over ``[B, Z]`` latents,
    ``apply_net(params, z_t [B, Z], t [B], label, train, rngs) -> [B, Z]``, and the map of
    ``[B, Z]`` latents to the network's input layout (the identity for the MLP, the reshape to
    ``[B, h, w, c]`` for the DiT)."""
    if cfg.network == "mlp":
        net = MLPDenoiser(dataclasses.replace(cfg.denoiser, num_classes=num_classes), z_dim,
                          dtype=compute_dtype(cfg.compute_dtype), remat=cfg.remat)
        return net, net.apply, lambda z: z
    grid = tuple(cfg.latent_grid)
    if not grid or math.prod(grid) != z_dim:
        raise ConfigError(f"config.model.latent_grid: network='dit' views the Z={z_dim} latents as an (h, w, c) "
                          f"grid with h*w*c = {z_dim}, e.g. ({z_dim}, 1, 1); got {grid or '()'}")
    net = dit_network(cfg.dit, grid, num_classes, grid[-1], compute_dtype(cfg.compute_dtype), cfg.remat)
    to_grid = lambda z: z.reshape((z.shape[0],) + grid)

    def apply_dit(params, z_t, t, label, train=False, rngs=None):
        return net.apply(params, to_grid(z_t), t, label, train=train, rngs=rngs).reshape(z_t.shape)

    return net, apply_dit, to_grid


class LatentDiffusionParts(NamedTuple):
    """A latent diffusion model and its latent-space functions (:func:`build_latent_diffusion`).

    Attributes:
      model: the :class:`gen_jax.model.GenerativeModel`.
      stage: the stage one it was built on.
      latent_dim: ``Z``.
      encode_latents: ``(params, image [B, H, W, C], key=None) -> [B, Z]``: scaled latents
        ``(z - m) / s`` through the frozen encoder (``stop_gradient``): the posterior mean, or a
        draw with ``key`` (``latent='sample'``).
      decode_latents: ``(params, z [B, Z], key) -> [B, H, W, C]``: the stage-one decoder at
        ``s z + m`` (a draw of ``p(x | z)`` on the levels with a key; the decoder mean without).
    """

    model: GenerativeModel
    stage: Stage
    latent_dim: int
    encode_latents: Callable
    decode_latents: Callable


def build_latent_diffusion(cfg: Any, info: Any,
                           stages: Optional[Mapping[str, Stage]] = None) -> LatentDiffusionParts:
    """Builds latent diffusion (family ``'diffusion'``) over the stage one ``stages['stage1']``.

    Computes the latent statistics (:func:`latent_stats`) on the host, once, here.

    Returns:
      :class:`LatentDiffusionParts` whose ``model`` has

      * ``training``: ``init(key, batch) -> {'denoiser': MLP or DiT params}``; one phase
        ``Phase('denoiser', loss)``: ``loss(params, batch, key) -> (mean L_simple, {'mse': [B]})``
        on the scaled latents of the frozen encoder; ``frozen = {'stage1': stage.params,
        'latent_stats': {'mean': [Z], 'std': [Z]}}``, merged into the params every function
        receives (:func:`gen_jax.model.full_params`);
      * ``sampler.sample(params, key, num, cond=None) -> [num, H, W, C]`` on the levels in [0, 1];
      * no ``likelihood`` (module docstring);
      * ``denoiser``: ``denoise(params, z_t, t, label=None)``, ``guided(params, cond, scale,
        num)``, ``make_sampler(sampler, steps, eta, guidance_scale, return_latents, use_scan)``
        and the schedule;
      * ``conditioning`` for ``conditioning='label'``.

    Raises:
      ConfigError naming the field (see :class:`LatentDiffusionConfig`, :func:`check_stage_one`).
    """
    cfg = typed(LatentDiffusionConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    num_levels = int(info.num_levels)
    condition = DenoiserCondition()
    if cfg.conditioning == "label":
        condition = DenoiserCondition("label", num_classes=require_labels(getattr(info, "num_classes", 0)))
    stage = check_stage_one(stages, info)
    codec = stage.model.codec
    probe = jax.ShapeDtypeStruct((1,) + image_shape, jnp.float32)
    z_dim = int(jax.eval_shape(lambda p, x: codec.posterior(p, x)[0], stage.params, probe).shape[-1])
    loc, scale = latent_stats(stage, num_levels, cfg.latent)
    if not cfg.scale_latents:
        loc, scale = np.zeros_like(loc), np.ones_like(scale)
    stats = {"mean": loc.astype(np.float32), "std": scale.astype(np.float32)}

    net, apply_net, latent_input = _latent_network(cfg, z_dim, condition.num_classes)
    schedule = process_schedule(cfg)

    def check_image(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)

    def denoise(params, z_t, t, label=None, *, train=False, key=None):
        """``[B, Z]`` denoiser output at scaled latents ``z_t [B, Z]``, times ``t [B]``."""
        rngs = {"dropout": key} if train else None
        return to_float32(apply_net(params["denoiser"], z_t, t, label, train=train, rngs=rngs))  # loss in float32

    def encode_latents(params, image, key=None):
        check_image(image)
        s1 = jax.lax.stop_gradient(params["stage1"])
        st = jax.lax.stop_gradient(params["latent_stats"])
        mu, log_var = codec.posterior(s1, image)
        z = mu if cfg.latent == "mean" else dist.gaussian_sample(key, mu, log_var)
        return (z - st["mean"]) / st["std"]

    def decode_latents(params, z, key=None):
        if z.ndim != 2 or z.shape[1] != z_dim:
            raise ValueError(f"z must be [B, {z_dim}], got shape {z.shape}")
        st = params["latent_stats"]
        return codec.decode(params["stage1"], z * st["std"] + st["mean"], None, key)

    def init(key, batch):
        x = batch["image"]
        check_image(x)
        b = x.shape[0]
        z = latent_input(jnp.zeros((b, z_dim), jnp.float32))
        t = jnp.zeros((b,), jnp.int32)
        label = None if condition.kind == "none" else condition.null(b)
        return {"denoiser": net.init({"params": key, "dropout": key}, z, t, label, train=False)}

    def loss(params, batch, key):
        x = batch["image"]
        check_image(x)
        k_enc, k_drop, k_loss = jax.random.split(key, 3)
        z0 = encode_latents(params, x, k_enc)  # [B, Z]
        label = condition.drop(k_drop, condition.of(batch, x.shape[0], "loss batch"), cfg.cond_drop_prob)
        k_net = jax.random.fold_in(k_loss, 1)
        model_fn = lambda z_t, t, lab: denoise(params, z_t, t, lab, train=True, key=k_net)
        terms = gd.simple_loss(model_fn, schedule, z0, k_loss, label, cfg.parameterization)
        return jnp.mean(terms["loss"]), {"mse": terms["mse"]}

    guided = make_guided(denoise, condition)

    def make_sampler(sampler: str = cfg.sampler, steps: int = cfg.sample_steps, eta: float = cfg.eta,
                     guidance_scale: float = cfg.guidance_scale, return_latents: bool = False,
                     use_scan: bool = True):
        """``sample(params, key, num, cond=None) -> [num, H, W, C]`` in [0, 1] (or the scaled
        latents ``[num, Z]`` with ``return_latents``); ``steps=0`` means ``T``;
        ``use_scan=False`` runs the same step from a Python loop (reference)."""
        def model_fn(z_t, t, ctx):
            params, cond = ctx
            return guided(params, cond, guidance_scale, z_t.shape[0])(z_t, t, None)

        run = process_sampler(model_fn, schedule, sampler, steps, eta, parameterization=cfg.parameterization,
                              var_type="fixed_small", clip_x0=False, use_scan=use_scan)

        def sample_fn(params, key, num, cond=None):
            k_diff, k_dec = jax.random.split(key)
            guided(params, cond, guidance_scale, num)  # checks cond against num
            z = run(k_diff, (num, z_dim), cond, params=params)  # [num, Z], scaled latents
            return z if return_latents else decode_latents(params, z, k_dec)

        return sample_fn

    training = Training(init=init, phases=(Phase("denoiser", loss, name="denoiser"),),
                        frozen={"stage1": stage.params, "latent_stats": stats})
    model = GenerativeModel(
        name=cfg.name, family="diffusion", training=training, sampler=Sampler(make_sampler(), "image"),
        conditioning=condition.capability(cfg.cond_drop_prob > 0),
        denoiser=Denoiser(denoise, schedule, guided=guided, make_sampler=make_sampler,
                          parameterization=cfg.parameterization),
        data=DataSpec(image_shape, num_levels, condition.num_classes))
    return LatentDiffusionParts(model, stage, z_dim, encode_latents, decode_latents)


def make_latent_diffusion(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """The registry's factory: :func:`build_latent_diffusion` ``(cfg, info, stages).model``."""
    return build_latent_diffusion(cfg, info, stages).model
