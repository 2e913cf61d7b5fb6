"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, App. D.2).

For the ODE ``dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 s_theta(x, t)`` (Eq. 13) the
instantaneous change of variables (Chen et al. 2018, Thm. 1) gives (Eq. 39)

    log p_0(x(0)) = log p_T(x(T)) + int_0^T div f~(x(t), t) dt,

so ``x`` and the running integral of the divergence are integrated jointly from
``t = eps`` to ``1`` (fixed-step Heun or RK4 under ``lax.scan``, or adaptive RK45 under
``lax.while_loop``). The divergence is exact (``D`` Jacobian-vector products, vmapped over
basis vectors: for small ``D``) or the Hutchinson-Skilling estimator
``E_v[v^T (df~/dx) v]`` with one fixed Rademacher or Gaussian probe per example for the whole
solve (Grathwohl et al. 2019, FFJORD; Song et al. 2021, App. D.2): an unbiased estimate of
the log-density, on device.

The divergence treats examples as independent (the network must not mix the batch, e.g.
no batch norm in train mode). The result is the log-density of the model's marginal at
``t = eps``, as in Song et al.

Bits/dim follow the gen_jax convention (README, Conventions): :func:`dequantize_for_diffusion` maps
discrete images to continuous ``x`` and returns the log-Jacobian to the uniformly
dequantized ``y`` on ``[0, 1)^D``; :func:`ode_bits_per_dim` applies it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.diffusion import sde as sde_lib
from gen_jax.diffusion.samplers import rk45_solve
from gen_jax.distributions.bpd import bits_per_dim

INTEGRATORS = ("euler", "heun", "rk4", "rk45")
DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
DEQUANT_MODES = ("centered", "unit")


def exact_divergence(fn: Callable, x: jax.Array) -> jax.Array:
    """``div fn(x) = tr(d fn / d x)`` per example, exactly, from ``D`` forward-mode JVPs
    ``J e_d`` (vmapped over the basis ``e_1..e_D``, shared by the batch).

    Args:
      fn: ``[B, ...] -> [B, ...]`` acting on examples independently.
      x: ``[B, ...]``.

    Returns:
      ``[B]``.
    """
    b = x.shape[0]
    d = math.prod(x.shape[1:])
    eye = jnp.eye(d, dtype=x.dtype)

    def column(e):
        tangent = jnp.broadcast_to(e.reshape(x.shape[1:]), x.shape)
        return jax.jvp(fn, (x,), (tangent,))[1].reshape(b, d)

    cols = jax.vmap(column)(eye)  # [D(basis), B, D(output)]
    return jnp.einsum("dbd->b", cols)


def hutchinson_divergence(fn: Callable, x: jax.Array, probe: jax.Array) -> jax.Array:
    """Hutchinson's estimator ``v^T (d fn / d x) v`` per example (one JVP), ``[B]``;
    unbiased when ``E[v v^T] = I`` (Rademacher or standard Gaussian ``v``, shape of ``x``)."""
    jv = jax.jvp(fn, (x,), (probe,))[1]
    return jnp.sum((jv * probe).reshape(x.shape[0], -1), axis=1)


def ode_log_likelihood(score_fn: Callable, sde: sde_lib.SDE, x: jax.Array, key: jax.Array,
                       cond: Any = None, *, num_steps: int = 100, method: str = "heun",
                       divergence: str = "exact", probe: str = "rademacher",
                       eps: float = 1e-5, rtol: float = 1e-5, atol: float = 1e-5) -> dict:
    """``log p_eps(x)`` (nats) under the probability-flow ODE, Song et al. 2021, Eq. 39.

    Args:
      score_fn: ``(x [B, ...], t float [B], cond) -> score [B, ...]``.
      sde: the forward :class:`~gen_jax.diffusion.sde.SDE`.
      x: ``[B, ...]`` continuous data in the SDE's space (``[-1, 1]`` images).
      key: PRNG key (Hutchinson probes only).
      num_steps: fixed steps for ``'euler'``, ``'heun'``, ``'rk4'`` (first step for ``'rk45'``).
      method: one of :data:`INTEGRATORS`.
      divergence: ``'exact'`` (cost ``D`` JVPs per evaluation; small ``D``) or
        ``'hutchinson'`` (one JVP; unbiased estimate).
      probe: ``'rademacher'`` or ``'gaussian'`` (Hutchinson).

    Returns:
      dict of ``log_prob [B]`` (log density of ``x``), ``prior_log_prob [B]`` (at ``x(1)``),
      ``delta_log_prob [B]`` (the divergence integral), ``z [B, ...]`` (``x(1)``).
    """
    if jnp.ndim(x) < 2:
        raise ValueError(f"x must be [B, ...], got shape {jnp.shape(x)}")
    if method not in INTEGRATORS:
        raise ValueError(f"method must be one of {INTEGRATORS}, got {method!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    x = jnp.asarray(x, jnp.float32)
    b = x.shape[0]
    rev = sde_lib.reverse(sde, score_fn, probability_flow=True)
    if divergence == "hutchinson":
        if probe == "rademacher":
            v = jax.random.rademacher(key, x.shape, jnp.float32)
        else:
            v = jax.random.normal(key, x.shape, jnp.float32)

    def vector_field(t_s, state):
        y, _ = state
        t = jnp.full((b,), t_s, jnp.float32)
        fn = lambda z: rev.drift_diffusion(z, t, cond)[0]
        if divergence == "exact":
            dy = fn(y)
            div = exact_divergence(fn, y)
        else:
            dy, jv = jax.jvp(fn, (y,), (v,))
            div = jnp.sum((jv * v).reshape(b, -1), axis=1)
        return dy, div

    state0 = (x, jnp.zeros((b,), jnp.float32))
    if method == "rk45":
        (z, delta), _ = rk45_solve(vector_field, state0, eps, 1.0, (1.0 - eps) / num_steps,
                                   rtol, atol)
    else:
        h = (1.0 - eps) / num_steps
        ts = eps + h * jnp.arange(num_steps, dtype=jnp.float32)
        add = lambda s, k, c: jax.tree.map(lambda a, bb: a + c * bb, s, k)

        def body(state, t_s):
            k1 = vector_field(t_s, state)
            if method == "euler":
                return add(state, k1, h), None
            if method == "heun":
                k2 = vector_field(t_s + h, add(state, k1, h))
                return add(add(state, k1, 0.5 * h), k2, 0.5 * h), None
            k2 = vector_field(t_s + 0.5 * h, add(state, k1, 0.5 * h))
            k3 = vector_field(t_s + 0.5 * h, add(state, k2, 0.5 * h))
            k4 = vector_field(t_s + h, add(state, k3, h))
            out = add(state, k1, h / 6.0)
            out = add(out, k2, h / 3.0)
            out = add(out, k3, h / 3.0)
            return add(out, k4, h / 6.0), None

        (z, delta), _ = jax.lax.scan(body, state0, ts)
    prior = sde.prior_log_prob(z)
    return dict(log_prob=prior + delta, prior_log_prob=prior, delta_log_prob=delta, z=z)


def dequantize_for_diffusion(key: jax.Array, image: jax.Array, num_levels: int,
                             mode: str = "centered"):
    """Uniformly dequantized diffusion input ``x`` from a batch image ``level / (K - 1)``.

    With ``u ~ U[0, 1)^D`` and ``y = (level + u) / K`` on ``[0, 1)`` (Theis et al. 2016):

    * ``'unit'``: ``x = 2 y - 1`` on ``[-1, 1)``; ``log p_y(y) = log p_x(x) + D log 2``.
    * ``'centered'`` (default): bins centred on the training points ``2 l / (K - 1) - 1``,
      ``x = 2 l / (K - 1) - 1 + (2 u - 1) / (K - 1) = (2K / (K - 1)) y - 1 - 1 / (K - 1)``;
      ``log p_y(y) = log p_x(x) + D log(2K / (K - 1))``.

    Args:
      image: ``[B, ...]`` in ``[0, 1]``.

    Returns:
      ``(x [B, ...], log_det)`` where ``log_det`` is the Python float to add to
      ``log p_x(x)`` to get the log density of ``y`` on ``[0, 1)^D``.
    """
    if mode not in DEQUANT_MODES:
        raise ValueError(f"mode must be one of {DEQUANT_MODES}, got {mode!r}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels must be an int >= 2, got {num_levels!r}")
    d = math.prod(image.shape[1:])
    y = dist.dequantize(key, image, num_levels)
    k = num_levels
    if mode == "unit":
        return 2.0 * y - 1.0, d * math.log(2.0)
    scale = 2.0 * k / (k - 1)
    return scale * y - 1.0 - 1.0 / (k - 1), d * math.log(scale)


def ode_bits_per_dim(score_fn: Callable, sde: sde_lib.SDE, image: jax.Array, key: jax.Array,
                     num_levels: int, cond: Any = None, *, mode: str = "centered",
                     **ode_kwargs) -> dict:
    """Bits/dim of a batch of ``K``-level images under the probability-flow ODE.

    ``log_prob = log p_x(x) + log_det`` is the log density of the dequantized ``y`` on
    ``[0, 1)^D`` (gen_jax convention, a one-sample estimate of a lower bound on
    ``log P(levels) + D log K``), and ``bpd = (-log_prob + D log K) / (D log 2)``.

    Args:
      image: ``[B, H, W, C]`` holding ``level / (K - 1)``.
      ode_kwargs: forwarded to :func:`ode_log_likelihood`.

    Returns:
      dict of ``log_prob [B]``, ``bpd [B]`` and the raw ``ode`` dict.
    """
    kd, ko = jax.random.split(key)
    x, log_det = dequantize_for_diffusion(kd, image, num_levels, mode)
    out = ode_log_likelihood(score_fn, sde, x, ko, cond, **ode_kwargs)
    log_prob = out["log_prob"] + log_det
    d = math.prod(image.shape[1:])
    return dict(log_prob=log_prob, bpd=bits_per_dim(log_prob, d, num_levels), ode=out)
