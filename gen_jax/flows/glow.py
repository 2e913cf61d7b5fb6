"""Glow (Kingma & Dhariwal 2018): multi-scale flow of ActNorm, invertible 1x1 convolution and
affine coupling, with learned priors; unconditional or class-conditional.

Architecture (Glow Fig. 2; Dinh et al. 2017 Sec. 3.6 for the multi-scale part), on
dequantized ``y`` in ``[0, 1)^{H x W x C}``:

    pre-processing  y - 1/2 (Glow) or logit (RealNVP Sec. 4.1)
    L levels, each: squeeze -> K x [ActNorm -> 1x1 conv -> coupling] -> split
                    (the last level: the learned top prior instead of a split)

* one step of flow is Glow Table 1: ActNorm (Sec. 3.1), invertible 1x1 convolution
  (Sec. 3.2; ``permutation='lu'`` the LU form, ``'conv'`` plain, ``'reverse'`` the RealNVP
  channel reversal baseline of Sec. 5.1), affine or additive coupling (Sec. 3.3) on a
  channel split with Glow's NN() conditioner;
* split (Glow ``split2d``): half the channels are factored out with
  ``N(mu(h), sigma(h)^2)``, ``mu, log sigma`` a zero-init conv of the kept half ``h``;
* top prior: learned mean / log-scale per position (zero-init, Glow ``learntop``);
  class-conditional (``conditioning='label'``, Glow ``ycond``): a zero-init linear map of
  the one-hot label adds per-channel mean / log-scale to the top prior, and with
  ``cond_coupling`` the label also enters every coupling network. (Glow's auxiliary
  classification loss on the top latent is not used.)

:func:`make_glow` returns the bundle of :mod:`gen_jax.flows.image_flow` (exact
``log_prob``, temperature sampling, encode / decode / interpolate).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from gen_jax.config import ConfigError, from_config
from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.bijector import Bijector, Chain
from gen_jax.flows.conv1x1 import Invertible1x1Conv
from gen_jax.flows.coupling import KINDS, SCALES, Coupling
from gen_jax.flows.image_flow import make_image_flow_model
from gen_jax.flows.multiscale import Split, TopPrior, check_multiscale_shape
from gen_jax.flows.permute import Reverse
from gen_jax.flows.preprocess import PREPROCESS, preprocessing
from gen_jax.flows.squeeze import Squeeze
from gen_jax.model import GenerativeModel

PERMUTATIONS = ("lu", "conv", "reverse")
CONDITIONINGS = ("none", "label")


@dataclasses.dataclass(frozen=True)
class GlowConfig:
    """``config.model`` of Glow (``from_config(GlowConfig, cfg, 'config.model')``).

    Attributes:
      name: model name.
      levels: ``L``, number of levels (each halves H and W).
      steps_per_level: ``K``, steps of flow per level.
      hidden: channels of the coupling networks.
      coupling: ``'affine'`` or ``'additive'``.
      permutation: ``'lu'`` (LU 1x1 conv), ``'conv'`` (plain 1x1 conv) or ``'reverse'``.
      scale_fn: affine-coupling scale, ``'sigmoid'`` or ``'tanh'``.
      learn_top: learned top prior (else ``N(0, I)``).
      preprocess: ``'shift'`` (``y - 1/2``) or ``'logit'``.
      logit_alpha: ``alpha`` of the logit pre-processing.
      conditioning: ``'none'`` or ``'label'`` (class-conditional).
      cond_coupling: feed the label to the coupling networks too.
      temperature: default sampling temperature.
    """

    name: str = "glow"
    levels: int = 2
    steps_per_level: int = 8
    hidden: int = 64
    coupling: str = "affine"
    permutation: str = "lu"
    scale_fn: str = "sigmoid"
    learn_top: bool = True
    preprocess: str = "shift"
    logit_alpha: float = 0.05
    conditioning: str = "none"
    cond_coupling: bool = False
    temperature: float = 1.0

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        for f in ("levels", "steps_per_level", "hidden"):
            if getattr(self, f) < 1:
                bad(f, f"must be >= 1, got {getattr(self, f)}")
        for f, allowed in (("coupling", KINDS), ("permutation", PERMUTATIONS), ("scale_fn", SCALES),
                           ("preprocess", PREPROCESS), ("conditioning", CONDITIONINGS)):
            if getattr(self, f) not in allowed:
                bad(f, f"must be one of {list(allowed)}, got {getattr(self, f)!r}")
        if not 0.0 < self.logit_alpha < 0.5:
            bad("logit_alpha", f"must be in (0, 0.5), got {self.logit_alpha}")
        if self.temperature <= 0:
            bad("temperature", f"must be > 0, got {self.temperature}")
        if self.cond_coupling and self.conditioning == "none":
            bad("cond_coupling", "needs conditioning='label'")


def build_glow(cfg: GlowConfig, image_shape, conditional: bool = False) -> Bijector:
    """The Glow bijector ``[B, H, W, C]`` on ``[0, 1)`` -> ``[B, H W C]`` (module docstring)."""
    check_multiscale_shape(image_shape, cfg.levels, "config.model.levels")
    use_cond = conditional and cfg.cond_coupling

    def step(level: int, k: int) -> list:
        if cfg.permutation == "reverse":
            perm = Reverse()
        else:
            perm = Invertible1x1Conv(lu=cfg.permutation == "lu", seed=1000 * level + k)
        coupling = Coupling(mask="channel", parity=0, kind=cfg.coupling, hidden=cfg.hidden,
                            scale_fn=cfg.scale_fn, use_cond=use_cond)
        return [ActNorm(), perm, coupling]

    def level(i: int, shape) -> Bijector:
        h, w, c = shape
        sq = (h // 2, w // 2, 4 * c)
        layers: list = [Squeeze()]
        for k in range(cfg.steps_per_level):
            layers += step(i, k)
        if i == cfg.levels - 1:
            layers.append(TopPrior(sq, learned=cfg.learn_top, use_cond=conditional))
        else:
            layers.append(Split(level(i + 1, (sq[0], sq[1], sq[2] // 2)), sq, prior="learned"))
        return Chain(tuple(layers))

    body = level(0, tuple(image_shape))
    pre = preprocessing(cfg.preprocess, cfg.logit_alpha)
    return Chain((pre, body))


def as_glow_config(cfg: Any) -> GlowConfig:
    return cfg if isinstance(cfg, GlowConfig) else from_config(GlowConfig, cfg, "config.model")


def make_glow(cfg: Any, info: Any) -> GenerativeModel:
    """Glow bundle (see module docstring and :mod:`gen_jax.flows.image_flow`).

    Args:
      cfg: :class:`GlowConfig` or ``config.model``.
      info: dataset info with ``image_shape``, ``num_levels``, ``num_classes``.
    """
    cfg = as_glow_config(cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning == "label"
    if conditional and num_classes < 1:
        raise ConfigError(f"config.model.conditioning: 'label' needs a dataset with labels "
                          f"(info.num_classes={num_classes})")
    flow = build_glow(cfg, image_shape, conditional)
    return make_image_flow_model(name=cfg.name, flow=flow, image_shape=image_shape,
                                 num_levels=int(info.num_levels), num_classes=num_classes,
                                 conditional=conditional, temperature=cfg.temperature)
