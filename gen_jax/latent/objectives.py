"""Objectives of latent-variable models, as pure functions with per-example ``[B]`` terms.

* Reconstruction log-likelihoods ``log p(x | z)`` of images (Bernoulli, Gaussian,
  per-pixel categorical, discretized logistic mixture) and :class:`PixelLikelihood`, the
  adapter from a decoder output ``[N, H, W, F]`` to a likelihood.
* The (beta-)ELBO (Kingma & Welling 2014, Eqs. 3 and 10; Higgins et al. 2017, Eq. 4).
* The importance-weighted bound (Burda, Grosse & Salakhutdinov 2016, Eq. 8), in chunks.
* Deterministic autoencoder losses (MSE / BCE).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Literal, Optional, get_args

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist

PixelLikelihoodKind = Literal["bernoulli", "gaussian", "categorical", "logistic_mixture"]
LIKELIHOODS = get_args(PixelLikelihoodKind)
AutoencoderLoss = Literal["bce", "mse"]

# ----------------------------------------------------------------------------------------
# Reconstruction terms log p(x | z), each [B] (sum over H, W, C).
# ----------------------------------------------------------------------------------------


def bernoulli_reconstruction(x: jax.Array, logits: jax.Array) -> jax.Array:
    """``sum_pixels x log sigmoid(l) + (1 - x) log sigmoid(-l)`` (Kingma & Welling 2014,
    Appendix C.1), ``x`` the ``[0, 1]`` pixel values ``[B, H, W, C]``, logits the same shape.

    On grey-level pixels this is the usual "Bernoulli decoder" cross-entropy; it is not a
    normalized likelihood of the discrete levels (nor a density on ``[0, 1]``; cf. the
    continuous Bernoulli of Loaiza-Ganem & Cunningham 2019), so it gives no bits/dim.
    """
    return dist.bernoulli_log_prob(x, logits, event_ndims=3)


def gaussian_reconstruction(y: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """``sum_pixels log N(y; mean, exp(log_scale)^2)`` (Kingma & Welling 2014, Appendix C.2)
    on dequantized data ``y = (level + u) / K`` ``[B, H, W, C]`` (``log_scale`` broadcastable:
    a fixed scalar or learned per pixel). A proper density of the dequantized data."""
    return dist.gaussian_log_prob(y, mean, 2.0 * log_scale, event_ndims=3)


def categorical_reconstruction(levels: jax.Array, logits: jax.Array) -> jax.Array:
    """``sum_pixels log Cat(level; softmax(logits))`` with ``levels [B, H, W, C]`` and
    ``logits [B, H, W, C, K]`` (van den Oord et al. 2016, Sec. 5.3): ``log P(levels)``."""
    return dist.pixel_categorical_log_prob(levels, logits, event_ndims=3)


def logistic_mixture_reconstruction(levels: jax.Array, params: dist.LogisticMixture,
                                    num_levels: int) -> jax.Array:
    """Discretized logistic mixture ``log P(levels)`` (Salimans et al. 2017, Eq. 2),
    ``levels [B, H, W, C]`` -> ``[B]``."""
    return dist.discretized_logistic_mixture_log_prob(levels, params, num_levels, event_ndims=2)


@dataclasses.dataclass(frozen=True)
class PixelLikelihood:
    """``p(x | z)`` for images, from a decoder output ``[N, H, W, F]``.

    Attributes:
      kind: one of :data:`LIKELIHOODS`.
      image_shape: ``(H, W, C)``.
      num_levels: ``K``.
      num_mixtures: mixture components (``logistic_mixture``).
      gaussian_scale: fixed Gaussian scale on ``[0, 1]`` data, or ``0`` for a learned
        per-pixel log-scale (``gaussian``).

    The data a likelihood scores (:meth:`target`): ``[0, 1]`` pixels (bernoulli), dequantized
    ``y`` (gaussian, needs a key), or int levels (categorical, logistic mixture).
    :attr:`density_offset` converts ``log p(x | z)`` summed into the log density of the
    dequantized data on ``[0, 1)^D``: ``D log K`` for the discrete likelihoods (their
    piecewise-constant density), ``0`` for the Gaussian, ``None`` for the Bernoulli.
    """

    kind: str
    image_shape: tuple[int, int, int]
    num_levels: int
    num_mixtures: int = 5
    gaussian_scale: float = 0.0

    def __post_init__(self):
        if self.kind not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.kind!r}")

    @property
    def num_dims(self) -> int:
        h, w, c = self.image_shape
        return h * w * c

    @property
    def out_features(self) -> int:
        """Decoder features per pixel ``F``."""
        c = self.image_shape[-1]
        if self.kind == "bernoulli":
            return c
        if self.kind == "gaussian":
            return c if self.gaussian_scale > 0 else 2 * c
        if self.kind == "categorical":
            return c * self.num_levels
        return dist.logistic_mixture_num_params(c, self.num_mixtures, coupled=c > 1)

    @property
    def density_offset(self) -> Optional[float]:
        if self.kind == "bernoulli":
            return None
        if self.kind == "gaussian":
            return 0.0
        return self.num_dims * math.log(self.num_levels)

    def target(self, key: jax.Array, image: jax.Array) -> jax.Array:
        """What :meth:`log_prob` scores, from a batch image ``[B, H, W, C]`` in ``[0, 1]``."""
        if self.kind == "bernoulli":
            return image
        if self.kind == "gaussian":
            return dist.dequantize(key, image, self.num_levels)
        return dist.to_levels(image, self.num_levels)

    def _split(self, out: jax.Array):
        c = self.image_shape[-1]
        if self.kind == "gaussian":
            if self.gaussian_scale > 0:
                return out, jnp.full((), math.log(self.gaussian_scale), out.dtype)
            return out[..., :c], out[..., c:]
        if self.kind == "categorical":
            return out.reshape(*out.shape[:-1], c, self.num_levels)
        if self.kind == "logistic_mixture":
            return dist.unpack_logistic_mixture(out, c, self.num_mixtures, coupled=c > 1)
        return out

    def log_prob(self, out: jax.Array, target: jax.Array) -> jax.Array:
        """``log p(target | z)`` ``[N]`` from decoder output ``out [N, H, W, F]``."""
        p = self._split(out)
        if self.kind == "bernoulli":
            return bernoulli_reconstruction(target, p)
        if self.kind == "gaussian":
            return gaussian_reconstruction(target, *p)
        if self.kind == "categorical":
            return categorical_reconstruction(target, p)
        return logistic_mixture_reconstruction(target, p, self.num_levels)

    def sample(self, key: jax.Array, out: jax.Array) -> jax.Array:
        """An image ``[N, H, W, C]`` in ``[0, 1]`` drawn from ``p(x | z)``: levels ``/ (K - 1)``
        for the discrete likelihoods, the Gaussian draw quantized to the levels, and the
        mean ``sigmoid(logits)`` for the Bernoulli (its draws would be binary images)."""
        p = self._split(out)
        k = self.num_levels
        if self.kind == "bernoulli":
            return jax.nn.sigmoid(p)
        if self.kind == "gaussian":
            y = p[0] + jnp.exp(p[1]) * jax.random.normal(key, p[0].shape, p[0].dtype)
            return dist.quantize(y, k)
        if self.kind == "categorical":
            return dist.pixel_categorical_sample(key, p).astype(jnp.float32) / (k - 1)
        return dist.discretized_logistic_mixture_sample(key, p, k).astype(jnp.float32) / (k - 1)

    def mean(self, out: jax.Array) -> jax.Array:
        """A deterministic image ``[N, H, W, C]`` in ``[0, 1]`` (the mean of ``p(x | z)``,
        approximately for the logistic mixture) for reconstructions and traversals."""
        p = self._split(out)
        k = self.num_levels
        if self.kind == "bernoulli":
            return jax.nn.sigmoid(p)
        if self.kind == "gaussian":
            return jnp.clip((p[0] * k - 0.5) / (k - 1), 0.0, 1.0)  # undo the dequantization shift
        if self.kind == "categorical":
            probs = jax.nn.softmax(p, axis=-1)
            return jnp.sum(probs * jnp.arange(k, dtype=probs.dtype), axis=-1) / (k - 1)
        return (dist.discretized_logistic_mixture_mean(p) + 1.0) / 2.0


# ----------------------------------------------------------------------------------------
# Bounds.
# ----------------------------------------------------------------------------------------


def elbo(recon: jax.Array, mean: jax.Array, log_var: jax.Array, beta: float = 1.0) -> dict:
    """Per-example (beta-)ELBO terms with the analytic Gaussian KL.

    Kingma & Welling 2014, Eq. 10 (the SGVB estimator ``B(theta, phi; x)`` of Eq. 3):

        L(x) = -KL(q(z|x) || N(0, I)) + log p(x | z),  z ~ q(z | x),

    with the KL in closed form (Appendix B). The beta-VAE objective (Higgins et al. 2017,
    Eq. 4) weights the KL: ``L_beta = log p(x | z) - beta KL``.

    Args:
      recon: ``[B]`` single-sample ``log p(x | z)``.
      mean, log_var: ``[B, Z]`` of ``q(z | x)``.
      beta: KL weight (1 = the ELBO).

    Returns:
      dict of ``[B]``: ``recon``, ``kl``, ``elbo`` (= recon - kl) and ``objective``
      (= recon - beta kl, to maximize).
    """
    kl = dist.kl_standard_normal(mean, log_var)
    return {"recon": recon, "kl": kl, "elbo": recon - kl, "objective": recon - beta * kl}


def iwae_bound(key: jax.Array, log_weight_fn: Callable[[jax.Array, int], jax.Array],
               num_samples: int, chunk_size: int = 100) -> jax.Array:
    """The importance-weighted bound (Burda et al. 2016, Eq. 8), per example:

        L_k(x) = log (1/k) sum_{i=1}^k p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

    evaluated as ``logsumexp(log w) - log k``. ``L_1`` is the ELBO and ``L_k`` increases
    with ``k`` towards ``log p(x)`` (their Theorem 1). The ``k`` log-weights are drawn in
    chunks of ``chunk_size`` under ``lax.map`` so only one chunk of decoder activations is
    alive at a time (k = 1000 for a batch fits in memory); a remainder chunk handles
    ``k`` not divisible by ``chunk_size``.

    Args:
      key: PRNG key; chunk ``i`` uses ``fold_in(key, i)``.
      log_weight_fn: ``(key, n) -> [n, B]`` log importance weights
        ``log p(x, z) - log q(z | x)`` of ``n`` fresh samples.
      num_samples: ``k >= 1``.
      chunk_size: samples per chunk.

    Returns:
      ``[B]`` nats.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"iwae_bound needs num_samples, chunk_size >= 1, got {num_samples}, {chunk_size}")
    chunk = min(chunk_size, num_samples)
    n_full, rem = divmod(num_samples, chunk)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_full))
    lw = jax.lax.map(lambda k: log_weight_fn(k, chunk), keys)  # [n_full, chunk, B]
    lw = lw.reshape(n_full * chunk, *lw.shape[2:])
    if rem:
        lw = jnp.concatenate([lw, log_weight_fn(jax.random.fold_in(key, n_full), rem)], axis=0)
    return jax.nn.logsumexp(lw, axis=0) - math.log(num_samples)


# ----------------------------------------------------------------------------------------
# Deterministic autoencoder.
# ----------------------------------------------------------------------------------------


def autoencoder_loss(x: jax.Array, out: jax.Array, kind: str = "bce") -> jax.Array:
    """Per-example reconstruction loss ``[B]`` of a deterministic autoencoder
    (Hinton & Salakhutdinov 2006; Goodfellow et al. 2016, Eq. 14.1: ``L(x, g(f(x)))``).

    Args:
      x: ``[B, H, W, C]`` pixels in ``[0, 1]``.
      out: decoder output (logits), same shape; the reconstruction is ``sigmoid(out)``.
      kind: ``'mse'``: ``sum (sigmoid(out) - x)^2``; ``'bce'``:
        ``-sum x log sigmoid(out) + (1 - x) log sigmoid(-out)``.
    """
    if kind == "mse":
        return jnp.sum(jnp.square(jax.nn.sigmoid(out) - x), axis=(1, 2, 3))
    if kind == "bce":
        return -bernoulli_reconstruction(x, out)
    raise ValueError(f"autoencoder loss must be 'mse' or 'bce', got {kind!r}")
