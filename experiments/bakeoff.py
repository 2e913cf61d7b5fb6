"""The main job (``make demo``): every family on the embedded digits, one comparison table.

    python -m experiments.bakeoff --out results/demo                       # make demo: DEMO_ROWS
    python -m experiments.bakeoff --suite full --out results/bakeoff       # make bakeoff: every row
    python -m experiments.bakeoff --out results/x --only vae_digits,gmm_digits
    python -m experiments.bakeoff --out results/x --only pix2pix_shapes      # the shapes table only

For each config of the suite (``demo``: the flagship row of every family, :data:`DEMO_ROWS`;
``full``: :data:`BAKEOFF`), trains it (or resumes its finished run) in
``<out>/runs/<model>/``, scores 1000 samples against the digits test split on the digits
feature network, and writes into ``<out>/``:

* ``table.json`` (a list of rows: model, family, test_bpd, bpd_kind, fid, kid, precision,
  recall, inception_score, train_seconds, sample_seconds, samples, labels) and ``table.md``;
* ``samples/<model>.npy`` (float32 (1000, 8, 8, 1) in [0, 1]) and ``samples/<model>_labels.npy``
  for conditional models; ``samples/<model>.png`` grids; ``curves/<model>.png`` loss curves;
* a ``real-vs-real`` row: 1000 train images scored the same way (the floor of every metric),
  with ``samples/real-vs-real.png``, a grid of those images;
* ``shapes/`` for the shapes rows (:data:`SHAPES_BAKEOFF`; ``--suite full`` or ``--only``):
  ``table.json`` / ``table.md`` (:data:`SHAPES_COLUMNS`: FID/KID/precision/recall on the shapes
  feature network vs the shapes test split, per-attribute accuracy ``acc_<factor>``, ``l1`` to a
  paired target, ``sharpness``), ``samples/<model>.npy`` (float32 [1000, 32, 32, 3] in [0, 1])
  and ``samples/<model>_factors.npy`` (int [1000, 5], the factors each output should show, in
  :data:`gen_jax.data.shapes.FACTORS` order), for text-to-image rows ``samples/<model>_captions.json``
  (the 1000 test captions asked for) and ``_heldout.npy`` / ``_heldout_captions.json`` /
  ``_heldout_factors.npy`` for 1000 captions of the ``heldout`` combinations with their accuracy
  columns, and a shapes real-vs-real row (:func:`run_shapes`); a row's trained stages under
  ``<out>/shapes/runs/`` are trained first when missing;
* ``report.html`` (:func:`write_report`): one self-contained page (PNGs embedded as base64)
  with the table, each row's sample grid and loss curve beside the real-vs-real floor, and
  the shapes table when ``<out>/shapes/table.json`` exists.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import shutil
import sys
import time
from typing import Optional

import numpy as np

from experiments import common
from gen_jax.evaluation.evaluate import evaluate_params
from gen_jax.evaluation.likelihood import images01

# (config name, extra overrides, estimated seconds) in table order. The estimate is a fresh
# run's training plus evaluation on an idle 2-core CPU (the README's measured train seconds
# plus sampling and scoring); it is only what the bake-off announces at its start. Later
# families append their configs here.
BAKEOFF: list[tuple[str, dict, float]] = [
    ("gmm_digits", {}, 10),
    ("autoencoder_digits", {}, 15),
    ("vae_digits", {}, 25),
    ("beta_vae_digits", {}, 30),
    ("iwae_digits", {}, 55),
    ("cvae_digits", {}, 35),
    ("ldm_digits", {"stages.stage1.workdir": "{out}/runs/vae"}, 70),  # stage one: the vae row's run
    ("ddpm_digits", {}, 700),  # ~8 min of training, the full bound, DDPM-1000 sampling
    ("ddpm_digits", {"model.sampler": "ddim", "model.sample_steps": 50}, 180),  # the bound again
    ("ddpm_digits_unet", {}, 2700),  # the conv U-Net: ~18 min of training, the bound, DDPM-1000
    ("ddpm_digits_cfg", {}, 500),  # classifier-free guidance: label_accuracy of its samples
    ("realnvp_digits", {}, 190),
    ("glow_digits", {}, 45),
    ("glow_digits_cond", {}, 130),
    ("pixelcnn_digits", {}, 70),
    ("gated_pixelcnn_digits", {}, 70),
    ("pixelrnn_digits", {}, 165),
    ("pixelcnnpp_digits", {}, 225),
    ("image_transformer_digits", {}, 140),
    ("dcgan_digits", {}, 330),  # measured 316 s idle (6000 steps)
    ("wgan_gp_digits", {}, 450),  # 5 critic steps with the penalty's double backward per G step
    ("hinge_sn_digits", {}, 300),
    ("cgan_digits", {}, 300),
    ("began_digits", {}, 570),  # measured 556 s of training + 11 s scoring (12000 simultaneous steps)
]
FEATURE_NET_SECONDS = 30  # the digits feature network, trained on first use

# ``make demo``: the flagship row of every family that exists (the best sampler of each, as the
# full table ranks them), within 15 minutes on an idle 2-core CPU. ``make bakeoff`` runs BAKEOFF.
# The demo's DDPM trains 4000 steps instead of 8000 (its cosine schedule over 4000): measured
# 2026-12-02, test bound 2.014 bits/dim (8000 steps: 2.065), DDPM-1000 FID 3.43-3.48 (2.53).
# `make demo` measured on an idle 2-core CPU, fresh clone: 434 s (before the DCGAN row); the
# demo rows' estimates are that run's times.
DEMO_ROWS = ("gmm_digits", "vae_digits", "ddpm_digits", "glow_digits", "gated_pixelcnn_digits", "dcgan_digits")
DEMO_OVERRIDES = {"ddpm_digits": ({"train.steps": 4000}, 300)}  # measured 292 s (train 201 s)
SUITES = {"demo": [(name, *DEMO_OVERRIDES.get(name, (ov, est))) for name, ov, est in BAKEOFF
                   if name in DEMO_ROWS and not ov],
          "full": BAKEOFF}

# Rows that evaluate another row's trained run with other sampling settings: row -> run.
ROW_NAMES = {("ddpm_digits", "ddim"): "ddim50"}
RUN_OF = {"ddim50": "ddpm"}

COLUMNS = ("model", "family", "test_bpd", "bpd_kind", "fid", "kid", "precision", "recall", "label_accuracy", "class_kl",
           "nn_train_ratio", "inception_score", "train_seconds", "sample_seconds", "checkpoint", "samples", "labels")


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


def run_one(name: str, overrides: dict, out: str, extractor, test, progress: bool,
            done: Optional[dict] = None, train_arrays: Optional[dict] = None, row_name: Optional[str] = None,
            extras=None) -> dict:
    """Trains (or resumes) one row's run and scores it; ``done`` maps the rows finished so far
    by name, so that a row re-evaluating another row's run (ddim50 over ddpm) takes that row's
    test likelihood instead of computing the same bound again. With ``train_arrays`` (the train
    split) a config with ``train.eval_every`` tracks FID against it during training, a config
    with ``train.best_metric`` is scored at its best checkpoint, and every image row gets the
    memorization check (``nn_train_ratio``). ``extras(exp, model, params, row) -> dict`` adds
    fields from the evaluated params after the samples are written (the shapes table's caption rows)."""
    from gen_jax.train.loop import eval_params, train
    from gen_jax.viz import save_grid

    import dataclasses

    overrides = {k: v.format(out=out) if isinstance(v, str) else v for k, v in overrides.items()}
    exp = common.load_experiment(name, overrides)
    info, model, mesh = common.setup(exp)
    row_name = row_name or ROW_NAMES.get((name, overrides.get("model.sampler")), name.removesuffix("_digits"))
    model = dataclasses.replace(model, name=row_name)
    workdir = os.path.join(out, "runs", RUN_OF.get(row_name, row_name))
    record = os.path.join(workdir, "train_seconds.json")
    if os.path.exists(record) and json.load(open(record)).get("steps") != exp.train.steps:
        shutil.rmtree(workdir)  # config changed: train again
    # A row that re-evaluates another row's finished run with other sampling settings (ddim50
    # over the ddpm run) differs from that run's config only in how it samples: it trains nothing.
    reuses_run = row_name in RUN_OF
    # The best checkpoint, chosen on the train split (None without train.eval_every).
    evaluator = None if train_arrays is None else common.evaluator_for(exp, model, info, extractor=extractor,
                                                                       train_arrays=train_arrays)
    result = train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=progress, mesh=mesh,
                   allow_config_change=reuses_run, evaluator=evaluator)
    if result.resumed_from != exp.train.steps:  # trained now (fully or partly)
        prev = json.load(open(record))["seconds"] if os.path.exists(record) and result.resumed_from else 0.0
        json.dump({"seconds": prev + result.seconds, "steps": exp.train.steps}, open(record, "w"))
    train_seconds = json.load(open(record))["seconds"]
    base = (done or {}).get(RUN_OF.get(row_name, row_name)) if reuses_run else None
    state, which = result.state, "latest"
    if exp.train.best_metric:
        state, _, which = common.restore_for_eval(exp, model, workdir, info)
    params = eval_params(state, model)
    ev = evaluate_params(model, params, info, test, extractor,
                         num_samples=exp.eval.num_samples, batch_size=exp.eval.batch_size,
                         likelihood=base is None, train=train_arrays)
    row = {"model": model.name, "family": model.family, "train_seconds": train_seconds, "checkpoint": which,
           "step": int(state.step)}
    row.update({k: v for k, v in ev.metrics.items() if k not in ("model", "family")})
    if base is not None:  # the same params: the bound of the row that trained them
        row.update({k: base.get(k) for k in ("test_bpd", "bpd_kind")})
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
    if extras is not None:
        row.update(extras(exp, model, params, row))
    return row


def floor_row(out: str, train_arrays: dict, test: dict, info, extractor, num: int = 1000) -> dict:
    """Real-vs-real: ``num`` train images (a fixed random subset) scored like samples."""
    from gen_jax.metrics.features import score_samples

    x = images01(train_arrays, info.num_levels)
    idx = np.random.default_rng(0).choice(len(x), size=min(num, len(x)), replace=False)
    scores = score_samples(x[idx], images01(test, info.num_levels), extractor, seed=0)
    from gen_jax.viz import save_grid

    save_grid(os.path.join(out, "samples", "real-vs-real.png"), x[idx[:100]], ncols=10)
    row = {"model": "real-vs-real", "family": None, "test_bpd": None, "bpd_kind": None,
           "train_seconds": None, "sample_seconds": None, "samples": None, "labels": None}
    row.update({k: float(v) for k, v in scores.items()})
    return row


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60:02d} s"


def plan_line(todo: list[tuple[str, dict, float]]) -> str:
    """What the bake-off is about to do and how long fresh runs take (the per-row estimates of
    :data:`BAKEOFF`; finished runs in ``<out>/runs`` are reused and cost only their scoring)."""
    total = sum(est for _, _, est in todo) + FEATURE_NET_SECONDS
    rows = f"{len(todo)} row" + ("s" if len(todo) != 1 else "")
    return (f"bake-off: {rows} + the real-vs-real floor; about {_duration(total)} on an idle "
            f"2-core CPU for fresh runs (including ~{FEATURE_NET_SECONDS} s for the digits feature network "
            f"on first use); finished runs are reused")


# ----------------------------------------------------------------------------------------
# The shapes table: <out>/shapes/ (table.json, table.md, samples/, curves/, runs/).
# ----------------------------------------------------------------------------------------

# (config name, extra overrides, estimated seconds) of the shapes rows, in table order. A row
# is named by its config, or by the reserved key ``"row"`` of its overrides (not a config
# field: it names the second row of one config). An image-to-image row's inputs are its
# model's own conditioning draw over the test split and the factors its outputs should show
# come from the config's ``model.task``
# (:func:`gen_jax.data.image_pairs.target_factors`); a row without a task is judged against the
# factors of the test rows its conditions were drawn from (:func:`shapes_targets`). Estimates:
# measured train seconds under load (976 s, 147 s, 565 s) plus scoring.
SHAPES_BAKEOFF: list[tuple[str, dict, float]] = [
    ("pix2pix_shapes", {}, 1000),
    # The L1-only U-Net of Isola et al. Table 1: Pix2Pix without its adversary (sharpness baseline).
    ("pix2pix_shapes", {"row": "unet_l1_shapes", "model.adv_weight": 0.0}, 200),
    ("cyclegan_shapes", {}, 620),  # measured: 565 s of training + scoring, 10 min 10 s in all
    # Text-to-image (Ramesh et al. 2021): the prior over the vqvae_shapes tokenizer, trained
    # here first when <out>/shapes/runs/vqvae_shapes holds no checkpoint.
    ("dalle_shapes", {"stages.stage1.workdir": "{out}/runs/vqvae_shapes"}, 900),
    # Multimodal generation (issue 15). unCLIP (Ramesh et al. 2022): a diffusion prior over the
    # clip_shapes embeddings and a decoder over the vqvae_shapes latents; text-conditioned latent
    # diffusion (Rombach et al. 2022) over the same tokenizer, cross-attending to CLIP's text
    # tower; both stages trained here first when missing (CLIP: ~20 min under load).
    ("unclip_shapes", {"stages.clip.workdir": "{out}/runs/clip_shapes",
                       "stages.stage1.workdir": "{out}/runs/vqvae_shapes"}, 1300),
    ("ldm_shapes_caption", {"stages.stage1.workdir": "{out}/runs/vqvae_shapes",
                            "stages.text.workdir": "{out}/runs/clip_shapes"}, 1300),
    # Image-to-text (Tsimpoukelli et al. 2021): captions of every test/heldout image by a visual
    # prefix into the frozen caption_lm_shapes LM (255 s + 763 s measured under load).
    ("frozen_shapes", {"stages.lm.workdir": "{out}/runs/caption_lm_shapes"}, 1100),
    # Multimodal VAEs (Wu & Goodman 2018; Shi et al. 2019): caption -> image rows.
    ("mvae_shapes", {}, 1450),
    ("mmvae_shapes", {}, 900),
    # FactorVAE (Kim & Mnih 2018): unconditional, scored for FID and sharpness only.
    ("factorvae_shapes", {}, 650),
]
SHAPES_FACTOR_COLUMNS = tuple(f"acc_{f}" for f in ("shape", "colour", "size", "x", "y"))
SHAPES_COLUMNS = ("model", "family", "fid", "kid", "precision", "recall", *SHAPES_FACTOR_COLUMNS,
                  "heldout_acc_shape", "heldout_acc_colour", "heldout_acc_shape_colour", "l1", "sharpness",
                  "train_seconds", "sample_seconds", "checkpoint", "samples", "factors")
SHAPES_NUM = 1000


def shapes_row_name(name: str, overrides: dict) -> tuple[str, dict]:
    """``(row name, config overrides)`` of a shapes row (the reserved ``"row"`` key removed)."""
    ov = dict(overrides)
    return str(ov.pop("row", name)), ov


def gradient_energy(x: np.ndarray) -> float:
    """Mean finite-difference gradient magnitude of ``[N, H, W, C]`` images:
    ``mean sqrt(dx^2 + dy^2)`` over pixels (forward differences, the last row/column dropped)."""
    x = np.asarray(x, np.float64)
    dx, dy = x[:, :-1, 1:] - x[:, :-1, :-1], x[:, 1:, :-1] - x[:, :-1, :-1]
    return float(np.mean(np.sqrt(dx ** 2 + dy ** 2)))


def shapes_targets(task_name: Optional[str], test: dict, num: int, num_levels: int):
    """``(factors int [num, 5], target images [num, H, W, C] or None)`` for the ``num`` outputs
    of a shapes row: by its image-to-image task (``config.model.task``) when it has one, else the
    first ``num`` test rows (cycled), the rows conditions are drawn from."""
    from gen_jax.data import image_pairs

    if task_name:
        task = image_pairs.get_task(task_name)
        rows = np.asarray(task.rows(test, num))
        return task.factors(test, rows), task.targets(test, rows, num_levels)
    rows = image_pairs.first_rows(test, num)
    return image_pairs.split_factors(test, rows), None


def shapes_scores(samples: np.ndarray, factors: np.ndarray, targets: Optional[np.ndarray], predictor,
                  reference: np.ndarray) -> dict:
    """Per-attribute accuracy (the feature network's factor heads on ``samples`` vs ``factors``),
    ``l1`` to the paired ``targets`` (``None`` without), and ``sharpness``: the samples'
    :func:`gradient_energy` over that of the real images they should match (``targets``, else
    ``reference``): 1 for real images, below 1 for blur."""
    pred = np.asarray(predictor(samples))
    out = {col: float(np.mean(pred[:, i] == factors[:, i])) for i, col in enumerate(SHAPES_FACTOR_COLUMNS)}
    real = targets if targets is not None else reference
    out["l1"] = None if targets is None else float(np.mean(np.abs(samples - targets)))
    out["sharpness"] = gradient_energy(samples) / gradient_energy(real)
    return out


def write_shapes_tables(out: str, rows: list[dict]) -> None:
    """``<out>/table.json`` and ``table.md`` of the shapes rows (``out`` is ``<bake-off out>/shapes``)."""
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(rows, f, indent=1)
    cols = [c for c in SHAPES_COLUMNS if c not in ("samples", "factors")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    notes = ["", f"fid/kid/precision/recall: {SHAPES_NUM} outputs against the 2000-image shapes test split on the "
             "shapes feature network (classifier_shapes); acc_<factor>: the fraction of outputs whose factor the "
             "network's factor head reads as the one the output should show (samples/<model>_factors.npy); "
             "the real-vs-real row's are the heads' accuracy on the test split itself.",
             "heldout_acc_*: text-to-image rows only: the factor heads' accuracy on outputs for the captions of the "
             "heldout split's (shape, colour) combinations, never seen in training (samples/<model>_heldout.npy, "
             "_heldout_captions.json); shape_colour: both right.",
             "image-to-text rows (no image outputs: fid to sharpness '-'): acc_<factor> / heldout_acc_*: the fraction "
             "of the test / heldout images whose caption names their factor (gen_jax.data.shapes.parse_caption), "
             "captions in samples/<model>_captions.json / _heldout_captions.json as [{index, caption}].",
             "l1: mean |output - paired target| on [0, 1] (image-to-image rows with a paired target); sharpness: "
             "mean gradient magnitude of the outputs over that of the real images they should match (1 = as sharp "
             "as the data, < 1 = blurred)."]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("# gen_jax bake-off on shapes\n\n" + "\n".join(lines + notes) + "\n")


def shapes_floor_row(out: str, train_arrays: dict, test: dict, info, extractor, predictor) -> dict:
    """Real-vs-real on shapes (:func:`floor_row`) with the factor heads' accuracy on the test split."""
    from gen_jax.data import image_pairs

    row = floor_row(out, train_arrays, test, info, extractor, num=SHAPES_NUM)
    x = images01(test, info.num_levels)
    scores = shapes_scores(x, image_pairs.split_factors(test, np.arange(len(x))), None, predictor, x)
    row.update({k: v for k, v in scores.items() if k.startswith("acc_")})
    row.update(l1=None, sharpness=1.0, factors=None, checkpoint=None)
    return row


def caption_extras(base: str, test: dict, predictor):
    """``extras`` for :func:`run_one` (its ``extras``): the captions and ``heldout``-split outputs
    of a text-to-image shapes row (:func:`experiments.text2image_rows.caption_row_outputs`), the
    judged captions of an image-to-text row (:func:`experiments.image2text_rows.caption_row_outputs`);
    ``{"unconditional": True}`` for a model without conditions (its samples are scored without
    factor accuracy); ``{}`` for other rows."""
    from experiments import image2text_rows, text2image_rows
    from gen_jax.data.datasets import load_split

    def extras(exp, model, params, row) -> dict:
        if model.conditioning is None:  # nothing asked of its samples: no factor accuracy
            return {"unconditional": True}
        if image2text_rows.is_image_to_text_row(model):
            return image2text_rows.caption_row_outputs(model, params, base, row, test,
                                                       load_split("shapes", "heldout"), exp.eval.batch_size)
        if not text2image_rows.is_caption_row(model):
            return {}
        return text2image_rows.caption_row_outputs(model, params, base, row, test, load_split("shapes", "heldout"),
                                                   predictor, exp.eval.batch_size)

    return extras


def shapes_factor_predictor(extractor):
    """The factor heads of the shapes feature network (``classifier_shapes``) the extractor runs."""
    from gen_jax.metrics.classifier import make_factor_predictor

    return make_factor_predictor(common.load_experiment("classifier_shapes").model, extractor.params)


def _shapes_record(row: dict) -> dict:
    """A shapes row with every :data:`SHAPES_COLUMNS` key first (``None`` where it does not apply)."""
    return {c: row.get(c) for c in SHAPES_COLUMNS} | {k: v for k, v in row.items() if k not in SHAPES_COLUMNS}


def run_shapes(out: str, todo: list[tuple[str, dict, float]], progress: bool, *, runner=None, extractor=None,
               predictor=None, arrays=None) -> list[dict]:
    """Trains and scores the shapes rows into ``<out>/shapes/``: each row by ``runner``
    (:func:`run_one`), then its per-attribute accuracy, l1 and sharpness, and the
    ``samples/<model>_factors.npy`` its outputs should show; then the real-vs-real floor.
    ``runner``/``extractor``/``predictor``/``arrays`` (train, test) replace the real ones in tests."""
    from gen_jax.data.datasets import get_info, load_split

    base = os.path.join(out, "shapes")
    for sub in ("samples", "curves", "runs"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    info = get_info("shapes")
    train_arrays, test = arrays if arrays is not None else (load_split("shapes", "train"), load_split("shapes", "test"))
    extractor = extractor or common.feature_extractor("shapes", None, progress=progress)
    predictor = predictor or shapes_factor_predictor(extractor)
    runner = runner or run_one
    rows = []
    for name, ov, est in todo:
        row_name, ov = shapes_row_name(name, ov)
        print(f"== shapes: {row_name} (about {_duration(est)})", flush=True)
        exp = common.load_experiment(name, {k: v.format(out=base) if isinstance(v, str) else v for k, v in ov.items()})
        stage_seconds = common.train_missing_stages(exp, base, progress)
        row = runner(name, ov, base, extractor, test, progress, row_name=row_name,
                     extras=caption_extras(base, test, predictor))
        row.update({f"stage_seconds_{k}": v for k, v in stage_seconds.items()})
        if row.get("samples") is not None:  # image outputs (an image-to-text row scored its captions)
            samples = np.load(os.path.join(base, row["samples"]))
            factors, targets = shapes_targets(exp.model.get("task"), test, len(samples), info.num_levels)
            row.update(shapes_scores(samples, factors, targets, predictor, images01(test, info.num_levels)))
            if row.pop("unconditional", False):  # an unconditional row's samples have no factors to match
                row.update(dict.fromkeys(SHAPES_FACTOR_COLUMNS))
            else:
                rel = os.path.join("samples", f"{row['model']}_factors.npy")
                np.save(os.path.join(base, rel), factors.astype(np.int64))
                row["factors"] = rel
        rows.append(_shapes_record(row))
        write_shapes_tables(base, rows)
    rows.append(_shapes_record(shapes_floor_row(base, train_arrays, test, info, extractor, predictor)))
    write_shapes_tables(base, rows)
    return rows


# ----------------------------------------------------------------------------------------
# The report page.
# ----------------------------------------------------------------------------------------

REPORT_COLUMNS = ("test_bpd", "bpd_kind", "fid", "kid", "precision", "recall", "train_seconds")
FLOOR = "real-vs-real"


def _img_tag(path: str, alt: str) -> str:
    """``<img>`` with the PNG at ``path`` embedded as base64, or a note when there is none."""
    if not os.path.exists(path):
        return f'<span class="none">no {html.escape(alt)}</span>'
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _report_table(base: str, rows: list[dict], title: str) -> list[str]:
    """One section: a row per model with its numbers, its sample grid and its loss curve; the
    real-vs-real floor first (its grid holds real images), and FID as a multiple of it."""
    floor = next((r for r in rows if r.get("model") == FLOOR), None)
    ordered = ([floor] if floor else []) + [r for r in rows if r is not floor]
    head = ["model", *REPORT_COLUMNS, "FID / floor", "samples (first 100)", "loss curve"]
    out = [f"<h2>{html.escape(title)}</h2>", "<table>",
           "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in ordered:
        name = str(r.get("model"))
        ratio = None
        if floor and r is not floor and r.get("fid") is not None and floor.get("fid"):
            ratio = r["fid"] / floor["fid"]
        cells = [f"<td>{html.escape(name)}</td>"]
        cells += [f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in REPORT_COLUMNS]
        cells.append(f"<td>{'-' if ratio is None else f'{ratio:.2f}x'}</td>")
        cells.append("<td>" + _img_tag(os.path.join(base, "samples", f"{name}.png"),
                                       "real images" if r is floor else "samples") + "</td>")
        cells.append("<td>" + ("" if r is floor else _img_tag(os.path.join(base, "curves", f"{name}.png"),
                                                              "loss curve")) + "</td>")
        cls = ' class="floor"' if r is floor else ""
        out.append(f'<tr data-model="{html.escape(name)}"{cls}>' + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


def write_report(out: str) -> str:
    """Writes ``<out>/report.html`` from ``<out>/table.json`` (and ``<out>/shapes/table.json``
    when it exists) with the PNGs of ``samples/`` and ``curves/`` embedded; returns its path.
    Needs no model or accelerator: it only reads what the bake-off wrote."""
    path = os.path.join(out, "table.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"write_report: {path} does not exist (run the bake-off first)")
    with open(path) as f:
        rows = json.load(f)
    body = _report_table(out, rows, "Digits (8x8, 17 levels): 1000 samples per row vs the 360-image test split")
    shapes = os.path.join(out, "shapes")
    if os.path.exists(os.path.join(shapes, "table.json")):
        with open(os.path.join(shapes, "table.json")) as f:
            body += _report_table(shapes, json.load(f), "Shapes (32x32 RGB)")
    notes = ("test_bpd: bits/dim on the test split, uniform dequantization (README, Conventions); "
             "bpd_kind: exact or which bound. FID/KID/precision/recall on the digits classifier's "
             "features: compare each row with the real-vs-real floor (1000 train images scored the "
             "same way), not across tables. train_seconds: wall time on this machine.")
    page = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>gen_jax bake-off</title>',
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:middle}"
            "tr.floor{background:#eef5ff}img{image-rendering:pixelated;max-height:240px}"
            ".none{color:#999}</style></head><body>",
            "<h1>gen_jax bake-off</h1>", f"<p>{html.escape(notes)}</p>", *body, "</body></html>"]
    target = os.path.join(out, "report.html")
    with open(target, "w") as f:
        f.write("\n".join(page) + "\n")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train and compare the models on digits: the flagship row of every "
                                "family (--suite demo, `make demo`) or every row (--suite full, `make bakeoff`).")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--suite", choices=sorted(SUITES), default="demo",
                   help="demo: one flagship row per family (about 15 min); full: every row (default: demo)")
    p.add_argument("--only", default="", help="comma-separated config names of the full bake-off (overrides --suite)")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    from gen_jax.data.datasets import get_info, load_split

    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - {name for name, _, _ in BAKEOFF + SHAPES_BAKEOFF})
    if unknown:
        print(f"error: --only: {', '.join(unknown)} not in the bake-off; its configs: "
              f"{', '.join(dict.fromkeys(name for name, _, _ in BAKEOFF + SHAPES_BAKEOFF))}", file=sys.stderr)
        return 2
    todo = [(name, ov, est) for name, ov, est in BAKEOFF if name in only] if only else SUITES[args.suite]
    shapes_todo = [r for r in SHAPES_BAKEOFF if r[0] in only] if only else (SHAPES_BAKEOFF if args.suite == "full" else [])
    print(plan_line(todo + shapes_todo), flush=True)
    t0 = time.time()
    out = args.out
    if shapes_todo:  # the shapes table (<out>/shapes/), before the digits rows
        run_shapes(out, shapes_todo, not args.no_progress)
        print(open(os.path.join(out, "shapes", "table.md")).read(), flush=True)
        if not todo:
            if os.path.exists(os.path.join(out, "table.json")):
                write_report(out)
            print(f"shapes bake-off finished in {_duration(time.time() - t0)}; tables in {out}/shapes/", flush=True)
            return 0
    for sub in ("samples", "curves", "runs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    info = get_info("digits")
    train_arrays, test = load_split("digits", "train"), load_split("digits", "test")
    extractor = common.feature_extractor("digits", None, progress=not args.no_progress)
    rows = []
    for i, (name, ov, est) in enumerate(todo):
        print(f"== [{i + 1}/{len(todo)}] {name} (about {_duration(est)}; {_duration(time.time() - t0)} "
              f"elapsed)", flush=True)
        rows.append(run_one(name, ov, out, extractor, test, not args.no_progress, {r["model"]: r for r in rows},
                            train_arrays))
        write_tables(out, rows)
        write_report(out)
    rows.append(floor_row(out, train_arrays, test, info, extractor))
    write_tables(out, rows)
    report = write_report(out)
    print(open(os.path.join(out, "table.md")).read())
    print(f"bake-off finished in {_duration(time.time() - t0)} ({time.time() - t0:.0f} s wall); tables in "
          f"{out}/table.md and table.json, the report page in {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
