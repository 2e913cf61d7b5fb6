"""Where the time of a U-Net train step goes, per op category: gen_jax (XLA CPU) vs PyTorch eager.

    python -m experiments.benchmarks.unet_profile [--size digits] [--steps 2] [--top 12] [--no_torch]

The step is the one of :mod:`experiments.benchmarks.unet_step` (DDPM U-Net, forward + backward +
Adam). Both sides are profiled for ``--steps`` steps after warm-up:

* **gen_jax**: a ``jax.profiler.trace`` of the jitted step, read back with
  ``jax.profiler.ProfileData`` (jaxlib 0.10.2: every XLA CPU thunk is one trace event named after
  its HLO instruction); each instruction of the compiled HLO (``compiled.as_text()``) is put in a
  category from its ops (those of the fused computation it calls) and its ``op_name`` metadata;
* **PyTorch eager** (``n/a`` if ``import torch`` fails): ``torch.profiler`` self CPU time per
  ``aten::`` op.

Categories: convolution forward; conv input gradient; conv weight gradient (XLA: a backward
convolution whose window is larger than the 3x3 kernel, i.e. the image-sized window of
``dW = conv(x, dy)``; PyTorch computes both gradients in one ``aten::convolution_backward``, shown
in the input-gradient row); norms (GroupNorm forward and backward: ``op_name`` under a
``norm*`` module / ``aten::native_group_norm*``); attention (``op_name`` under an ``*attn*`` module /
the ``scaled_dot_product`` ops); copies/transposes/concat (fusions made only of data movement,
``copy``/``transpose`` roots, ``aten::copy_``/``cat``/``upsample``/...); elementwise/fusions
(everything else that is a loop fusion: activations, residual adds, Adam); other (dense matmuls,
reductions, RNG, ...). ms are per step; % is of the summed op time (on 2 cores ops can overlap,
so the sum can differ from the wall time, printed beside it). ``--top`` lists the slowest
single gen_jax instructions.
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile
import time
from typing import NamedTuple

from experiments.benchmarks.unet_step import SIZES, Size, jax_step, torch_net, torch_step_fn

CATEGORIES = ("conv forward", "conv input grad", "conv weight grad", "norms (GroupNorm)", "attention",
              "elementwise/fusions", "copies/transposes", "other")
MOVES = {"parameter", "copy", "transpose", "bitcast", "reshape", "broadcast", "slice", "concatenate", "pad",
         "reverse", "dynamic-slice", "dynamic-update-slice", "get-tuple-element", "tuple", "constant"}
_NORM = re.compile(r"/(norm\d*|cross_norm|norm_out)(/|$)")


class Inst(NamedTuple):
    name: str
    op: str
    text: str


def parse_hlo(text: str) -> dict[str, list[Inst]]:
    """Computation name -> its instructions, from HLO text."""
    comps, cur = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith("{"):
            cur = re.match(r"(?:ENTRY )?%?([\w.\-]+)", line).group(1)
            comps[cur] = []
        elif cur is not None and " = " in line:
            name, rest = line.strip().removeprefix("ROOT ").split(" = ", 1)
            m = re.match(r"^(.*?) ([a-z][a-z0-9\-]*)\(", rest)
            comps[cur].append(Inst(name.lstrip("%"), m.group(2) if m else "?", rest))
    return comps


def _inner(inst: Inst, comps, depth: int = 0) -> list[Inst]:
    """``inst`` and the instructions of the computations it calls (recursively)."""
    out = [inst]
    if depth > 4:
        return out
    for callee in re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", inst.text):
        for i in comps.get(callee, ()):
            out.extend(_inner(i, comps, depth + 1))
    return out


def _op_name(inst: Inst) -> str:
    m = re.search(r'op_name="([^"]*)"', inst.text)
    return m.group(1) if m else ""


def categorize(inst: Inst, comps) -> str:
    """The category (one of :data:`CATEGORIES`) of an XLA CPU thunk's HLO instruction."""
    inner = _inner(inst, comps)
    ops = {i.op for i in inner}
    convs = [i for i in inner if i.op == "convolution"]
    if convs:
        c = convs[0]
        if "transpose(" not in _op_name(c):
            return "conv forward"
        size = re.search(r"window=\{size=(\d+)x(\d+)", c.text)
        return "conv weight grad" if size and int(size.group(1)) * int(size.group(2)) > 9 else "conv input grad"
    name = " ".join(_op_name(i) for i in inner[:1] + [i for i in inner if i.op not in MOVES][:1])
    if ops <= MOVES:
        return "copies/transposes"
    if _NORM.search(name):
        return "norms (GroupNorm)"
    if "attn" in name:
        return "attention"
    if "dot" in ops or inst.op in ("while", "call", "custom-call", "rng-bit-generator", "sort"):
        return "other"
    if inst.op == "fusion":
        return "elementwise/fusions"
    return "other"


def jax_profile(size: Size, steps: int):
    """(ms/step per category, wall ms/step, [(ms/step, name, category, op_name)] slowest) for gen_jax."""
    import jax

    bench = jax_step(size)
    comps = parse_hlo(bench.step.lower(*bench.args()).compile().as_text())
    by_name = {i.name: i for insts in comps.values() for i in insts}
    bench.run(1)
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            t0 = time.perf_counter()
            bench.run(steps)
            wall = (time.perf_counter() - t0) / steps * 1e3
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    per_inst = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if ev.name in by_name:
                    per_inst[ev.name] += ev.duration_ns / 1e6 / steps
    cats = collections.Counter()
    top = []
    for name, ms in per_inst.items():
        cat = categorize(by_name[name], comps)
        cats[cat] += ms
        top.append((ms, name, cat, _op_name(by_name[name]).removeprefix("jit(step)/")))
    return cats, wall, sorted(top, reverse=True)


def torch_category(op: str) -> str:
    """The category of a PyTorch ``aten::`` op (self time)."""
    o = op.lower()
    if "convolution_backward" in o or "convolutionbackward" in o:
        return "conv input grad"
    if "conv" in o:
        return "conv forward"
    if "group_norm" in o:
        return "norms (GroupNorm)"
    if "scaled_dot_product" in o or "flash_attention" in o or "softmax" in o:
        return "attention"
    if any(k in o for k in ("copy_", "cat", "upsample", "transpose", "contiguous", "clone", "slice", "permute",
                            "reshape", "view", "narrow", "chunk", "split", "as_strided", "flatten", "unsqueeze")):
        return "copies/transposes"
    if any(k in o for k in ("mm", "linear", "matmul", "bmm", "randn", "randint", "normal", "uniform", "bernoulli")):
        return "other"
    return "elementwise/fusions" if o.startswith("aten::") else "other"


def torch_profile(size: Size, steps: int):
    """(ms/step per category, wall ms/step, [(ms, op)] slowest) for PyTorch eager, or ``None``."""
    net = torch_net(size)
    if net is None:
        return None
    from torch.profiler import ProfilerActivity, profile

    one = torch_step_fn(net, size)
    one()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        wall = (time.perf_counter() - t0) / steps * 1e3
    cats, top = collections.Counter(), []
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / steps
        if ms > 0:
            cats[torch_category(ev.key)] += ms
            top.append((ms, ev.key))
    return cats, wall, sorted(top, reverse=True)


def show(jax_res, torch_res) -> None:
    def cols(res):
        if res is None:
            return lambda c: "         n/a         "
        cats, total = res[0], sum(res[0].values()) or 1.0
        return lambda c: f"{cats.get(c, 0.0):9.1f} ms {100 * cats.get(c, 0.0) / total:5.1f}%"

    j, t = cols(jax_res), cols(torch_res)
    print(f"  {'category':22s} {'gen_jax (XLA CPU)':>21s}   {'PyTorch eager':>21s}")
    for c in CATEGORIES:
        print(f"  {c:22s} {j(c)}   {t(c)}")
    tot = lambda r: "n/a" if r is None else f"{sum(r[0].values()):.1f} ms (wall {r[1]:.1f})"
    print(f"  {'sum of op times':22s} {tot(jax_res):>21s}   {tot(torch_res):>21s}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="digits", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--no_torch", action="store_true")
    a = p.parse_args(argv)
    size = SIZES[a.size]
    print(f"U-Net train step profile ({a.size}: {size.h}x{size.h}x{size.c}, ch {size.ch}, ch_mult {size.mult}, "
          f"batch {size.batch}), {os.cpu_count()} cores, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"ms per step over {a.steps} steps", flush=True)
    jax_res = jax_profile(size, a.steps)
    torch_res = None if a.no_torch else torch_profile(size, a.steps)
    show(jax_res, torch_res)
    if a.top:
        print(f"  slowest gen_jax instructions (ms/step):")
        for ms, name, cat, op in jax_res[2][:a.top]:
            print(f"    {ms:8.1f}  {name:32s} {cat:20s} {op[:70]}")
        if torch_res is not None:
            print(f"  slowest PyTorch ops (self ms/step):")
            for ms, op in torch_res[2][:a.top]:
                print(f"    {ms:8.1f}  {op}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
