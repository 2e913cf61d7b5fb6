"""Speed of the VAE train step (the vae_digits config) against PyTorch on the same CPU.

    python -m experiments.benchmarks.vae_train_step [--steps 300] [--batch 64]

Prints, for the same architecture and objective (MLP 64-256-256-2x16 encoder, 16-256-256-64x15
decoder, negative ELBO with a 5-component discretized logistic mixture over 17 levels, Adam):

* gen_jax: steps/s of the library's compiled train step (``make_train_step``: loss, grads,
  Adam, grad/param norms and the non-finite guard in one XLA program), and of the full loop
  body (``BatchStream.batch_at`` + step, i.e. including host batching and transfer);
* PyTorch (if installed; ``pip install torch==2.13.0``): steps/s of an eager step and of a
  ``torch.compile``d step when compilation works here;
* the machine's float32 matmul rate (2048x2048 jnp.dot) and the fraction of it the gen_jax
  step reaches (matmul FLOPs of the step: forward + backward = 3x forward).

Every figure is the median over 5 repeats of ``--steps`` steps after warm-up.
"""
from __future__ import annotations

import argparse
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.timing import matmul_gflops, median_ms_per_step

LEVELS, MIX, LATENT, HIDDEN, D = 17, 5, 16, (256, 256), 64


def _median_rate(run, steps: int, repeats: int = 5) -> float:
    return 1e3 / median_ms_per_step(run, steps, repeats)


def step_matmul_flops(batch: int) -> float:
    enc = [D] + list(HIDDEN) + [2 * LATENT]
    dec = [LATENT] + list(HIDDEN[::-1]) + [D * 3 * MIX]
    fwd = sum(2 * a * b for a, b in zip(enc[:-1], enc[1:])) + sum(2 * a * b for a, b in zip(dec[:-1], dec[1:]))
    return 3.0 * fwd * batch


def bench_gen_jax(steps: int, batch: int) -> dict:
    from experiments import common
    from gen_jax.train.loop import init_state
    from gen_jax.train.step import make_train_step
    from gen_jax.train import sharding as shd

    exp = common.load_experiment("vae_digits", {"train.batch_size": batch, "mesh.num_devices": 1})
    info, model, mesh = common.setup(exp)
    stream = common.build_stream(exp, info, mesh)
    batch_sh = shd.batch_sharding(mesh)
    phases, optimizers, _, state_sh, init_fn = init_state(exp, model, stream.batch_at(0), mesh, batch_sh)
    step = make_train_step(phases, optimizers, state_sharding=state_sh, batch_sharding=batch_sh)
    state = init_fn(stream.batch_at(0))
    fixed = stream.batch_at(0)
    state, m = step(state, fixed)
    jax.block_until_ready(m)
    box = {"state": state, "i": 0}

    def run_step(k):
        s = box["state"]
        for _ in range(k):
            s, m = step(s, fixed)
        jax.block_until_ready(m)
        box["state"] = s

    def run_loop(k):
        s, i = box["state"], box["i"]
        for _ in range(k):
            s, m = step(s, stream.batch_at(i))
            i += 1
        jax.block_until_ready(m)
        box["state"], box["i"] = s, i

    return {"step": _median_rate(run_step, steps), "loop": _median_rate(run_loop, steps)}


def bench_torch(steps: int, batch: int, compiled: bool) -> float | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)

    def mlp(sizes):
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.GELU())
        return torch.nn.Sequential(*layers)

    enc = mlp([D] + list(HIDDEN) + [2 * LATENT])
    dec = mlp([LATENT] + list(HIDDEN[::-1]) + [D * 3 * MIX])
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    half = 1.0 / (LEVELS - 1)

    def loss_fn(levels):
        x = 2.0 * levels / (LEVELS - 1) - 1.0  # [B, D]
        h = enc(levels / (LEVELS - 1))
        mean, log_var = h[:, :LATENT], h[:, LATENT:]
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        raw = dec(z).view(-1, D, 3 * MIX)
        logit, mu, log_s = raw[..., :MIX], raw[..., MIX:2 * MIX], raw[..., 2 * MIX:].clamp(min=-7.0)
        inv_s = torch.exp(-log_s)
        c = x[..., None] - mu
        plus, minus = inv_s * (c + half), inv_s * (c - half)
        lcp, l1m = F.logsigmoid(plus), F.logsigmoid(-minus)
        d = torch.clamp(F.logsigmoid(minus) - lcp, max=-1e-30)
        ldelta = lcp + torch.log(-torch.expm1(d))
        lpdf = inv_s * c - log_s - 2.0 * F.softplus(inv_s * c) + math.log(2 * half)
        lmid = torch.where(ldelta > math.log(1e-5), ldelta, lpdf)
        lv = levels[..., None]
        lp = torch.where(lv == 0, lcp, torch.where(lv == LEVELS - 1, l1m, lmid))
        lp = torch.logsumexp(lp + F.log_softmax(logit, -1), -1).sum(-1)
        kl = 0.5 * (mean ** 2 + log_var.exp() - 1.0 - log_var).sum(-1)
        return (kl - lp).mean()

    def step(levels):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(levels)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        try:
            step = torch.compile(step)
        except Exception:  # noqa: BLE001 - no compiler toolchain: report eager only
            return None
    data = torch.randint(0, LEVELS, (batch, D)).float()
    try:
        for _ in range(3):
            step(data)
    except Exception as e:  # noqa: BLE001
        print(f"  torch.compile failed here: {type(e).__name__}: {str(e)[:120]}")
        return None

    def run(k):
        for _ in range(k):
            step(data)

    return _median_rate(run, steps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
    a = p.parse_args(argv)
    peak = matmul_gflops()
    gj = bench_gen_jax(a.steps, a.batch)
    te = bench_torch(a.steps, a.batch, compiled=False)
    tc = None if a.no_compile else bench_torch(a.steps, a.batch, compiled=True)
    flops = step_matmul_flops(a.batch)
    print(f"VAE train step, batch {a.batch}, {jax.devices()[0].platform} x{len(jax.devices())}, "
          f"median of 5 x {a.steps} steps")
    print(f"  matmul peak (2048^2 f32)          {peak:8.1f} GFLOP/s")
    print(f"  gen_jax compiled step             {gj['step']:8.1f} steps/s  "
          f"({gj['step'] * a.batch:8.0f} img/s, {100 * gj['step'] * flops / 1e9 / peak:4.1f}% of matmul peak)")
    print(f"  gen_jax stream + step (loop body) {gj['loop']:8.1f} steps/s")
    for name, r in (("PyTorch eager", te), ("PyTorch torch.compile", tc)):
        if r is None:
            print(f"  {name:33s}      n/a")
        else:
            print(f"  {name:33s} {r:8.1f} steps/s  (gen_jax / this = {gj['step'] / r:4.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
