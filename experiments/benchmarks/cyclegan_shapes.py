"""CycleGAN on shapes: does A -> B change the shape and keep the rest? Cycle L1 both ways.

    python -m experiments.benchmarks.cyclegan_shapes --workdir runs/cyclegan_shapes [--config cyclegan_shapes]

Translates every test-split image of domain A (circles) with ``G`` (the sampler) and every one of
domain B (squares) with ``F`` (``CycleGANFunctions.translate_ba``) and prints, for each
direction, the fraction of outputs whose measured factors are the targets: the other domain's
shape, and the source's colour, size, x and y (and all five at once); and the cycle L1
``mean |F(G(a)) - a|`` / ``mean |G(F(b)) - b|`` on ``[0, 1]`` images.

The factors are measured by :func:`measure_factors`, an analytic check independent of any
trained network, whose accuracy on the real test images is printed first (it must be ~1 for the
figures to mean anything):

* colour: the mean RGB of the bright pixels (max channel above half the image's maximum), nearest
  :data:`gen_jax.data.shapes.COLOUR_RGB`;
* coverage: each pixel's projection on that colour, clipped to [0, 1];
* x, y: the coverage-weighted centroid, nearest of the region centres (9.5, 16, 22.5 px);
* shape: the shape whose rendering (:func:`gen_jax.data.shapes.render`) at that centroid, with the
  radius that gives the measured area (sum of coverage), is nearest the coverage in L2;
* size: that radius above or below 6 px (small 4.5, large 7.5).

The colour is also reported over the sources whose colour the target domain has (in the train
split) and over the others: the shapes dataset holds out one colour per shape (no blue circle,
no yellow square, :data:`gen_jax.data.shapes.HELDOUT_COMBOS`), so a translation that matches
the target domain's distribution, what the adversarial loss asks for, must recolour the yellow
circles (and, B -> A, the blue squares): a fifth of each domain.

Writes ``--out``/``a2b.png`` (sources, outputs, cycles) and ``b2a.png``.
"""
from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from experiments import common
from gen_jax.data import shapes as S
from gen_jax.gan.cyclegan import build_cyclegan
from gen_jax.train.loop import eval_params

# area / r^2 of each shape of gen_jax.data.shapes (circle, square of half-side 0.85 r, the
# equilateral triangle of circumradius r, the diamond of vertex distance r, the cross of arm r
# and half-width 0.33 r)
AREA_PER_R2 = np.array([np.pi, 1.7 ** 2, 3 * np.sqrt(3) / 4, 2.0, 2 * 2 * 0.66 - 0.66 ** 2])
SIZE_THRESHOLD = 0.5 * sum(S.RADII)


def _coverage(x: np.ndarray, colour: np.ndarray) -> np.ndarray:
    rgb = S.COLOUR_RGB[colour] / 255.0  # [N, 3]
    return np.clip(np.einsum("nhwc,nc->nhw", x, rgb) / np.sum(rgb * rgb, -1)[:, None, None], 0.0, 1.0)


def measure_factors(x: np.ndarray) -> np.ndarray:
    """int ``[N, 5]`` (shape, colour, size, x, y ids, :data:`gen_jax.data.shapes.FACTORS` order)
    measured from images ``[N, 32, 32, 3]`` in [0, 1] (module docstring)."""
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    v = x.max(-1)
    bright = v > 0.5 * v.reshape(n, -1).max(-1)[:, None, None]
    mean_rgb = (x * bright[..., None]).sum((1, 2)) / np.maximum(bright.sum((1, 2)), 1)[:, None]
    colour = np.argmin(((mean_rgb[:, None, :] - S.COLOUR_RGB[None] / 255.0) ** 2).sum(-1), -1)
    cov = _coverage(x, colour)
    grid = np.arange(S.IMAGE_SIZE, dtype=np.float32) + 0.5
    mass = np.maximum(cov.sum((1, 2)), 1e-6)
    cx = (cov.sum(1) * grid).sum(-1) / mass
    cy = (cov.sum(2) * grid).sum(-1) / mass
    centres = np.asarray(S.CENTRES)
    fx, fy = (np.argmin(np.abs(c[:, None] - centres[None]), -1) for c in (cx, cy))
    errors, radii = [], []
    for s in range(len(S.SHAPES)):
        r = np.sqrt(mass / AREA_PER_R2[s])
        t = S.render(np.full(n, s), np.zeros(n, np.int32), cx, cy, r)[..., 0] / S.COLOUR_RGB[0, 0]
        errors.append(((t - cov) ** 2).sum((1, 2)))
        radii.append(r)
    shape = np.argmin(np.stack(errors, -1), -1)
    size = (np.stack(radii, -1)[np.arange(n), shape] > SIZE_THRESHOLD).astype(np.int64)
    return np.stack([shape, colour, size, fx, fy], -1).astype(np.int64)


def factor_table(measured: np.ndarray, target: np.ndarray) -> dict:
    """Fraction of rows whose measured factor equals the target, per factor and for all five."""
    hit = measured == target
    out = {f: float(hit[:, i].mean()) for i, f in enumerate(S.FACTORS)}
    out["all"] = float(hit.all(-1).mean())
    return out


def colour_breakdown(measured: np.ndarray, target: np.ndarray, shared: np.ndarray) -> dict:
    """Colour kept over the sources whose colour the target domain also has (``shared``, colour
    ids) and over the others, and ``{source colour: histogram of measured colours}``."""
    inside = np.isin(target[:, 1], shared)
    kept = measured[:, 1] == target[:, 1]
    hist = {S.COLOURS[c]: np.bincount(measured[target[:, 1] == c, 1], minlength=len(S.COLOURS)).tolist()
            for c in np.unique(target[:, 1])}
    return {"colour_shared": float(kept[inside].mean()) if inside.any() else None,
            "colour_unshared": float(kept[~inside].mean()) if (~inside).any() else None,
            "colour_histograms": hist}


def true_factors(test: dict, rows: np.ndarray) -> np.ndarray:
    return np.stack([test[f][rows] for f in S.FACTORS], -1).astype(np.int64)


def _batched(fn, params, x, bs=200):
    jfn = jax.jit(fn)
    return np.concatenate([np.asarray(jfn(params, x[i:i + bs])) for i in range(0, len(x), bs)], 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="cyclegan_shapes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="")
    p.add_argument("--step", type=int, default=None)
    args = p.parse_args(argv)
    exp = common.load_experiment(args.config)
    info, _, _ = common.setup(exp)
    model, fns = build_cyclegan(exp.model, info)
    workdir = common.resolve_workdir(args.workdir)
    state, _ = common.restore_state(exp, model, workdir, info, step=args.step)
    params = eval_params(state, model)
    from gen_jax.data.datasets import load_split

    test = load_split(exp.dataset.name, "test", common.data_dir(exp))
    train_split = load_split(exp.dataset.name, "train", common.data_dir(exp))
    images = test["image"].astype(np.float32) / 255.0
    all_rows = np.arange(len(images))
    res = {"step": int(state.step),
           "measure_on_real_test": factor_table(measure_factors(images), true_factors(test, all_rows))}
    out = args.out or os.path.join(workdir, "cyclegan_eval")
    os.makedirs(out, exist_ok=True)
    a, b = exp.model.domain_a, exp.model.domain_b
    for name, src, dst, fwd, back in (("a2b", a, b, fns.translate_ab, fns.translate_ba),
                                      ("b2a", b, a, fns.translate_ba, fns.translate_ab)):
        member = test["label"] == src
        if exp.model.get("keep_factor"):  # the domains of a restricted config (e.g. the shared colours)
            member &= np.isin(test[exp.model.keep_factor], np.asarray(exp.model.keep_values))
        rows = np.flatnonzero(member)
        x = images[rows]
        y = _batched(fwd, params, x)
        cyc = _batched(back, params, y)
        target = true_factors(test, rows)
        target[:, 0] = dst
        measured = measure_factors(y)
        shared = np.unique(train_split["colour"][train_split["label"] == dst])
        res[name] = {"num": int(len(rows)), **factor_table(measured, target),
                     **colour_breakdown(measured, target, shared), "cycle_l1": float(np.abs(cyc - x).mean())}
        from gen_jax.viz import save_grid

        k = 12
        save_grid(os.path.join(out, f"{name}.png"), np.concatenate([x[:k], y[:k], cyc[:k]], 0))
    print(json.dumps(res))
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
