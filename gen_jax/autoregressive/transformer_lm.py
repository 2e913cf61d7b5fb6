"""Decoder-only transformer language model as a :class:`~gen_jax.model.GenerativeModel` bundle.

The model is the chain rule over a token sequence ``y_1..y_L`` (Bengio et al. 2003; Radford
et al. 2019, Eq. 1), computed by the causal transformer of :mod:`gen_jax.nn.transformer`:

    log P(y | c) = sum_{t=1..L} log p(y_t | c, <bos>, y_<t).

What the tokens are (config ``tokens``):

* ``'caption_chars'``: the caption's UTF-8 bytes + 1 (``batch['caption_chars'] [B, Lc]``,
  vocabulary 257); 0 is padding and also *end of text*: the targets are the caption followed
  by one 0 (``L = Lc + 1``), and the input starts with an extra ``<bos>`` id 257.
* ``'caption_tokens'``: the dataset's word ids (``batch['caption_tokens'] [B, Lw]``,
  ``<bos>`` = 2 first, ``<eos>`` = 3 ends the text, 0 pads; vocabulary ``info.vocab_size``);
  the targets are ``caption_tokens[:, 1:]`` (``L = Lw - 1``).
* ``'image'``: the pixel levels of ``batch['image']`` in raster order (row, column, channel:
  van den Oord et al. 2016, Eq. 1-2), ``L = D = H W C`` tokens of vocabulary ``K``, with a
  ``<bos>`` id ``K``.

Conditioning (config ``condition``) is a prompt of prefix tokens before ``<bos>`` with ids
above the generated vocabulary: ``'label'`` one token ``label``; ``'caption_tokens'`` the
caption's word ids. The loss never scores the prefix (the logits have only the generated
vocabulary, ``out_size``).

Loss: mean token NLL in nats over the scored tokens: for text every target up to and
including the first end-of-text token (padding after it is ignored); logged as
``bits_per_char`` / ``bits_per_token`` / ``bpd`` (image). The ``likelihood`` is exact: for
images (unit ``'dim'``) ``log P(levels) + D log K`` of
:func:`gen_jax.autoregressive.common.density_log_prob`; for text (unit ``'token'``) the nats of
the scored tokens, the end token included (so bits/char counts it as one character), with
``count`` the scored tokens per example.

Sampling: ``prefill`` of ``[prefix, <bos>]``, then ONE ``lax.scan`` over positions whose carry
holds the KV cache; each step draws a token with temperature / top-k / top-p
(:mod:`gen_jax.autoregressive.token_sampling`) and runs ``decode_step`` on it. After a text
sample's end token every later token is 0. Samples (``sampler``): text, kind ``'tokens'``,
``int32 [num, L]`` (words: with the leading ``<bos>``, ``[num, Lw]``; chars: ``[num, Lc + 1]``),
printed by ``sampler.describe``; images, kind ``'image'``, ``float32 [num, H, W, C] = level /
(K - 1)``. Conditional models draw sampling conditions like every family (``conditioning``:
labels cycling ``0..C-1``, or the captions of a split's first examples).

:func:`build_transformer_lm` also returns (:class:`TransformerLMParts`) ``make_sampler(temperature,
top_k, top_p, use_cache=True)``, ``sample_no_cache`` (the same sampler recomputing the full
forward pass at every step: same keys, same tokens up to float rounding),
``token_log_prob(params, batch) -> [B]``, ``num_tokens(batch) -> [B]`` (scored tokens per
example), ``hidden_states(params, batch) -> (hidden [B, L, d], mask [B, L])`` (final normed
hidden states at the inputs whose next token is scored, for attribute classifiers,
:mod:`gen_jax.autoregressive.pplm`), ``decoder`` (:class:`gen_jax.nn.transformer.Decoder`) and
``layout`` (:class:`SequenceLayout`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.autoregressive.common import density_log_prob, from_levels, to_levels
from gen_jax.autoregressive.token_sampling import make_token_sampler
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import (DataSpec, GenerativeModel, Likelihood, Sampler, check_image_batch, label_conditioning,
                           loss_training, require_labels, split_conditioning)
from gen_jax.nn.precision import check_compute_dtype
from gen_jax.nn.remat import check_remat
from gen_jax.nn.transformer import Decoder, TransformerConfig, check_token_ids, make_decoder

CHAR_VOCAB = 257  # ByteTokenizer: byte + 1, 0 = pad / end of text
WORD_BOS, WORD_EOS = 2, 3  # gen_jax.data.tokenizers


@dataclasses.dataclass(frozen=True)
class TransformerLMConfig(Checked):
    """``config.model`` of the transformer LM (``typed(TransformerLMConfig, cfg)``).

    Attributes:
      name: model name.
      tokens: ``'caption_chars'``, ``'caption_tokens'`` or ``'image'`` (module docstring).
      condition: ``'none'``, ``'label'`` or ``'caption_tokens'`` (prefix tokens).
      num_layers, d_model, num_heads, mlp_ratio: transformer sizes.
      positions: ``'learned'`` or ``'rotary'``; rope_base: RoPE base.
      dropout: residual/embedding dropout while training.
      temperature, top_k, top_p: default sampling settings (0 = greedy / off / 1 = off).
      compute_dtype: ``'float32'`` or ``'bfloat16'`` (the blocks' matmuls; params, softmax and
        the log-likelihood stay float32: :mod:`gen_jax.nn.precision`).
      remat: ``'none'``, ``'full'`` or ``'dots_saveable'`` per block (:mod:`gen_jax.nn.remat`).
    """

    name: str = "transformer_lm"
    tokens: Literal["caption_chars", "caption_tokens", "image"] = "caption_chars"
    condition: Literal["none", "label", "caption_tokens"] = "none"
    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    positions: Literal["learned", "rotary"] = "rotary"
    rope_base: float = 10000.0
    dropout: float = 0.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    compute_dtype: str = "float32"
    remat: str = "none"

    def __post_init__(self):
        self.positive("num_layers", "d_model", "num_heads", "mlp_ratio")
        check_compute_dtype(self.compute_dtype)
        check_remat(self.remat)
        self.require(self.d_model % self.num_heads == 0, "num_heads",
                     f"d_model = {self.d_model} is not divisible by num_heads = {self.num_heads}")
        self.require(self.positions != "rotary" or (self.d_model // self.num_heads) % 2 == 0, "positions",
                     f"rotary needs an even head width, got d_model / num_heads = {self.d_model // self.num_heads}")
        self.require(self.rope_base > 1, "rope_base", f"must be > 1, got {self.rope_base}")
        self.in_range("dropout", 0, 1, hi_open=True)
        self.require(self.temperature >= 0, "temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        self.require(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        self.in_range("top_p", 0, 1, lo_open=True)


@dataclasses.dataclass(frozen=True)
class SequenceLayout:
    """Where the tokens of one example sit: ``[prefix (P), <bos>, y_1 .. y_{L-1}]`` in,
    ``y_1 .. y_L`` out (module docstring).

    Attributes:
      tokens, condition: the config fields.
      vocab: ``V``, the generated vocabulary (logits width).
      bos: the ``<bos>`` input id.
      length: ``L`` generated tokens.
      prefix_len: ``P``.
      cond_offset: id of condition value 0 in the prefix.
      vocab_in: input vocabulary (``V`` + ``<bos>`` + condition ids).
      end_id: the end-of-text id (text), ``None`` (image).
      batch_key: the batch key holding the data tokens.
      data_len: its length (``Lc``, ``Lw`` or ``D``).
      image_shape, num_levels, dataset: of the dataset.
      num_cond: number of condition ids (classes or caption vocabulary).
    """

    tokens: str
    condition: str
    vocab: int
    bos: int
    length: int
    prefix_len: int
    cond_offset: int
    vocab_in: int
    end_id: Optional[int]
    batch_key: str
    data_len: int
    image_shape: tuple
    num_levels: int
    dataset: str
    num_cond: int

    @property
    def max_len(self) -> int:
        return self.prefix_len + self.length

    # -- data -> tokens

    def targets(self, batch, where: str) -> jax.Array:
        """The scored tokens ``y [B, L]`` of a batch (int32)."""
        if self.batch_key not in batch:
            raise ValueError(f"{where}: batch[{self.batch_key!r}] is missing (keys: {sorted(batch)})")
        x = batch[self.batch_key]
        if self.tokens == "image":
            check_image_batch(x, self.image_shape, f"{where} batch['image']")
            return to_levels(x, self.num_levels).reshape(x.shape[0], self.data_len)
        if x.ndim != 2 or x.shape[1] != self.data_len:
            raise ValueError(f"{where}: batch[{self.batch_key!r}] must be int [B, {self.data_len}], got shape {x.shape}")
        check_token_ids(x, self.vocab, f"{where} batch[{self.batch_key!r}]")
        x = x.astype(jnp.int32)
        if self.tokens == "caption_chars":
            return jnp.concatenate([x, jnp.zeros((x.shape[0], 1), jnp.int32)], axis=1)
        return x[:, 1:]

    def mask(self, y: jax.Array) -> jax.Array:
        """``[B, L]`` float: 1 where the target is scored (text: up to and including the first
        end token; image: everywhere)."""
        if self.end_id is None:
            return jnp.ones(y.shape, jnp.float32)
        is_end = (y == self.end_id).astype(jnp.int32)
        return ((jnp.cumsum(is_end, axis=1) - is_end) == 0).astype(jnp.float32)

    def prefix(self, source, b: int, where: str) -> jax.Array:
        """Condition prefix ``[b, P]`` (int32) from a batch or ``cond`` dict."""
        if self.condition == "none":
            return jnp.zeros((b, 0), jnp.int32)
        key = "label" if self.condition == "label" else "caption_tokens"
        if source is None or key not in source:
            want = f"int [{b}]" if key == "label" else f"int [{b}, {self.prefix_len}]"
            raise ValueError(f"{where}: the model is conditioned on {key!r}; pass {{'{key}': {want}}}")
        c = jnp.asarray(source[key])
        want_shape = (b,) if key == "label" else (b, self.prefix_len)
        if c.shape != want_shape:
            raise ValueError(f"{where}: {key!r} must have shape {list(want_shape)}, got {c.shape}")
        check_token_ids(c, self.num_cond, f"{where} {key!r}")
        c = c.astype(jnp.int32).reshape(b, self.prefix_len)
        return self.cond_offset + c

    def inputs(self, prefix: jax.Array, y: jax.Array) -> jax.Array:
        """``[prefix, <bos>, y_1..y_{L-1}]`` ``[B, P + L]``."""
        bos = jnp.full((y.shape[0], 1), self.bos, jnp.int32)
        return jnp.concatenate([prefix, bos, y[:, :-1]], axis=1)

    def first_tokens(self, prefix: jax.Array) -> jax.Array:
        """The prompt a sampler prefills: ``[prefix, <bos>]`` ``[B, P + 1]``."""
        return jnp.concatenate([prefix, jnp.full((prefix.shape[0], 1), self.bos, jnp.int32)], axis=1)

    # -- generated tokens -> samples

    def to_samples(self, y: jax.Array) -> jax.Array:
        """Generated ``y [num, L]`` -> what ``sample`` returns (module docstring)."""
        if self.tokens == "image":
            return from_levels(y.reshape((y.shape[0],) + self.image_shape), self.num_levels)
        if self.tokens == "caption_tokens":
            return jnp.concatenate([jnp.full((y.shape[0], 1), WORD_BOS, jnp.int32), y], axis=1)
        return y

    def describe(self, samples) -> list[str]:
        """Text of int samples ``[num, L]``."""
        samples = np.asarray(samples)
        if self.tokens == "caption_chars":
            from gen_jax.data.tokenizers import ByteTokenizer

            return ByteTokenizer().decode(np.clip(samples, 0, CHAR_VOCAB - 1))
        from gen_jax.data.datasets import get_tokenizer

        return get_tokenizer(self.dataset).decode(samples)


def make_layout(cfg: TransformerLMConfig, info: Any) -> SequenceLayout:
    """The :class:`SequenceLayout` of ``cfg`` on dataset ``info`` (ConfigError if the dataset
    lacks what the config asks for)."""
    image_shape = tuple(int(s) for s in info.image_shape)
    k = int(info.num_levels)
    needs_captions = cfg.tokens != "image" or cfg.condition == "caption_tokens"
    if needs_captions and not getattr(info, "has_captions", False):
        raise ConfigError(f"config.model.tokens/condition: dataset {info.name!r} has no captions")
    if cfg.tokens == "caption_chars":
        lc = int(getattr(info, "caption_char_len", 0))
        if lc < 1:
            raise ConfigError(f"config.model.tokens: dataset {info.name!r} has no caption_chars")
        vocab, bos, length, end, key, data_len, extra = CHAR_VOCAB, CHAR_VOCAB, lc + 1, 0, "caption_chars", lc, 1
    elif cfg.tokens == "caption_tokens":
        lw = int(info.caption_len)
        if lw < 2:
            raise ConfigError(f"config.model.tokens: caption_len {lw} of {info.name!r} is < 2")
        vocab, bos, length, end, key, data_len, extra = int(info.vocab_size), WORD_BOS, lw - 1, WORD_EOS, \
            "caption_tokens", lw, 0
    else:
        d = int(np.prod(image_shape))
        vocab, bos, length, end, key, data_len, extra = k, k, d, None, "image", d, 1
    if cfg.condition == "label":
        num_cond, prefix_len = require_labels(info.num_classes, "config.model.condition"), 1
    elif cfg.condition == "caption_tokens":
        num_cond, prefix_len = int(info.vocab_size), int(info.caption_len)
    else:
        num_cond, prefix_len = 0, 0
    offset = vocab + extra
    return SequenceLayout(tokens=cfg.tokens, condition=cfg.condition, vocab=vocab, bos=bos, length=length,
                          prefix_len=prefix_len, cond_offset=offset, vocab_in=offset + num_cond, end_id=end,
                          batch_key=key, data_len=data_len, image_shape=image_shape, num_levels=k,
                          dataset=str(info.name), num_cond=num_cond)


def make_lm_decoder(cfg: TransformerLMConfig, layout: SequenceLayout) -> Decoder:
    """The transformer of ``cfg`` sized for ``layout``."""
    return make_decoder(TransformerConfig(
        vocab_size=layout.vocab_in, max_len=layout.max_len, num_layers=cfg.num_layers, d_model=cfg.d_model,
        num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, positions=cfg.positions, rope_base=cfg.rope_base,
        dropout=cfg.dropout, out_size=layout.vocab, compute_dtype=cfg.compute_dtype, remat=cfg.remat))


# ----------------------------------------------------------------------------- generation


def choose_token(pick: Callable, end_id: Optional[int]) -> Callable:
    """``step(key, logits [B, V], done [B]) -> (token [B], done)``: draws with ``pick``; once a
    row has produced ``end_id`` every later token of that row is 0 (padding)."""

    def step(key, logits, done):
        tok = pick(key, logits)
        if end_id is None:
            return tok, done
        tok = jnp.where(done, 0, tok)
        return tok, done | (tok == end_id)

    return step


def make_cached_generator(decoder: Decoder, pick: Callable, end_id: Optional[int]) -> Callable:
    """``generate(params, key, first [B, P0], steps) -> int32 [B, steps]``: ``prefill`` of the
    prompt, then one ``lax.scan`` over the remaining positions with the KV cache in the carry
    (step ``t`` uses ``split(key, steps)[t]``)."""
    choose = choose_token(pick, end_id)

    def generate(params, key, first, steps: int):
        if first.shape[1] + steps - 1 > decoder.cfg.max_len:
            raise ValueError(f"generate: prompt {first.shape[1]} + {steps} steps exceed max_len = "
                             f"{decoder.cfg.max_len}")
        logits, cache = decoder.prefill(params, first)
        keys = jax.random.split(key, steps)
        done = jnp.zeros((first.shape[0],), bool)

        def body(carry, k):
            logits, cache, done = carry
            tok, done = choose(k, logits, done)
            logits, cache = decoder.decode_step(params, cache, tok)
            return (logits, cache, done), tok

        (logits, _, done), toks = jax.lax.scan(body, (logits[:, -1], cache, done), keys[:-1])
        last, _ = choose(keys[-1], logits, done)
        return jnp.concatenate([toks.T, last[:, None]], axis=1)

    return generate


def make_recompute_generator(decoder: Decoder, pick: Callable, end_id: Optional[int]) -> Callable:
    """The same sampler without a cache: ``generate(params, key, first [B, P0], steps,
    buffer_len=None)``: each of the ``steps`` scan steps runs the full forward pass over a
    token buffer of fixed length ``buffer_len`` (default ``P0 + steps - 1``, the tokens the
    model reads) and reads the logits at the current position. Same keys as
    :func:`make_cached_generator`, so the same tokens up to float rounding."""
    choose = choose_token(pick, end_id)

    def generate(params, key, first, steps: int, buffer_len: Optional[int] = None):
        b, p0 = first.shape
        n = buffer_len or p0 + steps - 1
        if n < p0 + steps - 1 or n > decoder.cfg.max_len:
            raise ValueError(f"generate: buffer_len {n} must be in [{p0 + steps - 1}, max_len = {decoder.cfg.max_len}]")
        buf = jnp.zeros((b, n), jnp.int32).at[:, :p0].set(first)
        keys = jax.random.split(key, steps)

        def body(carry, inp):
            buf, done = carry
            t, k = inp
            logits = jax.lax.dynamic_index_in_dim(decoder.apply(params, buf), p0 - 1 + t, axis=1, keepdims=False)
            tok, done = choose(k, logits, done)
            buf = buf.at[:, p0 + t].set(tok, mode="drop")
            return (buf, done), tok

        _, toks = jax.lax.scan(body, (buf, jnp.zeros((b,), bool)), (jnp.arange(steps), keys))
        return toks.T

    return generate


# ----------------------------------------------------------------------------- the bundle


class TransformerLMParts(NamedTuple):
    """A transformer LM and the functions beyond the contract (module docstring).

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel`.
      layout: the :class:`SequenceLayout` of its tokens.
      decoder: the :class:`gen_jax.nn.transformer.Decoder` (``prefill`` / ``decode_step`` / ``decode``).
      hidden_states: ``(params, batch) -> (hidden [B, L, d], mask [B, L])``.
      token_log_prob: ``(params, batch) -> [B]`` nats of the scored tokens.
      num_tokens: ``batch -> [B]`` scored tokens per example.
      make_sampler: ``(temperature, top_k, top_p, use_cache=True) -> sample(params, key, num, cond=None)``.
      sample_no_cache: the default sampler without the KV cache (same keys, same tokens).
    """

    model: GenerativeModel
    layout: SequenceLayout
    decoder: Decoder
    hidden_states: Callable
    token_log_prob: Callable
    num_tokens: Callable
    make_sampler: Callable
    sample_no_cache: Callable


def _conditioning(layout: SequenceLayout):
    if layout.condition == "label":
        return label_conditioning(layout.num_cond)
    if layout.condition == "caption_tokens":
        return split_conditioning("caption_tokens")
    return None


def build_transformer_lm(cfg: Any, info: Any) -> TransformerLMParts:
    """The transformer LM (module docstring) and its parts.

    Args:
      cfg: :class:`TransformerLMConfig` or ``config.model``.
      info: :class:`gen_jax.data.datasets.DatasetInfo`.
    """
    cfg = typed(TransformerLMConfig, cfg)
    layout = make_layout(cfg, info)
    try:
        check_sampling = make_token_sampler(cfg.temperature, cfg.top_k, cfg.top_p, layout.vocab)
    except ValueError as e:
        raise ConfigError(f"config.model: {e}") from None
    del check_sampling
    decoder = make_lm_decoder(cfg, layout)
    p, length = layout.prefix_len, layout.length
    is_text = cfg.tokens != "image"
    unit = {"caption_chars": "bits_per_char", "caption_tokens": "bits_per_token", "image": "bpd"}[cfg.tokens]

    def scored(params, batch, key, where, with_hidden=False):
        y = layout.targets(batch, where)  # [B, L]
        pre = layout.prefix(batch, y.shape[0], f"{where} batch")
        x = layout.inputs(pre, y)  # [B, P + L]
        logits, hidden = decoder.apply_hidden(params, x, key)
        logp = jax.nn.log_softmax(logits[:, p:].astype(jnp.float32), axis=-1)  # [B, L, V]
        ll = jnp.take_along_axis(logp, y[..., None], axis=-1)[..., 0]  # [B, L]
        return ll, layout.mask(y), hidden[:, p:]

    def init(key, batch):
        y = layout.targets(batch, "init")
        layout.prefix(batch, y.shape[0], "init batch")
        return decoder.init(key)

    def loss(params, batch, key):
        ll, mask, _ = scored(params, batch, key if cfg.dropout > 0 else None, "loss")
        n = jnp.maximum(jnp.sum(mask), 1.0)
        nll = -jnp.sum(ll * mask) / n  # mean token NLL, nats
        metrics = {unit: nll / math.log(2.0), "scored_tokens": jnp.sum(mask, axis=1)}
        return nll, metrics

    def token_log_prob(params, batch):
        """``[B]`` nats: ``sum_t mask_t log p(y_t | ...)``."""
        ll, mask, _ = scored(params, batch, None, "token_log_prob")
        return jnp.sum(ll * mask, axis=1)

    def log_prob(params, batch, key):
        del key
        return density_log_prob(token_log_prob(params, batch), layout.image_shape, layout.num_levels)

    def num_tokens(batch):
        """``[B]``: the scored tokens per example (text: up to and including the end token)."""
        return jnp.sum(layout.mask(layout.targets(batch, "num_tokens")), axis=1)

    def hidden_states(params, batch):
        """``(hidden [B, L, d], mask [B, L])`` at the inputs ``<bos>, y_1..y_{L-1}``."""
        _, mask, hidden = scored(params, batch, None, "hidden_states")
        return hidden, mask

    def make_sampler(temperature: float = cfg.temperature, top_k: int = cfg.top_k, top_p: float = cfg.top_p,
                     use_cache: bool = True) -> Callable:
        """``sample(params, key, num, cond=None)`` with these settings (checked here)."""
        pick = make_token_sampler(temperature, top_k, top_p, layout.vocab, "make_sampler")
        gen = (make_cached_generator if use_cache else make_recompute_generator)(decoder, pick, layout.end_id)

        def sample(params, key, num, cond=None):
            first = layout.first_tokens(layout.prefix(cond, num, "sample cond"))
            return layout.to_samples(gen(params, key, first, length))

        return sample

    if is_text:
        sampler = Sampler(make_sampler(), "tokens", describe=layout.describe)
        likelihood = Likelihood(lambda params, batch, key: token_log_prob(params, batch), "exact", unit="token",
                                count=num_tokens)
    else:
        sampler = Sampler(make_sampler(), "image")
        likelihood = Likelihood(log_prob, "exact")
    model = GenerativeModel(name=cfg.name, family="autoregressive", training=loss_training(init, loss),
                            sampler=sampler, likelihood=likelihood, conditioning=_conditioning(layout),
                            data=DataSpec(None if is_text else tuple(info.image_shape), 0 if is_text else layout.vocab,
                                          0, ((layout.batch_key, layout.vocab),) * is_text))  # layout checks prefixes
    return TransformerLMParts(model=model, layout=layout, decoder=decoder, hidden_states=hidden_states,
                              token_log_prob=token_log_prob, num_tokens=num_tokens, make_sampler=make_sampler,
                              sample_no_cache=make_sampler(use_cache=False))


def make_transformer_lm(cfg: Any, info: Any) -> GenerativeModel:
    """The registry's transformer LM: :func:`build_transformer_lm` ``.model``."""
    return build_transformer_lm(cfg, info).model
