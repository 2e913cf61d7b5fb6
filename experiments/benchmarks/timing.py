"""Timing helpers every benchmark shares: repeated medians and the machine's matmul rate."""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_ms_per_step(run: Callable[[int], None], steps: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the wall milliseconds per step of ``run(steps)`` (which
    must block until its work is done)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        times.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(times)


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median over ``repeats`` of the wall seconds of ``fn()``, waiting for its JAX results."""
    import jax

    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def matmul_gflops(n: int = 2048) -> float:
    """float32 ``n x n`` matmul rate of ``jax.jit(x @ x)`` in GFLOP/s (median of 3 x 10)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()

    def run(k):
        for _ in range(k):
            out = f(a)
        out.block_until_ready()

    return 2 * n ** 3 / (median_ms_per_step(run, 10) / 1e3) / 1e9
