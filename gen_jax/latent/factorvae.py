"""FactorVAE (Kim & Mnih 2018): a VAE whose aggregate posterior is pushed towards independence.

The objective (Kim & Mnih 2018, Eq. 2) adds a total-correlation penalty to the ELBO:

    L = 1/N sum_i [ E_q(z|x_i)[log p(x_i|z)] - KL(q(z|x_i) || p(z)) ] - gamma KL(q(z) || q~(z)),

``q(z)`` the aggregate posterior and ``q~(z) = prod_j q(z_j)`` the product of its marginals, so
the last term is the total correlation ``TC(z)``. It is estimated by the density-ratio trick
(Eq. 3; Nguyen et al. 2010, Sugiyama et al. 2012): a discriminator ``D(z)`` trained to tell
samples of ``q(z)`` from samples of ``q~(z)`` has at its optimum ``logit D(z) = log q(z) /
q~(z)``, so ``TC(z) ~ E_q(z)[log D(z) / (1 - D(z))] = E_q(z)[logit D(z)]``. Samples of
``q~(z)`` come from a batch of ``q(z)`` samples with every dimension permuted independently
across the batch (Alg. 1, ``permute_dims``).

One train step is two phases (Alg. 1): ``Phase('vae')`` descends ``-ELBO + gamma * TC`` (the
network and objectives of :mod:`gen_jax.latent.vae`, with ``beta`` as there), then
``Phase('disc')`` descends the discriminator's cross-entropy on ``q(z)`` samples from one half
of the batch against permuted ``q(z)`` samples from the other half (the independent second
batch of Alg. 1). Optimizer sections ``config.optim.vae`` / ``config.optim.disc``.

Sampler, likelihood (ELBO / IWAE bound) and codec are the VAE's, on ``params['vae']``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import ConfigError, typed
from gen_jax.latent.vae import VAEConfig, make_vae
from gen_jax.model import Codec, GenerativeModel, Likelihood, Phase, Sampler, Training

VAE, DISC = "vae", "disc"


@dataclasses.dataclass(frozen=True)
class FactorVAEConfig(VAEConfig):
    """``config.model`` of a FactorVAE: the :class:`~gen_jax.latent.vae.VAEConfig` fields plus

    Attributes:
      gamma: weight of the total-correlation penalty (Kim & Mnih 2018, Eq. 2); 0 is the VAE.
      disc_hidden: hidden widths of the MLP discriminator on ``z`` (the paper: 6 x 1000).
      disc_slope: its LeakyReLU negative slope (the paper: 0.2).
    """

    name: str = "factorvae"
    gamma: float = 10.0
    disc_hidden: tuple[int, ...] = (256, 256, 256)
    disc_slope: float = 0.2

    def __post_init__(self):
        VAEConfig.__post_init__(self)
        self.nonnegative("gamma", "disc_slope")
        self.require(bool(self.disc_hidden) and all(h >= 1 for h in self.disc_hidden), "disc_hidden",
                     f"need one or more positive widths, got {self.disc_hidden}")
        self.require(self.conditioning == "none", "conditioning",
                     f"FactorVAE is unconditional (its TC is of q(z)), got {self.conditioning!r}")
        self.require(self.train_iwae_k == 1, "train_iwae_k",
                     "FactorVAE trains the ELBO objective of Kim & Mnih Eq. 2 (train_iwae_k must be 1)")

    def vae_config(self) -> VAEConfig:
        """The VAE fields alone."""
        return VAEConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VAEConfig)})


class Discriminator(nn.Module):
    """``z [B, Z] -> logit [B]`` of "``z`` was drawn from ``q(z)``" (against ``q~(z)``): an MLP
    with LeakyReLU hidden layers (Kim & Mnih 2018, App. A)."""

    hidden: tuple[int, ...]
    slope: float = 0.2

    @nn.compact
    def __call__(self, z):
        h = z
        for i, w in enumerate(self.hidden):
            h = nn.leaky_relu(nn.Dense(w, name=f"hidden{i}")(h), self.slope)
        return nn.Dense(1, name="logit")(h)[:, 0]


def permute_dims(key: jax.Array, z: jax.Array) -> jax.Array:
    """Every column of ``z [B, Z]`` permuted independently across the batch (Kim & Mnih 2018,
    Alg. 1): each dimension keeps its marginal, the dependence between dimensions is broken, so
    the rows are samples of ``prod_j q(z_j)``."""
    if z.ndim != 2:
        raise ValueError(f"permute_dims: z must be [B, Z], got {z.shape}")
    order = jnp.argsort(jax.random.uniform(key, z.shape), axis=0)
    return jnp.take_along_axis(z, order, axis=0)


def tc_estimate(logits: jax.Array) -> jax.Array:
    """``TC(z) ~ E_q(z)[log D(z) / (1 - D(z))]`` (Kim & Mnih 2018, Eq. 3) from the
    discriminator's logits ``[B]`` on ``q(z)`` samples: ``log D / (1 - D) = logit``."""
    return jnp.mean(logits)


def discriminator_loss(logits_joint: jax.Array, logits_permuted: jax.Array) -> jax.Array:
    """The discriminator's cross-entropy (Kim & Mnih 2018, Alg. 1):
    ``-1/2 (E_q[log D(z)] + E_q~[log (1 - D(z~))])``; minimized at
    ``logit D = log q(z) / q~(z)``."""
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits_joint)) + jnp.mean(jax.nn.softplus(logits_permuted)))


def make_factorvae(cfg: Any, info: Any) -> GenerativeModel:
    """Builds the FactorVAE bundle.

    Args:
      cfg: :class:`FactorVAEConfig` or ``config.model``.
      info: dataset info (``image_shape``, ``num_levels``, as :func:`gen_jax.latent.vae.make_vae`).

    Returns:
      :class:`GenerativeModel` (family ``'latent'``), params ``{'vae': ..., 'disc': ...}``:

      * ``training``: ``Phase('vae')``: ``loss(params, batch, key) -> (-ELBO_beta + gamma * TC,
        {recon, kl, elbo, tc})`` (mean over the batch; TC from the current discriminator on
        ``z ~ q(z | x)``); ``Phase('disc')``: the discriminator loss on the two halves of the
        batch (``B`` even, >= 4), metrics ``{disc_loss, disc_acc, tc}``;
      * ``sampler``, ``likelihood``, ``codec``: the VAE's (:func:`gen_jax.latent.vae.make_vae`)
        on ``params['vae']``.
    """
    cfg = typed(FactorVAEConfig, cfg, "config.model")
    vae = make_vae(cfg.vae_config(), info)
    disc = Discriminator(tuple(cfg.disc_hidden), cfg.disc_slope)
    vae_loss = vae.training.phases[0].loss

    def init(key, batch):
        k_vae, k_disc = jax.random.split(key)
        return {VAE: vae.training.init(k_vae, batch),
                DISC: disc.init(k_disc, jnp.zeros((1, cfg.latent_dim), jnp.float32))}

    def draw_z(params, x, key):
        mean, log_var = vae.codec.posterior(params[VAE], x)
        return dist.gaussian_sample(key, mean, log_var)

    def loss(params, batch, key):
        k_vae, k_z = jax.random.split(key)
        neg_elbo, metrics = vae_loss(params[VAE], batch, k_vae)
        tc = tc_estimate(disc.apply(params[DISC], draw_z(params, batch["image"], k_z)))
        return neg_elbo + cfg.gamma * tc, {**metrics, "tc": tc}

    def d_loss(params, batch, key):
        x = batch["image"]
        b = x.shape[0]
        if b < 4 or b % 2:
            raise ValueError(f"FactorVAE's discriminator phase splits the batch in two halves: "
                             f"batch['image'] needs an even batch >= 4, got {b}")
        k_z, k_perm = jax.random.split(key)
        z = jax.lax.stop_gradient(draw_z(params, x, k_z))
        z_joint, z_perm = z[: b // 2], permute_dims(k_perm, z[b // 2:])
        lj, lp = disc.apply(params[DISC], z_joint), disc.apply(params[DISC], z_perm)
        acc = 0.5 * (jnp.mean(lj > 0) + jnp.mean(lp < 0))
        return discriminator_loss(lj, lp), {"disc_loss": discriminator_loss(lj, lp), "disc_acc": acc,
                                            "tc": tc_estimate(lj)}

    def sample(params, key, num, cond=None):
        return vae.sampler.sample(params[VAE], key, num, cond)

    def log_prob(params, batch, key):
        return vae.likelihood.log_prob(params[VAE], batch, key)

    def encode(params, x, cond=None):
        return vae.codec.encode(params[VAE], x, cond)

    def decode(params, z, cond=None, key=None):
        return vae.codec.decode(params[VAE], z, cond, key)

    def posterior(params, x, cond=None):
        return vae.codec.posterior(params[VAE], x, cond)

    likelihood = None if vae.likelihood is None else Likelihood(log_prob, vae.likelihood.kind)
    phases = (Phase(VAE, loss=loss, name="vae"), Phase(DISC, loss=d_loss, name="disc"))
    if cfg.gamma > 0 and cfg.latent_dim < 2:
        raise ConfigError("config.model.latent_dim: total correlation needs a latent of >= 2 dimensions")
    return GenerativeModel(
        name=cfg.name, family="latent", training=Training(init=init, phases=phases, ema_groups=(VAE,)),
        sampler=Sampler(sample, "image"), likelihood=likelihood,
        codec=Codec(encode, decode, posterior=posterior), data=vae.data)
