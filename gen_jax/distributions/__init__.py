"""Probability distributions as pure functions: log-probs, samplers, closed-form KLs.

Every ``*_log_prob`` returns the log-probability summed over the trailing ``event_ndims``
axes, so a batch of images ``[B, H, W, C]`` with ``event_ndims=3`` gives ``[B]`` and a batch
of latents ``[B, Z]`` with ``event_ndims=1`` gives ``[B]``. Leading axes are free (e.g. the
``[k, B]`` of importance samples).

Discrete image data arrive as integer ``levels`` in ``0..K-1``; the float images of a batch
hold ``level / (K - 1)`` (:func:`to_levels` inverts that). :func:`dequantize` maps levels to
``y = (level + u) / K`` on ``[0, 1)`` (Theis et al. 2016, Sec. 3.1).

References:
  * Kingma & Welling 2014, "Auto-Encoding Variational Bayes", Appendix B (Gaussian KL).
  * Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++", Eq. 2 and Secs. 2.1-2.2
    (discretized logistic mixture likelihood).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gen_jax.distributions import logistic_mixture as lm

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndims: int) -> jax.Array:
    if event_ndims < 0 or event_ndims > x.ndim:
        raise ValueError(f"event_ndims={event_ndims} does not fit an array of shape {x.shape}")
    if event_ndims == 0:
        return x
    return jnp.sum(x, axis=tuple(range(x.ndim - event_ndims, x.ndim)))


# ----------------------------------------------------------------------------------------
# Quantization helpers.
# ----------------------------------------------------------------------------------------


def to_levels(image: jax.Array, num_levels: int) -> jax.Array:
    """Float image ``level / (K-1)`` in ``[0, 1]`` -> int32 levels ``0..K-1`` (same shape)."""
    return jnp.clip(jnp.round(image * (num_levels - 1)), 0, num_levels - 1).astype(jnp.int32)


def dequantize(key: jax.Array, image: jax.Array, num_levels: int) -> jax.Array:
    """Uniform dequantization ``y = (level + u) / K``, ``u ~ U[0, 1)``.

    Turns ``K`` discrete levels into a continuous density whose log-likelihood lower-bounds
    the discrete log-probability, ``log P(level) >= E_u[log p(y)] - D log K`` by Jensen's
    inequality (Theis, van den Oord & Bethge 2016, Sec. 3.1; the uniform special case of
    variational dequantization, Ho et al. 2019, Flow++ Sec. 3.1). This is the convention
    behind ``bpd = (-log p(y) + D log K) / (D log 2)`` throughout gen_jax.

    Args:
      key: PRNG key.
      image: float ``[...]`` holding ``level / (K - 1)``.
      num_levels: ``K``.

    Returns:
      float ``[...]`` in ``[0, 1)`` with the dtype of ``image``.
    """
    levels = to_levels(image, num_levels).astype(image.dtype)
    u = jax.random.uniform(key, image.shape, image.dtype)
    return (levels + u) / num_levels


def quantize(y: jax.Array, num_levels: int) -> jax.Array:
    """Inverse of :func:`dequantize`: ``y`` on ``[0, 1)`` -> image ``floor(y K) / (K - 1)``,
    clipped to ``[0, 1]``."""
    levels = jnp.clip(jnp.floor(y * num_levels), 0, num_levels - 1)
    return (levels / (num_levels - 1)).astype(jnp.result_type(y, jnp.float32))


# ----------------------------------------------------------------------------------------
# Diagonal Gaussian.
# ----------------------------------------------------------------------------------------


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_var: jax.Array,
                      event_ndims: int = 1) -> jax.Array:
    """Log density of ``N(mean, diag(exp(log_var)))``.

    ``log N(x; mu, s^2) = -1/2 [log 2 pi + log s^2 + (x - mu)^2 / s^2]`` per dimension.

    Args:
      x, mean, log_var: broadcastable ``[..., *event]``.
      event_ndims: trailing axes summed (1 for ``[B, Z]`` latents, 3 for images).

    Returns:
      ``[...]`` log densities (nats).
    """
    lp = -0.5 * (LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var))
    return _sum_event(lp, event_ndims)


def gaussian_sample(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Reparameterized sample ``mean + exp(log_var / 2) * eps``, ``eps ~ N(0, I)``
    (Kingma & Welling 2014, Sec. 2.4). Shape: broadcast of ``mean`` and ``log_var``."""
    shape = jnp.broadcast_shapes(mean.shape, log_var.shape)
    eps = jax.random.normal(key, shape, jnp.result_type(mean, log_var))
    return mean + jnp.exp(0.5 * log_var) * eps


def gaussian_entropy(log_var: jax.Array, event_ndims: int = 1) -> jax.Array:
    """Entropy ``1/2 sum (log 2 pi e + log s^2)`` of a diagonal Gaussian; ``[...]``."""
    return _sum_event(0.5 * (LOG_2PI + 1.0 + log_var), event_ndims)


def kl_standard_normal(mean: jax.Array, log_var: jax.Array, event_ndims: int = 1) -> jax.Array:
    """``KL(N(mu, diag s^2) || N(0, I)) = -1/2 sum (1 + log s^2 - mu^2 - s^2)``.

    Kingma & Welling 2014, Appendix B (the negative of the KL term in their Eq. 10).

    Args:
      mean, log_var: ``[..., Z]``.

    Returns:
      ``[...]`` nats.
    """
    kl = -0.5 * (1.0 + log_var - jnp.square(mean) - jnp.exp(log_var))
    return _sum_event(kl, event_ndims)


def kl_gaussians(mean_q: jax.Array, log_var_q: jax.Array, mean_p: jax.Array,
                 log_var_p: jax.Array, event_ndims: int = 1) -> jax.Array:
    """``KL(N(mu_q, diag s_q^2) || N(mu_p, diag s_p^2))`` in closed form:

    ``1/2 sum [log s_p^2 - log s_q^2 + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1]``
    (Kingma & Welling 2014, Appendix B, generalized to a non-standard prior).

    Returns:
      ``[...]`` nats (all inputs broadcastable ``[..., Z]``).
    """
    kl = 0.5 * (log_var_p - log_var_q
                + (jnp.exp(log_var_q) + jnp.square(mean_q - mean_p)) * jnp.exp(-log_var_p) - 1.0)
    return _sum_event(kl, event_ndims)


# ----------------------------------------------------------------------------------------
# Bernoulli and categorical.
# ----------------------------------------------------------------------------------------


def bernoulli_log_prob(x: jax.Array, logits: jax.Array, event_ndims: int = 1) -> jax.Array:
    """``x log sigmoid(l) + (1 - x) log sigmoid(-l)``, computed stably as
    ``x l - softplus(l)``.

    ``x`` may be any value in ``[0, 1]`` (the usual "Bernoulli" decoder on grey-level pixels
    is then not a normalized likelihood; see :mod:`gen_jax.latent.objectives`).

    Returns:
      ``[...]`` (trailing ``event_ndims`` axes summed).
    """
    return _sum_event(x * logits - jax.nn.softplus(logits), event_ndims)


def categorical_log_prob(labels: jax.Array, logits: jax.Array) -> jax.Array:
    """``log softmax(logits)[label]``.

    Args:
      labels: int ``[...]``.
      logits: ``[..., K]``.

    Returns:
      ``[...]`` (no reduction).
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def pixel_categorical_log_prob(levels: jax.Array, logits: jax.Array,
                               event_ndims: int = 3) -> jax.Array:
    """Independent categorical over ``K`` levels per sub-pixel (van den Oord et al. 2016,
    "Pixel Recurrent Neural Networks", Sec. 5.3: 256-way softmax per sub-pixel).

    Args:
      levels: int ``[..., H, W, C]`` in ``0..K-1``.
      logits: ``[..., H, W, C, K]``.

    Returns:
      ``[...]`` ``log P(levels)`` (nats).
    """
    return _sum_event(categorical_log_prob(levels, logits), event_ndims)


def pixel_categorical_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Levels ``[..., H, W, C]`` (int32) drawn from logits ``[..., H, W, C, K]``."""
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------
# Discretized logistic mixture (PixelCNN++).
# ----------------------------------------------------------------------------------------


class LogisticMixture(NamedTuple):
    """Parameters of a discretized logistic mixture over the sub-pixels of each pixel.

    The mixture component is shared by the ``C`` channels of a pixel (Salimans et al. 2017,
    Sec. 2.2); data live on ``[-1, 1]`` (level ``l`` -> ``2 l / (K - 1) - 1``).

    Attributes:
      logit_probs: ``[..., H, W, M]`` mixture logits.
      means: ``[..., H, W, C, M]`` component means on the ``[-1, 1]`` scale.
      log_scales: ``[..., H, W, C, M]`` log scales (clamped below at ``MIN_LOG_SCALE``).
      coeffs: ``[..., H, W, C (C - 1) / 2, M]`` or ``None``; linear dependence of the mean of
        channel ``c`` on the values of channels ``< c`` (Salimans et al. 2017, Sec. 2.2),
        ordered ``(1,0), (2,0), (2,1), ...``; pass values already squashed (e.g. ``tanh``).
    """

    logit_probs: jax.Array
    means: jax.Array
    log_scales: jax.Array
    coeffs: Optional[jax.Array] = None


MIN_LOG_SCALE = lm.MIN_LOG_SCALE  # as in the PixelCNN++ reference implementation


def logistic_mixture_num_params(num_channels: int, num_mixtures: int, coupled: bool) -> int:
    """Features per pixel that :func:`unpack_logistic_mixture` expects:
    ``M (1 + 2 C + [C (C - 1) / 2 if coupled])``."""
    c = num_channels
    return num_mixtures * (1 + 2 * c + (c * (c - 1) // 2 if coupled else 0))


def unpack_logistic_mixture(raw: jax.Array, num_channels: int, num_mixtures: int,
                            coupled: bool = False) -> LogisticMixture:
    """Splits a network output ``[..., H, W, P]`` (``P`` from
    :func:`logistic_mixture_num_params`) into :class:`LogisticMixture` (coeffs via ``tanh``)."""
    c, m = num_channels, num_mixtures
    want = logistic_mixture_num_params(c, m, coupled)
    if raw.shape[-1] != want:
        raise ValueError(f"logistic mixture needs {want} features per pixel "
                         f"(C={c}, M={m}, coupled={coupled}), got shape {raw.shape}")
    lead = raw.shape[:-1]
    logit_probs = raw[..., :m]
    rest = raw[..., m:]
    means = rest[..., : c * m].reshape(*lead, c, m)
    log_scales = rest[..., c * m: 2 * c * m].reshape(*lead, c, m)
    coeffs = None
    if coupled and c > 1:
        coeffs = jnp.tanh(rest[..., 2 * c * m:].reshape(*lead, c * (c - 1) // 2, m))
    return LogisticMixture(logit_probs, means, log_scales, coeffs)


def _mixture_params(params: LogisticMixture) -> lm.MixtureParams:
    return lm.MixtureParams(params.logit_probs, params.means,
                            jnp.maximum(params.log_scales, MIN_LOG_SCALE), params.coeffs)


def discretized_logistic_mixture_log_prob(levels: jax.Array, params: LogisticMixture,
                                          num_levels: int, event_ndims: int = 2) -> jax.Array:
    """Log-probability of integer levels under a discretized logistic mixture.

    Salimans et al. 2017, Eq. 2: for a sub-pixel ``x`` on ``[-1, 1]`` with bin half-width
    ``h = 1 / (K - 1)``,

        P(x | pi, mu, s) = sum_m pi_m [sigma((x + h - mu_m) / s_m) - sigma((x - h - mu_m) / s_m)],

    with the edge bins of Sec. 2.1 (lowest from ``-inf``, highest to ``+inf``), the component
    shared by the channels of a pixel and the channel coupling of Sec. 2.2 (``coeffs``). The
    computation (log space, no cancellation, masses that telescope to one) is
    :func:`gen_jax.distributions.logistic_mixture.mixture_log_prob`, the one implementation
    of this likelihood in the library (PixelCNN++ uses it directly).

    Args:
      levels: int ``[..., H, W, C]`` in ``0..K-1``.
      params: :class:`LogisticMixture` with leading dims ``[..., H, W]``.
      num_levels: ``K``.
      event_ndims: trailing *pixel* axes summed after the per-pixel mixture (2 = ``H, W``).

    Returns:
      ``[...]`` ``log P(levels)`` in nats.
    """
    per_pixel = lm.mixture_log_prob(_mixture_params(params), levels.astype(jnp.int32), num_levels)
    return _sum_event(per_pixel, event_ndims)


def discretized_logistic_mixture_sample(key: jax.Array, params: LogisticMixture,
                                        num_levels: int) -> jax.Array:
    """Levels ``[..., H, W, C]`` (int32) drawn from exactly the distribution of
    :func:`discretized_logistic_mixture_log_prob` (component by Gumbel-max, logistic inverse
    CDF, coupled means from the earlier channels' levels; see
    :func:`gen_jax.distributions.logistic_mixture.sample_params`)."""
    return lm.sample_params(_mixture_params(params), key, num_levels)


def discretized_logistic_mixture_mean(params: LogisticMixture) -> jax.Array:
    """Approximate mean ``sum_m pi_m mu_m`` on ``[-1, 1]`` (coupling and clipping
    ignored), ``[..., H, W, C]``; for reconstructions and traversal images."""
    pi = jax.nn.softmax(params.logit_probs, axis=-1)[..., None, :]
    return jnp.clip(jnp.sum(pi * params.means, axis=-1), -1.0, 1.0)
