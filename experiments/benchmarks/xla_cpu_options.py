"""Which XLA CPU compiler options make the library's train steps faster, measured per family.

    python -m experiments.benchmarks.xla_cpu_options [--configs ddpm_digits_unet,...] [--steps 5] [--rounds 3]

For each config, the library's train step (:func:`gen_jax.train.step.make_step_fn` on the
config's model, batch and optimizer) is compiled once per option set with
``jax.jit(..., compiler_options=...)`` and the variants are timed interleaved in this one
process (``--rounds`` rounds of ``--steps`` steps, medians), so they share the machine's load.
Each variant's first-step loss terms are printed beside the baseline's relative difference
(the options must not change the numbers beyond float rounding).

The option sets are XLA ``DebugOptions`` fields this jaxlib has (listed from the binary:
``strings jaxlib/*.so | grep xla_cpu_``): YNNPACK library fusions of dots / elementwise /
reductions / convolutions (``xla_cpu_experimental_ynn_fusion_type``), the XNNPACK graph
fusion, oneDNN, fast math. The winner is the library default,
:data:`gen_jax.xla_options.CPU_COMPILER_OPTIONS`.
"""
from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

_L = "LIBRARY_FUSION_TYPE_"


def _ynn(*types: str) -> dict:
    return {"xla_cpu_experimental_ynn_fusion_type": ",".join(_L + t for t in types)}


OPTION_SETS = {
    "none (XLA's defaults)": {},
    "ynn dot+eltwise": _ynn("DOT", "ELTWISE"),
    "ynn dot+eltwise+reduce+conv": _ynn("DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_CONVOLUTION"),
    "ynn dot": _ynn("DOT"),
    "xnn graph greedy": {"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
    "fast math": {"xla_cpu_enable_fast_math": True},
}


def _setup(name: str):
    from experiments import common
    from gen_jax.train import loop, sharding as shd
    from gen_jax.train.step import make_step_fn

    exp = common.load_experiment(name)
    info, model, mesh = common.setup(exp)
    stream = common.build_stream(exp, info, mesh)
    phases, opts, _, _, init_fn = loop.init_state(exp, model, stream.batch_at(0), mesh, shd.batch_sharding(mesh))
    fn = make_step_fn(phases, opts, ema_decay=exp.train.ema_decay or None, ema_groups=model.training.ema_groups)
    batches = loop.step_batches(stream, 0, model.training.batches_per_step)
    return fn, (lambda: init_fn(stream.batch_at(0))), batches, loop.place_frozen(model, mesh)


def _loss_terms(metrics) -> dict:
    return {k: float(np.asarray(v)) for k, v in metrics.items() if np.ndim(v) == 0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="ddpm_digits_unet,ddpm_digits,vae_digits,gated_pixelcnn_digits,"
                                        "image_transformer_digits,glow_digits")
    p.add_argument("--options", default=",".join(OPTION_SETS), help="comma-separated keys of OPTION_SETS")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args(argv)
    names = a.options.split(",")
    print(f"train step ms (median of {a.rounds} interleaved rounds x {a.steps} steps); speed relative to "
          f"'{names[0]}'", flush=True)
    for cfg in a.configs.split(","):
        fn, init, batches, frozen = _setup(cfg)
        steps, states, first = {}, {}, {}
        for k in names:
            steps[k] = jax.jit(fn, donate_argnums=0, compiler_options=OPTION_SETS[k])
            states[k], m = steps[k](init(), batches, frozen)
            first[k] = _loss_terms(m)
        times = {k: [] for k in names}
        for _ in range(a.rounds):
            for k in names:
                t0 = time.perf_counter()
                s = states[k]
                for _ in range(a.steps):
                    s, m = steps[k](s, batches, frozen)
                jax.block_until_ready(m)
                states[k] = s
                times[k].append((time.perf_counter() - t0) / a.steps * 1e3)
        ms = {k: statistics.median(v) for k, v in times.items()}
        base = names[0]
        for k in names:
            diff = max((abs(first[k][t] - first[base][t]) / max(abs(first[base][t]), 1e-12)
                        for t in first[base] if t in first[k]), default=0.0)
            print(f"  {cfg:26s} {k:30s} {ms[k]:8.1f} ms/step  x{ms[base] / ms[k]:4.2f}  "
                  f"(first-step metrics within {diff:.1e} relative of the baseline)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
