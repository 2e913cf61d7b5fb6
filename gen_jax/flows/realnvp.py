"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017): multi-scale affine-coupling flow.

Architecture (RealNVP Sec. 3.6 and Sec. 4.1), on dequantized ``y`` in ``[0, 1)^{H x W x C}``:

    logit pre-processing, alpha = 0.05 (Sec. 4.1)
    scales 1 .. S-1:  3 checkerboard couplings (alternating masks) -> squeeze
                      -> 3 channel couplings (alternating) -> factor out half the channels
    scale S:          4 checkerboard couplings (alternating masks)

Couplings are affine (Eqs. 6-9) with ``tanh``-bounded log-scales; factored-out and final
latents get the fixed prior ``N(0, I)`` (Eq. 13's factorization). Deviations: the
conditioner is Glow's conv net with ``num_blocks`` residual blocks (the paper uses 8-block
ResNets with batch norm and weight norm), and the paper's batch normalization of the
coupling outputs (Sec. 3.7) is replaced by a data-initialized ActNorm after each coupling
(``actnorm=True``), which keeps the map a fixed function of the params.

:func:`make_realnvp` returns the bundle of :mod:`gen_jax.flows.image_flow`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from gen_jax.config import ConfigError, from_config
from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.bijector import Bijector, Chain
from gen_jax.flows.coupling import KINDS, SCALES, Coupling
from gen_jax.flows.image_flow import make_image_flow_model
from gen_jax.flows.multiscale import Split, TopPrior, check_multiscale_shape
from gen_jax.flows.preprocess import PREPROCESS, preprocessing
from gen_jax.flows.squeeze import Squeeze
from gen_jax.model import GenerativeModel


@dataclasses.dataclass(frozen=True)
class RealNVPConfig:
    """``config.model`` of RealNVP (``from_config(RealNVPConfig, cfg, 'config.model')``).

    Attributes:
      name: model name.
      scales: ``S`` (``S - 1`` squeezes and splits).
      checkerboard_couplings, channel_couplings: couplings per stage of scales ``< S``.
      final_couplings: checkerboard couplings of the last scale.
      hidden: conditioner channels; num_blocks: its residual blocks.
      coupling: ``'affine'`` or ``'additive'``; scale_fn: ``'tanh'`` or ``'sigmoid'``.
      actnorm: ActNorm after every coupling.
      preprocess: ``'logit'`` (paper) or ``'shift'``; logit_alpha: ``alpha``.
      temperature: default sampling temperature.
    """

    name: str = "realnvp"
    scales: int = 2
    checkerboard_couplings: int = 3
    channel_couplings: int = 3
    final_couplings: int = 4
    hidden: int = 64
    num_blocks: int = 1
    coupling: str = "affine"
    scale_fn: str = "tanh"
    actnorm: bool = True
    preprocess: str = "logit"
    logit_alpha: float = 0.05
    temperature: float = 1.0

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        for f in ("scales", "final_couplings", "hidden"):
            if getattr(self, f) < 1:
                bad(f, f"must be >= 1, got {getattr(self, f)}")
        for f in ("checkerboard_couplings", "channel_couplings", "num_blocks"):
            if getattr(self, f) < 0:
                bad(f, f"must be >= 0, got {getattr(self, f)}")
        for f, allowed in (("coupling", KINDS), ("scale_fn", SCALES), ("preprocess", PREPROCESS)):
            if getattr(self, f) not in allowed:
                bad(f, f"must be one of {list(allowed)}, got {getattr(self, f)!r}")
        if not 0.0 < self.logit_alpha < 0.5:
            bad("logit_alpha", f"must be in (0, 0.5), got {self.logit_alpha}")
        if self.temperature <= 0:
            bad("temperature", f"must be > 0, got {self.temperature}")


def build_realnvp(cfg: RealNVPConfig, image_shape) -> Bijector:
    """The RealNVP bijector ``[B, H, W, C]`` on ``[0, 1)`` -> ``[B, H W C]``."""
    check_multiscale_shape(image_shape, cfg.scales - 1, "config.model.scales")

    def couplings(mask: str, n: int) -> list:
        out = []
        for j in range(n):
            out.append(Coupling(mask=mask, parity=j % 2, kind=cfg.coupling, hidden=cfg.hidden,
                                num_blocks=cfg.num_blocks, scale_fn=cfg.scale_fn))
            if cfg.actnorm:
                out.append(ActNorm())
        return out

    def scale(i: int, shape) -> Bijector:
        h, w, c = shape
        if i == cfg.scales - 1:
            return Chain(tuple(couplings("checkerboard", cfg.final_couplings)
                               + [TopPrior(tuple(shape), learned=False)]))
        sq = (h // 2, w // 2, 4 * c)
        layers = (couplings("checkerboard", cfg.checkerboard_couplings) + [Squeeze()]
                  + couplings("channel", cfg.channel_couplings)
                  + [Split(scale(i + 1, (sq[0], sq[1], sq[2] // 2)), sq, prior="standard")])
        return Chain(tuple(layers))

    return Chain((preprocessing(cfg.preprocess, cfg.logit_alpha), scale(0, tuple(image_shape))))


def make_realnvp(cfg: Any, info: Any) -> GenerativeModel:
    """RealNVP bundle (see module docstring and :mod:`gen_jax.flows.image_flow`).

    Args:
      cfg: :class:`RealNVPConfig` or ``config.model``.
      info: dataset info with ``image_shape`` and ``num_levels``.
    """
    cfg = cfg if isinstance(cfg, RealNVPConfig) else from_config(RealNVPConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    flow = build_realnvp(cfg, image_shape)
    return make_image_flow_model(name=cfg.name, flow=flow, image_shape=image_shape,
                                 num_levels=int(info.num_levels), temperature=cfg.temperature)
