"""Conditioning shared by every family: label embeddings with a null label, condition dropout
and classifier-free guidance.

Conventions (the same for labels and captions):

* **Null label.** A class-conditional network that supports classifier-free guidance embeds
  labels with ``num_classes + 1`` rows; row ``num_classes`` (:func:`null_label`) is the
  reserved *null* class, the unconditional model of Ho & Salimans 2022, Sec. 3.2.
  Networks without guidance embed ``num_classes`` rows (``null=False``).
* **Null caption.** The empty caption -- all padding, token id :data:`PAD_ID` ``= 0``
  (:func:`null_caption`) -- is the null condition of a caption-conditioned network (its
  cross-attention then returns zeros and its pooled embedding is zero).
* **Condition dropout** (Ho & Salimans 2022, Alg. 1, line 3: "c <- null with probability
  p_uncond"): :func:`drop_labels` / :func:`drop_captions` replace the condition of each
  example independently by the null one with probability ``p``. The draw is always
  ``jax.random.bernoulli(key, p, (B,))`` -- one Bernoulli per *example*, also for ``[B, L]``
  captions -- so a key gives the same dropped examples for labels and captions.
* **Guidance** (Ho & Salimans 2022, Eq. 6): ``eps~ = (1 + w) eps(x_t, c) - w eps(x_t, c_neg)``
  (:func:`guidance_combine`), where ``c_neg`` is the null condition or a *negative* condition;
  :func:`guided_call` evaluates both conditions in one network call of batch ``2B``.

Shapes: labels int ``[B]``; caption tokens int ``[B, L]``; network outputs ``[B, ...]``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

PAD_ID = 0


# ------------------------------------------------------------------------------------------
# The null condition.
# ------------------------------------------------------------------------------------------


def null_label(num_classes: int) -> int:
    """The reserved id of the null class: ``num_classes`` (the last row of a label embedding
    built with ``null=True``)."""
    if num_classes < 1:
        raise ValueError(f"a null label needs num_classes >= 1, got {num_classes}")
    return int(num_classes)


def label_rows(num_classes: int, null: bool) -> int:
    """Rows of a label embedding table: ``num_classes + 1`` with the null class, else
    ``num_classes``."""
    return int(num_classes) + (1 if null else 0)


def null_labels(num_classes: int, batch: int) -> jax.Array:
    """int32 ``[batch]`` filled with :func:`null_label` ``(num_classes)``."""
    return jnp.full((batch,), null_label(num_classes), jnp.int32)


def null_caption(batch: int, length: int) -> jax.Array:
    """The empty caption: int32 ``[batch, length]`` of :data:`PAD_ID`."""
    return jnp.full((batch, length), PAD_ID, jnp.int32)


# ------------------------------------------------------------------------------------------
# Condition dropout (Ho & Salimans 2022, Alg. 1).
# ------------------------------------------------------------------------------------------


def drop_mask(key: jax.Array, p: float, batch: int) -> jax.Array:
    """bool ``[batch]``: True where the example's condition is replaced by the null one;
    each True with probability ``p`` (``jax.random.bernoulli(key, p, (batch,))``)."""
    return jax.random.bernoulli(key, p, (batch,))


def drop_labels(key: jax.Array, labels: jax.Array, p: float, null: Any) -> jax.Array:
    """``labels`` with each example's condition replaced by ``null`` with probability ``p``
    (Ho & Salimans 2022, Alg. 1, line 3).

    Args:
      key: PRNG key of the dropout draw.
      labels: the conditions, ``[B]`` (class ids) or ``[B, ...]`` (e.g. caption tokens
        ``[B, L]``: a dropped example gets ``null`` in every position).
      p: the drop probability ``p_uncond`` in ``[0, 1)``; ``p = 0`` returns ``labels``
        without drawing.
      null: the null condition, a scalar (:func:`null_label`, :data:`PAD_ID`) or an array
        broadcastable to ``labels``.

    Returns:
      an array of ``labels``' shape and dtype.
    """
    if isinstance(p, (int, float)) and p == 0:
        return labels
    drop = drop_mask(key, p, labels.shape[0])
    return jnp.where(drop.reshape((-1,) + (1,) * (labels.ndim - 1)), null, labels)


def drop_captions(key: jax.Array, tokens: jax.Array, p: float) -> jax.Array:
    """Caption tokens ``[B, L]`` with each caption replaced by the empty caption (all
    :data:`PAD_ID`) with probability ``p``; the same draw as :func:`drop_labels`."""
    if tokens.ndim != 2:
        raise ValueError(f"caption tokens must be [B, L], got shape {tokens.shape}")
    return drop_labels(key, tokens, p, PAD_ID)


# ------------------------------------------------------------------------------------------
# Classifier-free guidance (Ho & Salimans 2022, Eq. 6).
# ------------------------------------------------------------------------------------------


def guidance_combine(out_cond: jax.Array, out_uncond: jax.Array, scale: Any) -> jax.Array:
    """``(1 + w) out_cond - w out_uncond`` with ``w = scale`` (Ho & Salimans 2022, Eq. 6),
    computed as ``out_cond + w (out_cond - out_uncond)``; ``w = 0`` is the conditional model,
    ``w = -1`` the unconditional one. Shapes: any, equal (or broadcastable)."""
    return out_cond + scale * (out_cond - out_uncond)


def _concat(a, b):
    return jax.tree.map(lambda u, v: jnp.concatenate([jnp.asarray(u), jnp.asarray(v)]), a, b)


def guided_call(apply: Callable, x: jax.Array, t: jax.Array, cond: Any, neg: Any, scale: Any,
                *, guide_channels: Optional[int] = None) -> jax.Array:
    """The classifier-free guided output at ``(x, t)``, from one network call of batch ``2B``.

    ``apply(x2, t2, cond2)`` is evaluated once on ``x2 = [x; x]``, ``t2 = [t; t]``,
    ``cond2 = [cond; neg]`` (concatenated on the batch axis; ``cond`` / ``neg`` may be arrays
    or matching pytrees of ``[B, ...]`` arrays), and its two halves are combined by
    :func:`guidance_combine`.

    Args:
      apply: ``(x [2B, ...], t [2B], cond [2B, ...]) -> out [2B, ..., C_out]``.
      x: ``[B, ...]`` network input; t: ``[B]`` times.
      cond: the conditions; neg: the null (:func:`null_labels`, :func:`null_caption`) or
        negative conditions, of ``cond``'s structure and shapes.
      scale: the guidance weight ``w``.
      guide_channels: if given, only the first ``guide_channels`` output channels (the mean
        prediction) are guided; the remaining channels (learned variances) are the
        conditional output's.

    Returns:
      ``[B, ..., C_out]``.
    """
    b = x.shape[0]
    out = apply(jnp.concatenate([x, x]), jnp.concatenate([t, t]), _concat(cond, neg))
    o_c, o_u = out[:b], out[b:]
    if guide_channels is None:
        return guidance_combine(o_c, o_u, scale)
    k = guide_channels
    g = guidance_combine(o_c[..., :k], o_u[..., :k], scale)
    return g if o_c.shape[-1] == k else jnp.concatenate([g, o_c[..., k:]], -1)


# ------------------------------------------------------------------------------------------
# Label embedding.
# ------------------------------------------------------------------------------------------


def check_denoiser_inputs(cfg: Any, x: jax.Array, t: jax.Array, label: Optional[jax.Array], *, net: str,
                          path: str) -> None:
    """Checks an image denoiser's ``x [B, H, W, C]`` (by ``cfg.check_image_shape``), ``t [B]``
    and ``label`` (int ``[B]`` when ``cfg.num_classes > 0``, else ``None``); the errors name
    the network ``net`` and its config ``path`` (e.g. ``'U-Net'``, ``'config.model.unet'``)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [B, H, W, C], got shape {x.shape}")
    b = x.shape[0]
    cfg.check_image_shape(x.shape[1:])
    if t.shape != (b,):
        raise ValueError(f"t must be [B] = [{b}], got shape {t.shape}")
    if cfg.num_classes > 0:
        if label is None:
            raise ValueError(f"label is required: the {net} is class-conditional (num_classes="
                             f"{cfg.num_classes}); pass label [B] (null class id {cfg.null_label})")
        if label.shape != (b,) or not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(f"label must be int [B] = [{b}], got {label.dtype} shape {label.shape}")
    elif label is not None:
        raise ValueError(f"label given but the {net} is unconditional ({path}.num_classes=0)")


def embed_labels(labels: jax.Array, num_classes: int, features: int, *, null: bool,
                 name: str) -> jax.Array:
    """Learned embedding of class ids, to be called inside a compact Flax module.

    Creates ``nn.Embed(label_rows(num_classes, null), features, name=name)`` in the calling
    module (params ``{name: {'embedding': [rows, features]}}``) and looks up ``labels``.

    Args:
      labels: int ``[B]`` ids in ``[0, num_classes)``, or ``num_classes`` (the null class)
        when ``null``.

    Returns:
      float32 ``[B, features]``.
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be [B], got shape {labels.shape}")
    return nn.Embed(label_rows(num_classes, null), features, name=name)(labels.astype(jnp.int32))


class LabelEmbedding(nn.Module):
    """Class label ``[B]`` (int) -> learned vector ``[B, features]`` (params
    ``{'embed': {'embedding': [rows, features]}}``).

    Attributes:
      num_classes: number of classes.
      features: output width.
      null: add the null class row ``num_classes`` (classifier-free guidance).
    """

    num_classes: int
    features: int
    null: bool = False

    @nn.compact
    def __call__(self, labels: jax.Array) -> jax.Array:
        return embed_labels(labels, self.num_classes, self.features, null=self.null, name="embed")
