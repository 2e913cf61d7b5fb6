"""Sample grids and loss curves as PNG (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np


def make_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """Tiles images ``[N, H, W, C]`` (or ``[R, Cols, H, W, C]``) in [0, 1] into one
    ``[H', W', C]`` array with ``pad`` pixels of white between tiles."""
    images = np.asarray(images, np.float32)
    if images.ndim == 5:
        rows, ncols = images.shape[:2]
        images = images.reshape((-1,) + images.shape[2:])
    if images.ndim != 4:
        raise ValueError(f"make_grid: expected [N, H, W, C] images, got shape {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return np.clip(grid, 0.0, 1.0)


def save_grid(path: str, images: np.ndarray, ncols: Optional[int] = None, scale: int = 4) -> str:
    """Writes a grid of ``images`` (see :func:`make_grid`) as a PNG, upscaled ``scale`` x."""
    from PIL import Image

    grid = make_grid(images, ncols)
    grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
    arr = (grid * 255 + 0.5).astype(np.uint8)
    arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_curves(path: str, records: Sequence[Mapping[str, float]], keys: Sequence[str],
                title: str = "") -> str:
    """Plots ``keys`` of metric records (each with ``step``) against step into a PNG.

    Draws on a standalone Agg canvas: the process's matplotlib backend (e.g. a notebook's
    inline backend) is left as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * len(keys), 3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(keys), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in records if k in r]
        if pts:
            s, v = zip(*pts)
            ax.plot(s, v)
        ax.set_xlabel("step")
        ax.set_title(k)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
