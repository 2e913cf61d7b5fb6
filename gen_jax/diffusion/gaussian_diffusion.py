"""The discrete Gaussian diffusion of DDPM: forward process, posterior, parameterizations,
the reverse-step Gaussian from a network output, and per-example losses.

Notation (see :mod:`gen_jax.diffusion.schedules` for the ``t = 0..T-1`` indexing):
``x_0`` is data on ``[-1, 1]`` (``x0 = 2 * image - 1``), ``eps ~ N(0, I)``,
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.

Every array of data is ``[B, ...]`` (``[B, H, W, C]`` for images); time steps are int32
``[B]``; per-step constants are gathered and broadcast to ``[B, 1, ..., 1]``. Losses return
per-example ``[B]`` terms in a dict; reduce them at the call site.

References:
  * Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (Eqs. 4, 5, 6, 7,
    11, 12, 13, 14 and Sec. 3.3).
  * Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (Eq. 15 and
    Sec. 3.1).
  * Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models"
    (Sec. 4 and App. D: v-prediction).
  * Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-Based Generative
    Modeling through Stochastic Differential Equations" (Eq. 7).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

from gen_jax.diffusion.schedules import Schedule

PARAMETERIZATIONS = ("eps", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]

# ----------------------------------------------------------------------------------------
# Checks and gathering.
# ----------------------------------------------------------------------------------------


def check_batch(x: jax.Array, t: jax.Array, x_name: str = "x", t_name: str = "t") -> None:
    """Raises a ValueError unless ``x`` is ``[B, ...]`` (ndim >= 2) and ``t`` is ``[B]``."""
    if jnp.ndim(x) < 2:
        raise ValueError(f"{x_name} must be [B, ...] with ndim >= 2, got shape {jnp.shape(x)}")
    if jnp.ndim(t) != 1 or jnp.shape(t)[0] != jnp.shape(x)[0]:
        raise ValueError(f"{t_name} must be [B] with B={jnp.shape(x)[0]} (from {x_name} "
                         f"{jnp.shape(x)}), got shape {jnp.shape(t)}")


def _check_same(a, b, a_name, b_name):
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(f"{a_name} {jnp.shape(a)} and {b_name} {jnp.shape(b)} must have "
                         f"the same shape")


def extract(arr: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
    """``arr[t]`` for ``t [B]``, reshaped to ``[B, 1, ..., 1]`` with ``ndim`` axes."""
    return jnp.take(arr, t.astype(jnp.int32), axis=0).reshape((-1,) + (1,) * (ndim - 1))


def mean_flat(x: jax.Array) -> jax.Array:
    """Mean over all but the first axis: ``[B, ...] -> [B]``."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def sum_flat(x: jax.Array) -> jax.Array:
    """Sum over all but the first axis: ``[B, ...] -> [B]``."""
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


# ----------------------------------------------------------------------------------------
# Forward process and posterior.
# ----------------------------------------------------------------------------------------


def q_mean_variance(schedule: Schedule, x0: jax.Array, t: jax.Array):
    """``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` (Ho et al. 2020, Eq. 4).

    Returns:
      ``(mean [B, ...], variance [B, 1.., 1], log_variance [B, 1.., 1])``.
    """
    check_batch(x0, t, "x0")
    n = x0.ndim
    mean = extract(schedule.sqrt_alpha_bars, t, n) * x0
    return mean, 1.0 - extract(schedule.alpha_bars, t, n), extract(
        schedule.log_one_minus_alpha_bars, t, n)


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, Eq. 4 reparameterized).

    Args:
      x0: ``[B, ...]`` data; t: int ``[B]``; noise: ``eps`` with the shape of ``x0``.
    """
    check_batch(x0, t, "x0")
    _check_same(x0, noise, "x0", "noise")
    n = x0.ndim
    return extract(schedule.sqrt_alpha_bars, t, n) * x0 + extract(
        schedule.sqrt_one_minus_alpha_bars, t, n) * noise


def q_step_sample(schedule: Schedule, x_prev: jax.Array, t: jax.Array,
                  noise: jax.Array) -> jax.Array:
    """One forward transition ``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``
    (Ho et al. 2020, Eq. 2). ``x_prev`` is ``x_{t-1}`` (``x_0`` when ``t = 0``)."""
    check_batch(x_prev, t, "x_prev")
    n = x_prev.ndim
    b = extract(schedule.betas, t, n)
    return jnp.sqrt(1.0 - b) * x_prev + jnp.sqrt(b) * noise


def q_posterior_mean_variance(schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array):
    """``q(x_{t-1} | x_t, x_0) = N(mu~_t, beta~_t I)`` (Ho et al. 2020, Eqs. 6-7):

        mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(a_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
        beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.

    Returns:
      ``(mean [B, ...], variance [B, 1.., 1], log_variance_clipped [B, 1.., 1])``.
    """
    check_batch(x_t, t, "x_t")
    _check_same(x0, x_t, "x0", "x_t")
    n = x_t.ndim
    mean = extract(schedule.posterior_mean_coef1, t, n) * x0 + extract(
        schedule.posterior_mean_coef2, t, n) * x_t
    return (mean, extract(schedule.posterior_variance, t, n),
            extract(schedule.posterior_log_variance_clipped, t, n))


# ----------------------------------------------------------------------------------------
# Parameterizations: eps, x0, v (small named adapters).
# ----------------------------------------------------------------------------------------


def x0_from_eps(schedule: Schedule, x_t, t, eps):
    """``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` (Ho et al. 2020, Eq. 4 inverted)."""
    n = x_t.ndim
    return extract(schedule.sqrt_recip_alpha_bars, t, n) * x_t - extract(
        schedule.sqrt_recipm1_alpha_bars, t, n) * eps


def eps_from_x0(schedule: Schedule, x_t, t, x0):
    """``eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)``."""
    n = x_t.ndim
    return (extract(schedule.sqrt_recip_alpha_bars, t, n) * x_t - x0) / extract(
        schedule.sqrt_recipm1_alpha_bars, t, n)


def v_from_x0_eps(schedule: Schedule, x0, t, eps):
    """``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (Salimans & Ho 2022, Sec. 4)."""
    n = x0.ndim
    return extract(schedule.sqrt_alpha_bars, t, n) * eps - extract(
        schedule.sqrt_one_minus_alpha_bars, t, n) * x0


def x0_from_v(schedule: Schedule, x_t, t, v):
    """``x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v`` (Salimans & Ho 2022, App. D)."""
    n = x_t.ndim
    return extract(schedule.sqrt_alpha_bars, t, n) * x_t - extract(
        schedule.sqrt_one_minus_alpha_bars, t, n) * v


def eps_from_v(schedule: Schedule, x_t, t, v):
    """``eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v`` (Salimans & Ho 2022, App. D)."""
    n = x_t.ndim
    return extract(schedule.sqrt_one_minus_alpha_bars, t, n) * x_t + extract(
        schedule.sqrt_alpha_bars, t, n) * v


def to_x0_eps(schedule: Schedule, x_t, t, pred, parameterization: str, clip_x0: bool = False):
    """A network's mean output in any parameterization -> ``(x0_hat, eps_hat)``.

    With ``clip_x0``, ``x0_hat`` is clipped to ``[-1, 1]`` and ``eps_hat`` recomputed from it
    (so a DDIM step and the DDPM posterior use the same consistent pair). ``clip_x0`` may also be
    a function ``x0 -> x0`` (static or dynamic thresholding, :mod:`gen_jax.diffusion.thresholding`),
    applied in place of the clip.
    """
    if parameterization == "eps":
        x0 = x0_from_eps(schedule, x_t, t, pred)
        eps = pred
    elif parameterization == "x0":
        x0 = pred
        eps = eps_from_x0(schedule, x_t, t, pred)
    elif parameterization == "v":
        x0 = x0_from_v(schedule, x_t, t, pred)
        eps = eps_from_v(schedule, x_t, t, pred)
    else:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got "
                         f"{parameterization!r}")
    if callable(clip_x0):
        x0 = clip_x0(x0)
        eps = eps_from_x0(schedule, x_t, t, x0)
    elif clip_x0:
        x0 = jnp.clip(x0, -1.0, 1.0)
        eps = eps_from_x0(schedule, x_t, t, x0)
    return x0, eps


def target_for(schedule: Schedule, x0, t, eps, parameterization: str):
    """The regression target of a parameterization: ``eps``, ``x_0`` or ``v``."""
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    if parameterization == "v":
        return v_from_x0_eps(schedule, x0, t, eps)
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got "
                     f"{parameterization!r}")


# ----------------------------------------------------------------------------------------
# Reverse step p(x_{t-1} | x_t).
# ----------------------------------------------------------------------------------------


def split_model_output(out: jax.Array, x_t: jax.Array, var_type: str):
    """``out [B, ..., C]`` (or ``[B, ..., 2C]`` for ``learned_range``) -> ``(pred, var_raw)``."""
    if var_type not in VAR_TYPES:
        raise ValueError(f"var_type must be one of {VAR_TYPES}, got {var_type!r}")
    if var_type == "learned_range":
        want = x_t.shape[:-1] + (2 * x_t.shape[-1],)
        if out.shape != want:
            raise ValueError(f"model output must be {want} (mean and variance channels) for "
                             f"var_type='learned_range', got {out.shape}")
        c = x_t.shape[-1]
        return out[..., :c], out[..., c:]
    if out.shape != x_t.shape:
        raise ValueError(f"model output must have the shape of x_t {x_t.shape} for "
                         f"var_type={var_type!r}, got {out.shape}")
    return out, None


def p_mean_variance(schedule: Schedule, out: jax.Array, x_t: jax.Array, t: jax.Array,
                    parameterization: str = "eps", var_type: str = "fixed_small",
                    clip_x0: bool = False) -> dict:
    """The reverse-step Gaussian ``p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta)`` from a network
    output.

    Mean: ``mu_theta = mu~_t(x0_hat, x_t)`` (Ho et al. 2020, Eq. 7 with ``x0_hat`` from the
    parameterization; for ``eps`` this is Eq. 11,
    ``mu = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(a_t)``).

    Variance:
      * ``fixed_small``: ``sigma_t^2 = beta~_t`` (Ho et al. 2020, Sec. 3.2), log clipped at t=0;
      * ``fixed_large``: ``sigma_t^2 = beta_t`` (entry 0 replaced by ``beta~_1``, as in
        Ho et al.'s code, so that the decoder is not given the large ``beta_1``);
      * ``learned_range``: ``Sigma = exp(v log beta_t + (1 - v) log beta~_t)`` (Nichol &
        Dhariwal 2021, Eq. 15) with ``v = (out_var + 1) / 2`` for the raw channel ``out_var``
        (the network's output is read on ``[-1, 1]``, as in their code).

    Args:
      out: ``[B, ..., C]`` or ``[B, ..., 2C]`` (``learned_range``).
      x_t: ``[B, ..., C]``; t: int ``[B]``.

    Returns:
      dict of ``mean``, ``variance``, ``log_variance`` (broadcastable to ``x_t``), ``x0``,
      ``eps`` (``[B, ..., C]``) and ``var_raw`` (or ``None``).
    """
    check_batch(x_t, t, "x_t")
    pred, var_raw = split_model_output(out, x_t, var_type)
    n = x_t.ndim
    if var_type == "fixed_small":
        var = extract(schedule.posterior_variance, t, n)
        log_var = extract(schedule.posterior_log_variance_clipped, t, n)
    elif var_type == "fixed_large":
        big = jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]]) \
            if schedule.num_timesteps > 1 else schedule.betas
        var = extract(big, t, n)
        log_var = jnp.log(var)
    else:
        frac = (var_raw + 1.0) / 2.0
        log_var = frac * extract(jnp.log(schedule.betas), t, n) + (1.0 - frac) * extract(
            schedule.posterior_log_variance_clipped, t, n)
        var = jnp.exp(log_var)
    x0, eps = to_x0_eps(schedule, x_t, t, pred, parameterization, clip_x0)
    mean, _, _ = q_posterior_mean_variance(schedule, x0, x_t, t)
    return dict(mean=mean, variance=var, log_variance=log_var, x0=x0, eps=eps, var_raw=var_raw)


# ----------------------------------------------------------------------------------------
# KLs and the discretized Gaussian decoder.
# ----------------------------------------------------------------------------------------


def normal_kl(mean1, log_var1, mean2, log_var2):
    """Elementwise ``KL(N(m1, s1^2) || N(m2, s2^2)) = 1/2 [log s2^2 - log s1^2
    + (s1^2 + (m1 - m2)^2) / s2^2 - 1]`` (nats, no reduction)."""
    return 0.5 * (log_var2 - log_var1 + jnp.exp(log_var1 - log_var2)
                  + jnp.square(mean1 - mean2) * jnp.exp(-log_var2) - 1.0)


def discretized_gaussian_log_likelihood(x0: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                        num_levels: int) -> jax.Array:
    """Per-dimension ``log P(level)`` of the discretized Gaussian decoder (Ho et al. 2020,
    Eq. 13, Sec. 3.3):

        p(x_0 | x_1) = prod_i int_{delta_-(x_0^i)}^{delta_+(x_0^i)} N(x; mu^i, sigma^2) dx,
        delta_+(x) = +inf if x = 1 else x + 1/(K-1),  delta_-(x) = -inf if x = -1 else x - 1/(K-1),

    i.e. bins of width ``2 / (K - 1)`` centred on the ``K`` levels ``2 l / (K - 1) - 1`` of
    ``[-1, 1]`` (Ho et al. use ``K = 256``, bins ``1/255``-wide either side). Computed with
    ``log_ndtr`` (exact Gaussian CDF, not the paper's code's tanh approximation).

    Args:
      x0: ``[B, ...]`` data on the level grid of ``[-1, 1]``.
      mean, log_scale: broadcastable to ``x0``; ``log_scale`` is ``log sigma``.
      num_levels: ``K >= 2``.

    Returns:
      ``[B, ...]`` log-probabilities (nats) of each dimension's level.
    """
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    half = 1.0 / (num_levels - 1)
    inv = jnp.exp(-log_scale)
    lo = (x0 - half - mean) * inv
    hi = (x0 + half - mean) * inv
    # One log_ndtr over the four arguments needed (cheaper to compile than four calls).
    l_hi, l_mlo, l_lo, l_mhi = log_ndtr(jnp.stack([hi, -lo, lo, -hi]))
    # Interior bins: log(Phi(hi) - Phi(lo)) without cancellation, computed in the lower tail
    # (Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi) when lo > 0):
    # log Phi(top) + log1p(-exp(log Phi(bottom) - log Phi(top))).
    flip = lo > 0
    top = jnp.where(flip, l_mlo, l_hi)
    bottom = jnp.where(flip, l_mhi, l_lo)
    mid = top + jnp.log(-jnp.expm1(jnp.minimum(bottom - top, -1e-30)))
    # Lowest level: P = Phi(hi); highest level: P = 1 - Phi(lo) = Phi(-lo).
    return jnp.where(x0 < -1.0 + half, l_hi, jnp.where(x0 > 1.0 - half, l_mlo, mid))


def prior_kl(schedule: Schedule, x0: jax.Array) -> jax.Array:
    """``L_T = KL(q(x_T | x_0) || N(0, I))`` summed over dimensions, ``[B]`` nats
    (Ho et al. 2020, Eq. 5)."""
    b = x0.shape[0]
    t = jnp.full((b,), schedule.num_timesteps - 1, jnp.int32)
    mean, _, log_var = q_mean_variance(schedule, x0, t)
    return sum_flat(normal_kl(mean, jnp.broadcast_to(log_var, mean.shape), 0.0, 0.0))


def vb_term(schedule: Schedule, out: jax.Array, x0: jax.Array, x_t: jax.Array, t: jax.Array,
            num_levels: int, parameterization: str = "eps", var_type: str = "fixed_small",
            clip_x0: bool = False, stop_grad_mean: bool = False) -> jax.Array:
    """One term of the variational bound, ``[B]`` nats (summed over dimensions):

        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   for t >= 1 (index t > 0),
        L_0 = -log p(x_0 | x_1)  (discretized Gaussian decoder)     for index t = 0

    (Ho et al. 2020, Eq. 5). ``stop_grad_mean`` stops the gradient through the mean channels
    of ``out`` (Nichol & Dhariwal 2021, Sec. 3.1: ``L_vlb`` only trains the variance).
    """
    if stop_grad_mean:
        c = x_t.shape[-1]
        out = jnp.concatenate([jax.lax.stop_gradient(out[..., :c]), out[..., c:]], axis=-1)
    p = p_mean_variance(schedule, out, x_t, t, parameterization, var_type, clip_x0)
    q_mean, _, q_log_var = q_posterior_mean_variance(schedule, x0, x_t, t)
    kl = sum_flat(normal_kl(q_mean, jnp.broadcast_to(q_log_var, x0.shape), p["mean"],
                            jnp.broadcast_to(p["log_variance"], x0.shape)))
    nll = -sum_flat(discretized_gaussian_log_likelihood(
        x0, p["mean"], 0.5 * jnp.broadcast_to(p["log_variance"], x0.shape), num_levels))
    return jnp.where(t == 0, nll, kl)


# ----------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------


def _sample_t_noise(key, x0, num_timesteps, t=None, noise=None):
    kt, kn = jax.random.split(key)
    b = x0.shape[0]
    if t is None:
        t = jax.random.randint(kt, (b,), 0, num_timesteps, jnp.int32)
    if noise is None:
        noise = jax.random.normal(kn, x0.shape, x0.dtype)
    return t, noise


def simple_loss(model_fn: ModelFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
                cond: Any = None, parameterization: str = "eps", var_type: str = "fixed_small",
                t: Optional[jax.Array] = None, noise: Optional[jax.Array] = None) -> dict:
    """``L_simple = E_{t, eps} || target - f_theta(x_t, t) ||^2`` (Ho et al. 2020, Eq. 14),
    mean over dimensions, one ``(t, eps)`` per example, ``t ~ U{0..T-1}``.

    Target: ``eps`` (Eq. 14), ``x_0``, or ``v = sqrt(abar) eps - sqrt(1 - abar) x_0``
    (Salimans & Ho 2022). With ``learned_range`` only the first ``C`` channels are regressed.

    Args:
      model_fn: ``(x_t [B, ..., C], t [B], cond) -> [B, ..., C or 2C]``.
      x0: ``[B, ..., C]`` on ``[-1, 1]``.
      t, noise: optional fixed ``t [B]`` and ``eps`` (for tests).

    Returns:
      dict with ``loss [B]`` (= ``mse``), ``t [B]``.
    """
    t, noise = _sample_t_noise(key, x0, schedule.num_timesteps, t, noise)
    check_batch(x0, t, "x0")
    _check_same(x0, noise, "x0", "noise")
    x_t = q_sample(schedule, x0, t, noise)
    out = model_fn(x_t, t, cond)
    pred, _ = split_model_output(out, x_t, var_type)
    mse = mean_flat(jnp.square(target_for(schedule, x0, t, noise, parameterization) - pred))
    return dict(loss=mse, mse=mse, t=t)


def hybrid_loss(model_fn: ModelFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
                num_levels: int, cond: Any = None, parameterization: str = "eps",
                vlb_weight: float = 1e-3, t: Optional[jax.Array] = None,
                noise: Optional[jax.Array] = None) -> dict:
    """``L_hybrid = L_simple + lambda L_vlb`` (Nichol & Dhariwal 2021, Sec. 3.1, lambda = 0.001)
    with a learned interpolated variance (``var_type='learned_range'``, their Eq. 15).

    ``L_vlb = sum_t L_t`` is estimated without bias from the same uniform ``t`` as
    ``T * L_t``; ``L_t`` (:func:`vb_term`) is measured in bits per dimension and sees the mean
    channels through ``stop_gradient``, so only the variance learns from it. This equals their
    code's ``rescaled_mse`` loss (``vb * T / 1000``).

    Returns:
      dict with ``loss``, ``mse``, ``vb`` (``L_t`` bits/dim) and ``t``, each ``[B]``.
    """
    t, noise = _sample_t_noise(key, x0, schedule.num_timesteps, t, noise)
    check_batch(x0, t, "x0")
    _check_same(x0, noise, "x0", "noise")
    x_t = q_sample(schedule, x0, t, noise)
    out = model_fn(x_t, t, cond)
    pred, _ = split_model_output(out, x_t, "learned_range")
    mse = mean_flat(jnp.square(target_for(schedule, x0, t, noise, parameterization) - pred))
    d = math.prod(x0.shape[1:])
    vb = vb_term(schedule, out, x0, x_t, t, num_levels, parameterization, "learned_range",
                 stop_grad_mean=True) / (d * math.log(2.0))
    loss = mse + vlb_weight * schedule.num_timesteps * vb
    return dict(loss=loss, mse=mse, vb=vb, t=t)


def vlb_terms(model_fn: ModelFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
              num_levels: int, cond: Any = None, parameterization: str = "eps",
              var_type: str = "fixed_small", clip_x0: bool = False,
              chunk_size: int = 50) -> dict:
    """Every term of the variational bound, per example (Ho et al. 2020, Eq. 5):

        -log P(x_0) <= L = L_T + sum_{t=2}^{T} L_{t-1} + L_0,
        L_T = KL(q(x_T | x_0) || N(0, I)),
        L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)),
        L_0 = -E_q log p_theta(x_0 | x_1) (discretized decoder, :func:`vb_term`).

    Each expectation over ``x_t ~ q(x_t | x_0)`` is a one-sample estimate with noise
    ``N(0, I)`` drawn from ``fold_in(key, t)``, so the total is an unbiased estimate of the
    bound, and the result does not depend on ``chunk_size``. All ``T`` terms are computed
    (no subsampling): timesteps are vmapped in chunks of ``chunk_size`` under ``lax.map``, so
    memory holds ``chunk_size`` network evaluations of the batch at a time.

    Args:
      model_fn: ``(x_t [B, ..., C], t [B], cond) -> [B, ..., C or 2C]``.
      x0: ``[B, ..., C]`` data on the ``K``-level grid of ``[-1, 1]``.
      num_levels: ``K``.

    Returns:
      dict, all nats:
        ``vb [B, T]``: column ``t`` is the term of index ``t`` -- column 0 the decoder NLL
        ``L_0``, columns ``1..T-1`` the denoising KLs ``L_1..L_{T-1}``;
        ``kl [B, T]``: the denoising KLs only (column 0 is 0);
        ``decoder [B]`` (= ``vb[:, 0]``), ``prior [B]`` (``L_T``), ``total [B]``
        (= ``prior + sum(vb, 1)``, an upper bound on ``-log P(levels)``).
    """
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must be [B, ...], got shape {jnp.shape(x0)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    big_t = schedule.num_timesteps
    b = x0.shape[0]

    def one(t_scalar):
        noise = jax.random.normal(jax.random.fold_in(key, t_scalar), x0.shape, x0.dtype)
        t = jnp.full((b,), t_scalar, jnp.int32)
        x_t = q_sample(schedule, x0, t, noise)
        out = model_fn(x_t, t, cond)
        return vb_term(schedule, out, x0, x_t, t, num_levels, parameterization, var_type,
                       clip_x0)

    vb = jax.lax.map(one, jnp.arange(big_t, dtype=jnp.int32),
                     batch_size=min(chunk_size, big_t)).T  # [B, T]
    prior = prior_kl(schedule, x0)
    kl = vb.at[:, 0].set(0.0)
    return dict(vb=vb, kl=kl, decoder=vb[:, 0], prior=prior, total=prior + jnp.sum(vb, 1))


def vlb_to_log_prob(terms: dict, num_dims: int, num_levels: int) -> dict:
    """Turns :func:`vlb_terms` into the contract's quantities, per example:

    * ``log_p_levels = -total``: a lower bound on ``log P(levels)`` (nats);
    * ``log_prob = log_p_levels + D log K``: the piecewise-constant density of the uniformly
      dequantized data on ``[0, 1)^D`` (gen_jax.model convention);
    * ``bpd = (-log_prob + D log K) / (D log 2) = total / (D log 2)``, and its parts
      ``bpd_prior``, ``bpd_decoder``, ``bpd_kl`` (they sum to ``bpd``).
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")
    scale = 1.0 / (num_dims * math.log(2.0))
    log_p = -terms["total"]
    return dict(log_p_levels=log_p, log_prob=log_p + num_dims * math.log(num_levels),
                bpd=terms["total"] * scale, bpd_prior=terms["prior"] * scale,
                bpd_decoder=terms["decoder"] * scale, bpd_kl=jnp.sum(terms["kl"], 1) * scale)


def dsm_loss(score_fn: Callable, sde, x0: jax.Array, key: jax.Array, cond: Any = None,
             eps: float = 1e-5, likelihood_weighting: bool = False, reduce: str = "mean",
             t: Optional[jax.Array] = None, z: Optional[jax.Array] = None) -> dict:
    """Continuous-time denoising score matching (Song et al. 2021, Eq. 7):

        E_t { lambda(t) E_{x_0} E_{x_t | x_0} || s_theta(x_t, t) - grad log p_0t(x_t | x_0) ||^2 },

    ``t ~ U(eps, 1)``, ``x_t = m(t) x_0 + sigma(t) z`` so ``grad log p_0t = -z / sigma(t)``.
    ``lambda(t) = sigma(t)^2`` (default; the loss is ``|| sigma s_theta + z ||^2``) or
    ``lambda(t) = g(t)^2`` (``likelihood_weighting``; Song, Durkan, Murray & Ermon 2021).

    Args:
      score_fn: ``(x_t [B, ...], t [B] float, cond) -> score [B, ...]``.
      sde: an :class:`gen_jax.diffusion.sde.SDE`.
      x0: ``[B, ...]``; reduce: ``'mean'`` or ``'sum'`` over dimensions.

    Returns:
      dict with ``loss [B]`` and ``t [B]``.
    """
    if jnp.ndim(x0) < 2:
        raise ValueError(f"x0 must be [B, ...], got shape {jnp.shape(x0)}")
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    kt, kz = jax.random.split(key)
    b = x0.shape[0]
    if t is None:
        t = jax.random.uniform(kt, (b,), x0.dtype, eps, 1.0)
    if z is None:
        z = jax.random.normal(kz, x0.shape, x0.dtype)
    check_batch(x0, t, "x0")
    _check_same(x0, z, "x0", "z")
    mean, std = sde.marginal(x0, t)
    score = score_fn(mean + std * z, t, cond)
    _check_same(score, x0, "score_fn output", "x0")
    red = mean_flat if reduce == "mean" else sum_flat
    if likelihood_weighting:
        _, g = sde.drift_diffusion(x0, t)
        loss = red(jnp.square(score + z / std)) * jnp.square(g.reshape(b))
    else:
        loss = red(jnp.square(score * std + z))
    return dict(loss=loss, t=t)
