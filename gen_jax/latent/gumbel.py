"""The Gumbel-softmax (Concrete) relaxation of categorical variables, its KL to a uniform
prior, and the annealing schedules of a relaxed discrete VAE.

* :func:`gumbel_softmax` (Jang et al. 2017, Eq. 1; Maddison et al. 2017, Def. 1, the Concrete
  distribution): for logits ``l [..., K]``, Gumbel noise ``g_k = -log(-log u_k)``,
  ``u_k ~ U(0, 1)``, and a temperature ``tau > 0``::

      y_k = exp((l_k + g_k) / tau) / sum_j exp((l_j + g_j) / tau)

  ``argmax_k (l_k + g_k)`` is an exact draw of ``Categorical(softmax(l))`` at every ``tau``
  (the Gumbel-max trick, Maddison et al. 2017, Sec. 3.1), and as ``tau -> 0`` ``y`` tends to
  that one-hot vector. ``hard=True`` is the straight-through variant (Jang et al. 2017,
  Sec. 2.2): the forward value is ``one_hot(argmax y)``, the gradient that of ``y``.
* :func:`kl_to_uniform`: ``KL(Categorical(softmax(l)) || U{1..K}) = sum_k q_k log q_k + log K``
  per position (the closed form, ``log K - H(q)``), the prior term of the DALL-E dVAE's
  ELBO (Ramesh et al. 2021, Sec. 2.1, with the uniform prior over the codebook).
* :func:`anneal` / :func:`check_schedule`: a value moved from ``start`` to ``end`` over
  ``steps`` training steps and held there (``'linear'``, ``'cosine'``, ``'exponential'``):
  the relaxation temperature annealed from 1 to 1/16 and the KL weight grown from 0 to 6.6
  with cosine schedules (Ramesh et al. 2021, App. A.2).

Shapes: logits ``[..., K]`` (the codes on the last axis); samples ``[..., K]``; KL ``[...]``.
"""
from __future__ import annotations

import math
from typing import Literal, Optional, get_args

import jax
import jax.numpy as jnp
import numpy as np

ScheduleKind = Literal["linear", "cosine", "exponential"]
SCHEDULES = get_args(ScheduleKind)


def gumbel_noise(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Standard Gumbel draws ``-log(-log u)``, ``u ~ U(0, 1)`` (``u`` kept off 0 and 1 so the
    draws are finite)."""
    tiny = jnp.finfo(dtype).tiny
    u = jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)
    return -jnp.log(-jnp.log(u))


def gumbel_softmax(key: jax.Array, logits: jax.Array, temperature, hard: bool = False) -> jax.Array:
    """A Gumbel-softmax sample ``softmax((logits + g) / tau)`` over the last axis (Jang et al.
    2017, Eq. 1): ``logits [..., K]`` float, ``temperature`` a positive scalar (a traced value
    is fine: schedules compute it from the step) -> float ``[..., K]`` on the simplex.

    ``hard=True``: straight-through (Jang et al. 2017, Sec. 2.2), the forward value
    ``one_hot(argmax)`` of the same draw, the gradient of the relaxed sample.
    A concrete ``temperature <= 0`` is a ``ValueError``."""
    logits = jnp.asarray(logits)
    if logits.ndim < 1 or not jnp.issubdtype(logits.dtype, jnp.floating):
        raise ValueError(f"gumbel_softmax: logits must be a float array [..., K], got shape {logits.shape} "
                         f"and dtype {logits.dtype}")
    _check_temperature(temperature)
    g = gumbel_noise(key, logits.shape, logits.dtype)
    y = jax.nn.softmax((logits + g) / temperature, axis=-1)
    if not hard:
        return y
    one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
    return one_hot + y - jax.lax.stop_gradient(y)


def _check_temperature(t) -> None:
    if isinstance(t, jax.core.Tracer):
        return
    v = np.asarray(t)
    if v.ndim != 0:
        raise ValueError(f"gumbel_softmax: temperature must be a scalar, got shape {v.shape}")
    if not float(v) > 0:
        raise ValueError(f"gumbel_softmax: temperature must be > 0, got {float(v)}")


def kl_to_uniform(logits: jax.Array) -> jax.Array:
    """``KL(softmax(logits) || U{1..K}) = sum_k q_k log q_k + log K`` over the last axis:
    ``logits [..., K]`` -> nats ``[...]`` (>= 0, 0 exactly for uniform ``q``)."""
    logits = jnp.asarray(logits)
    k = logits.shape[-1]
    log_q = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(k)


def check_schedule(start: float, end: float, steps: int, kind: str, field: str,
                   positive: bool = False) -> Optional[str]:
    """What is wrong with a schedule ``start -> end`` over ``steps`` of ``kind`` (``None`` if
    nothing): ``steps`` must be an int >= 1, ``kind`` one of :data:`SCHEDULES`, both ends
    finite and ``>= 0`` (``> 0`` with ``positive``, as a temperature must be), and both
    ``> 0`` for ``'exponential'``. Messages name ``field`` (the config prefix of the fields)."""
    if kind not in SCHEDULES:
        return f"{field}_schedule must be one of {list(SCHEDULES)}, got {kind!r}"
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        return f"{field}_steps must be an int >= 1, got {steps!r}"
    for name, v in (("start", start), ("end", end)):
        if not math.isfinite(v) or v < 0 or (positive and v <= 0):
            return f"{field}_{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v}"
        if kind == "exponential" and v <= 0:
            return f"{field}_{name}: an exponential schedule needs both ends > 0, got {v}"
    return None


def anneal(step, start: float, end: float, steps: int, kind: str = "cosine") -> jax.Array:
    """The value of a schedule at ``step`` (int, traced or not): with ``f = min(step / steps, 1)``,

    * ``'linear'``:      ``start + (end - start) f``
    * ``'cosine'``:      ``end + (start - end) (1 + cos(pi f)) / 2``
    * ``'exponential'``: ``start (end / start)^f`` (geometric; both ends > 0)

    so ``start`` at step 0, ``end`` from step ``steps`` on. Float32 scalar. The arguments are
    checked by :func:`check_schedule` (``ValueError``)."""
    msg = check_schedule(float(start), float(end), steps, kind, "schedule")
    if msg:
        raise ValueError(f"anneal: {msg}")
    f = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
    if kind == "linear":
        return jnp.float32(start) + (end - start) * f
    if kind == "cosine":
        return jnp.float32(end) + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * f))
    return jnp.float32(start) * jnp.power(jnp.float32(end / start), f)
