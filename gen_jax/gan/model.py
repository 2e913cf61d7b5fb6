"""GANs as two-player models of the gen_jax contract: ``make_gan(config.model, info)``.

A generator ``G(z, y) -> x`` (``z ~ N(0, I)``) and a discriminator or critic ``D(x, y) -> logits``
(``config.model.arch``: ``'dcgan'``, :class:`gen_jax.gan.networks.DCGANGenerator` /
:class:`~gen_jax.gan.networks.DCGANDiscriminator` on images; ``'mlp'``,
:class:`~gen_jax.gan.networks.MLPGenerator` / :class:`~gen_jax.gan.networks.MLPDiscriminator`
on datasets of points, see "Points" below) are the param groups ``'gen'`` and ``'disc'``, each with its own optimizer section
(``config.optim.gen`` / ``config.optim.disc``). One train step is (Goodfellow et al. 2014,
Alg. 1):

* ``d_steps`` discriminator updates (``Phase('disc', repeats=d_steps)``), each on a fresh batch:
  ``L_D = d_loss(D(x), D(G(z)))`` ``+ gp_weight * GP`` (WGAN-GP, Gulrajani et al. 2017, Eq. 3)
  ``+ r1_gamma / 2 * R1`` (Mescheder et al. 2018, Eq. 9) ``+ aux_weight * CE`` (AC-GAN,
  Odena et al. 2017, Eq. 2-3: the class of real and fake images);
* one generator update (``Phase('gen')``): ``L_G = g_loss(D(G(z)))`` (``+ aux_weight * CE``
  of the fake images' classes).

The losses are :mod:`gen_jax.gan.objectives` (``config.model.loss``: ``'nonsaturating'``,
``'minimax'``, ``'hinge'``, ``'least_squares'``, ``'wasserstein'``). Real images are the data's
levels ``l / (K - 1)`` moved by uniform noise of one level's width (so that the discriminator
cannot tell real from fake by the quantization alone), and both players see images as
``2 x - 1``.

Non-trained state (the generator's batch statistics, the discriminator's batch statistics or
spectral-norm vectors) is the model state ``{'gen': {...}, 'disc': {...}}`` of ``stateful``
phases: the generator's statistics advance in its own phase, the discriminator's in its
phase (in the generator phase the discriminator runs in training mode but its state is not
kept). The sampler runs ``G`` in evaluation mode on the running statistics, which it reads
from ``params['model_state']`` (:data:`gen_jax.model.MODEL_STATE`; :func:`gen_jax.train.loop.eval_params`
puts them there), with the generator's EMA weights where the run keeps them
(``ema_groups=('gen',)``).

PacGAN (Lin et al. 2018, Sec. 3, "packing"): with ``pack = m > 1`` the discriminator judges
``m`` samples at once. A batch of ``B`` examples becomes ``B / m`` packs of ``m`` consecutive
(independent) examples, concatenated along the last axis (channels of images, coordinates of
points): ``D(x_1, ..., x_m)`` is trained to tell packs of real samples from packs of
generated ones with the same losses (``L_D = d_loss(D(real packs), D(fake packs))``, ``L_G =
g_loss(D(fake packs))``), which penalizes a generator whose samples lack diversity (mode
collapse) far more than a single-sample discriminator can (Lin et al. 2018, Sec. 4). Penalties
(WGAN-GP, R1) act on the packed inputs. ``B`` must be divisible by ``m`` (refused otherwise);
label-conditional discriminators are not packed (refused).

Points (``arch='mlp'``, a dataset with ``info.value_range = (lo, hi)`` such as ``ring2d``,
``grid2d``; :mod:`gen_jax.data.points2d`): ``batch['image']`` ``[B, 1, 1, D]`` holds
``level / (K - 1)``; the model maps it to data coordinates ``lo + (hi - lo) u`` (after the
same one-level uniform noise), so both networks see points ``[B, D]`` in data coordinates, and
the sampler (kind ``'points'``) returns float32 ``[num, D]`` in data coordinates. These GANs
are unconditional and have no codec.

Shapes: ``batch['image']`` ``[B, H, W, C]`` in [0, 1]; ``batch['label']`` int ``[B]`` for a
conditional GAN; ``sample(params, key, num, cond=None) -> [num, H, W, C]`` in [0, 1]. The
codec is the generator (``decode(params, z, cond=None) -> [N, H, W, C]``, evaluation mode) and
its inversion (``encode(params, x, cond=None) -> z [N, Z]``: Adam on ``|G(z) - x|^2``),
so the latent tools (:mod:`gen_jax.gan.latent_tools`: interpolation, edits along directions)
and latent-space models compose with a GAN through the contract.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import optax

from gen_jax.checks import DataSpec
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.gan import diffaugment, latent_tools
from gen_jax.gan import objectives as obj
from gen_jax.data.points2d import from_unit
from gen_jax.gan.networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator
from gen_jax.gan.sngan_networks import SNGANDiscriminator, SNGANGenerator
from gen_jax.model import (MODEL_STATE, Codec, GenerativeModel, Phase, Sampler, Training, check_image_batch,
                           condition_labels, label_conditioning, require_labels)
from gen_jax.nn.precision import check_compute_dtype, compute_dtype, to_float32

GEN, DISC = "gen", "disc"


@dataclasses.dataclass(frozen=True)
class GANConfig(Checked):
    """``config.model`` of a GAN.

    Attributes:
      name: model name (tables, file names).
      arch: ``'dcgan'`` (image networks) or ``'mlp'`` (MLPs on a dataset of points: ``[B, 1,
        1, D]`` levels with ``info.value_range``; ReLU generator, LeakyReLU discriminator).
      z_dim: latent width ``Z``.
      g_base, d_base: channels of the generator's last / discriminator's first conv (``'dcgan'``).
      g_hidden, d_hidden: hidden widths of the MLP generator / discriminator (``'mlp'``;
        PacGAN's 2-D experiments use 4 hidden layers of 400 units, Lin et al. 2018, App. D).
      pack: PacGAN's degree of packing ``m`` (Lin et al. 2018, Sec. 3): the discriminator sees
        ``m`` samples concatenated; 1 = the plain discriminator. The batch size must be
        divisible by it.
      loss: the adversarial objective (:data:`gen_jax.gan.objectives.LOSSES`).
      d_steps: discriminator updates per generator update, each on a fresh batch.
      gp_weight: WGAN-GP ``lambda`` (10 in Gulrajani et al. 2017); 0 = no penalty.
      r1_gamma: R1 ``gamma`` (Mescheder et al. 2018); 0 = no penalty.
      d_norm: ``'none' | 'batch' | 'layer'`` normalization of the discriminator (a gradient
        penalty is refused with ``'batch'``).
      spectral: spectral normalization of the discriminator (Miyato et al. 2018).
      conditioning: ``'none' | 'label'`` (conditional batch norm in G, Miyato & Koyama 2018).
      projection: a label-conditional D uses the projection term (Miyato & Koyama 2018, Eq. 3).
      aux_weight: AC-GAN auxiliary classifier weight (Odena et al. 2017); 0 = none.
      invert_steps: Adam steps of the codec's ``encode`` (GAN inversion).
      compute_dtype: ``'float32'`` or ``'bfloat16'``: both players' hidden layers compute in
        that dtype; params, optimizer state, norm statistics, spectral norm's power iteration,
        the output layers, the losses and penalties stay float32 (:mod:`gen_jax.nn.precision`).
      diffaugment: DiffAugment policy (Zhao et al. 2020, Sec. 3; :mod:`gen_jax.gan.diffaugment`),
        e.g. ``'color,translation,cutout'``: every image the discriminator sees, real or
        generated, in both players' losses, is augmented by the same differentiable random
        transformations (a fresh draw per call); ``''`` = none. For small datasets.
    """

    name: str = "gan"
    arch: Literal["dcgan", "mlp", "sngan"] = "dcgan"
    z_dim: int = 64
    g_base: int = 64
    d_base: int = 64
    g_hidden: tuple[int, ...] = (400, 400, 400, 400)
    d_hidden: tuple[int, ...] = (400, 400, 400, 400)
    pack: int = 1
    loss: Literal["nonsaturating", "minimax", "hinge", "least_squares", "wasserstein"] = "nonsaturating"
    d_steps: int = 1
    gp_weight: float = 0.0
    r1_gamma: float = 0.0
    d_norm: Literal["none", "batch", "layer"] = "none"
    spectral: bool = False
    conditioning: Literal["none", "label"] = "none"
    projection: bool = True
    aux_weight: float = 0.0
    invert_steps: int = 1000
    diffaugment: str = ""
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.positive("z_dim", "g_base", "d_base", "d_steps", "invert_steps", "pack")
        self.require(len(self.g_hidden) > 0 and min(self.g_hidden) > 0, "g_hidden",
                     f"hidden widths must be a non-empty tuple of positive ints, got {self.g_hidden}")
        self.require(len(self.d_hidden) > 0 and min(self.d_hidden) > 0, "d_hidden",
                     f"hidden widths must be a non-empty tuple of positive ints, got {self.d_hidden}")
        self.require(self.pack == 1 or self.conditioning == "none", "pack",
                     "a packed discriminator (pack > 1) judges several samples of different labels at once; "
                     "use pack=1 with conditioning='label'")
        self.require(self.arch != "mlp" or self.conditioning == "none", "arch",
                     "the MLP GAN (arch='mlp') is unconditional; use conditioning='none'")
        try:
            diffaugment.parse_policy(self.diffaugment)
        except ValueError as e:
            self.require(False, "diffaugment", str(e).split(": ", 1)[1])
        self.require(not self.diffaugment or self.arch == "dcgan", "diffaugment",
                     "DiffAugment transforms images; the MLP GAN's points have none of its operations")
        self.require(self.arch != "sngan" or (self.conditioning == "none" and self.d_norm == "none"), "arch",
                     "the SN-GAN standard CNN (arch='sngan') is unconditional and its discriminator has no "
                     "normalization layers but spectral norm; use conditioning='none', d_norm='none'")
        self.require(self.arch == "dcgan" or self.d_norm == "none", "d_norm",
                     "the MLP discriminator (arch='mlp') has no normalization layers; use d_norm='none'")
        self.nonnegative("gp_weight", "r1_gamma", "aux_weight")
        penalized = self.gp_weight > 0 or self.r1_gamma > 0
        self.require(not (penalized and self.d_norm == "batch"), "d_norm",
                     "a gradient penalty (gp_weight / r1_gamma > 0) needs a critic without batch norm: the "
                     "penalty is per example, batch norm mixes the examples; use d_norm='none' or 'layer'")
        self.require(self.aux_weight == 0 or self.conditioning == "label", "aux_weight",
                     "the auxiliary classifier needs conditioning='label'")


def pack_samples(x: jax.Array, m: int) -> jax.Array:
    """PacGAN packing (Lin et al. 2018, Sec. 3): ``[B, ..., C] -> [B / m, ..., m C]``, pack ``j``
    the ``m`` consecutive examples ``x[j m], ..., x[j m + m - 1]`` concatenated along the last
    axis (image channels, point coordinates). ``ValueError`` unless ``m`` divides ``B``."""
    b = x.shape[0]
    if b % m:
        raise ValueError(f"config.model.pack={m}: the batch of {b} examples (train.batch_size, or the "
                         f"batch given) is not divisible by the pack size {m}; use a batch size that is a "
                         f"multiple of {m}")
    if m == 1:
        return x
    rest = x.shape[1:]
    packs = jnp.moveaxis(x.reshape((b // m, m) + rest), 1, -2)  # [B/m, ..., m, C]
    return packs.reshape((b // m,) + rest[:-1] + (m * rest[-1],))


class _Players:
    """The DCGAN networks, their mutable collections and calls on ``[0, 1]`` images (both
    players see ``2 x - 1``); discriminator inputs are packed images ``[B/m, H, W, m C]``."""

    def __init__(self, cfg: GANConfig, image_shape, num_classes: int):
        self.cfg = cfg
        self.num_classes = num_classes
        dt = compute_dtype(cfg.compute_dtype)
        if cfg.arch == "sngan":  # Miyato et al. 2018, Table 3: widths 512 at g_base = d_base = 64
            self.g = SNGANGenerator(image_shape=image_shape, width=cfg.g_base / 64, dtype=dt)
            self.d = SNGANDiscriminator(width=cfg.d_base / 64, spectral=cfg.spectral, dtype=dt)
        else:
            self.g = DCGANGenerator(image_shape=image_shape, base=cfg.g_base, num_classes=num_classes, dtype=dt)
            self.d = DCGANDiscriminator(base=cfg.d_base, num_classes=num_classes, norm=cfg.d_norm,
                                        spectral=cfg.spectral, projection=cfg.projection and num_classes > 0,
                                        aux_classifier=cfg.aux_weight > 0, dtype=dt)
        self.d_mutable = [c for c, on in (("batch_stats", cfg.d_norm == "batch"), ("spectral", cfg.spectral)) if on]
        self.d_label = self.d.uses_projection

    def real(self, x01, key, levels: int):
        """Real images moved by uniform noise of one level's width, in ``[0, 1]``."""
        u = jax.random.uniform(key, x01.shape, x01.dtype, -0.5, 0.5)
        return jnp.clip(x01 + u / (levels - 1), 0.0, 1.0)

    def d_input(self, x01):
        """What ``d.init`` / ``d.apply`` take for images in ``[0, 1]``: ``2 x - 1``."""
        return 2.0 * x01 - 1.0

    def generate(self, p, state, z, label, train: bool):
        """``(images [N, H, W, C] in [0, 1], new generator state)``."""
        variables = {"params": p, **state}
        if train:
            x, new = self.g.apply(variables, z, label, train=True, mutable=["batch_stats"])
            return to_float32(x), new
        return to_float32(self.g.apply(variables, z, label, train=False)), state

    def discriminate(self, p, state, x, label, train: bool):
        """``(logits [B'], class logits [B', C] or None, new discriminator state)`` for packed
        images ``x [B', H, W, m C]`` in ``[0, 1]``."""
        variables = {"params": p, **state}
        lab = label if self.d_label else None
        if train and self.d_mutable:
            out, new = self.d.apply(variables, self.d_input(x), lab, train=True, mutable=self.d_mutable)
        else:
            out, new = self.d.apply(variables, self.d_input(x), lab, train=train), state
        logits, cls = to_float32(out if self.d.aux_classifier else (out, None))  # the losses read float32
        return logits, cls, {**state, **new}

    def init_d(self, key, x, label):
        return self.d.init(key, self.d_input(x), label if self.d_label else None, train=False)


class _PointPlayers:
    """The MLP networks on points ``[B, D]`` in data coordinates (``info.value_range``);
    discriminator inputs are packed points ``[B/m, m D]``."""

    def __init__(self, cfg: GANConfig, image_shape, value_range):
        if value_range is None or tuple(image_shape[:2]) != (1, 1):
            raise ConfigError(f"config.model.arch='mlp' models datasets of points ([1, 1, D] levels with "
                              f"DatasetInfo.value_range, e.g. ring2d, grid2d); this dataset has image_shape "
                              f"{tuple(image_shape)} and value_range {value_range}; use arch='dcgan'")
        self.cfg = cfg
        self.value_range = tuple(float(v) for v in value_range)
        self.dim = int(image_shape[-1])
        dt = compute_dtype(cfg.compute_dtype)
        self.g = MLPGenerator(hidden=tuple(cfg.g_hidden), out_dim=self.dim, dtype=dt)
        self.d = MLPDiscriminator(hidden=tuple(cfg.d_hidden), spectral=cfg.spectral, dtype=dt)
        self.d_mutable = ["spectral"] if cfg.spectral else []
        self.d_label = False

    def real(self, x01, key, levels: int):
        """``[B, 1, 1, D]`` levels ``/ (K - 1)`` -> points ``[B, D]`` in data coordinates, moved by
        uniform noise of one level's width."""
        u = jax.random.uniform(key, x01.shape, x01.dtype, -0.5, 0.5)
        x = jnp.clip(x01 + u / (levels - 1), 0.0, 1.0)
        return from_unit(x, self.value_range).reshape(x.shape[0], self.dim)

    def generate(self, p, state, z, label, train: bool):
        """``(points [N, D] in data coordinates, state)`` (no generator state)."""
        del label, train
        return to_float32(self.g.apply({"params": p}, z)), state

    def discriminate(self, p, state, x, label, train: bool):
        """``(logits [B'], None, new state)`` for packed points ``x [B', m D]``."""
        del label
        variables = {"params": p, **state}
        if train and self.d_mutable:
            out, new = self.d.apply(variables, x, train=True, mutable=self.d_mutable)
            return to_float32(out), None, {**state, **new}
        return to_float32(self.d.apply(variables, x, train=train)), None, state

    def init_d(self, key, x, label):
        del label
        return self.d.init(key, x, train=False)


def _aux_ce(cls_logits, label):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(cls_logits, label))


def make_gan(cfg: Any, info: Any) -> GenerativeModel:
    """The GAN of ``config.model`` (:class:`GANConfig`) on a dataset with ``info``
    (``image_shape``, ``num_levels``, ``num_classes``; ``value_range`` for ``arch='mlp'``): a
    :class:`GenerativeModel` of family ``'gan'`` with two-player training and a sampler (no
    likelihood); image GANs also have a codec (the generator and its inversion)."""
    cfg = typed(GANConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    levels = int(info.num_levels)
    num_classes = require_labels(info.num_classes) if cfg.conditioning == "label" else 0
    points = cfg.arch == "mlp"
    try:
        players = (_PointPlayers(cfg, image_shape, getattr(info, "value_range", None)) if points
                   else _Players(cfg, image_shape, num_classes))
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"config.model: {e} (dataset image_shape {image_shape})") from None
    d_loss_fn, g_loss_fn = obj.get_losses(cfg.loss)
    pack = lambda x: pack_samples(x, cfg.pack)
    augment = lambda x, k: diffaugment.diff_augment(x, k, cfg.diffaugment)

    def labels_of(batch, b, where):
        return condition_labels(batch, b, where) if num_classes else None

    def draw_z(key, n):
        return jax.random.normal(key, (n, cfg.z_dim), jnp.float32)

    def real_samples(batch, key):
        x = batch["image"]
        check_image_batch(x, image_shape)
        return players.real(x, key, levels)

    def variables(key, batch):
        """``{GEN: G's variables, DISC: D's variables}`` (all collections) for ``batch``."""
        kg, kd = jax.random.split(key)
        real = real_samples(batch, kd)
        label = labels_of(batch, real.shape[0], "init batch")
        return {GEN: players.g.init(kg, draw_z(kg, real.shape[0]), label, train=False),
                DISC: players.init_d(kd, pack(real), label)}

    def init(key, batch):
        return {k: v["params"] for k, v in variables(key, batch).items()}

    def init_model_state(key, batch):
        return {k: {c: cv for c, cv in v.items() if c not in ("params", "intermediates")}
                for k, v in variables(key, batch).items()}

    def d_loss(params, state, batch, key):
        kx, kz, kp = jax.random.split(key, 3)
        real = real_samples(batch, kx)
        b = real.shape[0]
        label = labels_of(batch, b, "loss batch")
        fake, _ = players.generate(params[GEN], state[GEN], draw_z(kz, b), label, train=True)
        fake = jax.lax.stop_gradient(fake)
        if cfg.diffaugment:  # the same transformations for real and fake (Zhao et al. 2020, Eq. 2)
            kp, kr, kf = jax.random.split(kp, 3)
            real, fake = augment(real, kr), augment(fake, kf)
        real, fake = pack(real), pack(fake)
        r, r_cls, ds = players.discriminate(params[DISC], state[DISC], real, label, True)
        f, f_cls, ds = players.discriminate(params[DISC], ds, fake, label, True)
        adv = d_loss_fn(r, f)
        loss, m = adv, {"d_adv": adv, "d_real": jnp.mean(r), "d_fake": jnp.mean(f)}
        critic = lambda x: players.discriminate(params[DISC], ds, x, label, False)[0]
        if cfg.gp_weight > 0:
            gp, norms = obj.gradient_penalty(critic, real, fake, kp)
            loss = loss + cfg.gp_weight * gp
            m.update(gp=gp, grad_norm_dev=jnp.mean(jnp.abs(norms - 1.0)))
        if cfg.r1_gamma > 0:
            r1, _ = obj.r1_penalty(critic, real)
            loss = loss + 0.5 * cfg.r1_gamma * r1
            m["r1"] = r1
        if r_cls is not None:
            aux = 0.5 * (_aux_ce(r_cls, label) + _aux_ce(f_cls, label))
            loss = loss + cfg.aux_weight * aux
            m["d_aux"] = aux
        return loss, (m, {**state, DISC: ds})

    def g_loss(params, state, batch, key):
        b = batch["image"].shape[0]
        label = labels_of(batch, b, "loss batch")
        if cfg.diffaugment:
            key, ka = jax.random.split(key)
        fake, gs = players.generate(params[GEN], state[GEN], draw_z(key, b), label, train=True)
        if cfg.diffaugment:  # G's gradient flows through the augmentation (Zhao et al. 2020, Eq. 3)
            fake = augment(fake, ka)
        f, f_cls, _ = players.discriminate(params[DISC], state[DISC], pack(fake), label, True)
        adv = g_loss_fn(f)
        loss, m = adv, {"g_adv": adv}
        if f_cls is not None:
            aux = _aux_ce(f_cls, label)
            loss = loss + cfg.aux_weight * aux
            m["g_aux"] = aux
        return loss, (m, {**state, GEN: gs})

    def decode(params, z, cond=None, key=None):
        """``G(z, y)`` in evaluation mode: ``z [N, Z] -> [N, H, W, C]`` in [0, 1] (``key`` unused:
        the generator is deterministic given ``z``)."""
        if z.ndim != 2 or z.shape[1] != cfg.z_dim:
            raise ValueError(f"decode: z must be [N, Z={cfg.z_dim}], got shape {z.shape}")
        label = condition_labels(cond, z.shape[0], "decode") if num_classes else None
        state = params.get(MODEL_STATE, {}).get(GEN) if isinstance(params, dict) else None
        if state is None:
            raise ValueError("sample/decode: params has no params['model_state']['gen'] (the generator's batch "
                             "statistics); evaluate with gen_jax.train.loop.eval_params(state, model)")
        x, _ = players.generate(params[GEN], state, z, label, train=False)
        return x.astype(jnp.float32)

    def encode(params, x, cond=None):
        """GAN inversion (Zhu et al. 2016, Sec. 3.1): ``argmin_z |G(z, y) - x|^2`` by Adam
        (:func:`gen_jax.gan.latent_tools.invert`), ``[N, H, W, C] -> [N, Z]``, from one fixed
        draw of ``N(0, I)`` (``PRNGKey(0)``; deterministic: ``encode`` takes no key). Not from
        ``z = 0``: the gradient of a DCGAN generator vanishes there (bias-free first layer)."""
        check_image_batch(x, image_shape, "encode: x")
        z0 = draw_z(jax.random.PRNGKey(0), x.shape[0])
        return latent_tools.invert(lambda z: decode(params, z, cond), x, z0, steps=cfg.invert_steps)[0]

    def sample(params, key, num, cond=None):
        return decode(params, draw_z(key, num), cond)

    def sample_points(params, key, num, cond=None):
        """``num`` points float32 ``[num, D]`` in data coordinates: ``G(z)``, ``z ~ N(0, I)``."""
        del cond  # unconditional (a cond given is refused by the input checks)
        return players.generate(params[GEN], {}, draw_z(key, num), None, train=False)[0].astype(jnp.float32)

    phases = (Phase(DISC, loss=d_loss, repeats=cfg.d_steps, name="d", stateful=True, optim=DISC),
              Phase(GEN, loss=g_loss, name="g", stateful=True, optim=GEN))
    return GenerativeModel(
        name=cfg.name, family="gan",
        training=Training(init=init, phases=phases, ema_groups=(GEN,), init_model_state=init_model_state),
        sampler=Sampler(sample_points, "points") if points else Sampler(sample, "image"),
        codec=None if points else Codec(encode, decode),
        conditioning=label_conditioning(num_classes) if num_classes else None,
        data=DataSpec(image_shape, levels, num_classes))
