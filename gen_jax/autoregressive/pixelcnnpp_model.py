"""PixelCNN++ as a :class:`~gen_jax.model.GenerativeModel` bundle (Salimans et al. 2017).

The network (:mod:`gen_jax.autoregressive.pixelcnnpp`) maps the image to raw mixture
parameters ``[B, H, W, P]`` whose value at pixel ``i`` depends only on pixels before ``i``
in raster order; the discretized logistic mixture with channel coupling
(:mod:`gen_jax.distributions.logistic_mixture`, Eq. 2 and Sec. 2.2) gives each pixel's
``C`` channels jointly, so the chain rule over pixels (van den Oord et al. 2016a, Eq. 1)

    log P(levels) = sum_i log p(x_i | x_<i)

is the exact log-mass of an image.

The model's capabilities:

* ``training``: one loss, ``loss(params, batch, key) -> (mean NLL in nats, {'bpd': [B],
  'nll': [B]})`` with dropout (rng ``key``);
* ``likelihood`` (``'exact'``, unit ``'dim'``): ``log_prob(params, batch, key) -> [B]`` =
  ``log P + D log K`` (the library's convention,
  :func:`gen_jax.autoregressive.common.density_log_prob`; no dropout, ``key`` unused);
* ``sampler`` (kind ``'image'``): ``sample(params, key, num, cond=None) -> [num, H, W, C]``
  in ``[0, 1]``: pixel by pixel in raster order, one key per pixel, the channels of a pixel
  drawn jointly from the coupled mixture, with activation caches
  (:mod:`gen_jax.autoregressive.pixelcnnpp_cached`, Ramachandran et al. 2017: every
  activation computed once); class-conditional models need ``cond={'label': int [num]}``
  and draw labels cycling ``0..C-1`` (``conditioning``).

:func:`build_pixelcnnpp` also returns ``raw(params, image, label=None) -> [B, H, W, P]`` (the
network output) and ``sample_naive`` (the network re-run on the partial image at every pixel,
:func:`~gen_jax.autoregressive.common.raster_scan_sample`; same signature, same images from
the same key) in :class:`PixelCNNPPParts`.

Batches are checked: a wrong image shape, and (outside ``jit``) values outside ``[0, 1]``,
raise a ``ValueError`` naming the argument and shape.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.autoregressive import common, pixelcnnpp_cached
from gen_jax.distributions import logistic_mixture as lm
from gen_jax.autoregressive.pixelcnnpp import PixelCNNPP, check_image_size
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import (DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch, condition_labels,
                           label_conditioning, loss_training, require_labels)
from gen_jax.nn.precision import check_compute_dtype, compute_dtype, to_float32
from gen_jax.nn.remat import check_remat


@dataclasses.dataclass(frozen=True)
class PixelCNNPPConfig(Checked):
    """``config.model`` of PixelCNN++ (``typed(PixelCNNPPConfig, cfg)``).

    Attributes:
      name: model name.
      nr_resnet: gated ResNet blocks per stage and stream (paper: 5).
      nr_filters: channels of both streams (paper: 160).
      num_stages: resolutions (paper: 3, i.e. 32, 16, 8 on CIFAR-10); ``H`` and ``W`` must
        be divisible by ``2^(num_stages - 1)``.
      nr_logistic_mix: mixture components ``M`` (paper: 10).
      dropout: dropout rate in the blocks (paper: 0.5 on CIFAR-10).
      conditional: class-conditional on ``batch['label']`` (a label embedding in every block).
      weight_norm: weight-normalized layers (the paper's code) or plain ones.
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the convolutions in that dtype; params,
        both streams, the mixture parameters and the logistic-mixture likelihood float32
        (:mod:`gen_jax.nn.precision`; the cached sampler computes in float32).
      remat: ``'none'``, ``'full'`` or ``'dots_saveable'`` per gated ResNet block
        (:mod:`gen_jax.nn.remat`).
    """

    name: str = "pixelcnnpp"
    nr_resnet: int = 5
    nr_filters: int = 160
    num_stages: int = 3
    nr_logistic_mix: int = 10
    dropout: float = 0.5
    conditional: bool = False
    weight_norm: bool = True
    compute_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        check_remat(self.remat)
        self.positive("nr_resnet", "nr_filters", "num_stages", "nr_logistic_mix")
        self.in_range("dropout", 0, 1, hi_open=True)


class PixelCNNPPParts(NamedTuple):
    """PixelCNN++ and the function beyond the contract.

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel`.
      raw: ``(params, image [B, H, W, C], label=None) -> [B, H, W, P]`` raw mixture
        parameters (the network output, no dropout).
      sample_naive: ``(params, key, num, cond=None) -> [num, H, W, C]``, the re-running
        reference of the cached ``model.sampler.sample``.
    """

    model: GenerativeModel
    raw: Callable
    sample_naive: Callable


def _check_unit_range(x, where: str) -> None:
    """Concrete ``x`` must lie in ``[0, 1]`` (``level / (K - 1)``); no-op under ``jit``."""
    if isinstance(x, jax.core.Tracer):
        return
    a = np.asarray(x)
    bad = ~((a >= 0.0) & (a <= 1.0))
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} value(s) outside [0, 1] (images hold level / (K - 1); "
                         f"got range [{np.nanmin(a)}, {np.nanmax(a)}]) in an input of shape {a.shape}")


def build_pixelcnnpp(cfg: Any, info: Any) -> PixelCNNPPParts:
    """PixelCNN++ (see module docstring) and its raw network output.

    Args:
      cfg: :class:`PixelCNNPPConfig` or ``config.model``.
      info: dataset info with ``image_shape``, ``num_levels`` and ``num_classes``.
    """
    cfg = typed(PixelCNNPPConfig, cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    try:
        check_image_size(image_shape, cfg.num_stages, f"config.model.num_stages={cfg.num_stages}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    if cfg.conditional:
        require_labels(num_classes, "config.model.conditional")
    k = int(info.num_levels)
    h, w, c = image_shape
    d = h * w * c
    m = cfg.nr_logistic_mix
    net = PixelCNNPP(out_features=lm.num_params(m, c), nr_resnet=cfg.nr_resnet, nr_filters=cfg.nr_filters,
                     num_stages=cfg.num_stages, dropout=cfg.dropout,
                     num_classes=num_classes if cfg.conditional else 0, weight_norm=cfg.weight_norm,
                     dtype=compute_dtype(cfg.compute_dtype), remat=cfg.remat)
    positions = common.raster_positions(image_shape, per_channel=False)

    def labels(source, n, where):
        return condition_labels(source, n, where) if cfg.conditional else None

    def levels_of(batch, where):
        x = batch["image"]
        check_image_batch(x, image_shape, f"{where} batch['image']")
        _check_unit_range(x, f"{where} batch['image']")
        return common.to_levels(x, k)

    def apply(params, levels, label, train=False, key=None):
        x = lm.level_to_centre(levels, k)  # [B, H, W, C] on [-1, 1]
        return to_float32(net.apply(params, x, label, train, rngs={"dropout": key} if train else None))

    def init(key, batch):
        lv = levels_of(batch, "init")
        return net.init(key, lm.level_to_centre(lv, k), labels(batch, lv.shape[0], "init batch"))

    def log_mass(params, batch, key, where, train):
        lv = levels_of(batch, where)
        raw = apply(params, lv, labels(batch, lv.shape[0], f"{where} batch"), train, key)
        return jnp.sum(lm.log_prob_levels(raw, lv, k), axis=(1, 2))  # [B]

    def loss(params, batch, key):
        lp = log_mass(params, batch, key, "loss", train=True)
        bpd = -lp / (d * math.log(2.0))  # [B]
        return jnp.mean(-lp), {"bpd": bpd, "nll": -lp}

    def log_prob(params, batch, key):
        return common.density_log_prob(log_mass(params, batch, key, "log_prob", train=False), image_shape, k)

    def sample_naive(params, key, num, cond=None):
        label = labels(cond, num, "sample")

        def step(x, pos, key):
            raw = apply(params, common.to_levels(x, k), label)
            pix = jax.lax.dynamic_slice(raw, (0, pos[0], pos[1], 0), (num, 1, 1, raw.shape[-1]))
            new = common.from_levels(lm.sample(pix, key, k, c), k)  # [num, 1, 1, C]
            return jax.lax.dynamic_update_slice(x, new, (0, pos[0], pos[1], 0))

        return common.raster_scan_sample(step, jnp.zeros((num,) + image_shape, jnp.float32), positions, key)

    def sample(params, key, num, cond=None):
        levels = pixelcnnpp_cached.sample_pixelcnnpp(net, params, key, num, image_shape, k,
                                                     labels(cond, num, "sample"))
        return common.from_levels(levels, k)

    def raw(params, image, label=None):
        check_image_batch(image, image_shape, "raw image")
        _check_unit_range(image, "raw image")
        lv = common.to_levels(image, k)
        return apply(params, lv, labels(None if label is None else {"label": label}, lv.shape[0], "raw"))

    model = GenerativeModel(
        name=cfg.name, family="autoregressive", training=loss_training(init, loss),
        sampler=Sampler(sample, "image"), likelihood=Likelihood(log_prob, "exact"),
        conditioning=label_conditioning(num_classes) if cfg.conditional else None,
        data=DataSpec(image_shape, k, num_classes if cfg.conditional else 0))
    return PixelCNNPPParts(model=model, raw=raw, sample_naive=sample_naive)


def make_pixelcnnpp(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's PixelCNN++: :func:`build_pixelcnnpp` ``.model``."""
    return build_pixelcnnpp(cfg, info).model
