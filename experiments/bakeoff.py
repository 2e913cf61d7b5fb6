"""The main job (``make demo``): every family on the embedded digits, one comparison table.

    python -m experiments.bakeoff --out results/demo [--only vae_digits,gmm_digits]

For each config in :data:`BAKEOFF`, trains it (or resumes its finished run) in
``<out>/runs/<model>/``, scores 1000 samples against the digits test split on the digits
feature network, and writes into ``<out>/``:

* ``table.json`` (a list of rows: model, family, test_bpd, bpd_kind, fid, kid, precision,
  recall, inception_score, train_seconds, sample_seconds, samples, labels) and ``table.md``;
* ``samples/<model>.npy`` (float32 (1000, 8, 8, 1) in [0, 1]) and ``samples/<model>_labels.npy``
  for conditional models; ``samples/<model>.png`` grids; ``curves/<model>.png`` loss curves;
* a ``real-vs-real`` row: 1000 train images scored the same way (the floor of every metric).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

from experiments import common
from gen_jax.evaluation.evaluate import evaluate_params
from gen_jax.evaluation.likelihood import images01

# (config name, extra overrides) in table order. Later families append their configs here.
BAKEOFF: list[tuple[str, dict]] = [
    ("gmm_digits", {}),
    ("autoencoder_digits", {}),
    ("vae_digits", {}),
    ("beta_vae_digits", {}),
    ("iwae_digits", {}),
    ("cvae_digits", {}),
    ("ldm_digits", {"stages.stage1.workdir": "{out}/runs/vae"}),  # stage one: the vae row's run
    ("ddpm_digits", {}),
    ("ddpm_digits", {"model.sampler": "ddim", "model.sample_steps": 50}),
    ("realnvp_digits", {}),
    ("glow_digits", {}),
    ("glow_digits_cond", {}),
    ("pixelcnn_digits", {}),
    ("gated_pixelcnn_digits", {}),
    ("pixelrnn_digits", {}),
    ("pixelcnnpp_digits", {}),
    ("image_transformer_digits", {}),
]

# Rows that evaluate another row's trained run with other sampling settings: row -> run.
ROW_NAMES = {("ddpm_digits", "ddim"): "ddim50"}
RUN_OF = {"ddim50": "ddpm"}

COLUMNS = ("model", "family", "test_bpd", "bpd_kind", "fid", "kid", "precision", "recall",
           "inception_score", "train_seconds", "sample_seconds", "samples", "labels")


def _fmt(v, digits=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_tables(out: str, rows: list[dict]) -> None:
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = [c for c in COLUMNS if c not in ("samples", "labels")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    notes = ["", "test_bpd: bits/dim on the 360-image digits test split, uniform dequantization, "
             "K = 17 levels (README, Conventions); bpd_kind says whether it is exact or a bound.",
             "fid/kid/precision/recall/inception_score: 1000 samples against the test split on the "
             "digits classifier's features; the real-vs-real row is the floor at this sample size.",
             "train_seconds: wall time of training (compilation included) on this machine; "
             "sample_seconds: drawing 1000 samples after compilation."]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("# gen_jax bake-off on digits\n\n" + "\n".join(lines + notes) + "\n")


def run_one(name: str, overrides: dict, out: str, extractor, test, progress: bool) -> dict:
    from gen_jax.train.loop import eval_params, train
    from gen_jax.viz import save_grid

    import dataclasses

    overrides = {k: v.format(out=out) if isinstance(v, str) else v for k, v in overrides.items()}
    exp = common.load_experiment(name, overrides)
    info, model, mesh = common.setup(exp)
    row_name = ROW_NAMES.get((name, overrides.get("model.sampler")), name.removesuffix("_digits"))
    model = dataclasses.replace(model, name=row_name)
    workdir = os.path.join(out, "runs", RUN_OF.get(row_name, row_name))
    record = os.path.join(workdir, "train_seconds.json")
    if os.path.exists(record) and json.load(open(record)).get("steps") != exp.train.steps:
        shutil.rmtree(workdir)  # config changed: train again
    result = train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=progress, mesh=mesh)
    if result.resumed_from != exp.train.steps:  # trained now (fully or partly)
        prev = json.load(open(record))["seconds"] if os.path.exists(record) and result.resumed_from else 0.0
        json.dump({"seconds": prev + result.seconds, "steps": exp.train.steps}, open(record, "w"))
    train_seconds = json.load(open(record))["seconds"]
    ev = evaluate_params(model, eval_params(result.state, model), info, test, extractor,
                         num_samples=exp.eval.num_samples, batch_size=exp.eval.batch_size)
    row = {"model": model.name, "family": model.family, "train_seconds": train_seconds}
    row.update({k: v for k, v in ev.metrics.items() if k not in ("model", "family")})
    row["samples"] = row["labels"] = None
    if ev.samples is not None:
        rel = os.path.join("samples", f"{model.name}.npy")
        np.save(os.path.join(out, rel), ev.samples)
        save_grid(os.path.join(out, "samples", f"{model.name}.png"), ev.samples[:100], ncols=10)
        row["samples"] = rel
        if ev.labels is not None:
            rel_l = os.path.join("samples", f"{model.name}_labels.npy")
            np.save(os.path.join(out, rel_l), ev.labels)
            row["labels"] = rel_l
    curve = os.path.join(workdir, "loss_curve.png")
    if os.path.exists(curve):
        shutil.copy(curve, os.path.join(out, "curves", f"{model.name}.png"))
    return row


def floor_row(out: str, train_arrays: dict, test: dict, info, extractor, num: int = 1000) -> dict:
    """Real-vs-real: ``num`` train images (a fixed random subset) scored like samples."""
    from gen_jax.metrics.features import score_samples

    x = images01(train_arrays, info.num_levels)
    idx = np.random.default_rng(0).choice(len(x), size=min(num, len(x)), replace=False)
    scores = score_samples(x[idx], images01(test, info.num_levels), extractor, seed=0)
    row = {"model": "real-vs-real", "family": None, "test_bpd": None, "bpd_kind": None,
           "train_seconds": None, "sample_seconds": None, "samples": None, "labels": None}
    row.update({k: float(v) for k, v in scores.items()})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train and compare every model on digits.")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--only", default="", help="comma-separated config names (default: all)")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    from gen_jax.data.datasets import get_info, load_split

    t0 = time.time()
    out = args.out
    for sub in ("samples", "curves", "runs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    info = get_info("digits")
    train_arrays, test = load_split("digits", "train"), load_split("digits", "test")
    extractor = common.feature_extractor("digits", None, progress=not args.no_progress)
    only = [s for s in args.only.split(",") if s]
    rows = []
    for name, ov in BAKEOFF:
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        rows.append(run_one(name, ov, out, extractor, test, not args.no_progress))
        write_tables(out, rows)
    rows.append(floor_row(out, train_arrays, test, info, extractor))
    write_tables(out, rows)
    print(open(os.path.join(out, "table.md")).read())
    print(f"bake-off finished in {time.time() - t0:.1f} s; tables in {out}/table.md and table.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
