"""VQGAN's reconstructions against the VQ-VAE's at the same code count (and the dVAE's) on the shapes test split.

    python -m experiments.benchmarks.vqgan_vs_vqvae [--vqvae_workdir runs/vqvae_shapes] \
        [--vqgan_workdir runs/vqgan_shapes] [--dvae_workdir runs/dvae_shapes] [--only vqvae,vqgan,dvae] [--out DIR]

For each tokenizer (``vqvae_shapes``, ``vqgan_shapes``, ``dvae_shapes``: the same 8x8 grid of ids
over K = 512 codes) it restores the run in its workdir (trains it there first, with its config,
when the workdir holds no checkpoint), reconstructs the 2000 test images as ``decode(encode(x))``
and prints:

* ``nmse``: MSE / variance of the test images' pixel values
  (:func:`gen_jax.latent.vqvae.reconstruction_nmse`);
* ``sharpness``: the reconstructions' mean gradient magnitude over the test images'
  (:func:`experiments.bakeoff.gradient_energy`; 1 = as sharp as the data, < 1 = blurred);
* ``fid``: FID of the reconstructions against the test images on the shapes feature network
  (:func:`experiments.common.feature_extractor`, :func:`gen_jax.metrics.fid.fid_from_features`),
  beside the real-vs-real floor (2000 train images against the test split);
* ``codes_used``: the fraction of the codebook the test split's ids use
  (:func:`gen_jax.latent.quantizer.split_code_usage`), and the train seconds of runs trained here.

Writes ``results.json`` to ``--out``. Measured figures: see the README / the report of issue 14.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

from experiments import common

CONFIGS = {"vqvae": "vqvae_shapes", "vqgan": "vqgan_shapes", "dvae": "dvae_shapes"}


def _has_checkpoint(workdir: str) -> bool:
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and bool(os.listdir(d))


def reconstruct(codec, params, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """``decode(encode(x))`` of ``images [N, H, W, C]`` in [0, 1], one jitted call per batch."""
    import jax

    fn = jax.jit(lambda p, x: codec.decode(p, codec.encode(p, x)))
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        m = len(chunk)
        if m < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - m, 0)])
        out.append(np.asarray(fn(params, chunk))[:m])
    return np.concatenate(out)


def score(name: str, workdir: str, test: np.ndarray, extractor, test_features: np.ndarray) -> dict:
    """Restores (or trains) one tokenizer and scores its test reconstructions."""
    from experiments.bakeoff import gradient_energy
    from gen_jax.latent.quantizer import split_code_usage
    from gen_jax.latent.vqvae import reconstruction_nmse
    from gen_jax.metrics.fid import fid_from_features
    from gen_jax.train.loop import eval_params, train

    exp = common.load_experiment(CONFIGS[name])
    info, model, mesh = common.setup(exp)
    seconds = None
    if not _has_checkpoint(workdir):
        print(f"training {CONFIGS[name]} into {workdir}", flush=True)
        result = train(exp, model, workdir, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
        seconds = round(result.seconds, 1)
    state, meta = common.restore_state(exp, model, workdir, info)
    params = eval_params(state, model)
    rec = reconstruct(model.codec, params, test)
    nmse = reconstruction_nmse(model.codec, params, test)
    use = split_code_usage(model.codec.encode, params, test, exp.model.num_codes)
    return {"model": name, "config": CONFIGS[name], "workdir": workdir, "step": int(meta.get("step", state.step)),
            "num_codes": exp.model.num_codes, "nmse": nmse["nmse"], "mse": nmse["mse"],
            "sharpness": gradient_energy(rec) / gradient_energy(test),
            "fid": fid_from_features(test_features, extractor(rec)["features"]),
            "codes_used": use["fraction_used"], "train_seconds": seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, cfg in CONFIGS.items():
        p.add_argument(f"--{name}_workdir", default=os.path.join("runs", cfg))
    p.add_argument("--only", default="vqvae,vqgan,dvae", help="comma-separated: vqvae, vqgan, dvae")
    p.add_argument("--out", default="", help="where to write results.json (default: a temp dir)")
    args = p.parse_args(argv)
    from gen_jax.data.datasets import get_info, load_split
    from gen_jax.metrics.fid import fid_from_features

    info = get_info("shapes")
    scale = 1.0 / (info.num_levels - 1)
    test = load_split("shapes", "test")["image"].astype(np.float32) * scale
    train_images = load_split("shapes", "train")["image"][:len(test)].astype(np.float32) * scale
    extractor = common.feature_extractor("shapes", None)
    test_features = extractor(test)["features"]
    floor = fid_from_features(test_features, extractor(train_images)["features"])
    rows = [score(n, common.resolve_workdir(getattr(args, f"{n}_workdir")), test, extractor, test_features)
            for n in args.only.split(",") if n]
    print(f"shapes test split ({len(test)} images); FID floor (2000 train vs test images): {floor:.2f}")
    print(f"{'model':7s} {'codes':>5s} {'step':>5s} {'NMSE':>7s} {'sharpness':>9s} {'FID':>7s} {'codes used':>10s}")
    for r in rows:
        print(f"{r['model']:7s} {r['num_codes']:5d} {r['step']:5d} {r['nmse']:7.4f} {r['sharpness']:9.3f} "
              f"{r['fid']:7.2f} {r['codes_used']:10.3f}")
    out = args.out or tempfile.mkdtemp(prefix="vqgan_vs_vqvae_")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"fid_floor": floor, "rows": rows}, f, indent=1)
    print(f"wrote {os.path.join(out, 'results.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
