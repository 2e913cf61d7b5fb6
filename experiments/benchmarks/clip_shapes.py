"""CLIP on shapes: zero-shot factor accuracy, prompt ensembles, retrieval, the logit scale.

    python -m experiments.benchmarks.clip_shapes --workdir runs/clip_shapes [--pairs 256] [--step N] [--config clip_shapes]

Restores the newest checkpoint of ``--workdir`` (trained with
``python -m experiments.train --config experiments/configs/clip_shapes.py --workdir runs/clip_shapes``)
and prints, on the ``test`` split and on the ``heldout`` split (the (shape, colour) combinations
never seen in training):

* zero-shot accuracy for colour, shape, size and position (9 regions), with a single template
  and with the prompt ensemble (:func:`gen_jax.multimodal.zero_shot.shapes_prompts`: the other
  factors averaged out of the class embedding);
* text -> image and image -> text Recall@1 / Recall@5 among the first ``--pairs`` pairs of the
  split (their own captions);
* the final logit scale (clamped; <= 100).

Targets (issue 14): colour >= 0.95 and shape >= 0.90 on test and heldout, ensemble >= single,
text -> image R@1 >= 0.5 among 256 test pairs, logit scale <= 100. Writes
``<workdir>/clip_eval/figures.json``.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from experiments import common

FACTORS = ("colour", "shape", "size", "position")


def evaluate(model, params, splits: dict, tokenize, num_levels: int, pairs: int = 256) -> dict:
    """The figures of the module docstring for ``splits = {name: load_split arrays}``."""
    from gen_jax.multimodal import zero_shot as Z

    res = {}
    for split, arrays in splits.items():
        images = np.asarray(arrays["image"], np.float32) / (num_levels - 1)
        zi = Z.embed_images(model.embedder.embed_image, params, images)
        row = {"zero_shot": Z.shapes_zero_shot(model.embedder, params, images, arrays, tokenize, FACTORS, zi=zi)}
        n = min(pairs, len(images))
        zt = Z.embed_batched(model.embedder.embed_text, params, np.asarray(arrays["caption_tokens"][:n], np.int32),
                             batch_size=n)
        row["retrieval"] = {"pairs": n, **Z.recall_at_k(zi[:n], zt, (1, 5))}
        res[split] = row
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="clip_shapes")
    p.add_argument("--workdir", required=True)
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    args, rest = p.parse_known_args(argv)
    overrides = dict(a.removeprefix("--config.").split("=", 1) for a in rest)
    exp = common.load_experiment(args.config, overrides)
    info, model, _ = common.setup(exp)
    from gen_jax.data.datasets import get_tokenizer, load_split
    from gen_jax.multimodal.clip import logit_scale_of
    from gen_jax.train.loop import eval_params

    workdir = common.resolve_workdir(args.workdir)
    state, _ = common.restore_state(exp, model, workdir, info, step=args.step)
    params = eval_params(state, model)
    tok = get_tokenizer(exp.dataset.name)
    tokenize = lambda texts: tok.encode(texts, info.caption_len)  # noqa: E731
    splits = {s: load_split(exp.dataset.name, s, common.data_dir(exp)) for s in ("test", "heldout")}
    res = {"step": int(state.step), "logit_scale": logit_scale_of(params, exp.model.max_logit_scale),
           **evaluate(model, params, splits, tokenize, info.num_levels, args.pairs)}
    print(f"step {res['step']}  logit scale {res['logit_scale']:.2f} (clamp {exp.model.max_logit_scale:g})")
    print(f"\n{'zero-shot accuracy':24s} " + " ".join(f"{f:>9s}" for f in FACTORS))
    for split in splits:
        for kind in ("single", "ensemble"):
            z = res[split]["zero_shot"]
            print(f"{split + ' ' + kind:24s} " + " ".join(f"{z[f][kind]:9.3f}" for f in FACTORS))
    print(f"\n{'retrieval':24s} {'t2i R@1':>9s} {'t2i R@5':>9s} {'i2t R@1':>9s} {'i2t R@5':>9s}")
    for split in splits:
        r = res[split]["retrieval"]
        print(f"{split + ' (' + str(r['pairs']) + ' pairs)':24s} " + " ".join(
            f"{r[k]:9.3f}" for k in ("t2i_R@1", "t2i_R@5", "i2t_R@1", "i2t_R@5")))
    out = os.path.join(workdir, "clip_eval")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "figures.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"\nfigures in {out}/figures.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
