"""Diffusion samplers, each one ``lax.scan`` over its steps.

* :func:`make_ddpm_sampler` -- ancestral sampling (Ho et al. 2020, Alg. 2).
* :func:`make_ddim_sampler` -- DDIM with ``eta`` on any increasing subsequence of ``S``
  time steps (Song, Meng & Ermon 2021, Eqs. 12 and 16).
* :func:`make_pc_sampler` -- predictor-corrector for score SDEs: Euler-Maruyama or
  reverse-diffusion predictor, Langevin corrector with a signal-to-noise step size
  (Song et al. 2021, Algs. 2-5).
* :func:`make_ode_sampler` -- the probability-flow ODE (Song et al. 2021, Eq. 13) with fixed
  Euler/Heun steps, or adaptive Dormand-Prince RK45 under ``lax.while_loop``.

Every factory returns ``sample(key, shape, cond=None, *, x_T=None, x0_fixed=None,
mask=None, params=None)``: ``shape = (B, H, W, C)``; ``params`` (any pytree, e.g. network
weights) is passed to ``model_fn`` as ``model_fn(x, t, (params, cond))`` instead of
``model_fn(x, t, cond)``, so a sampler built once serves any params and its jitted single
step (``use_scan=False``) compiles once, with the weights as arguments, not constants; ``x_T`` a given start ``[B, H, W, C]``;
``x0_fixed, mask`` turn on inpainting by replacement -- after every step the known pixels
(``mask == 1``) are overwritten with a fresh sample of the forward process applied to
``x0_fixed`` at the new noise level, and the output holds ``x0_fixed`` there exactly. The
result is ``x [B, H, W, C]`` (on ``[-1, 1]`` for image models), or ``(x, trajectory)`` with
``trajectory [S + 1, B, H, W, C]`` (``trajectory[0] = x_T``) when ``return_trajectory``.
The returned function is traceable: ``jax.jit(sample, static_argnums=1)``.
The DDPM and DDIM samplers' ``clip_x0`` is a bool (clip ``x0_hat`` to ``[-1, 1]``) or a function
``x0 -> x0`` (static / dynamic thresholding, Saharia et al. 2022, Sec. 2.3:
:mod:`gen_jax.diffusion.thresholding`).

With ``use_scan=False`` the same per-step function, jitted once, is called from a Python
loop (the reference the tests compare the scan against).

Keys: ``key`` splits into ``(k_init, k_steps, k_known)``; the noise of the step at discrete
time ``t`` is drawn from ``fold_in(k_steps, t)`` in both DDPM and DDIM (so DDIM with
``eta = 1`` on the full schedule reproduces DDPM draw for draw); continuous-time samplers
fold in the step index.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import xla_options
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import sde as sde_lib
from gen_jax.diffusion.schedules import Schedule

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "none")
CORRECTORS = ("langevin", "none")
ODE_METHODS = ("euler", "heun", "rk45")

# ----------------------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------------------


def _check_int(value, name, lo=1, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return int(value)


def check_nonneg(value, name):
    """``float(value)``; a ValueError naming ``name`` unless it is a finite real >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _check_inputs(shape, cond, x_T, x0_fixed, mask):
    if not isinstance(shape, (tuple, list)) or len(shape) < 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...) with at least 2 "
                         f"entries, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if x_T is not None and tuple(jnp.shape(x_T)) != shape:
        raise ValueError(f"x_T must have shape {shape}, got {jnp.shape(x_T)}")
    if (x0_fixed is None) != (mask is None):
        raise ValueError("inpainting needs both x0_fixed and mask (or neither); got "
                         f"x0_fixed={'set' if x0_fixed is not None else None}, "
                         f"mask={'set' if mask is not None else None}")
    if x0_fixed is not None:
        if tuple(jnp.shape(x0_fixed)) != shape:
            raise ValueError(f"x0_fixed must have shape {shape}, got {jnp.shape(x0_fixed)}")
        try:
            np.broadcast_shapes(tuple(jnp.shape(mask)), shape)
            ok = np.broadcast_shapes(tuple(jnp.shape(mask)), shape) == shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"mask must broadcast to {shape}, got {jnp.shape(mask)}")
    for path, leaf in jax.tree_util.tree_leaves_with_path(cond):
        if jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] != shape[0]:
            raise ValueError(f"cond{jax.tree_util.keystr(path)} has shape {jnp.shape(leaf)}; "
                             f"its leading axis must be the batch size {shape[0]}")
    return shape


def ddim_timesteps(num_timesteps: int, num_steps: int, kind: str = "uniform") -> np.ndarray:
    """An increasing subsequence ``tau`` of ``0..T-1`` of length ``S`` (Song, Meng & Ermon 2021,
    Sec. 4.2 and App. D.2): ``'uniform'`` rounds ``linspace(0, T-1, S)``; ``'quadratic'``
    spaces ``sqrt``-uniformly (``tau_i ~ c i^2``) and falls back to uniform if rounding
    merges steps. ``S = T`` gives every step."""
    t = _check_int(num_timesteps, "num_timesteps")
    s = _check_int(num_steps, "num_steps", 1, t)
    if s == 1:
        return np.array([t - 1], np.int32)
    if kind == "uniform":
        seq = np.round(np.linspace(0, t - 1, s)).astype(np.int32)
    elif kind == "quadratic":
        seq = np.round(np.linspace(0, math.sqrt(t - 1), s) ** 2).astype(np.int32)
        if len(np.unique(seq)) < s:
            seq = np.round(np.linspace(0, t - 1, s)).astype(np.int32)
    else:
        raise ValueError(f"timestep kind must be 'uniform' or 'quadratic', got {kind!r}")
    return seq


def _check_timesteps(timesteps, num_timesteps):
    seq = np.asarray(timesteps)
    if seq.ndim != 1 or seq.shape[0] < 1 or not np.issubdtype(seq.dtype, np.integer):
        raise ValueError(f"timesteps must be a non-empty 1-D int sequence, got {timesteps!r}")
    if seq.shape[0] > num_timesteps:
        raise ValueError(f"timesteps has S={seq.shape[0]} steps, more than T={num_timesteps}")
    if seq.min() < 0 or seq.max() > num_timesteps - 1 or np.any(np.diff(seq) <= 0):
        raise ValueError(f"timesteps must be strictly increasing in [0, {num_timesteps - 1}], "
                         f"got {seq.tolist()}")
    return seq.astype(np.int32)


# ----------------------------------------------------------------------------------------
# The generic driver: one step function, run by lax.scan or by a Python loop.
# ----------------------------------------------------------------------------------------


class _Plan(NamedTuple):
    """``step(carry, i, k_steps, cond) -> carry`` with ``carry = (x, x_mean)``;
    ``known_mean [S + 1]``, ``known_std [S + 1]``: the forward kernel ``x = m x_0 + s z`` at
    the start (entry 0) and after step ``i`` (entry ``i + 1``), for inpainting."""

    step: Callable
    num_steps: int
    init_std: float
    known_mean: jax.Array
    known_std: jax.Array


def _build_sampler(plan: _Plan, return_trajectory: bool, use_scan: bool, output_mean: bool):
    def replace(x, level, k_known, x0_fixed, mask):
        z = jax.random.normal(jax.random.fold_in(k_known, level), x.shape, x.dtype)
        known = plan.known_mean[level] * x0_fixed + plan.known_std[level] * z
        return mask * known + (1.0 - mask) * x

    def full_step(carry, i, k_steps, k_known, cond, x0_fixed, mask):
        x, x_mean = plan.step(carry, i, k_steps, cond)
        if x0_fixed is not None:
            x = replace(x, i + 1, k_known, x0_fixed, mask)
            x_mean = mask * x0_fixed * plan.known_mean[i + 1] + (1.0 - mask) * x_mean
        return x, x_mean

    jitted_step = xla_options.jit(full_step)

    def sample(key, shape, cond=None, *, x_T=None, x0_fixed=None, mask=None, params=None):
        shape = _check_inputs(shape, cond, x_T, x0_fixed, mask)
        if params is not None:
            cond = (params, cond)
        k_init, k_steps, k_known = jax.random.split(key, 3)
        if x_T is None:
            x = plan.init_std * jax.random.normal(k_init, shape, jnp.float32)
        else:
            x = jnp.asarray(x_T, jnp.float32)
        if x0_fixed is not None:
            x0_fixed = jnp.asarray(x0_fixed, x.dtype)
            mask = jnp.asarray(mask, x.dtype)
            x = replace(x, 0, k_known, x0_fixed, mask)
        carry = (x, x)
        steps = jnp.arange(plan.num_steps, dtype=jnp.int32)
        if use_scan:
            def body(c, i):
                c = full_step(c, i, k_steps, k_known, cond, x0_fixed, mask)
                return c, (c[0] if return_trajectory else None)

            carry, traj = jax.lax.scan(body, carry, steps)
        else:
            traj = []
            for i in range(plan.num_steps):
                carry = jitted_step(carry, steps[i], k_steps, k_known, cond, x0_fixed, mask)
                traj.append(carry[0])
            traj = jnp.stack(traj) if return_trajectory else None
        out = carry[1] if output_mean else carry[0]
        if x0_fixed is not None:
            out = mask * x0_fixed + (1.0 - mask) * out
        if return_trajectory:
            return out, jnp.concatenate([x[None], traj], axis=0)
        return out

    return sample


def _full(b, v, dtype=jnp.int32):
    return jnp.full((b,), v, dtype)


# ----------------------------------------------------------------------------------------
# DDPM ancestral sampling.
# ----------------------------------------------------------------------------------------


def make_ddpm_sampler(model_fn: Callable, schedule: Schedule, *, parameterization: str = "eps",
                      var_type: str = "fixed_small", clip_x0: bool = False,
                      return_trajectory: bool = False, use_scan: bool = True) -> Callable:
    """Ancestral sampling (Ho et al. 2020, Alg. 2): ``x_T ~ N(0, I)``; for ``t = T..1``

        x_{t-1} = mu_theta(x_t, t) + sigma_t z,   z ~ N(0, I) if t > 1 else 0,

    with ``mu_theta, sigma_t^2`` from :func:`gaussian_diffusion.p_mean_variance` (for ``eps``
    prediction ``mu = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(a_t)``, Eq. 11).

    Args:
      model_fn: ``(x_t [B, H, W, C], t int32 [B], cond) -> [B, H, W, C]`` (``2C`` for
        ``var_type='learned_range'``).
      schedule: the :class:`Schedule` the model was trained with.

    Returns:
      ``sample(key, shape, cond=None, *, x_T=None, x0_fixed=None, mask=None)`` (module doc).
    """
    big_t = schedule.num_timesteps
    if parameterization not in gd.PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {gd.PARAMETERIZATIONS}, got "
                         f"{parameterization!r}")
    if var_type not in gd.VAR_TYPES:
        raise ValueError(f"var_type must be one of {gd.VAR_TYPES}, got {var_type!r}")
    ts = jnp.arange(big_t - 1, -1, -1, dtype=jnp.int32)  # step i runs at t = T-1-i

    def step(carry, i, k_steps, cond):
        x, _ = carry
        t_s = ts[i]
        t = _full(x.shape[0], t_s)
        p = gd.p_mean_variance(schedule, model_fn(x, t, cond), x, t, parameterization,
                               var_type, clip_x0)
        z = jax.random.normal(jax.random.fold_in(k_steps, t_s), x.shape, x.dtype)
        mean = p["mean"]
        x_new = mean + jnp.where(t_s > 0, 1.0, 0.0) * jnp.exp(0.5 * p["log_variance"]) * z
        return x_new, mean

    ab = schedule.alpha_bars
    km = jnp.concatenate([jnp.sqrt(ab[-1:]), jnp.sqrt(schedule.alpha_bars_prev[::-1])])
    ks = jnp.concatenate([jnp.sqrt(1.0 - ab[-1:]), jnp.sqrt(1.0 - schedule.alpha_bars_prev[::-1])])
    return _build_sampler(_Plan(step, big_t, 1.0, km, ks), return_trajectory, use_scan, False)


# ----------------------------------------------------------------------------------------
# DDIM.
# ----------------------------------------------------------------------------------------


def make_ddim_sampler(model_fn: Callable, schedule: Schedule, num_steps: int, eta: float = 0.0,
                      *, timesteps: Optional[Sequence[int]] = None, skip: str = "uniform",
                      parameterization: str = "eps", var_type: str = "fixed_small",
                      clip_x0: bool = False, return_trajectory: bool = False,
                      use_scan: bool = True) -> Callable:
    """DDIM sampling (Song, Meng & Ermon 2021, Eq. 12) on an increasing subsequence
    ``tau_1 < ... < tau_S`` of the ``T`` steps, from ``tau_S`` down to ``x_0``:

        x_{tau_{i-1}} = sqrt(abar_{i-1}) x0_hat
                        + sqrt(1 - abar_{i-1} - sigma_i^2) eps_theta(x_{tau_i}) + sigma_i z,
        x0_hat = (x_{tau_i} - sqrt(1 - abar_i) eps_theta) / sqrt(abar_i),
        sigma_i = eta sqrt((1 - abar_{i-1}) / (1 - abar_i)) sqrt(1 - abar_i / abar_{i-1})  (Eq. 16),

    with ``abar_0 = 1`` after the last step. ``eta = 0`` is the deterministic DDIM (no noise
    is drawn: the steps are exactly ``x = mean``),
    ``eta = 1`` with ``S = T`` is DDPM ancestral sampling with ``sigma^2 = beta~`` (the same
    draw: noise of step ``t`` from ``fold_in(k_steps, t)``).

    Args:
      model_fn: ``(x_t [B, H, W, C], t int32 [B], cond) -> [B, H, W, C]`` (or ``2C``; the
        variance channels are ignored).
      num_steps: ``S``, ``1 <= S <= T``.
      eta: ``>= 0``.
      timesteps: explicit increasing subsequence (overrides ``num_steps`` and ``skip``; its
        length must equal ``num_steps``).
      skip: ``'uniform'`` or ``'quadratic'`` (:func:`ddim_timesteps`).
    """
    big_t = schedule.num_timesteps
    s = _check_int(num_steps, "num_steps", 1)
    if s > big_t:
        raise ValueError(f"num_steps S={s} must be <= the schedule's T={big_t}")
    eta = check_nonneg(eta, "eta")
    if parameterization not in gd.PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {gd.PARAMETERIZATIONS}, got "
                         f"{parameterization!r}")
    if var_type not in gd.VAR_TYPES:
        raise ValueError(f"var_type must be one of {gd.VAR_TYPES}, got {var_type!r}")
    if timesteps is None:
        seq = ddim_timesteps(big_t, s, skip)
    else:
        seq = _check_timesteps(timesteps, big_t)
        if seq.shape[0] != s:
            raise ValueError(f"timesteps has {seq.shape[0]} entries but num_steps={s}")
    desc = jnp.asarray(seq[::-1].copy())  # step i runs at tau = desc[i]
    ab_cur = schedule.alpha_bars[desc]
    ab_prev = jnp.concatenate([schedule.alpha_bars[desc[1:]], jnp.ones((1,), jnp.float32)])
    sigmas = eta * jnp.sqrt((1.0 - ab_prev) / (1.0 - ab_cur)) * jnp.sqrt(1.0 - ab_cur / ab_prev)
    dir_coef = jnp.sqrt(jnp.maximum(1.0 - ab_prev - jnp.square(sigmas), 0.0))

    def step(carry, i, k_steps, cond):
        x, _ = carry
        t_s = desc[i]
        t = _full(x.shape[0], t_s)
        out = model_fn(x, t, cond)
        pred, _ = gd.split_model_output(out, x, var_type)
        x0, eps = gd.to_x0_eps(schedule, x, t, pred, parameterization, clip_x0)
        mean = jnp.sqrt(ab_prev[i]) * x0 + dir_coef[i] * eps
        if eta == 0.0:  # sigma_i = 0: x = mean exactly; no noise to draw
            return mean, mean
        z = jax.random.normal(jax.random.fold_in(k_steps, t_s), x.shape, x.dtype)
        return mean + sigmas[i] * z, mean

    km = jnp.concatenate([jnp.sqrt(ab_cur[:1]), jnp.sqrt(ab_prev)])
    ks = jnp.concatenate([jnp.sqrt(1.0 - ab_cur[:1]), jnp.sqrt(1.0 - ab_prev)])
    return _build_sampler(_Plan(step, s, 1.0, km, ks), return_trajectory, use_scan, False)


# ----------------------------------------------------------------------------------------
# Score-SDE samplers (continuous time).
# ----------------------------------------------------------------------------------------


def _time_grid(num_steps, eps):
    """``t_i = 1 - i (1 - eps) / N``, ``i = 0..N``, and the step ``dt = (1 - eps) / N``."""
    dt = (1.0 - eps) / num_steps
    return jnp.asarray(1.0 - np.arange(num_steps + 1) * dt, jnp.float32), dt


def _kernel_on_grid(sde, grid):
    m, s = sde.marginal(jnp.ones((grid.shape[0], 1), jnp.float32), grid)
    return m[:, 0], s[:, 0]


def _check_eps(eps):
    e = check_nonneg(eps, "eps")
    if not 0.0 < e < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    return e


def langevin_correct(score_fn, sde, x, t, dt, key, cond, snr: float, n_steps: int):
    """Langevin corrector (Song et al. 2021, Algs. 4-5), ``n_steps`` times at time ``t``:

        g = s_theta(x, t),  z ~ N(0, I),
        eps_i = 2 alpha_i (r ||z|| / ||g||)^2,   x_mean = x + eps_i g,   x = x_mean + sqrt(2 eps_i) z,

    with the signal-to-noise ratio ``r = snr`` and ``alpha_i = 1 - beta_i`` for VP/sub-VP
    (1 for VE). As in Song et al.'s code, ``||z||`` and ``||g||`` are per-example norms
    averaged over the batch: per-example ratios are heavy-tailed in low dimension (a tiny
    ``||g||`` gives a huge step), so the step size is shared by the batch.

    Returns:
      ``(x, x_mean)``, each ``[B, ...]``.
    """
    alpha = sde.langevin_alpha(x, t, dt)
    x_mean = x
    for j in range(n_steps):
        g = score_fn(x, t, cond)
        z = jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype)
        gn = jnp.mean(jnp.sqrt(gd.sum_flat(jnp.square(g))))
        zn = jnp.mean(jnp.sqrt(gd.sum_flat(jnp.square(z))))
        step = 2.0 * alpha * jnp.square(snr * zn / jnp.maximum(gn, 1e-12))
        x_mean = x + step * g
        x = x_mean + jnp.sqrt(2.0 * step) * z
    return x, x_mean


def make_pc_sampler(score_fn: Callable, sde: sde_lib.SDE, num_steps: int, *,
                    predictor: str = "euler_maruyama", corrector: str = "langevin",
                    snr: float = 0.16, n_corrector_steps: int = 1, eps: float = 1e-3,
                    denoise: bool = True, return_trajectory: bool = False,
                    use_scan: bool = True) -> Callable:
    """Predictor-corrector sampling (Song et al. 2021, Algs. 1-3) on the grid
    ``t_i = 1 - i (1 - eps) / N``, ``dt = (1 - eps) / N``: ``x ~ p_1``; for ``i = 0..N-1``
    a predictor step from ``t_i`` to ``t_{i+1}`` then ``n_corrector_steps`` Langevin steps at
    ``t_{i+1}``.

    Predictors:
      * ``'euler_maruyama'`` (Alg. 1 / reverse SDE Eq. 6 discretized):
        ``x_mean = x - [f - g^2 s] dt``, ``x = x_mean + g sqrt(dt) z``;
      * ``'reverse_diffusion'`` (Eqs. 45-47): ``x_mean = x - f_i + G_i^2 s``,
        ``x = x_mean + G_i z`` with the forward discretization ``(f_i, G_i)`` (DDPM / SMLD
        chains for VP / VE);
      * ``'none'`` (corrector only).

    With ``denoise`` the output is the last noise-free mean ``x_mean`` (Song et al.'s "noise
    removal"). ``score_fn(x [B, ...], t float [B], cond) -> [B, ...]``.
    """
    n = _check_int(num_steps, "num_steps", 1)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector must be one of {CORRECTORS}, got {corrector!r}")
    snr = check_nonneg(snr, "snr")
    nc = _check_int(n_corrector_steps, "n_corrector_steps", 0)
    eps = _check_eps(eps)
    grid, dt = _time_grid(n, eps)
    rev = sde_lib.reverse(sde, score_fn)

    def step(carry, i, k_steps, cond):
        x, x_mean = carry
        key = jax.random.fold_in(k_steps, i)
        b = x.shape[0]
        t = _full(b, grid[i], jnp.float32)
        t_next = _full(b, grid[i + 1], jnp.float32)
        z = jax.random.normal(jax.random.fold_in(key, 0), x.shape, x.dtype)
        if predictor == "euler_maruyama":
            drift, g = rev.drift_diffusion(x, t, cond)
            x_mean = x - drift * dt
            x = x_mean + g * math.sqrt(dt) * z
        elif predictor == "reverse_diffusion":
            f, g = rev.discretize(x, t, dt, cond)
            x_mean = x - f
            x = x_mean + g * z
        if corrector == "langevin" and nc > 0:
            x, x_mean = langevin_correct(score_fn, sde, x, t_next, dt, jax.random.fold_in(key, 1),
                                         cond, snr, nc)
        return x, x_mean

    km, ks = _kernel_on_grid(sde, grid)
    return _build_sampler(_Plan(step, n, float(sde.prior_std), km, ks), return_trajectory,
                          use_scan, denoise)


def make_ode_sampler(score_fn: Callable, sde: sde_lib.SDE, num_steps: int = 100, *,
                     method: str = "heun", eps: float = 1e-3, rtol: float = 1e-5,
                     atol: float = 1e-5, max_steps: int = 10_000,
                     return_trajectory: bool = False, use_scan: bool = True) -> Callable:
    """Probability-flow ODE sampling (Song et al. 2021, Eq. 13, Sec. 4.3):

        dx/dt = f(x, t) - 1/2 g(t)^2 s_theta(x, t),   integrated from t = 1 (x ~ p_1) to eps.

    ``method``:
      * ``'euler'``: ``x <- x - h d(x, t)``;
      * ``'heun'`` (2nd order): ``d1 = d(x, t)``, ``x~ = x - h d1``,
        ``x <- x - h/2 (d1 + d(x~, t - h))``, with ``N`` fixed steps ``h = (1 - eps) / N``;
      * ``'rk45'``: adaptive Dormand-Prince 5(4) (Dormand & Prince 1980) with error control
        ``rtol, atol`` under ``lax.while_loop`` (``num_steps`` only sets the first step size;
        no trajectory, no inpainting; the number of function evaluations is not returned).
    """
    n = _check_int(num_steps, "num_steps", 1)
    if method not in ODE_METHODS:
        raise ValueError(f"method must be one of {ODE_METHODS}, got {method!r}")
    eps = _check_eps(eps)
    rev = sde_lib.reverse(sde, score_fn, probability_flow=True)

    def drift(x, t_s, cond):
        return rev.drift_diffusion(x, _full(x.shape[0], t_s, jnp.float32), cond)[0]

    if method == "rk45":
        def sample(key, shape, cond=None, *, x_T=None, x0_fixed=None, mask=None):
            shape = _check_inputs(shape, cond, x_T, x0_fixed, mask)
            if x0_fixed is not None or return_trajectory:
                raise ValueError("method='rk45' supports neither inpainting nor "
                                 "return_trajectory; use 'heun'")
            k_init, _, _ = jax.random.split(key, 3)
            x = sde.prior_std * jax.random.normal(k_init, shape, jnp.float32) if x_T is None \
                else jnp.asarray(x_T, jnp.float32)
            # Integrate in s = 1 - t from 0 to 1 - eps (forward in s).
            fn = lambda s, y: -drift(y, 1.0 - s, cond)
            y, _ = rk45_solve(fn, x, 0.0, 1.0 - eps, (1.0 - eps) / n, rtol, atol, max_steps)
            return y

        return sample

    grid, h = _time_grid(n, eps)

    def step(carry, i, k_steps, cond):
        x, _ = carry
        d1 = drift(x, grid[i], cond)
        if method == "euler":
            x = x - h * d1
        else:
            d2 = drift(x - h * d1, grid[i + 1], cond)
            x = x - 0.5 * h * (d1 + d2)
        return x, x

    km, ks = _kernel_on_grid(sde, grid)
    return _build_sampler(_Plan(step, n, float(sde.prior_std), km, ks), return_trajectory,
                          use_scan, False)


# Dormand-Prince 5(4) tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Table 5.2).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = ((),
         (1 / 5,),
         (3 / 40, 9 / 40),
         (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def rk45_solve(fn: Callable, y0, s0: float, s1: float, h0: float, rtol: float = 1e-5,
               atol: float = 1e-5, max_steps: int = 10_000):
    """Adaptive Dormand-Prince RK5(4) for ``dy/ds = fn(s, y)`` from ``s0`` to ``s1 > s0``
    (pytree ``y``), under ``lax.while_loop``. Error norm: RMS of
    ``err / (atol + rtol max(|y|, |y_new|))`` over all entries (Hairer et al., Sec. II.4);
    step-size update ``h <- h min(5, max(0.2, 0.9 err^{-1/5}))``.

    Returns:
      ``(y(s1), number_of_accepted_and_rejected_steps)``.
    """
    leaves = jax.tree.leaves(y0)
    size = sum(l.size for l in leaves)

    def add(y, ks, coefs, h):
        out = y
        for c, k in zip(coefs, ks):
            if c != 0.0:
                out = jax.tree.map(lambda o, kk: o + h * c * kk, out, k)
        return out

    def attempt(s, y, h):
        ks = []
        for i in range(7):
            yi = add(y, ks, _DP_A[i], h) if i else y
            ks.append(fn(s + _DP_C[i] * h, yi))
        y5 = add(y, ks, _DP_B5, h)
        y4 = add(y, ks, _DP_B4, h)
        sq = sum(jnp.sum(jnp.square((a - b) / (atol + rtol * jnp.maximum(jnp.abs(c), jnp.abs(a)))))
                 for a, b, c in zip(jax.tree.leaves(y5), jax.tree.leaves(y4), jax.tree.leaves(y)))
        return y5, jnp.sqrt(sq / size)

    def cond_fn(state):
        s, _, _, n = state
        return (s < s1 - 1e-9) & (n < max_steps)

    def body(state):
        s, y, h, n = state
        h = jnp.minimum(h, s1 - s)
        y_new, err = attempt(s, y, h)
        ok = err <= 1.0
        fac = jnp.clip(0.9 * jnp.where(err > 0, err, 1e-10) ** -0.2, 0.2, 5.0)
        y = jax.tree.map(lambda a, b: jnp.where(ok, a, b), y_new, y)
        return jnp.where(ok, s + h, s), y, h * fac, n + 1

    state = (jnp.asarray(s0, jnp.float32), y0, jnp.asarray(h0, jnp.float32), jnp.asarray(0))
    _, y, _, n = jax.lax.while_loop(cond_fn, body, state)
    return y, n
