"""Frozen on shapes: do the captions the frozen LM writes after the visual prefix name the image?

    python -m experiments.benchmarks.frozen_shapes --workdir runs/frozen_shapes [--num 2000] [--shots 2]

Trains ``--config`` (default frozen_shapes) into ``--workdir`` when it holds no checkpoint (the
LM stage must exist: caption_lm_shapes), then for the first ``--num`` images of the test split
and of the ``heldout`` split (the five (shape, colour) pairs never trained on) prints the
per-attribute accuracy of the captions, read by :func:`gen_jax.data.shapes.parse_caption` against
the images' true factors (a caption that does not name a factor, or names two, is wrong on it):
greedy decoding, sampling at temperature 1 and at temperature 0.7 with top-k 3 (Fan et al. 2018).
Few-shot: the same greedy captions of ``--few-num`` test/heldout images after interleaved prompts
of 1 .. ``--shots`` train (image, caption) pairs (Tsimpoukelli et al. 2021, Sec. 3.2; one random
support set per shot count, shared by every query). Also the caption bits per token given the
image against the frozen LM on its own (unconditional: without the prefix; prompt-trained:
after the true caption's words as its prompt, the ceiling), and the LM's bit-identity: the
SHA-256 of its params when the model is built, after training (in memory and reloaded from
its checkpoint), and as the evaluated params hold them. Targets (issue 15): >= 0.9 per
attribute on test, >= 0.7 on heldout, LM params bit-identical.

Writes ``<out>/samples/<config>_captions.json`` (greedy, the whole test split, ``[{"index": i,
"caption": "..."}]`` with ``i`` the split's ``index`` feature: the bake-off's image-to-text row
format; ``<out>`` defaults to the workdir) and ``<workdir>/frozen_eval/figures.json``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import jax
import numpy as np

from experiments import common
from experiments.image2text_rows import write_captions
from gen_jax.data import image_pairs
from gen_jax.data.shapes import FACTORS, parse_caption

SETTINGS = (("greedy", 0.0, 0), ("T=1", 1.0, 0), ("T=0.7 top-k 3", 0.7, 3))


def digest(tree) -> str:
    """SHA-256 of every leaf's bytes (tree order): equal iff the params are bit-identical."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def caption_accuracy(captions, factors: np.ndarray) -> dict:
    """Per-attribute accuracy of ``captions`` against ``factors [N, 5]`` (FACTORS order), plus
    all five right and the fraction of captions the grammar can parse fully."""
    read = np.array([parse_caption(c) for c in captions], np.int64).reshape(-1, len(FACTORS))
    right = read == factors
    out = {f: float(right[:, i].mean()) for i, f in enumerate(FACTORS)}
    out["all"] = float(right.all(1).mean())
    out["parsed"] = float((read >= 0).all(1).mean())
    return out


def images01(split: dict, rows) -> np.ndarray:
    return np.asarray(split["image"])[rows].astype(np.float32) / 255.0


def caption_images(parts, params, x: np.ndarray, key, temperature: float, top_k: int, batch: int = 250) -> list:
    """Captions of images ``x [N, 32, 32, 3]`` in [0, 1], ``batch`` at a time (one compiled sampler)."""
    sample = jax.jit(parts.make_sampler(temperature=temperature, top_k=top_k), static_argnums=2)
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), 0)]) if len(chunk) < batch else chunk
        toks = np.asarray(sample(params, jax.random.fold_in(key, i), batch, {"image": pad}))[:len(chunk)]
        out += parts.model.sampler.describe(toks)
    return out


def few_shot_rows(parts, params, train: dict, splits: dict, num: int, shots: int, seed: int) -> list:
    """Greedy few-shot accuracy for 0 .. ``shots`` supports drawn from ``train``."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(shots + 1):
        pick = rng.choice(len(train["index"]), size=s, replace=False)
        sup_x, sup_c = images01(train, pick), np.asarray(train["caption_tokens"])[pick]
        row = {"setting": f"{s}-shot greedy", "supports": [str(c) for c in np.asarray(train["caption"])[pick]]}
        for name, split in splits.items():
            r = np.arange(min(num, len(split["index"])))
            caps = []
            for i in range(0, len(r), 250):
                toks = parts.few_shot(params, jax.random.PRNGKey(i), sup_x, sup_c, images01(split, r[i:i + 250]))
                caps += parts.model.sampler.describe(np.asarray(toks))
            row[name] = caption_accuracy(caps, image_pairs.split_factors(split, r))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def train_if_needed(exp, model, workdir: str, info) -> dict:
    """Trains ``model`` into ``workdir`` when it holds no checkpoint; the LM digests around it."""
    from gen_jax.train import sharding as shd
    from gen_jax.train.loop import train

    record_path = os.path.join(workdir, "lm_digest.json")
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return json.load(open(record_path)) if os.path.isfile(record_path) else {}
    frozen = model.training.frozen["lm"]
    rec = {"lm_before_training": digest(frozen)}
    mesh = shd.mesh_from_config(exp.mesh)
    result = train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=True, mesh=mesh)
    rec["lm_after_training_in_memory"] = digest(model.training.frozen["lm"])
    rec["lm_after_training_same_object"] = bool(model.training.frozen["lm"] is frozen)
    rec["train_seconds"] = round(result.seconds, 1)
    with open(record_path, "w") as f:
        json.dump(rec, f, indent=1)
    return rec


def print_table(rows: list) -> None:
    cols = list(FACTORS) + ["all", "parsed"]
    print(f"\n{'setting':22s} " + " ".join(f"{c:>7s}" for c in cols) + "   | heldout " + " ".join(
        f"{c:>7s}" for c in cols))
    for r in rows:
        print(f"{r['setting']:22s} " + " ".join(f"{r['test'][c]:7.3f}" for c in cols) + "   |         "
              + " ".join(f"{r['heldout'][c]:7.3f}" for c in cols))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="frozen_shapes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default="", help="where samples/<config>_captions.json goes (default: the workdir)")
    p.add_argument("--num", type=int, default=2000, help="test / heldout images captioned per setting")
    p.add_argument("--few-num", type=int, default=500, help="test / heldout images per few-shot setting")
    p.add_argument("--shots", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    overrides = dict(a.removeprefix("--config.").split("=", 1) for a in rest)
    exp = common.load_experiment(args.config, overrides)
    from gen_jax.autoregressive.frozen import build_frozen
    from gen_jax.data.datasets import get_info, load_split
    from gen_jax.evaluation.likelihood import split_bits_per_token
    from gen_jax.train.loop import eval_params

    info = get_info(exp.dataset.name, common.data_dir(exp))
    stage = common.load_stage("lm", exp.stages["lm"], info)
    lm_at_load = digest(stage.params)
    parts = build_frozen(exp.model, info, {"lm": stage})
    model = parts.model
    workdir = common.resolve_workdir(args.workdir)
    rec = train_if_needed(exp, model, workdir, info)
    state, _ = common.restore_state(exp, model, workdir, info)
    params = eval_params(state, model)
    lm_reloaded = digest(common.load_stage("lm", exp.stages["lm"], info).params)
    ident = {**rec, "lm_at_load": lm_at_load, "lm_reloaded_from_checkpoint": lm_reloaded,
             "lm_in_evaluated_params": digest(params["lm"])}
    ident["bit_identical"] = len({v for k, v in ident.items() if k.startswith("lm_") and isinstance(v, str)}) == 1
    print(json.dumps({"lm_params": ident}), flush=True)

    splits = {s: load_split("shapes", s, common.data_dir(exp)) for s in ("test", "heldout")}
    key = jax.random.PRNGKey(args.seed)
    res = {"step": int(state.step), "num": args.num, "lm_params": ident, "rows": []}
    bits = {s: split_bits_per_token(model, params, a, info, key, 250) for s, a in splits.items()}
    lm_bits = {s: split_bits_per_token(stage.model, stage.params, a, info, key, 250) for s, a in splits.items()}
    lm_name = ("lm alone (caption)" if parts.lm.config.condition == "none" else
               f"lm after its {parts.lm.config.condition} prompt (the true caption's words: a ceiling)")
    res["bits_per_token"] = {"frozen (caption | image)": bits, lm_name: lm_bits}
    print(json.dumps({"bits_per_token": res["bits_per_token"]}), flush=True)
    greedy_test = None
    for name, t, k in SETTINGS:
        row = {"setting": name}
        for split, arrays in splits.items():
            t0 = time.time()
            r = np.arange(min(args.num, len(arrays["index"])))
            caps = caption_images(parts, params, images01(arrays, r), jax.random.fold_in(key, len(row)), t, k)
            row[split] = caption_accuracy(caps, image_pairs.split_factors(arrays, r))
            row[f"{split}_seconds"] = round(time.time() - t0, 1)
            row[f"{split}_examples"] = caps[:3]
            if name == "greedy" and split == "test":
                greedy_test = caps
        print(json.dumps(row), flush=True)
        res["rows"].append(row)
    res["few_shot"] = few_shot_rows(parts, params, load_split("shapes", "train", common.data_dir(exp)), splits,
                                    args.few_num, min(args.shots, model_max_shots(exp)), args.seed)
    print_table(res["rows"] + res["few_shot"])
    test = splits["test"]
    if greedy_test is None or len(greedy_test) != len(test["index"]):
        greedy_test = caption_images(parts, params, images01(test, np.arange(len(test["index"]))), key, 0.0, 0)
    name = os.path.splitext(os.path.basename(args.config))[0]
    path = os.path.join(args.out or workdir, "samples", f"{name}_captions.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_captions(path, test, greedy_test)
    print(f"wrote {path}")
    out = os.path.join(workdir, "frozen_eval")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump(res, f, indent=1)
    return 0


def model_max_shots(exp) -> int:
    m = exp.model
    return int(m.get("max_shots", 2) if hasattr(m, "get") else getattr(m, "max_shots", 2))


if __name__ == "__main__":
    raise SystemExit(main())
