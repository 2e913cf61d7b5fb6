"""VQ-VAE (van den Oord et al. 2017): an image tokenizer, ``make_vqvae(config.model, info)``.

An encoder maps an image ``x [B, H, W, C]`` in ``[0, 1]`` (fed as ``2 x - 1``) to ``z_e [B, h, w,
D]`` on the ``h x w = H / 2^n x W / 2^n`` grid (:class:`gen_jax.latent.vq_networks.Encoder`),
each ``z_e`` is replaced by its nearest code of the codebook ``E [K, D]``
(:mod:`gen_jax.latent.quantizer`) and the decoder maps the codes back to an image
(:class:`~gen_jax.latent.vq_networks.Decoder`). The loss per example is Eq. 3 with a Gaussian
decoder of fixed variance (``-log p(x | z_q)`` = squared error up to constants)::

    L(x) = mean_pixels (x - dec(z_e + sg(z_q - z_e)))^2 + beta mean ||z_e - sg(z_q)||^2
           [ + mean ||sg(z_e) - z_q||^2 with codebook='loss' ],

the codebook being either trained by that last term or, by default, the EMA of the encoder
outputs assigned to each code (App. A.1; ``codebook='ema'``), kept with the k-means
initialization, dead-code resets and the usage counters in the model state ``{'vq': ...}``
of one stateful phase (only training advances it). As in Razavi et al. 2019 (VQ-VAE-2), the
EMA codebook replaces the codebook loss by default.

Logged per step: ``mse`` (``[0, 1]`` images), ``commitment``, ``codebook_loss``, and the
quantizer's ``perplexity``, ``codes_used_batch``, ``codes_reset`` and ``codes_used_window``
(fraction of codes used over the last ``usage_window`` steps: set it to one epoch).

No sampler and no likelihood: a VQ-VAE's prior over its codes is a second stage (a
PixelCNN or transformer over the token grids, Sec. 3.2 and 4.2), and without it the bound with
a uniform prior and a fixed-variance Gaussian decoder would not be a useful density. The model
is a codec of kind ``'ids'`` (the contract allows a codec-only tokenizer):

* ``encode(params, x, cond=None) -> int32 ids [B, h, w]``;
* ``decode(params, ids, cond=None, key=None) -> [B, H, W, C]`` in ``[0, 1]`` (``dec(E[ids])``
  clipped; deterministic, ``key`` unused);
* ``codec.continuous``: the same space seen continuously: ``encode -> z_e [B, h, w, D]`` (before
  quantization) and ``decode(z)``: ``dec(z_q)`` of the nearest codes ``z_q`` of any ``z``
  (what latent diffusion over a VQ-regularized autoencoder decodes, Rombach et al. 2022, Sec. 3.1).

Both read the EMA codebook from ``params['model_state']['vq']`` (:data:`gen_jax.model.MODEL_STATE`;
:func:`gen_jax.train.loop.eval_params` puts it there). Ids outside ``[0, K)``, of the wrong grid
or dtype, and images of the wrong size are refused with the argument named; image sizes that
the downsampling factor ``2^n`` does not divide, and bad codebook sizes or code dimensions, with
a ``ConfigError`` naming the field.

Reused by VQGAN: :class:`VQTokenizer` (networks + quantizer + state on ``[0, 1]`` images, with
:meth:`VQTokenizer.forward` for a training step) and :func:`reconstruction_mse` (the
reconstruction term); :func:`reconstruction_nmse` scores any codec over a split.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.checks import DataSpec, InputError, check_ids
from gen_jax.config import ConfigError, typed
from gen_jax.latent.quantizer import QuantizerConfig, VectorQuantizer, VQOutput
from gen_jax.latent.vq_networks import Decoder, Encoder, Norm, check_widths, grid_shape
from gen_jax.model import MODEL_STATE, Codec, GenerativeModel, Phase, Training, check_image_batch

STATE = "vq"


@dataclasses.dataclass(frozen=True)
class VQVAEConfig(QuantizerConfig):
    """``config.model`` of a VQ-VAE: the quantizer's fields (:class:`QuantizerConfig`: ``num_codes``,
    ``code_dim``, ``beta``, ``codebook``, ``decay``, ``eps``, ``cosine``, ``kmeans_iters``,
    ``dead_threshold``, ``reset_sampling``, ``usage_window``, ``init_scale``) and the networks'.

    Attributes:
      name: model name.
      channels: widths of the encoder stages (the decoder mirrors them).
      downsample: stride-2 stages ``n``: the code grid is ``H / 2^n x W / 2^n``.
      res_blocks: residual blocks per stage.
      norm: ``'none'`` or ``'group'`` (GroupNorm with ``groups`` groups before each activation).
      groups: GroupNorm groups (must divide every stage width).
    """

    name: str = "vqvae"
    channels: tuple[int, ...] = (64, 128)
    downsample: int = 2
    res_blocks: int = 2
    norm: Norm = "none"
    groups: int = 32

    def __post_init__(self):
        QuantizerConfig.__post_init__(self)
        self.positive("downsample", "groups")
        self.nonnegative("res_blocks")
        try:
            check_widths(self.channels, self.downsample, self.norm, self.groups, f"{self.PATH}.channels")
        except ConfigError as e:
            self.require(False, "channels", str(e).split(": ", 1)[1])


def quantizer_config(cfg: QuantizerConfig) -> QuantizerConfig:
    """The :class:`QuantizerConfig` part of a model config that extends it."""
    return QuantizerConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(QuantizerConfig)})


def reconstruction_mse(x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """``mean_pixels (x - x_hat)^2`` per example ``[B]`` (the Gaussian ``-log p(x | z_q)`` of Eq. 3
    up to its scale and constant)."""
    return jnp.mean(jnp.square(x - x_hat).reshape(x.shape[0], -1), -1)


class VQTokenizer:
    """Encoder, quantizer and decoder of a :class:`VQVAEConfig` on images ``image_shape``.

    Params ``{'encoder', 'decoder'}`` (+ ``'quantizer': {'codebook'}`` with ``codebook='loss'``);
    state ``{'vq': quantizer state}`` (:class:`gen_jax.latent.quantizer.VectorQuantizer`).
    Images are ``[B, H, W, C]`` in ``[0, 1]``; decoder outputs are linear (``[0, 1]`` scale).
    """

    def __init__(self, cfg: VQVAEConfig, image_shape):
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3:
            raise ConfigError(f"config.dataset: a VQ tokenizer needs images (H, W, C), got image_shape {shape}")
        self.cfg, self.image_shape = cfg, shape
        self.grid = grid_shape(shape, cfg.downsample)
        self.num_codes = cfg.num_codes
        nets = dict(channels=tuple(cfg.channels), downsample=cfg.downsample, res_blocks=cfg.res_blocks,
                    norm=cfg.norm, groups=cfg.groups)
        self.encoder = Encoder(out_dim=cfg.code_dim, **nets)
        self.decoder = Decoder(out_channels=shape[-1], **nets)
        self.vq = VectorQuantizer(quantizer_config(cfg))

    def images(self, x: jax.Array, where: str = "batch['image']") -> jax.Array:
        check_image_batch(x, self.image_shape, where)
        return x.astype(jnp.float32)

    def init(self, key: jax.Array, x: jax.Array) -> tuple[dict, dict]:
        """``(params, state)``; the codebook from the encoder outputs of ``x`` (the first batch)."""
        ke, kd, kq = jax.random.split(key, 3)
        pe = self.encoder.init(ke, 2.0 * self.images(x) - 1.0)["params"]
        z_e = self.encoder.apply({"params": pe}, 2.0 * x - 1.0)
        pq, sq = self.vq.init(kq, z_e)
        params = {"encoder": pe, "decoder": self.decoder.init(kd, z_e)["params"]}
        if pq:
            params["quantizer"] = pq
        return params, {STATE: sq}

    def encode_continuous(self, params: Mapping, x: jax.Array) -> jax.Array:
        """``z_e [B, h, w, D]`` for images ``x [B, H, W, C]`` in ``[0, 1]``."""
        return self.encoder.apply({"params": params["encoder"]}, 2.0 * x - 1.0)

    def quantize(self, params: Mapping, state: Mapping, z_e: jax.Array) -> VQOutput:
        return self.vq.quantize(params.get("quantizer", {}), state[STATE], z_e)

    def decode_codes(self, params: Mapping, z_q: jax.Array) -> jax.Array:
        """The decoder's linear output ``[B, H, W, C]`` for codes ``z_q [B, h, w, D]``."""
        return self.decoder.apply({"params": params["decoder"]}, z_q)

    def forward(self, params: Mapping, state: Mapping, x: jax.Array, key: Optional[jax.Array] = None):
        """One pass ``x -> z_e -> z_q -> x_hat``: ``(x_hat [B, H, W, C] linear, VQOutput, new state,
        metrics)``; with a ``key`` (training) the quantizer state advances (EMA, resets, usage),
        without one it is returned unchanged and metrics are ``{}``."""
        z_e = self.encode_continuous(params, self.images(x))
        out = self.quantize(params, state, z_e)
        x_hat = self.decode_codes(params, out.z_q)
        if key is None:
            return x_hat, out, state, {}
        new, metrics = self.vq.update(params.get("quantizer", {}), state[STATE], z_e, out.ids, key)
        return x_hat, out, {**state, STATE: new}, metrics

    def check_ids(self, ids: Any, where: str = "decode: ids") -> jax.Array:
        """``ids`` as int32 ``[B, h, w]``; an ``InputError`` naming ``where`` for another dtype or
        grid, or (when concrete) ids outside ``[0, K)``."""
        h, w = self.grid
        if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise InputError(f"{where}: token ids must be an int array [B, {h}, {w}] of codebook ids, got "
                             f"{getattr(ids, 'dtype', type(ids).__name__)}")
        if ids.ndim != 3 or tuple(ids.shape[1:]) != (h, w):
            raise InputError(f"{where} must be [B, {h}, {w}] (the code grid), got shape {tuple(ids.shape)}")
        check_ids(ids, self.num_codes, where, "codebook ids")
        return jnp.asarray(ids, jnp.int32)

    def encode(self, params: Mapping, state: Mapping, x: jax.Array) -> jax.Array:
        """int32 ids ``[B, h, w]`` of images ``x [B, H, W, C]`` in ``[0, 1]``."""
        z_e = self.encode_continuous(params, self.images(x, "encode: x"))
        return self.quantize(params, state, z_e).ids

    def decode(self, params: Mapping, state: Mapping, ids: jax.Array) -> jax.Array:
        """``[B, H, W, C]`` in ``[0, 1]`` for int ids ``[B, h, w]`` in ``[0, K)``."""
        e = self.vq.decode_ids(params.get("quantizer", {}), state[STATE], self.check_ids(ids))
        return jnp.clip(self.decode_codes(params, e), 0.0, 1.0).astype(jnp.float32)


def eval_state(params: Any, name: str = "vqvae") -> Mapping:
    """The model state a codec reads from ``params[MODEL_STATE]`` (a clear error when absent)."""
    state = params.get(MODEL_STATE) if isinstance(params, Mapping) else None
    if state is None or STATE not in state:
        raise ValueError(f"{name} encode/decode: params has no params['{MODEL_STATE}']['{STATE}'] (the codebook "
                         f"and its statistics); evaluate with gen_jax.train.loop.eval_params(state, model)")
    return state


def make_vqvae(cfg: Any, info: Any) -> GenerativeModel:
    """The VQ-VAE (module docstring) on a dataset with ``info`` (``image_shape``, ``num_levels``):
    a :class:`GenerativeModel` of family ``'latent'`` with one stateful phase and a codec of kind
    ``'ids'`` (no sampler, no likelihood)."""
    cfg = typed(VQVAEConfig, cfg, "config.model")
    tok = VQTokenizer(cfg, info.image_shape)

    def init(key, batch):
        return tok.init(key, batch["image"])[0]

    def init_model_state(key, batch):
        return tok.init(key, batch["image"])[1]

    def loss(params, state, batch, key):
        """Eq. 3 per example (module docstring), averaged over the batch."""
        x = tok.images(batch["image"])
        x_hat, out, new_state, m = tok.forward(params, state, x, key)
        mse = reconstruction_mse(x, x_hat)                                           # [B]
        m = {**m, "mse": mse, "commitment": out.commitment, "codebook_loss": out.codebook}
        return jnp.mean(mse + out.loss), (m, new_state)

    def encode(params, x, cond=None):
        """``x [B, H, W, C]`` in [0, 1] -> int32 ids ``[B, h, w]`` (nearest codes, Eq. 1)."""
        del cond
        return tok.encode(params, eval_state(params, cfg.name), x)

    def decode(params, ids, cond=None, key=None):
        """int ids ``[B, h, w]`` in ``[0, K)`` -> ``[B, H, W, C]`` in [0, 1] (``key`` unused)."""
        del cond, key
        return tok.decode(params, eval_state(params, cfg.name), ids)

    def encode_latents(params, x, cond=None):
        """``x [B, H, W, C]`` in [0, 1] -> the pre-quantization latents ``z_e [B, h, w, D]``."""
        del cond
        return tok.encode_continuous(params, tok.images(x, "encode: x"))

    def decode_latents(params, z, cond=None, key=None):
        """``z [B, h, w, D]`` -> ``dec(z_q)`` in [0, 1], ``z_q`` the nearest codes of ``z`` (Eq. 1)."""
        del cond, key
        h, w = tok.grid
        if getattr(z, "ndim", None) != 4 or tuple(z.shape[1:]) != (h, w, cfg.code_dim):
            raise InputError(f"decode: z must be [B, {h}, {w}, {cfg.code_dim}] (continuous latents), got shape "
                             f"{tuple(getattr(z, 'shape', ()))}")
        z_q = tok.quantize(params, eval_state(params, cfg.name), z).z_q
        return jnp.clip(tok.decode_codes(params, z_q), 0.0, 1.0).astype(jnp.float32)

    phase = Phase(None, loss=loss, name="vqvae", stateful=True)
    return GenerativeModel(
        name=cfg.name, family="latent",
        training=Training(init=init, phases=(phase,), init_model_state=init_model_state),
        codec=Codec(encode, decode, kind="ids", continuous=Codec(encode_latents, decode_latents)),
        data=DataSpec(tok.image_shape, int(info.num_levels), 0))


def reconstruction_nmse(codec: Codec, params: Any, images: np.ndarray, batch_size: int = 250) -> dict:
    """``decode(encode(x))`` over a split ``images [N, H, W, C]`` in [0, 1]: ``{'mse', 'variance',
    'nmse'}`` with ``nmse = mse / variance`` (the variance of all pixel values of the split)."""
    fn = jax.jit(lambda p, x: codec.decode(p, codec.encode(p, x)))
    images = np.asarray(images, np.float32)
    sq, n = 0.0, len(images)
    for i in range(0, n, batch_size):
        chunk = images[i:i + batch_size]
        m = len(chunk)
        if m < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
        rec = np.asarray(fn(params, chunk))[:m]
        sq += float(np.sum(np.square(rec.astype(np.float64) - chunk[:m])))
    mse = sq / images.size
    var = float(np.var(images.astype(np.float64)))
    return {"mse": mse, "variance": var, "nmse": mse / var}
