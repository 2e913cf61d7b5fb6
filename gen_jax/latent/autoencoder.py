"""Deterministic autoencoder with ex-post Gaussian sampling of its codes.

An autoencoder ``x -> f(x) = z -> g(z)`` trained on a reconstruction loss (Hinton &
Salakhutdinov 2006) has no prior over codes, so it is not by itself a generative model.
To sample honestly, this model fits a density to the codes of the training data, as in the
"ex-post density estimation" of Ghosh et al. 2020 ("From Variational to Deterministic
Autoencoders", Sec. 4; they fit a GMM, here one diagonal Gaussian): a gradient-free phase
after every train step updates running moments of the batch codes,

    m <- (1 - a) m + a mean_b z_b,   s <- (1 - a) s + a mean_b z_b^2,   a = max(1 / (n + 1), 1 - decay),

and the sampler decodes ``z ~ N(m, diag(s - m^2))``. Nothing is assumed about the code
distribution being ``N(0, I)``. The model has no likelihood (``likelihood = None``).

Params: ``{'net': flax variables, 'codes': {'mean': [Z], 'sq_mean': [Z], 'count': []}}``;
phases: ``Phase('net', loss)`` then ``Phase(None, update=code_stats)``. Reconstructions,
traversals and interpolations go through the model's codec
(:func:`gen_jax.latent.traversal.reconstruct` and friends).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import Checked, typed
from gen_jax.latent import networks, objectives
from gen_jax.model import Codec, DataSpec, GenerativeModel, Phase, Sampler, Training, check_image_batch


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(Checked):
    """``config.model`` of a deterministic autoencoder.

    Attributes:
      name: model name.
      encoder: ``'mlp'`` or ``'conv'`` (the decoder mirrors it).
      hidden: dense widths of the encoder (reversed for the decoder).
      conv_features: channels per conv stage (``encoder='conv'``).
      activation: one of :data:`gen_jax.latent.networks.ACTIVATIONS`.
      latent_dim: code size ``Z``.
      loss: ``'bce'`` or ``'mse'`` (:func:`gen_jax.latent.objectives.autoencoder_loss`).
      code_decay: decay of the running code moments used by the sampler.
    """

    name: str = "autoencoder"
    encoder: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    conv_features: tuple[int, ...] = (32, 64)
    activation: networks.Activation = "gelu"
    latent_dim: int = 16
    loss: objectives.AutoencoderLoss = "bce"
    code_decay: float = 0.99

    def __post_init__(self):
        self.positive("latent_dim")
        self.require(all(h >= 1 for h in self.hidden), "hidden", f"widths must be >= 1, got {self.hidden}")
        self.require(bool(self.conv_features) and all(f >= 1 for f in self.conv_features), "conv_features",
                     f"need positive channel counts, got {self.conv_features}")
        self.in_range("code_decay", 0.0, 1.0, hi_open=True)


class AutoencoderNet(nn.Module):
    """``encode(x [B, H, W, C]) -> z [B, Z]``; ``decode(z) -> logits [B, H, W, C]``."""

    cfg: AutoencoderConfig
    image_shape: tuple[int, int, int]

    def setup(self):
        cfg, c = self.cfg, self.image_shape[-1]
        if cfg.encoder == "mlp":
            self.encoder = networks.MLPEncoder(cfg.hidden, cfg.latent_dim, cfg.activation, gaussian=False)
            self.decoder = networks.MLPDecoder(tuple(reversed(cfg.hidden)), self.image_shape, c, cfg.activation)
        else:
            self.encoder = networks.ConvEncoder(cfg.conv_features, cfg.hidden, cfg.latent_dim,
                                                cfg.activation, gaussian=False)
            self.decoder = networks.ConvDecoder(cfg.conv_features, tuple(reversed(cfg.hidden)),
                                                self.image_shape, c, cfg.activation)

    def encode(self, x):
        return self.encoder(2.0 * x - 1.0)

    def decode(self, z):
        return self.decoder(z)

    def __call__(self, x):
        return self.decode(self.encode(x))


def make_autoencoder(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the deterministic autoencoder bundle (see module docstring).

    Returns:
      :class:`GenerativeModel` (family ``'latent'``, no likelihood) with

      * ``training``: phases ``[Phase('net', loss), Phase(None, update=code_stats)]``;
      * ``sampler.sample(params, key, num, cond=None) -> [num, H, W, C]`` = ``sigmoid(g(z))``
        with ``z`` from the Gaussian fitted to the training codes;
      * ``codec``: ``encode(params, image, cond=None) -> z [B, Z]`` (the code ``f(x)``),
        ``decode(params, z, cond=None) -> [N, H, W, C]`` (``sigmoid(g(z))``).
    """
    cfg = typed(AutoencoderConfig, cfg, "config.model")
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    net = AutoencoderNet(cfg, image_shape)
    z_dim = cfg.latent_dim

    def check_image(x):
        check_image_batch(x, image_shape)

    def init(key, batch):
        check_image(batch["image"])
        codes = {"mean": jnp.zeros((z_dim,), jnp.float32), "sq_mean": jnp.ones((z_dim,), jnp.float32),
                 "count": jnp.zeros((), jnp.float32)}
        return {"net": net.init(key, batch["image"]), "codes": codes}

    def loss(params, batch, key):
        x = batch["image"]
        check_image(x)
        out = net.apply(params["net"], x)
        rec = objectives.autoencoder_loss(x, out, cfg.loss)  # [B]
        return jnp.mean(rec), {"recon_loss": rec}

    def code_stats(params, batch, key):
        z = jax.lax.stop_gradient(net.apply(params["net"], batch["image"], method=AutoencoderNet.encode))
        st = params["codes"]
        a = jnp.maximum(1.0 / (st["count"] + 1.0), 1.0 - cfg.code_decay)
        new = {"mean": (1 - a) * st["mean"] + a * jnp.mean(z, 0),
               "sq_mean": (1 - a) * st["sq_mean"] + a * jnp.mean(jnp.square(z), 0),
               "count": st["count"] + 1.0}
        out = dict(params)
        out["codes"] = new
        return out, {"code_norm": jnp.sqrt(jnp.sum(jnp.square(z), axis=1))}

    def code_std(params):
        st = params["codes"]
        return jnp.sqrt(jnp.maximum(st["sq_mean"] - jnp.square(st["mean"]), 1e-12))

    def sample(params, key, num, cond=None):
        z = params["codes"]["mean"] + code_std(params) * jax.random.normal(key, (num, z_dim), jnp.float32)
        return jax.nn.sigmoid(net.apply(params["net"], z, method=AutoencoderNet.decode)).astype(jnp.float32)

    def encode(params, image, cond=None):
        check_image(image)
        return net.apply(params["net"], image, method=AutoencoderNet.encode)

    def decode(params, z, cond=None):
        return jax.nn.sigmoid(net.apply(params["net"], z, method=AutoencoderNet.decode))

    phases = (Phase("net", loss=loss, name="net"), Phase(None, update=code_stats, name="code_stats"))
    return GenerativeModel(name=cfg.name, family="latent", training=Training(init=init, phases=phases),
                           sampler=Sampler(sample, "image"), codec=Codec(encode, decode),
                           data=DataSpec(image_shape, int(info.num_levels)))
