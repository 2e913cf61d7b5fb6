"""Memorization: how close samples lie to the training set, against how close unseen data lies.

A model that copies training images puts its samples nearer to the training set than fresh
data from the same distribution is. The check compares the mean Euclidean distance (pixel
space, images in ``[0, 1]``) from each sample to its nearest training image with the same
mean for test images (Meehan et al. 2020 frame the same comparison as a data-copying test;
this is its simplest statistic). ``nn_train_ratio = mean d(sample, train) / mean d(test,
train)``: ``>= 1`` shows no memorization; well below 1 is copying.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _min_sq_dist(q, ref, ref_sq):
    d = jnp.sum(q * q, 1)[:, None] - 2.0 * q @ ref.T + ref_sq[None, :]
    return jnp.maximum(jnp.min(d, axis=1), 0.0)


def nearest_distances(queries, reference, batch_size: int = 512) -> np.ndarray:
    """Euclidean distance from each of ``queries [N, ...]`` to its nearest row of
    ``reference [M, ...]`` (same trailing shape), as float64 ``[N]``. Computed in float32 by
    ``|q|^2 - 2 q.r + |r|^2`` in query batches of ``batch_size`` (the last one padded, so one
    compilation serves every batch)."""
    q = np.asarray(queries, np.float32).reshape(len(queries), -1)
    r = np.asarray(reference, np.float32).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"nearest_distances: queries have {q.shape[1]} values per row, reference {r.shape[1]} "
                         f"(shapes {np.shape(queries)} vs {np.shape(reference)})")
    if len(q) == 0 or len(r) == 0:
        raise ValueError(f"nearest_distances: empty input (queries {np.shape(queries)}, reference {np.shape(reference)})")
    rj = jnp.asarray(r)
    r_sq = jnp.sum(rj * rj, 1)
    out = []
    for s in range(0, len(q), batch_size):
        chunk = q[s:s + batch_size]
        k = len(chunk)
        if k < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - k, q.shape[1]), np.float32)])
        out.append(np.asarray(_min_sq_dist(jnp.asarray(chunk), rj, r_sq))[:k])
    return np.sqrt(np.concatenate(out).astype(np.float64))


def memorization_ratio(samples, test, train) -> dict[str, float]:
    """``{'nn_train_sample', 'nn_train_test', 'nn_train_ratio'}``: mean nearest-training-image
    distance of the samples, of the test images, and their ratio (``>= 1``: no memorization;
    ``nan`` when every test image also occurs in ``train``, which leaves nothing to compare with)."""
    d_s = float(np.mean(nearest_distances(samples, train)))
    d_t = float(np.mean(nearest_distances(test, train)))
    return {"nn_train_sample": d_s, "nn_train_test": d_t, "nn_train_ratio": d_s / d_t if d_t > 0 else float("nan")}
