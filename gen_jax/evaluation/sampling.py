"""Drawing many samples with one compiled sampler."""
from __future__ import annotations

from typing import Optional

import jax
import numpy as np

from gen_jax.checks import jit_sample
from gen_jax.model import GenerativeModel


def sample_in_batches(model: GenerativeModel, params, key, num: int, batch_size: int,
                      cond: Optional[dict] = None, *, runtime_checks: bool = True) -> np.ndarray:
    """``num`` samples drawn ``batch_size`` at a time with one compiled sampler (the key of
    chunk ``i`` is ``fold_in(key, i)``; the last chunk's conditions are padded by repetition).
    ``runtime_checks``: the compiled sampler checks its conditions (label and token ranges) by
    ``checkify`` and raises :class:`gen_jax.checks.InputError` (:func:`gen_jax.checks.jit_sample`)."""
    fn = jit_sample(model, runtime_checks)
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        c = None if cond is None else {k: _pad(v[start:start + batch_size], batch_size) for k, v in cond.items()}
        x = np.asarray(fn(params, jax.random.fold_in(key, i), batch_size, c))
        out.append(x[: min(batch_size, num - start)])
    x = np.concatenate(out, 0)
    return x.astype(np.float32) if model.sampler.kind != "tokens" else x


def _pad(a, n):
    a = np.asarray(a)
    if len(a) == n:
        return a
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)], 0)
