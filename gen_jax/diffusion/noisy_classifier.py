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
``beta_schedule``, ``beta_start``, ``beta_end``: a :class:`gen_jax.diffusion.model.ScheduleConfig`,
with the same schedule builder :func:`gen_jax.diffusion.model.process_schedule`), and guidance
checks that the DDPM it guides was built on that schedule (:func:`check_same_process`).

The classifier is a :class:`gen_jax.model.Predictor` (it is not a generative model); what
guidance needs of it is a :class:`NoisyClassifierParts` (:func:`build_noisy_classifier`).

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
from typing import Any, Callable, Literal, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.config import ConfigError, typed
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion.model import ScheduleConfig, process_schedule
from gen_jax.diffusion.schedules import Schedule
from gen_jax.model import Classifier, Predictor, check_image_batch, loss_training
from gen_jax.nn.norm import GroupNorm
from gen_jax.nn.unet import timestep_embedding


@dataclasses.dataclass(frozen=True)
class NoisyClassifierConfig(ScheduleConfig):
    """``config.model`` of the noise-aware classifier (``typed(NoisyClassifierConfig, cfg)``).

    Attributes:
      name: model name.
      timesteps, beta_schedule, beta_start, beta_end: the forward process, as in a DDPM config
        (:class:`gen_jax.diffusion.model.ScheduleConfig`); they must equal the guided DDPM's.
      network: ``'conv'`` (conv stages, stride 2 between them) or ``'mlp'`` (Dense layers on
        the flattened image).
      features: channels (conv) or widths (mlp) of the stages.
      hidden: width of the time embedding and of the layer before the logits.
      time_dim: width of the sinusoidal time embedding (even, >= 4).
      num_groups: GroupNorm groups of the conv stages (divides every ``features`` entry).
    """

    name: str = "noisy_classifier"
    network: Literal["conv", "mlp"] = "conv"
    features: tuple[int, ...] = (32, 64)
    hidden: int = 128
    time_dim: int = 64
    num_groups: int = 8

    def __post_init__(self):
        super().__post_init__()
        self.require(bool(self.features) and all(f >= 1 for f in self.features), "features",
                     f"needs positive widths, got {self.features}")
        self.positive("hidden", "num_groups")
        self.require(self.time_dim >= 4 and self.time_dim % 2 == 0, "time_dim",
                     f"must be even and >= 4 (sinusoidal embedding), got {self.time_dim}")
        if self.network == "conv":
            self.require(all(f % self.num_groups == 0 for f in self.features), "num_groups",
                         f"{self.num_groups} must divide every entry of config.model.features={self.features}")


def check_same_process(schedule: Schedule, classifier_cfg: ScheduleConfig) -> None:
    """Raises :class:`ConfigError` naming the first process field of ``classifier_cfg``
    (``timesteps``, ``beta_schedule``, and ``beta_start``/``beta_end`` for a linear schedule)
    that the DDPM ``schedule`` was not built from: a classifier trained on another forward
    process would be queried at noise levels it never saw.

    Args:
      schedule: the guided DDPM's schedule (``model.denoiser.schedule``).
      classifier_cfg: the noise-aware classifier's config.
    """
    betas = np.asarray(schedule.betas, np.float64)  # [T]
    want = np.asarray(process_schedule(classifier_cfg).betas, np.float64)

    def fail(field, ddpm_value):
        raise ConfigError(f"config.model.{field}: the noise-aware classifier has "
                          f"{field}={getattr(classifier_cfg, field)!r} but the DDPM it guides has "
                          f"{field}={ddpm_value!r}; they must be trained on the same forward process")

    if len(betas) != len(want):
        fail("timesteps", len(betas))
    if np.allclose(betas, want, rtol=1e-5, atol=0.0):
        return
    step = (betas[-1] - betas[0]) / max(len(betas) - 1, 1)
    linear = np.allclose(np.diff(betas), step, rtol=1e-2, atol=1e-12)
    if classifier_cfg.beta_schedule != "linear" or not linear:
        fail("beta_schedule", "linear" if linear else "a non-linear schedule")
    if not math.isclose(betas[0], classifier_cfg.beta_start, rel_tol=1e-5):
        fail("beta_start", float(np.float32(betas[0])))
    fail("beta_end", float(np.float32(betas[-1])))


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
                h = GroupNorm(cfg.num_groups, silu=True, name=f"norm{i}")(h + add[:, None, None, :])
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


class NoisyClassifierParts(NamedTuple):
    """A noise-aware classifier and what guidance needs of it (:func:`build_noisy_classifier`).

    Attributes:
      model: the :class:`gen_jax.model.Predictor`: ``training`` (init, the loss) and
        ``classifier.logits(params, x_t [B, H, W, C], t int [B]) -> [B, num_classes]``.
      config: its :class:`NoisyClassifierConfig` (the forward process it was trained on).
      schedule: that process's schedule.
      image_shape: ``(H, W, C)``; num_levels: ``K``.
      log_prob_y: ``(params, x_t, t, y int [B]) -> [B]``, ``log p_phi(y | x_t, t)``.
    """

    model: Predictor
    config: NoisyClassifierConfig
    schedule: Schedule
    image_shape: tuple
    num_levels: int
    log_prob_y: Callable

    @property
    def num_classes(self) -> int:
        return self.model.classifier.num_classes


def build_noisy_classifier(cfg: Any, info: Any) -> NoisyClassifierParts:
    """The noise-aware classifier (a :class:`gen_jax.model.Predictor`) and its guidance parts.

    Args:
      cfg: :class:`NoisyClassifierConfig` or ``config.model``; errors name ``config.model.<field>``.
      info: ``image_shape (H, W, C)``, ``num_levels`` ``K`` and ``num_classes >= 2``.

    Returns:
      :class:`NoisyClassifierParts` whose ``model`` has

      * ``training.init(key, batch) -> params``;
      * the loss ``(params, batch, key) -> (mean ce, metrics)``: :func:`noisy_classifier_terms`
        on ``x_0 = 2 batch['image'] - 1`` and ``batch['label'] [B]``; metrics ``loss`` /
        ``accuracy`` (``[B]``, averaged by the train step) and ``accuracy_low_noise``
        (accuracy over the examples with ``t < T / 2``);
      * ``classifier.logits(params, x_t [B, H, W, C], t int [B]) -> [B, num_classes]``.
    """
    cfg = typed(NoisyClassifierConfig, cfg, "config.model")
    num_classes = getattr(info, "num_classes", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"config.dataset: a classifier needs info.num_classes >= 2, got {num_classes!r}")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ConfigError(f"config.dataset: info.image_shape must be (H, W, C), got {image_shape}")
    schedule = process_schedule(cfg)
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

    model = Predictor(name=cfg.name, training=loss_training(init, loss),
                      classifier=Classifier(logits, num_classes))
    return NoisyClassifierParts(model, cfg, schedule, image_shape, int(info.num_levels), log_prob_y)


def make_noisy_classifier(cfg: Any, info: Any) -> Predictor:
    """The registry's factory: :func:`build_noisy_classifier` ``(cfg, info).model``."""
    return build_noisy_classifier(cfg, info).model
