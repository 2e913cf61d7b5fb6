"""WaveNet (van den Oord et al. 2016) on 1-D signals as a :class:`~gen_jax.model.GenerativeModel`.

Data: a signal of ``T`` mu-law codes (Sec. 2.2, :mod:`gen_jax.data.mulaw`) is stored
as an "image" ``[T, 1, 1]`` with ``K = 256`` levels, so batches carry ``image`` float32
``[B, T, 1, 1] = code / 255``; ``label`` int32 ``[B]`` is the global condition (Sec. 2.5, the
timbre for the ``signals`` dataset) and ``local_cond`` int32 ``[B, F]`` (``F = T / hop``) the
local condition (per-frame pitch ids).

The network (:class:`gen_jax.autoregressive.wavenet.WaveNet`) defines the exact probability of
the codes by the chain rule (Eq. 1; conditional, Eq. 3),

    log P(x | h, y) = sum_t log softmax(logits_t)[x_t],

so the likelihood is exact. The model's capabilities:

* ``training``: one loss, ``loss(params, batch, key) -> (mean bits per sample,
  {'bits_per_sample': [B], 'nll': [B]})`` with ``bits_per_sample = -log2 P(x) / T`` and
  ``nll = -log P(x)`` nats per example;
* ``likelihood`` (``'exact'``, unit ``'dim'``): ``log_prob(params, batch, key) -> [B]`` =
  ``log P + T log 256`` (the library convention,
  :func:`gen_jax.autoregressive.common.density_log_prob`, so bits/dim = bits per sample);
* ``sampler`` (kind ``'signal'``): ``sample(params, key, num, cond=None, temperature=config)
  -> [num, T, 1, 1]`` in ``[0, 1]`` (``code / 255``) by the queue generator (Paine et al.
  2016, :func:`gen_jax.autoregressive.wavenet.generate_fast`), given ``cond = {'label': [num],
  'local_cond': [num, F]}`` (the keys the config's conditioning needs); ``render(x) ->
  [N, T]`` is the waveform in ``[-1, 1]`` (inverse mu-law of samples ``[N, T, 1, 1]`` in
  ``[0, 1]`` or of int codes ``[N, T]``);
* ``conditioning``: labels cycling ``0..C-1`` and, with local conditioning, the
  ``local_cond`` of a split's first examples.

:func:`build_wavenet` also returns (:class:`WaveNetParts`) ``sample_naive(params, key, num,
cond=None, temperature=config)`` (the full-recomputation sampler, same draws),
``logits(params, batch) -> [B, T, 256]``, ``teacher_forced_logits(params, batch)`` (the queue
steps fed the batch's codes), ``codes(batch) -> [B, T]`` and the ``network``.

Checks (``ValueError`` naming the argument and shape): images that are not ``[B, T, 1, 1]``;
a missing or misshapen ``label`` / ``local_cond`` when the config conditions on it; and, for
concrete (non-traced) inputs, labels or local ids out of range. ``init`` needs only shapes:
a batch without ``label`` / ``local_cond`` is initialised with zeros in their place.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.autoregressive import common
from gen_jax.data import mulaw
from gen_jax.autoregressive import wavenet as wn
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import (DataSpec, GenerativeModel, Likelihood, Sampler, label_conditioning, loss_training,
                           require_labels, split_conditioning)


@dataclasses.dataclass(frozen=True)
class WaveNetConfig(Checked):
    """``config.model`` of WaveNet (``typed(WaveNetConfig, cfg)``).

    Attributes:
      name: model name.
      residual_channels, gate_channels, skip_channels: ``R``, ``G``, ``S``.
      dilation_depth: ``n``: each stack has dilations ``1, 2, ..., 2^(n-1)`` (Sec. 2.1).
      stacks: how many times the dilation pattern repeats.
      kernel_size: taps of the dilated convolutions (>= 2); input_kernel_size: taps of the
        input causal convolution (>= 1).
      global_cond: condition on ``label`` (Eq. 3, ``h``); needs a labelled dataset.
      local_cond: condition on ``local_cond`` (Eq. 3, ``y``); needs ``info.local_cond_shape``.
      local_channels: width of the local-condition embedding.
      local_upsample: ``'repeat'`` or ``'transposed'`` (learned, kernel = stride = hop).
      temperature: divides the logits when sampling.
    """

    name: str = "wavenet"
    residual_channels: int = 32
    gate_channels: int = 32
    skip_channels: int = 64
    dilation_depth: int = 8
    stacks: int = 2
    kernel_size: int = 2
    input_kernel_size: int = 2
    global_cond: bool = True
    local_cond: bool = True
    local_channels: int = 16
    local_upsample: Literal["repeat", "transposed"] = "transposed"  # wavenet.UPSAMPLES
    temperature: float = 1.0

    def __post_init__(self):
        self.positive("residual_channels", "gate_channels", "skip_channels", "dilation_depth", "stacks",
                      "input_kernel_size", "local_channels", "temperature")
        self.require(self.kernel_size >= 2, "kernel_size",
                     f"must be >= 2 (a dilated causal conv needs a past tap), got {self.kernel_size}")
        self.require(self.dilation_depth <= 16, "dilation_depth",
                     f"must be <= 16 (dilation 2^15 already), got {self.dilation_depth}")

    @property
    def dilations(self) -> tuple[int, ...]:
        return tuple(2 ** i for i in range(self.dilation_depth)) * self.stacks


class WaveNetParts(NamedTuple):
    """WaveNet and the functions beyond the contract (module docstring).

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel`.
      network: the :class:`gen_jax.autoregressive.wavenet.WaveNet` module.
      decode_audio: ``x -> [N, T]`` waveform in ``[-1, 1]`` (also ``model.sampler.render``).
      sample_naive: ``(params, key, num, cond=None, temperature=config) -> [num, T, 1, 1]``
        by full recomputation (same draws as ``model.sampler.sample``).
      logits: ``(params, batch) -> [B, T, 256]`` (teacher forcing, the full network).
      teacher_forced_logits: ``(params, batch) -> [B, T, 256]`` by the queue steps.
      codes: ``batch -> [B, T]`` int mu-law codes of ``batch['image']``.
    """

    model: GenerativeModel
    network: wn.WaveNet
    decode_audio: Callable
    sample_naive: Callable
    logits: Callable
    teacher_forced_logits: Callable
    codes: Callable


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _conditioning(cfg: WaveNetConfig, num_classes: int):
    """Sampling conditions: labels cycling ``0..C-1`` (global) and/or a split's ``local_cond``."""
    if cfg.global_cond:
        return label_conditioning(num_classes, local_cond=cfg.local_cond)
    if cfg.local_cond:
        return split_conditioning("local_cond", with_label=False)
    return None


def build_wavenet(cfg: Any, info: Any) -> WaveNetParts:
    """WaveNet (module docstring) and its parts.

    Args:
      cfg: :class:`WaveNetConfig` or ``config.model``.
      info: dataset info: ``image_shape = (T, 1, 1)``, ``num_levels = 256``, ``num_classes``
        (global conditioning), ``local_cond_shape = (F,)`` and ``local_cond_levels`` (local).
    """
    cfg = typed(WaveNetConfig, cfg)
    shape = tuple(int(s) for s in info.image_shape)
    if len(shape) != 3 or shape[1:] != (1, 1):
        raise ConfigError(f"config.dataset.name: wavenet models 1-D signals stored as [T, 1, 1]; dataset "
                          f"{info.name!r} has image_shape {shape}")
    if int(info.num_levels) != mulaw.NUM_CODES:
        raise ConfigError(f"config.dataset.name: wavenet models 8-bit mu-law codes (256 levels); dataset "
                          f"{info.name!r} has {info.num_levels} levels")
    length = shape[0]
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    if cfg.global_cond:
        require_labels(num_classes, "config.model.global_cond")
    lc_shape = tuple(getattr(info, "local_cond_shape", ()) or ())
    lc_levels = int(getattr(info, "local_cond_levels", 0) or 0)
    hop = 1
    if cfg.local_cond:
        if len(lc_shape) != 1 or lc_levels < 1:
            raise ConfigError(f"config.model.local_cond: needs a dataset with a local-conditioning sequence "
                              f"(dataset {info.name!r} has local_cond_shape={lc_shape}, "
                              f"local_cond_levels={lc_levels})")
        if length % lc_shape[0]:
            raise ConfigError(f"config.model.local_cond: the signal length {length} is not a multiple of the "
                              f"{lc_shape[0]} local-conditioning frames")
        hop = length // lc_shape[0]
    net = wn.WaveNet(
        num_codes=mulaw.NUM_CODES, residual_channels=cfg.residual_channels,
        gate_channels=cfg.gate_channels, skip_channels=cfg.skip_channels, dilations=cfg.dilations,
        kernel_size=cfg.kernel_size, input_kernel_size=cfg.input_kernel_size,
        num_classes=num_classes if cfg.global_cond else 0,
        num_local_ids=lc_levels if cfg.local_cond else 0, hop=hop,
        local_channels=cfg.local_channels, local_upsample=cfg.local_upsample)
    log2 = math.log(2.0)

    # -- checks

    def codes_of(x, where):
        if x.ndim != 4 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{where} must be [B, T, 1, 1] = [B, {length}, 1, 1] (T = the sequence "
                             f"length of dataset {info.name!r}), got shape {tuple(x.shape)}")
        return common.to_levels(x, mulaw.NUM_CODES)[:, :, 0, 0]

    def conds_of(source, b, where, fill_missing=False):
        source = source or {}
        label = local = None
        if cfg.global_cond:
            if "label" not in source or source["label"] is None:
                if not fill_missing:
                    raise ValueError(f"{where}: the model is conditioned on the label (global_cond=True); "
                                     f"pass 'label' int [{b}] (got keys {sorted(source)})")
                label = jnp.zeros((b,), jnp.int32)
            else:
                label = jnp.asarray(source["label"])
                if label.shape != (b,):
                    raise ValueError(f"{where}['label'] must be [{b}], got shape {label.shape}")
                if _concrete(label) and label.size and (int(label.min()) < 0 or int(label.max()) >= num_classes):
                    raise ValueError(f"{where}['label'] values lie in [{int(label.min())}, {int(label.max())}]; "
                                     f"expected [0, {num_classes})")
                label = label.astype(jnp.int32)
        if cfg.local_cond:
            want = (b,) + lc_shape
            if "local_cond" not in source or source["local_cond"] is None:
                if not fill_missing:
                    raise ValueError(f"{where}: the model is locally conditioned (local_cond=True); pass "
                                     f"'local_cond' int [{b}, {lc_shape[0]}] (one id per {hop} samples; "
                                     f"got keys {sorted(source)})")
                local = jnp.zeros(want, jnp.int32)
            else:
                local = jnp.asarray(source["local_cond"])
                if local.shape != want:
                    raise ValueError(f"{where}['local_cond'] must be [B, F] = {want}, got shape {local.shape}")
                if _concrete(local) and local.size and (int(local.min()) < 0 or int(local.max()) >= lc_levels):
                    raise ValueError(f"{where}['local_cond'] values lie in [{int(local.min())}, "
                                     f"{int(local.max())}]; expected [0, {lc_levels})")
                local = local.astype(jnp.int32)
        return label, local

    # -- bundle functions

    def init(key, batch):
        codes = codes_of(batch["image"], "init batch['image']")
        label, local = conds_of(batch, codes.shape[0], "init batch", fill_missing=True)
        return net.init(key, codes, label, local)

    def logits(params, batch, where="logits batch"):
        codes = codes_of(batch["image"], f"{where}['image']")
        label, local = conds_of(batch, codes.shape[0], where)
        return net.apply(params, codes, label, local), codes

    def log_mass(params, batch, where):
        lg, codes = logits(params, batch, where)
        logp = jax.nn.log_softmax(lg, axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0], axis=-1)  # [B]

    def loss(params, batch, key):
        del key
        nll = -log_mass(params, batch, "loss batch")  # [B] nats
        bps = nll / (length * log2)
        return jnp.mean(bps), {"bits_per_sample": bps, "nll": nll}

    def log_prob(params, batch, key):
        del key
        return common.density_log_prob(log_mass(params, batch, "log_prob batch"), shape, mulaw.NUM_CODES)

    def _sample_with(gen, params, key, num, cond, temperature, where):
        label, local = conds_of(cond, num, where)
        codes = gen(net, params, key, num, length, label, local, temperature)
        return common.from_levels(codes, mulaw.NUM_CODES)[:, :, None, None]

    def sample(params, key, num, cond=None, temperature=cfg.temperature):
        return _sample_with(wn.generate_fast, params, key, num, cond, temperature, "sample cond")

    def sample_naive(params, key, num, cond=None, temperature=cfg.temperature):
        return _sample_with(wn.generate_naive, params, key, num, cond, temperature, "sample_naive cond")

    def teacher_forced(params, batch):
        codes = codes_of(batch["image"], "teacher_forced_logits batch['image']")
        label, local = conds_of(batch, codes.shape[0], "teacher_forced_logits batch")
        return wn.teacher_forced_logits(net, params, codes, label, local)

    def decode_audio(x):
        x = jnp.asarray(x) if not isinstance(x, np.ndarray) else x
        if x.ndim == 4:
            if tuple(x.shape[1:]) != shape:
                raise ValueError(f"decode_audio: samples must be [N, {length}, 1, 1], got shape {tuple(x.shape)}")
            codes = np.clip(np.round(np.asarray(x)[:, :, 0, 0] * 255), 0, 255).astype(np.int32) \
                if isinstance(x, np.ndarray) else common.to_levels(x, mulaw.NUM_CODES)[:, :, 0, 0]
        elif x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
            codes = x
        else:
            raise ValueError(f"decode_audio: expected samples [N, {length}, 1, 1] in [0, 1] or int codes "
                             f"[N, T], got {x.dtype} {tuple(x.shape)}")
        return mulaw.decode(codes)

    model = GenerativeModel(
        name=cfg.name, family="autoregressive", training=loss_training(init, loss),
        sampler=Sampler(sample, "signal", render=decode_audio), likelihood=Likelihood(log_prob, "exact"),
        conditioning=_conditioning(cfg, num_classes),
        data=DataSpec(shape, mulaw.NUM_CODES, num_classes if cfg.global_cond else 0))
    return WaveNetParts(model=model, network=net, decode_audio=decode_audio, sample_naive=sample_naive,
                        logits=lambda params, batch: logits(params, batch)[0], teacher_forced_logits=teacher_forced,
                        codes=lambda batch: codes_of(batch["image"], "codes batch['image']"))


def make_wavenet(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's WaveNet: :func:`build_wavenet` ``.model``."""
    return build_wavenet(cfg, info).model
