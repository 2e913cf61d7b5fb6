"""Speed of a U-Net denoiser train step: gen_jax default vs PyTorch on the same CPU.

    python -m experiments.benchmarks.unet_step [--sizes digits,shapes] [--steps 3] [--repeats 3] [--no_torch]

Two DDPM U-Nets (:class:`gen_jax.nn.unet.UNet`: Ho et al. 2020, App. B), dropout 0.1,
2 residual blocks per level, self-attention at 8x8 and in the middle:

* ``digits``: 16x16x1 images, ch 32, ch_mult (1, 2), GroupNorm 8, batch 64;
* ``shapes``: 32x32x3 images, ch 64, ch_mult (1, 2, 2), GroupNorm 16, batch 32 (the
  U-Net of ``experiments/configs/ddpm_shapes.py``).

One step = forward + backward + Adam (lr 2e-4) on the DDPM L_simple loss
``|| eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2`` (Ho et al. 2020, Eq. 14),
everything (noise draws included) inside one ``jax.jit`` with the state donated. The PyTorch
side (if ``import torch`` works; never a project requirement) is the same architecture in NCHW
(``nn.GroupNorm``, ``F.scaled_dot_product_attention``), eager and ``torch.compile``; parameter
counts of both are printed and must agree.

All variants of one size are built first, then timed interleaved in this one process
(A, B, C, A, B, C, ...; ``--repeats`` rounds of ``--steps`` steps, medians), so they share the
machine's load; only the ratios are meaningful on a shared machine.

``--levers`` adds the library step without each of its speed levers: XLA's default CPU options
instead of :data:`gen_jax.xla_options.CPU_COMPILER_OPTIONS` (YNNPACK for dots only), and
``flax.linen.GroupNorm`` + a separate SiLU instead of the fused :class:`gen_jax.nn.norm.GroupNorm`.

Measured 2026-12-02 on an idle 2-core machine (matmul rate 313 GFLOP/s), ``--levers --no_compile``:

======================  ===========  ===========  ================  =============  =============
size                    default      XLA options  unfused GN        neither lever  PyTorch eager
======================  ===========  ===========  ================  =============  =============
digits (b 64)           406 ms       533 ms       381 ms            571 ms         265 ms
shapes 32x32x3 (b 32)   2693 ms      2922 ms      2596 ms           3013 ms        1348 ms
======================  ===========  ===========  ================  =============  =============

The compiler option is the lever that counts (1.31x digits, 1.08x shapes); the fused GroupNorm
gains 1.07-1.2x under XLA's default options but is within this run's noise (about 5%) of flax's
GroupNorm under the library's. gen_jax stays at 0.65x (digits) and 0.50x (shapes) of PyTorch
eager: ``python -m experiments.benchmarks.unet_profile`` shows the rest is the convolutions
(XLA's own convolution kernels, against oneDNN's in PyTorch) and the elementwise/norm passes.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time
from typing import Callable, NamedTuple, Optional

from experiments.benchmarks.timing import matmul_gflops

T, LR = 1000, 2e-4


@dataclasses.dataclass(frozen=True)
class Size:
    """One benchmark network: image ``h x h x c``, U-Net widths, batch."""

    name: str
    h: int
    c: int
    ch: int
    mult: tuple[int, ...]
    groups: int
    batch: int
    nrb: int = 2
    attn: tuple[int, ...] = (8,)
    dropout: float = 0.1


SIZES = {
    "digits": Size("digits", h=16, c=1, ch=32, mult=(1, 2), groups=8, batch=64),
    "shapes": Size("shapes", h=32, c=3, ch=64, mult=(1, 2, 2), groups=16, batch=32),
}


def unet_config(size: Size):
    from gen_jax.nn.unet import UNetConfig

    return UNetConfig(ch=size.ch, ch_mult=size.mult, num_res_blocks=size.nrb, attn_resolutions=size.attn,
                      dropout=size.dropout, num_groups=size.groups, num_heads=1)


class Bench(NamedTuple):
    """A built train step: ``run(k)`` takes ``k`` steps and blocks."""

    run: Callable[[int], None]
    params: int
    warm_s: float  # compile (+ first step) seconds
    step: Optional[Callable] = None  # the jitted gen_jax step (for profiling / lowering)
    args: Optional[Callable] = None  # () -> the step's current arguments


def jax_step(size: Size, model=None, donate: bool = True, compiler_options: Optional[dict] = None) -> Bench:
    """The gen_jax train step of ``size`` (``model``: a U-Net module, default the library's;
    ``compiler_options``: XLA ``DebugOptions`` fields for this one program, default the
    library's :func:`gen_jax.xla_options.compiler_options`; ``{}`` for XLA's own defaults)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from gen_jax import xla_options
    from gen_jax.nn.unet import UNet

    model = model if model is not None else UNet(unet_config(size))
    b = size.batch
    abar = jnp.cumprod(1.0 - jnp.linspace(1e-4, 0.02, T))
    tx = optax.adam(LR)
    x0 = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, size=(b, size.h, size.h, size.c)), jnp.float32)

    def loss_fn(params, key):
        kt, ke, kd = jax.random.split(key, 3)
        t = jax.random.randint(kt, (b,), 0, T)
        eps = jax.random.normal(ke, x0.shape)
        a = abar[t][:, None, None, None]
        xt = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps
        out = model.apply(params, xt, t, train=True, rngs={"dropout": kd})
        return jnp.mean(jnp.sum(jnp.square(out - eps), axis=(1, 2, 3)))

    def step(params, opt_state, key):
        loss, g = jax.value_and_grad(loss_fn)(params, key)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    if compiler_options is None:
        compiler_options = xla_options.compiler_options()
    step = jax.jit(step, donate_argnums=(0, 1) if donate else (), compiler_options=compiler_options)
    params = jax.jit(lambda k: model.init(k, x0, jnp.zeros((b,), jnp.int32), train=False))(jax.random.PRNGKey(0))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    box = [params, tx.init(params), 0]

    def run(k):
        p, o, i = box
        for _ in range(k):
            p, o, loss = step(p, o, jax.random.PRNGKey(i))
            i += 1
        loss.block_until_ready()
        box[:] = [p, o, i]

    t0 = time.perf_counter()
    run(1)
    return Bench(run, n_params, time.perf_counter() - t0, step, lambda: (box[0], box[1], jax.random.PRNGKey(box[2])))


@contextlib.contextmanager
def unfused_group_norm():
    """While active, the U-Net is built with ``flax.linen.GroupNorm`` followed by a separate
    ``nn.silu`` (autodiff backward) instead of the library's fused
    :class:`gen_jax.nn.norm.GroupNorm`; same parameters, same function."""
    import flax.linen as nn

    import gen_jax.nn.unet as unet_lib

    def unfused(num_groups, epsilon=1e-6, silu=False, name=None):
        gn = nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, name=name)
        return (lambda x: nn.silu(gn(x))) if silu else gn

    fused, unet_lib.GroupNorm = unet_lib.GroupNorm, unfused
    try:
        yield
    finally:
        unet_lib.GroupNorm = fused


def torch_net(size: Size):
    """The same U-Net in PyTorch (NCHW), or ``None`` without torch."""
    try:
        import torch
        import torch.nn as tnn
        import torch.nn.functional as F
    except ImportError:
        return None
    g = size.groups

    class Res(tnn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.n1, self.c1 = tnn.GroupNorm(g, cin, eps=1e-6), tnn.Conv2d(cin, cout, 3, padding=1)
            self.tp = tnn.Linear(tdim, cout)
            self.n2, self.c2 = tnn.GroupNorm(g, cout, eps=1e-6), tnn.Conv2d(cout, cout, 3, padding=1)
            self.drop = tnn.Dropout(size.dropout)
            self.sc = tnn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, temb):
            h = self.c1(F.silu(self.n1(x))) + self.tp(F.silu(temb))[:, :, None, None]
            h = self.c2(self.drop(F.silu(self.n2(h))))
            return (x if self.sc is None else self.sc(x)) + h

    class Attn(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.n, self.qkv, self.o = tnn.GroupNorm(g, c, eps=1e-6), tnn.Linear(c, 3 * c), tnn.Linear(c, c)

        def forward(self, x):
            b, c, h, w = x.shape
            tok = self.n(x).flatten(2).transpose(1, 2)  # [B, HW, C]
            q, k, v = self.qkv(tok)[:, None].chunk(3, dim=-1)
            out = self.o(F.scaled_dot_product_attention(q, k, v)[:, 0])
            return x + out.transpose(1, 2).reshape(b, c, h, w)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            ch, tdim = size.ch, 4 * size.ch
            self.t0, self.t1 = tnn.Linear(ch, tdim), tnn.Linear(tdim, tdim)
            self.cin = tnn.Conv2d(size.c, ch, 3, padding=1)
            self.down, chans, c, res = tnn.ModuleList(), [ch], ch, size.h
            for i, m in enumerate(size.mult):
                for _ in range(size.nrb):
                    self.down.append(Res(c, ch * m, tdim)); c = ch * m; chans.append(c)
                    if res in size.attn:
                        self.down.append(Attn(c))
                if i != len(size.mult) - 1:
                    self.down.append(tnn.Conv2d(c, c, 3, stride=2, padding=1)); chans.append(c); res //= 2
            self.mid = tnn.ModuleList([Res(c, c, tdim), Attn(c), Res(c, c, tdim)])
            self.up = tnn.ModuleList()
            for i in reversed(range(len(size.mult))):
                for _ in range(size.nrb + 1):
                    self.up.append(Res(c + chans.pop(), ch * size.mult[i], tdim)); c = ch * size.mult[i]
                    if res in size.attn:
                        self.up.append(Attn(c))
                if i != 0:
                    self.up.append(tnn.Upsample(scale_factor=2, mode="nearest"))
                    self.up.append(tnn.Conv2d(c, c, 3, padding=1)); res *= 2
            self.nout, self.cout = tnn.GroupNorm(g, c, eps=1e-6), tnn.Conv2d(c, size.c, 3, padding=1)

        def forward(self, x, t):
            half = size.ch // 2
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

    torch.manual_seed(0)
    return Net()


def torch_step_fn(net, size: Size):
    """``one()``: one eager PyTorch train step of ``net`` (L_simple, Adam) on a fixed batch of
    ``size``, returning the loss; the same step the gen_jax side runs."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    abar = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, T), 0)
    x0 = torch.rand(size.batch, size.c, size.h, size.h) * 2 - 1

    def one():
        t = torch.randint(0, T, (size.batch,))
        eps = torch.randn_like(x0)
        a = abar[t][:, None, None, None]
        loss = (net(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps).square().sum((1, 2, 3)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return one


def torch_step(size: Size, compiled: bool = False) -> Optional[Bench]:
    """The PyTorch train step of ``size`` (eager or ``torch.compile``), or ``None``."""
    net = torch_net(size)
    if net is None:
        return None
    import torch

    n_params = sum(p.numel() for p in net.parameters())
    one = torch_step_fn(net, size)
    one = torch.compile(one) if compiled else one

    def run(k):
        for _ in range(k):
            one()

    t0 = time.perf_counter()
    try:
        run(2)
    except Exception as e:  # noqa: BLE001 - e.g. no C++ toolchain for the compiler
        print(f"  torch.compile failed here: {type(e).__name__}: {str(e)[:120]}")
        return None
    return Bench(run, n_params, time.perf_counter() - t0)


def interleaved_ms(benches: dict[str, Optional[Bench]], steps: int, repeats: int) -> dict[str, float]:
    """Median ms/step of each bench, timed in rounds ``A, B, C, A, B, C, ...``."""
    times = {k: [] for k, b in benches.items() if b is not None}
    for _ in range(repeats):
        for k in times:
            t0 = time.perf_counter()
            benches[k].run(steps)
            times[k].append((time.perf_counter() - t0) / steps * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def report(benches: dict[str, Optional[Bench]], ms: dict[str, float], ref: str) -> None:
    """One line per bench: ms/step and its speed relative to ``ref``."""
    for k, b in benches.items():
        if b is None:
            print(f"  {k:34s}      n/a", flush=True)
            continue
        rel = ms[ref] / ms[k] if ref in ms else float("nan")
        print(f"  {k:34s} {ms[k]:8.1f} ms/step  (x{rel:4.2f} the speed of {ref}; {b.params} params, "
              f"compile/warm-up {b.warm_s:5.1f} s)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="digits,shapes")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_torch", action="store_true")
    p.add_argument("--no_compile", action="store_true", help="skip torch.compile")
    p.add_argument("--levers", action="store_true",
                   help="also time the library step without each of its speed levers (XLA's default "
                        "CPU options; flax GroupNorm + separate SiLU)")
    a = p.parse_args(argv)
    import jax

    print(f"U-Net train steps, {jax.devices()[0].platform} x{len(jax.devices())}, {os.cpu_count()} cores, "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, median of {a.repeats} interleaved rounds x {a.steps} steps",
          flush=True)
    print(f"  matmul rate (2048^2 f32)            {matmul_gflops():8.1f} GFLOP/s", flush=True)
    for name in a.sizes.split(","):
        size = SIZES[name]
        print(f"{name}: {size.h}x{size.h}x{size.c}, ch {size.ch}, ch_mult {size.mult}, GroupNorm {size.groups}, "
              f"attention at {size.attn}, batch {size.batch}", flush=True)
        benches = {"gen_jax (default)": jax_step(size)}
        if a.levers:
            benches["gen_jax, XLA's default options"] = jax_step(size, compiler_options={})
            with unfused_group_norm():
                benches["gen_jax, unfused GroupNorm"] = jax_step(size)
                benches["gen_jax, neither lever"] = jax_step(size, compiler_options={})
        benches["PyTorch eager"] = None if a.no_torch else torch_step(size)
        if not a.no_compile:
            benches["PyTorch torch.compile"] = None if a.no_torch else torch_step(size, compiled=True)
        report(benches, interleaved_ms(benches, a.steps, a.repeats), "PyTorch eager")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
