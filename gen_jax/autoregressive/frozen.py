"""Frozen: image-to-text through a frozen language model (Tsimpoukelli et al. 2021).

Stage one is a trained caption language model (:mod:`gen_jax.autoregressive.transformer_lm`,
``tokens='caption_tokens'`` or ``'caption_chars'``), held fixed: its params enter through
``Training.frozen`` and no phase updates them. A vision encoder ``v_phi`` (a small
pre-activation ResNet, He et al. 2016) maps an image to ``n`` vectors in the LM's
token-embedding space, the *visual prefix* (Sec. 3, "Visual prefix": the encoder's output is
linearly mapped to ``D * n`` channels and reshaped to ``n`` embeddings of width ``D``), which
the LM reads in front of its own ``<bos>`` embedding, in the place of its text prompt when it
was trained with one (``condition='caption_tokens'``: the LM learnt to write a caption after a
prompt of caption words, so it reads its context; the visual prefix takes that prompt's
place)::

    inputs   [v_phi(x)_1 .. v_phi(x)_n, E[<bos>], E[y_1] .. E[y_{L-1}]]    [B, n + L, D]
    targets                             y_1 .. y_L     (scored at positions n .. n + L - 1)

Training (Sec. 3, Eq. 1): maximize the frozen LM's log-likelihood of the caption given the
prefix, ``log p_{theta,phi}(y | x) = sum_l log p_theta(y_l | v_phi(x), y_<l)``, by gradient
descent on ``phi`` only (``theta`` is frozen). The loss is the mean token NLL in nats over
the scored tokens (every token up to and including the caption's end token, as in the LM);
``likelihood`` (unit ``'token'``, exact given the image) is the per-caption sum and
``count`` the scored tokens.

Deviation from the paper's encoder (an NF-ResNet-50 globally pooled): the last feature map
is flattened (``readout_pool`` average-pooled first) before the linear map to ``n * D``, so the
prefix keeps where the object is (the shapes captions name its position).

Captioning (Sec. 3.2, "inference"): the prompt ``[prefix, E[<bos>]]`` is prefilled into the
LM's KV cache (:mod:`gen_jax.nn.kv_cache`), then ONE ``lax.scan`` decodes ``L`` tokens, each
drawn greedily (temperature 0) or with temperature / top-k / top-p
(:mod:`gen_jax.autoregressive.token_sampling`); after the end token every token is 0, as in
the LM's own sampler. Few-shot prompts (Sec. 3.2, "interleaved" image and text embeddings,
Fig. 3): ``[v(x_1), caption_1, v(x_2), caption_2, ..., v(x_q), <bos>]`` (each support
caption ``<bos> .. <end>`` with its padding dropped, the same supports for every query) and
the query's caption decoded after it (:attr:`FrozenParts.few_shot`).

The LM's positions must be rotary (relative: the prefix shifts no caption position relative to
another, and the params do not depend on ``max_len``), or learned with a table long enough for
the longest prompt. Refusals (``ConfigError`` naming the field): no ``config.stages.lm``, a
stage that is not a text LM of this library, an LM whose vocabulary or width
differ from what its config and the dataset's captions give (its embedding table is compared),
a learned position table shorter than the prompts. ``sample`` refuses (``ValueError`` naming
``cond['image']``) a missing image, one of the wrong shape or an integer image.

Samples: kind ``'tokens'``, the LM's layout (words: ``int32 [num, Lw]`` with the leading
``<bos>``; chars: ``[num, Lc + 1]``), printed by ``sampler.describe``. Conditioning:
``'image'`` (a split's images, as ``level / (K - 1)`` float32, of its first ``num`` rows).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.autoregressive.token_sampling import make_token_sampler
from gen_jax.autoregressive.transformer_lm import (SequenceLayout, TransformerLMConfig, build_transformer_lm,
                                                   choose_token)
from gen_jax.checks import is_concrete
from gen_jax.config import Checked, ConfigError, typed
from gen_jax.model import (DataSpec, GenerativeModel, Likelihood, Phase, Sampler, Stage, Training,
                           check_image_batch, split_conditioning)
from gen_jax.nn.resnet import preact_resnet
from gen_jax.nn.transformer import Decoder, make_decoder

STAGE = "config.stages.lm"


@dataclasses.dataclass(frozen=True)
class FrozenConfig(Checked):
    """``config.model`` of Frozen (``typed(FrozenConfig, cfg)``).

    Attributes:
      name: model name (``'frozen'``).
      prefix_len: ``n``, visual prefix embeddings per image (the paper uses 2).
      widths: channels of the ResNet stages (each stage after the first halves the resolution).
      blocks: residual blocks per stage.
      readout_pool: average pooling of the last feature map before it is flattened (1 = none).
      max_shots: the most support (image, caption) pairs a few-shot prompt may hold (sizes
        the KV cache).
      temperature, top_k, top_p: the default sampler's settings (0 = greedy / off / 1 = off).
    """

    name: str = "frozen"
    prefix_len: int = 2
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1
    readout_pool: int = 2
    max_shots: int = 2
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        self.positive("prefix_len", "blocks", "readout_pool")
        self.nonnegative("max_shots")
        self.require(len(self.widths) >= 1 and all(int(w) > 0 for w in self.widths), "widths",
                     f"must be positive channel counts, got {self.widths}")
        self.require(self.temperature >= 0, "temperature", f"must be >= 0 (0 = greedy), got {self.temperature}")
        self.require(self.top_k >= 0, "top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        self.in_range("top_p", 0, 1, lo_open=True)


# ----------------------------------------------------------------------------- the encoder


class PrefixEncoder(nn.Module):
    """``x [B, H, W, C]`` in [0, 1] -> the visual prefix ``[B, n, D]`` (module docstring):
    a conv stem, pre-activation residual stages (GroupNorm, SiLU; the second conv of each block
    zero-initialized), flattened readout, one linear map to ``n * D``."""

    widths: tuple[int, ...]
    blocks: int
    readout_pool: int
    prefix_len: int
    d_model: int

    @nn.compact
    def __call__(self, x):
        h = preact_resnet(x, self.widths, self.blocks)
        h = nn.silu(nn.GroupNorm(min(8, h.shape[-1]), name="gn_out")(h))
        if self.readout_pool > 1:
            h = nn.avg_pool(h, (self.readout_pool,) * 2, strides=(self.readout_pool,) * 2)
        f = h.reshape(h.shape[0], -1)
        e = nn.Dense(self.prefix_len * self.d_model, kernel_init=nn.initializers.normal(1.0 / math.sqrt(f.shape[-1])),
                     name="to_prefix")(f)
        return e.reshape(x.shape[0], self.prefix_len, self.d_model)


# ----------------------------------------------------------------------------- the frozen LM


class FrozenLM(NamedTuple):
    """The stage-one LM as Frozen uses it: its layout and a decoder sized for the prompts."""

    layout: SequenceLayout
    decoder: Decoder
    config: TransformerLMConfig


def check_lm_stage(stages: Optional[Mapping[str, Stage]], info: Any, prefix_len: int,
                   max_shots: int) -> tuple[Stage, FrozenLM]:
    """``stages['lm']`` after checking it is a text LM of
    :mod:`gen_jax.autoregressive.transformer_lm` whose params fit its config on ``info``'s
    captions, with a decoder over the same params long enough for a prompt of ``max_shots``
    supports: ``max_len = (max_shots + 1) (prefix_len + 1 + L)``.

    Raises:
      ConfigError naming ``config.stages.lm`` (missing, not a text LM, another vocabulary or
      width, a learned position table shorter than ``max_len``).
    """
    if not stages or "lm" not in stages:
        raise ConfigError(f"{STAGE}: Frozen needs a trained caption language model (config.stages = "
                          f"{{'lm': {{'config': 'caption_lm_shapes', 'workdir': 'runs/caption_lm_shapes'}}}})")
    stage = stages["lm"]
    model_cfg = stage.config.model
    name = getattr(stage.config, "model_name", None) or (
        model_cfg.get("name") if hasattr(model_cfg, "get") else getattr(model_cfg, "name", None))
    sampler = getattr(stage.model, "sampler", None)
    if name != "transformer_lm" or sampler is None or sampler.kind != "tokens":
        raise ConfigError(f"{STAGE}.config: stage lm builds {stage.model.name!r} (model {name!r}), which is not a "
                          f"token language model (a transformer_lm over caption_tokens or caption_chars)")
    try:
        lm_cfg = typed(TransformerLMConfig, model_cfg, f"{STAGE}.config model")
        parts = build_transformer_lm(lm_cfg, info)
    except ConfigError as e:
        raise ConfigError(f"{STAGE}.config: {e}") from None
    cfg = parts.decoder.cfg
    max_len = (max_shots + 1) * (prefix_len + 1 + parts.layout.length)
    if cfg.positions == "learned" and cfg.max_len < max_len:
        raise ConfigError(f"{STAGE}.config: the LM has learned positions for {cfg.max_len} tokens, the prompts need "
                          f"{max_len} (prefix_len, max_shots); train the LM with positions='rotary'")
    if cfg.positions == "rotary":
        cfg = dataclasses.replace(cfg, max_len=max(max_len, cfg.max_len))
    decoder = make_decoder(cfg)
    want = jax.tree.map(lambda a: tuple(a.shape), jax.eval_shape(decoder.init, jax.random.PRNGKey(0)))
    got = jax.tree.map(lambda a: tuple(np.shape(a)), stage.params)
    if jax.tree.structure(want) != jax.tree.structure(got) or want != got:
        table = np.shape(stage.params.get("params", {}).get("tok_embed", ())) if isinstance(stage.params, Mapping) \
            else ()
        raise ConfigError(f"{STAGE}.workdir: the LM's params do not match a {lm_cfg.tokens} LM of this config on "
                          f"{info.name!r}'s captions: its token embedding table is {table}, the captions need "
                          f"[{parts.layout.vocab_in}, {cfg.d_model}] (input vocabulary {parts.layout.vocab_in}, "
                          f"output vocabulary {parts.layout.vocab}); was it trained on another dataset or vocabulary?")
    return stage, FrozenLM(parts.layout, decoder, lm_cfg)


# ----------------------------------------------------------------------------- the model


class FrozenParts(NamedTuple):
    """Frozen and its functions beyond the contract.

    Attributes:
      model: the :class:`~gen_jax.model.GenerativeModel` (sampler kind ``'tokens'``).
      stage: the frozen LM stage; lm: its :class:`FrozenLM`.
      prefix: ``(params, images [B, H, W, C]) -> [B, n, D]`` the visual prefix.
      caption_logits: ``(params, images, captions) -> (logits [B, L, V], targets [B, L],
        mask [B, L])``: the frozen LM's next-token logits at the scored positions given the
        prefix (``captions`` the dataset's caption tokens ``[B, Lw]`` / chars ``[B, Lc]``).
      lm_logits: ``(params, embeds [B, T, D]) -> [B, T, V]``: the LM on input embeddings.
      token_embeds: ``(params, ids [B, T]) -> [B, T, D]``: the LM's input embeddings of ids.
      make_sampler: ``(temperature, top_k, top_p) -> sample(params, key, num, cond)``.
      few_shot: ``(params, key, support_images [S, H, W, C], support_captions [S, Lw],
        images [B, H, W, C], temperature=0, top_k=0, top_p=1) -> samples``: captions of
        ``images`` after the interleaved prompt of the ``S <= max_shots`` supports.
    """

    model: GenerativeModel
    stage: Stage
    lm: FrozenLM
    prefix: Callable
    caption_logits: Callable
    lm_logits: Callable
    token_embeds: Callable
    make_sampler: Callable
    few_shot: Callable


def cached_decode(decoder: Decoder, pick: Callable, end_id: Optional[int]) -> Callable:
    """``generate(params, key, prompt [B, P0, D], steps) -> int32 [B, steps]``: the prompt
    embeddings prefilled into a fresh KV cache, then one ``lax.scan`` over the ``steps``
    tokens (step ``t`` draws with ``split(key, steps)[t]``; after ``end_id`` only 0)."""
    choose = choose_token(pick, end_id)

    def generate(params, key, prompt, steps: int):
        b, p0 = prompt.shape[:2]
        if p0 + steps - 1 > decoder.cfg.max_len:
            raise ValueError(f"generate: prompt {p0} + {steps} steps exceed the LM context {decoder.cfg.max_len}")
        logits, _, cache = decoder.decode(params, decoder.init_cache(b, prompt.dtype), embeds=prompt, pos=0)
        keys = jax.random.split(key, steps)

        def body(carry, k):
            logits, cache, done = carry
            tok, done = choose(k, logits, done)
            logits, cache = decoder.decode_step(params, cache, tok)
            return (logits, cache, done), tok

        (logits, _, done), toks = jax.lax.scan(body, (logits[:, -1], cache, jnp.zeros((b,), bool)), keys[:-1])
        last, _ = choose(keys[-1], logits, done)
        return jnp.concatenate([toks.T, last[:, None]], axis=1)

    return generate


def image_conditioning(num_levels: int):
    """Conditioning on ``'image'`` (``split_conditioning('image', with_label=False)``) whose
    draw turns a split's stored integer levels into ``level / (K - 1)`` float32."""
    base = split_conditioning("image", with_label=False)

    def draw(num: int, arrays: Optional[Mapping] = None) -> dict:
        x = np.asarray(base.draw(num, arrays)["image"])
        return {"image": x.astype(np.float32) / (num_levels - 1) if np.issubdtype(x.dtype, np.integer)
                else x.astype(np.float32)}

    return base._replace(draw=draw)


def build_frozen(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> FrozenParts:
    """Frozen of ``cfg`` over the caption LM ``stages['lm']`` (module docstring).

    Raises:
      ConfigError naming the field (:class:`FrozenConfig`, :func:`check_lm_stage`,
      ``config.dataset.name`` for a dataset without captions).
    """
    cfg = typed(FrozenConfig, cfg, "config.model")
    if not getattr(info, "has_captions", False):
        raise ConfigError(f"config.dataset.name: Frozen captions images; dataset {info.name!r} has no captions")
    image_shape = tuple(int(s) for s in info.image_shape)
    n = cfg.prefix_len
    stage, lm = check_lm_stage(stages, info, n, cfg.max_shots)
    layout, decoder = lm.layout, lm.decoder
    d, length = decoder.cfg.d_model, layout.length
    encoder = PrefixEncoder(tuple(int(w) for w in cfg.widths), cfg.blocks, cfg.readout_pool, n, d)

    def check_images(x, where):
        if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
            raise ValueError(f"{where} must be float32 in [0, 1] (levels / {info.num_levels - 1}), got dtype {x.dtype}")
        check_image_batch(x, image_shape, where)
        v = np.asarray(x) if is_concrete(x) else None  # numpy: no traced op on a constant
        if v is not None and v.size and not (0.0 <= float(np.min(v)) and float(np.max(v)) <= 1.0):
            raise ValueError(f"{where} must lie in [0, 1] (levels / {info.num_levels - 1}), got values in "
                             f"[{float(np.min(v)):.4g}, {float(np.max(v)):.4g}]")

    def prefix(params, images):
        """``[B, n, D]``: the encoder's visual prefix of ``images [B, H, W, C]`` in [0, 1]."""
        return encoder.apply(params["encoder"], images.astype(jnp.float32))

    def token_embeds(params, ids):
        """The frozen LM's input embeddings ``[B, T, D]`` of input ids ``[B, T]``."""
        return jnp.take(decoder.embed_table(params["lm"]), ids, axis=0)

    def lm_logits(params, embeds):
        return decoder.apply_embeds(jax.lax.stop_gradient(params["lm"]), embeds).astype(jnp.float32)

    def scored(params, batch, where):
        if "image" not in batch:
            raise ValueError(f"{where}: batch['image'] is missing (keys: {sorted(batch)}); Frozen scores a caption "
                             f"given its image")
        check_images(batch["image"], f"{where} batch['image']")
        y = layout.targets(batch, where)  # [B, L]
        if y.shape[0] != batch["image"].shape[0]:
            raise ValueError(f"{where}: batch['image'] has {batch['image'].shape[0]} rows, "
                             f"batch[{layout.batch_key!r}] {y.shape[0]}")
        ids = layout.inputs(jnp.zeros((y.shape[0], 0), jnp.int32), y)  # [<bos>, y_1 .. y_{L-1}]
        x = jnp.concatenate([prefix(params, batch["image"]), token_embeds(params, ids)], axis=1)
        logits = lm_logits(params, x)[:, n:]  # [B, L, V]
        return logits, y, layout.mask(y)

    def token_ll(params, batch, where):
        logits, y, mask = scored(params, batch, where)
        ll = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), y[..., None], -1)[..., 0]
        return ll, mask

    def caption_logits(params, images, captions):
        return scored(params, {"image": images, layout.batch_key: captions}, "caption_logits")

    def init(key, batch):
        check_images(batch["image"], "init batch['image']")
        layout.targets(batch, "init")
        return {"encoder": encoder.init(key, jnp.zeros((1,) + image_shape, jnp.float32))}

    def loss(params, batch, key):
        del key
        ll, mask = token_ll(params, batch, "loss")
        nll = -jnp.sum(ll * mask) / jnp.maximum(jnp.sum(mask), 1.0)  # mean token NLL, nats
        return nll, {"bits_per_token": nll / math.log(2.0), "caption_nll": -jnp.sum(ll * mask, 1)}

    def log_prob(params, batch, key):
        """``[B]`` nats: ``log p(caption | image)`` summed over the scored tokens."""
        del key
        ll, mask = token_ll(params, batch, "log_prob")
        return jnp.sum(ll * mask, axis=1)

    def num_tokens(batch):
        return jnp.sum(layout.mask(layout.targets(batch, "num_tokens")), axis=1)

    def generator(temperature, top_k, top_p, where):
        return cached_decode(decoder, make_token_sampler(temperature, top_k, top_p, layout.vocab, where),
                             layout.end_id)

    def bos_embeds(params, b):
        return token_embeds(params, jnp.full((b, 1), layout.bos, jnp.int32))

    def make_sampler(temperature: float = cfg.temperature, top_k: int = cfg.top_k,
                     top_p: float = cfg.top_p) -> Callable:
        """``sample(params, key, num, cond={'image': float32 [num, H, W, C]})`` -> caption tokens."""
        gen = generator(temperature, top_k, top_p, "make_sampler")

        def sample(params, key, num, cond=None):
            if cond is None or "image" not in cond:
                raise ValueError(f"sample: Frozen captions images; pass cond={{'image': float32 [{num}, "
                                 f"{', '.join(map(str, image_shape))}] in [0, 1]}}")
            x = cond["image"]
            check_images(x, "sample cond['image']")
            if x.shape[0] != num:
                raise ValueError(f"sample: cond['image'] has {x.shape[0]} rows for num = {num}")
            return run(params, key, x)

        @jax.jit
        def run(params, key, x):
            prompt = jnp.concatenate([prefix(params, x), bos_embeds(params, x.shape[0])], axis=1)
            return layout.to_samples(gen(params["lm"], key, prompt, length))

        return sample

    def support_ids(captions) -> np.ndarray:
        """Host: the LM input ids ``<bos> y_1 .. y_end`` of each support caption (padding dropped)."""
        caps = np.asarray(captions)
        y = np.asarray(layout.targets({layout.batch_key: caps}, "few_shot support_captions"))
        keep = np.asarray(layout.mask(jnp.asarray(y))).sum(1).astype(int)
        return [np.concatenate([[layout.bos], y[i, :keep[i]]]).astype(np.int32) for i in range(len(y))]

    def few_shot(params, key, support_images, support_captions, images, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0):
        """Captions of ``images`` after ``[v(x_1), caption_1, .., v(x_S), caption_S]`` (same supports
        for every row; ``S = 0`` is zero-shot)."""
        check_images(support_images, "few_shot support_images")
        check_images(images, "few_shot images")
        s = support_images.shape[0]
        if s > cfg.max_shots:
            raise ValueError(f"few_shot: {s} supports exceed config.model.max_shots = {cfg.max_shots}")
        if np.shape(support_captions)[0] != s:
            raise ValueError(f"few_shot: {s} support images but {np.shape(support_captions)[0]} support captions")
        ids = support_ids(support_captions) if s else []
        make_token_sampler(temperature, top_k, top_p, layout.vocab, "few_shot")  # checks the settings
        return _few_shot(params, key, support_images, images, tuple(tuple(int(t) for t in i) for i in ids),
                         float(temperature), int(top_k), float(top_p))

    @functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
    def _few_shot(params, key, support_images, images, ids, temperature, top_k, top_p):
        b, parts = images.shape[0], []
        sup = prefix(params, support_images) if ids else None
        for i, tok in enumerate(ids):
            parts.append(jnp.broadcast_to(sup[i][None], (b, n, d)))
            parts.append(token_embeds(params, jnp.broadcast_to(jnp.asarray(tok, jnp.int32)[None], (b, len(tok)))))
        parts += [prefix(params, images), bos_embeds(params, b)]
        gen = generator(temperature, top_k, top_p, "few_shot")
        return layout.to_samples(gen(params["lm"], key, jnp.concatenate(parts, axis=1), length))

    training = Training(init=init, phases=(Phase("encoder", loss, name="encoder"),), frozen={"lm": stage.params})
    model = GenerativeModel(
        name=cfg.name, family="autoregressive", training=training,
        sampler=Sampler(make_sampler(), "tokens", describe=layout.describe),
        likelihood=Likelihood(log_prob, "exact", unit="token", count=num_tokens),
        conditioning=image_conditioning(int(info.num_levels)),
        data=DataSpec(image_shape, int(info.num_levels), 0, ((layout.batch_key, layout.vocab),)))
    return FrozenParts(model=model, stage=stage, lm=lm, prefix=prefix, caption_logits=caption_logits,
                       lm_logits=lm_logits, token_embeds=token_embeds, make_sampler=make_sampler, few_shot=few_shot)


def make_frozen(cfg: Any, info: Any, stages: Optional[Mapping[str, Stage]] = None) -> GenerativeModel:
    """The registry's factory: :func:`build_frozen` ``(cfg, info, stages).model``."""
    return build_frozen(cfg, info, stages).model
