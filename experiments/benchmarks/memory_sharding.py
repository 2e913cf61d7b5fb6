"""Compiled per-device memory of the paper-scale train steps under DP, FSDP and FSDP + TP on 8 devices.

    python -m experiments.benchmarks.memory_sharding [--configs ddpm_cifar10,glow_cifar10,...]
        [--batch_size 0] [--timeout 600] [--skip name,...] [--out memory_sharding.json]

For each paper-scale config (the real train step of :func:`gen_jax.train.step.make_train_step`
with the shardings :func:`gen_jax.train.loop.init_state` derives from ``config.mesh``; nothing is
trained or allocated: ``step.lower(abstract state, abstract batch).compile()`` on 8 fake CPU
devices) and each layout

* ``dp``: mesh ``(8, 1)``, ``config.mesh.preset = 'dp'`` (params, Adam moments, EMA replicated);
* ``fsdp``: mesh ``(8, 1)``, preset ``'fsdp'`` (every leaf of >= ``fsdp_min_size`` elements split
  over the 8 data devices; Rajbhandari et al. 2020, ZeRO stage 3);
* ``fsdp_tp``: mesh ``(4, 2)``, preset ``'fsdp_tp'`` (attention heads / MLP hidden / U-Net
  residual-block channels over ``'model'`` (Shoeybi et al. 2019), everything over ``'data'``),

it prints the per-device figures of ``compiled.memory_analysis()``: ``argument`` (the sharded
train state plus this device's batch shard), ``temp`` (activations and scratch), ``output``;
and ``state/dev``, the train state's bytes per device counted from the shardings (params +
optimizer moments + EMA, the part FSDP divides), with the ratio ``dp / layout`` of it (about
8 for FSDP on 8 devices, less the small replicated leaves). Each config compiles in its own
subprocess with ``--timeout`` seconds; one that takes longer is reported as skipped
(``--skip`` names configs not to try). The global batch is the config's (``--batch_size``
replaces it). XLA flags: 8 host devices and the backend's lowest optimization level (LLVM code
generation only: buffer assignment, which these figures are, runs before it).

Measured 2026-12-03 (jax 0.10.2, 8 fake CPU devices, the configs' batch sizes; MB = 2^20 bytes
per device; ``dp/this`` = DP state bytes per device over this layout's; TP leaves = param leaves
with an axis on ``'model'``)::

    config             layout  mesh       params  batch  state/dev MB  dp/this  argument MB  temp MB  TP leaves
    ddpm_cifar10       dp      8x1    35,746,307    128         545.4     1.00        545.6   1322.0      0/328
    ddpm_cifar10       fsdp    8x1                              69.0     7.90         69.2   1224.4      0/328
    ddpm_cifar10       fsdp_tp 4x2                              68.9     7.91         69.3   1932.5    110/328
    glow_cifar10       dp      8x1    44,055,408     64         504.2     1.00        504.3    991.6     0/1159
    glow_cifar10       fsdp    8x1                              66.1     7.62         66.2    917.2     0/1159
    glow_cifar10       fsdp_tp 4x2                              66.1     7.62         66.3   1582.3     0/1159
    pixelcnnpp_cifar10 dp      8x1    53,659,080    128         818.8     1.00        819.0   7206.5      0/567
    pixelcnnpp_cifar10 fsdp    8x1                             103.5     7.91        103.7   7065.0      0/567
    pixelcnnpp_cifar10 fsdp_tp 4x2                             103.5     7.91        103.9  13890.0      0/567
    clip_vit_b32_paper dp      8x1   151,277,313  32768        1731.2     1.00       4084.4 330407.6      0/398
    clip_vit_b32_paper fsdp    8x1                             218.5     7.92       2571.7 330037.6      0/398
    clip_vit_b32_paper fsdp_tp 4x2                             217.8     7.95       4924.2 395620.3    240/398
    dcgan_cifar10      dp      8x1     4,108,484    128          60.2     1.00         60.4    156.2       0/23
    dcgan_cifar10      fsdp    8x1                               7.6     7.92          7.8     64.5       0/23
    dcgan_cifar10      fsdp_tp 4x2                               7.6     7.92          8.0     63.6       0/23
    sngan_cifar10      dp      8x1     6,749,252     64          91.8     1.00         92.3    186.5       0/34
    sngan_cifar10      fsdp    8x1                              11.6     7.93         12.0     96.9       0/34
    sngan_cifar10      fsdp_tp 4x2                              11.6     7.93         12.5     96.9       0/34

FSDP divides the per-device train state (params + Adam moments + EMA; ``output`` equals it, the
state being donated) by 7.6-7.95 on 8 devices: the rest is the small leaves under
``fsdp_min_size`` that stay replicated (Glow's 1159 leaves include many small actnorm and 1x1
leaves). FSDP + TP on ``(4, 2)`` keeps that division (leaves without a TP axis are split over
all 8 devices) but *raises* the temp memory at a fixed global batch: the batch is split 4 ways
instead of 8, and only the TP'd activations (heads, MLP hidden, U-Net residual channels) are
split over ``'model'``; the rest is computed redundantly on both model devices. TP pays when
the state (or one layer) does not fit a device, not for these activation-bound CIFAR models.
The Glow, PixelCNN++ and GAN nets have no layer the TP rules name (0 TP leaves: their convs
are FSDP only). Compile times here: 5-90 s per layout, Glow 3-4 min; the whole run about 20 min
(no config needed ``--skip``). VQGAN has no paper-scale config (only vqgan_shapes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_CONFIGS = ("ddpm_cifar10", "glow_cifar10", "pixelcnnpp_cifar10", "clip_vit_b32_paper",
                   "dcgan_cifar10", "sngan_cifar10")
LAYOUTS = (("dp", (8, 1), "dp"), ("fsdp", (8, 1), "fsdp"), ("fsdp_tp", (4, 2), "fsdp_tp"))
# Dataset metadata of the paper datasets (not prepared here: nothing is read).
DATASETS = {
    "cifar10": dict(image_shape=(32, 32, 3), num_classes=10, captions=False),
    "imagenet2012": dict(image_shape=(224, 224, 3), num_classes=1000, captions=True),
}
CLIP_TEXT = dict(caption_len=77, vocab_size=49408)


def _info(name: str):
    from gen_jax.data.datasets import DatasetInfo

    d = DATASETS[name]
    cap = CLIP_TEXT if d["captions"] else dict(caption_len=0, vocab_size=0)
    return DatasetInfo(name=name, image_shape=d["image_shape"], num_levels=256, num_classes=d["num_classes"],
                       num_train=50_000, num_test=10_000, has_captions=d["captions"], **cap)


def _batch(info, b: int, sharding):
    import jax
    import jax.numpy as jnp

    sds = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)
    batch = {"image": sds((b,) + tuple(info.image_shape), jnp.float32), "label": sds((b,), jnp.int32)}
    if info.has_captions:
        batch["caption_tokens"] = sds((b, info.caption_len), jnp.int32)
    return batch


def _state_bytes_per_device(abstract, shardings) -> int:
    import jax
    import numpy as np

    total = 0
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        total += int(np.prod(s.shard_shape(a.shape), dtype=np.int64)) * a.dtype.itemsize
    return total


def measure(config: str, layout: str, batch_size: int = 0) -> dict:
    """One config under one layout (module docstring): a dict of the figures."""
    import jax
    import numpy as np

    from experiments import common
    from gen_jax.train import loop, sharding as shd
    from gen_jax.train.step import make_train_step

    _, shape, preset = dict((l[0], l) for l in LAYOUTS)[layout]
    exp = common.load_experiment(config, {"mesh.shape": repr(shape), "mesh.preset": repr(preset)})
    b = batch_size or exp.train.batch_size
    info = _info(exp.dataset.name)
    model = common.build_model(exp, info)
    mesh = shd.make_mesh(8, shape)
    shd.check_batch_size(b, mesh)
    bsh = shd.batch_sharding(mesh)
    batch = _batch(info, b, bsh)
    phases, opts, abstract, state_sh, _ = loop.init_state(exp, model, batch, mesh, bsh)
    step = make_train_step(phases, opts, ema_decay=exp.train.ema_decay or None,
                           ema_groups=model.training.ema_groups, state_sharding=state_sh,
                           batch_sharding=bsh, frozen_sharding=shd.replicated(mesh))
    batches = tuple(batch for _ in range(model.training.batches_per_step))
    t0 = time.time()
    compiled = step.lower(loop._with_shardings(abstract, state_sh), batches, {}).compile()
    seconds = time.time() - t0
    ma = compiled.memory_analysis()
    params = sum(int(np.prod(a.shape, dtype=np.int64)) for a in jax.tree.leaves(abstract.params))
    specs = shd.describe(state_sh.params)
    on_model = sum(1 for s in specs.values() if "model" in tuple(s))
    return dict(config=config, layout=layout, mesh=list(shape), batch_size=b, params=params,
                argument_bytes=int(ma.argument_size_in_bytes), temp_bytes=int(ma.temp_size_in_bytes),
                output_bytes=int(ma.output_size_in_bytes), alias_bytes=int(ma.alias_size_in_bytes),
                state_bytes_per_device=_state_bytes_per_device(abstract, state_sh),
                state_bytes_total=_state_bytes_per_device(abstract, jax.tree.map(lambda s: shd.replicated(mesh), state_sh)),
                param_leaves=len(specs), param_leaves_on_model=on_model, compile_seconds=round(seconds, 1))


def _child(config: str, batch_size: int) -> int:
    for layout, _, _ in LAYOUTS:
        print(json.dumps(measure(config, layout, batch_size)), flush=True)
    return 0


def _run_config(config: str, batch_size: int, timeout: float) -> tuple[list, str]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        flags += " --xla_force_host_platform_device_count=8"
    if "xla_backend_optimization_level" not in flags:
        flags += " --xla_backend_optimization_level=0"
    env.update(XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "experiments.benchmarks.memory_sharding", "--child", config,
           "--batch_size", str(batch_size)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
        return rows, f"skipped: compiling took more than {timeout:.0f} s (--timeout)"
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode:
        tail = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("W")][-3:]
        return rows, "failed: " + " | ".join(tail)
    return rows, ""


def _mb(x: int) -> str:
    return f"{x / 2 ** 20:10.1f}"


def table(rows: list) -> str:
    head = (f"{'config':20s} {'layout':8s} {'mesh':6s} {'params':>11s} {'batch':>6s} {'state/dev MB':>12s} "
            f"{'dp/this':>7s} {'argument MB':>11s} {'temp MB':>10s} {'output MB':>10s} {'TP leaves':>9s} {'compile s':>9s}")
    lines = [head, "-" * len(head)]
    dp = {r["config"]: r["state_bytes_per_device"] for r in rows if r["layout"] == "dp"}
    for r in rows:
        ratio = dp.get(r["config"], 0) / r["state_bytes_per_device"] if r["config"] in dp else float("nan")
        lines.append(f"{r['config']:20s} {r['layout']:8s} {'x'.join(map(str, r['mesh'])):6s} {r['params']:11,d} "
                     f"{r['batch_size']:6d} {_mb(r['state_bytes_per_device']):>12s} {ratio:7.2f} "
                     f"{_mb(r['argument_bytes']):>11s} {_mb(r['temp_bytes'])} {_mb(r['output_bytes'])} "
                     f"{r['param_leaves_on_model']:4d}/{r['param_leaves']:<4d} {r['compile_seconds']:9.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    p.add_argument("--skip", default="", help="configs not to compile (e.g. too slow here)")
    p.add_argument("--batch_size", type=int, default=0, help="global batch (0: the config's)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per config (all three layouts)")
    p.add_argument("--out", default="", help="write the rows (and skipped configs) as JSON here")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return _child(a.child, a.batch_size)
    skip = set(filter(None, a.skip.split(",")))
    rows, notes = [], {}
    for config in filter(None, a.configs.split(",")):
        if config in skip:
            notes[config] = "skipped: --skip"
            continue
        got, note = _run_config(config, a.batch_size, a.timeout)
        rows += got
        if note:
            notes[config] = note
        print(f"{config}: {len(got)} layouts{'; ' + note if note else ''}", file=sys.stderr, flush=True)
    print(table(rows))
    for config, note in notes.items():
        print(f"{config}: {note}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "notes": notes}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
