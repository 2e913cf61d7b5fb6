"""Zero-shot classification and image-text retrieval with a contrastive embedder.

Zero-shot classification (Radford et al. 2021, Sec. 3.1.2 and 3.1.4): each class ``c`` is
described by prompts ``p_1..p_P``; its class embedding is the mean of the prompts'
l2-normalized text embeddings, renormalized ("prompt ensembling ... over the embedding
space", Sec. 3.1.4)::

    w_c = normalize( (1/P) sum_p normalize(f_text(p)) ),     y_hat(x) = argmax_c  f_image(x) . w_c

With one prompt per class this is the single-template classifier.

Retrieval among ``N`` pairs ``(x_n, t_n)``: text -> image ranks the ``N`` images by
``f_text(t_n) . f_image(x_m)``, and Recall@K is the fraction of texts whose own image is among
the ``K`` most similar (image -> text likewise). The rank of the true item counts the items
with a strictly larger similarity, so ties are resolved in the true item's favour.

Prompts for shapes (:func:`shapes_prompts`): the captions of
:mod:`gen_jax.data.shapes` are ``"a {size} {colour} {shape} {where}"``. For a factor (``shape``,
``colour``, ``size``, ``position``) and class, the *single template* is the one caption with the
other factors at fixed words (``"a small red {shape} in the center"``, ...;
:data:`SINGLE`), and the *ensemble* fills the other factors with every value they take (all
2 x 6 x 9 = 108 captions naming a given shape, 90 for a colour, 270 for a size, 60 for a
position): the nuisance factors are averaged out of the class embedding. Prompts are text only,
so the ensemble includes the (shape, colour) combinations held out of training.
"""
from __future__ import annotations

import itertools
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.data import shapes as S

FACTOR_CLASSES = {"shape": S.SHAPES, "colour": S.COLOURS, "size": S.SIZES,
                  "position": tuple(S.where_phrase(x, y) for y in range(len(S.YS)) for x in range(len(S.XS)))}
# Fixed words of the single template (first value of each factor, the centre position).
SINGLE = {"shape": 0, "colour": 0, "size": 0, "position": 4}


def _normalize(z: jax.Array, eps: float = 1e-12) -> jax.Array:
    return z * jax.lax.rsqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True) + eps)


def ensemble_embeddings(z: jax.Array) -> jax.Array:
    """Prompt embeddings ``z [C, P, D]`` -> class embeddings ``[C, D]``: the mean over the
    ``P`` prompts of the l2-normalized embeddings, renormalized (Sec. 3.1.4)."""
    if z.ndim != 3:
        raise ValueError(f"ensemble_embeddings: z must be [C, P, D], got shape {z.shape}")
    return _normalize(jnp.mean(_normalize(z), axis=1))


def zero_shot_predict(zi: jax.Array, class_emb: jax.Array) -> jax.Array:
    """``argmax_c zi . w_c``: int ``[N]`` from image embeddings ``[N, D]`` and classes ``[C, D]``."""
    if zi.ndim != 2 or class_emb.ndim != 2 or zi.shape[1] != class_emb.shape[1]:
        raise ValueError(f"zero_shot_predict: need zi [N, D] and class_emb [C, D], got {zi.shape} and "
                         f"{class_emb.shape}")
    return jnp.argmax(zi @ class_emb.T, axis=1)


def ranks(query: jax.Array, items: jax.Array) -> jax.Array:
    """Rank (0 = best) of item ``n`` for query ``n``: the number of items ``m`` with
    ``query_n . items_m > query_n . items_n``; ``query``, ``items`` ``[N, D]``."""
    if query.ndim != 2 or query.shape != items.shape:
        raise ValueError(f"ranks: query and items must be [N, D] of one shape, got {query.shape} and {items.shape}")
    sim = query @ items.T
    own = jnp.diagonal(sim)
    return jnp.sum(sim > own[:, None], axis=1)


def recall_at_k(zi: jax.Array, zt: jax.Array, ks: Sequence[int] = (1, 5)) -> dict:
    """``{'t2i_R@K', 'i2t_R@K'}`` among the ``N`` pairs of ``zi``, ``zt`` ``[N, D]`` (floats)."""
    r_t2i, r_i2t = np.asarray(ranks(zt, zi)), np.asarray(ranks(zi, zt))
    out = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"recall_at_k: K must be >= 1, got {k}")
        out[f"t2i_R@{k}"] = float(np.mean(r_t2i < k))
        out[f"i2t_R@{k}"] = float(np.mean(r_i2t < k))
    return out


# ----------------------------------------------------------------------------- shapes prompts


def shapes_prompts(factor: str, ensemble: bool) -> list[list[str]]:
    """``prompts[c]``: the prompts of class ``c`` of ``factor`` (module docstring)."""
    if factor not in FACTOR_CLASSES:
        raise ValueError(f"shapes_prompts: factor must be one of {sorted(FACTOR_CLASSES)}, got {factor!r}")
    others = [f for f in FACTOR_CLASSES if f != factor]
    out = []
    for c in range(len(FACTOR_CLASSES[factor])):
        choices = [range(len(FACTOR_CLASSES[f])) if ensemble else [SINGLE[f]] for f in others]
        prompts = []
        for combo in itertools.product(*choices):
            v = dict(zip(others, combo), **{factor: c})
            prompts.append(f"a {S.SIZES[v['size']]} {S.COLOURS[v['colour']]} {S.SHAPES[v['shape']]} "
                           f"{FACTOR_CLASSES['position'][v['position']]}")
        out.append(prompts)
    return out


def position_labels(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``position`` class (``y * 3 + x``, the order of ``FACTOR_CLASSES['position']``) of a split."""
    return np.asarray(arrays["y"]) * len(S.XS) + np.asarray(arrays["x"])


def factor_labels(arrays: Mapping[str, np.ndarray], factor: str) -> np.ndarray:
    return position_labels(arrays) if factor == "position" else np.asarray(arrays[factor])


def class_embeddings(embed_text: Callable, params, prompts: list[list[str]], tokenize: Callable,
                     batch_size: int = 512) -> jax.Array:
    """Class embeddings ``[C, D]`` of ``prompts[c]`` (ensembles of equal size ``P``) under
    ``embed_text(params, tokens)`` with ``tokenize(list[str]) -> int [n, L]``."""
    sizes = {len(p) for p in prompts}
    if len(sizes) != 1:
        raise ValueError(f"class_embeddings: every class needs as many prompts, got sizes {sorted(sizes)}")
    flat = [t for p in prompts for t in p]
    tokens = np.asarray(tokenize(flat), np.int32)
    z = embed_batched(embed_text, params, tokens, batch_size)
    return ensemble_embeddings(jnp.asarray(z.reshape(len(prompts), sizes.pop(), -1)))


def embed_batched(fn: Callable, params, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``fn(params, x)`` (an ``embed_image`` / ``embed_text``) over ``x [N, ...]`` in jitted
    batches of ``batch_size`` (the last one padded by repeating its final row)."""
    jf = jax.jit(fn)
    x = np.asarray(x)
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        m = len(chunk)
        if m < batch_size and len(x) > batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
        out.append(np.asarray(jf(params, chunk))[:m])
    return np.concatenate(out)


def embed_images(embed_image: Callable, params, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``embed_image`` over ``images [N, H, W, C]`` in [0, 1] (float32), in batches."""
    return embed_batched(embed_image, params, np.asarray(images, np.float32), batch_size)


def shapes_zero_shot(embedder, params, images: np.ndarray, arrays: Mapping[str, np.ndarray], tokenize: Callable,
                     factors: Sequence[str] = ("colour", "shape", "size", "position"),
                     zi: Optional[np.ndarray] = None) -> dict:
    """``{factor: {'single': acc, 'ensemble': acc}}`` of zero-shot classification of a shapes
    split (``images`` in [0, 1], ``arrays`` its factors)."""
    zi = embed_images(embedder.embed_image, params, images) if zi is None else zi
    res = {}
    for f in factors:
        y = factor_labels(arrays, f)
        res[f] = {}
        for name, ens in (("single", False), ("ensemble", True)):
            w = class_embeddings(embedder.embed_text, params, shapes_prompts(f, ens), tokenize)
            res[f][name] = float(np.mean(np.asarray(zero_shot_predict(jnp.asarray(zi), w)) == y))
    return res
