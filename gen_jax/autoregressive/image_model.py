"""PixelCNN, gated PixelCNN and PixelRNN (Row LSTM) as :class:`~gen_jax.model.GenerativeModel`
bundles.

Each network (:mod:`gen_jax.autoregressive.pixelcnn`, :mod:`gen_jax.autoregressive.pixelrnn`)
gives logits ``[B, H, W, C, K]`` of a categorical over the ``K`` levels of every sub-pixel,
causal in raster order with R, G, B inside a pixel, so (2016a Eq. 1-2)

    log P(levels) = sum_{i, j, c} log softmax(logits[i, j, c])[level_{i, j, c}]

exactly. Bundle functions:

* ``training``: one loss, ``loss(params, batch, key) -> (mean NLL in nats per sub-pixel,
  {'nll': [B] nats per dim, 'bpd': [B]})``, dropout drawn from ``key``;
* ``likelihood`` (``'exact'``, unit ``'dim'``): ``log_prob(params, batch, key) -> [B]`` =
  ``log P(levels) + D log K`` (the library convention,
  :func:`gen_jax.autoregressive.common.density_log_prob`);
* ``sampler`` (kind ``'image'``): ``sample(params, key, num, cond=None, temperature=config)
  -> [num, H, W, C]`` in ``[0, 1]``: sub-pixels drawn one at a time in raster order from
  ``softmax(logits / T)`` with one key per sub-pixel. PixelCNN and gated PixelCNN sample with
  activation caches (:mod:`gen_jax.autoregressive.pixelcnn_cached`, Ramachandran et al. 2017:
  every activation computed once, about one forward pass in all); PixelRNN re-runs the network
  on the partially sampled image at every step
  (:func:`gen_jax.autoregressive.common.raster_scan_sample`, ``H W C`` passes).

:func:`build_pixelcnn` / :func:`build_gated_pixelcnn` / :func:`build_pixelrnn` also return
``logits(params, batch) -> [B, H, W, C, K]`` and ``sample_naive`` (the re-running sampler,
same signature; it draws the same images as ``sampler.sample`` from the same key) in
:class:`PixelModelParts`; the registry's ``make_*`` return the model only.

Conditioning (gated PixelCNN only, 2016b Sec. 2.3, Eq. 4): ``conditioning='label'`` feeds the
one-hot label as ``h``; ``'caption'`` feeds a learned mean-pooled token embedding of
``caption_tokens`` (:func:`gen_jax.nn.caption_encoder.bag_of_words_encoder`) as ``h``. Conditional
bundles sample from ``cond={'label': [num]}`` or ``{'caption_tokens': [num, L]}``; their
``conditioning`` draws labels cycling ``0..C-1`` or the captions of a split's first examples.

Errors: unsupported image sizes (H or W not larger than a kernel's reach ``k // 2``, so its
outer taps could never see a pixel), channel widths that do not split into ``C`` groups, and
wrong batch shapes raise ``ValueError`` naming the field or argument when the bundle is built
or the batch is seen.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.autoregressive import common, pixelcnn_cached
from gen_jax.autoregressive.masked_conv import check_channel_split
from gen_jax.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from gen_jax.autoregressive.pixelrnn import PixelRNN
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.distributions import pixel_categorical_log_prob
from gen_jax.model import (Conditioning, DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch,
                           condition_labels, label_conditioning, loss_training, require_labels, split_conditioning)
from gen_jax.nn.caption_encoder import bag_of_words_encoder
from gen_jax.nn.precision import check_compute_dtype, compute_dtype
from gen_jax.nn.remat import check_remat


class _PixelConfig(Checked):
    """The checks every pixel model's config shares (``hidden``, ``out_hidden``, odd kernels,
    ``dropout``, ``temperature``)."""

    def check_pixel_fields(self) -> None:
        self.positive("hidden", "out_hidden", "temperature")
        for f in ("first_kernel", "kernel"):
            if hasattr(self, f):
                v = getattr(self, f)
                self.require(v >= 1 and v % 2 == 1, f,
                             f"must be an odd size >= 1 (the kernel is centred on the current pixel), got {v}")
        self.in_range("dropout", 0, 1, hi_open=True)


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig(_PixelConfig):
    """``config.model`` of PixelCNN (2016a Sec. 3.5); fields as :class:`~gen_jax.autoregressive.pixelcnn.PixelCNN`.

    ``temperature`` divides the logits when sampling. ``compute_dtype``: ``'float32'`` or
    ``'bfloat16'``, the convolutions' dtype (params, logits and the likelihood float32;
    :mod:`gen_jax.nn.precision`; the cached sampler computes in float32).
    """

    name: str = "pixelcnn"
    hidden: int = 64
    num_blocks: int = 4
    first_kernel: int = 7
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0
    temperature: float = 1.0
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.check_pixel_fields()
        self.nonnegative("num_blocks")


@dataclasses.dataclass(frozen=True)
class GatedPixelCNNConfig(_PixelConfig):
    """``config.model`` of gated PixelCNN (2016b); fields as
    :class:`~gen_jax.autoregressive.pixelcnn.GatedPixelCNN`, plus

    Attributes:
      conditioning: ``'none' | 'label' | 'caption'`` (Eq. 4's ``h``).
      cond_dim: width of the caption embedding.
      temperature: divides the logits when sampling.
      compute_dtype: ``'float32'`` or ``'bfloat16'``, the convolutions' dtype (params, logits and
        the likelihood float32; :mod:`gen_jax.nn.precision`; the cached sampler computes in float32).
      remat: ``'none'``, ``'full'`` or ``'dots_saveable'`` per gated layer (:mod:`gen_jax.nn.remat`).
    """

    name: str = "gated_pixelcnn"
    hidden: int = 64
    num_layers: int = 6
    first_kernel: int = 7
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0
    conditioning: Literal["none", "label", "caption"] = "none"
    cond_dim: int = 32
    temperature: float = 1.0
    compute_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        check_remat(self.remat)
        self.check_pixel_fields()
        self.positive("num_layers", "cond_dim")


@dataclasses.dataclass(frozen=True)
class PixelRNNConfig(_PixelConfig):
    """``config.model`` of the Row LSTM PixelRNN (2016a Sec. 3.1); fields as
    :class:`~gen_jax.autoregressive.pixelrnn.PixelRNN`. ``temperature`` divides the logits when
    sampling."""

    name: str = "pixelrnn"
    hidden: int = 32
    num_layers: int = 2
    kernel: int = 3
    out_hidden: int = 64
    dropout: float = 0.0
    temperature: float = 1.0

    def __post_init__(self):
        self.check_pixel_fields()
        self.positive("num_layers")


class PixelModelParts(NamedTuple):
    """A pixel model and the functions beyond the contract.

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel`.
      logits: ``(params, batch) -> [B, H, W, C, K]`` logits of every sub-pixel (no dropout).
      sample_naive: ``(params, key, num, cond=None, temperature=config) -> [num, H, W, C]``:
        the network re-run on the partial image for every sub-pixel (the reference of the
        cached ``model.sampler.sample``: same keys, same images).
    """

    model: GenerativeModel
    logits: Callable
    sample_naive: Callable


class _Conditioned(nn.Module):
    """Gated PixelCNN with its conditioning vector ``h``: ``(x, label, tokens) -> logits``."""

    net: GatedPixelCNN
    conditioning: str
    num_classes: int = 0
    vocab_size: int = 0
    cond_dim: int = 32

    def setup(self):
        if self.conditioning == "caption":
            self.caption = bag_of_words_encoder(self.vocab_size, features=self.cond_dim)

    def vector(self, label=None, tokens=None) -> Optional[jax.Array]:
        """Eq. 4's ``h``: the one-hot label ``[B, num_classes]``, the caption embedding
        ``[B, E]``, or ``None`` (unconditional)."""
        if self.conditioning == "label":
            return jax.nn.one_hot(label, self.num_classes, dtype=jnp.float32)
        if self.conditioning == "caption":
            return self.caption(tokens)
        return None

    def __call__(self, x, label=None, tokens=None, train: bool = False):
        return self.net(x, self.vector(label, tokens), train)


def _image_shape(info) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in info.image_shape)
    if len(shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    return shape


def _check_size(image_shape, cfg, fields) -> None:
    for f in fields:
        try:
            common.check_image_size(image_shape, getattr(cfg, f) // 2 + 1, f"config.model.{f}={getattr(cfg, f)}")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _check_split(cfg, fields, c: int) -> None:
    for f, mult in fields:
        try:
            check_channel_split(getattr(cfg, f), c, f"config.model.{f}", splits=mult)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _conditioning(conditioning: str, num_classes: int) -> Optional[Conditioning]:
    """How a pixel model's sampling conditions are drawn (``None`` when unconditional)."""
    if conditioning == "label":
        return label_conditioning(num_classes)
    if conditioning == "caption":
        return split_conditioning("caption_tokens")
    return None


def _make_bundle(*, name: str, apply_fn, init_fn, image_shape, num_levels: int, temperature: float,
                 conditioning: str = "none", num_classes: int = 0,
                 cached_sample: Optional[Callable] = None) -> PixelModelParts:
    """The bundle of pure functions around ``apply_fn(params, x, cond, train, rngs) -> logits``;
    ``cached_sample(params, key, num, cond, temperature)`` (``cond`` the checked dict or
    ``None``), when given, is the model's sampler and the re-running one is ``sample_naive``."""
    k = int(num_levels)
    d = math.prod(image_shape)
    conditional = conditioning != "none"
    cond_key = "caption_tokens" if conditioning == "caption" else "label"

    def cond_of(source, n, where) -> Optional[dict]:
        if not conditional:
            return None
        if cond_key == "label":
            return {"label": condition_labels(source, n, where)}
        if source is None or "caption_tokens" not in source:
            raise ValueError(f"{where}: the model is caption-conditional; pass 'caption_tokens' int [{n}, L]")
        tok = jnp.asarray(source["caption_tokens"])
        if tok.ndim != 2 or tok.shape[0] != n:
            raise ValueError(f"{where}: caption_tokens must be [{n}, L], got shape {tok.shape}")
        return {"caption_tokens": tok.astype(jnp.int32)}

    def init(key, batch):
        x = batch["image"]
        check_image_batch(x, image_shape, "init batch['image']")
        return init_fn(key, x, cond_of(batch, x.shape[0], "init batch"))

    def log_mass(params, batch, where, train=False, key=None):
        x = batch["image"]
        check_image_batch(x, image_shape, f"{where} batch['image']")
        levels = common.to_levels(x, k)
        rngs = {"dropout": key} if train else None
        logits = apply_fn(params, common.from_levels(levels, k), cond_of(batch, x.shape[0], f"{where} batch"),
                          train, rngs)
        return pixel_categorical_log_prob(levels, logits)  # [B] (2016a Eq. 1-2)

    def loss(params, batch, key):
        nll = -log_mass(params, batch, "loss", train=True, key=key) / d  # [B] nats per sub-pixel
        return jnp.mean(nll), {"nll": nll, "bpd": nll / math.log(2.0)}

    def log_prob(params, batch, key):
        del key  # exact and deterministic
        return common.density_log_prob(log_mass(params, batch, "log_prob"), image_shape, k)

    def logits(params, batch):
        x = batch["image"]
        check_image_batch(x, image_shape, "logits batch['image']")
        return apply_fn(params, x, cond_of(batch, x.shape[0], "logits batch"), False, None)

    def sample_naive(params, key, num, cond=None, temperature=temperature):
        c = cond_of(cond, num, "sample")

        def step(x, pos, key_i):  # x [num, H, W, C]; pos = (row, col, channel)
            out = apply_fn(params, x, c, False, None)  # [num, H, W, C, K]
            lg = out[:, pos[0], pos[1], pos[2], :] / temperature  # [num, K]
            lev = jax.random.categorical(key_i, lg, axis=-1)  # [num]
            return x.at[:, pos[0], pos[1], pos[2]].set(common.from_levels(lev, k))

        init_x = jnp.zeros((num,) + tuple(image_shape), jnp.float32)
        return common.raster_scan_sample(step, init_x, common.raster_positions(image_shape, True), key)

    def sample(params, key, num, cond=None, temperature=temperature):
        return cached_sample(params, key, num, cond_of(cond, num, "sample"), temperature)

    model = GenerativeModel(
        name=name, family="autoregressive", training=loss_training(init, loss),
        sampler=Sampler(sample_naive if cached_sample is None else sample, "image"),
        likelihood=Likelihood(log_prob, "exact"),
        conditioning=_conditioning(conditioning, num_classes), data=DataSpec(tuple(image_shape), k, num_classes))
    return PixelModelParts(model=model, logits=logits, sample_naive=sample_naive)


def _unconditional(net: nn.Module, name: str, image_shape, info, temperature: float,
                   cached_sample: Optional[Callable] = None) -> PixelModelParts:
    def apply_fn(params, x, cond, train, rngs):
        return net.apply(params, x, train, rngs=rngs)

    def init_fn(key, x, cond):
        return net.init(key, x)

    return _make_bundle(name=name, apply_fn=apply_fn, init_fn=init_fn, image_shape=image_shape,
                        num_levels=int(info.num_levels), temperature=temperature, cached_sample=cached_sample)


def build_pixelcnn(cfg: Any, info: Any) -> PixelModelParts:
    """PixelCNN (2016a Sec. 3.5; module docstring) and its logits.

    Args:
      cfg: :class:`PixelCNNConfig` or ``config.model``.
      info: dataset info with ``image_shape (H, W, C)`` and ``num_levels``.
    """
    cfg = typed(PixelCNNConfig, cfg)
    shape = _image_shape(info)
    _check_size(shape, cfg, ("first_kernel", "kernel"))
    _check_split(cfg, (("hidden", 2), ("out_hidden", 1)), shape[2])  # hidden = 2h, h in C groups
    net = PixelCNN(shape[2], int(info.num_levels), cfg.hidden, cfg.num_blocks, cfg.first_kernel, cfg.kernel,
                   cfg.out_hidden, cfg.dropout, dtype=compute_dtype(cfg.compute_dtype))

    def cached_sample(params, key, num, cond, temperature):
        return pixelcnn_cached.sample_pixelcnn(net, params, key, num, shape, temperature)

    return _unconditional(net, cfg.name, shape, info, cfg.temperature, cached_sample)


def build_pixelrnn(cfg: Any, info: Any) -> PixelModelParts:
    """Row LSTM PixelRNN (2016a Sec. 3.1; module docstring) and its logits.

    Args:
      cfg: :class:`PixelRNNConfig` or ``config.model``.
      info: dataset info with ``image_shape (H, W, C)`` and ``num_levels``.
    """
    cfg = typed(PixelRNNConfig, cfg)
    shape = _image_shape(info)
    _check_size(shape, cfg, ("kernel",))
    _check_split(cfg, (("hidden", 1), ("out_hidden", 1)), shape[2])
    net = PixelRNN(shape[2], int(info.num_levels), cfg.hidden, cfg.num_layers, cfg.kernel, cfg.out_hidden,
                   cfg.dropout)
    return _unconditional(net, cfg.name, shape, info, cfg.temperature)


def build_gated_pixelcnn(cfg: Any, info: Any) -> PixelModelParts:
    """Gated PixelCNN (2016b Sec. 2.1-2.3; module docstring), optionally conditional, and its
    logits.

    Args:
      cfg: :class:`GatedPixelCNNConfig` or ``config.model``.
      info: dataset info with ``image_shape``, ``num_levels``, ``num_classes`` (label
        conditioning) and ``vocab_size`` (caption conditioning).
    """
    cfg = typed(GatedPixelCNNConfig, cfg)
    shape = _image_shape(info)
    _check_size(shape, cfg, ("first_kernel", "kernel"))
    _check_split(cfg, (("hidden", 1), ("out_hidden", 1)), shape[2])
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    vocab_size = int(getattr(info, "vocab_size", 0) or 0)
    if cfg.conditioning == "label":
        require_labels(num_classes, "config.model.conditioning")
    if cfg.conditioning == "caption" and vocab_size < 1:
        raise ConfigError(f"config.model.conditioning: 'caption' needs a dataset with captions "
                          f"(info.vocab_size={vocab_size})")
    net = _Conditioned(GatedPixelCNN(shape[2], int(info.num_levels), cfg.hidden, cfg.num_layers, cfg.first_kernel,
                                     cfg.kernel, cfg.out_hidden, cfg.dropout, dtype=compute_dtype(cfg.compute_dtype),
                                     remat=cfg.remat),
                       cfg.conditioning, num_classes, vocab_size, cfg.cond_dim)

    def split(cond):
        cond = cond or {}
        return cond.get("label"), cond.get("caption_tokens")

    def apply_fn(params, x, cond, train, rngs):
        return net.apply(params, x, *split(cond), train, rngs=rngs)

    def init_fn(key, x, cond):
        return net.init(key, x, *split(cond))

    def cached_sample(params, key, num, cond, temperature):
        h = net.apply(params, *split(cond), method=_Conditioned.vector)  # [num, E] or None
        return pixelcnn_cached.sample_gated_pixelcnn(net.net, {"params": params["params"]["net"]}, key, num, shape,
                                                     h, temperature)

    return _make_bundle(name=cfg.name, apply_fn=apply_fn, init_fn=init_fn, image_shape=shape,
                        num_levels=int(info.num_levels), temperature=cfg.temperature,
                        conditioning=cfg.conditioning, num_classes=num_classes, cached_sample=cached_sample)


def make_pixelcnn(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's PixelCNN: :func:`build_pixelcnn` ``.model``."""
    return build_pixelcnn(cfg, info).model


def make_pixelrnn(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's PixelRNN: :func:`build_pixelrnn` ``.model``."""
    return build_pixelrnn(cfg, info).model


def make_gated_pixelcnn(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's gated PixelCNN: :func:`build_gated_pixelcnn` ``.model``."""
    return build_gated_pixelcnn(cfg, info).model
