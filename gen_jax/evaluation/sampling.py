"""Drawing many samples with one compiled sampler."""
from __future__ import annotations

import time
from typing import Callable, Optional

import jax
import numpy as np

from gen_jax.checks import jit_sample
from gen_jax.model import GenerativeModel


def compile_sampler(model: GenerativeModel, params, batch_size: int, cond: Optional[dict] = None, *,
                    runtime_checks: bool = True) -> tuple[Callable, float]:
    """``(fn, seconds)``: ``model.sampler.sample`` compiled ahead of time for ``batch_size``
    samples (and conditions shaped like ``cond``'s first ``batch_size`` rows), so that timing
    the draws excludes compilation and no batch is drawn only to compile. ``fn(params, key,
    cond)`` returns ``[batch_size, ...]``; with ``runtime_checks`` it raises
    :class:`gen_jax.checks.InputError` for out-of-range conditions."""
    t0 = time.time()
    first = None if cond is None else {k: _pad(v[:batch_size], batch_size) for k, v in cond.items()}
    key = jax.random.PRNGKey(0)
    executable = jit_sample(model, runtime_checks).lower(params, key, batch_size, first).compile()
    return executable, time.time() - t0


def sample_in_batches(model: GenerativeModel, params, key, num: int, batch_size: int,
                      cond: Optional[dict] = None, *, runtime_checks: bool = True,
                      compiled: Optional[Callable] = None) -> np.ndarray:
    """``num`` samples drawn ``batch_size`` at a time with one compiled sampler (the key of
    chunk ``i`` is ``fold_in(key, i)``; the last chunk's conditions are padded by repetition).
    ``runtime_checks``: the compiled sampler checks its conditions (label and token ranges) by
    ``checkify`` and raises :class:`gen_jax.checks.InputError` (:func:`gen_jax.checks.jit_sample`).
    ``compiled``: the sampler of :func:`compile_sampler` for this ``batch_size`` (compiled here
    when omitted)."""
    if compiled is None:
        compiled, _ = compile_sampler(model, params, batch_size, cond, runtime_checks=runtime_checks)
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        c = None if cond is None else {k: _pad(v[start:start + batch_size], batch_size) for k, v in cond.items()}
        x = np.asarray(compiled(params, jax.random.fold_in(key, i), c))
        out.append(x[: min(batch_size, num - start)])
    x = np.concatenate(out, 0)
    return x.astype(np.float32) if model.sampler.kind != "tokens" else x


def _pad(a, n):
    a = np.asarray(a)
    if len(a) == n:
        return a
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)], 0)
