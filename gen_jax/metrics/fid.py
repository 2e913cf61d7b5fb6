"""Frechet distance between Gaussians (FID) and the Kernel Inception Distance (KID).

Both work on feature arrays ``[N, F]`` (pool3 Inception features for the standard FID, or the
penultimate layer of a small classifier for the embedded datasets, see
:mod:`gen_jax.metrics.features`). Everything is float64 numpy: the statistics are cheap and
the Frechet distance is sensitive to rounding.
"""
from __future__ import annotations

from typing import Union

import numpy as np

Seed = Union[int, np.random.Generator]


def as_features(x, name: str) -> np.ndarray:
    """Checks a feature set (``[N, F]``, N >= 2, finite) -> float64 array; errors name ``name``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected features of shape [N, F], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 examples, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: features contain NaN or inf")
    return x


def feature_pair(real_features, fake_features) -> tuple[np.ndarray, np.ndarray]:
    """Checks two feature sets ``[N, F]``, ``[M, F]`` (finite, same ``F``) -> float64 arrays."""
    r = as_features(real_features, "real_features")
    g = as_features(fake_features, "fake_features")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"feature sizes differ: real {r.shape} vs fake {g.shape}")
    return r, g


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set (Heusel et al. 2017, Sec. 3).

    Args:
      features: ``[N, F]``, ``N >= 2``.

    Returns:
      ``(mu [F], sigma [F, F])`` in float64; ``sigma`` uses the ``1 / (N - 1)`` normalisation.
    """
    f = as_features(features, "features")
    mu = f.mean(axis=0)
    sigma = np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])
    return mu, sigma


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root through ``eigh``, clipping tiny negative eigenvalues."""
    w, v = np.linalg.eigh(s)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` (Dowson & Landau 1982; used as
    FID by Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a
    local Nash equilibrium", Sec. 3).

    ``Tr (S1 S2)^{1/2}`` is computed without ``scipy.linalg.sqrtm``: ``S1 S2`` is similar to
    the symmetric PSD matrix ``M = S1^{1/2} S2 S1^{1/2}``, so its square root has trace
    ``sum_i sqrt(lambda_i(M))``; ``M`` is symmetrised and eigenvalues below zero (rounding)
    are clipped to zero. This is stable for singular covariances (``N < F``).

    Args:
      mu1, mu2: ``[F]`` means.
      sigma1, sigma2: ``[F, F]`` symmetric PSD covariances.

    Returns:
      the squared Frechet distance (a Python float, ``>= 0`` up to rounding).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    f = mu1.shape[0]
    for name, arr, shape in (("mu1", mu1, (f,)), ("mu2", mu2, (f,)),
                             ("sigma1", s1, (f, f)), ("sigma2", s2, (f, f))):
        if arr.shape != shape:
            raise ValueError(f"frechet_distance: {name} has shape {arr.shape}, expected {shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"frechet_distance: {name} contains NaN or inf")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    m = 0.5 * (m + m.T)
    eig = np.linalg.eigvalsh(m)
    tol = max(float(eig.max(initial=0.0)), 0.0) * f * np.finfo(np.float64).eps
    eig = np.where(eig > tol, eig, 0.0)
    tr_covmean = float(np.sum(np.sqrt(eig)))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(real_features, fake_features) -> float:
    """FID between two feature sets (Heusel et al. 2017, Sec. 3).

    Args:
      real_features: ``[N, F]``.
      fake_features: ``[M, F]``.

    Returns:
      ``frechet_distance`` of the two Gaussian fits (float).
    """
    r, g = feature_pair(real_features, fake_features)
    return frechet_distance(*gaussian_statistics(r), *gaussian_statistics(g))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID kernel ``k(x, y) = (x . y / d + 1)^3`` (Binkowski et al. 2018, Sec. 3); ``[n, m]``."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices (Gretton et al. 2012, Eq. 3).

    ``1/(m(m-1)) sum_{i != j} kxx + 1/(n(n-1)) sum_{i != j} kyy - 2/(mn) sum kxy`` with
    ``kxx [m, m]``, ``kyy [n, n]``, ``kxy [m, n]``.
    """
    m, n = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kernel_inception_distance(real_features, fake_features, num_subsets: int = 100,
                              subset_size: int = 1000, seed: Seed = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", Sec. 3).

    The unbiased MMD^2 estimator (Gretton et al. 2012, Eq. 3) with the cubic polynomial
    kernel ``k(x, y) = (x . y / d + 1)^3``, averaged over ``num_subsets`` pairs of random
    subsets (drawn without replacement) of ``min(subset_size, N, M)`` examples each. The
    estimator is unbiased, so it can be slightly negative when both sets come from one
    distribution.

    Args:
      real_features: ``[N, F]``.
      fake_features: ``[M, F]``.
      num_subsets: number of subset pairs.
      subset_size: examples per subset (clipped to the smaller set).
      seed: an int seed or a ``np.random.Generator`` choosing the subsets.

    Returns:
      ``(mean, std)`` of the per-subset MMD^2 values.
    """
    r, g = feature_pair(real_features, fake_features)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    m = min(subset_size, r.shape[0], g.shape[0])
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = r[rng.choice(r.shape[0], m, replace=False)]
        y = g[rng.choice(g.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased_from_kernels(
            polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    return float(values.mean()), float(values.std())
