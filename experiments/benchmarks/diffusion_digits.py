"""Likelihoods, the DDIM steps x eta table and the guidance table of a trained digits DDPM.

    python -m experiments.benchmarks.diffusion_digits --workdir W [--config ddpm_digits] \
        [--what vlb,ode,ddim] [--steps 10,20,50,100,1000] [--etas 0,0.5,1] [--num 1000]
    python -m experiments.benchmarks.diffusion_digits --workdir W --config ddpm_digits_cfg \
        --what cfg [--scales 0,1,2,4]
    python -m experiments.benchmarks.diffusion_digits --workdir W --what cg \
        --classifier_workdir C [--cg_scales 0,1,2,4] [--cg_steps 100]

Prints (and writes ``--out``, default ``W/diffusion_table.json``):

* ``vlb``: the full variational bound on the whole test split in bits/dim (Ho et al. 2020,
  Eq. 5; all ``T`` terms, the discretized decoder on the ``K = 17`` levels), with the share of
  the prior, decoder and ``t`` ranges of the KL terms;
* ``ode``: the probability-flow ODE likelihood on the test split (Song et al. 2021, Eq. 39;
  Heun with ``--ode_steps``, the Hutchinson or exact divergence; uniform dequantization), in
  bits/dim under the same convention;
* ``ddim``: FID of ``--num`` samples against the test split (digits feature network) for
  ancestral DDPM-``T`` and DDIM with each ``S`` of ``--steps`` and each ``eta`` of ``--etas``
  (Song et al. 2021, Eq. 12), laid out as Table 1 of the DDIM paper (rows eta, columns S),
  with the seconds each setting took and the real-vs-real floor (``--num`` train images);
* ``cfg`` (class-conditional models): for each classifier-free guidance scale ``w`` of
  ``--scales`` (Ho & Salimans 2022, Eq. 6), ``--num`` samples with balanced labels, the rate
  at which the feature network classifies them as their intended label, and their FID;
* ``cg``: the same for classifier guidance of the unconditional DDPM by the noise-aware
  classifier trained in ``--classifier_workdir`` (``noisy_classifier_digits``; Dhariwal &
  Nichol 2021, Alg. 2 / Eq. 14, DDIM with ``--cg_steps`` steps, eta 0) for each scale
  ``s`` of ``--cg_scales``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np


def _floats(s):
    return [float(v) for v in s.split(",") if v]


def _ints(s):
    return [int(v) for v in s.split(",") if v]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default="ddpm_digits")
    p.add_argument("--what", default="vlb,ode,ddim")
    p.add_argument("--steps", default="10,20,50,100,1000")
    p.add_argument("--etas", default="0,0.5,1")
    p.add_argument("--scales", default="0,1,2,4")
    p.add_argument("--classifier_workdir", default="")
    p.add_argument("--classifier_config", default="noisy_classifier_digits")
    p.add_argument("--cg_scales", default="0,1,2,4")
    p.add_argument("--cg_steps", type=int, default=100)
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--ode_steps", type=int, default=100)
    p.add_argument("--ode_divergence", default="hutchinson", choices=("hutchinson", "exact"))
    p.add_argument("--ode_batch", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    what = [w for w in args.what.split(",") if w]
    from experiments import common
    from gen_jax.data.datasets import load_split
    from gen_jax.evaluation.likelihood import images01, split_bpd
    from gen_jax.metrics.features import score_samples
    from gen_jax.model import Likelihood
    from gen_jax.train.loop import eval_params

    exp = common.load_experiment(args.config)
    info, model, _ = common.setup(exp)
    den = model.denoiser
    if den is None:
        common.fail(f"--config {args.config}: not a diffusion model (model {model.name!r} has no denoiser)")
    for w, fn in (("vlb", den.vlb_terms), ("ode", den.ode_log_prob)):
        if w in what and fn is None:
            common.fail(f"--what {w}: model {model.name!r} has no {'vlb_terms' if w == 'vlb' else 'ode_log_prob'}")
    state, _ = common.restore_state(exp, model, args.workdir, info)
    params = eval_params(state, model)
    test = load_split("digits", "test")
    x_test = images01(test, info.num_levels)
    key = jax.random.PRNGKey(args.seed)
    res = {"workdir": args.workdir, "config": args.config, "step": int(state.step)}
    out_path = args.out or os.path.join(args.workdir, "diffusion_table.json")

    def dump():
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)

    if "vlb" in what:
        t0 = time.time()
        res["vlb_bpd"] = split_bpd(model, params, test, info, jax.random.fold_in(key, 1), exp.eval.batch_size)
        terms = jax.jit(den.vlb_terms)(params, {"image": x_test[:250], "label": test["label"][:250]},
                                       jax.random.fold_in(key, 2))
        d_log2 = int(np.prod(info.image_shape)) * np.log(2.0)
        vb = np.asarray(terms["vb"]).mean(0) / d_log2
        T = len(vb)
        edges = [e for e in (1, 2, 5, 10, 50, 200) if e < T] + [T]
        res["vlb_breakdown_bpd"] = {"prior": float(np.asarray(terms["prior"]).mean() / d_log2),
                                    "decoder t=1": float(vb[0])}
        for lo, hi in zip(edges[:-1], edges[1:]):
            res["vlb_breakdown_bpd"][f"KL t={lo + 1}..{hi}"] = float(vb[lo:hi].sum())
        print(f"VLB on the test split: {res['vlb_bpd']:.3f} bits/dim ({time.time() - t0:.0f} s); "
              f"breakdown (first 250 images): "
              + ", ".join(f"{k} {v:.3f}" for k, v in res["vlb_breakdown_bpd"].items()), flush=True)
        dump()
    if "ode" in what:
        t0 = time.time()
        ode = den.ode_log_prob
        fn = lambda prm, b, k: ode(prm, b, k, num_steps=args.ode_steps, method="heun",
                                   divergence=args.ode_divergence)
        by_ode = dataclasses.replace(model, likelihood=Likelihood(fn, "ode"))  # the PF-ODE as the likelihood
        res["ode_bpd"] = split_bpd(by_ode, params, test, info, jax.random.fold_in(key, 3), args.ode_batch)
        res["ode_settings"] = (f"Heun {args.ode_steps} steps, {args.ode_divergence} divergence, "
                               "eps = the dequantization-matched default")
        print(f"PF-ODE likelihood on the test split: {res['ode_bpd']:.3f} bits/dim ({res['ode_settings']}; "
              f"{time.time() - t0:.0f} s)", flush=True)
        dump()
    if "ddim" in what or "cfg" in what or "cg" in what:
        extractor = common.feature_extractor("digits", None)
        n = args.num
        bs = min(args.batch, n)

        def run(sampler, steps, eta, scale=0.0, labels=None):
            fn = jax.jit(den.make_sampler(sampler, steps, eta, guidance_scale=scale),
                         static_argnums=(2,))
            cond = lambda s: None if labels is None else {"label": labels[s:s + bs]}
            jax.block_until_ready(fn(params, key, bs, cond(0)))  # compile
            t1 = time.time()
            xs = [np.asarray(fn(params, jax.random.fold_in(key, 10 + i), bs, cond(s)))
                  for i, s in enumerate(range(0, n, bs))]
            secs = time.time() - t1
            x = np.concatenate(xs)[:n]
            scores = score_samples(x, x_test, extractor, seed=args.seed)
            return x, scores, secs

        train = load_split("digits", "train")
        x_train = images01(train, info.num_levels)
        idx = np.random.default_rng(0).choice(len(x_train), size=min(n, len(x_train)), replace=False)
        floor = score_samples(x_train[idx], x_test, extractor, seed=args.seed)
        res["floor_fid"] = float(floor["fid"])
        print(f"real-vs-real floor ({len(idx)} train images vs test): FID {floor['fid']:.3f}", flush=True)
    if "ddim" in what:
        if model.conditional:
            common.fail("--what ddim: use an unconditional DDPM config (ddpm_digits)")
        _, sc, secs = run("ddpm", 0, 1.0)
        res["ddpm"] = {"fid": float(sc["fid"]), "precision": float(sc["precision"]),
                       "recall": float(sc["recall"]), "seconds": secs}
        print(f"DDPM-{exp.model.timesteps}: FID {sc['fid']:.3f} (precision {sc['precision']:.2f}, "
              f"recall {sc['recall']:.2f}; {secs:.1f} s for {n})", flush=True)
        table = {}
        for eta in _floats(args.etas):
            for s in _ints(args.steps):
                _, sc, secs = run("ddim", s, eta)
                table[f"eta={eta:g},S={s}"] = {"fid": float(sc["fid"]), "seconds": secs}
                print(f"DDIM eta={eta:g} S={s}: FID {sc['fid']:.3f} ({secs:.1f} s)", flush=True)
                res["ddim"] = table
                dump()
        steps = _ints(args.steps)
        lines = ["| eta \\ S | " + " | ".join(str(s) for s in steps) + " |",
                 "|---|" + "---|" * len(steps)]
        for eta in _floats(args.etas):
            lines.append(f"| {eta:g} | " + " | ".join(f"{table[f'eta={eta:g},S={s}']['fid']:.2f}" for s in steps) + " |")
        res["ddim_table_md"] = "\n".join(lines)
        print("FID (1000 samples vs the test split; floor %.2f; DDPM-%d %.2f)" % (
            res["floor_fid"], exp.model.timesteps, res["ddpm"]["fid"]))
        print(res["ddim_table_md"], flush=True)
        dump()
    if "cfg" in what:
        if not model.conditional:
            common.fail("--what cfg: use a class-conditional DDPM config (ddpm_digits_cfg)")
        labels = np.arange(args.num, dtype=np.int32) % info.num_classes
        rows = {}
        for w in _floats(args.scales):
            x, sc, secs = run(exp.model.sampler, exp.model.sample_steps, exp.model.eta, w, labels)
            pred = np.asarray(extractor(x)["logits"]).argmax(-1)
            acc = float(np.mean(pred == labels))
            rows[f"{w:g}"] = {"label_accuracy": acc, "fid": float(sc["fid"]), "seconds": secs}
            print(f"guidance w={w:g}: label accuracy {acc:.3f}, FID {sc['fid']:.3f} ({secs:.1f} s)", flush=True)
            res["cfg"] = rows
            dump()
        real_acc = float(np.mean(np.asarray(extractor(x_test)["logits"]).argmax(-1) == test["label"]))
        res["feature_net_test_accuracy"] = real_acc
        print(f"(the feature network labels the real test split with accuracy {real_acc:.3f})")
        dump()
    if "cg" in what:
        from gen_jax.diffusion.classifier_guidance import make_classifier_guided_sampler
        from gen_jax.diffusion.noisy_classifier import build_noisy_classifier

        if not args.classifier_workdir:
            common.fail("--what cg needs --classifier_workdir (a trained noisy_classifier_digits run)")
        cexp = common.load_experiment(args.classifier_config)
        clf = build_noisy_classifier(cexp.model, info)
        cstate, _ = common.restore_state(cexp, clf.model, args.classifier_workdir, info)
        cparams = eval_params(cstate, clf.model)
        labels = np.arange(args.num, dtype=np.int32) % info.num_classes
        rows = {}
        for s_ in _floats(args.cg_scales):
            fn = jax.jit(make_classifier_guided_sampler(den, clf, s_, "ddim", args.cg_steps, 0.0),
                         static_argnums=(3,))
            jax.block_until_ready(fn(params, cparams, key, bs, labels[:bs]))
            t1 = time.time()
            x = np.concatenate([np.asarray(fn(params, cparams, jax.random.fold_in(key, 20 + i), bs,
                                              labels[st:st + bs]))
                                for i, st in enumerate(range(0, n, bs))])[:n]
            secs = time.time() - t1
            sc = score_samples(x, x_test, extractor, seed=args.seed)
            acc = float(np.mean(np.asarray(extractor(x)["logits"]).argmax(-1) == labels))
            rows[f"{s_:g}"] = {"label_accuracy": acc, "fid": float(sc["fid"]), "seconds": secs}
            print(f"classifier guidance s={s_:g} (DDIM-{args.cg_steps}): label accuracy {acc:.3f}, "
                  f"FID {sc['fid']:.3f} ({secs:.1f} s)", flush=True)
            res["classifier_guidance"] = rows
            dump()
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
