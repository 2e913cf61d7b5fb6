"""Variational autoencoders: VAE, beta-VAE, conditional VAE, IWAE-trained VAE.

Generative model ``z ~ N(0, I)``, ``x | z ~ p_theta(x | z)`` with a per-pixel likelihood
(:class:`gen_jax.latent.objectives.PixelLikelihood`); amortized posterior
``q_phi(z | x) = N(mu(x), diag sigma^2(x))`` (Kingma & Welling 2014; Rezende et al. 2014).

* Training maximizes the beta-ELBO (Kingma & Welling 2014, Eq. 10; Higgins et al. 2017,
  Eq. 4) or, with ``train_iwae_k > 1``, the IWAE bound (Burda et al. 2016, Eq. 8).
* The likelihood is the IWAE bound with ``iwae_k`` samples (kind ``'iwae-<k>'``, or
  ``'elbo'`` for ``k = 1``) on the density of the dequantized data (the README's Conventions):
  ``log P(levels) + D log K`` for the discrete likelihoods (categorical, logistic mixture),
  the Gaussian density of ``y = (level + u) / K`` for the Gaussian likelihood. The Bernoulli
  decoder on grey levels is not a normalized likelihood, so that model has no likelihood.
  The encoder always sees the quantized image, a function of the dequantized ``y``, so
  ``q(z | x)`` is a valid proposal for the density of ``y`` too.
* Conditional VAE (Sohn et al. 2015, Sec. 4): a label or caption embedding is fed to both
  the encoder ``q(z | x, y)`` and the decoder ``p(x | z, y)``; the prior is kept at
  ``N(0, I)`` (the simplification of their Sec. 4.2 baseline "CVAE" with a fixed prior).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, Checked, typed
from gen_jax.latent import networks, objectives
from gen_jax.model import (Codec, DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch, label_conditioning,
                           loss_training, require_labels, split_conditioning)
from gen_jax.nn.caption_encoder import bag_of_words_encoder
from gen_jax.nn.conditioning import LabelEmbedding
from gen_jax.nn.precision import check_compute_dtype, compute_dtype, to_float32


@dataclasses.dataclass(frozen=True)
class VAEConfig(Checked):
    """``config.model`` of a VAE (built with ``typed(VAEConfig, cfg, 'config.model')``).

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
      iwae_k: importance samples of the likelihood (evaluation).
      iwae_chunk: samples per chunk when evaluating the IWAE bound.
      train_iwae_k: importance samples of the training objective (1 = the ELBO).
      sample_mean: the sampler returns the mean of ``p(x | z)`` (quantized to the levels)
        instead of a draw from it; smoother images, but no longer samples of the model's
        distribution (the usual VAE figure convention). Default ``False``.
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the encoder's and decoder's hidden layers
        compute in that dtype; params, the output layers, the losses and the likelihood stay
        float32 (:mod:`gen_jax.nn.precision`).
    """

    name: str = "vae"
    encoder: Literal["mlp", "conv"] = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    conv_features: tuple[int, ...] = (32, 64)
    activation: networks.Activation = "gelu"
    latent_dim: int = 16
    likelihood: objectives.PixelLikelihoodKind = "categorical"
    num_mixtures: int = 5
    gaussian_scale: float = 0.0
    beta: float = 1.0
    conditioning: Literal["none", "label", "caption"] = "none"
    cond_dim: int = 32
    iwae_k: int = 1000
    iwae_chunk: int = 100
    train_iwae_k: int = 1
    sample_mean: bool = False
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_compute_dtype(self.compute_dtype)
        self.require(all(h >= 1 for h in self.hidden), "hidden", f"widths must be >= 1, got {self.hidden}")
        self.require(bool(self.conv_features) and all(f >= 1 for f in self.conv_features), "conv_features",
                     f"need positive channel counts, got {self.conv_features}")
        self.positive("latent_dim", "num_mixtures", "cond_dim", "iwae_k", "iwae_chunk", "train_iwae_k")
        self.nonnegative("gaussian_scale", "beta")
        self.require(self.train_iwae_k == 1 or self.beta == 1.0, "beta",
                     "beta != 1 applies to the ELBO objective only (train_iwae_k must be 1)")


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
        dt = compute_dtype(cfg.compute_dtype)
        if cfg.encoder == "mlp":
            self.encoder = networks.MLPEncoder(cfg.hidden, cfg.latent_dim, cfg.activation, dtype=dt)
            self.decoder = networks.MLPDecoder(tuple(reversed(cfg.hidden)), self.image_shape,
                                               self.out_features, cfg.activation, dtype=dt)
        else:
            self.encoder = networks.ConvEncoder(cfg.conv_features, cfg.hidden, cfg.latent_dim, cfg.activation,
                                                dtype=dt)
            self.decoder = networks.ConvDecoder(cfg.conv_features, tuple(reversed(cfg.hidden)),
                                                self.image_shape, self.out_features, cfg.activation, dtype=dt)
        if cfg.conditioning == "label":
            self.cond_embed = LabelEmbedding(self.num_classes, cfg.cond_dim)
        elif cfg.conditioning == "caption":
            self.cond_embed = bag_of_words_encoder(self.vocab_size, features=cfg.cond_dim)

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
    """``typed(VAEConfig, cfg, 'config.model')`` (kept for the stage-one readers)."""
    return typed(VAEConfig, cfg, "config.model")


def make_vae(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the VAE bundle of pure functions.

    Args:
      cfg: :class:`VAEConfig` or ``config.model`` (``ConfigDict`` / mapping).
      info: dataset info with ``image_shape``, ``num_levels``, ``num_classes``,
        ``vocab_size`` (captions) attributes.

    Returns:
      :class:`GenerativeModel` (family ``'latent'``) with

      * ``training``: one loss, ``loss(params, batch, key) -> (-mean objective,
        {recon, kl, elbo[, iwae]})``;
      * ``likelihood``: ``log_prob(params, batch, key) -> [B]``, the IWAE-``iwae_k`` bound
        (see module docstring; kind ``'iwae-<k>'`` or ``'elbo'``), absent for the Bernoulli
        decoder;
      * ``sampler.sample(params, key, num, cond=None) -> [num, H, W, C]`` float32 in
        ``[0, 1]``: with ``k_z, k_x = jax.random.split(key)``, ``z = N(0, I)`` drawn with
        ``k_z``, then ``codec.decode(params, z, cond, key=k_x)`` (so the two agree exactly);
      * ``codec`` (the contract latent diffusion composes):

        - ``encode(params, x, cond=None) -> [B, Z]``: the posterior mean ``mu(x)``;
        - ``posterior(params, x, cond=None) -> (mean, log_var)``, each ``[B, Z]``, of
          ``q(z | x) = N(mean, diag exp(log_var))``;
        - ``decode(params, z, cond=None, key=None) -> [N, H, W, C]`` float32 in ``[0, 1]``.
          ``key=None``: the (deterministic) mean image of ``p(x | z)``
          (:meth:`~gen_jax.latent.objectives.PixelLikelihood.mean`, not quantized; for
          reconstructions and traversals). With a ``key``: exactly what the sampler returns
          after drawing ``z``: a draw of ``p(x | z)`` on the ``K`` levels
          (``level / (K - 1)``), or, with ``sample_mean=True``, the mean of ``p(x | z)``
          rounded to the levels. The Bernoulli decoder is the one exception: its sampler,
          and so ``decode`` with a key, returns the mean ``sigmoid(logits)`` (a draw would
          be a binary image), which is not on the levels;
      * ``conditioning``: ``label_conditioning(num_classes)`` (``conditioning='label'``) or
        ``split_conditioning('caption_tokens')`` (``'caption'``); conditional models take
        ``cond={'label': [N]}`` or ``{'caption_tokens': [N, L]}`` in every function above.
    """
    cfg = as_vae_config(cfg)
    image_shape = tuple(int(s) for s in info.image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"info.image_shape must be (H, W, C), got {info.image_shape}")
    num_classes = int(getattr(info, "num_classes", 0) or 0)
    vocab_size = int(getattr(info, "vocab_size", 0) or 0)
    if cfg.conditioning == "label":
        require_labels(num_classes, "config.model.conditioning")
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
        return to_float32(net.apply(params, x, c, method=VAENet.encode))  # float32 whatever the compute dtype

    def decode_c(params, z, c):
        return to_float32(net.apply(params, z, c, method=VAENet.decode))

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

    def draw(key, out):
        """What the sampler returns for decoder output ``out``: a draw of ``p(x | z)``, or
        its mean on the levels (``sample_mean``)."""
        if cfg.sample_mean:
            k = lik.num_levels
            return (jnp.round(lik.mean(out) * (k - 1)) / (k - 1)).astype(jnp.float32)
        return lik.sample(key, out).astype(jnp.float32)

    def sample(params, key, num, cond=None):
        k_z, k_x = jax.random.split(key)
        c = embed(params, cond, num, "sample")
        z = jax.random.normal(k_z, (num, z_dim), jnp.float32)
        return draw(k_x, decode_c(params, z, c))

    def posterior(params, image, cond=None):
        check_image(image)
        return encode_c(params, image, embed(params, cond, image.shape[0], "encode"))

    def encode(params, image, cond=None):
        return posterior(params, image, cond)[0]

    def decode(params, z, cond=None, key=None):
        out = decode_c(params, z, embed(params, cond, z.shape[0], "decode"))
        return lik.mean(out) if key is None else draw(key, out)

    likelihood = None
    if lik.density_offset is not None:
        likelihood = Likelihood(log_prob, "elbo" if cfg.iwae_k == 1 else f"iwae-{cfg.iwae_k}")
    conditioning = None
    if cfg.conditioning == "label":
        conditioning = label_conditioning(num_classes)
    elif cfg.conditioning == "caption":
        conditioning = split_conditioning("caption_tokens")
    return GenerativeModel(
        name=cfg.name, family="latent", training=loss_training(init, loss),
        sampler=Sampler(sample, "image"), likelihood=likelihood,
        codec=Codec(encode, decode, posterior=posterior), conditioning=conditioning,
        data=DataSpec(image_shape, int(info.num_levels), num_classes,
                      (('caption_tokens', vocab_size),) if cfg.conditioning == 'caption' else ()))
