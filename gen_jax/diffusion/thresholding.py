"""Thresholding of the predicted ``x_0`` inside a diffusion sampler: static and dynamic (Imagen).

At every step a sampler predicts ``x0_hat`` from ``x_t`` (``x0_hat = (x_t - sqrt(1 - abar_t)
eps_theta) / sqrt(abar_t)`` for an eps-model) and steps towards it. With classifier-free guidance
at a large weight ``w`` the guided eps moves ``x0_hat`` far outside the data range, and the
samples saturate. Saharia et al. 2022 (Imagen), Sec. 2.3:

* **static thresholding**: ``x0_hat <- clip(x0_hat, -1, 1)`` (what the DDPM sampler's
  ``clip_x0=True`` does);
* **dynamic thresholding**: per sample, ``s = max(1, percentile_p(|x0_hat|))`` over all its
  entries; ``x0_hat <- clip(x0_hat, -s, s) / s``. When ``|x0_hat| <= 1`` everywhere (then
  ``s = 1``) it is the identity; otherwise the sample is pushed back into ``[-1, 1]`` by
  shrinking, not only by clipping, which "prevents pixels from saturating at each step".

Both are functions ``x0 [B, ...] -> x0 [B, ...]``; a sampler takes one as its ``clip_x0`` option
(:func:`gen_jax.diffusion.gaussian_diffusion.to_x0_eps` recomputes ``eps_hat`` from the
thresholded ``x0_hat``), so pixel-space DDPM / DDIM (:func:`gen_jax.diffusion.model.make_ddpm`'s
``make_sampler(clip_x0=...)``) and latent diffusion use the same code. ``bound = c`` generalizes
the range to ``[-c, c]`` (the functions act on ``x0 / c`` and scale back), for a latent space whose
data lie in ``[-c, c]`` rather than ``[-1, 1]``.

Reference: Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep
Language Understanding", Sec. 2.3 (the percentile ``p`` is a hyperparameter there; 0.995
by default here).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

KINDS = ("none", "static", "dynamic")


def _check_bound(bound: float) -> float:
    b = float(bound)
    if not b > 0.0:
        raise ValueError(f"threshold bound must be > 0, got {bound!r}")
    return b


def static_threshold(x0: jax.Array, bound: float = 1.0) -> jax.Array:
    """``clip(x0, -bound, bound)`` (static thresholding, Saharia et al. 2022, Sec. 2.3)."""
    b = _check_bound(bound)
    return jnp.clip(x0, -b, b)


def dynamic_threshold(x0: jax.Array, percentile: float = 0.995, bound: float = 1.0) -> jax.Array:
    """Dynamic thresholding (Saharia et al. 2022, Sec. 2.3) of ``x0 [B, ...]``, per sample:

        u = x0 / c,   s = max(1, quantile_p(|u|)),   out = c clip(u, -s, s) / s,

    with ``c = bound`` (1 for images on ``[-1, 1]``) and the quantile over every entry of the
    sample (linear interpolation, ``jnp.quantile``). Identity when ``|x0| <= c``; the output
    lies in ``[-c, c]``.

    Args:
      x0: ``[B, ...]`` predicted clean samples, ``B >= 1`` and at least one entry per sample.
      percentile: ``p`` in ``(0, 1]`` (0.995 in Imagen).
      bound: ``c > 0``.
    """
    p = float(percentile)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"dynamic_threshold: percentile must be in (0, 1], got {percentile!r}")
    b = _check_bound(bound)
    if x0.ndim < 2:
        raise ValueError(f"dynamic_threshold: x0 must be [B, ...] with per-sample entries, got shape {x0.shape}")
    u = x0 / b
    flat = jnp.abs(u.reshape(u.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, p, axis=1), 1.0).reshape((-1,) + (1,) * (u.ndim - 1))
    return b * jnp.clip(u, -s, s) / s


def make_threshold(kind: str, percentile: float = 0.995, bound: float = 1.0) -> Optional[Callable]:
    """The ``x0 -> x0`` function of ``kind`` (``'static'``, ``'dynamic'``), or None for ``'none'``
    (a sampler's ``clip_x0=None`` / ``False``). Arguments are checked here, once."""
    if kind not in KINDS:
        raise ValueError(f"threshold must be one of {KINDS}, got {kind!r}")
    if kind == "none":
        return None
    _check_bound(bound)
    if kind == "static":
        return lambda x0: static_threshold(x0, bound)
    if not 0.0 < float(percentile) <= 1.0:
        raise ValueError(f"threshold percentile must be in (0, 1], got {percentile!r}")
    return lambda x0: dynamic_threshold(x0, percentile, bound)
