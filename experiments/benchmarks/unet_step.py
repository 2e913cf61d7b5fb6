"""Speed of a U-Net denoiser train step (gen_jax vs PyTorch on the same CPU).

    python -m experiments.benchmarks.unet_step [--steps 20] [--batch 64] [--no_torch] [--no_flags]

The network is a digits-sized DDPM U-Net (gen_jax.nn.unet.UNet): 16x16x1 images, ch 32,
ch_mult (1, 2), 2 residual blocks per level, GroupNorm 8, dropout 0.1, self-attention at the
8x8 (lowest) resolution and in the middle. One step = forward + backward + Adam (lr 2e-4) on the
DDPM L_simple loss ``|| eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2``
(Ho et al. 2020, Eq. 14), batch 64, with everything (noise draws included) inside one ``jax.jit``.

Prints (every figure: median over 3 repeats of ``--steps`` steps after warm-up and compile):

* the machine's float32 matmul rate (2048x2048 ``jnp.dot``);
* gen_jax ms/step for variants of the same architecture, in one process (so they share the
  machine's load):
  - ``flax GroupNorm``: ``flax.linen.GroupNorm`` (reshape to ``[B, H, W, G, C/G]``, two-pass
    statistics) -- the straightforward version;
  - ``gen_jax (default)``: the library U-Net (:class:`gen_jax.nn.unet.GroupNorm`: per-channel
    moments pooled per group, one fused affine pass);
* the default gen_jax step again in child processes under XLA CPU flags (``--no_flags`` skips);
* PyTorch (if ``import torch`` works; never a project requirement) eager and
  ``torch.compile`` ms/step of the same architecture (NCHW, ``nn.GroupNorm``,
  ``F.scaled_dot_product_attention``), or ``n/a``.

Parameter counts of both implementations are printed and must agree.

Measured 2026-11-23 (``--steps 3``, 2 cores heavily shared with other jobs: the matmul rate was
40 GFLOP/s against 320-420 on a free machine, so only the ratios within the run mean anything):
flax GroupNorm 1988 ms/step; gen_jax default 1706 (1.17x); + oneDNN custom calls 1621 (1.23x);
single-threaded Eigen 1229 (1.62x, likely an artefact of the contention); PyTorch eager 578
(3.4x), torch.compile 749. A 3x3 conv as im2col + matmul was not faster than XLA's conv here
(fwd+bwd 352 vs 314 ms at 64x16x16x64), so the library keeps ``nn.Conv``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

from experiments.benchmarks.timing import matmul_gflops, median_ms_per_step

H, C_IN, CH, MULT, NRB, GROUPS, DROPOUT, T, LR = 16, 1, 32, (1, 2), 2, 8, 0.1, 1000, 2e-4
FLAG_VARIANTS = {
    "onednn custom calls": "--xla_cpu_experimental_onednn_custom_call=true",
    "no multi-thread eigen": "--xla_cpu_multi_thread_eigen=false",
}


def unet_config():
    from gen_jax.nn.unet import UNetConfig

    return UNetConfig(ch=CH, ch_mult=MULT, num_res_blocks=NRB, attn_resolutions=(H // 2,), dropout=DROPOUT,
                      num_groups=GROUPS, num_heads=1)


@contextlib.contextmanager
def flax_group_norm():
    """Temporarily builds the U-Net with ``flax.linen.GroupNorm`` (same parameters)."""
    import flax.linen as nn
    from gen_jax.nn import unet

    saved = unet.GroupNorm
    unet.GroupNorm = lambda num_groups, name=None: nn.GroupNorm(num_groups=num_groups, epsilon=1e-6, name=name)
    try:
        yield
    finally:
        unet.GroupNorm = saved


def bench_jax(steps: int, batch: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from gen_jax.nn.unet import UNet

    model = UNet(unet_config())
    betas = jnp.linspace(1e-4, 0.02, T)
    abar = jnp.cumprod(1.0 - betas)
    tx = optax.adam(LR)
    x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(batch, H, H, C_IN)), jnp.float32)

    def loss_fn(params, x0, key):
        kt, ke, kd = jax.random.split(key, 3)
        t = jax.random.randint(kt, (x0.shape[0],), 0, T)
        eps = jax.random.normal(ke, x0.shape)
        a = abar[t][:, None, None, None]
        xt = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps
        out = model.apply(params, xt, t, train=True, rngs={"dropout": kd})
        return jnp.mean(jnp.sum(jnp.square(out - eps), axis=(1, 2, 3)))

    @jax.jit
    def step(params, opt_state, key):
        loss, g = jax.value_and_grad(loss_fn)(params, x0, key)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    params = jax.jit(lambda k: model.init(k, x0, jnp.zeros((batch,), jnp.int32), train=False))(jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    opt_state = tx.init(params)
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, jax.random.PRNGKey(1))
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    box = [params, opt_state, 0]

    def run(k):
        p, o, i = box
        for _ in range(k):
            p, o, loss = step(p, o, jax.random.PRNGKey(i))
            i += 1
        loss.block_until_ready()
        box[:] = [p, o, i]

    return {"ms": median_ms_per_step(run, steps), "compile_s": compile_s, "params": n_params}


def bench_torch(steps: int, batch: int, compiled: bool) -> dict | None:
    try:
        import torch
        import torch.nn as tnn
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)

    class Res(tnn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1 = tnn.GroupNorm(GROUPS, cin, eps=1e-6), tnn.Conv2d(cin, cout, 3, padding=1)
            self.tp = tnn.Linear(tdim, cout)
            self.n2, self.c2 = tnn.GroupNorm(GROUPS, cout, eps=1e-6), tnn.Conv2d(cout, cout, 3, padding=1)
            self.drop = tnn.Dropout(DROPOUT)
            self.sc = tnn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, temb):
            h = self.c1(F.silu(self.n1(x))) + self.tp(F.silu(temb))[:, :, None, None]
            h = self.c2(self.drop(F.silu(self.n2(h))))
            return (x if self.sc is None else self.sc(x)) + h

    class Attn(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.n, self.qkv, self.o = tnn.GroupNorm(GROUPS, c, eps=1e-6), tnn.Linear(c, 3 * c), tnn.Linear(c, c)

        def forward(self, x):
            b, c, h, w = x.shape
            tok = self.n(x).flatten(2).transpose(1, 2)  # [B, HW, C]
            q, k, v = self.qkv(tok)[:, None].chunk(3, dim=-1)
            out = self.o(F.scaled_dot_product_attention(q, k, v)[:, 0])
            return x + out.transpose(1, 2).reshape(b, c, h, w)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            tdim = 4 * CH
            self.t0, self.t1 = tnn.Linear(CH, tdim), tnn.Linear(tdim, tdim)
            self.cin = tnn.Conv2d(C_IN, CH, 3, padding=1)
            self.down, chans, c, res = tnn.ModuleList(), [CH], CH, H
            for i, m in enumerate(MULT):
                for _ in range(NRB):
                    self.down.append(Res(c, CH * m, tdim)); c = CH * m; chans.append(c)
                    if res == H // 2:
                        self.down.append(Attn(c))
                if i != len(MULT) - 1:
                    self.down.append(tnn.Conv2d(c, c, 3, stride=2, padding=1)); chans.append(c); res //= 2
            self.mid = tnn.ModuleList([Res(c, c, tdim), Attn(c), Res(c, c, tdim)])
            self.up = tnn.ModuleList()
            for i in reversed(range(len(MULT))):
                for _ in range(NRB + 1):
                    self.up.append(Res(c + chans.pop(), CH * MULT[i], tdim)); c = CH * MULT[i]
                    if res == H // 2:
                        self.up.append(Attn(c))
                if i != 0:
                    self.up.append(tnn.Upsample(scale_factor=2, mode="nearest"))
                    self.up.append(tnn.Conv2d(c, c, 3, padding=1)); res *= 2
            self.nout, self.cout = tnn.GroupNorm(GROUPS, c, eps=1e-6), tnn.Conv2d(c, C_IN, 3, padding=1)

        def forward(self, x, t):
            half = CH // 2
            freqs = torch.exp(-torch.log(torch.tensor(1e4)) * torch.arange(half) / (half - 1))
            a = t.float()[:, None] * freqs[None]
            temb = self.t1(F.silu(self.t0(torch.cat([a.sin(), a.cos()], -1))))
            h = self.cin(x); hs = [h]
            for mod in self.down:
                if isinstance(mod, Res):
                    h = mod(h, temb); hs.append(h)
                elif isinstance(mod, Attn):
                    h = mod(h); hs[-1] = h
                else:
                    h = mod(h); hs.append(h)
            h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
            for mod in self.up:
                h = mod(torch.cat([h, hs.pop()], 1), temb) if isinstance(mod, Res) else mod(h)
            return self.cout(F.silu(self.nout(h)))

    net = Net()
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    abar = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, T), 0)
    x0 = torch.rand(batch, C_IN, H, H) * 2 - 1

    def step():
        t = torch.randint(0, T, (batch,))
        eps = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        loss = (net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).square().sum((1, 2, 3)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if compiled:
        step = torch.compile(step)
    t0 = time.perf_counter()
    try:
        for _ in range(3):
            step()
    except Exception as e:  # noqa: BLE001 - e.g. no C++ toolchain for the compiler
        print(f"  torch.compile failed here: {type(e).__name__}: {str(e)[:120]}")
        return None
    warm = time.perf_counter() - t0

    def run(k):
        for _ in range(k):
            step()

    return {"ms": median_ms_per_step(run, max(steps, 5)), "compile_s": warm, "params": n_params}


def _child(args) -> int:
    """Child process: one gen_jax measurement under the XLA_FLAGS it was started with."""
    print(json.dumps(bench_jax(args.steps, args.batch)))
    return 0


def _flag_run(flags: str, args) -> dict | None:
    env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip(), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "experiments.benchmarks.unet_step", "--_child", "--steps", str(args.steps),
           "--batch", str(args.batch)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        print(f"  (flags {flags!r} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--no_torch", action="store_true")
    p.add_argument("--no_flags", action="store_true", help="skip the XLA flag variants (child processes)")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        return _child(a)
    import jax

    print(f"U-Net train step (16x16x1, ch {CH}, ch_mult {MULT}, {NRB} res blocks, attention at {H // 2}x{H // 2}), "
          f"batch {a.batch}, {jax.devices()[0].platform} x{len(jax.devices())}, {os.cpu_count()} cores, "
          f"median of 3 x {a.steps} steps", flush=True)
    print(f"  matmul peak (2048^2 f32)              {matmul_gflops():8.1f} GFLOP/s", flush=True)
    ref = {}

    def show(name, r):
        if r is None:
            print(f"  {name:37s}      n/a", flush=True)
            return
        ref.setdefault("ms", r["ms"])
        print(f"  {name:37s} {r['ms']:8.1f} ms/step  (x{ref['ms'] / r['ms']:4.2f} the speed of the first row; "
              f"{r['params']} params, compile/warm-up {r['compile_s']:5.1f} s)", flush=True)

    with flax_group_norm():
        show("gen_jax, flax GroupNorm (before)", bench_jax(a.steps, a.batch))
    show("gen_jax (default)", bench_jax(a.steps, a.batch))
    if not a.no_flags:
        for name, flags in FLAG_VARIANTS.items():
            if flags:
                show(f"gen_jax, XLA_FLAGS {name}", _flag_run(flags, a))
    for name, compiled in (("PyTorch eager", False), ("PyTorch torch.compile", True)):
        show(name, None if a.no_torch else bench_torch(a.steps, a.batch, compiled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
