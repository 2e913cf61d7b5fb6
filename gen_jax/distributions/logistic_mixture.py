"""Discretized logistic mixture likelihood (Salimans, Karpathy, Chen & Kingma 2017,
"PixelCNN++", Sec. 2.1, Eq. 2, and Sec. 2.2 for the RGB channel coupling).

Levels ``l in 0..K-1`` (any ``K >= 2``) live on ``[-1, 1]`` as bin centres
``x = 2 l / (K - 1) - 1`` with bin half-width ``h = 1 / (K - 1)``. One logistic component
``(mu, s)`` gives the bin the mass (Eq. 2, one term)

    P(x | mu, s) = sigma((x + h - mu) / s) - sigma((x - h - mu) / s),

with the edge bins stretched to infinity (Sec. 2.1): the lowest bin (``l = 0``) is
``sigma((x + h - mu) / s)`` (from ``-inf``) and the highest (``l = K - 1``) is
``1 - sigma((x - h - mu) / s)`` (to ``+inf``), so the ``K`` masses sum to one exactly.

Numerics (all in log space, softplus forms; ``log sigma(t) = -softplus(-t)``):

* edges: ``log sigma(t+) = -softplus(-t+)``, ``log(1 - sigma(t-)) = -softplus(t-)``;
* interior bins: ``sigma(a) - sigma(b) = sigma(a) sigma(-b) (1 - exp(-(a - b)))`` for
  ``a > b``, so ``log P = -softplus(-a) - softplus(b) + log(-expm1(-(a - b)))``: no
  cancellation and no underflow for any finite ``a, b`` (it stays accurate for masses like
  ``exp(-4000)``);
* the bin edges are computed from the shared integer edge index
  ``e = (2 l +- 1 - (K - 1)) / (K - 1)``, so the upper edge of bin ``l`` and the lower edge
  of bin ``l + 1`` are the same float;
* the standardized width ``a - b`` is computed from the scale, ``w = 2 h / s``, never as the
  difference of the two standardized edges: those are large when the mean is far from the
  bin and their difference cancels (with ``K = 256`` it cost up to 0.11 nats at
  ``|mu| = 1e4`` and 0.30 at ``3e4``, about 4000 float32 ulps of ``log P``); with ``w`` from
  ``s``, ``log P`` keeps float32 precision relative to its own magnitude (within a few ulps
  of a 60-digit reference, ``tests/distributions/test_logistic_precision.py``);
* fallback (Salimans et al. 2017, Sec. 2.1 / their code): where the bin has no width in
  float32 (``w = 2 h / s`` underflows to 0: ``s`` beyond ``~e^85``), the
  bin mass underflows to ``log 0``; it is replaced by the log pdf at the bin centre times
  the bin width, ``log pdf(x) + log(2 / (K - 1))`` with
  ``log pdf(x) = t - log s - 2 softplus(t)``, ``t = (x - mu) / s``.
  Deviation: the reference code switches to this midpoint rule whenever the mass is below
  ``1e-5`` because it forms ``sigma(a) - sigma(b)`` in probability space; the midpoint rule
  under-estimates a tail bin by the factor ``w / (2 sinh(w / 2))`` (``w = 2 h / s``), which
  costs normalization: over all bins of random extreme parameter sets (K = 256, log s down
  to -7) the masses summed to 1 within 2e-7 with this form and only within 9e-6 with the
  1e-5 rule (measured in float32), so here it is used only where the exact form cannot be
  evaluated.
* ``log s`` is clamped below at ``MIN_LOG_SCALE = -7`` (as the paper's code does).

A pixel's ``C`` channels share the mixture component ``m`` (Sec. 2.2); channel ``c``'s mean
depends linearly on the already known channels ``c' < c`` of the same pixel,

    mu_{c,m}(x) = mu_{c,m} + sum_{c' < c} alpha_{c,c',m} x_{c'},   alpha = tanh(raw),

(for RGB: ``mu_G = mu_G + alpha_0 x_R``, ``mu_B = mu_B + alpha_1 x_R + alpha_2 x_G``), so

    P(x_pixel) = sum_m pi_m prod_c P(x_c | mu_{c,m}(x_<c), s_{c,m}).

Raw layout (network output ``[B, H, W, P]``), each block channel-major (``[C, M]`` flattened):

    [ logits (M) | means (C M) | log-scales (C M) | coupling coefficients (C (C-1)/2 M) ]

so ``P = M (1 + 2 C + C (C - 1) / 2)``: ``10 M`` for ``C = 3`` (= ``M (1 + 3 C)``), ``3 M``
for ``C = 1``, ``6 M`` for ``C = 2``. Coefficient pairs are ordered ``(1,0), (2,0), (2,1),
(3,0), ...`` (channel, earlier channel).

The per-channel (uncoupled) version, :func:`channel_log_prob` / :func:`channel_sample`, gives
every channel its own mixture (logits ``[..., C, M]``) with no coupling: a drop-in
likelihood for decoders of other families (a VAE decoder, ...).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

MIN_LOG_SCALE = -7.0  # Salimans et al. 2017 (code): log-scales clamped below at -7


class MixtureParams(NamedTuple):
    """Unpacked parameters of a coupled discretized logistic mixture.

    Attributes:
      logits: ``[..., M]`` mixture logits (``pi = softmax(logits)``).
      means: ``[..., C, M]`` component means on the ``[-1, 1]`` scale (before coupling).
      log_scales: ``[..., C, M]`` log-scales, clamped below at ``MIN_LOG_SCALE``.
      coeffs: ``[..., C (C - 1) / 2, M]`` coupling coefficients ``alpha = tanh(raw)``, or
        ``None`` for ``C = 1``.
    """

    logits: jax.Array
    means: jax.Array
    log_scales: jax.Array
    coeffs: Optional[jax.Array]


# ----------------------------------------------------------------------------------------
# Layout and argument checks.
# ----------------------------------------------------------------------------------------


def num_params(num_mix: int, channels: int) -> int:
    """Features per pixel of the coupled mixture: ``P = M (1 + 2 C + C (C - 1) / 2)``."""
    return num_mix * (1 + 2 * channels + channels * (channels - 1) // 2)


def channel_num_params(num_mix: int, channels: int) -> int:
    """Features per pixel of the per-channel mixture (:func:`unpack_channels`): ``3 C M``."""
    return 3 * channels * num_mix


def infer_num_mix(p: int, channels: int, where: str = "raw") -> int:
    """``M`` from ``P`` and ``C`` (``ValueError`` naming ``where`` if ``P`` does not fit)."""
    per = num_params(1, channels)
    if p < per or p % per:
        raise ValueError(f"{where}: {p} features per pixel is not M * {per} (the coupled mixture of "
                         f"C={channels} channels needs M * (1 + 2C + C(C-1)/2) features)")
    return p // per


def _check_num_levels(num_levels: int) -> int:
    k = int(num_levels)
    if k < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    return k


def check_levels(levels, num_levels: int, where: str = "levels") -> None:
    """``levels`` must be an integer array; when concrete (not traced) its values must be in
    ``0..K-1``. Raises ``ValueError`` naming ``where``, the shape and the offending range."""
    if not jnp.issubdtype(jnp.result_type(levels), jnp.integer):
        raise ValueError(f"{where} must be an integer array of levels 0..{num_levels - 1}, "
                         f"got dtype {jnp.result_type(levels)} (shape {jnp.shape(levels)})")
    if isinstance(levels, jax.core.Tracer):
        return
    a = np.asarray(levels)
    if a.size and (a.min() < 0 or a.max() > num_levels - 1):
        raise ValueError(f"{where}: levels must be in 0..{num_levels - 1} (K={num_levels}), got values in "
                         f"[{a.min()}, {a.max()}] (shape {a.shape})")


def unpack(raw: jax.Array, num_mix: int, channels: int) -> MixtureParams:
    """Splits a network output ``[..., P]`` (``P = num_params(num_mix, channels)``, layout in
    the module docstring) into :class:`MixtureParams` (``tanh`` coefficients, clamped
    log-scales)."""
    m, c = int(num_mix), int(channels)
    if m < 1 or c < 1:
        raise ValueError(f"unpack: num_mix and channels must be >= 1, got {num_mix}, {channels}")
    want = num_params(m, c)
    if raw.shape[-1:] != (want,):
        raise ValueError(f"unpack: raw must be [..., {want}] for M={m} mixtures of C={c} channels "
                         f"(M (1 + 2C + C(C-1)/2)), got shape {raw.shape}")
    lead = raw.shape[:-1]
    logits = raw[..., :m]
    means = raw[..., m:m + c * m].reshape(*lead, c, m)
    log_scales = raw[..., m + c * m:m + 2 * c * m].reshape(*lead, c, m)
    coeffs = None
    if c > 1:
        coeffs = jnp.tanh(raw[..., m + 2 * c * m:].reshape(*lead, c * (c - 1) // 2, m))
    return MixtureParams(logits, means, jnp.maximum(log_scales, MIN_LOG_SCALE), coeffs)


def unpack_channels(raw: jax.Array, num_mix: int, channels: int):
    """Per-channel layout ``[..., 3 C M]`` = ``[logits | means | log-scales]``, each ``[C, M]``
    channel-major -> ``(logits, means, log_scales)`` each ``[..., C, M]``."""
    m, c = int(num_mix), int(channels)
    want = channel_num_params(m, c)
    if raw.shape[-1:] != (want,):
        raise ValueError(f"unpack_channels: raw must be [..., {want}] (3 C M for C={c}, M={m}), got shape {raw.shape}")
    r = raw.reshape(*raw.shape[:-1], 3, c, m)
    return r[..., 0, :, :], r[..., 1, :, :], r[..., 2, :, :]


# ----------------------------------------------------------------------------------------
# One discretized logistic (Eq. 2, one component).
# ----------------------------------------------------------------------------------------


def level_to_centre(levels: jax.Array, num_levels: int) -> jax.Array:
    """Bin centre ``x = 2 l / (K - 1) - 1`` on ``[-1, 1]`` (float32)."""
    k = num_levels
    return (2 * levels.astype(jnp.int32) - (k - 1)).astype(jnp.float32) / (k - 1)


def _log1mexp(w: jax.Array) -> jax.Array:
    """``log(1 - exp(-w))`` for ``w > 0`` (Maechler 2012: ``log(-expm1(-w))`` for small w,
    ``log1p(-exp(-w))`` for large)."""
    small = w < math.log(2.0)
    w_small = jnp.where(small, w, math.log(2.0))  # each branch sees only inputs it is safe on,
    w_large = jnp.where(small, math.log(2.0), w)  # so the unused one has a finite gradient
    return jnp.where(small, jnp.log(-jnp.expm1(-w_small)), jnp.log1p(-jnp.exp(-w_large)))


def discretized_logistic_log_prob(levels: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  num_levels: int) -> jax.Array:
    """``log P(level | mu, s)`` of one discretized logistic (Salimans et al. 2017, Eq. 2 with
    the edge bins of Sec. 2.1), elementwise with broadcasting.

    Args:
      levels: int ``[...]`` in ``0..K-1`` (not range-checked here: see :func:`check_levels`).
      mean: ``[...]`` ``mu`` on the ``[-1, 1]`` scale.
      log_scale: ``[...]`` ``log s`` (clamped below at ``MIN_LOG_SCALE``).
      num_levels: ``K >= 2``.

    Returns:
      float32 ``[...]`` log-masses (nats), finite with finite gradients for all finite inputs.
    """
    k = _check_num_levels(num_levels)
    lv = levels.astype(jnp.int32)
    log_s = jnp.maximum(log_scale, MIN_LOG_SCALE)
    inv_s = jnp.exp(-log_s)
    # Shared integer edge indices: bin l spans [(2l - 1 - (K-1)) / (K-1), (2l + 1 - (K-1)) / (K-1)].
    e_hi = (2 * lv + 1 - (k - 1)).astype(jnp.float32) / (k - 1)
    e_lo = (2 * lv - 1 - (k - 1)).astype(jnp.float32) / (k - 1)
    a = (e_hi - mean) * inv_s  # upper edge, standardized
    b = (e_lo - mean) * inv_s  # lower edge, standardized
    log_cdf_a = -jax.nn.softplus(-a)  # log sigma(a): lowest bin
    log_sf_b = -jax.nn.softplus(b)  # log(1 - sigma(b)): highest bin
    # The standardized bin width a - b = 2 h / s, from the scale alone: the difference of the
    # two edges cancels when the mean is far from the bin (module docstring, Numerics).
    w = (2.0 / (k - 1)) * inv_s
    ok = w > 0.0
    log_interior = log_cdf_a + log_sf_b + _log1mexp(jnp.where(ok, w, 1.0))
    # Fallback where the bin collapsed in float32: log pdf(centre) + log(bin width 2h).
    t = (level_to_centre(lv, k) - mean) * inv_s
    log_mid = t - log_s - 2.0 * jax.nn.softplus(t) + math.log(2.0 / (k - 1))
    log_interior = jnp.where(ok, log_interior, log_mid)
    return jnp.where(lv == 0, log_cdf_a, jnp.where(lv == k - 1, log_sf_b, log_interior))


def _logistic_noise(key: jax.Array, shape) -> jax.Array:
    """Standard logistic draws by inverse CDF: ``log u - log(1 - u)``, ``u ~ U(0, 1)``."""
    u = jax.random.uniform(key, shape, jnp.float32, minval=np.finfo(np.float32).tiny, maxval=1.0)
    return jnp.log(u) - jnp.log1p(-u)


def _gumbel_argmax(key: jax.Array, logits: jax.Array) -> jax.Array:
    """Component index ``argmax_m (logits_m + g_m)``, ``g = -log(-log u)`` (Gumbel-max)."""
    u = jax.random.uniform(key, logits.shape, jnp.float32, minval=np.finfo(np.float32).tiny, maxval=1.0)
    return jnp.argmax(logits - jnp.log(-jnp.log(u)), axis=-1)


def _to_level(v: jax.Array, num_levels: int) -> jax.Array:
    """Continuous ``v`` -> the level whose bin holds it: clip to ``[-1, 1]``, round to the
    grid (bin ``l`` is ``[x_l - h, x_l + h)``; the edge bins take everything beyond)."""
    k = num_levels
    return jnp.clip(jnp.round((jnp.clip(v, -1.0, 1.0) + 1.0) * 0.5 * (k - 1)), 0, k - 1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------
# Coupled mixture over the channels of a pixel (Sec. 2.2).
# ----------------------------------------------------------------------------------------


def coupled_means(params: MixtureParams, x: jax.Array) -> jax.Array:
    """``mu_{c,m} + sum_{c'<c} alpha_{c,c',m} x_{c'}`` (Sec. 2.2): ``[..., C, M]`` from the
    known channel values ``x`` ``[..., C]`` on ``[-1, 1]`` (channel ``c`` uses only ``x_<c``)."""
    if params.coeffs is None:
        return params.means
    c = params.means.shape[-2]
    rows, idx = [], 0
    for ch in range(c):
        mu = params.means[..., ch, :]
        for prev in range(ch):
            mu = mu + params.coeffs[..., idx, :] * x[..., prev, None]
            idx += 1
        rows.append(mu)
    return jnp.stack(rows, axis=-2)


def mixture_log_prob(params: MixtureParams, levels: jax.Array, num_levels: int) -> jax.Array:
    """``log sum_m pi_m prod_c P(l_c | mu_{c,m}(x_<c), s_{c,m})`` (Eq. 2 + Sec. 2.2):
    ``[...]`` from ``params`` with leading dims ``[...]`` and int levels ``[..., C]``."""
    x = level_to_centre(levels, num_levels)
    lp = discretized_logistic_log_prob(levels[..., None], coupled_means(params, x),
                                       params.log_scales, num_levels)  # [..., C, M]
    return jax.nn.logsumexp(jnp.sum(lp, axis=-2) + jax.nn.log_softmax(params.logits, axis=-1), axis=-1)


def log_prob_levels(raw: jax.Array, levels: jax.Array, num_levels: int) -> jax.Array:
    """Log-mass of every pixel, all channels jointly (Salimans et al. 2017, Eq. 2 + Sec. 2.2).

    Args:
      raw: float ``[B, H, W, P]``, ``P = M (1 + 2 C + C (C - 1) / 2)`` (module docstring).
      levels: int ``[B, H, W, C]`` in ``0..K-1`` (range checked when concrete).
      num_levels: ``K >= 2``.

    Returns:
      float32 ``[B, H, W]`` ``log P(pixel)`` in nats.
    """
    k = _check_num_levels(num_levels)
    if raw.ndim != 4 or levels.ndim != 4 or raw.shape[:3] != levels.shape[:3]:
        raise ValueError(f"log_prob_levels: raw must be [B, H, W, P] and levels [B, H, W, C] with the same "
                         f"B, H, W; got raw {raw.shape} and levels {levels.shape}")
    check_levels(levels, k, "log_prob_levels levels")
    c = levels.shape[-1]
    m = infer_num_mix(raw.shape[-1], c, f"log_prob_levels raw {raw.shape}")
    return mixture_log_prob(unpack(raw, m, c), levels, k)


def sample(raw: jax.Array, key: jax.Array, num_levels: int, channels: int) -> jax.Array:
    """Draws levels from the coupled mixture, exactly the distribution of :func:`log_prob_levels`.

    Per pixel: component ``m`` by Gumbel-max over ``logits``; then channel by channel
    ``v_c = mu_{c,m}(x_<c) + s_{c,m} (log u - log(1 - u))`` (logistic inverse CDF), clipped
    to ``[-1, 1]`` and rounded to the grid. The coupling uses the *discretized* earlier
    channels ``x_<c`` (bin centres), as the likelihood does (deviation: the reference code
    feeds the continuous clipped values, which is not exactly the model's distribution).

    Args:
      raw: ``[B, H, W, P]`` with ``P = num_params(M, channels)``.
      key: PRNG key.
      num_levels: ``K``.
      channels: ``C`` (``P`` alone does not determine it).

    Returns:
      int32 levels ``[B, H, W, C]``.
    """
    k = _check_num_levels(num_levels)
    if raw.ndim != 4:
        raise ValueError(f"sample: raw must be [B, H, W, P], got shape {raw.shape}")
    c = int(channels)
    return sample_params(unpack(raw, infer_num_mix(raw.shape[-1], c, f"sample raw {raw.shape}"), c), key, k)


def sample_params(params: MixtureParams, key: jax.Array, num_levels: int) -> jax.Array:
    """:func:`sample` from unpacked :class:`MixtureParams` (leading dims ``[...]``): int32
    levels ``[..., C]``."""
    k = _check_num_levels(num_levels)
    c = params.means.shape[-2]
    k_m, k_u = jax.random.split(key)
    comp = jax.nn.one_hot(_gumbel_argmax(k_m, params.logits), params.logits.shape[-1], dtype=jnp.float32)
    pick = lambda a: jnp.sum(a * comp[..., None, :], axis=-1)  # [..., C', M] -> [..., C']
    mu, log_s = pick(params.means), pick(params.log_scales)
    alpha = None if params.coeffs is None else pick(params.coeffs)
    eps = _logistic_noise(k_u, mu.shape)
    levels, xs, idx = [], [], 0
    for ch in range(c):
        v = mu[..., ch] + jnp.exp(log_s[..., ch]) * eps[..., ch]
        for prev in range(ch):
            v = v + alpha[..., idx] * xs[prev]
            idx += 1
        lv = _to_level(v, k)
        levels.append(lv)
        xs.append(level_to_centre(lv, k))
    return jnp.stack(levels, axis=-1)


# ----------------------------------------------------------------------------------------
# Per-channel mixtures without coupling (decoders of other families).
# ----------------------------------------------------------------------------------------


def channel_log_prob(levels: jax.Array, logits: jax.Array, means: jax.Array, log_scales: jax.Array,
                     num_levels: int) -> jax.Array:
    """``log P(l_c) = log sum_m pi_{c,m} P(l_c | mu_{c,m}, s_{c,m})`` per channel, each
    channel its own mixture, no coupling (Eq. 2 applied per sub-pixel).

    Args:
      levels: int ``[..., C]`` in ``0..K-1`` (range checked when concrete).
      logits, means, log_scales: ``[..., C, M]`` (broadcastable against ``levels[..., None]``).
      num_levels: ``K``.

    Returns:
      float32 ``[..., C]`` nats (sum the trailing axes for an image's log-mass).
    """
    k = _check_num_levels(num_levels)
    check_levels(levels, k, "channel_log_prob levels")
    if means.ndim != levels.ndim + 1 or means.shape[-2] != levels.shape[-1]:
        raise ValueError(f"channel_log_prob: means must be [..., C, M] for levels [..., C]; got means "
                         f"{means.shape}, levels {levels.shape}")
    lp = discretized_logistic_log_prob(levels[..., None], means, log_scales, k)
    return jax.nn.logsumexp(lp + jax.nn.log_softmax(logits, axis=-1), axis=-1)


def channel_sample(key: jax.Array, logits: jax.Array, means: jax.Array, log_scales: jax.Array,
                   num_levels: int) -> jax.Array:
    """Levels int32 ``[..., C]`` from the per-channel mixtures ``[..., C, M]`` of
    :func:`channel_log_prob` (Gumbel-max component, logistic inverse CDF, clip and round)."""
    k = _check_num_levels(num_levels)
    k_m, k_u = jax.random.split(key)
    comp = jax.nn.one_hot(_gumbel_argmax(k_m, logits), logits.shape[-1], dtype=jnp.float32)
    mu = jnp.sum(means * comp, axis=-1)
    log_s = jnp.sum(jnp.maximum(log_scales, MIN_LOG_SCALE) * comp, axis=-1)
    return _to_level(mu + jnp.exp(log_s) * _logistic_noise(k_u, mu.shape), k)
