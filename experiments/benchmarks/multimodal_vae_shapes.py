"""Multimodal VAEs on shapes (MVAE, MMVAE): cross-modal and joint coherence, and the joint ELBO.

    python -m experiments.benchmarks.multimodal_vae_shapes [--only mvae_shapes] [--num 500] [--runs runs]

For each config (``mvae_shapes``, ``mmvae_shapes``; trained into ``runs/<config>`` first when it
has no checkpoint), on the first ``--num`` rows of the test and ``heldout`` splits:

* caption -> image: images drawn for the rows' captions (``model.sampler.sample`` with
  ``cond={'caption_tokens': ...}``), judged by the shapes feature network's factor heads
  (:func:`experiments.bakeoff.shapes_factor_predictor`) and by the analytic factor check
  (:func:`experiments.benchmarks.cyclegan_shapes.measure_factors`): per-attribute accuracy,
  their mean, and all five right (target, issue 15: >= 0.8);
* image -> caption: the greedy caption of each real image, parsed by
  :func:`gen_jax.data.shapes.parse_caption`, per-attribute accuracy (target >= 0.9);
* joint / unconditional coherence: ``z ~ p(z)``, image and greedy caption decoded from the same
  ``z``, the fraction of attributes where the judged image agrees with the parsed caption;
* the joint ELBO (lambda = beta = 1, one sample) in nats per example (the log density of the
  dequantized image plus the log pmf of the caption), with its terms, and the image-only
  bound of the likelihood capability in bits/dim.

Prints one JSON line per model and split and writes ``runs/<config>/multimodal_eval/figures.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import jax
import numpy as np

from experiments import common
from experiments.benchmarks.cyclegan_shapes import measure_factors
from gen_jax.data import image_pairs
from gen_jax.data.shapes import FACTORS, parse_caption

CONFIGS = ("mvae_shapes", "mmvae_shapes")
KINDS = {"mvae": "poe", "mmvae": "moe"}


def accuracy(pred: np.ndarray, factors: np.ndarray) -> dict:
    """Per-factor accuracy, their mean, shape+colour and all five right."""
    right = np.asarray(pred) == np.asarray(factors)
    out = {f: float(right[:, i].mean()) for i, f in enumerate(FACTORS)}
    out["mean"] = float(right.mean())
    out["shape+colour"] = float((right[:, 0] & right[:, 1]).mean())
    out["all"] = float(right.all(1).mean())
    return out


def ensure_trained(name: str, workdir: str) -> None:
    """Trains ``name`` into ``workdir`` (``python -m experiments.train``) unless it has a checkpoint."""
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and os.listdir(os.path.join(workdir, "checkpoints")):
        return
    print(f"[{name}] no checkpoint in {workdir}: training", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "experiments.train", "--config", common.config_path(name),
                    "--workdir", workdir], check=True)


def chunked(fn, n: int, chunk: int):
    """``fn(start, size)`` over ``[0, n)`` in chunks, concatenated on axis 0."""
    return np.concatenate([np.asarray(fn(s, min(chunk, n - s))) for s in range(0, n, chunk)], axis=0)


def evaluate(name: str, workdir: str, num: int, seed: int, chunk: int = 250) -> dict:
    from gen_jax.data.datasets import load_split
    from gen_jax.latent.multimodal_vae import build_multimodal_vae
    from gen_jax.train.loop import eval_params

    from experiments.bakeoff import shapes_factor_predictor

    exp = common.load_experiment(name)
    info, model, _ = common.setup(exp)
    mv = build_multimodal_vae(exp.model, info, KINDS[exp.model_name])
    state, _ = common.restore_state(exp, model, workdir, info)
    params = eval_params(state, model)
    predictor = shapes_factor_predictor(common.feature_extractor("shapes", None))
    sample = jax.jit(mv.model.sampler.sample, static_argnums=2)
    caption = jax.jit(mv.caption_image)
    generate = jax.jit(lambda p, k, n: mv.generate(p, k, n), static_argnums=2)
    joint_elbo = jax.jit(mv.joint_elbo)
    log_prob = jax.jit(mv.model.likelihood.log_prob)
    key = jax.random.PRNGKey(seed)
    res = {"config": name, "workdir": workdir, "step": int(state.step), "num": num}
    for i, split in enumerate(("test", "heldout")):
        t0 = time.time()
        arrays = load_split("shapes", split)
        rows = image_pairs.first_rows(arrays, num)
        factors = image_pairs.split_factors(arrays, rows)
        images = np.asarray(arrays["image"])[rows].astype(np.float32) / 255.0
        tokens = np.asarray(arrays["caption_tokens"])[rows]
        k_s, k_e = jax.random.split(jax.random.fold_in(key, i))
        x = chunked(lambda s, n: sample(params, jax.random.fold_in(k_s, s), n,
                                        {"caption_tokens": tokens[s:s + n]}), num, chunk)
        caps = chunked(lambda s, n: caption(params, images[s:s + n]), num, chunk)
        parsed = np.array([parse_caption(t) for t in mv.describe(caps)], np.int32)
        batch = {"image": images, "caption_tokens": tokens}
        terms = {}
        for s in range(0, num, chunk):
            sub = {k: v[s:s + chunk] for k, v in batch.items()}
            for k, v in joint_elbo(params, sub, jax.random.fold_in(k_e, s)).items():
                terms.setdefault(k, []).append(np.asarray(v))
            terms.setdefault("image_bound", []).append(np.asarray(log_prob(params, sub, jax.random.fold_in(k_e, s))))
        terms = {k: float(np.concatenate(v).mean()) for k, v in terms.items()}
        d = int(np.prod(info.image_shape))
        bpd = (-terms["image_bound"] + d * math.log(info.num_levels)) / (d * math.log(2))
        res[split] = {
            "caption_to_image": accuracy(predictor(x), factors),
            "caption_to_image_analytic": accuracy(measure_factors(x), factors),
            "real_images_judge": accuracy(predictor(images), factors),
            "image_to_caption": accuracy(parsed, factors),
            "joint_elbo_nats": terms["elbo"],
            "joint_elbo_terms_nats": {k: v for k, v in terms.items() if k not in ("elbo", "image_bound")},
            "image_bound_nats": terms["image_bound"], "image_bound_bpd": float(bpd),
            "seconds": round(time.time() - t0, 1)}
        print(json.dumps({"config": name, "split": split, **res[split]}), flush=True)
    joint = generate(params, jax.random.fold_in(key, 7), num)
    parsed = np.array([parse_caption(t) for t in mv.describe(np.asarray(joint["caption_tokens"]))], np.int32)
    judged = np.asarray(predictor(np.asarray(joint["image"])))
    res["joint_samples"] = {"agreement": accuracy(judged, parsed),
                            "well_formed_captions": float((parsed >= 0).all(1).mean())}
    print(json.dumps({"config": name, "joint_samples": res["joint_samples"]}), flush=True)
    return res


def print_table(results: list) -> None:
    cols = list(FACTORS) + ["mean", "all"]
    print(f"\n{'model / split / task':42s} " + " ".join(f"{c:>7s}" for c in cols))
    for r in results:
        for split in ("test", "heldout"):
            for task in ("caption_to_image", "caption_to_image_analytic", "image_to_caption", "real_images_judge"):
                a = r[split][task]
                print(f"{r['config'] + ' / ' + split + ' / ' + task:42s} " + " ".join(f"{a[c]:7.3f}" for c in cols))
        a = r["joint_samples"]["agreement"]
        print(f"{r['config'] + ' / joint samples (image vs caption)':42s} " + " ".join(f"{a[c]:7.3f}" for c in cols))
        for split in ("test", "heldout"):
            print(f"{r['config']} / {split}: joint ELBO {r[split]['joint_elbo_nats']:.1f} nats/example "
                  f"(terms {json.dumps({k: round(v, 2) for k, v in r[split]['joint_elbo_terms_nats'].items()})}); "
                  f"image-only bound {r[split]['image_bound_bpd']:.3f} bits/dim")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=CONFIGS, action="append", help="configs to run (default: both)")
    p.add_argument("--num", type=int, default=500, help="rows of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs", help="where the configs' workdirs are (runs/<config>)")
    args = p.parse_args(argv)
    results = []
    for name in args.only or CONFIGS:
        workdir = common.resolve_workdir(os.path.join(args.runs, name))
        ensure_trained(name, workdir)
        res = evaluate(name, workdir, args.num, args.seed)
        out = os.path.join(workdir, "multimodal_eval")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "figures.json"), "w") as f:
            json.dump(res, f, indent=1)
        results.append(res)
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
