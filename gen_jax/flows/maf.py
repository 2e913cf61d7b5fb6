"""Masked autoregressive flow (Papamakarios, Pavlakou & Murray 2017) as a model bundle.

The flow (Papamakarios et al. 2017, Sec. 3.1) stacks ``num_layers`` MAF layers
(:class:`gen_jax.flows.autoregressive.MAF`, MADE conditioners), reversing the variable
order between layers; an ActNorm before each layer stands in for the paper's batch-norm
bijector (Sec. 3.1, "we use batch normalization ... between MADEs") so the map is a fixed
function of the params. Base ``N(0, I)``; ``log p(x) = log N(f(x); 0, I) + log|det df/dx|``
exactly; density in one pass, sampling in ``D`` passes per layer. Conditional MAF (Sec. 3.4):
the one-hot label is fed to every MADE.

Two kinds of data:

* **vectors** (``info`` a :class:`VectorInfo`; :func:`build_vector_maf`): ``batch['x']``
  float ``[B, D]`` in ``R^D``; the likelihood is the density on ``R^D`` (kind ``'exact'``,
  though bits/dim of quantized data does not apply); the codec maps ``[B, D]`` to and from
  the latents. Vectors are no sample kind of the contract (image, tokens, signal), so the
  model has no ``sampler``: :class:`VectorMAF` holds ``sample(params, key, num, cond=None)
  -> [num, D]`` beside it;
* **images** (``info`` with ``image_shape``): flattened to ``[B, H W C]`` after the logit
  pre-processing, as a :mod:`gen_jax.flows.image_flow` model (dequantized likelihood,
  bits/dim convention).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple, Union

import jax
import jax.numpy as jnp

from gen_jax.config import Checked, typed
from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.autoregressive import MAF
from gen_jax.flows.bijector import Bijector, Chain, check_finite
from gen_jax.flows.image_flow import ImageFlow, build_image_flow, standard_normal_log_prob
from gen_jax.flows.multiscale import TopPrior
from gen_jax.flows.permute import Reverse
from gen_jax.flows.preprocess import Logit
from gen_jax.model import (Codec, GenerativeModel, Likelihood, condition_labels, label_conditioning,
                           loss_training, require_labels)


@dataclasses.dataclass(frozen=True)
class VectorInfo:
    """Dataset info of vector data: ``dim`` features, ``num_classes`` labels (0 = none)."""

    dim: int
    num_classes: int = 0


@dataclasses.dataclass(frozen=True)
class MAFConfig(Checked):
    """``config.model`` of MAF.

    Attributes:
      name: model name.
      num_layers: MAF layers.
      hidden: MADE hidden widths.
      actnorm: ActNorm before each MAF layer.
      logit_alpha: ``alpha`` of the logit pre-processing (image data).
      conditioning: ``'none'`` or ``'label'``.
      temperature: default sampling temperature.
    """

    name: str = "maf"
    num_layers: int = 5
    hidden: tuple[int, ...] = (64, 64)
    actnorm: bool = True
    logit_alpha: float = 0.05
    conditioning: Literal["none", "label"] = "none"
    temperature: float = 1.0

    def __post_init__(self):
        self.positive("num_layers", "temperature")
        self.require(bool(self.hidden) and all(h >= 1 for h in self.hidden), "hidden",
                     f"needs positive widths, got {self.hidden}")
        self.in_range("logit_alpha", 0.0, 0.5, lo_open=True, hi_open=True)


def maf_layers(cfg: MAFConfig) -> list[Bijector]:
    """``[ActNorm, MAF, Reverse] * num_layers`` on ``[B, D]`` (the last reversal dropped)."""
    layers: list[Bijector] = []
    for i in range(cfg.num_layers):
        if cfg.actnorm:
            layers.append(ActNorm())
        layers.append(MAF(tuple(cfg.hidden)))
        if i < cfg.num_layers - 1:
            layers.append(Reverse())
    return layers


class VectorMAF(NamedTuple):
    """A MAF on vectors: the model (training, likelihood, codec, conditioning) and its sampler
    ``sample(params, key, num, cond=None, temperature=T) -> [num, D]`` (``u ~ N(0, T^2 I)``,
    ``x = f^{-1}(u)``)."""

    model: GenerativeModel
    sample: Callable


def build_vector_maf(cfg: Any, info: VectorInfo) -> VectorMAF:
    """MAF on vectors ``batch['x'] [B, D]`` (see module docstring)."""
    cfg = typed(MAFConfig, cfg, "config.model")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning == "label"
    if conditional:
        require_labels(num_classes, "config.model.conditioning")
    dim = int(info.dim)
    if dim < 1:
        raise ValueError(f"VectorInfo.dim must be >= 1, got {dim}")
    flow = Chain(tuple(maf_layers(cfg)))

    def check(x, where):
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"{where} must be [B, {dim}], got {x.shape}")
        check_finite(x, where)

    def one_hot(source, n, where):
        if not conditional:
            return None
        return jax.nn.one_hot(condition_labels(source, n, where), num_classes, dtype=jnp.float32)

    def init(key, batch):
        x = batch["x"]
        check(x, "init batch['x']")
        return flow.init(key, x, one_hot(batch, x.shape[0], "init batch"), method="forward")

    def encode(params, x, cond=None):
        check(x, "encode x")
        return flow.apply(params, x, one_hot(cond, x.shape[0], "encode"), method="forward")[0]

    def decode(params, u, cond=None):
        check(u, "decode latents")
        return flow.apply(params, u, one_hot(cond, u.shape[0], "decode"), method="inverse")[0]

    def log_prob(params, batch, key=None):
        x = batch["x"]
        check(x, "log_prob batch['x']")
        u, ldj = flow.apply(params, x, one_hot(batch, x.shape[0], "log_prob batch"), method="forward")
        return standard_normal_log_prob(u) + ldj

    def loss(params, batch, key=None):
        lp = log_prob(params, batch, key)
        return -jnp.mean(lp), {"nll": -lp}

    def sample(params, key, num, cond=None, temperature=cfg.temperature):
        u = temperature * jax.random.normal(key, (num, dim), jnp.float32)
        return flow.apply(params, u, one_hot(cond, num, "sample"), method="inverse")[0]

    model = GenerativeModel(name=cfg.name, family="flow", training=loss_training(init, loss),
                            likelihood=Likelihood(log_prob, "exact"), codec=Codec(encode, decode),
                            conditioning=label_conditioning(num_classes) if conditional else None)
    return VectorMAF(model=model, sample=sample)


def build_maf(cfg: Any, info: Any) -> Union[ImageFlow, VectorMAF]:
    """MAF for vectors (:class:`VectorInfo`: a :class:`VectorMAF`) or images (an
    :class:`~gen_jax.flows.image_flow.ImageFlow`); see module docstring."""
    if isinstance(info, VectorInfo):
        return build_vector_maf(cfg, info)
    cfg = typed(MAFConfig, cfg, "config.model")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    conditional = cfg.conditioning == "label"
    if conditional:
        require_labels(num_classes, "config.model.conditioning")
    image_shape = tuple(int(s) for s in info.image_shape)
    flow = Chain((Logit(cfg.logit_alpha), TopPrior(image_shape, learned=False)) + tuple(maf_layers(cfg)))
    return build_image_flow(name=cfg.name, flow=flow, image_shape=image_shape,
                            num_levels=int(info.num_levels), num_classes=num_classes,
                            conditional=conditional, temperature=cfg.temperature)


def make_maf(cfg: Any, info: Any) -> GenerativeModel:
    """The MAF model (:func:`build_maf`) for vectors or images."""
    return build_maf(cfg, info).model
