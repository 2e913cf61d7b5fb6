"""Classifier-free guidance on token logits in one KV-cached ``lax.scan``, and best-of-N reranking.

Guidance (Ho & Salimans 2022, Eq. 6, written for logits as in the autoregressive text-to-image
models that followed it): a model trained with its condition dropped to a null condition gives
both ``l_c = log p(y_t | c, y_<t)`` and ``l_u = log p(y_t | null, y_<t)`` (up to a constant per
step); sampling draws from

    l_s = l_u + s (l_c - l_u),

so ``s = 1`` is the conditional model itself and ``s > 1`` sharpens towards tokens the
condition makes likelier (the implicit classifier ``p(c | y) ~ p(y | c) / p(y)``).

:func:`make_guided_generator` runs both streams as one batch of ``2 B`` rows through the
decoder: one ``prefill`` of ``[cond prompt; null prompt]``, then one ``lax.scan`` whose carry
holds the shared KV cache; each step draws ONE token per example from the guided logits and
feeds it to both rows of that example. :func:`make_guided_recompute` is the same sampler
without a cache (the full forward pass over a fixed buffer at every step, same keys): the
reference the tests compare it with.

Reranking (Ramesh et al. 2021, Sec. 2.5: "we rerank the samples drawn from the transformer
using a pretrained contrastive model"): :func:`best_of_n` draws ``N`` candidates per condition
and keeps the one a score function (CLIP similarity to the caption) ranks highest;
:func:`pick_best` is the selection itself.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp


def guided_logits(logits_cond: jax.Array, logits_uncond: jax.Array, scale) -> jax.Array:
    """``l_u + s (l_c - l_u)`` (Ho & Salimans 2022, Eq. 6 on logits); shapes ``[..., V]``."""
    return logits_uncond + scale * (logits_cond - logits_uncond)


def _check_prompts(cond_prompt, null_prompt, steps: int, max_len: int):
    if cond_prompt.ndim != 2 or cond_prompt.shape != null_prompt.shape:
        raise ValueError(f"guided generator: prompts must be int [B, P0] of one shape, got "
                         f"{cond_prompt.shape} and {null_prompt.shape}")
    if cond_prompt.shape[1] + steps - 1 > max_len:
        raise ValueError(f"guided generator: prompt {cond_prompt.shape[1]} + {steps} steps exceed "
                         f"max_len = {max_len}")


def make_guided_generator(decoder, pick: Callable, vocab: int, offset: int = 0) -> Callable:
    """``generate(params, key, cond_prompt [B, P0], null_prompt [B, P0], steps, scale) ->
    (ids int32 [B, steps], guided logits [B, steps, vocab])``.

    The generated ids are ``0..vocab-1``, read from logit columns ``offset..offset+vocab-1`` and
    fed back as input id ``id`` (the caller's layout puts its generated tokens at input ids
    ``0..vocab-1``). Step ``t`` draws with ``jax.random.split(key, steps)[t]``.
    """

    def generate(params, key, cond_prompt, null_prompt, steps: int, scale):
        _check_prompts(cond_prompt, null_prompt, steps, decoder.cfg.max_len)
        b = cond_prompt.shape[0]
        logits, cache = decoder.prefill(params, jnp.concatenate([cond_prompt, null_prompt], axis=0))
        keys = jax.random.split(key, steps)

        def guide(lg):  # [2B, V_out] -> [B, vocab]
            lg = lg[:, offset:offset + vocab].astype(jnp.float32)
            return guided_logits(lg[:b], lg[b:], scale)

        def body(carry, k):
            g, cache = carry
            tok = pick(k, g)
            lg, cache = decoder.decode_step(params, cache, jnp.concatenate([tok, tok]))
            return (guide(lg), cache), (tok, g)

        g0 = guide(logits[:, -1])
        (g_last, _), (toks, gs) = jax.lax.scan(body, (g0, cache), keys[:-1])
        last = pick(keys[-1], g_last)
        ids = jnp.concatenate([toks.T, last[:, None]], axis=1)
        return ids, jnp.concatenate([jnp.swapaxes(gs, 0, 1), g_last[:, None]], axis=1)

    return generate


def make_guided_recompute(decoder, pick: Callable, vocab: int, offset: int = 0) -> Callable:
    """:func:`make_guided_generator` without a cache: every step runs the full forward pass of
    both streams over a fixed-length buffer and reads the current position (same keys, so the
    same ids and logits up to float rounding)."""

    def generate(params, key, cond_prompt, null_prompt, steps: int, scale):
        _check_prompts(cond_prompt, null_prompt, steps, decoder.cfg.max_len)
        b, p0 = cond_prompt.shape
        n = p0 + steps - 1
        buf = jnp.zeros((2 * b, n), jnp.int32).at[:, :p0].set(jnp.concatenate([cond_prompt, null_prompt]))
        keys = jax.random.split(key, steps)

        def body(buf, inp):
            t, k = inp
            lg = jax.lax.dynamic_index_in_dim(decoder.apply(params, buf), p0 - 1 + t, axis=1, keepdims=False)
            lg = lg[:, offset:offset + vocab].astype(jnp.float32)
            g = guided_logits(lg[:b], lg[b:], scale)
            tok = pick(k, g)
            buf = buf.at[:, p0 + t].set(jnp.concatenate([tok, tok]), mode="drop")
            return buf, (tok, g)

        _, (toks, gs) = jax.lax.scan(body, buf, (jnp.arange(steps), keys))
        return toks.T, jnp.swapaxes(gs, 0, 1)

    return generate


# ----------------------------------------------------------------------------- reranking


def pick_best(candidates: jax.Array, scores: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``candidates [N, B, ...]``, ``scores [N, B]`` -> ``(best [B, ...], index [B])``: per
    example the candidate of highest score (the first on ties)."""
    if scores.ndim != 2 or candidates.shape[:2] != scores.shape:
        raise ValueError(f"pick_best: candidates [N, B, ...] and scores [N, B] must agree, got "
                         f"{candidates.shape} and {scores.shape}")
    idx = jnp.argmax(scores, axis=0)  # [B]
    best = jnp.take_along_axis(candidates, idx.reshape((1, -1) + (1,) * (candidates.ndim - 2)), axis=0)[0]
    return best, idx


def best_of_n(sample: Callable, score: Callable, params, key: jax.Array, num: int, n: int,
              cond: Optional[dict] = None) -> tuple[jax.Array, jax.Array]:
    """Draws ``n`` candidates per condition with ``sample(params, key, num, cond)`` (keys
    ``split(key, n)``) and keeps the best by ``score(samples [num, ...], cond) -> [num]``
    (Ramesh et al. 2021, Sec. 2.5). Returns ``(best [num, ...], scores [n, num])``."""
    if n < 1:
        raise ValueError(f"best_of_n: n must be >= 1, got {n}")
    cands, scores = [], []
    for k in jax.random.split(key, n):
        x = sample(params, k, num, cond)
        cands.append(x)
        scores.append(jnp.asarray(score(x, cond)).reshape(num))
    cands, scores = jnp.stack(cands), jnp.stack(scores)
    return pick_best(cands, scores)[0], scores


def embedder_score(embedder, params, text_key: str = "caption_tokens") -> Callable:
    """``score(images, cond) -> [num]``: the cosine similarity of the images' and captions'
    embeddings (both l2-normalized by the :class:`gen_jax.model.Embedder`; Radford et al. 2021)."""

    def score(images, cond):
        zi = embedder.embed_image(params, images)
        zt = embedder.embed_text(params, jnp.asarray(cond[text_key]))
        return jnp.sum(zi * zt, axis=-1)

    return score
