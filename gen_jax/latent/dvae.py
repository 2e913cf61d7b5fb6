"""The discrete VAE of DALL-E (Ramesh et al. 2021, Sec. 2.1): an image tokenizer trained through
the Gumbel-softmax relaxation, ``make_dvae(config.model, info)``.

The encoder maps an image ``x [B, H, W, C]`` to logits ``l [B, h, w, K]`` over ``K`` codes at
each position of an ``h x w = H / f x W / f`` grid; ``q(z_ij | x) = softmax(l_ij)``. The prior is
uniform over the codebook. Training maximizes the ELBO (Ramesh et al. 2021, Eq. 1, stage one)
with the categorical posterior relaxed (Jang et al. 2017, Eq. 1; Maddison et al. 2017, the
Concrete distribution; :func:`gen_jax.latent.gumbel.gumbel_softmax`)::

    y_ij = softmax((l_ij + g_ij) / tau_t)            g ~ Gumbel(0, 1)^K,    [B, h, w, K]
    e_ij = y_ij E                                    E the codebook [K, D] (a 1x1 conv of y)
    x_hat = dec(e)                                                           [B, H, W, C]
    L(x) = [ sum_pixels (x - x_hat)^2 / (2 sigma^2)                          reconstruction
             + beta_t sum_ij KL(q(z_ij | x) || U{1..K}) ] / (H W C)          prior term (closed form)

per example, in nats per dimension (the batch mean is minimized). ``tau_t`` is annealed from
``tau_start`` to ``tau_end`` and ``beta_t`` grown from ``kl_weight_start`` to ``kl_weight_end``
over training steps (:func:`gen_jax.latent.gumbel.anneal`; DALL-E: ``tau`` 1 -> 1/16 and
``beta`` 0 -> 6.6, both cosine, App. A.2). The loss does not receive the step, so the model
keeps it: the model state ``{'dvae': {'step': int32 []}}`` of a ``stateful`` phase, advanced
by one per train step (:class:`gen_jax.model.Phase`).

Deviation from the paper: the reconstruction term is a Gaussian with a fixed ``sigma``
(``config.model.rec_sigma``; squared error) instead of the logit-Laplace distribution of
Ramesh et al. Sec. A.3, so NMSE is what it optimizes; ``KL`` to the uniform prior and the
annealing are the paper's.

Codec (kind ``'ids'``): ``encode(params, x) -> int32 [B, h, w]``, the argmax of the logits
(the mode of ``q``; no relaxation at test time), and ``decode(params, ids) -> [B, H, W, C]`` in
``[0, 1]``, ``dec(E[ids])`` clipped. ``ids`` outside ``[0, K)``, of the wrong grid or dtype,
and images of the wrong size are refused with the argument named. No sampler (the uniform
prior is not a useful image model; a prior over the ids is stage two) and no likelihood.

Logged per step: ``mse`` (on ``[0, 1]``), ``kl`` (nats per position), ``tau``, ``kl_weight``,
``perplexity`` (of the batch's argmax codes) and ``codes_used_batch`` (the fraction of the
codebook among them; over a split: :func:`gen_jax.latent.quantizer.split_code_usage`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.checks import DataSpec, InputError
from gen_jax.checks import check_ids as check_id_range
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.latent import gumbel
from gen_jax.latent.quantizer import code_histogram, perplexity
from gen_jax.latent.vq_networks import Decoder, Encoder, Norm, check_widths, grid_shape
from gen_jax.model import Codec, GenerativeModel, Phase, Training, check_image_batch

STATE = "dvae"


@dataclasses.dataclass(frozen=True)
class DVAEConfig(Checked):
    """``config.model`` of the discrete VAE.

    Attributes:
      name: model name (tables, file names).
      num_codes: ``K``, the codebook size (DALL-E: 8192).
      code_dim: ``D``, the width of a code's embedding (the decoder's input channels).
      channels: conv widths of the encoder stages (the decoder mirrors them,
        :mod:`gen_jax.latent.vq_networks`).
      downsample: the number of stride-2 stages ``n``: the grid is ``H / 2^n x W / 2^n``
        (``H`` and ``W`` must be divisible by ``2^n``).
      res_blocks: residual blocks per stage.
      norm, groups: ``'none'`` or ``'group'`` (GroupNorm of ``groups`` groups before each activation).
      rec_sigma: ``sigma`` of the Gaussian reconstruction term (on ``[0, 1]`` images).
      tau_start, tau_end, tau_steps, tau_schedule: the relaxation temperature's schedule
        (:func:`gen_jax.latent.gumbel.anneal`); both ends ``> 0``.
      kl_weight_start, kl_weight_end, kl_weight_steps, kl_weight_schedule: the KL weight
        ``beta``'s schedule; both ends ``>= 0``.
      hard: straight-through Gumbel-softmax (one-hot forward values) instead of the soft
        relaxation (Ramesh et al. use the soft one).
    """

    name: str = "dvae"
    num_codes: int = 128
    code_dim: int = 32
    channels: tuple[int, ...] = (64, 128)
    downsample: int = 2
    res_blocks: int = 1
    norm: Norm = "none"
    groups: int = 32
    rec_sigma: float = 0.1
    tau_start: float = 1.0
    tau_end: float = 1.0 / 16
    tau_steps: int = 2000
    tau_schedule: gumbel.ScheduleKind = "cosine"
    kl_weight_start: float = 0.0
    kl_weight_end: float = 1.0
    kl_weight_steps: int = 500
    kl_weight_schedule: gumbel.ScheduleKind = "cosine"
    hard: bool = False

    def __post_init__(self):
        self.positive("num_codes", "code_dim", "downsample", "rec_sigma")
        self.nonnegative("res_blocks")
        self.require(self.num_codes >= 2, "num_codes", f"a codebook needs >= 2 codes, got {self.num_codes}")
        self.positive("groups")
        try:
            check_widths(self.channels, self.downsample, self.norm, self.groups, f"{self.PATH}.channels")
        except ConfigError as e:
            self.require(False, "channels", str(e).split(": ", 1)[1])
        for prefix, positive in (("tau", True), ("kl_weight", False)):
            msg = gumbel.check_schedule(float(getattr(self, f"{prefix}_start")), float(getattr(self, f"{prefix}_end")),
                                        getattr(self, f"{prefix}_steps"), getattr(self, f"{prefix}_schedule"),
                                        prefix, positive=positive)
            if msg:
                field = msg.split(" ", 1)[0].rstrip(":")
                self.require(False, field, msg.split(" ", 1)[1])


def check_ids(ids, grid: tuple[int, int], num_codes: int, where: str = "decode: ids") -> jax.Array:
    """``ids`` as int32 ``[B, h, w]`` after checking its dtype and shape (always) and, when
    concrete, that every id lies in ``[0, num_codes)``; an ``InputError`` naming ``where``."""
    if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise InputError(f"{where}: token ids must be an integer array [B, {grid[0]}, {grid[1]}], got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if ids.ndim != 3 or tuple(ids.shape[1:]) != tuple(grid):
        raise InputError(f"{where} must be [B, {grid[0]}, {grid[1]}] (the code grid), got shape {tuple(ids.shape)}")
    check_id_range(ids, num_codes, where, "codebook ids")
    return jnp.asarray(ids, jnp.int32)


class DVAENet(nn.Module):
    """Encoder -> logits ``[B, h, w, K]``; codebook ``E [K, D]``; decoder ``[B, h, w, D] -> [B, H, W, C]``.

    Methods: ``logits(x)``, ``embed_soft(y [.., K]) = y E``, ``embed_ids(ids) = E[ids]``,
    ``decode(e)``; ``__call__(x)`` runs all (for ``init``)."""

    cfg: DVAEConfig
    out_channels: int

    def setup(self):
        cfg = self.cfg
        nets = dict(channels=tuple(cfg.channels), downsample=cfg.downsample, res_blocks=cfg.res_blocks,
                    norm=cfg.norm, groups=cfg.groups)
        self.encoder = Encoder(out_dim=cfg.num_codes, **nets)
        self.decoder = Decoder(out_channels=self.out_channels, **nets)
        self.codebook = self.param("codebook", nn.initializers.normal(1.0), (self.cfg.num_codes, self.cfg.code_dim))

    def logits(self, x):
        return self.encoder(2.0 * x - 1.0)

    def embed_soft(self, y):
        return jnp.einsum("...k,kd->...d", y, self.codebook)

    def embed_ids(self, ids):
        return jnp.take(self.codebook, ids, axis=0)

    def decode(self, e):
        return self.decoder(e)

    def __call__(self, x):
        return self.decode(self.embed_soft(jax.nn.softmax(self.logits(x), -1)))


def make_dvae(cfg: Any, info: Any) -> GenerativeModel:
    """The discrete VAE (module docstring) on a dataset with ``info`` (``image_shape``,
    ``num_levels``): a :class:`GenerativeModel` of family ``'latent'`` with a codec of kind
    ``'ids'`` and one stateful training phase."""
    cfg = typed(DVAEConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    grid = grid_shape(image_shape, cfg.downsample)
    net = DVAENet(cfg, image_shape[-1])
    num_dims = float(np.prod(image_shape))

    def images(x, where="batch['image']"):
        check_image_batch(x, image_shape, where)
        return x.astype(jnp.float32)

    def init(key, batch):
        return net.init(key, images(batch["image"])[:1])["params"]

    def init_model_state(key, batch):
        del key, batch
        return {STATE: {"step": jnp.zeros((), jnp.int32)}}

    def schedules(step):
        tau = gumbel.anneal(step, cfg.tau_start, cfg.tau_end, cfg.tau_steps, cfg.tau_schedule)
        beta = gumbel.anneal(step, cfg.kl_weight_start, cfg.kl_weight_end, cfg.kl_weight_steps,
                             cfg.kl_weight_schedule)
        return tau, beta

    def loss(params, state, batch, key):
        """The relaxed negative ELBO per dimension (module docstring) at this step's ``tau``, ``beta``."""
        x = images(batch["image"])
        step = state[STATE]["step"]
        tau, beta = schedules(step)
        logits = net.apply({"params": params}, x, method=DVAENet.logits)            # [B, h, w, K]
        y = gumbel.gumbel_softmax(key, logits, tau, hard=cfg.hard)
        x_hat = net.apply({"params": params}, net.apply({"params": params}, y, method=DVAENet.embed_soft),
                          method=DVAENet.decode)                                      # [B, H, W, C]
        sq = jnp.sum(jnp.square(x - x_hat).reshape(x.shape[0], -1), -1)               # [B]
        kl = jnp.sum(gumbel.kl_to_uniform(logits).reshape(x.shape[0], -1), -1)       # [B]
        per_dim = (sq / (2.0 * cfg.rec_sigma ** 2) + beta * kl) / num_dims             # [B]
        counts = code_histogram(jnp.argmax(logits, -1), cfg.num_codes)
        m = {"mse": jnp.mean(sq) / num_dims, "kl": jnp.mean(kl) / (grid[0] * grid[1]), "tau": tau,
             "kl_weight": beta, "perplexity": perplexity(counts),
             "codes_used_batch": jnp.mean(counts > 0).astype(jnp.float32)}
        return jnp.mean(per_dim), (m, {**state, STATE: {"step": step + 1}})

    def encode(params, x, cond=None):
        """``x [B, H, W, C]`` in [0, 1] -> int32 ids ``[B, h, w]``: argmax of the encoder's logits."""
        del cond
        logits = net.apply({"params": params}, images(x, "encode: x"), method=DVAENet.logits)
        return jnp.argmax(logits, -1).astype(jnp.int32)

    def decode(params, ids, cond=None, key=None):
        """int ids ``[B, h, w]`` in ``[0, K)`` -> ``[B, H, W, C]`` in [0, 1] (``key`` unused)."""
        del cond, key
        e = net.apply({"params": params}, check_ids(ids, grid, cfg.num_codes), method=DVAENet.embed_ids)
        return jnp.clip(net.apply({"params": params}, e, method=DVAENet.decode), 0.0, 1.0).astype(jnp.float32)

    phase = Phase(None, loss=loss, name="dvae", stateful=True)
    return GenerativeModel(
        name=cfg.name, family="latent",
        training=Training(init=init, phases=(phase,), init_model_state=init_model_state),
        codec=Codec(encode, decode, kind="ids"),
        data=DataSpec(image_shape, int(info.num_levels), 0))

