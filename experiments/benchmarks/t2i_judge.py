"""The judges of the text-to-image benchmarks on shapes (dalle_shapes, unclip_shapes,
ldm_shapes_caption): per-factor accuracy of the factors read from generated images against the
factors their captions ask for, both by the shapes feature network's factor heads and by the
analytic check of :func:`experiments.benchmarks.cyclegan_shapes.measure_factors` (no trained
network), on the judges' own ceiling (the real images of the same rows), and the shared table.
"""
from __future__ import annotations

import json
import os

import numpy as np

from experiments.benchmarks.cyclegan_shapes import measure_factors
from gen_jax.data import image_pairs
from gen_jax.data.shapes import FACTORS


def accuracy(pred: np.ndarray, factors: np.ndarray) -> dict:
    """Per-factor accuracy of predicted vs requested factors (int ``[N, 5]`` in :data:`FACTORS`
    order), ``shape+colour`` (both right) and ``all`` (all five -- shape, colour, size, x, y -- right)."""
    right = np.asarray(pred) == np.asarray(factors)
    out = {f: float(right[:, i].mean()) for i, f in enumerate(FACTORS)}
    out["shape+colour"] = float((right[:, 0] & right[:, 1]).mean())
    out["all"] = float(right.all(1).mean())
    return out


def judged(x: np.ndarray, factors: np.ndarray, predictor) -> tuple[dict, dict]:
    """``(feature network, analytic)`` :func:`accuracy` of images ``x [N, 32, 32, 3]`` in [0, 1]."""
    return accuracy(np.asarray(predictor(x)), factors), accuracy(measure_factors(x), factors)


def real_images_row(splits: dict, num: int, predictor) -> dict:
    """Both judges on the real images of the rows whose captions are asked for (their ceiling):
    ``row[split]`` (feature network) and ``row[split + '_analytic']``."""
    row = {"setting": "real images (judge ceiling)"}
    for split, arrays in splits.items():
        rows = image_pairs.first_rows(arrays, num)
        x = np.asarray(arrays["image"])[rows].astype(np.float32) / 255.0
        row[split], row[f"{split}_analytic"] = judged(x, image_pairs.split_factors(arrays, rows), predictor)
    return row


def print_table(rows: list, cols=(*FACTORS, "shape+colour", "all"), width: int = 40) -> None:
    """The test columns ``cols`` and the heldout shape / colour / shape+colour of each row, once per judge."""
    for judge, suffix in (("feature network", ""), ("analytic check", "_analytic")):
        print(f"\njudge: {judge}\n{'setting':{width}s} " + " ".join(f"{c:>8s}" for c in cols)
              + "  heldout: shape  colour  shape+colour")
        for r in rows:
            h = r["heldout" + suffix]
            print(f"{r['setting']:{width}s} " + " ".join(f"{r['test' + suffix][c]:8.3f}" for c in cols)
                  + f"  {h['shape']:13.3f} {h['colour']:7.3f} {h['shape+colour']:13.3f}")


def write_figures(workdir: str, name: str, res: dict) -> str:
    """``<workdir>/<name>/figures.json``; returns its path."""
    out = os.path.join(workdir, name)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "figures.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    return path
