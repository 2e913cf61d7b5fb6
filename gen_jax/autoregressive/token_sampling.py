"""Sampling one token from next-token logits: temperature, top-k and top-p (nucleus) filtering.

All functions are pure, work on ``logits [..., V]`` (any leading batch shape) and take their
settings as static Python numbers, checked by :func:`check_sampling_args`.

* Temperature (Ackley et al. 1985; as used for LMs by Holtzman et al. 2020, Eq. 4):
  ``p(x) = softmax(u / T)``. ``T -> 0`` tends to the argmax, which :func:`sample_token` uses
  exactly for ``T = 0`` (greedy decoding).
* Top-k (Fan et al. 2018): keep the ``k`` largest logits, renormalize. Ties at the k-th
  value are all kept (the kept set is ``{x : u_x >= u_(k)}``).
* Top-p / nucleus (Holtzman et al. 2020, Sec. 3.1, Eq. 2-3): the smallest set ``V^(p)`` of
  most probable tokens with ``sum_{x in V^(p)} P(x) >= p``, renormalized,
  ``P'(x) = P(x) / sum_{V^(p)} P`` on ``V^(p)``, 0 elsewhere. A token is kept iff the
  probability mass of the tokens strictly before it (sorted by decreasing probability) is
  ``< p``; the most probable token is always kept.

Order: temperature, then top-k, then top-p (on the tempered, top-k-renormalized
distribution). Removed tokens get logit ``-inf``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def check_sampling_args(temperature, top_k, top_p, vocab_size: int, where: str = "sampler") -> None:
    """``ValueError`` naming the argument unless ``temperature >= 0``, ``0 <= top_k <=
    vocab_size`` (0 = off, an int) and ``0 < top_p <= 1`` (1 = off)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"{where}: temperature must be a number >= 0 (0 = greedy argmax), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= vocab_size:
        raise ValueError(f"{where}: top_k must be an int in [0, vocab_size = {vocab_size}] (0 = off), "
                         f"got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"{where}: top_p must be in (0, 1] (1 = off), got {top_p!r}")


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Top-k filtering of ``logits [..., V]``: logits below the k-th largest -> ``-inf``
    (``k = 0`` or ``k >= V``: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [..., 1]
    return jnp.where(logits >= kth, logits, -jnp.inf)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filtering (Holtzman et al. 2020, Eq. 2-3) of ``logits [..., V]``: tokens outside
    the smallest top set with probability ``>= p`` -> ``-inf`` (``p >= 1``: unchanged)."""
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)  # decreasing probability
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < p
    keep_sorted = keep_sorted.at[..., 0].set(True)
    # Scatter the sorted mask back to vocabulary order.
    inv = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inv, axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def filter_logits(logits: jax.Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> jax.Array:
    """Tempered, top-k and top-p filtered logits ``[..., V]`` (``temperature > 0``); their
    softmax is the distribution :func:`sample_token` draws from."""
    if temperature <= 0:
        raise ValueError(f"filter_logits: temperature must be > 0 here (T = 0 is the argmax), got {temperature}")
    out = logits.astype(jnp.float32) / temperature
    return top_p_filter(top_k_filter(out, top_k), top_p)


def sample_token(key: jax.Array, logits: jax.Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> jax.Array:
    """One token per row of ``logits [..., V]`` -> int32 ``[...]``.

    ``temperature == 0``: the argmax (greedy); otherwise a draw from
    ``softmax(filter_logits(logits, temperature, top_k, top_p))``.
    """
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1).astype(jnp.int32)


def make_token_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                       vocab_size: int = 0, where: str = "make_sampler"):
    """Checks the settings once and returns ``pick(key, logits [..., V]) -> int32 [...]``."""
    check_sampling_args(temperature, top_k, top_p, vocab_size if vocab_size else 2 ** 31 - 1, where)

    def pick(key, logits):
        return sample_token(key, logits, float(temperature), int(top_k), float(top_p))

    return pick
