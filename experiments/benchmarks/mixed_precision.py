"""bfloat16 compute against float32: a VAE and a DDPM on digits, test bits/dim evaluated in float32.

    python -m experiments.benchmarks.mixed_precision [--vae_steps 1500] [--ddpm_steps 3000]
        [--only vae,ddpm] [--time_steps 50]

Each model is trained twice by the library's loop (``gen_jax.train.loop.train``), with the
same seed, batches and steps: ``config.model.compute_dtype='float32'`` and ``'bfloat16'``
(:mod:`gen_jax.nn.precision`: matmuls in bf16, params / optimizer state / norms / softmax /
losses in float32). Both trained parameter sets are then scored on the test split by the
*float32* model (the same network with ``compute_dtype='float32'``), so the bound itself is
computed in float32 and the difference measures what bf16 training changed.

* VAE: ``experiments/configs/vae_digits.py`` (MLP encoder/decoder, discretized logistic
  mixture; bits/dim of the IWAE-1000 bound);
* DDPM: ``experiments/configs/ddpm_digits.py`` (pixel MLP denoiser with the level posterior,
  hybrid loss, EMA 0.999; bits/dim of the full 1000-term variational bound), with
  ``--ddpm_steps`` steps instead of the config's 8000 (the cosine schedule follows the step
  count) to keep the run under about 25 minutes on 2 CPU cores.

Printed per model: the test bits/dim of each precision, their difference (target: within
0.02 bits/dim), the training wall time of each run (compile included) and the median ms per
compiled step of each (both steps timed in turns, 5 rounds of ``--time_steps`` steps on one
batch, so they share the machine's load; ``--time_only`` prints only these). On a
CPU without native bf16 matmuls, bf16 is expected to be no faster (XLA converts to float32
around the dot); the figure is reported as measured.

Measured 2026-12-03 (2 CPU cores shared with other jobs, load about 2; 509 s in all):

======  =====  ===========  ===========  ========  ===========  ============
model   steps  f32 bpd      bf16 bpd     bf16-f32  f32 ms/step  bf16 ms/step
======  =====  ===========  ===========  ========  ===========  ============
VAE     1500   1.8562       1.8544       -0.0018   4.5          5.0
DDPM    3000   2.0343       2.0339       -0.0004   52.1         63.3
======  =====  ===========  ===========  ========  ===========  ============

Both within the 0.02 bits/dim target; bf16 compute is 1.1-1.2x *slower* per step on this CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax

from experiments.benchmarks.timing import median_ms_per_step

MODELS = {"vae": "vae_digits", "ddpm": "ddpm_digits"}
DTYPES = ("float32", "bfloat16")


def _exp(config: str, dtype: str, steps: int):
    from experiments import common

    return common.load_experiment(config, {
        "model.compute_dtype": dtype, "train.steps": str(steps), "mesh.num_devices": "1",
        "train.ckpt_every": str(steps), "train.log_every": str(max(steps // 10, 1)), "train.sample_every": "0"})


def _compiled_step(config: str, dtype: str, steps: int):
    """``(run(k), compile seconds)``: ``k`` compiled train steps of ``config`` in ``dtype``
    from its initial state on one fixed batch (the loop's step function)."""
    from experiments import common
    from gen_jax.train import sharding as shd
    from gen_jax.train.loop import init_state, step_batches
    from gen_jax.train.step import make_train_step

    exp = _exp(config, dtype, steps)
    info, model, mesh = common.setup(exp)
    stream = common.build_stream(exp, info, mesh)
    batch_sh = shd.batch_sharding(mesh)
    phases, optimizers, _, state_sh, init_fn = init_state(exp, model, stream.batch_at(0), mesh, batch_sh)
    step = make_train_step(phases, optimizers, ema_decay=exp.train.ema_decay or None,
                           ema_groups=model.training.ema_groups, state_sharding=state_sh, batch_sharding=batch_sh,
                           donate=False)
    state, batches = init_fn(stream.batch_at(0)), step_batches(stream, 0, model.training.batches_per_step)
    t0 = time.time()
    jax.block_until_ready(step(state, batches))

    def run(k):
        out = None
        for _ in range(k):
            out = step(state, batches)
        jax.block_until_ready(out)

    return run, time.time() - t0


def interleaved_ms_per_step(name: str, steps: int, n: int, rounds: int = 5) -> dict:
    """``{dtype: median ms/step}``: both precisions' compiled steps timed in turns (f32, bf16,
    f32, ...; ``rounds`` rounds of ``n`` steps), so they share the machine's load."""
    runs = {dt: _compiled_step(MODELS[name], dt, steps)[0] for dt in DTYPES}
    times = {dt: [] for dt in DTYPES}
    for _ in range(rounds):
        for dt in DTYPES:
            times[dt].append(median_ms_per_step(runs[dt], n, repeats=1))
    return {dt: statistics.median(t) for dt, t in times.items()}


def train_and_score(name: str, steps: int) -> dict:
    """``{dtype: {'bpd', 'train_s', 'eval_s', 'loss'}}`` for ``name`` in ``MODELS``."""
    from experiments import common
    from gen_jax.data.datasets import load_split
    from gen_jax.evaluation.likelihood import split_bpd
    from gen_jax.train.loop import eval_params, train

    out = {}
    exp32 = _exp(MODELS[name], "float32", steps)
    info, model32, mesh = common.setup(exp32)
    test = load_split(exp32.dataset.name, "test", common.data_dir(exp32))
    for dtype in DTYPES:
        exp = _exp(MODELS[name], dtype, steps)
        _, model, _ = common.setup(exp)
        stream = common.build_stream(exp, info, mesh)
        with tempfile.TemporaryDirectory() as wd:
            t0 = time.time()
            res = train(exp, model, os.path.join(wd, "run"), stream, info, progress=False, mesh=mesh)
            train_s = time.time() - t0
        params = eval_params(res.state, model)
        t0 = time.time()
        bpd = split_bpd(model32, params, test, info, jax.random.PRNGKey(0), exp.eval.batch_size)
        eval_s = time.time() - t0
        out[dtype] = {"bpd": bpd, "train_s": train_s, "eval_s": eval_s, "loss": res.last_metrics.get("loss", float("nan"))}
        print(f"  {name} {dtype:9s}: test {bpd:.4f} bits/dim (float32 eval, {eval_s:.0f} s), final train loss "
              f"{out[dtype]['loss']:.4f}, {steps} steps in {train_s:.0f} s (compile included)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae_steps", type=int, default=1500)
    ap.add_argument("--ddpm_steps", type=int, default=3000)
    ap.add_argument("--only", default="vae,ddpm")
    ap.add_argument("--time_steps", type=int, default=50)
    ap.add_argument("--time_only", action="store_true", help="only the interleaved ms/step of both precisions")
    args = ap.parse_args(argv)
    steps = {"vae": args.vae_steps, "ddpm": args.ddpm_steps}
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs", flush=True)
    t_all, rows = time.time(), {}
    for name in args.only.split(","):
        print(f"{name} ({MODELS[name]}, {steps[name]} steps, seed of the config):", flush=True)
        ms = interleaved_ms_per_step(name, steps[name], args.time_steps)
        print("  ms/step (interleaved): " + ", ".join(f"{dt} {v:.1f}" for dt, v in ms.items()), flush=True)
        if args.time_only:
            continue
        rows[name] = train_and_score(name, steps[name])
        for dt in DTYPES:
            rows[name][dt]["ms_per_step"] = ms[dt]
    print(f"\n{'model':6s} {'steps':>6s} {'f32 bpd':>8s} {'bf16 bpd':>9s} {'bf16-f32':>9s} {'|d|<=0.02':>9s} "
          f"{'f32 ms/step':>11s} {'bf16 ms/step':>12s}")
    for name, r in rows.items():
        a, b = r["float32"], r["bfloat16"]
        d = b["bpd"] - a["bpd"]
        print(f"{name:6s} {steps[name]:6d} {a['bpd']:8.4f} {b['bpd']:9.4f} {d:+9.4f} {str(abs(d) <= 0.02):>9s} "
              f"{a['ms_per_step']:11.1f} {b['ms_per_step']:12.1f}")
    print(f"total {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
