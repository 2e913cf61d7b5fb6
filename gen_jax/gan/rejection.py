"""Discriminator rejection sampling (DRS; Azadi et al. 2019, "Discriminator Rejection Sampling").

A trained generator ``p_g`` is a proposal; the optimal discriminator of a fixed generator,
``D*(x) = sigmoid(d(x))`` with ``d`` its logit, gives the density ratio (Goodfellow et al. 2014,
Prop. 1; Azadi et al. 2019, Sec. 3.1)::

    p_data(x) / p_g(x) = exp(d(x)),

so accepting a proposal ``x ~ p_g`` with probability ``exp(d(x) - d_M)``, ``d_M = max_x d(x)``,
draws exactly from ``p_data`` (rejection sampling with ``M = exp(d_M)``) when ``d`` is exact and
``p_g`` covers ``p_data``'s support. It cannot add modes the generator never proposes; it removes
the mass between and around them.

* :func:`fit_density_ratio` trains a discriminator with the logistic loss of Goodfellow et al.
  2014, Eq. 1 on real points against the frozen generator's proposals (the "keep training D
  with G fixed" step of Azadi et al. 2019, Sec. 3.2), as one ``lax.scan``.
* :func:`acceptance_probability`: exact, ``exp(min(d - d_M, 0))`` (Sec. 3.1), or the practical
  ``sigmoid(F(x))`` of Algorithm 1 / Sec. 3.2 with
  ``F(x) = d(x) - d_M - log(1 - exp(d(x) - d_M - eps)) - gamma``.
* :func:`rejection_sample` draws pools of proposals until ``num`` are accepted, with ``d_M``
  the running maximum over every pool seen (Algorithm 1's update of ``D*_M``).

Shapes: points ``[N, D]``; logits ``[N]``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array
Propose = Callable[[Array, int], Array]  # (key, n) -> proposals [n, D]


def acceptance_probability(logits: Array, max_logit, gamma: Optional[float] = None,
                           eps: float = 1e-6) -> Array:
    """``[N]`` acceptance probabilities for discriminator logits ``[N]`` given ``d_M``.

    ``gamma=None``: exact rejection, ``exp(min(d - d_M, 0))`` (Azadi et al. 2019, Sec. 3.1).
    Otherwise ``sigmoid(F)`` with ``F = d - d_M - log(1 - exp(d - d_M - eps)) - gamma`` (Sec. 3.2,
    Algorithm 1): ``gamma`` shifts acceptance up (negative) or down (positive), ``eps`` keeps the
    log finite at ``d = d_M``.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if logits.ndim != 1:
        raise ValueError(f"acceptance_probability: logits must be [N], got shape {logits.shape}")
    delta = jnp.minimum(logits - max_logit, 0.0)
    if gamma is None:
        return jnp.exp(delta)
    if eps <= 0:
        raise ValueError(f"acceptance_probability: eps must be > 0, got {eps}")
    f = delta - jnp.log1p(-jnp.exp(delta - eps)) - gamma
    return jax.nn.sigmoid(f)


def fit_density_ratio(key: Array, disc: nn.Module, real: Array, propose: Propose, *, steps: int = 3000,
                      batch_size: int = 256, learning_rate: float = 1e-3) -> Any:
    """Parameters of ``disc`` (``apply(variables, x [B, D], train=False) -> logits [B]``) trained to
    tell ``real [N, D]`` from ``propose(key, B)`` with the logistic loss (Goodfellow et al. 2014,
    Eq. 1), Adam(``learning_rate``), cosine decay over ``steps``: its logit estimates
    ``log p_data / p_g``. One compiled ``lax.scan``; real batches drawn with replacement."""
    real = jnp.asarray(real, jnp.float32)
    if real.ndim != 2:
        raise ValueError(f"fit_density_ratio: real must be points [N, D], got shape {real.shape}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"fit_density_ratio: steps and batch_size must be >= 1, got {steps}, {batch_size}")
    k_init, k_loop = jax.random.split(key)
    variables = disc.init(k_init, real[:1], train=False)
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    return _fit(disc, opt, propose, real, variables, k_loop, steps, batch_size)


@partial(jax.jit, static_argnums=(0, 1, 2, 6, 7))
def _fit(disc, opt, propose, real, variables, key, steps, batch_size):
    def loss(v, x_real, x_fake):
        d_real = disc.apply(v, x_real, train=False)
        d_fake = disc.apply(v, x_fake, train=False)
        return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))

    def step(carry, k):
        v, s = carry
        k_idx, k_fake = jax.random.split(k)
        x_real = real[jax.random.randint(k_idx, (batch_size,), 0, real.shape[0])]
        x_fake = jax.lax.stop_gradient(propose(k_fake, batch_size))
        value, grads = jax.value_and_grad(loss)(v, x_real, x_fake)
        updates, s = opt.update(grads, s, v)
        return (optax.apply_updates(v, updates), s), value

    (variables, _), _ = jax.lax.scan(step, (variables, opt.init(variables)), jax.random.split(key, steps))
    return variables


def rejection_sample(key: Array, propose: Propose, logit_fn: Callable[[Array], Array], num: int, *,
                     pool: int = 50_000, gamma: Optional[float] = None, gamma_quantile: Optional[float] = None,
                     max_rounds: int = 100):
    """``(samples [num, D], info)``: proposals accepted by :func:`acceptance_probability`.

    Each round draws ``pool`` proposals, updates ``d_M`` to the maximum logit seen so far and keeps
    each proposal with its acceptance probability (earlier rounds' survivors stay accepted, as in
    Algorithm 1). ``gamma_quantile`` (in (0, 1)) sets ``gamma`` from the first pool, to that
    quantile of ``F(x)`` at ``gamma = 0`` (Azadi et al. 2019, Sec. 4: a percentile of ``F``): a
    proposal at the quantile is kept with probability 1/2, so a single outlying logit cannot drive
    the acceptance rate to zero as it does in the exact scheme. ``info``: ``acceptance`` (accepted /
    proposed), ``max_logit``, ``gamma``, ``rounds``. Raises ``RuntimeError`` if ``max_rounds``
    pools do not yield ``num`` samples.
    """
    if num < 1 or pool < 1:
        raise ValueError(f"rejection_sample: num and pool must be >= 1, got {num}, {pool}")
    if gamma_quantile is not None and not (0.0 < gamma_quantile < 1.0):
        raise ValueError(f"rejection_sample: gamma_quantile must lie in (0, 1), got {gamma_quantile}")
    draw = jax.jit(lambda k: _propose_and_score(propose, logit_fn, k, pool))
    kept, max_logit, proposed = [], -np.inf, 0
    for r in range(max_rounds):
        key, k_draw, k_u = jax.random.split(key, 3)
        x, logits = draw(k_draw)
        max_logit = max(max_logit, float(jnp.max(logits)))
        if gamma_quantile is not None and r == 0:
            f0 = jax.scipy.special.logit(acceptance_probability(logits, max_logit, 0.0))
            gamma = float(jnp.quantile(f0, gamma_quantile))
        p = acceptance_probability(logits, max_logit, gamma)
        keep = np.asarray(jax.random.uniform(k_u, p.shape) < p)
        kept.append(np.asarray(x)[keep])
        proposed += pool
        total = sum(len(k) for k in kept)
        if total >= num:
            samples = np.concatenate(kept)[:num]
            return samples, {"acceptance": total / proposed, "max_logit": max_logit, "gamma": gamma,
                             "rounds": r + 1}
    raise RuntimeError(f"rejection_sample: {max_rounds} pools of {pool} proposals gave "
                       f"{sum(len(k) for k in kept)} of the {num} samples asked for; raise pool or max_rounds")


def _propose_and_score(propose, logit_fn, key, n):
    x = propose(key, n)
    return x, logit_fn(x)
