"""Compiled memory of the train step under the rematerialization policies (``config.model.remat``).

    python -m experiments.benchmarks.remat_memory [--configs ddpm_digits_unet,image_transformer_digits]
                                                  [--batch 0] [--policies none,full,dots_saveable]

For each config (the DDPM U-Net on digits: ResBlock / AttnBlock rematerialized; the transformer
LM over digits pixels: each decoder Block) and each policy of :mod:`gen_jax.nn.remat`, the
library's train step (``make_step_fn``: loss, gradients, Adam, norms, the finite guard) is
lowered on the abstract state and compiled for one device, and XLA's
``compiled.memory_analysis()`` is printed: ``temp_size_in_bytes`` (the buffers live inside
the program: activations kept for the backward pass, gradients, workspace) and the
argument / output sizes (state and batch; the same for every policy). Nothing is run, so the
figures do not depend on the machine's load. ``--batch`` overrides the configs' batch sizes
(0 = theirs).

Rematerialization trades memory for compute (Chen et al. 2016): ``full`` keeps only each
block's inputs and recomputes the block in the backward pass; ``dots_saveable`` keeps the
matmul / conv outputs and recomputes the elementwise ops between them.

The last column compiles the same step with XLA:CPU's default pass pipeline, whose
``cse_barrier_expander`` removes ``jax.checkpoint``'s optimization barriers before CSE merges
the recomputation back into the forward pass: there remat is a no-op on CPU, which is why the
train step disables that pass (:data:`gen_jax.train.step.REMAT_CPU_OPTIONS`).

Measured 2026-12-03 (temp MiB of the compiled step; args 60.90 / 3.96 MiB for every policy):

=========================  =====  ======  ======  =============  ===============================
config                     batch  none    full    dots_saveable  (XLA default passes: n/f/d)
=========================  =====  ======  ======  =============  ===============================
ddpm_digits_unet           64     152.96  55.93   71.96          152.96 / 153.84 / 153.80
image_transformer_digits   32     74.77   33.95   50.49          74.77 / 75.50 / 85.26
=========================  =====  ======  ======  =============  ===============================

``full`` takes the U-Net step to 0.37x and the LM step to 0.45x of its temp memory,
``dots_saveable`` to 0.47x and 0.68x.
"""
from __future__ import annotations

import argparse
import time

import jax

DEFAULT_CONFIGS = ("ddpm_digits_unet", "image_transformer_digits")
POLICIES = ("none", "full", "dots_saveable")


def step_memory(config: str, remat: str, batch: int = 0, cse_barriers: bool = True) -> dict:
    """``memory_analysis()`` figures (bytes) of ``config``'s compiled train step with ``remat``,
    compiled with the train step's options (``cse_barriers=False``: without
    :data:`gen_jax.train.step.REMAT_CPU_OPTIONS`, i.e. XLA:CPU's default pass pipeline)."""
    from experiments import common
    from gen_jax import xla_options
    from gen_jax.train import sharding as shd
    from gen_jax.train.loop import init_state
    from gen_jax.train.step import make_step_fn, step_compiler_options

    overrides = {"model.remat": remat, "mesh.num_devices": "1"}
    if batch:
        overrides["train.batch_size"] = str(batch)
    exp = common.load_experiment(config, overrides)
    info, model, mesh = common.setup(exp)
    stream = common.build_stream(exp, info, mesh)
    example = stream.batch_at(0)
    phases, optimizers, abstract, _, _ = init_state(exp, model, example, mesh, shd.batch_sharding(mesh))
    step = make_step_fn(phases, optimizers, ema_decay=exp.train.ema_decay or None,
                        ema_groups=model.training.ema_groups)
    batches = tuple(example for _ in range(model.training.batches_per_step))
    t0 = time.time()
    opts = step_compiler_options() if cse_barriers else xla_options.compiler_options()
    compiled = xla_options.jit(step, donate_argnums=(0,), compiler_options=opts).lower(abstract, batches, {}).compile()
    mem = compiled.memory_analysis()
    return {"temp": mem.temp_size_in_bytes, "args": mem.argument_size_in_bytes, "out": mem.output_size_in_bytes,
            "batch": exp.train.batch_size, "compile_s": time.time() - t0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--no_default_passes", action="store_true",
                    help="skip the second compile with XLA:CPU's default passes (barriers removed)")
    args = ap.parse_args(argv)
    mb = lambda b: b / 2 ** 20
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; compiled train step, one device")
    print(f"{'config':28s} {'batch':>5s} {'remat':14s} {'temp MiB':>9s} {'vs none':>8s} {'args MiB':>9s} "
          f"{'out MiB':>8s} {'compile s':>9s} {'temp MiB, XLA default passes':>29s}")
    for config in args.configs.split(","):
        base = None
        for policy in args.policies.split(","):
            r = step_memory(config, policy, args.batch)
            base = r["temp"] if policy == "none" else base
            ratio = f"{r['temp'] / base:.2f}x" if base else "-"
            plain = "-" if args.no_default_passes else f"{mb(step_memory(config, policy, args.batch, False)['temp']):.2f}"
            print(f"{config:28s} {r['batch']:5d} {policy:14s} {mb(r['temp']):9.2f} {ratio:>8s} {mb(r['args']):9.2f} "
                  f"{mb(r['out']):8.2f} {r['compile_s']:9.1f} {plain:>29s}", flush=True)


if __name__ == "__main__":
    main()
