"""DiffAugment: differentiable augmentation for data-efficient GANs (Zhao et al. 2020, Sec. 3).

The same random, differentiable transformation ``T`` is applied to every image the
discriminator sees, real and generated alike (Sec. 3.2, Fig. 4 (c)): ``D(T(x))`` and
``D(T(G(z)))`` in the discriminator's loss and ``D(T(G(z)))`` in the generator's, so the
generator's gradient flows back through ``T``. Each call draws its own transformation from
its key (the caller passes independent keys for the real and the fake batch)::

    x_aug = diff_augment(x, key, "color,translation,cutout")      # [B, H, W, C] -> [B, H, W, C]

Operations (Sec. 3.3; magnitudes as the paper's, for images in ``[-1, 1]``, the scale the
GAN networks of :mod:`gen_jax.gan` see; every op is a ``jnp`` map affine in ``x`` for a fixed
draw, hence differentiable w.r.t. ``x``):

==============  =========================================================================
``color``       per image: brightness ``x + b``, ``b ~ U[-0.5, 0.5)``; saturation
                ``(x - mean_c x) s + mean_c x``, ``s ~ U[0, 2)`` (the identity on one
                channel); contrast ``(x - mean_hwc x) c + mean_hwc x``, ``c ~ U[0.5, 1.5)``
``translation`` per image an integer shift ``(dy, dx)``, each uniform in ``[-s, s]`` with
                ``s = round(translation_ratio H)`` (resp. ``W``; ratio 1/8), zero padding:
                ``out[i, j] = x[i - dy, j - dx]`` (0 where that lies outside the image)
``cutout``      per image a ``round(cutout_ratio H) x round(cutout_ratio W)`` square (ratio
                1/2) inside the image, at a uniform top-left corner ``(oy, ox)``, set to 0;
                so exactly ``hw / (HW)`` of each image's pixels are zeroed (the square is kept
                inside the image, where the paper's implementation may clip it at the border)
==============  =========================================================================

``policy`` is a comma-separated list of these names applied in the order given (``''`` is the
identity); an unknown name is a ``ValueError`` naming the policy field. The draws are explicit:
:func:`augment_draws` returns them and :func:`augment_with` applies them, and
``diff_augment(x, key, policy) == augment_with(x, augment_draws(key, policy, x.shape), policy)``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
OPS = ("color", "translation", "cutout")
TRANSLATION_RATIO, CUTOUT_RATIO = 0.125, 0.5


def parse_policy(policy: str, field: str = "config.model.diffaugment") -> tuple[str, ...]:
    """``'color,translation'`` -> ``('color', 'translation')`` (``''`` -> ``()``); a name not in
    :data:`OPS` (or a repeated one) is a ``ValueError`` naming ``field``."""
    if not isinstance(policy, str):
        raise ValueError(f"{field}: the policy must be a string like 'color,translation,cutout', got {policy!r}")
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"{field}: unknown DiffAugment op {unknown[0]!r} in policy {policy!r}; known: {list(OPS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{field}: policy {policy!r} names an op twice")
    return names


def _check_images(x) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"diff_augment: x must be float [B, H, W, C], got {x.dtype} {x.shape}")
    return x


def _extent(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def augment_draws(key: Array, policy: str, shape: Sequence[int], translation_ratio: float = TRANSLATION_RATIO,
                  cutout_ratio: float = CUTOUT_RATIO) -> dict:
    """The random parameters of the ops of ``policy`` for images of ``shape = (B, H, W, C)``.

    Returns ``{'color': {'brightness': [B], 'saturation': [B], 'contrast': [B]},
    'translation': int32 [B, 2] (dy, dx), 'cutout': int32 [B, 2] (oy, ox), 'cutout_size': (h, w)}``
    restricted to the ops named (op ``i`` of :data:`OPS` draws from ``fold_in(key, i)``, so an
    op's draw does not depend on which other ops the policy names).
    """
    b, h, w, _ = (int(s) for s in shape)
    out = {}
    for name in parse_policy(policy):
        k = jax.random.fold_in(key, OPS.index(name))
        if name == "color":
            kb, ks, kc = jax.random.split(k, 3)
            out[name] = {"brightness": jax.random.uniform(kb, (b,)) - 0.5,
                         "saturation": 2.0 * jax.random.uniform(ks, (b,)),
                         "contrast": jax.random.uniform(kc, (b,)) + 0.5}
        elif name == "translation":
            sy, sx = _extent(h, translation_ratio), _extent(w, translation_ratio)
            lo, hi = jnp.array([-sy, -sx]), jnp.array([sy + 1, sx + 1])
            out[name] = jax.random.randint(k, (b, 2), lo, hi, jnp.int32)
        else:
            ch, cw = _extent(h, cutout_ratio), _extent(w, cutout_ratio)
            out[name] = jax.random.randint(k, (b, 2), 0, jnp.array([h - ch + 1, w - cw + 1]), jnp.int32)
            out["cutout_size"] = (ch, cw)
    return out


def _per_image(v: Array) -> Array:
    return v.reshape(-1, 1, 1, 1).astype(jnp.float32)


def color(x: Array, brightness: Array, saturation: Array, contrast: Array) -> Array:
    """Brightness, saturation, contrast (each ``[B]``) of ``x [B, H, W, C]``, in that order."""
    x = x + _per_image(brightness).astype(x.dtype)
    m = jnp.mean(x, axis=3, keepdims=True)
    x = (x - m) * _per_image(saturation).astype(x.dtype) + m
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return (x - m) * _per_image(contrast).astype(x.dtype) + m


def translate(x: Array, shifts: Array) -> Array:
    """``out[b, i, j] = x[b, i - dy_b, j - dx_b]``, zero outside: ``x [B, H, W, C]``, ``shifts``
    int ``[B, 2]`` of ``(dy, dx)`` with ``|dy| <= H``, ``|dx| <= W``."""
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (h, h), (w, w), (0, 0)))

    def one(img, s):
        return jax.lax.dynamic_slice(img, (h - s[0], w - s[1], 0), (h, w, img.shape[-1]))

    return jax.vmap(one)(padded, shifts.astype(jnp.int32))


def cutout(x: Array, offsets: Array, size: tuple[int, int]) -> Array:
    """``x [B, H, W, C]`` with the ``size = (h, w)`` square at top-left ``offsets`` int ``[B, 2]``
    set to 0."""
    _, hh, ww, _ = x.shape
    rows = jnp.arange(hh)[None, :, None]                           # [1, H, 1]
    cols = jnp.arange(ww)[None, None, :]                           # [1, 1, W]
    oy, ox = offsets[:, 0, None, None], offsets[:, 1, None, None]  # [B, 1, 1]
    inside = (rows >= oy) & (rows < oy + size[0]) & (cols >= ox) & (cols < ox + size[1])
    return x * (~inside)[..., None].astype(x.dtype)


def augment_with(x: Array, draws: Mapping, policy: str) -> Array:
    """The ops of ``policy`` in its order on ``x [B, H, W, C]`` with the given ``draws``
    (:func:`augment_draws`)."""
    x = _check_images(x)
    for name in parse_policy(policy):
        if name == "color":
            x = color(x, **draws["color"])
        elif name == "translation":
            x = translate(x, draws["translation"])
        else:
            x = cutout(x, draws["cutout"], draws["cutout_size"])
    return x


def diff_augment(x: Array, key: Array, policy: str = "color,translation,cutout",
                 translation_ratio: float = TRANSLATION_RATIO, cutout_ratio: float = CUTOUT_RATIO) -> Array:
    """DiffAugment (Zhao et al. 2020, Sec. 3): ``x [B, H, W, C]`` float -> the augmented images
    ``[B, H, W, C]`` (same dtype), one random transformation per image drawn from ``key``;
    differentiable w.r.t. ``x``; ``policy=''`` returns ``x`` unchanged. Apply it to the real and
    the generated images alike, with a fresh key per call."""
    x = _check_images(x)
    draws = augment_draws(key, policy, x.shape, translation_ratio, cutout_ratio)
    return augment_with(x, draws, policy)
