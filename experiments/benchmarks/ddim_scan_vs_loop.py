"""DDIM-50 sampling speed: one ``lax.scan`` program vs a Python loop over a jitted step.

    python -m experiments.benchmarks.ddim_scan_vs_loop [--config ddpm_digits_unet] [--batches 16,256] [--workdir W]

For the digits DDPM U-Net (``experiments/configs/ddpm_digits_unet.py``; trained params from
``--workdir`` if given, else random params of the same shapes: the speed does not depend on
the values), prints for each batch size the seconds to draw one batch with DDIM, S = 50,
eta = 0 (Song et al. 2021, Eq. 12):

* ``scan``: ``model.denoiser.make_sampler('ddim', 50)`` under one ``jax.jit`` (the library's
  sampler: the 50 steps are one XLA program);
* ``loop``: the same sampler with ``use_scan=False``: a Python loop calling a jitted single
  step 50 times (what a PyTorch-style sampler does);

and their ratio. Both produce identical samples (checked here, and in
tests/diffusion/test_diffusion_model.py). Figures are medians of 3 runs after compilation.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.timing import median_seconds


def main(argv=None) -> int:
    from experiments import common

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="ddpm_digits_unet")
    p.add_argument("--workdir", default="")
    p.add_argument("--batches", default="16,256")
    p.add_argument("--steps", type=int, default=50)
    a = p.parse_args(argv)
    exp = common.load_experiment(a.config)
    info, model, _ = common.setup(exp)
    if model.denoiser is None:
        common.fail(f"--config {a.config}: not a diffusion model (model {model.name!r} has no denoiser)")
    if a.workdir:
        from gen_jax.train.loop import eval_params

        params = eval_params(common.restore_state(exp, model, a.workdir, info)[0], model)
    else:
        r = np.random.default_rng(0)
        example = {"image": jnp.zeros((2,) + tuple(info.image_shape)), "label": jnp.zeros((2,), jnp.int32)}
        shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), example)
        params = jax.tree.map(lambda s: jnp.asarray(r.normal(0, 0.05, s.shape), s.dtype), shapes)
    make = model.denoiser.make_sampler
    print(f"DDIM-{a.steps} (eta 0) on {a.config}, {jax.devices()[0].platform}, median of 3 after compile")
    print(f"{'batch':>6s} {'scan s':>9s} {'loop s':>9s} {'loop/scan':>10s}")
    for b in [int(x) for x in a.batches.split(",")]:
        cond = {"label": jnp.arange(b) % max(info.num_classes, 1)} if model.conditional else None
        scan = jax.jit(make("ddim", a.steps, 0.0), static_argnums=2)
        loop = make("ddim", a.steps, 0.0, use_scan=False)
        key = jax.random.PRNGKey(1)
        xs, xl = scan(params, key, b, cond), loop(params, key, b, cond)  # compile both
        np.testing.assert_allclose(np.asarray(xs), np.asarray(xl), atol=1e-5)
        ts = median_seconds(lambda: scan(params, key, b, cond))
        tl = median_seconds(lambda: loop(params, key, b, cond))
        print(f"{b:6d} {ts:9.3f} {tl:9.3f} {tl / ts:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
