"""A noise-aware classifier ``p_phi(y | x_t, t)`` for classifier guidance.

Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", Sec. 4: a classifier
trained on *noisy* images ``x_t`` of the same forward process as the DDPM it guides (their
classifier is the U-Net's downsampling half; here a small conv net or an MLP, for 8x8 images).
Its input gradient ``grad_{x_t} log p_phi(y | x_t, t)`` steers sampling
(:mod:`gen_jax.diffusion.classifier_guidance`).

Objective (per example, Dhariwal & Nichol 2021, Sec. 4.1): with ``x_0 = 2 image - 1`` on
``[-1, 1]``, ``t ~ U{0..T-1}``, ``eps ~ N(0, I)`` and Ho et al. 2020, Eq. 4,

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
    L(phi) = E_{t, eps} [ -log p_phi(y | x_t, t) ]           (softmax cross-entropy).

The classifier config states the process fields of a DDPM config (``timesteps``,
``beta_schedule``, ``beta_start``, ``beta_end``; the same schedule builder,
:func:`gen_jax.diffusion.model.process_schedule`), and guidance checks that they equal those
of the DDPM it guides.

Network (``network='conv'``, the default)::

    temb = Dense(SiLU(Dense(timestep_embedding(t, time_dim))))         [B, hidden]
    per stage i (features[i] channels; stride-2 conv between stages):
        h = Conv3x3(h);  h = h + Dense(SiLU(temb))[:, None, None];  h = SiLU(GroupNorm(h))
    h = Dense(flatten(h)) + Dense(SiLU(temb));  logits = Dense(SiLU(h))  [B, num_classes]

``network='mlp'`` replaces the conv stages by Dense layers of widths ``features`` on the
flattened image ``[B, H*W*C]`` (LayerNorm for GroupNorm). The network has no cross-example
interaction (no batch statistics), so ``grad`` of the batch sum of ``log p`` is the
per-example input gradient.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gen_jax.config import ConfigError, from_config
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion.model import process_schedule
from gen_jax.diffusion.schedules import SCHEDULES, Schedule
from gen_jax.model import GenerativeModel, check_image_batch
from gen_jax.nn.unet import GroupNorm, timestep_embedding

NETWORKS = ("conv", "mlp")
PROCESS_FIELDS = ("timesteps", "beta_schedule", "beta_start", "beta_end")


@dataclasses.dataclass(frozen=True)
class NoisyClassifierConfig:
    """``config.model`` of the noise-aware classifier (``from_config(..., 'config.model')``).

    Attributes:
      name: model name.
      timesteps, beta_schedule, beta_start, beta_end: the forward process, as in a DDPM config
        (:class:`gen_jax.diffusion.model.DiffusionConfig`); they must equal the guided DDPM's.
      network: ``'conv'`` (conv stages, stride 2 between them) or ``'mlp'`` (Dense layers on
        the flattened image).
      features: channels (conv) or widths (mlp) of the stages.
      hidden: width of the time embedding and of the layer before the logits.
      time_dim: width of the sinusoidal time embedding (even, >= 4).
      num_groups: GroupNorm groups of the conv stages (divides every ``features`` entry).
    """

    name: str = "noisy_classifier"
    timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    network: str = "conv"
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    time_dim: int = 64
    num_groups: int = 8

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        if self.timesteps < 1:
            bad("timesteps", f"must be >= 1, got {self.timesteps}")
        if self.beta_schedule not in SCHEDULES:
            bad("beta_schedule", f"must be one of {list(SCHEDULES)}, got {self.beta_schedule!r}")
        if self.beta_schedule == "linear" and not 0.0 < self.beta_start <= self.beta_end < 1.0:
            bad("beta_start", f"the linear schedule needs 0 < beta_start <= beta_end < 1, got "
                              f"beta_start={self.beta_start}, beta_end={self.beta_end}")
        if self.network not in NETWORKS:
            bad("network", f"must be one of {list(NETWORKS)}, got {self.network!r}")
        if not self.features or any(f < 1 for f in self.features):
            bad("features", f"needs positive widths, got {self.features}")
        if self.hidden < 1:
            bad("hidden", f"must be >= 1, got {self.hidden}")
        if self.time_dim < 4 or self.time_dim % 2:
            bad("time_dim", f"must be even and >= 4 (sinusoidal embedding), got {self.time_dim}")
        if self.num_groups < 1:
            bad("num_groups", f"must be >= 1, got {self.num_groups}")
        if self.network == "conv" and any(f % self.num_groups for f in self.features):
            bad("num_groups", f"{self.num_groups} must divide every entry of "
                              f"config.model.features={self.features}")


def as_noisy_classifier_config(cfg: Any) -> NoisyClassifierConfig:
    if isinstance(cfg, NoisyClassifierConfig):
        return cfg
    return from_config(NoisyClassifierConfig, cfg, "config.model")


def check_same_process(ddpm_cfg: Any, classifier_cfg: Any) -> None:
    """Raises :class:`ConfigError` naming the first process field (``timesteps``,
    ``beta_schedule``, and ``beta_start``/``beta_end`` for a linear schedule) on which a DDPM
    config and a noise-aware classifier config differ: a classifier trained on another
    forward process would be queried at noise levels it never saw."""
    fields = PROCESS_FIELDS if classifier_cfg.beta_schedule == "linear" else PROCESS_FIELDS[:2]
    for f in fields:
        a, b = getattr(classifier_cfg, f), getattr(ddpm_cfg, f)
        same = math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0) if isinstance(a, float) else a == b
        if not same:
            raise ConfigError(f"config.model.{f}: the noise-aware classifier has {f}={a!r} but the "
                              f"DDPM it guides has {f}={b!r}; they must be trained on the same "
                              f"forward process")


class NoisyClassifierNet(nn.Module):
    """``(x_t [B, H, W, C], t [B]) -> logits [B, num_classes]`` (module docstring)."""

    cfg: NoisyClassifierConfig
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        cfg = self.cfg
        b = x.shape[0]
        temb = timestep_embedding(t, cfg.time_dim)  # [B, time_dim]
        temb = nn.Dense(cfg.hidden, name="temb0")(temb)
        temb = nn.Dense(cfg.hidden, name="temb1")(nn.silu(temb))  # [B, hidden]
        h = x if cfg.network == "conv" else x.reshape(b, -1)
        for i, f in enumerate(cfg.features):
            add = nn.Dense(f, name=f"temb_proj{i}")(nn.silu(temb))  # [B, f]
            if cfg.network == "conv":
                stride = 2 if i > 0 and h.shape[1] > 1 and h.shape[2] > 1 else 1
                h = nn.Conv(f, (3, 3), strides=(stride, stride), padding="SAME", name=f"conv{i}")(h)
                h = nn.silu(GroupNorm(cfg.num_groups, name=f"norm{i}")(h + add[:, None, None, :]))
            else:
                h = nn.Dense(f, name=f"dense{i}")(h)
                h = nn.silu(nn.LayerNorm(name=f"norm{i}")(h + add))
        h = h.reshape(b, -1)
        h = nn.Dense(cfg.hidden, name="head")(h) + nn.Dense(cfg.hidden, name="temb_head")(nn.silu(temb))
        return nn.Dense(self.num_classes, name="logits")(nn.silu(h))


def noisy_classifier_terms(logits_fn: Callable, schedule: Schedule, x0: jax.Array, labels: jax.Array,
                           key: jax.Array, t: Optional[jax.Array] = None,
                           noise: Optional[jax.Array] = None) -> dict:
    """Per-example cross-entropy of a noise-aware classifier (Dhariwal & Nichol 2021, Sec. 4.1)
    on ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, Eq. 4),
    ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``.

    Args:
      logits_fn: ``(x_t [B, ...], t int32 [B]) -> logits [B, K]``.
      x0: ``[B, ...]`` on ``[-1, 1]``; labels: int ``[B]`` in ``0..K-1``.
      key: draws ``(t, eps)`` (split as in :func:`gen_jax.diffusion.gaussian_diffusion.simple_loss`).
      t, noise: optional fixed ``t [B]`` and ``eps [B, ...]`` (tests).

    Returns:
      dict of ``[B]`` arrays: ``ce`` (``-log p_phi(y | x_t, t)``), ``correct`` (0/1), ``t``.
    """
    if labels.shape != x0.shape[:1]:
        raise ValueError(f"labels must be [B={x0.shape[0]}], got shape {labels.shape}")
    kt, kn = jax.random.split(key)
    if t is None:
        t = jax.random.randint(kt, x0.shape[:1], 0, schedule.num_timesteps, jnp.int32)
    if noise is None:
        noise = jax.random.normal(kn, x0.shape, x0.dtype)
    gd.check_batch(x0, t, "x0")
    x_t = gd.q_sample(schedule, x0, t, noise)
    logits = logits_fn(x_t, t)  # [B, K]
    if logits.ndim != 2 or logits.shape[0] != x0.shape[0]:
        raise ValueError(f"logits_fn must return [B={x0.shape[0]}, K], got shape {logits.shape}")
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # [B]
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)  # [B]
    return dict(ce=ce, correct=correct, t=t)


def make_noisy_classifier(cfg: Any, info: Any) -> GenerativeModel:
    """The noise-aware classifier bundle (family ``'classifier'``; no ``sample``/``log_prob``).

    Args:
      cfg: :class:`NoisyClassifierConfig` or ``config.model``; errors name ``config.model.<field>``.
      info: ``image_shape (H, W, C)``, ``num_levels`` ``K`` and ``num_classes >= 2``.

    Returns:
      a :class:`GenerativeModel` with

      * ``init(key, batch) -> params``;
      * ``loss(params, batch, key) -> (mean ce, metrics)``: :func:`noisy_classifier_terms` on
        ``x_0 = 2 batch['image'] - 1`` and ``batch['label'] [B]``; metrics ``loss``/``accuracy``
        (``[B]``, averaged by the train step) and ``accuracy_low_noise`` (accuracy over the
        examples with ``t < T / 2``);
      * ``extras['logits'](params, x_t [B, H, W, C], t int [B]) -> [B, num_classes]``;
      * ``extras['log_prob_y'](params, x_t, t, y int [B]) -> [B]``, ``log p_phi(y | x_t, t)``;
      * ``extras['config']()``, ``extras['schedule']()``, ``extras['image_shape']()``,
        ``extras['num_levels']()``, ``extras['num_classes']()`` (for guidance).
    """
    cfg = as_noisy_classifier_config(cfg)
    num_classes = getattr(info, "num_classes", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"config.dataset: a classifier needs info.num_classes >= 2, got {num_classes!r}")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ConfigError(f"config.dataset: info.image_shape must be (H, W, C), got {image_shape}")
    num_levels = int(info.num_levels)
    try:
        schedule = process_schedule(cfg)
    except ValueError as e:
        raise ConfigError(f"config.model.beta_schedule: {e}") from None
    net = NoisyClassifierNet(cfg, num_classes)

    def check_x(x, where):
        check_image_batch(x, image_shape, where)

    def logits(params, x_t, t):
        """``[B, num_classes]`` logits of ``p_phi(y | x_t, t)``, ``x_t [B, H, W, C]``, ``t [B]``."""
        check_x(x_t, "x_t")
        gd.check_batch(x_t, t, "x_t")
        return net.apply({"params": params}, x_t, t)

    def log_prob_y(params, x_t, t, y):
        """``log p_phi(y | x_t, t)`` ``[B]`` for labels ``y`` int ``[B]``."""
        if jnp.shape(y) != x_t.shape[:1]:
            raise ValueError(f"y must be [B={x_t.shape[0]}], got shape {jnp.shape(y)}")
        lp = jax.nn.log_softmax(logits(params, x_t, t), axis=-1)  # [B, K]
        return jnp.take_along_axis(lp, jnp.asarray(y, jnp.int32)[:, None], axis=-1)[:, 0]

    def init(key, batch):
        x = batch["image"]
        check_x(x, "batch['image']")
        return net.init({"params": key}, x[:1], jnp.zeros((1,), jnp.int32))["params"]

    def loss(params, batch, key):
        x = batch["image"]
        check_x(x, "batch['image']")
        labels = batch["label"]
        if labels.shape != x.shape[:1]:
            raise ValueError(f"batch['label'] must be [B={x.shape[0]}], got {labels.shape}")
        terms = noisy_classifier_terms(lambda x_t, t: net.apply({"params": params}, x_t, t),
                                       schedule, 2.0 * x - 1.0, labels, key)
        low = (terms["t"] < cfg.timesteps // 2).astype(jnp.float32)
        acc_low = jnp.sum(terms["correct"] * low) / jnp.maximum(jnp.sum(low), 1.0)
        mean = jnp.mean(terms["ce"])
        return mean, {"loss": terms["ce"], "accuracy": terms["correct"], "accuracy_low_noise": acc_low}

    return GenerativeModel(
        name=cfg.name, family="classifier", init=init, loss=loss,
        extras={"logits": logits, "log_prob_y": log_prob_y, "config": lambda: cfg,
                "schedule": lambda: schedule, "image_shape": lambda: image_shape,
                "num_levels": lambda: num_levels, "num_classes": lambda: num_classes})
