"""Decoder-only transformer (GPT-style) with a KV cache for incremental decoding.

Architecture (Vaswani et al. 2017, Sec. 3.1-3.5, decoder stack only, with the pre-LayerNorm
residual arrangement of GPT-2 / Xiong et al. 2020, Fig. 1 (b), the "Pre-LN Transformer")::

    h_0 = E[x] (+ P[pos] for learned positions)                 token (+ position) embedding
    a_l = h_{l-1} + Attn_l(LN(h_{l-1}))                          causal multi-head attention
    h_l = a_l + W2_l GELU(W1_l LN(a_l))                          position-wise MLP (Sec. 3.3)
    logits = W_out LN_f(h_N)                                     [B, L, V]

Attention is Eq. 1 of Vaswani et al., ``softmax(Q K^T / sqrt(d_k)) V``, per head (Sec. 3.2.2),
with the causal mask of Sec. 3.2.3: query position ``i`` sees key positions ``j <= i`` (masked
logits are set to the most negative float, so future keys get weight exactly 0 and the
gradient of output ``i`` w.r.t. inputs ``j > i`` is exactly zero). It is the one
:class:`gen_jax.nn.attention.MultiHeadAttention` (``causal=True``, RoPE, KV cache), which the
U-Net and the caption encoder use too.

Positions (config ``positions``):

* ``'learned'``: a learned table ``P [max_len, d]`` added to the token embeddings (the
  learned variant of Sec. 3.5, as in GPT-2);
* ``'rotary'``: RoPE (Su et al. 2021, RoFormer, Eq. 34): queries and keys of position ``m``
  are rotated pairwise, ``(x_{2i-1}, x_{2i}) -> (x_{2i-1} cos m t_i - x_{2i} sin m t_i,
  x_{2i} cos m t_i + x_{2i-1} sin m t_i)`` with ``t_i = base^{-2(i-1)/d_head}``, so
  ``<R_m q, R_n k> = <q, R_{n-m} k>`` depends only on the offset ``n - m`` (Sec. 3.2).

Initialization follows GPT-2: weights ``N(0, 0.02)``, residual output projections scaled by
``1 / sqrt(2 N)``.

Pure functions (:func:`make_decoder`), all with explicit params:

* ``init(key) -> params``;
* ``apply(params, tokens [B, L], key=None) -> logits [B, L, V]`` (training / scoring; ``key``
  enables dropout); ``apply_hidden`` also returns the final normed hidden states ``[B, L, d]``;
  ``apply_embeds`` takes input embeddings ``[B, L, d]`` instead of token ids;
* ``prefill(params, tokens [B, P]) -> (logits [B, P, V], cache)``: runs a prompt, filling a
  fresh :class:`~gen_jax.nn.kv_cache.KVCache` (``max_len`` slots; one key and one value
  buffer per layer, laid out so that a compiled decode step updates them in place);
* ``decode_step(params, cache, token [B], pos=None) -> (logits [B, V], cache)``: one token at
  position ``pos`` (default ``cache.index``) attending to the cached past;
* ``decode(params, cache, tokens [B, T] or embeds [B, T, d], pos) -> (logits, hidden, cache)``:
  the general incremental call both of the above use (PPLM perturbs its ``cache``).

Input checks (``ValueError`` naming the argument and sizes): sequences longer than
``max_len`` (static shapes: always checked); token ids outside ``[0, vocab_size)`` and
positions past ``max_len`` are checked on the host whenever the array is concrete (eager
calls, ``prefill``/``decode_step`` outside ``jit``). Under ``jit`` they cannot be checked
without a host round trip; there an out-of-vocabulary id (negative ones included) embeds to
NaN (and attention spreads it to the logits of every position of that sequence) and a decode
position ``>= max_len`` yields NaN logits, so a NaN loss or NaN samples (and the train loop's
finiteness guard) flag the error instead of a silently wrong result.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Callable, Literal, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import Checked
from gen_jax.nn.attention import MultiHeadAttention, apply_rotary, rotary_angles  # noqa: F401 (public names)
from gen_jax.nn.kv_cache import KVCache, check_cache, init_cache
from gen_jax.nn.precision import check_compute_dtype, compute_dtype
from gen_jax.nn.remat import check_remat, remat_block
from gen_jax.nn.partitioning import constrain

Positions = Literal["learned", "rotary"]
POSITIONS = typing.get_args(Positions)


@dataclasses.dataclass(frozen=True)
class TransformerConfig(Checked):
    """Sizes of a decoder-only transformer (built in Python by the families; errors name
    ``TransformerConfig.<field>``).

    Attributes:
      vocab_size: input token ids ``0..vocab_size-1`` (embedding rows).
      max_len: longest sequence (position table / cache length).
      num_layers, d_model, num_heads: ``N``, ``d``, ``h`` (``d`` divisible by ``h``).
      mlp_ratio: MLP hidden width ``mlp_ratio * d``.
      positions: ``'learned'`` or ``'rotary'``.
      rope_base: RoPE base (10000 in Su et al. 2021).
      dropout: residual/embedding dropout rate (training only).
      out_size: logits width ``V`` (default ``vocab_size``; smaller when some input ids are
        prompt-only tokens that are never predicted).
      compute_dtype: ``'float32'`` or ``'bfloat16'``: the blocks' matmuls in that dtype, params,
        norms, softmax, the residual stream and the logits head in float32
        (:mod:`gen_jax.nn.precision`).
      remat: rematerialization of each block: ``'none'``, ``'full'`` or ``'dots_saveable'``
        (:mod:`gen_jax.nn.remat`).
    """

    PATH = "TransformerConfig"

    vocab_size: int
    max_len: int
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 4
    mlp_ratio: int = 4
    positions: Positions = "rotary"
    rope_base: float = 10000.0
    dropout: float = 0.0
    out_size: Optional[int] = None
    compute_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        self.positive("vocab_size", "max_len", "num_layers", "d_model", "num_heads", "mlp_ratio")
        self.require(self.d_model % self.num_heads == 0, "d_model",
                     f"{self.d_model} is not divisible by num_heads={self.num_heads}")
        self.require(self.positions in POSITIONS, "positions",
                     f"must be one of {list(POSITIONS)}, got {self.positions!r}")
        self.require(self.positions != "rotary" or self.head_dim % 2 == 0, "num_heads",
                     f"rotary positions need an even head width, got d_model/num_heads = {self.head_dim}")
        self.in_range("dropout", 0.0, 1.0, hi_open=True)
        if self.out_size is not None:
            self.positive("out_size")
        check_compute_dtype(self.compute_dtype, f"{self.PATH}.compute_dtype")
        check_remat(self.remat, f"{self.PATH}.remat")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def logits_size(self) -> int:
        return self.out_size or self.vocab_size


# ----------------------------------------------------------------------------- modules


def _dense_init():
    return nn.initializers.normal(0.02)


def _residual_init(cfg: TransformerConfig):
    """GPT-2's init of the residual output projections: ``N(0, (0.02 / sqrt(2 N))^2)``."""
    return nn.initializers.normal(0.02 / math.sqrt(2 * cfg.num_layers))


class Block(nn.Module):
    """Pre-norm decoder block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` (Xiong et al. 2020)."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, positions, cache=None, deterministic=True):
        cfg = self.cfg
        dtype = compute_dtype(cfg.compute_dtype)
        attn = MultiHeadAttention(cfg.num_heads, kernel_init=_dense_init(), out_init=_residual_init(cfg),
                                  causal=True, rope_base=cfg.rope_base if cfg.positions == "rotary" else None,
                                  scale_at="logits", dtype=dtype, name="attn")
        h = nn.LayerNorm(name="ln1")(x)
        a, new = (attn(h, positions=positions), None) if cache is None else attn(h, positions=positions, cache=cache)
        x = x + nn.Dropout(cfg.dropout)(a, deterministic=deterministic)
        h = nn.Dense(cfg.mlp_ratio * cfg.d_model, kernel_init=_dense_init(), dtype=dtype, name="mlp_in")(
            nn.LayerNorm(name="ln2")(x))
        h = constrain(h, "batch", None, "mlp")  # TP: the hidden units over 'model'
        h = nn.Dense(cfg.d_model, kernel_init=_residual_init(cfg), dtype=dtype, name="mlp_out")(nn.gelu(h))
        return x + nn.Dropout(cfg.dropout)(h, deterministic=deterministic), new


class Transformer(nn.Module):
    """The decoder stack (module docstring). Use through :func:`make_decoder`.

    ``__call__(tokens [B, T] | None, positions [T], embeds=None, cache=None,
    deterministic=True) -> (logits [B, T, V], hidden [B, T, d], cache')``; ``embeds`` (input
    embeddings ``[B, T, d]``, before positions are added) replaces ``tokens``.
    """

    cfg: TransformerConfig

    def setup(self):
        cfg = self.cfg
        self.tok_embed = self.param("tok_embed", _dense_init(), (cfg.vocab_size, cfg.d_model))
        if cfg.positions == "learned":
            self.pos_embed = self.param("pos_embed", _dense_init(), (cfg.max_len, cfg.d_model))
        block = remat_block(Block, cfg.remat, static_argnums=(4,), field=f"{cfg.PATH}.remat")  # deterministic
        self.blocks = [block(cfg, name=f"block_{i}") for i in range(cfg.num_layers)]
        self.ln_f = nn.LayerNorm(name="ln_f")
        self.head = nn.Dense(cfg.logits_size, kernel_init=_dense_init(), name="head")
        self.drop = nn.Dropout(cfg.dropout)

    def embed(self, tokens):
        """Token ids ``[B, T]`` -> ``[B, T, d]``; out-of-range ids (negative too) give NaN."""
        v = self.cfg.vocab_size
        ids = jnp.where((tokens >= 0) & (tokens < v), tokens, v)
        return jnp.take(self.tok_embed, ids, axis=0, mode="fill", fill_value=jnp.nan)

    def __call__(self, tokens, positions, embeds=None, cache=None, deterministic=True):
        x = self.embed(tokens) if embeds is None else embeds
        if self.cfg.positions == "learned":
            x = x + jnp.take(self.pos_embed, positions, axis=0, mode="fill", fill_value=jnp.nan)[None]
        x = self.drop(x, deterministic=deterministic)
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            c = None if cache is None else (cache[0][i], cache[1][i], cache[2])
            x, new = block(x, positions, c, deterministic)
            if new is not None:
                new_k.append(new[0])
                new_v.append(new[1])
        hidden = self.ln_f(x)
        logits = self.head(hidden)
        return logits, hidden, (None if cache is None else (tuple(new_k), tuple(new_v)))


# ----------------------------------------------------------------------------- checks


def concrete(x) -> Optional[np.ndarray]:
    """``x`` as a numpy array when its value is known on the host, else ``None`` (a tracer)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_token_ids(tokens, vocab_size: int, where: str) -> None:
    """Host check (concrete arrays only) that ids lie in ``[0, vocab_size)``."""
    t = concrete(tokens)
    if t is None or t.size == 0:
        return
    if not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{where}: token ids must be integers, got dtype {t.dtype}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{where}: token ids lie in [{lo}, {hi}], outside the vocabulary "
                         f"[0, {vocab_size}) (vocab_size = {vocab_size})")


# ----------------------------------------------------------------------------- pure functions


class Decoder(NamedTuple):
    """The pure functions of a decoder-only transformer (see module docstring)."""

    cfg: TransformerConfig
    init: Callable
    apply: Callable
    apply_hidden: Callable
    apply_embeds: Callable
    init_cache: Callable
    prefill: Callable
    decode_step: Callable
    decode: Callable
    embed_table: Callable


def make_decoder(cfg: TransformerConfig) -> Decoder:
    """The pure functions of the transformer ``cfg`` (module docstring)."""
    module = Transformer(cfg)
    v, s = cfg.vocab_size, cfg.max_len

    def check_seq(tokens, where):
        if tokens.ndim != 2:
            raise ValueError(f"{where}: tokens must be int [B, L], got shape {tokens.shape}")
        if tokens.shape[1] > s:
            raise ValueError(f"{where}: sequence length {tokens.shape[1]} exceeds max_len = {s}")
        check_token_ids(tokens, v, where)

    def init(key):
        return module.init(key, jnp.zeros((1, 1), jnp.int32), jnp.zeros((1,), jnp.int32))

    def run(params, tokens, embeds, key):
        x = tokens if embeds is None else embeds
        positions = jnp.arange(x.shape[1], dtype=jnp.int32)
        rngs = None if key is None else {"dropout": key}
        logits, hidden, _ = module.apply(params, tokens, positions, embeds, None, key is None, rngs=rngs)
        return logits, hidden

    def apply(params, tokens, key=None):
        """``tokens [B, L]`` -> ``logits [B, L, V]`` (``key``: dropout on)."""
        check_seq(tokens, "apply")
        return run(params, tokens, None, key)[0]

    def apply_hidden(params, tokens, key=None):
        """``tokens [B, L]`` -> ``(logits [B, L, V], hidden [B, L, d])``."""
        check_seq(tokens, "apply_hidden")
        return run(params, tokens, None, key)

    def apply_embeds(params, embeds, key=None):
        """Input embeddings ``[B, L, d]`` (positions are added inside) -> ``logits [B, L, V]``."""
        if embeds.ndim != 3 or embeds.shape[2] != cfg.d_model or embeds.shape[1] > s:
            raise ValueError(f"apply_embeds: embeds must be [B, L <= {s}, d = {cfg.d_model}], "
                             f"got shape {embeds.shape}")
        return run(params, None, embeds, key)[0]

    def make_cache(batch: int, dtype=jnp.float32) -> KVCache:
        return init_cache(cfg.num_layers, batch, s, cfg.num_heads, cfg.head_dim, dtype)

    def decode(params, cache: KVCache, tokens=None, pos=None, embeds=None):
        """``T`` new tokens ``[B, T]`` (or ``embeds [B, T, d]``) at positions ``pos..pos+T-1``
        (default ``pos = cache.index``) -> ``(logits [B, T, V], hidden [B, T, d], cache')``."""
        check_cache(cache, cfg.num_layers, s, cfg.num_heads, cfg.head_dim)
        x = tokens if embeds is None else embeds
        if (tokens is None) == (embeds is None):
            raise ValueError("decode: give exactly one of tokens [B, T] and embeds [B, T, d]")
        if x.ndim != (2 if embeds is None else 3) or x.shape[0] != cache.batch_size:
            raise ValueError(f"decode: {'tokens' if embeds is None else 'embeds'} must be "
                             f"[B={cache.batch_size}, T{'' if embeds is None else ', d'}], got shape {x.shape}")
        t = x.shape[1]
        if t > s:
            raise ValueError(f"decode: {t} new tokens exceed the cache length max_len = {s}")
        if tokens is not None:
            check_token_ids(tokens, v, "decode")
        pos = cache.index if pos is None else jnp.asarray(pos, jnp.int32)
        p = concrete(pos)
        if p is not None and (int(p) < 0 or int(p) + t > s):
            raise ValueError(f"decode: positions {int(p)}..{int(p) + t - 1} lie outside the cache "
                             f"[0, max_len = {s})")
        positions = pos + jnp.arange(t, dtype=jnp.int32)
        logits, hidden, (k_all, v_all) = module.apply(params, tokens, positions, embeds,
                                                       (cache.k, cache.v, pos), True)
        # Under jit a position past the cache cannot raise: make it visible as NaN.
        ok = (pos >= 0) & (pos + t <= s)
        logits = jnp.where(ok, logits, jnp.nan)
        return logits, hidden, KVCache(k_all, v_all, pos + t)

    def prefill(params, tokens):
        """``tokens [B, P]`` (``P <= max_len``) from position 0 -> ``(logits [B, P, V], cache)``."""
        check_seq(tokens, "prefill")
        logits, _, cache = decode(params, make_cache(tokens.shape[0]), tokens, 0)
        return logits, cache

    def decode_step(params, cache, token, pos=None):
        """One ``token [B]`` at ``pos`` (default ``cache.index``) -> ``(logits [B, V], cache)``."""
        if token.ndim != 1:
            raise ValueError(f"decode_step: token must be int [B], got shape {token.shape}")
        logits, _, cache = decode(params, cache, token[:, None], pos)
        return logits[:, 0], cache

    def embed_table(params):
        """The input embedding matrix ``[vocab_size, d]`` (PPLM's expected next-token embedding)."""
        return params["params"]["tok_embed"]

    return Decoder(cfg=cfg, init=init, apply=apply, apply_hidden=apply_hidden, apply_embeds=apply_embeds,
                   init_cache=make_cache, prefill=prefill, decode_step=decode_step, decode=decode,
                   embed_table=embed_table)
