"""The trainer's non-finite guard: decided before the update (the library) vs on the finished state.

    python -m experiments.benchmarks.train_step_guard [--configs ddpm_digits,vae_digits,gated_pixelcnn_digits] [--steps 10]

For each config, the library's train step (:func:`gen_jax.train.step.make_step_fn`, jitted and
donated as the loop runs it) against the same step followed by the previous guard,
``where(finite, new_state, old_state)`` over the whole state once ``finite`` is known from the
finished update. The previous guard could not fuse into the update (its condition depends on
norms of the new parameters), so it read and wrote the params, both Adam moments and the EMA
once more per step; the library's guard is decided from the loss terms and gradient norm
before the update and fuses into the optimizer's elementwise pass. Both variants are compiled
in one process and timed interleaved (median of 5 rounds of ``--steps`` steps), so the
machine's load cancels in the ratio. Also prints each step's XLA cost analysis (GFLOP and
bytes accessed per step).

Measured 2026-12-02, --steps 20, load ~4 (2 cores shared; only the ratios mean anything):
ddpm_digits 95.0 vs 119.5 ms/step (1.26x), gated_pixelcnn_digits 173.3 vs 176.0 (1.02x). At
load ~10 the same run gave 1.13x / 0.73x and vae_digits 0.87x: within the noise of a loaded
machine for the small and conv-bound steps; the gain is where optimizer traffic dominates.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp


def _steps(name: str):
    from experiments import common
    from gen_jax.train import loop, sharding as shd
    from gen_jax.train.step import make_step_fn

    exp = common.load_experiment(name)
    info, model, mesh = common.setup(exp)
    stream = common.build_stream(exp, info, mesh)
    bsh = shd.batch_sharding(mesh)
    phases, opts, _, _, init_fn = loop.init_state(exp, model, stream.batch_at(0), mesh, bsh)
    fn = make_step_fn(phases, opts, ema_decay=exp.train.ema_decay or None, ema_groups=model.training.ema_groups)

    def finished_state_guard(state, batches, frozen):
        new, m = fn(state, batches, frozen)
        kept = jax.tree.map(lambda n, o: jnp.where(m["finite"] > 0, n, o), new, state)
        return kept.replace(step=new.step), m

    batches = loop.step_batches(stream, 0, model.training.batches_per_step)
    frozen = loop.place_frozen(model, mesh)
    variants = {"guard before the update (library)": jax.jit(fn, donate_argnums=0),
                "guard on the finished state (before)": jax.jit(finished_state_guard, donate_argnums=0)}
    return variants, (lambda: init_fn(stream.batch_at(0))), batches, frozen


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="ddpm_digits,vae_digits,gated_pixelcnn_digits")
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    for name in a.configs.split(","):
        variants, init, batches, frozen = _steps(name)
        states, times = {}, {k: [] for k in variants}
        for k, f in variants.items():
            cost = f.lower(init(), batches, frozen).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            s, m = f(init(), batches, frozen)
            jax.block_until_ready(m)
            states[k] = s
            print(f"{name:24s} {k:38s} {cost.get('flops', 0) / 1e9:7.2f} GFLOP  "
                  f"{cost.get('bytes accessed', 0) / 1e6:8.1f} MB accessed per step", flush=True)
        for _ in range(5):
            for k, f in variants.items():
                t0 = time.perf_counter()
                s = states[k]
                for _ in range(a.steps):
                    s, m = f(s, batches, frozen)
                jax.block_until_ready(m)
                states[k] = s
                times[k].append((time.perf_counter() - t0) / a.steps * 1e3)
        ms = {k: statistics.median(v) for k, v in times.items()}
        lib, old = ms.values()
        print(f"{name:24s} library {lib:7.1f} ms/step, before {old:7.1f} ms/step: {old / lib:4.2f}x faster", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
