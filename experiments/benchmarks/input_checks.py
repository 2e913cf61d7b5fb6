"""What the input checks of the model functions cost (gen_jax.checks).

    python -m experiments.benchmarks.input_checks [--batch 64] [--calls 20]

A PixelCNN (hidden 32, 4 masked blocks) on 16x16x1 images with K = 17 levels, random params.
It times, after compilation (median over 3 repeats of ``--calls`` calls, in ms per call):

* ``jit(log_prob)`` of the unwrapped function;
* ``jit(log_prob)`` of the model's (wrapped) function: the same program (the host checks are
  trace-time only under jit), so the same time;
* the host-side value checks an eager call runs before tracing (``checks.check_batch`` on the
  concrete batch: a device-to-host copy and a few numpy reductions);
* ``checked_jit(with_runtime_checks(model).likelihood.log_prob)``: the checkify variant
  (finite, in [0, 1], labels in range, checked inside the program, the error read after it).

It also asserts that the three programs return bit-identical log-probs. Measured here (2
shared CPU cores, other jobs running):

    PixelCNN 16x16x1, K=17, batch 64: ms per log_prob call (median), bit-identical: True
      jit(log_prob), unwrapped               20.129 ms   ( 1.00x of unwrapped)
      jit(log_prob), wrapped                 20.057 ms   ( 1.00x of unwrapped)
      checked_jit(runtime checks)            22.600 ms   ( 1.12x of unwrapped)
      host value checks (eager call)          0.057 ms   ( 0.00x of unwrapped)

The wrapped function compiles to the same program (no cost under jit); the checkify variant
costs ~12% here (a few reductions over the batch and reading the error flag back). The host
figure is for a batch whose host copy jax already holds (it caches it after the first read);
a fresh device array adds one device-to-host copy of the batch.
"""
from __future__ import annotations

import argparse
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.timing import median_seconds
from gen_jax import checks
from gen_jax.autoregressive.image_model import make_pixelcnn


def _calls(fn, n):
    def run():
        out = None
        for _ in range(n):
            out = fn()
        return out
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--calls", type=int, default=20)
    a = ap.parse_args(argv)
    info = types.SimpleNamespace(image_shape=(16, 16, 1), num_levels=17, num_classes=0)
    model = make_pixelcnn(dict(hidden=32, num_blocks=4, first_kernel=5, kernel=3, out_hidden=32), info)
    r = np.random.default_rng(0)
    batch = {"image": jnp.asarray(r.integers(0, 17, (a.batch, 16, 16, 1)) / 16, jnp.float32)}
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    params = jax.tree.map(lambda s: jnp.asarray(r.normal(0, 0.05, s.shape), s.dtype), shapes)
    key = jax.random.PRNGKey(1)

    raw = jax.jit(model.likelihood.log_prob.__wrapped__)
    wrapped = jax.jit(model.likelihood.log_prob)
    checked = checks.checked_jit(checks.with_runtime_checks(model).likelihood.log_prob)
    outs = [np.asarray(f(params, batch, key)) for f in (raw, wrapped, checked)]  # compiles
    assert all(np.array_equal(outs[0], o) for o in outs[1:]), "results differ"

    ctx = checks.context(model)
    host = lambda: checks.check_batch(batch, model.data, "log_prob", ctx.label_cond)  # noqa: E731
    rows = [("jit(log_prob), unwrapped", raw), ("jit(log_prob), wrapped", wrapped),
            ("checked_jit(runtime checks)", checked)]
    times = {name: median_seconds(_calls(lambda f=f: f(params, batch, key), a.calls)) / a.calls * 1e3
             for name, f in rows}
    t0 = time.perf_counter()
    for _ in range(a.calls):
        host()
    times["host value checks (eager call)"] = (time.perf_counter() - t0) / a.calls * 1e3
    base = times[rows[0][0]]
    print(f"PixelCNN 16x16x1, K=17, batch {a.batch}: ms per log_prob call (median), bit-identical: True")
    for name, ms in times.items():
        print(f"  {name:34s} {ms:8.3f} ms   ({ms / base:5.2f}x of unwrapped)")


if __name__ == "__main__":
    main()
