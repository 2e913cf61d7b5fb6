"""CLIP-guided edits of a shapes GAN: per-example latent optimization and a global direction, judged by the shapes feature network.

    python -m experiments.benchmarks.clip_editing --gan_workdir runs/dcgan_shapes --clip_workdir runs/clip_shapes [--out DIR]

Loads the trained ``dcgan_shapes`` generator (its best checkpoint by FID, EMA weights, running
batch statistics) and the trained ``clip_shapes`` embedder, draws ``--num_latents`` latents and
reads each sample's factors (shape, colour, size, x, y) with the shapes feature network's heads
(:func:`experiments.bakeoff.shapes_factor_predictor`). For each edit of :data:`EDITS` (one
factor changed, e.g. colour red -> blue) it takes up to ``--per_edit`` latents read as the source
value whose edited (shape, colour) is a training combination, and edits them toward the caption
of their own factors with the one factor changed (``gen_jax.data.shapes.caption_for``, token
ids by the dataset's ``WordTokenizer``):

* **per example** (StyleCLIP latent optimization, Patashnik et al. 2021, Eq. 1):
  :func:`gen_jax.gan.clip_editing.optimize_latents`, ``--steps`` Adam steps, ``--l2_weight``;
* **global direction**: one unit ``d`` fitted on the first half of the latents
  (:func:`gen_jax.gan.clip_editing.global_direction`, the directional variant: target = the
  prompt ensemble of the target captions, source = that of the source captions), applied as
  ``z + alpha d`` to the other half (held out from the fit) at ``alpha`` in ``--alphas``.

Printed per edit and method: ``success`` (the fraction of edits whose target factor the feature
network reads as the requested value), ``kept`` (all other factors unchanged), ``both``, the CLIP
similarity to the target caption before -> after, and the mean latent distance ``|z - z0|``.
Writes ``edits.png`` (per edit three rows of 8: the start samples, the per-example edits, the
direction's edits at the middle alpha) and ``results.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.data import shapes as S
from gen_jax.gan import clip_editing as ce

# (name, factor column in gen_jax.data.shapes.FACTORS, source value, target value)
EDITS = (
    ("colour red -> blue", 1, S.COLOURS.index("red"), S.COLOURS.index("blue")),
    ("colour green -> yellow", 1, S.COLOURS.index("green"), S.COLOURS.index("yellow")),
    ("shape circle -> square", 0, S.SHAPES.index("circle"), S.SHAPES.index("square")),
    ("shape triangle -> diamond", 0, S.SHAPES.index("triangle"), S.SHAPES.index("diamond")),
)
GRID_COLS = 8


def _captions(factors: np.ndarray) -> list[str]:
    return [S.caption_for(*(int(v) for v in f)) for f in factors]


def _edited(factors: np.ndarray, factor: int, value: int) -> np.ndarray:
    out = factors.copy()
    out[:, factor] = value
    return out


def select(factors: np.ndarray, factor: int, src: int, dst: int, limit: int) -> np.ndarray:
    """Indices (at most ``limit``) of latents read as ``src`` in column ``factor`` whose edited
    (shape, colour) is a combination of the training split."""
    allowed = set(S.allowed_combos(False))
    new = _edited(factors, factor, dst)
    ok = (factors[:, factor] == src) & np.array([(int(s), int(c)) in allowed for s, c in new[:, :2]])
    return np.flatnonzero(ok)[:limit]


def _row(name: str, scores: dict, sim0, sim1, dist) -> dict:
    return {"method": name, **scores, "sim_before": float(np.mean(sim0)), "sim_after": float(np.mean(sim1)),
            "latent_distance": float(np.mean(dist))}


def _print(edit: str, r: dict) -> None:
    print(f"  {edit:26s} {r['method']:24s} n={r['n']:3d}  success {r['success']:.3f}  kept {r['kept']:.3f}  "
          f"both {r['both']:.3f}  CLIP sim {r['sim_before']:.3f} -> {r['sim_after']:.3f}  "
          f"|z - z0| {r['latent_distance']:.2f}", flush=True)


def run(generate, z_dim: int, embedder, clip_params, predict, tokenize, *, num_latents: int = 2048,
        per_edit: int = 64, steps: int = 100, learning_rate: float = 0.05, l2_weight: float = 0.01,
        dir_steps: int = 100, dir_learning_rate: float = 0.05, alphas=(2.0, 4.0, 6.0), seed: int = 0,
        out: str = "") -> list[dict]:
    """The benchmark on given parts: ``generate(z [N, Z]) -> [N, 32, 32, 3]`` (jitted),
    ``embedder`` / ``clip_params`` (an :class:`~gen_jax.model.Embedder`), ``predict(images) ->
    int [N, 5]`` (the factor heads), ``tokenize(list[str]) -> int [N, L]``. Returns the rows."""
    kz, kd = jax.random.split(jax.random.PRNGKey(seed))
    z_all = jax.random.normal(kz, (num_latents, z_dim), jnp.float32)
    x_all = np.concatenate([np.asarray(generate(z_all[s:s + 256])) for s in range(0, num_latents, 256)])
    f_all = predict(x_all)
    print(f"{num_latents} samples read by the shapes feature network: shape histogram "
          f"{np.bincount(f_all[:, 0], minlength=len(S.SHAPES)).tolist()}, colour histogram "
          f"{np.bincount(f_all[:, 1], minlength=len(S.COLOURS)).tolist()}", flush=True)
    sim_fn = jax.jit(lambda x, t: ce.clip_similarity(embedder, clip_params, x, t))
    alpha_mid = float(alphas[len(alphas) // 2])
    rows, grid = [], []
    for name, factor, src, dst in EDITS:
        idx = select(f_all, factor, src, dst, per_edit)
        if len(idx) < 4:
            print(f"  {name}: only {len(idx)} latents read as {S.FACTORS[factor]} {src}; skipped", flush=True)
            continue
        z0, x0, f0 = z_all[idx], x_all[idx], f_all[idx]
        target = _edited(f0, factor, dst)
        t_tok = jnp.asarray(tokenize(_captions(target)))
        s_tok = jnp.asarray(tokenize(_captions(f0)))
        sim0 = np.asarray(sim_fn(jnp.asarray(x0), t_tok))

        t0 = time.time()
        res = ce.optimize_latents(generate, embedder, clip_params, z0, t_tok, steps=steps,
                                  learning_rate=learning_rate, l2_weight=l2_weight)
        x1 = np.asarray(generate(res.z))
        f1 = predict(x1)
        r = _row(f"per-example ({steps} steps)", ce.factor_edit_scores(f0, f1, factor, dst), sim0,
                 np.asarray(res.similarity[-1]), np.asarray(ce.latent_distance(z0, res.z)))
        r.update(edit=name, seconds=round(time.time() - t0, 1))
        _print(name, r)
        rows.append(r)

        half = len(idx) // 2
        t0 = time.time()
        dres = ce.global_direction(generate, embedder, clip_params, z0[:half], np.unique(np.asarray(t_tok), axis=0),
                                   source_tokens=np.unique(np.asarray(s_tok), axis=0), alpha=alpha_mid,
                                   steps=dir_steps, learning_rate=dir_learning_rate, key=kd)
        fit_seconds = round(time.time() - t0, 1)
        zh, fh = z0[half:], f0[half:]
        for alpha in alphas:
            z2 = ce.apply_direction(zh, dres.direction, alpha)
            x2 = np.asarray(generate(z2))
            r = _row(f"direction alpha={alpha:g} (held out)",
                     ce.factor_edit_scores(fh, predict(x2), factor, dst), sim0[half:],
                     np.asarray(sim_fn(jnp.asarray(x2), t_tok[half:])), np.full(len(zh), alpha))
            r.update(edit=name, fit_seconds=fit_seconds, fit_objective=float(dres.objective[-1]),
                     fit_objective_start=float(dres.objective[0]))
            _print(name, r)
            rows.append(r)
            if alpha == alpha_mid:
                x_dir = x2
        k = min(GRID_COLS, len(idx) - half)
        grid += [x0[half:half + k], x1[half:half + k], x_dir[:k]]
        if k < GRID_COLS:
            grid = [np.concatenate([g, np.zeros((GRID_COLS - len(g),) + g.shape[1:], g.dtype)]) if len(g) < GRID_COLS
                    else g for g in grid]
    if out:
        from gen_jax.viz import save_grid

        os.makedirs(out, exist_ok=True)
        if grid:
            save_grid(os.path.join(out, "edits.png"), np.concatenate(grid), ncols=GRID_COLS)
        with open(os.path.join(out, "results.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
        print(f"wrote {out}/edits.png (per edit: start / per-example edit / direction at alpha={alpha_mid:g}, "
              f"the held-out latents) and {out}/results.json", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gan_workdir", required=True)
    p.add_argument("--clip_workdir", required=True)
    p.add_argument("--gan_config", default="dcgan_shapes")
    p.add_argument("--clip_config", default="clip_shapes")
    p.add_argument("--out", default="results/benchmarks/clip_editing")
    p.add_argument("--num_latents", type=int, default=2048)
    p.add_argument("--per_edit", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--l2_weight", type=float, default=0.01)
    p.add_argument("--dir_steps", type=int, default=100)
    p.add_argument("--dir_learning_rate", type=float, default=0.05)
    p.add_argument("--alphas", default="2,4,6")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    from experiments import common
    from experiments.bakeoff import shapes_factor_predictor
    from gen_jax.data.datasets import get_tokenizer
    from gen_jax.train.loop import eval_params

    for flag, path in (("--gan_workdir", a.gan_workdir), ("--clip_workdir", a.clip_workdir)):
        if not os.path.isdir(os.path.join(common.resolve_workdir(path), "checkpoints")):
            common.fail(f"{flag}: no checkpoints in {path}")
    gexp = common.load_experiment(a.gan_config)
    ginfo, gmodel, _ = common.setup(gexp)
    if gmodel.codec is None or gmodel.conditional or gexp.dataset.name != "shapes":
        common.fail(f"--gan_config {a.gan_config}: needs an unconditional GAN on shapes")
    gstate, _, which = common.restore_for_eval(gexp, gmodel, common.resolve_workdir(a.gan_workdir), ginfo)
    gparams = eval_params(gstate, gmodel)
    print(f"GAN {a.gan_config} from {a.gan_workdir} ({which})", flush=True)
    cexp = common.load_experiment(a.clip_config)
    cinfo, cmodel, _ = common.setup(cexp)
    if cmodel.embedder is None:
        common.fail(f"--clip_config {a.clip_config}: the model has no embedder")
    cstate, _, cwhich = common.restore_for_eval(cexp, cmodel, common.resolve_workdir(a.clip_workdir), cinfo)
    cparams = eval_params(cstate, cmodel)
    print(f"CLIP {a.clip_config} from {a.clip_workdir} ({cwhich})", flush=True)
    predict = shapes_factor_predictor(common.feature_extractor("shapes", None))
    tok = get_tokenizer("shapes")
    generate = jax.jit(lambda z: gmodel.codec.decode(gparams, z))
    t0 = time.time()
    run(generate, int(gexp.model.z_dim), cmodel.embedder, cparams, predict,
        lambda texts: tok.encode(texts, cinfo.caption_len), num_latents=a.num_latents, per_edit=a.per_edit,
        steps=a.steps, learning_rate=a.learning_rate, l2_weight=a.l2_weight, dir_steps=a.dir_steps,
        dir_learning_rate=a.dir_learning_rate, alphas=tuple(float(v) for v in a.alphas.split(",")), seed=a.seed,
        out=a.out)
    print(f"total {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
