"""Latent traversals, interpolations and reconstructions, returned as image grids
``[rows, cols, H, W, C]``.

The grid builders take a ``decode(z [N, Z]) -> [N, H, W, C]`` callable (e.g.
``functools.partial(model.codec.decode, params)``); :func:`interpolate_images`,
:func:`traverse_image` and :func:`reconstruct` take a model and go through its
:class:`~gen_jax.model.Codec` (``encode`` gives one code per image: the posterior mean of a
VAE, the code of an autoencoder, a flow's latent; ``decode`` its deterministic image), so
they work for any model with a codec. Plotting is :mod:`gen_jax.viz`'s job.

* Traversal (Higgins et al. 2017, Sec. 4 / Fig. 1 of beta-VAE): vary one latent dimension
  over a range of values with the others fixed at a base code.
* Linear interpolation ``z(t) = (1 - t) z_a + t z_b`` and spherical interpolation
  (Shoemake 1985; recommended for Gaussian latents by White 2016, "Sampling Generative
  Networks", Sec. 2.1):
  ``slerp(z_a, z_b; t) = sin((1 - t) omega) / sin(omega) z_a + sin(t omega) / sin(omega) z_b``
  with ``cos omega = <z_a, z_b> / (|z_a| |z_b|)``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

Decoder = Callable[[jax.Array], jax.Array]


def _grid(decode: Decoder, z: jax.Array) -> jax.Array:
    """Decodes ``z [rows, cols, Z]`` -> ``[rows, cols, H, W, C]``."""
    rows, cols, d = z.shape
    x = decode(z.reshape(rows * cols, d))
    return x.reshape(rows, cols, *x.shape[1:])


def traversal_codes(z0: jax.Array, dims: Sequence[int], values: jax.Array) -> jax.Array:
    """Codes ``[len(dims), len(values), Z]``: row ``r`` is ``z0`` with dimension ``dims[r]``
    set to each of ``values``."""
    z0 = jnp.asarray(z0)
    if z0.ndim != 1:
        raise ValueError(f"base code z0 must be [Z], got shape {z0.shape}")
    dims = [int(d) for d in dims]
    if any(not 0 <= d < z0.shape[0] for d in dims):
        raise ValueError(f"traversal dims {dims} out of range for Z={z0.shape[0]}")
    values = jnp.asarray(values, z0.dtype)
    rows = [jnp.tile(z0, (values.shape[0], 1)).at[:, d].set(values) for d in dims]
    return jnp.stack(rows)


def latent_traversal(decode: Decoder, z0: jax.Array, dims: Optional[Sequence[int]] = None,
                     values: Optional[jax.Array] = None, num_values: int = 9,
                     limit: float = 3.0) -> jax.Array:
    """Images ``[len(dims), num_values, H, W, C]`` of a traversal around base code ``z0 [Z]``.

    Args:
      decode: ``z [N, Z] -> images [N, H, W, C]``.
      z0: base code ``[Z]`` (e.g. the posterior mean of an image, or zeros).
      dims: latent dimensions to traverse (rows); default all.
      values: values given to each traversed dimension (columns); default
        ``linspace(-limit, limit, num_values)`` (the prior's +-3 sd for ``N(0, I)``).
    """
    z0 = jnp.asarray(z0)
    dims = list(range(z0.shape[-1])) if dims is None else list(dims)
    if values is None:
        values = jnp.linspace(-limit, limit, num_values)
    return _grid(decode, traversal_codes(z0, dims, values))


def lerp(z_a: jax.Array, z_b: jax.Array, t: jax.Array) -> jax.Array:
    """``(1 - t) z_a + t z_b``; ``z_a, z_b [R, Z]``, ``t [T]`` -> ``[R, T, Z]``."""
    t = jnp.asarray(t, z_a.dtype)[None, :, None]
    return (1.0 - t) * z_a[:, None] + t * z_b[:, None]


def slerp(z_a: jax.Array, z_b: jax.Array, t: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Spherical interpolation (Shoemake 1985; White 2016, Sec. 2.1); ``[R, T, Z]``.
    Falls back to :func:`lerp` for (nearly) parallel codes."""
    t = jnp.asarray(t, z_a.dtype)[None, :, None]
    na = jnp.linalg.norm(z_a, axis=-1, keepdims=True)
    nb = jnp.linalg.norm(z_b, axis=-1, keepdims=True)
    cos = jnp.sum(z_a * z_b, -1, keepdims=True) / jnp.maximum(na * nb, eps)
    omega = jnp.arccos(jnp.clip(cos, -1.0, 1.0))[:, None]  # [R, 1, 1]
    so = jnp.sin(omega)
    small = so < eps
    safe = jnp.where(small, 1.0, so)
    wa = jnp.where(small, 1.0 - t, jnp.sin((1.0 - t) * omega) / safe)
    wb = jnp.where(small, t, jnp.sin(t * omega) / safe)
    return wa * z_a[:, None] + wb * z_b[:, None]


def interpolate(decode: Decoder, z_a: jax.Array, z_b: jax.Array, num_steps: int = 8,
                method: str = "slerp") -> jax.Array:
    """Images ``[R, num_steps, H, W, C]`` along paths from ``z_a [R, Z]`` to ``z_b [R, Z]``
    (endpoints included); ``method`` is ``'linear'`` or ``'slerp'``."""
    z_a, z_b = jnp.atleast_2d(z_a), jnp.atleast_2d(z_b)
    if z_a.shape != z_b.shape:
        raise ValueError(f"interpolation endpoints differ in shape: {z_a.shape} vs {z_b.shape}")
    t = jnp.linspace(0.0, 1.0, num_steps)
    if method == "linear":
        z = lerp(z_a, z_b, t)
    elif method == "slerp":
        z = slerp(z_a, z_b, t)
    else:
        raise ValueError(f"interpolation method must be 'linear' or 'slerp', got {method!r}")
    return _grid(decode, z)


def _codec(model):
    if getattr(model, "codec", None) is None:
        raise ValueError(f"model {getattr(model, 'name', model)!r} has no codec (encode / decode)")
    return model.codec


def _repeat_cond(cond: Optional[dict], times: int) -> Optional[dict]:
    """Each row of ``cond`` repeated ``times`` times (row-major, like the decoded grids)."""
    if cond is None:
        return None
    return {k: jnp.repeat(jnp.asarray(v), times, axis=0) for k, v in cond.items()}


def reconstruct(model, params, batch: dict) -> jax.Array:
    """``decode(encode(x))`` of ``batch['image'] [B, H, W, C]`` through ``model.codec`` (the
    decoded posterior mean for a VAE); a conditional model reads its condition from
    ``batch`` (``'label'`` or ``'caption_tokens'``). Returns ``[B, H, W, C]``."""
    codec = _codec(model)
    return codec.decode(params, codec.encode(params, batch["image"], batch), batch)


def interpolate_images(model, params, images_a: jax.Array, images_b: jax.Array,
                       num_steps: int = 8, method: str = "slerp", cond: Optional[dict] = None) -> jax.Array:
    """Encodes image pairs ``[R, H, W, C]`` with ``model.codec.encode`` (posterior mean for a
    VAE) and decodes the interpolated codes: ``[R, num_steps, H, W, C]``. A conditional
    model decodes every column with the condition of its row (``cond`` rows ``R``)."""
    codec = _codec(model)
    z_a = codec.encode(params, images_a, cond)
    z_b = codec.encode(params, images_b, cond)
    return interpolate(lambda z: codec.decode(params, z, _repeat_cond(cond, num_steps)), z_a, z_b,
                       num_steps, method)


def traverse_image(model, params, image: jax.Array, dims: Optional[Sequence[int]] = None,
                   num_values: int = 9, limit: float = 3.0, cond: Optional[dict] = None) -> jax.Array:
    """Traversal ``[len(dims), num_values, H, W, C]`` around the code of one image
    ``[H, W, C]`` (``model.codec``; ``cond`` has one row for a conditional model)."""
    codec = _codec(model)
    z0 = codec.encode(params, image[None], cond)[0]
    decode = lambda z: codec.decode(params, z, _repeat_cond(cond, z.shape[0]))
    return latent_traversal(decode, z0, dims, None, num_values, limit)
