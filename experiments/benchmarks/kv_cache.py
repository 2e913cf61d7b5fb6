"""Transformer sampling speed with and without the KV cache, for sequence lengths 64/256/1024.

    python -m experiments.benchmarks.kv_cache [--lengths 64,256,1024] [--batch 1] [--layers 4] [--d_model 256]

A decoder-only transformer (:mod:`gen_jax.nn.transformer`; 4 layers, d = 256, 4 heads, rotary
positions, vocabulary 257, random weights: speed does not depend on the values) samples
sequences of length ``L`` (``max_len = L``) with

* ``cache``: :func:`gen_jax.autoregressive.transformer_lm.make_cached_generator`, i.e. prefill
  of ``<bos>`` then one ``lax.scan`` of ``L - 1`` ``decode_step``s (each step attends over the
  ``L`` cache slots, the unfilled ones masked);
* ``recompute``: :func:`~gen_jax.autoregressive.transformer_lm.make_recompute_generator`, one
  ``lax.scan`` whose every step runs the full forward pass over the ``L``-token buffer. Its
  cost per step does not depend on the step (the buffer always has length ``L``), so at
  ``L > --recompute_steps`` it is timed on the first ``--recompute_steps`` steps of the same
  program (same buffer, same per-step work) and reported per token.

Both are jitted; compile time is excluded (one warm-up call); the figures are medians of 3 runs
timed with ``block_until_ready``. Prints ms/token and tokens/s (``batch * tokens / seconds``)
and the speed-up of the cache.

Measured here (2 CPU cores shared with other jobs, load ~2.7; batch 1; 75 s in all)::

         L  cache ms/tok  cache tok/s  recomp ms/tok  recomp tok/s  recomp steps  speed-up
        64         0.288         3474          6.064           165            32     21.1x
       256         0.378         2644         25.188            40            32     66.6x
      1024         1.299          770        163.374             6            32    125.8x

(an earlier run at load ~5: 0.35 / 0.92 / 1.90 ms per token cached, 100x at 1024). The cached
per-token time grows 4.5x over a 16x longer sequence (each step reads all ``max_len`` cache
slots: 8 MB at ``L = 1024`` against 13 MB of weights), the recomputing one 27x (and its time
per sequence quadratically). Before the cache buffers were split per layer, laid out for the
matmuls and written after they are read (:mod:`gen_jax.nn.kv_cache`), XLA copied the whole
cache at every step and the cached time grew 7x (1.3 -> 9.4 ms/token at load ~7).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.timing import median_seconds
from gen_jax.autoregressive.token_sampling import make_token_sampler
from gen_jax.autoregressive.transformer_lm import make_cached_generator, make_recompute_generator
from gen_jax.nn.transformer import TransformerConfig, make_decoder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="64,256,1024")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d_model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--recompute_steps", type=int, default=32)
    a = p.parse_args(argv)
    lengths = [int(s) for s in a.lengths.split(",")]
    vocab = 257
    pick = make_token_sampler(1.0, 0, 1.0, vocab)
    print(f"transformer {a.layers} layers, d={a.d_model}, {a.heads} heads, rotary, V={vocab}, batch {a.batch}, "
          f"{jax.devices()[0].platform}; median of 3 after compile")
    print(f"{'L':>6s} {'cache ms/tok':>13s} {'cache tok/s':>12s} {'recomp ms/tok':>14s} {'recomp tok/s':>13s} "
          f"{'recomp steps':>13s} {'speed-up':>9s}")
    for length in lengths:
        cfg = TransformerConfig(vocab_size=vocab, max_len=length, num_layers=a.layers, d_model=a.d_model,
                                num_heads=a.heads, positions="rotary")
        dec = make_decoder(cfg)
        shapes = jax.eval_shape(dec.init, jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.02, s.shape), s.dtype), shapes)
        first = jnp.zeros((a.batch, 1), jnp.int32)
        cached = jax.jit(make_cached_generator(dec, pick, None), static_argnums=3)
        recompute = jax.jit(make_recompute_generator(dec, pick, None), static_argnums=(3, 4))
        n_rec = min(length, a.recompute_steps)
        key = jax.random.PRNGKey(1)
        jax.block_until_ready(cached(params, key, first, length))
        jax.block_until_ready(recompute(params, key, first, n_rec, length))
        t_c = median_seconds(lambda: cached(params, key, first, length)) / length
        t_r = median_seconds(lambda: recompute(params, key, first, n_rec, length)) / n_rec
        print(f"{length:6d} {t_c * 1e3:13.3f} {a.batch / t_c:12.0f} {t_r * 1e3:14.3f} {a.batch / t_r:13.0f} "
              f"{n_rec:13d} {t_r / t_c:8.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
