"""Variational autoencoders: VAE, beta-VAE, conditional VAE, IWAE-trained VAE.

Generative model ``z ~ N(0, I)``, ``x | z ~ p_theta(x | z)`` with a per-pixel likelihood
(:class:`gen_jax.latent.objectives.PixelLikelihood`); amortized posterior
``q_phi(z | x) = N(mu(x), diag sigma^2(x))`` (Kingma & Welling 2014; Rezende et al. 2014).

* Training maximizes the beta-ELBO (Kingma & Welling 2014, Eq. 10; Higgins et al. 2017,
  Eq. 4) or, with ``train_iwae_k > 1``, the IWAE bound (Burda et al. 2016, Eq. 8).
* ``log_prob`` is the IWAE bound with ``iwae_k`` samples (``bpd_kind = 'iwae-<k>'``, or
  ``'elbo'`` for ``k = 1``) on the density of the dequantized data (DESIGN.md convention):
  ``log P(levels) + D log K`` for the discrete likelihoods (categorical, logistic mixture),
  the Gaussian density of ``y = (level + u) / K`` for the Gaussian likelihood. The Bernoulli
  decoder on grey levels is not a normalized likelihood, so that model has no ``log_prob``.
  The encoder always sees the quantized image, a function of the dequantized ``y``, so
  ``q(z | x)`` is a valid proposal for the density of ``y`` too.
* Conditional VAE (Sohn et al. 2015, Sec. 4): a label or caption embedding is fed to both
  the encoder ``q(z | x, y)`` and the decoder ``p(x | z, y)``; the prior is kept at
  ``N(0, I)`` (the simplification of their Sec. 4.2 baseline "CVAE" with a fixed prior).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, from_config
from gen_jax.latent import networks, objectives
from gen_jax.model import GenerativeModel, check_image_batch
from gen_jax.nn.embeddings import CaptionEncoder, LabelEmbedding

ENCODERS = ("mlp", "conv")
CONDITIONINGS = ("none", "label", "caption")


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """``config.model`` of a VAE (built with ``from_config(VAEConfig, cfg, 'config.model')``).

    Attributes:
      name: model name (tables, file names).
      encoder: ``'mlp'`` or ``'conv'`` (the decoder mirrors it).
      hidden: dense widths of the encoder (the decoder uses them reversed).
      conv_features: channels per conv stage (``encoder='conv'``).
      activation: one of :data:`gen_jax.latent.networks.ACTIVATIONS`.
      latent_dim: ``Z``.
      likelihood: ``'bernoulli' | 'gaussian' | 'categorical' | 'logistic_mixture'``.
      num_mixtures: logistic mixture components.
      gaussian_scale: fixed scale of the Gaussian likelihood on ``[0, 1]`` data; ``0`` learns
        a per-pixel log-scale.
      beta: KL weight (Higgins et al. 2017); 1 is the plain VAE.
      conditioning: ``'none' | 'label' | 'caption'``.
      cond_dim: width of the condition embedding.
      iwae_k: importance samples of ``log_prob`` (evaluation).
      iwae_chunk: samples per chunk when evaluating the IWAE bound.
      train_iwae_k: importance samples of the training objective (1 = the ELBO).
      sample_mean: ``sample`` returns the mean of ``p(x | z)`` (quantized to the levels)
        instead of a draw from it; smoother images, but no longer samples of the model's
        distribution (the usual VAE figure convention). Default ``False``.
    """

    name: str = "vae"
    encoder: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    conv_features: tuple[int, ...] = (32, 64)
    activation: str = "gelu"
    latent_dim: int = 16
    likelihood: str = "categorical"
    num_mixtures: int = 5
    gaussian_scale: float = 0.0
    beta: float = 1.0
    conditioning: str = "none"
    cond_dim: int = 32
    iwae_k: int = 1000
    iwae_chunk: int = 100
    train_iwae_k: int = 1
    sample_mean: bool = False

    def __post_init__(self):
        def bad(field, msg):
            raise ConfigError(f"config.model.{field}: {msg}")

        if self.encoder not in ENCODERS:
            bad("encoder", f"must be one of {list(ENCODERS)}, got {self.encoder!r}")
        if self.likelihood not in objectives.LIKELIHOODS:
            bad("likelihood", f"must be one of {list(objectives.LIKELIHOODS)}, got {self.likelihood!r}")
        if self.conditioning not in CONDITIONINGS:
            bad("conditioning", f"must be one of {list(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.activation not in networks.ACTIVATIONS:
            bad("activation", f"must be one of {sorted(networks.ACTIVATIONS)}, got {self.activation!r}")
        if any(h < 1 for h in self.hidden):
            bad("hidden", f"widths must be >= 1, got {self.hidden}")
        if not self.conv_features or any(f < 1 for f in self.conv_features):
            bad("conv_features", f"need positive channel counts, got {self.conv_features}")
        for f in ("latent_dim", "num_mixtures", "cond_dim", "iwae_k", "iwae_chunk", "train_iwae_k"):
            if getattr(self, f) < 1:
                bad(f, f"must be >= 1, got {getattr(self, f)}")
        if self.gaussian_scale < 0:
            bad("gaussian_scale", f"must be >= 0 (0 = learned), got {self.gaussian_scale}")
        if self.beta < 0:
            bad("beta", f"must be >= 0, got {self.beta}")
        if self.train_iwae_k > 1 and self.beta != 1.0:
            bad("beta", "beta != 1 applies to the ELBO objective only (train_iwae_k must be 1)")


class VAENet(nn.Module):
    """Encoder, decoder and condition embedding of a VAE, as methods of one module.

    Methods: ``embed(label, tokens) -> [B, E] | None``; ``encode(x, c) -> (mean, log_var)``
    each ``[B, Z]``; ``decode(z, c) -> [N, H, W, F]``.
    """

    cfg: VAEConfig
    image_shape: tuple[int, int, int]
    out_features: int
    num_classes: int = 0
    vocab_size: int = 0

    def setup(self):
        cfg = self.cfg
        if cfg.encoder == "mlp":
            self.encoder = networks.MLPEncoder(cfg.hidden, cfg.latent_dim, cfg.activation)
            self.decoder = networks.MLPDecoder(tuple(reversed(cfg.hidden)), self.image_shape,
                                               self.out_features, cfg.activation)
        else:
            self.encoder = networks.ConvEncoder(cfg.conv_features, cfg.hidden, cfg.latent_dim, cfg.activation)
            self.decoder = networks.ConvDecoder(cfg.conv_features, tuple(reversed(cfg.hidden)),
                                                self.image_shape, self.out_features, cfg.activation)
        if cfg.conditioning == "label":
            self.cond_embed = LabelEmbedding(self.num_classes, cfg.cond_dim)
        elif cfg.conditioning == "caption":
            self.cond_embed = CaptionEncoder(self.vocab_size, features=cfg.cond_dim)

    def embed(self, label=None, tokens=None):
        if self.cfg.conditioning == "label":
            return self.cond_embed(label)
        if self.cfg.conditioning == "caption":
            return self.cond_embed(tokens)
        return None

    def encode(self, x, c=None):
        return self.encoder(2.0 * x - 1.0, c)

    def decode(self, z, c=None):
        return self.decoder(z, c)

    def __call__(self, x, label=None, tokens=None):
        c = self.embed(label, tokens)
        mean, _ = self.encode(x, c)
        return self.decode(mean, c)


def as_vae_config(cfg: Any) -> VAEConfig:
    """``cfg`` if it is a :class:`VAEConfig`, else ``from_config(VAEConfig, cfg, 'config.model')``."""
    return cfg if isinstance(cfg, VAEConfig) else from_config(VAEConfig, cfg, "config.model")


def make_vae(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the VAE bundle of pure functions.

    Args:
      cfg: :class:`VAEConfig` or ``config.model`` (``ConfigDict`` / mapping).
      info: dataset info with ``image_shape``, ``num_levels``, ``num_classes``,
        ``vocab_size`` (captions) attributes.

    Returns:
      :class:`GenerativeModel` (family ``'latent'``) with

      * ``loss(params, batch, key) -> (-mean objective, {recon, kl, elbo[, iwae]})``;
      * ``log_prob(params, batch, key) -> [B]`` IWAE-``iwae_k`` bound (see module docstring);
      * ``sample(params, key, num, cond=None) -> [num, H, W, C]`` in ``[0, 1]``: ``z ~ N(0, I)``,
        then a draw from ``p(x | z)`` (the levels / (K - 1); the Bernoulli decoder returns
        its mean; ``sample_mean=True`` returns the mean of ``p(x | z)`` on the levels).
        Conditional models need ``cond={'label': [num]}`` or ``{'caption_tokens': [num, L]}``;
      * extras ``encode(params, image, cond=None) -> (mean, log_var)``,
        ``decode(params, z, cond=None) -> [N, H, W, C]`` (mean image),
        ``reconstruct(params, batch) -> [B, H, W, C]`` (decode of the posterior mean).
    """
    cfg = as_vae_config(cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    vocab_size = int(getattr(info, "vocab_size", 0) or 0)
    if cfg.conditioning == "label" and num_classes < 1:
        raise ConfigError("config.model.conditioning: 'label' needs a dataset with labels "
                          f"(info.num_classes={num_classes})")
    if cfg.conditioning == "caption" and vocab_size < 1:
        raise ConfigError("config.model.conditioning: 'caption' needs a dataset with captions "
                          f"(info.vocab_size={vocab_size})")
    lik = objectives.PixelLikelihood(cfg.likelihood, image_shape, int(info.num_levels),
                                     cfg.num_mixtures, cfg.gaussian_scale)
    net = VAENet(cfg, image_shape, lik.out_features, num_classes, vocab_size)
    z_dim = cfg.latent_dim
    conditional = cfg.conditioning != "none"

    def check_image(x):
        check_image_batch(x, image_shape)

    def cond_inputs(cond: Optional[dict], n: int, where: str):
        """The (label, tokens) the network's embedding needs, checked."""
        if not conditional:
            return None, None
        key = "label" if cfg.conditioning == "label" else "caption_tokens"
        if cond is None or key not in cond:
            raise ValueError(f"{where}: this conditional VAE ({cfg.conditioning}) needs "
                             f"'{key}' in its condition")
        v = jnp.asarray(cond[key])
        if v.shape[0] != n:
            raise ValueError(f"{where}: cond['{key}'] has {v.shape[0]} rows, expected {n}")
        return (v, None) if key == "label" else (None, v)

    def embed(params, cond, n, where):
        label, tokens = cond_inputs(cond, n, where)
        if not conditional:
            return None
        return net.apply(params, label, tokens, method=VAENet.embed)

    def encode_c(params, x, c):
        return net.apply(params, x, c, method=VAENet.encode)

    def decode_c(params, z, c):
        return net.apply(params, z, c, method=VAENet.decode)

    def init(key, batch):
        x = batch["image"]
        check_image(x)
        label, tokens = cond_inputs(batch, x.shape[0], "init batch")
        return net.init(key, x, label, tokens)

    def log_weights(params, key, target, mean, log_var, c, n):
        """``n`` importance samples: ``(log w [n, B], log p(x|z) [n, B])``."""
        b = mean.shape[0]
        z = dist.gaussian_sample(key, mean[None], jnp.broadcast_to(log_var, (n, b, z_dim)))  # [n, B, Z]
        cn = None if c is None else jnp.broadcast_to(c[None], (n,) + c.shape).reshape(n * b, -1)
        out = decode_c(params, z.reshape(n * b, z_dim), cn)
        tgt = jnp.broadcast_to(target[None], (n,) + target.shape).reshape(n * b, *target.shape[1:])
        recon = lik.log_prob(out, tgt).reshape(n, b)
        log_prior = dist.gaussian_log_prob(z, 0.0, jnp.zeros((), z.dtype))
        log_q = dist.gaussian_log_prob(z, mean[None], log_var[None])
        return recon + log_prior - log_q, recon

    def loss(params, batch, key):
        x = batch["image"]
        check_image(x)
        k_deq, k_z = jax.random.split(key)
        target = lik.target(k_deq, x)
        c = embed(params, batch, x.shape[0], "loss batch")
        mean, log_var = encode_c(params, x, c)
        if cfg.train_iwae_k == 1:
            z = dist.gaussian_sample(k_z, mean, log_var)
            recon = lik.log_prob(decode_c(params, z, c), target)
            terms = objectives.elbo(recon, mean, log_var, cfg.beta)  # dict of [B]
            metrics = {k: terms[k] for k in ("recon", "kl", "elbo")}
            return -jnp.mean(terms["objective"]), metrics
        lw, recon = log_weights(params, k_z, target, mean, log_var, c, cfg.train_iwae_k)
        iwae = jax.nn.logsumexp(lw, axis=0) - jnp.log(float(cfg.train_iwae_k))  # [B], Burda Eq. 8
        metrics = {"recon": jnp.mean(recon, 0), "kl": dist.kl_standard_normal(mean, log_var),
                   "elbo": jnp.mean(lw, 0), "iwae": iwae}
        return -jnp.mean(iwae), metrics

    def log_prob(params, batch, key):
        x = batch["image"]
        check_image(x)
        k_deq, k_z = jax.random.split(key)
        target = lik.target(k_deq, x)
        c = embed(params, batch, x.shape[0], "log_prob batch")
        mean, log_var = encode_c(params, x, c)
        fn = lambda k, n: log_weights(params, k, target, mean, log_var, c, n)[0]
        return objectives.iwae_bound(k_z, fn, cfg.iwae_k, cfg.iwae_chunk) + lik.density_offset

    def sample(params, key, num, cond=None):
        k_z, k_x = jax.random.split(key)
        c = embed(params, cond, num, "sample")
        z = jax.random.normal(k_z, (num, z_dim), jnp.float32)
        out = decode_c(params, z, c)
        if cfg.sample_mean:
            k = lik.num_levels
            return (jnp.round(lik.mean(out) * (k - 1)) / (k - 1)).astype(jnp.float32)
        return lik.sample(k_x, out).astype(jnp.float32)

    def encode(params, image, cond=None):
        check_image(image)
        return encode_c(params, image, embed(params, cond, image.shape[0], "encode"))

    def decode(params, z, cond=None):
        return lik.mean(decode_c(params, z, embed(params, cond, z.shape[0], "decode")))

    def reconstruct(params, batch):
        mean, _ = encode(params, batch["image"], batch)
        return decode(params, mean, batch)

    has_density = lik.density_offset is not None
    kind = "elbo" if cfg.iwae_k == 1 else f"iwae-{cfg.iwae_k}"
    return GenerativeModel(
        name=cfg.name, family="latent", init=init, loss=loss, sample=sample,
        log_prob=log_prob if has_density else None, bpd_kind=kind if has_density else None,
        conditional=conditional,
        condition_key="caption_tokens" if cfg.conditioning == "caption" else "label",
        extras={"encode": encode, "decode": decode, "reconstruct": reconstruct})
