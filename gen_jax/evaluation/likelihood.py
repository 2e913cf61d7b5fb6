"""Test-split likelihoods of any model with a :class:`gen_jax.model.Likelihood`.

* unit ``'dim'``: mean bits/dim under the convention of the README (uniform dequantization on
  ``[0, 1)``, ``bpd = (-log p(x) + D log K) / (D log 2)``);
* unit ``'token'``: bits per scored token, ``-sum log p / (sum count * log 2)``.

``runtime_checks`` (default on): the compiled ``log_prob`` checks the split for NaN, values
outside [0, 1] and out-of-range ids by ``checkify`` (:func:`gen_jax.checks.jit_log_prob`; about
+12% per call measured on a PixelCNN, ``experiments/benchmarks/input_checks.py``).
"""
from __future__ import annotations

from typing import Mapping, Optional

import jax
import numpy as np

from gen_jax.data.pipeline import BATCH_KEYS
from gen_jax.checks import jit_log_prob
from gen_jax.distributions.bpd import bits_per_dim
from gen_jax.model import GenerativeModel


def images01(arrays: Mapping, num_levels: int) -> np.ndarray:
    """uint8 levels ``[N, H, W, C]`` -> float32 ``level / (K - 1)`` in [0, 1]."""
    return np.asarray(arrays["image"]).astype(np.float32) / (num_levels - 1)


def batch_of(arrays: Mapping, x: np.ndarray, idx: np.ndarray) -> dict:
    """The batch of rows ``idx``: the image as floats and every other batch key of the split."""
    batch = {"image": x[idx]}
    batch.update({k: np.asarray(arrays[k])[idx] for k in BATCH_KEYS if k != "image" and k in arrays})
    return batch


def _batches(arrays: Mapping, num_levels: int, batch_size: int):
    """``(i, batch, keep)`` over the split in chunks of ``batch_size`` (the last one padded by
    wrapping around, so one compiled function serves every chunk)."""
    x = images01(arrays, num_levels)
    n = len(x)
    for i, start in enumerate(range(0, n, batch_size)):
        idx = np.arange(start, start + batch_size) % n
        yield i, batch_of(arrays, x, idx), min(batch_size, n - start)


def split_log_probs(model: GenerativeModel, params, arrays: Mapping, num_levels: int, key,
                    batch_size: int, *, runtime_checks: bool = True) -> np.ndarray:
    """``log_prob [N]`` nats of every example of the split (key of chunk i: ``fold_in(key, i)``)."""
    fn = jit_log_prob(model, runtime_checks)
    out = [np.asarray(fn(params, b, jax.random.fold_in(key, i)))[:keep]
           for i, b, keep in _batches(arrays, num_levels, batch_size)]
    return np.concatenate(out)


def split_bpd(model: GenerativeModel, params, arrays: Mapping, info, key, batch_size: int, *,
              runtime_checks: bool = True) -> Optional[float]:
    """Mean test bits/dim, or ``None`` without a per-dimension likelihood."""
    if model.likelihood is None or model.likelihood.unit != "dim":
        return None
    if model.likelihood.kind == "vlb":
        print(_vlb_line(model, len(arrays["image"]), batch_size), flush=True)
    lp = split_log_probs(model, params, arrays, info.num_levels, key, batch_size, runtime_checks=runtime_checks)
    return float(np.mean(bits_per_dim(lp, int(np.prod(info.image_shape)), info.num_levels)))


def _vlb_line(model: GenerativeModel, num: int, batch_size: int) -> str:
    """What a variational-bound evaluation is about to do (it is the slowest likelihood: one
    network pass per term and image)."""
    sched = model.denoiser.schedule if model.denoiser is not None else None
    terms = f"{len(sched.betas)} terms" if sched is not None else "all its terms"
    return (f"computing the variational bound: {num} test images x {terms} (one network pass per "
            f"term and image, in batches of {batch_size}) ...")


def split_bits_per_token(model: GenerativeModel, params, arrays: Mapping, info, key, batch_size: int, *,
                         runtime_checks: bool = True) -> Optional[float]:
    """Bits per scored token over the split, or ``None`` without a per-token likelihood."""
    lik = model.likelihood
    if lik is None or lik.unit != "token":
        return None
    fn, count = jit_log_prob(model, runtime_checks), jax.jit(lik.count)
    nats = toks = 0.0
    for i, b, keep in _batches(arrays, info.num_levels, batch_size):
        nats -= float(np.sum(np.asarray(fn(params, b, jax.random.fold_in(key, i)))[:keep]))
        toks += float(np.sum(np.asarray(count(b))[:keep]))
    return nats / toks / np.log(2.0)
