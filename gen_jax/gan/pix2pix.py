"""Pix2Pix (Isola et al. 2017): a conditional GAN that maps a source image to its target,
``make_pix2pix(config.model, info)``.

The source is a pure function of the target, the paired task ``config.model.task`` of
:mod:`gen_jax.data.image_pairs` (``'outline'``: the coloured outline of a shape -> the filled
shape), so the model reads only ``batch['image']`` (the target ``y``) and derives ``x =
task.source(y)`` itself. The players are :class:`gen_jax.gan.image_networks.UNetGenerator`
``G(x, z)`` (the noise ``z`` is its dropout) and the conditional
:class:`~gen_jax.gan.image_networks.PatchDiscriminator` ``D(x, y) -> [B, h, w]`` patch logits,
the param groups ``'gen'`` / ``'disc'`` with their own optimizer sections. The objective
(Isola et al. 2017, Eq. 1-4):

    L_cGAN(G, D) = E_{x,y}[log D(x, y)] + E_{x,z}[log(1 - D(x, G(x, z)))]          (Eq. 1)
    L_L1(G)      = E_{x,y,z}[ ||y - G(x, z)||_1 ]                                  (Eq. 3)
    G*           = arg min_G max_D  L_cGAN(G, D) + lambda L_L1(G),  lambda = 100   (Eq. 4)

trained by alternating steps (Sec. 3.3): ``Phase('disc')`` minimizes ``adv_weight / 2 *``
the softplus form of ``-L_cGAN`` averaged over all patches (the paper halves D's objective),
then ``Phase('gen')`` minimizes ``adv_weight * E[softplus(-D(x, G(x, z)))]`` (the
non-saturating form the paper uses in place of ``log(1 - D)``) ``+ l1_weight * L_L1``, with
the L1 averaged over pixels and channels of images scaled to ``[-1, 1]`` (as the authors' code
does, so that ``lambda = 100`` means what it means there: ``L_L1 = 2 mean |y - G(x, z)|`` for
our ``[0, 1]`` images; the logged ``l1`` is ``mean |y - G(x, z)|`` on ``[0, 1]``).
``adv_weight = 0`` is the L1-only U-Net baseline of Isola et al. Sec. 4.2 (Table 1's "L1"):
the discriminator and its phase are then dropped.

Non-trained state (batch statistics of ``norm='batch'`` players) is the model state
``{'gen': ..., 'disc': ...}`` of ``stateful`` phases, as in :mod:`gen_jax.gan.model`; the
sampler runs ``G`` in evaluation mode on ``params['model_state']``, with the generator's EMA
weights where the run keeps them (``ema_groups=('gen',)``), and with dropout on (the paper
keeps dropout at test time as the only noise; ``key`` drives it).

Shapes: ``batch['image']`` ``[B, H, W, C]`` in [0, 1]; the conditioning is ``('source',)``:
``sample(params, key, num, cond={'source': [num, H, W, C_s]}) -> [num, H, W, C]`` in [0, 1];
its ``draw(num, arrays)`` gives the sources of the task's rows of a split (the test split in
evaluation), and :func:`gen_jax.data.image_pairs.target_factors` the factors those outputs
should show.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping, Optional

import jax
import jax.numpy as jnp

from gen_jax.checks import DataSpec
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.data import image_pairs
from gen_jax.gan import objectives as obj
from gen_jax.gan.image_networks import PatchDiscriminator, UNetGenerator, patch_logits_shape
from gen_jax.model import MODEL_STATE, Conditioning, GenerativeModel, Phase, Sampler, Training, check_image_batch
from gen_jax.nn.precision import check_compute_dtype, compute_dtype, to_float32

GEN, DISC = "gen", "disc"
SOURCE = "source"


@dataclasses.dataclass(frozen=True)
class Pix2PixConfig(Checked):
    """``config.model`` of Pix2Pix.

    Attributes:
      name: model name (tables, file names).
      task: the paired task of :data:`gen_jax.data.image_pairs.TASKS` (source = f(target)).
      g_base, g_depth: U-Net width (first layer's channels) and number of stride-2 levels.
      g_norm, d_norm: ``'instance' | 'batch' | 'none'`` of generator / discriminator.
      dropout: the generator's dropout (its noise), on ``dropout_layers`` decoder layers.
      upsample: ``'transpose'`` (the paper's) or ``'resize'``.
      d_base, d_layers: PatchGAN width and stride-2 layers (1: 16x16 patches, 3: 70x70).
      adv_weight: weight of the adversarial term (1 = Pix2Pix, 0 = the L1-only U-Net).
      l1_weight: ``lambda`` of Eq. 4 (100 in the paper).
      compute_dtype: ``'float32'`` or ``'bfloat16'``: both networks' hidden convs in that dtype;
        params, norm statistics, the output layers and the losses float32
        (:mod:`gen_jax.nn.precision`).
    """

    name: str = "pix2pix"
    task: str = "outline"
    g_base: int = 32
    g_depth: int = 5
    g_norm: Literal["instance", "batch", "none"] = "instance"
    dropout: float = 0.5
    dropout_layers: int = 2
    upsample: Literal["transpose", "resize"] = "transpose"
    d_base: int = 32
    d_layers: int = 1
    d_norm: Literal["instance", "batch", "none"] = "batch"
    adv_weight: float = 1.0
    l1_weight: float = 100.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.positive("g_base", "g_depth", "d_base")
        self.nonnegative("d_layers", "dropout_layers", "adv_weight", "l1_weight")
        self.in_range("dropout", 0.0, 1.0, hi_open=True)
        self.require(self.task in image_pairs.TASKS and image_pairs.TASKS[self.task].source is not None, "task",
                     f"needs a paired task (source = f(target)) of {sorted(image_pairs.TASKS)}, got {self.task!r}")
        self.require(self.dropout_layers <= self.g_depth - 1, "dropout_layers",
                     f"at most g_depth - 1 = {self.g_depth - 1} decoder layers have dropout")
        self.require(self.adv_weight > 0 or self.l1_weight > 0, "l1_weight",
                     "adv_weight = l1_weight = 0 leaves the generator nothing to minimize")


def _players(cfg: Pix2PixConfig, image_shape) -> tuple[UNetGenerator, Optional[PatchDiscriminator]]:
    h, w, c = image_shape
    if h % 2 ** cfg.g_depth or w % 2 ** cfg.g_depth:
        raise ConfigError(f"config.model.g_depth: the dataset's H, W = ({h}, {w}) must be divisible by "
                          f"2^g_depth = {2 ** cfg.g_depth}")
    g = UNetGenerator(out_channels=c, base=cfg.g_base, depth=cfg.g_depth, norm=cfg.g_norm, dropout=cfg.dropout,
                      dropout_layers=cfg.dropout_layers, upsample=cfg.upsample, dtype=compute_dtype(cfg.compute_dtype))
    if cfg.adv_weight == 0:
        return g, None
    if min(patch_logits_shape(cfg.d_layers, h, w)) < 1:
        raise ConfigError(f"config.model.d_layers: {cfg.d_layers} stride-2 layers leave no patch logits "
                          f"for {h}x{w} images")
    return g, PatchDiscriminator(base=cfg.d_base, n_layers=cfg.d_layers, norm=cfg.d_norm, conditional=True,
                                 dtype=compute_dtype(cfg.compute_dtype))


def _apply(net, variables: Mapping, train: bool, *args, **kw):
    """``(out, new non-param collections)``; collections other than params are mutable in
    training (batch statistics) and kept unchanged in evaluation."""
    state = {k: v for k, v in variables.items() if k != "params"}
    if train and state:
        out, new = net.apply(variables, *args, train=True, mutable=list(state), **kw)
        return to_float32(out), new  # the losses read float32
    return to_float32(net.apply(variables, *args, train=train, **kw)), state


def make_pix2pix(cfg: Any, info: Any) -> GenerativeModel:
    """Pix2Pix of ``config.model`` (:class:`Pix2PixConfig`) on a dataset with ``info``
    (``image_shape``, ``num_levels``): a :class:`GenerativeModel` of family ``'gan'`` with
    two-player training (one player with ``adv_weight = 0``) and a source-conditional sampler."""
    cfg = typed(Pix2PixConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    levels = int(info.num_levels)
    task = image_pairs.get_task(cfg.task)
    g, d = _players(cfg, image_shape)
    d_loss_fn, g_loss_fn = obj.get_losses("nonsaturating")

    def pair(batch):
        """``(source x, target y)`` of a batch, each ``[B, H, W, C]``."""
        y = batch["image"]
        check_image_batch(y, image_shape)
        return task.source(y), y

    def variables(key, batch):
        x, y = pair(batch)
        kg, kd = jax.random.split(key)
        out = {GEN: g.init({"params": kg, "dropout": kg}, x, train=False)}
        if d is not None:
            out[DISC] = d.init(kd, y, x, train=False)
        return out

    def init(key, batch):
        return {k: v["params"] for k, v in variables(key, batch).items()}

    def init_model_state(key, batch):
        return {k: {c: cv for c, cv in v.items() if c != "params"} for k, v in variables(key, batch).items()}

    def generate(params, state, x, key, train: bool):
        return _apply(g, {"params": params[GEN], **state[GEN]}, train, x, noise=True, rngs={"dropout": key})

    def d_loss(params, state, batch, key):
        x, y = pair(batch)
        fake, _ = generate(params, state, x, key, True)
        fake = jax.lax.stop_gradient(fake)
        dv = lambda st: {"params": params[DISC], **st}
        r, ds = _apply(d, dv(state[DISC]), True, y, x)
        f, ds = _apply(d, dv(ds), True, fake, x)
        adv = 0.5 * d_loss_fn(r.reshape(-1), f.reshape(-1))  # mean over patches, halved (Sec. 3.3)
        m = {"d_adv": adv, "d_real": jnp.mean(r), "d_fake": jnp.mean(f)}
        return cfg.adv_weight * adv, (m, {**state, DISC: ds})

    def g_loss(params, state, batch, key):
        x, y = pair(batch)
        fake, gs = generate(params, state, x, key, True)
        l1 = jnp.mean(jnp.abs(y - fake))  # on [0, 1]; Eq. 3 on [-1, 1] is 2 l1
        loss, m = cfg.l1_weight * 2.0 * l1, {"l1": l1}
        if d is not None:
            f, _ = _apply(d, {"params": params[DISC], **state[DISC]}, True, fake, x)
            adv = g_loss_fn(f.reshape(-1))
            loss = loss + cfg.adv_weight * adv
            m["g_adv"] = adv
        return loss, (m, {**state, GEN: gs})

    def sample(params, key, num, cond=None):
        """``G(x, z)`` in evaluation mode with dropout noise: ``cond['source'] [num, H, W, C_s]``
        -> ``[num, H, W, C]`` in [0, 1]."""
        if cond is None or SOURCE not in cond:
            raise ValueError(f"sample: Pix2Pix is conditioned on the source image; pass cond={{'source': "
                             f"float32 [{num}, {', '.join(map(str, image_shape))}]}}")
        x = jnp.asarray(cond[SOURCE], jnp.float32)
        if x.shape != (num, *image_shape):
            raise ValueError(f"sample: cond['source'] must be [{num}, {', '.join(map(str, image_shape))}], "
                             f"got {x.shape}")
        state = params.get(MODEL_STATE, {}) if isinstance(params, Mapping) else {}
        out, _ = generate(params, {GEN: state.get(GEN, {})}, x, key, False)
        return out.astype(jnp.float32)

    def draw(num: int, arrays: Optional[Mapping] = None) -> dict:
        """The sources of the task's ``num`` rows of the split ``arrays`` (host numpy)."""
        if arrays is None or "image" not in arrays:
            raise ValueError("Pix2Pix sampling conditions are the sources of a split's images; pass the split's "
                             "arrays (load_split) to the conditioning's draw")
        return {SOURCE: image_pairs.task_inputs(task, arrays, num, levels)[1]}

    phases = (Phase(GEN, loss=g_loss, name="g", stateful=True, optim=GEN),)
    if d is not None:
        phases = (Phase(DISC, loss=d_loss, name="d", stateful=True, optim=DISC),) + phases
    return GenerativeModel(
        name=cfg.name, family="gan",
        training=Training(init=init, phases=phases, ema_groups=(GEN,), init_model_state=init_model_state),
        sampler=Sampler(sample, "image"),
        conditioning=Conditioning(keys=(SOURCE,), draw=draw),
        data=DataSpec(image_shape, levels, 0))
