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

:func:`build_realnvp` returns the :class:`~gen_jax.flows.image_flow.ImageFlow` of
:mod:`gen_jax.flows.image_flow`; :func:`make_realnvp` its model.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from gen_jax.config import Checked, typed
from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.bijector import Bijector, Chain
from gen_jax.flows.coupling import Coupling, CouplingKind, ScaleFn
from gen_jax.flows.image_flow import ImageFlow, build_image_flow
from gen_jax.flows.multiscale import Split, TopPrior, check_multiscale_shape
from gen_jax.flows.preprocess import Preprocess, preprocessing
from gen_jax.flows.squeeze import Squeeze
from gen_jax.model import GenerativeModel
from gen_jax.nn.precision import check_compute_dtype, compute_dtype


@dataclasses.dataclass(frozen=True)
class RealNVPConfig(Checked):
    """``config.model`` of RealNVP (``typed(RealNVPConfig, cfg, 'config.model')``).

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
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the coupling networks' hidden convs in
        that dtype; params, ActNorm, the couplings' outputs, every log-det and the
        log-likelihood float32 (:mod:`gen_jax.nn.precision`).
    """

    name: str = "realnvp"
    scales: int = 2
    checkerboard_couplings: int = 3
    channel_couplings: int = 3
    final_couplings: int = 4
    hidden: int = 64
    num_blocks: int = 1
    coupling: CouplingKind = "affine"
    scale_fn: ScaleFn = "tanh"
    actnorm: bool = True
    preprocess: Preprocess = "logit"
    logit_alpha: float = 0.05
    temperature: float = 1.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.positive("scales", "final_couplings", "hidden", "temperature")
        self.nonnegative("checkerboard_couplings", "channel_couplings", "num_blocks")
        self.in_range("logit_alpha", 0.0, 0.5, lo_open=True, hi_open=True)


def realnvp_bijector(cfg: RealNVPConfig, image_shape) -> Bijector:
    """The RealNVP bijector ``[B, H, W, C]`` on ``[0, 1)`` -> ``[B, H W C]``."""
    check_multiscale_shape(image_shape, cfg.scales - 1, "config.model.scales")

    def couplings(mask: str, n: int) -> list:
        out = []
        for j in range(n):
            out.append(Coupling(mask=mask, parity=j % 2, kind=cfg.coupling, hidden=cfg.hidden,
                                num_blocks=cfg.num_blocks, scale_fn=cfg.scale_fn,
                                dtype=compute_dtype(cfg.compute_dtype)))
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


def build_realnvp(cfg: Any, info: Any) -> ImageFlow:
    """RealNVP (see module docstring and :mod:`gen_jax.flows.image_flow`): the model and its
    raw bijection.

    Args:
      cfg: :class:`RealNVPConfig` or ``config.model``.
      info: dataset info with ``image_shape`` and ``num_levels``.
    """
    cfg = typed(RealNVPConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    flow = realnvp_bijector(cfg, image_shape)
    return build_image_flow(name=cfg.name, flow=flow, image_shape=image_shape,
                            num_levels=int(info.num_levels), temperature=cfg.temperature)


def make_realnvp(cfg: Any, info: Any) -> GenerativeModel:
    """The RealNVP model (:func:`build_realnvp`)."""
    return build_realnvp(cfg, info).model
