"""Discrete-time noise schedules ``beta_1..beta_T`` and the derived constants of DDPM.

Indexing: arrays have length ``T`` and index ``t = 0..T-1`` stands for the paper's step
``t + 1`` (Ho et al. 2020 count ``1..T``). So ``alpha_bars[t] = prod_{s <= t} (1 - betas[s])``
is the noise level of ``x_{t+1}`` in the paper's notation, and ``alpha_bars_prev[0] = 1``
(the clean data ``x_0``).

References:
  * Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models" (DDPM), Sec. 2 and 4.
  * Nichol & Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models", Eq. 17.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine")


def _check_T(num_timesteps) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) \
            or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    return int(num_timesteps)


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02,
                 scale_to_1000: bool = False) -> np.ndarray:
    """Linear schedule ``beta_t = beta_start + (t - 1) / (T - 1) (beta_end - beta_start)``.

    Ho et al. 2020, Sec. 4: ``T = 1000``, ``beta_1 = 1e-4`` to ``beta_T = 0.02``. With
    ``scale_to_1000`` both ends are multiplied by ``1000 / T`` (Nichol & Dhariwal 2021, their
    code's rule for other ``T``), which keeps ``alpha_bar_T`` close to the ``T = 1000`` value.

    Returns:
      float64 ``[T]``.
    """
    t = _check_T(num_timesteps)
    if scale_to_1000:
        beta_start, beta_end = beta_start * 1000.0 / t, beta_end * 1000.0 / t
    if not (0.0 < beta_start <= beta_end < 1.0):
        raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got "
                         f"beta_start={beta_start}, beta_end={beta_end} (T={t})")
    return np.linspace(beta_start, beta_end, t, dtype=np.float64)


def cosine_alpha_bar(u, s: float = 0.008):
    """``f(u) / f(0)`` with ``f(u) = cos^2(pi/2 (u + s) / (1 + s))``, ``u = t / T`` in [0, 1]
    (Nichol & Dhariwal 2021, Eq. 17)."""
    f = lambda v: np.cos((v + s) / (1.0 + s) * math.pi / 2.0) ** 2
    return f(np.asarray(u, np.float64)) / f(0.0)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021, Eq. 17 and Sec. 3.2):

        alpha_bar(t) = f(t) / f(0),  f(t) = cos^2((t / T + s) / (1 + s) * pi / 2),
        beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta),  t = 1..T.

    Returns:
      float64 ``[T]``.
    """
    t = _check_T(num_timesteps)
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    grid = np.arange(t + 1, dtype=np.float64) / t
    ab = cosine_alpha_bar(grid, s)
    return np.minimum(1.0 - ab[1:] / ab[:-1], max_beta)


class Schedule(NamedTuple):
    """All per-step constants of a discrete Gaussian diffusion, float32 ``[T]`` each.

    With ``a_t = 1 - beta_t`` and ``abar_t = prod_{s<=t} a_s`` (Ho et al. 2020, Sec. 2):

    * ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)``  (Eq. 4)
    * ``q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, betatilde_t I)`` (Eqs. 6-7) with
      ``coef1 = sqrt(abar_{t-1}) beta_t / (1 - abar_t)``,
      ``coef2 = sqrt(a_t) (1 - abar_{t-1}) / (1 - abar_t)``,
      ``betatilde_t = (1 - abar_{t-1}) beta_t / (1 - abar_t)``.

    ``posterior_variance[0] = 0`` (the last reverse step is deterministic), so
    ``posterior_log_variance_clipped`` replaces its entry 0 by entry 1 (as in Ho et al.'s
    code). A NamedTuple, hence a pytree: pass it through ``jit`` as an argument or close
    over it.
    """

    betas: jnp.ndarray
    alphas: jnp.ndarray
    alpha_bars: jnp.ndarray
    alpha_bars_prev: jnp.ndarray
    sqrt_alpha_bars: jnp.ndarray
    sqrt_one_minus_alpha_bars: jnp.ndarray
    log_one_minus_alpha_bars: jnp.ndarray
    sqrt_recip_alpha_bars: jnp.ndarray
    sqrt_recipm1_alpha_bars: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    posterior_mean_coef1: jnp.ndarray
    posterior_mean_coef2: jnp.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])


def schedule_from_betas(betas) -> Schedule:
    """Derives every :class:`Schedule` constant from ``betas [T]`` (in float64, then float32)."""
    betas = np.asarray(betas, np.float64)
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError(f"betas must lie in (0, 1); got min {betas.min()}, max {betas.max()}")
    alphas = 1.0 - betas
    ab = np.cumprod(alphas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
    post_log_var = np.log(np.concatenate([post_var[1:2], post_var[1:]])) if len(betas) > 1 \
        else np.log(betas)  # T = 1: no step 1 to borrow from; use beta_1
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return Schedule(
        betas=f32(betas), alphas=f32(alphas), alpha_bars=f32(ab), alpha_bars_prev=f32(ab_prev),
        sqrt_alpha_bars=f32(np.sqrt(ab)), sqrt_one_minus_alpha_bars=f32(np.sqrt(1.0 - ab)),
        log_one_minus_alpha_bars=f32(np.log(1.0 - ab)),
        sqrt_recip_alpha_bars=f32(np.sqrt(1.0 / ab)),
        sqrt_recipm1_alpha_bars=f32(np.sqrt(1.0 / ab - 1.0)),
        posterior_variance=f32(post_var), posterior_log_variance_clipped=f32(post_log_var),
        posterior_mean_coef1=f32(betas * np.sqrt(ab_prev) / (1.0 - ab)),
        posterior_mean_coef2=f32((1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab)),
    )


def make_schedule(kind: str, num_timesteps: int, **kwargs) -> Schedule:
    """Builds a :class:`Schedule`.

    Args:
      kind: ``'linear'`` (Ho et al. 2020, Sec. 4; kwargs ``beta_start``, ``beta_end``,
        ``scale_to_1000``) or ``'cosine'`` (Nichol & Dhariwal 2021, Eq. 17; kwargs ``s``,
        ``max_beta``).
      num_timesteps: ``T >= 1``.

    Raises:
      ValueError: unknown ``kind``, bad ``num_timesteps`` or bad schedule parameters.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; expected one of {SCHEDULES}")
    _check_T(num_timesteps)
    fn = linear_betas if kind == "linear" else cosine_betas
    try:
        betas = fn(num_timesteps, **kwargs)
    except TypeError as e:  # unknown kwarg
        raise ValueError(f"bad arguments for the {kind!r} schedule: {e}") from None
    return schedule_from_betas(betas)
