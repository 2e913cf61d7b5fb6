"""Improved precision and recall of generative models (Kynkaanniemi et al. 2019).

Each feature set approximates its manifold by the union of balls centred at its points with
radius the distance to the point's ``k``-th nearest neighbour in the same set. Precision is
the fraction of generated points inside the real manifold; recall the fraction of real points
inside the generated manifold. Distances are computed in row batches (float64 numpy through
``|a|^2 + |b|^2 - 2 a.b``) so ``N`` up to ~10^4 fits in memory.
"""
from __future__ import annotations

import numpy as np

from gen_jax.metrics.fid import as_features, feature_pair


def _sq_dists(a: np.ndarray, b: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[len(a), len(b)]``, clipped at zero."""
    d = a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0)


def knn_radii(features, k: int = 3, batch_size: int = 1000) -> np.ndarray:
    """Distance from each point to its ``k``-th nearest neighbour in the same set.

    The point itself (distance 0) is excluded by taking the ``(k+1)``-th smallest distance,
    as in Kynkaanniemi et al. 2019, Sec. 2 (``NN_k``).

    Args:
      features: ``[N, F]`` with ``N > k``.
      k: neighbourhood size.
      batch_size: rows of the distance matrix computed at once.

    Returns:
      ``[N]`` radii (Euclidean, float64).
    """
    x = as_features(features, "features")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    x2 = np.sum(x * x, axis=1)
    radii = np.empty(n)
    for s in range(0, n, batch_size):
        d = _sq_dists(x[s:s + batch_size], x, x2[s:s + batch_size], x2)
        radii[s:s + batch_size] = np.partition(d, k, axis=1)[:, k]
    return np.sqrt(radii)


def precision_recall(real_features, fake_features, k: int = 3,
                     batch_size: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, Eqs. 1-3).

    ``f(phi, Phi) = 1`` if ``||phi - phi'|| <= ||phi' - NN_k(phi')||`` for some ``phi'`` in
    ``Phi`` (Eq. 1); ``precision = mean_{phi_g} f(phi_g, Phi_r)`` (Eq. 2) and
    ``recall = mean_{phi_r} f(phi_r, Phi_g)`` (Eq. 3).

    Args:
      real_features: ``[N, F]``.
      fake_features: ``[M, F]``.
      k: neighbourhood size for the radii (3 in the paper).
      batch_size: rows of a distance matrix computed at once.

    Returns:
      ``(precision, recall)`` as floats in ``[0, 1]``.
    """
    r, g = feature_pair(real_features, fake_features)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    r_rad2 = knn_radii(r, k, batch_size) ** 2
    g_rad2 = knn_radii(g, k, batch_size) ** 2
    r2, g2 = np.sum(r * r, axis=1), np.sum(g * g, axis=1)
    fake_in_real = np.zeros(g.shape[0], dtype=bool)
    real_in_fake = np.zeros(r.shape[0], dtype=bool)
    for s in range(0, g.shape[0], batch_size):
        d = _sq_dists(g[s:s + batch_size], r, g2[s:s + batch_size], r2)  # [b, N]
        fake_in_real[s:s + batch_size] = np.any(d <= r_rad2[None, :], axis=1)
        real_in_fake |= np.any(d <= g_rad2[s:s + batch_size, None], axis=0)
    return float(fake_in_real.mean()), float(real_in_fake.mean())
