"""Multi-scale architecture: factoring out half the channels, and the top-level prior.

Dinh et al. 2017 (RealNVP), Sec. 3.6, Eq. 13: at each scale half of the dimensions are
factored out as latents and the rest continue through further layers,
``h^(i+1) = f^(i+1)(h^(i))[kept]``, ``z^(i+1) = ...[factored out]``. Glow (Kingma &
Dhariwal 2018, Fig. 2b, and its code ``split2d``) gives the factored-out half a learned
Gaussian prior conditioned on the kept half, ``z_2 ~ N(mu(z_1), exp(logs(z_1))^2)`` with a
zero-initialized conv (a fresh prior is ``N(0, I)``).

Here a density ``N(z; mu, sigma^2)`` over a factored-out tensor is written as the affine
bijector to a standard-normal ``eps``, so a whole multi-scale flow is one bijection from
the image to a flat ``eps [B, D]`` with base ``N(0, I)``:

    eps = (z - mu) / sigma,   log-det = -sum log sigma
    z   = mu + sigma * eps    (inverse)

and ``log N(z; mu, sigma^2) = log N(eps; 0, I) - sum log sigma`` exactly. Sampling with
temperature ``T`` (Glow Sec. 5.4: ``z ~ N(mu, (T sigma)^2)``) is ``eps ~ N(0, T^2 I)``.

* :class:`Split` ``[B, H, W, C] -> [B, D]``: keeps ``h = x[..., :C/2]`` for the ``inner``
  bijector (the next scales, which end in a flat output) and emits
  ``concat(flatten(eps_z), inner(h))``; ``C`` must be even.
* :class:`TopPrior` ``[B, *event] -> [B, D]``: the last level's prior, learned
  (Glow ``learntop``: per-position mean and log-scale, zero-init) and optionally
  class-conditional (Glow ``ycond``: a zero-init linear map of the condition to per-channel
  mean and log-scale), or fixed ``N(0, I)`` (RealNVP).
"""
from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import ConfigError
from gen_jax.flows.bijector import Bijector, sum_except_batch
from gen_jax.flows.nets import ZeroConv, ZeroDense

PRIORS = ("learned", "standard")


def _cond_mean_logs(cond: Optional[jax.Array], channels: int, ndim: int, name: str):
    """Zero-init ``(mu, logs)`` each ``[B, 1, ..., channels]`` from ``cond [B, E]``."""
    h = ZeroDense(2 * channels, name=name)(cond)
    h = h.reshape(h.shape[:1] + (1,) * (ndim - 2) + h.shape[1:])
    return h[..., :channels], h[..., channels:]


def check_multiscale_shape(image_shape, squeezes: int, field: str) -> None:
    """``ConfigError`` naming ``field`` (e.g. ``'config.model.levels'``) unless H and W of
    ``image_shape`` are divisible by ``2 ** squeezes`` (each squeeze halves them)."""
    h, w, _ = image_shape
    f = 2 ** squeezes
    if h % f or w % f:
        raise ConfigError(f"{field}: {squeezes} squeeze(s) need H and W divisible by {f}, "
                          f"got image shape {tuple(image_shape)}")


class Split(Bijector):
    """Factor out half the channels with a (learned) conditional Gaussian prior.

    Attributes:
      inner: bijector applied to the kept half ``[B, H, W, C/2]``; its output is flat
        ``[B, D_inner]``.
      event_shape: ``(H, W, C)`` of this layer's input (needed by ``inverse``).
      prior: ``'learned'`` (Glow: ``mu, logs = ZeroConv(h)``) or ``'standard'`` (RealNVP).
      use_cond: also add a zero-init linear map of ``cond`` to ``mu, logs``.
    """

    inner: Bijector
    event_shape: tuple
    prior: str = "learned"
    use_cond: bool = False

    def _sizes(self):
        h, w, c = self.event_shape
        if c % 2:
            raise ValueError(f"Split: channel count must be even to factor out half, got event "
                             f"shape {tuple(self.event_shape)}")
        return h, w, c // 2

    @nn.compact
    def _mean_logs(self, kept, cond):
        if self.prior not in PRIORS:
            raise ValueError(f"Split.prior must be one of {PRIORS}, got {self.prior!r}")
        c = kept.shape[-1]
        if self.prior == "standard":
            z = jnp.zeros_like(kept)
            return z, z
        h = ZeroConv(2 * c)(kept)
        mu, logs = h[..., :c], h[..., c:]
        if self.use_cond and cond is not None:
            m2, l2 = _cond_mean_logs(cond, c, kept.ndim, "cond_prior")
            mu, logs = mu + m2, logs + l2
        return mu, logs

    def forward(self, x, cond=None):
        h, w, c = self._sizes()
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(f"Split: expected input [B, {h}, {w}, {2 * c}], got shape {x.shape}")
        kept, z = x[..., :c], x[..., c:]
        mu, logs = self._mean_logs(kept, cond)
        eps = (z - mu) * jnp.exp(-logs)
        out, ldj = self.inner.forward(kept, cond)
        return (jnp.concatenate([eps.reshape(x.shape[0], -1), out], axis=-1),
                ldj - sum_except_batch(logs))

    def inverse(self, y, cond=None):
        h, w, c = self._sizes()
        dz = h * w * c
        if y.ndim != 2 or y.shape[1] != 2 * dz:
            raise ValueError(f"Split.inverse: expected a flat latent [B, {2 * dz}], got shape {y.shape}")
        eps = y[:, :dz].reshape(y.shape[0], h, w, c)
        kept, ldj = self.inner.inverse(y[:, dz:], cond)
        mu, logs = self._mean_logs(kept, cond)
        z = mu + jnp.exp(logs) * eps
        return jnp.concatenate([kept, z], axis=-1), ldj + sum_except_batch(logs)


class TopPrior(Bijector):
    """The last level's Gaussian prior as a bijector to a flat standard-normal ``eps``.

    Attributes:
      event_shape: ``(..., C)`` of the input (``(H, W, C)`` or ``(D,)``).
      learned: learned per-position ``mu, logs`` (zero-init) instead of ``N(0, I)``.
      use_cond: add a zero-init linear map of ``cond [B, E]`` to per-channel ``mu, logs``.
    """

    event_shape: tuple
    learned: bool = True
    use_cond: bool = False

    @nn.compact
    def _mean_logs(self, cond, batch: int):
        shape = tuple(self.event_shape)
        c = shape[-1]
        mu = jnp.zeros((1,) + shape)
        logs = jnp.zeros((1,) + shape)
        if self.learned:
            p = self.param("prior", nn.initializers.zeros, shape[:-1] + (2 * c,))
            mu, logs = mu + p[None, ..., :c], logs + p[None, ..., c:]
        if self.use_cond and cond is not None:
            m2, l2 = _cond_mean_logs(cond, c, len(shape) + 1, "cond_prior")
            mu, logs = mu + m2, logs + l2
        return (jnp.broadcast_to(mu, (batch,) + shape), jnp.broadcast_to(logs, (batch,) + shape))

    def forward(self, x, cond=None):
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(f"TopPrior: expected input [B, {', '.join(map(str, self.event_shape))}], "
                             f"got shape {x.shape}")
        mu, logs = self._mean_logs(cond, x.shape[0])
        eps = (x - mu) * jnp.exp(-logs)
        return eps.reshape(x.shape[0], -1), -sum_except_batch(logs)

    def inverse(self, y, cond=None):
        d = math.prod(self.event_shape)
        if y.ndim != 2 or y.shape[1] != d:
            raise ValueError(f"TopPrior.inverse: expected a flat latent [B, {d}], got shape {y.shape}")
        mu, logs = self._mean_logs(cond, y.shape[0])
        x = mu + jnp.exp(logs) * y.reshape((y.shape[0],) + tuple(self.event_shape))
        return x, sum_except_batch(logs)
