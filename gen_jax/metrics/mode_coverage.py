"""Mode coverage of samples from a mixture of isotropic Gaussians (the 2-D GAN benchmarks).

The ring-of-8 and grid-of-25 benchmarks of VEEGAN (Srivastava et al. 2017, Sec. 5.1) and
PacGAN (Lin et al. 2018, Sec. 5.1, Table 1): a sample is **high quality** when it lies within
``threshold`` standard deviations of its nearest mode, and a mode is **covered** when it is the
nearest mode of at least one high-quality sample (PacGAN counts a mode as recovered with at
least one such sample).

Shapes: ``samples [N, D]``, ``modes [M, D]``; ``std`` the common standard deviation of the
components.
"""
from __future__ import annotations

import math

import numpy as np


def ring_modes(num: int = 8, radius: float = 1.0) -> np.ndarray:
    """``[num, 2]`` means evenly spaced on a circle (the ring of 8: radius 1, std 0.01)."""
    a = 2.0 * math.pi * np.arange(num) / num
    return radius * np.stack([np.cos(a), np.sin(a)], axis=-1)


def grid_modes(values=(-4.0, -2.0, 0.0, 2.0, 4.0)) -> np.ndarray:
    """``[len(values)^2, 2]`` means on a square grid (the grid of 25: std 0.05)."""
    v = np.asarray(values, np.float64)
    return np.stack(np.meshgrid(v, v, indexing="ij"), axis=-1).reshape(-1, 2)


def mode_coverage(samples, modes, std: float, threshold: float = 3.0) -> dict:
    """``{'modes_covered': int, 'num_modes': M, 'high_quality': fraction in [0, 1],
    'per_mode': int [M] high-quality samples per mode}`` (see the module docstring)."""
    x = np.asarray(samples, np.float64)
    m = np.asarray(modes, np.float64)
    if x.ndim != 2 or m.ndim != 2 or x.shape[1] != m.shape[1]:
        raise ValueError(f"mode_coverage: samples [N, D] and modes [M, D] must share D, got {x.shape} and {m.shape}")
    if not std > 0 or not threshold > 0:
        raise ValueError(f"mode_coverage: std and threshold must be > 0, got std={std}, threshold={threshold}")
    d2 = np.sum(np.square(x[:, None, :] - m[None, :, :]), axis=-1)  # [N, M]
    nearest = np.argmin(d2, axis=1)
    good = np.sqrt(d2[np.arange(len(x)), nearest]) <= threshold * std
    per_mode = np.bincount(nearest[good], minlength=len(m))
    return {"modes_covered": int(np.sum(per_mode > 0)), "num_modes": int(len(m)),
            "high_quality": float(np.mean(good)) if len(x) else 0.0, "per_mode": per_mode}
