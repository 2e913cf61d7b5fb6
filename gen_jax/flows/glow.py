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

:func:`build_glow` returns the :class:`~gen_jax.flows.image_flow.ImageFlow` of
:mod:`gen_jax.flows.image_flow` (exact likelihood, temperature sampling, a codec, the raw
bijection); :func:`make_glow` its model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from gen_jax.config import Checked, typed
from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.bijector import Bijector, Chain
from gen_jax.flows.conv1x1 import Invertible1x1Conv
from gen_jax.flows.coupling import Coupling, CouplingKind, ScaleFn
from gen_jax.flows.image_flow import ImageFlow, build_image_flow
from gen_jax.flows.multiscale import Split, TopPrior, check_multiscale_shape
from gen_jax.flows.permute import Reverse
from gen_jax.flows.preprocess import Preprocess, preprocessing
from gen_jax.flows.squeeze import Squeeze
from gen_jax.model import GenerativeModel, require_labels
from gen_jax.nn.precision import check_compute_dtype, compute_dtype


@dataclasses.dataclass(frozen=True)
class GlowConfig(Checked):
    """``config.model`` of Glow (``typed(GlowConfig, cfg, 'config.model')``).

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
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the coupling networks' hidden convs in
        that dtype; params, ActNorm, the 1x1 convs, the couplings' outputs, every log-det and
        the log-likelihood float32 (:mod:`gen_jax.nn.precision`).
    """

    name: str = "glow"
    levels: int = 2
    steps_per_level: int = 8
    hidden: int = 64
    coupling: CouplingKind = "affine"
    permutation: Literal["lu", "conv", "reverse"] = "lu"
    scale_fn: ScaleFn = "sigmoid"
    learn_top: bool = True
    preprocess: Preprocess = "shift"
    logit_alpha: float = 0.05
    conditioning: Literal["none", "label"] = "none"
    cond_coupling: bool = False
    temperature: float = 1.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.positive("levels", "steps_per_level", "hidden", "temperature")
        self.in_range("logit_alpha", 0.0, 0.5, lo_open=True, hi_open=True)
        self.require(not self.cond_coupling or self.conditioning != "none", "cond_coupling",
                     "needs conditioning='label'")


def glow_bijector(cfg: GlowConfig, image_shape, conditional: bool = False) -> Bijector:
    """The Glow bijector ``[B, H, W, C]`` on ``[0, 1)`` -> ``[B, H W C]`` (module docstring)."""
    check_multiscale_shape(image_shape, cfg.levels, "config.model.levels")
    use_cond = conditional and cfg.cond_coupling

    def step(level: int, k: int) -> list:
        if cfg.permutation == "reverse":
            perm = Reverse()
        else:
            perm = Invertible1x1Conv(lu=cfg.permutation == "lu", seed=1000 * level + k)
        coupling = Coupling(mask="channel", parity=0, kind=cfg.coupling, hidden=cfg.hidden,
                            scale_fn=cfg.scale_fn, use_cond=use_cond, dtype=compute_dtype(cfg.compute_dtype))
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


def build_glow(cfg: Any, info: Any) -> ImageFlow:
    """Glow (see module docstring and :mod:`gen_jax.flows.image_flow`): the model and its raw
    bijection.

    Args:
      cfg: :class:`GlowConfig` or ``config.model``.
      info: dataset info with ``image_shape``, ``num_levels``, ``num_classes``.
    """
    cfg = typed(GlowConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning == "label"
    if conditional:
        require_labels(num_classes, "config.model.conditioning")
    flow = glow_bijector(cfg, image_shape, conditional)
    return build_image_flow(name=cfg.name, flow=flow, image_shape=image_shape,
                            num_levels=int(info.num_levels), num_classes=num_classes,
                            conditional=conditional, temperature=cfg.temperature)


def make_glow(cfg: Any, info: Any) -> GenerativeModel:
    """The Glow model (:func:`build_glow`)."""
    return build_glow(cfg, info).model
