"""DiT vs U-Net as the DDPM denoiser on digits: train-step time and loss (or FID) per training minute.

    python -m experiments.benchmarks.dit_vs_unet [--minutes 2] [--batch 64] [--chunk 10] \
        [--fid --num 1000 --sample_steps 50] [--out results/benchmarks/dit_vs_unet]

Both arms are trained in ONE process, interleaved in chunks of ``--chunk`` steps (DiT chunk,
U-Net chunk, DiT, ...), through the library's trainer (``gen_jax.train.loop.init_state``,
``gen_jax.train.step.make_train_step``, the configs' batch streams from
``experiments.common``), each until its own training clock reaches ``--minutes`` (compile and
evaluation excluded), so the two share the machine's load:

* ``ddpm_digits_dit`` (gen_jax/nn/dit.py: patch 2, width 192, depth 6, 6 heads) and
  ``ddpm_digits_unet`` (gen_jax/nn/unet.py: ch 64, ch_mult (1, 2)), the same process (T = 1000
  linear betas, eps, L_simple), each config's optimizer (Adam, DiT 3e-4 / U-Net 2e-4, clip 1)
  at batch ``--batch``; for a run of a few hundred steps, both arms' learning-rate warm-up is
  set to ``--warmup`` steps (the configs' 200 would cover the whole budget) and their EMA decay
  to ``--ema_decay`` (the configs' 0.999 would leave the EMA near its initialization).

Prints (and writes ``--out``/dit_vs_unet.json and loss_vs_time.png):

* ms per train step of each arm (median over chunks after the first) and their ratio, with the
  FLOPs of one step's forward + backward (XLA's cost analysis of the loss gradient) and the
  rate each arm achieves against the machine's float32 matmul rate;
* the held-out loss ``L_simple`` on the whole test split (360 images) with one fixed draw of
  ``(t, eps)``, the same for both arms (a paired comparison), of the raw params at evenly spaced
  points of each arm's training clock, and the table of both at the same training times;
* with ``--fid``: FID of ``--num`` DDIM-``--sample_steps`` samples (eta 0; Song et al. 2021,
  Eq. 12) of each arm's EMA params against the test split (digits classifier features; trained
  into results/feature_nets/digits on first use), i.e. the FID reached per ``--minutes`` of
  training, with the sampling seconds.

Measured 2026-12-02 (``--minutes 3 --fid --num 1000``, default sizes; the 2 cores shared with
four other agents' jobs: the matmul rate was 63 GFLOP/s at the start and 27 at the end against
320-420 on a free machine, so only the ratios of this one run mean anything):

* step at batch 64: DiT 1102 ms, U-Net 1910 ms (DiT 1.73x faster; 17.3 vs 28.3 GFLOP per step,
  both about 15-16 GFLOP/s achieved); in 3 training minutes DiT made 171 steps, U-Net 101;
* held-out ``L_simple`` at equal training time (minutes 0.75 / 1.5 / 2.25 / 3.0): DiT 0.283 /
  0.176 / 0.158 / 0.150, U-Net 0.539 / 0.232 / 0.146 / 0.135: the DiT leads for the first
  1.5 minutes, the U-Net's lower loss per step overtakes it after about 2 minutes;
* FID of 1000 DDIM-50 EMA samples after 3 minutes: DiT 70.9 (precision 0.24, recall 0.50),
  U-Net 135.4 (0.09, 0.06), both far from trained (a few hundred steps; the EMA lags), sampling
  197 s vs 386 s. At this budget the DiT gives the better samples per training minute; the
  U-Net's loss advantage would need longer runs to show in FID (the bake-off's U-Net row
  trains 18 minutes on an idle machine).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import numpy as np

ARMS = (("dit", "ddpm_digits_dit"), ("unet", "ddpm_digits_unet"))


class Arm:
    """One model under training: its experiment, compiled step, state and measurements."""

    def __init__(self, name: str, config: str, overrides: dict):
        from experiments import common
        from gen_jax.train import sharding as shd
        from gen_jax.train.loop import init_state, place_frozen
        from gen_jax.train.step import make_train_step

        self.name, self.config = name, config
        self.exp = common.load_experiment(config, overrides)
        self.info, self.model, mesh = common.setup(self.exp)
        self.stream = common.build_stream(self.exp, self.info, mesh)
        batch_sh = shd.batch_sharding(mesh)
        example = self.stream.batch_at(0)
        phases, optimizers, _, state_sh, init_fn = init_state(self.exp, self.model, example, mesh, batch_sh)
        self.state = init_fn(example)
        self.params_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))
        self.step_fn = make_train_step(phases, optimizers, ema_decay=self.exp.train.ema_decay or None,
                                       ema_groups=self.model.training.ema_groups, state_sharding=state_sh,
                                       batch_sharding=batch_sh, frozen_sharding=shd.replicated(mesh))
        self.frozen = place_frozen(self.model, mesh)
        loss = self.model.training.phases[0].loss
        self.loss = jax.jit(loss)
        cost = jax.jit(jax.grad(lambda p, b, k: loss(p, b, k)[0])).lower(
            self.state.params, example, jax.random.PRNGKey(0)).cost_analysis()
        self.gflop = float((cost if isinstance(cost, dict) else cost[0])["flops"]) / 1e9
        self.steps, self.seconds = 0, 0.0
        self.chunk_ms: list[float] = []
        self.curve: list[tuple[float, int, float]] = []  # (train seconds, step, held-out loss)
        self.compile_s = 0.0

    def run(self, n: int) -> None:
        """``n`` train steps, timed (the first call, which compiles, is not counted)."""
        from gen_jax.train.loop import step_batches

        per = self.model.training.batches_per_step
        t0 = time.perf_counter()
        for _ in range(n):
            self.state, metrics = self.step_fn(self.state, step_batches(self.stream, self.steps, per), self.frozen)
            self.steps += 1
        jax.block_until_ready(metrics)
        dt = time.perf_counter() - t0
        if self.steps == n:
            self.compile_s = dt
        else:
            self.seconds += dt
            self.chunk_ms.append(dt / n * 1e3)

    def held_out(self, batch, key) -> None:
        loss, _ = self.loss(self.state.params, batch, key)
        self.curve.append((self.seconds, self.steps, float(loss)))


def interpolate(curve, seconds: float) -> float:
    t, _, v = zip(*curve)
    return float(np.interp(seconds, t, v))


def plot(arms, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for a in arms:
        t, _, v = zip(*a.curve)
        ax.plot(np.asarray(t) / 60, v, marker="o", ms=3, label=f"{a.name} ({a.config})")
    ax.set_xlabel("training minutes (this run's machine load)")
    ax.set_ylabel("held-out L_simple (test split)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def score(arm, num: int, steps: int, x_test, extractor, seed: int) -> dict:
    from gen_jax.metrics.features import score_samples
    from gen_jax.train.loop import eval_params

    params = eval_params(arm.state, arm.model)
    fn = jax.jit(arm.model.denoiser.make_sampler("ddim", steps, 0.0), static_argnums=(2,))
    bs = min(500, num)
    key = jax.random.PRNGKey(seed)
    jax.block_until_ready(fn(params, key, bs))
    t0 = time.perf_counter()
    x = np.concatenate([np.asarray(fn(params, jax.random.fold_in(key, i), bs))
                        for i in range(-(-num // bs))])[:num]
    secs = time.perf_counter() - t0
    sc = score_samples(x, x_test, extractor, seed=seed)
    return {"fid": float(sc["fid"]), "precision": float(sc["precision"]), "recall": float(sc["recall"]),
            "sample_seconds": secs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="training-clock budget of each arm")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--chunk", type=int, default=10, help="steps per interleaved chunk")
    p.add_argument("--evals", type=int, default=8, help="held-out loss evaluations per arm")
    p.add_argument("--ema_decay", type=float, default=0.99)
    p.add_argument("--warmup", type=int, default=20, help="learning-rate warm-up steps of both arms")
    p.add_argument("--fid", action="store_true", help="also score DDIM samples of each arm (FID)")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--sample_steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/benchmarks/dit_vs_unet")
    args = p.parse_args(argv)
    from experiments.benchmarks.timing import matmul_gflops
    from gen_jax.data.datasets import load_split
    from gen_jax.evaluation.likelihood import images01

    os.makedirs(args.out, exist_ok=True)
    rate = matmul_gflops(1024)
    print(f"float32 matmul rate: {rate:.0f} GFLOP/s (the machine's load)", flush=True)
    overrides = {"train.batch_size": str(args.batch), "train.ema_decay": str(args.ema_decay),
                 "optim.warmup_steps": str(args.warmup), "mesh.num_devices": "1"}
    arms = [Arm(n, c, overrides) for n, c in ARMS]
    info = arms[0].info
    test = load_split("digits", "test")
    x_test = images01(test, info.num_levels)
    held = {"image": jax.numpy.asarray(x_test)}
    eval_key = jax.random.PRNGKey(args.seed + 1)  # one (t, eps) draw, the same for both arms
    budget = 60.0 * args.minutes
    for a in arms:
        a.run(1)  # compile
        a.held_out(held, eval_key)
        print(f"{a.name}: {a.config}, {a.params_count / 1e6:.2f}M params, {a.gflop:.1f} GFLOP per step "
              f"(forward + backward), compile + first step {a.compile_s:.1f} s", flush=True)
    next_eval = {a.name: budget / args.evals for a in arms}
    while any(a.seconds < budget for a in arms):
        for a in arms:
            if a.seconds >= budget:
                continue
            a.run(args.chunk)
            if a.seconds >= next_eval[a.name] or a.seconds >= budget:
                a.held_out(held, eval_key)
                next_eval[a.name] += budget / args.evals
                print(f"  {a.name}: {a.seconds:6.1f} s, step {a.steps:5d}, held-out loss {a.curve[-1][2]:.4f}",
                      flush=True)
    rate_end = matmul_gflops(1024)
    res = {"minutes": args.minutes, "batch": args.batch, "ema_decay": args.ema_decay, "warmup": args.warmup,
           "matmul_gflops": [rate, rate_end], "arms": {}}
    for a in arms:
        ms = statistics.median(a.chunk_ms[1:] or a.chunk_ms)
        res["arms"][a.name] = {"config": a.config, "params": a.params_count, "ms_per_step": ms,
                               "gflop_per_step": a.gflop, "gflops": a.gflop / ms * 1e3,
                               "steps": a.steps, "train_seconds": a.seconds, "curve": a.curve}
    d, u = res["arms"]["dit"], res["arms"]["unet"]
    res["step_ratio_unet_over_dit"] = u["ms_per_step"] / d["ms_per_step"]
    print(f"\ntrain step at batch {args.batch}: DiT {d['ms_per_step']:.0f} ms, U-Net {u['ms_per_step']:.0f} ms "
          f"-> the DiT step is {res['step_ratio_unet_over_dit']:.2f}x faster; steps in {args.minutes:g} min: "
          f"DiT {d['steps']}, U-Net {u['steps']}")
    print(f"achieved: DiT {d['gflops']:.0f} GFLOP/s ({d['gflop_per_step']:.1f} GFLOP/step), U-Net "
          f"{u['gflops']:.0f} GFLOP/s ({u['gflop_per_step']:.1f} GFLOP/step); matmul rate {rate:.0f} at the "
          f"start, {rate_end:.0f} at the end")
    print("held-out L_simple at the same training time:")
    print("| minutes | DiT | U-Net |\n|---|---|---|")
    table = []
    for f in np.linspace(0.25, 1.0, 4):
        s = f * budget
        row = (s / 60, interpolate(arms[0].curve, s), interpolate(arms[1].curve, s))
        table.append(row)
        print(f"| {row[0]:.2f} | {row[1]:.4f} | {row[2]:.4f} |")
    res["loss_table"] = table
    if args.fid:
        from experiments import common

        extractor = common.feature_extractor("digits", None)
        for a in arms:
            sc = score(a, args.num, args.sample_steps, x_test, extractor, args.seed)
            res["arms"][a.name]["fid"] = sc
            print(f"{a.name}: FID {sc['fid']:.2f} (precision {sc['precision']:.2f}, recall {sc['recall']:.2f}) of "
                  f"{args.num} DDIM-{args.sample_steps} samples after {args.minutes:g} training minutes "
                  f"({sc['sample_seconds']:.0f} s to sample)", flush=True)
    plot(arms, os.path.join(args.out, "loss_vs_time.png"))
    with open(os.path.join(args.out, "dit_vs_unet.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"wrote {args.out}/dit_vs_unet.json and loss_vs_time.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
