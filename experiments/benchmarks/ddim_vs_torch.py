"""DDIM-50 sampling of the digits pixel-MLP DDPM: gen_jax (one jitted ``lax.scan``) vs a
PyTorch eager loop of the same denoiser.

    python -m experiments.benchmarks.ddim_vs_torch [--batches 16,256] [--steps 50] [--repeats 5]

The model is ``experiments/configs/ddpm_digits.py``: the residual MLP denoiser
(gen_jax/nn/mlp_denoiser.py; width 512, 4 blocks, sinusoidal time embedding) over the 64
flattened pixels, per-pixel logits over the 17 levels turned into eps by the level posterior
(``gen_jax.diffusion.model.level_posterior_eps``), plus the 64 learned-variance channels that
DDIM ignores, and ``clip_x0``. Params are the Flax init, perturbed so that no layer is zero
(the zero-initialized output layers would make every sample trivial), and copied into a PyTorch
module of the same architecture; before timing, the two denoisers are checked to agree to 1e-4
and the two samplers (same ``x_T``) to give the same samples.

* gen_jax: ``model.denoiser.make_sampler('ddim', S, 0.0)`` under one ``jax.jit`` with the library's compiler options (``gen_jax.xla_options.jit``) (the library
  sampler, gen_jax/diffusion/samplers.py: the S steps are one ``lax.scan``);
* PyTorch (if installed): ``torch.no_grad()`` Python loop of the S DDIM steps (Song et al.
  2021, Eq. 12 with eta = 0: ``x <- sqrt(abar') x0_hat + sqrt(1 - abar') eps``, ``x0_hat``
  clipped to [-1, 1] and ``eps`` recomputed from it), on ``torch.get_num_threads()`` threads.

Both runs are interleaved in one process (gen_jax, torch, gen_jax, ...); figures are medians
of ``--repeats`` draws of one batch after warm-up, and the ratio torch / gen_jax. PyTorch runs
at whichever of 1 thread or all cores is faster for one denoiser call (``fastest_threads``):
on a loaded machine its OpenMP team of 2 threads was up to 40x slower than 1 thread.

Measured 2026-12-02 (2 CPU cores; DDIM with eta = 0 no longer draws the unused noise, about 4%):

* idle machine (load average < 1): batch 16: gen_jax 96 ms, torch (2 threads) 155 ms, 1.61x;
  batch 256: gen_jax 838 ms, torch (2 threads) 833 ms, 0.99x;
* machine shared with ~4 other jobs (load average ~11): batch 16: 349 vs 983 ms (torch 1
  thread), 2.81x; batch 256: 4598 vs 5116 ms, 1.11x (before the noise fix).

With the library's compiler options (YNNPACK for dots only, :mod:`gen_jax.xla_options`), the
machine shared with a U-Net training run and a test job (load average ~2.4): batch 16: 123 vs
104 ms (torch 1 thread), 0.85x; batch 256: 1033 vs 1117 ms, 1.08x. Batch 16 is not ahead of
PyTorch in every run: at 16 images a DDIM step is ~2.5 ms, dominated by per-op overheads on
both sides, and the figure swings with the load (1.61x idle above, 0.85x here).

At batch 256 both are matmul-bound (XLA's YNNPACK dots reach ~190 GFLOP/s idle); the largest
non-matmul cost of a gen_jax step is the level posterior (``level_posterior_eps``: softmax and
sums over the 17 levels, which XLA hands to a slow YNNPACK reduction, ~3 of ~17 ms per step);
written with its two sums as dots (``e @ levels / e @ ones``) it is 4x faster and the whole
DDIM-50 draw 15% faster at batch 256 (11% at 16, same samples), measured in one process.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import xla_options
from gen_jax.diffusion.samplers import ddim_timesteps


# ----------------------------------------------------------------------------- gen_jax side


def build_model():
    from experiments import common

    exp = common.load_experiment("ddpm_digits", {"mesh.num_devices": 1})
    info, model, _ = common.setup(exp)
    return exp, info, model


def perturbed_params(model, info, seed: int = 0):
    """The Flax init plus ``N(0, 0.03^2)`` on every leaf (no zero layer: nontrivial outputs)."""
    example = {"image": jnp.zeros((2,) + tuple(info.image_shape), jnp.float32)}
    params = model.training.init(jax.random.PRNGKey(seed), example)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [p + 0.03 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    return jax.tree.unflatten(tree, leaves)


# ----------------------------------------------------------------------------- torch side


def torch_sampler(params, exp, info, model):
    """``(denoise(x [B, 64], t [B]) -> eps, sample(x_T [B, 64], S) -> images in [0, 1])`` in
    PyTorch with the weights of ``params`` (Flax Dense kernel ``[in, out]`` -> Linear
    ``weight [out, in]``)."""
    import torch

    p = jax.tree.map(lambda a: torch.from_numpy(np.array(a, np.float32)), params)["params"]
    from gen_jax.nn.mlp_denoiser import as_mlp_denoiser_config

    dcfg = as_mlp_denoiser_config(exp.model.denoiser)
    d = math.prod(info.image_shape)
    k_lev = int(info.num_levels)
    tdim = dcfg.time_dim
    sched = model.denoiser.schedule
    abar = torch.from_numpy(np.array(sched.alpha_bars, np.float32))
    levels = torch.linspace(-1.0, 1.0, k_lev)
    half = tdim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))

    def lin(x, q):
        return torch.addmm(q["bias"], x, q["kernel"])

    def ln(x, q):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), q["scale"], q["bias"], 1e-6)

    silu = torch.nn.functional.silu

    def net(x, t):
        args = (dcfg.time_scale * t.float())[:, None] * freqs[None]
        temb = torch.cat([torch.sin(args), torch.cos(args)], -1)
        temb = lin(silu(lin(temb, p["temb0"])), p["temb1"])
        st = silu(temb)
        h = lin(x, p["dense_in"])
        for i in range(dcfg.num_blocks):
            q = p[f"block{i}"]
            r = lin(silu(ln(h, q["norm1"])), q["dense1"]) + lin(st, q["temb_proj"])
            r = lin(silu(ln(r, q["norm2"])), q["dense2"])
            h = h + r
        return lin(silu(ln(h, p["norm_out"])), p["dense_out"])

    def denoise(x, t):
        """eps of the level posterior (``level_posterior_eps``) at ``x [B, D]``, ``t [B]``."""
        b = x.shape[0]
        logits = net(x, t).reshape(b, d, -1)[..., :k_lev]  # per pixel: K logits, 1 variance
        a = abar[t][:, None]
        var = (1.0 - a).clamp(min=1e-12)
        ll = -torch.square(x[..., None] - a.sqrt()[..., None] * levels) / (2.0 * var[..., None])
        x0 = (torch.softmax(logits + ll, -1) * levels).sum(-1)
        return (x - a.sqrt() * x0) / var.sqrt()

    def sample(x, taus):
        """DDIM eta = 0 from ``x = x_T`` down the descending ``taus``; images in ``[0, 1]``."""
        b = x.shape[0]
        for i, tau in enumerate(taus):
            t = torch.full((b,), int(tau), dtype=torch.long)
            ab = abar[tau]
            ab_prev = abar[taus[i + 1]] if i + 1 < len(taus) else torch.tensor(1.0)
            eps = denoise(x, t)
            x0 = ((x - (1.0 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1.0, 1.0)
            eps = (x - ab.sqrt() * x0) / (1.0 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1.0 - ab_prev).sqrt() * eps
        img = (x.clamp(-1.0, 1.0) + 1.0) / 2.0
        return torch.round(img * (k_lev - 1)) / (k_lev - 1)

    return denoise, sample


# ----------------------------------------------------------------------------- checks and timing


def check_agreement(model, params, info, denoise_t, sample_t, steps: int) -> dict:
    """Max |gen_jax - torch| of the denoiser's eps, and the share of equal sample pixels from
    the same ``x_T`` (the library's first key split, as in its sampler)."""
    import torch

    b, d = 32, math.prod(info.image_shape)
    shape = (b,) + tuple(info.image_shape)
    x = jax.random.normal(jax.random.PRNGKey(3), shape)
    t = jnp.arange(b, dtype=jnp.int32) * 31
    eps_j = np.asarray(model.denoiser.denoise(params, x, t)[..., :info.image_shape[-1]]).reshape(b, d)
    with torch.no_grad():
        eps_t = denoise_t(torch.from_numpy(np.array(x).reshape(b, d)), torch.from_numpy(np.array(t)).long())
    err_eps = float(np.max(np.abs(eps_j - eps_t.numpy())))
    key = jax.random.PRNGKey(5)
    img_j = np.asarray(jax.jit(model.denoiser.make_sampler("ddim", steps, 0.0), static_argnums=2)(params, key, b))
    x_T = jax.random.normal(jax.random.split(key, 3)[0], shape, jnp.float32)
    taus = ddim_timesteps(model.denoiser.schedule.num_timesteps, steps)[::-1].tolist()
    with torch.no_grad():
        img_t = sample_t(torch.from_numpy(np.array(x_T).reshape(b, d)), taus).numpy()
    return {"eps_max_abs": err_eps, "sample_equal": float(np.mean(img_j.reshape(b, d) == img_t)),
            "eps_scale": float(np.std(eps_j))}


def fastest_threads(call, trials: int = 5) -> int:
    """Sets and returns the torch thread count (1 or all cores) under which ``call()`` is
    faster (median of ``trials``): on a loaded machine torch's OpenMP team of 2 can be many
    times slower than 1 thread, and the benchmark compares against torch at its best."""
    import os

    import torch

    best = None
    for n in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(n)
        call()
        ts = []
        for _ in range(trials):
            t0 = time.perf_counter()
            call()
            ts.append(time.perf_counter() - t0)
        if best is None or statistics.median(ts) < best[1]:
            best = (n, statistics.median(ts))
    torch.set_num_threads(best[0])
    return best[0]


def interleaved_ms(fns: dict, repeats: int) -> dict:
    """Median wall ms of each ``fn()`` (which blocks) over ``repeats`` rounds, one call of each
    per round in turn."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="16,256")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    exp, info, model = build_model()
    params = perturbed_params(model, info)
    try:
        import torch
    except ImportError:
        torch = None
    print(f"DDIM-{a.steps} (eta 0) of ddpm_digits (pixel MLP, level posterior), "
          f"{jax.devices()[0].platform}, median of {a.repeats} interleaved draws")
    if torch is not None:
        denoise_t, sample_t = torch_sampler(params, exp, info, model)
        chk = check_agreement(model, params, info, denoise_t, sample_t, a.steps)
        print(f"  agreement: denoiser eps max |diff| {chk['eps_max_abs']:.2e} (eps std "
              f"{chk['eps_scale']:.2f}); samples from the same x_T: {100 * chk['sample_equal']:.2f}% "
              f"pixels equal")
        assert chk["eps_max_abs"] < 1e-4, chk
        assert chk["sample_equal"] > 0.99, chk
        taus = ddim_timesteps(model.denoiser.schedule.num_timesteps, a.steps)[::-1].tolist()
    sample_j = xla_options.jit(model.denoiser.make_sampler("ddim", a.steps, 0.0), static_argnums=2)
    d = math.prod(info.image_shape)
    print(f"{'batch':>6s} {'gen_jax ms':>11s} {'torch ms':>10s} {'torch thr':>10s} {'torch/gen_jax':>14s}")
    for b in [int(x) for x in a.batches.split(",")]:
        key = jax.random.PRNGKey(b)
        jax.block_until_ready(sample_j(params, key, b))  # compile
        fns = {"jax": lambda: jax.block_until_ready(sample_j(params, key, b))}
        if torch is not None:
            x_T = torch.randn(b, d)

            def one_call():
                with torch.no_grad():
                    denoise_t(x_T, torch.full((b,), 500, dtype=torch.long))

            threads = fastest_threads(one_call)

            def run_torch():
                with torch.no_grad():
                    sample_t(x_T, taus)

            run_torch()
            fns["torch"] = run_torch
        ms = interleaved_ms(fns, a.repeats)
        if torch is None:
            print(f"{b:6d} {ms['jax']:11.1f} {'n/a':>10s} {'n/a':>10s} {'n/a':>14s}")
        else:
            print(f"{b:6d} {ms['jax']:11.1f} {ms['torch']:10.1f} {threads:10d} {ms['torch'] / ms['jax']:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
