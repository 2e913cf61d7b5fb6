"""Contrastive image-text objectives: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid.

Both take l2-normalized embeddings ``zi [B, D]`` (images) and ``zt [B, D]`` (texts), row ``i``
of each being the two views of pair ``i``, and return a scalar loss.

**InfoNCE** (Radford et al. 2021, Fig. 3 pseudocode; van den Oord et al. 2018)::

    s      = min(exp(log_scale), max_scale)                        learned temperature 1/tau
    logits = s * zi zt^T                                           [B, B]
    L      = ( CE(logits, labels, axis=0) + CE(logits, labels, axis=1) ) / 2,   labels = arange(B)

i.e. the mean over rows of ``-log softmax_j(logits)_{ii}`` (image -> text) and over columns
(text -> image), averaged. The scale is clamped at ``max_scale = 100`` ("clipped to prevent
scaling the logits by more than 100", Sec. 2.5) by clamping **log_scale at log(max_scale)** in
the forward pass: ``s = exp(where(log_scale < log 100, log_scale, log 100))``. So below the
clamp ``dL/dlog_scale = s dL/ds`` (the exp's own chain rule), and at or above it the gradient
w.r.t. ``log_scale`` is exactly 0 (the parameter is not pulled further up, and the logits see
100, never more). The parameter itself is not rewritten (unlike the in-place clamp of the
OpenAI code), so :func:`logit_scale` is what to report.

**SigLIP** (Zhai et al. 2023, Eq. 1; Algorithm 1)::

    logits_ij = exp(t') zi_i . zt_j + b,    z_ij = +1 if i == j else -1
    L = -(1 / |B|) sum_i sum_j log sigmoid(z_ij logits_ij)

with a learned temperature ``t'`` (init ``log 10``) and bias ``b`` (init ``-10``); the sum runs
over all ``B^2`` pairs and is normalized by the batch size ``|B|`` as in the paper.

**Global batch over a mesh** (:func:`sharded_loss`): with the batch split over a mesh axis,
each device all-gathers the other devices' embeddings and scores its own rows against the
whole global batch (``[B/n, B]`` logits per device, in both directions for InfoNCE), and the
per-row losses are summed over devices (``psum``) and divided by the global batch: the very
loss of the single-device function on the concatenated batch, with the gradient of
``all_gather`` (a reduce-scatter) routing each device's share back. Under the train loop's
``jit`` over a data-sharded batch the plain functions already compute the global-batch loss
(XLA inserts the gathers); :func:`sharded_loss` writes the communication out by hand with
``shard_map`` (the "local rows vs. global columns" layout of the CLIP/SigLIP implementations).
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Literal, Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

MAX_LOGIT_SCALE = 100.0
INIT_LOG_SCALE = math.log(1 / 0.07)    # Radford et al. 2021, Sec. 2.5: tau initialized to 0.07
SIGLIP_INIT_LOG_T = math.log(10.0)     # Zhai et al. 2023, Sec. 3.1 / Algorithm 1: t' = log 10
SIGLIP_INIT_BIAS = -10.0               # b = -10

Kind = Literal["infonce", "siglip"]
KINDS = ("infonce", "siglip")


def _check_pair(zi: jax.Array, zt: jax.Array, where: str) -> None:
    if zi.ndim != 2 or zt.ndim != 2 or zi.shape != zt.shape:
        raise ValueError(f"{where}: image and text embeddings must both be [B, D] of the same shape, "
                         f"got zi {zi.shape} and zt {zt.shape}")
    if zi.shape[0] < 1:
        raise ValueError(f"{where}: empty batch")


def logit_scale(log_scale: jax.Array, max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
    """``exp(min(log_scale, log max_scale))``: the clamped scale ``1 / tau`` (module docstring).
    The gradient w.r.t. ``log_scale`` is ``scale`` below the clamp and 0 at or above it."""
    if max_scale <= 0:
        raise ValueError(f"logit_scale: max_scale must be > 0, got {max_scale}")
    cap = math.log(max_scale)
    log_scale = jnp.asarray(log_scale, jnp.float32)
    return jnp.exp(jnp.where(log_scale < cap, log_scale, cap))


def infonce_logits(zi: jax.Array, zt: jax.Array, log_scale: jax.Array,
                   max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
    """``logits [B_i, B_t] = scale * zi zt^T`` (Fig. 3: ``logits = np.dot(I_e, T_e.T) * np.exp(t)``)."""
    return logit_scale(log_scale, max_scale) * (zi @ zt.T)


def _row_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """``-log softmax(logits)[r, targets[r]]`` per row ``r``."""
    lse = jax.nn.logsumexp(logits, axis=-1)
    return lse - jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]


def infonce_loss(zi: jax.Array, zt: jax.Array, log_scale: jax.Array,
                 max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
    """The symmetric InfoNCE loss of Radford et al. 2021, Fig. 3 (module docstring): scalar.

    Args:
      zi, zt: l2-normalized image / text embeddings ``[B, D]`` (pair ``i`` = row ``i``).
      log_scale: scalar learned log of the logit scale (init ``log(1 / 0.07)``).
      max_scale: the clamp of the scale (100).
    """
    _check_pair(zi, zt, "infonce_loss")
    logits = infonce_logits(zi, zt, log_scale, max_scale)
    labels = jnp.arange(zi.shape[0])
    return 0.5 * (jnp.mean(_row_nll(logits, labels)) + jnp.mean(_row_nll(logits.T, labels)))


def siglip_logits(zi: jax.Array, zt: jax.Array, log_t: jax.Array, bias: jax.Array) -> jax.Array:
    """``logits [B_i, B_t] = exp(t') zi zt^T + b`` (Zhai et al. 2023, Algorithm 1)."""
    return jnp.exp(jnp.asarray(log_t, jnp.float32)) * (zi @ zt.T) + bias


def _siglip_sum(logits: jax.Array, row0: jax.Array) -> jax.Array:
    """``-sum_ij log sigmoid(z_ij logits_ij)`` for rows ``row0..row0+b-1`` of the global matrix."""
    b, n = logits.shape
    pos = (row0 + jnp.arange(b))[:, None] == jnp.arange(n)[None, :]
    z = jnp.where(pos, 1.0, -1.0)
    return -jnp.sum(jax.nn.log_sigmoid(z * logits))


def siglip_loss(zi: jax.Array, zt: jax.Array, log_t: jax.Array, bias: jax.Array) -> jax.Array:
    """The pairwise sigmoid loss of Zhai et al. 2023, Eq. 1 (module docstring): scalar.

    Args:
      zi, zt: l2-normalized embeddings ``[B, D]``; log_t: scalar ``t'`` (init ``log 10``);
      bias: scalar ``b`` (init ``-10``).
    """
    _check_pair(zi, zt, "siglip_loss")
    return _siglip_sum(siglip_logits(zi, zt, log_t, bias), jnp.int32(0)) / zi.shape[0]


def in_batch_accuracy(logits: jax.Array) -> Mapping[str, jax.Array]:
    """``{'acc_i2t', 'acc_t2i'}``: the fraction of images whose own caption has the largest
    logit of their row, and of captions whose own image has the largest of their column."""
    labels = jnp.arange(logits.shape[0])
    return {"acc_i2t": jnp.mean(jnp.argmax(logits, axis=1) == labels),
            "acc_t2i": jnp.mean(jnp.argmax(logits, axis=0) == labels)}


def contrastive_loss(kind: Kind, zi: jax.Array, zt: jax.Array, temp: Mapping[str, jax.Array],
                     max_scale: float = MAX_LOGIT_SCALE) -> jax.Array:
    """``infonce_loss`` (``temp = {'log_scale'}``) or ``siglip_loss`` (``temp = {'log_scale', 'bias'}``,
    ``log_scale`` being SigLIP's ``t'``)."""
    if kind == "infonce":
        return infonce_loss(zi, zt, temp["log_scale"], max_scale)
    if kind == "siglip":
        return siglip_loss(zi, zt, temp["log_scale"], temp["bias"])
    raise ValueError(f"contrastive_loss: kind must be one of {KINDS}, got {kind!r}")


def sharded_loss(mesh: Mesh, axis: str = "data", kind: Kind = "infonce",
                 max_scale: float = MAX_LOGIT_SCALE) -> Callable:
    """``loss(zi, zt, temp) -> scalar`` over the GLOBAL batch, with ``zi``, ``zt`` ``[B, D]``
    sharded along ``axis`` of ``mesh`` (``B`` divisible by its size) and ``temp`` replicated.

    Each device gathers the global ``zi``, ``zt`` (``all_gather``), scores its ``B/n`` rows
    against all ``B`` columns, and the row losses are ``psum``-ed and divided by ``B`` (module
    docstring): equal to :func:`contrastive_loss` of the full batch, value and gradient.
    """
    if kind not in KINDS:
        raise ValueError(f"sharded_loss: kind must be one of {KINDS}, got {kind!r}")
    if axis not in mesh.axis_names:
        raise ValueError(f"sharded_loss: axis {axis!r} is not an axis of the mesh {mesh.axis_names}")
    n = mesh.shape[axis]

    def local(zi, zt, temp):
        b = zi.shape[0]
        row0 = jax.lax.axis_index(axis) * b
        zi_all = jax.lax.all_gather(zi, axis, tiled=True)   # [B, D]
        zt_all = jax.lax.all_gather(zt, axis, tiled=True)
        if kind == "infonce":
            s = logit_scale(temp["log_scale"], max_scale)
            targets = row0 + jnp.arange(b)
            total = jnp.sum(_row_nll(s * (zi @ zt_all.T), targets)) + jnp.sum(_row_nll(s * (zt @ zi_all.T), targets))
            total = 0.5 * total
        else:
            total = _siglip_sum(siglip_logits(zi, zt_all, temp["log_scale"], temp["bias"]), row0)
        return jax.lax.psum(total, axis) / (b * n)

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis), P()), out_specs=P())

    @functools.wraps(local)
    def loss(zi, zt, temp):
        _check_pair(zi, zt, "sharded_loss")
        if zi.shape[0] % n:
            raise ValueError(f"sharded_loss: batch {zi.shape[0]} is not divisible by the {n} devices of "
                             f"mesh axis {axis!r}")
        return mapped(zi, zt, dict(temp))

    return loss
