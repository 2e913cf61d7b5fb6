"""Plug and Play Language Models (PPLM; Dathathri et al. 2020): steering a trained LM with an
attribute classifier by perturbing its past key/values, without retraining the LM.

Notation (Dathathri et al. 2020, Sec. 3): ``H_t`` is the past (the KV cache of positions
``< t``), ``o_{t+1}, H_{t+1} = LM(x_t, H_t)`` (Eq. 2). An attribute model ``p(a | x)`` -- here
a small classifier on the mean of the LM's final (normed) hidden states, as the paper's
discriminator (Sec. 4.3) -- scores how much the text has attribute ``a``.

At every generation step (Sec. 3.2-3.3):

1. **Perturb the past** (Eq. 3): starting from ``Delta H_t = 0``, ``num_iterations`` steps of
   normalized gradient ascent

       Delta H_t <- Delta H_t + alpha * g / ||g||^gamma,
       g = grad_{Delta H_t} [ log p(a | H_t + Delta H_t) - lambda_KL KL(p~_{t+1} || p_{t+1}) ],

   where ``log p(a | H_t + Delta H_t)`` is the classifier on the mean of the hidden states so
   far with the current one recomputed from the perturbed past (plus, with ``horizon = 1``,
   the hidden state of the *expected* next token embedding ``sum_x p~_{t+1}(x) E[x]`` one step
   ahead, the paper's horizon trick), ``p~_{t+1}`` is the perturbed next-token distribution
   and ``p_{t+1}`` the unperturbed one (the KL term of Sec. 3.3, "Ensuring fluency").
   ``||g||`` is the norm of each layer's key (or value) gradient, per example; ``gamma``
   scales the normalization.
2. **Perturbed step** (Eq. 4): ``o~_{t+1}, H~_{t+1} = LM(x_t, H_t + Delta H_t)``; the
   perturbation stays in the cache, so perturbations accumulate over the generation.
3. **Post-norm fusion** (Sec. 3.3): sample ``x_{t+1}`` from
   ``p ∝ p~_{t+1}^{gamma_gm} p_{t+1}^{1 - gamma_gm}`` (with the sampler's temperature /
   top-k / top-p applied to the fused log-probabilities); ``p_{t+1}`` comes from a clean run
   of the LM on the same tokens, whose cache is carried alongside.

Everything is one ``lax.scan`` over positions (carry: perturbed cache, clean cache, hidden
sum, last token); the inner ascent is a ``lax.scan`` over iterations. With ``step_size = 0``
the perturbation is exactly zero and the sampler draws the same tokens as the plain cached
sampler (:func:`gen_jax.autoregressive.transformer_lm.make_cached_generator`, same keys).

Deviations from the paper: no window on the perturbed past (the whole past is perturbed), no
early stopping / decay of the step size; the per-layer gradient norm is taken per example.

Two optional deviations (``PPLMConfig.grounded``, ``accumulate=False``) exist because the
paper's recipe did not steer a *character* LM here (experiments/benchmarks/pplm_shapes.py):
the classifier on mean hidden states is only reliable on hidden states of real text, and
the gradient raised ``log p(a | .)`` by moving the current hidden state (and the horizon
distribution toward characters the LM never emits after that prefix) instead of the next
character; the accumulated perturbations then broke the text. ``grounded`` lets the
perturbation reach the classifier only through the (fused) next-token distribution of the
horizon step, and ``accumulate=False`` perturbs the clean past afresh at every step; with
``gamma = 0`` (unnormalized steps) the update is large only where the next character decides
the attribute.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gen_jax.autoregressive.token_sampling import check_sampling_args, sample_token
from gen_jax.autoregressive.transformer_lm import SequenceLayout, choose_token
from gen_jax.config import Checked
from gen_jax.nn.kv_cache import KVCache
from gen_jax.nn.transformer import Decoder

_EPS = 1e-10


# ----------------------------------------------------------------------------- attribute model


class AttributeClassifier(nn.Module):
    """``p(a | x)``: logits ``[B, num_classes]`` from mean-pooled hidden states ``[B, d]``
    (Dathathri et al. 2020, Sec. 4.3: a single layer on the averaged LM representation;
    ``hidden > 0`` adds one ReLU hidden layer)."""

    num_classes: int = 2
    hidden: int = 0

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        if pooled.ndim != 2:
            raise ValueError(f"AttributeClassifier: pooled must be [B, d], got shape {pooled.shape}")
        x = pooled
        if self.hidden > 0:
            x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(self.num_classes, name="out")(x)


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``hidden [B, L, d]`` over the positions where ``mask [B, L]`` is 1 -> ``[B, d]``."""
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"mean_pool: hidden must be [B, L, d] and mask [B, L], got {hidden.shape} and {mask.shape}")
    m = mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def train_attribute_classifier(classifier: AttributeClassifier, pooled: jax.Array, labels: jax.Array,
                               key: jax.Array, steps: int = 500, batch_size: int = 256,
                               learning_rate: float = 1e-2) -> dict:
    """Fits ``classifier`` by cross-entropy on ``pooled [N, d]`` / ``labels [N]`` with Adam
    (minibatches drawn with replacement; one ``lax.scan`` over ``steps``). Returns params."""
    if pooled.ndim != 2 or labels.shape != (pooled.shape[0],):
        raise ValueError(f"train_attribute_classifier: pooled must be [N, d] and labels [N], "
                         f"got {pooled.shape} and {labels.shape}")
    k_init, k_data = jax.random.split(key)
    params = classifier.init(k_init, pooled[:1])
    tx = optax.adam(learning_rate)

    def loss_fn(p, x, y):
        logits = classifier.apply(p, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    def step(carry, k):
        p, opt = carry
        idx = jax.random.randint(k, (batch_size,), 0, pooled.shape[0])
        g = jax.grad(loss_fn)(p, pooled[idx], labels[idx])
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(k_data, steps))
    return params


# ----------------------------------------------------------------------------- PPLM


@dataclasses.dataclass(frozen=True)
class PPLMConfig(Checked):
    """PPLM hyperparameters (Dathathri et al. 2020, Sec. 3.2-3.3; names as in the paper;
    defaults near the paper's GPT-2 settings).

    Attributes:
      step_size: ``alpha`` of Eq. 3 (0 = plain sampling).
      num_iterations: gradient steps per token.
      gamma: normalization exponent ``gamma`` of Eq. 3 (0 = plain gradient steps).
      kl_scale: ``lambda_KL``.
      gm_scale: ``gamma_gm`` of the post-norm fusion (1 = perturbed distribution only).
      horizon: 0 or 1: also score the hidden state of the expected next token.
      grounded: let the perturbation reach ``log p(a | .)`` only through the fused next-token
        distribution (deviation, see :func:`make_perturbation`); needs ``horizon = 1``.
      accumulate: keep each step's perturbation in the cache (the paper, Eq. 4); ``False``
        perturbs the clean past afresh at every step (deviation: perturbations do not
        compound over the generation).
      temperature, top_k, top_p: sampling settings applied to the fused distribution.
    """

    step_size: float = 0.03
    num_iterations: int = 3
    gamma: float = 1.5
    kl_scale: float = 0.01
    gm_scale: float = 0.95
    horizon: Literal[0, 1] = 1
    grounded: bool = False
    accumulate: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    PATH = "PPLMConfig"  # built in Python, not read from an experiment config

    def __post_init__(self):
        self.nonnegative("step_size", "num_iterations", "kl_scale")
        self.in_range("gm_scale", 0, 1)
        self.require(self.horizon in (0, 1), "horizon", f"must be 0 or 1, got {self.horizon!r}")
        self.require(self.horizon == 1 or not self.grounded, "grounded",
                     "needs horizon = 1 (the only path left to the classifier)")


def _add(cache: KVCache, delta) -> KVCache:
    dk, dv = delta
    return KVCache(tuple(a + b for a, b in zip(cache.k, dk)), tuple(a + b for a, b in zip(cache.v, dv)),
                   cache.index)


def make_perturbation(decoder: Decoder, layout: SequenceLayout, classifier: AttributeClassifier,
                      cfg: PPLMConfig) -> Callable:
    """``perturb(lm_params, clf_params, cache, x [B], pos, hsum [B, d], count, target [B],
    logits_u [B, V], step_size=cfg.step_size) -> (delta, log_p_a [num_iterations + 1, B])``.

    ``cache``: the (perturbed) past ``H_t`` (slots ``< pos``); ``x``: the token at ``pos``;
    ``hsum``: the sum of the hidden states of the ``count`` earlier scored inputs;
    ``logits_u``: the unperturbed next-token logits. Returns ``Delta H_t`` (a pair of tuples
    like ``(cache.k, cache.v)``) after the Eq. 3 ascent, and ``log p(a | H_t + Delta H_t)`` at
    every iterate (row 0: ``Delta H_t = 0``, last row: the returned perturbation).
    ``step_size`` (``alpha``) may be a traced scalar (one compiled function for all values).

    ``cfg.grounded`` (a deviation from the paper): the current hidden state enters the
    classifier as a constant, and the horizon step feeds the expected embedding under the
    *fused* distribution ``∝ p~^{gamma_gm} p^{1 - gamma_gm}`` (the one sampled from) on
    ``clean_cache`` (the unperturbed past plus ``x``). ``Delta H_t`` can then raise
    ``log p(a | .)`` only by moving the next-token distribution toward tokens the LM
    accepts, not by moving hidden states that no token will produce. Pass ``clean_cache``.
    """
    vocab = layout.vocab
    max_len = layout.max_len

    def objective(delta, lm_params, clf_params, cache, x, pos, hsum, count, target, logp_u, clean_cache):
        """Per-example ``(log p(a | .) - lambda_KL KL(p~ || p), log p(a | .))``, each ``[B]``."""
        logits, hidden, new_cache = decoder.decode(lm_params, _add(cache, delta), x[:, None], pos)
        logp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)  # [B, V] perturbed
        h = jax.lax.stop_gradient(hidden[:, 0]) if cfg.grounded else hidden[:, 0]
        total, n = hsum + h, count + 1.0
        if cfg.horizon:
            if cfg.grounded:  # the fused distribution that will be sampled from
                probs = jax.nn.softmax(cfg.gm_scale * logp + (1.0 - cfg.gm_scale) * logp_u, axis=-1)
            else:
                probs = jnp.exp(logp)
            e = probs @ decoder.embed_table(lm_params)[:vocab]  # expected next-token embedding [B, d]
            pos_h = jnp.minimum(pos + 1, max_len - 1)
            _, h2, _ = decoder.decode(lm_params, clean_cache if cfg.grounded else new_cache, None, pos_h,
                                      embeds=e[:, None])
            use = (pos + 1 < max_len).astype(hidden.dtype)
            total, n = total + use * h2[:, 0], n + use
        log_pa = jnp.take_along_axis(
            jax.nn.log_softmax(classifier.apply(clf_params, total / n), axis=-1), target[:, None], axis=-1)[:, 0]
        kl = jnp.sum(jnp.exp(logp) * (logp - logp_u), axis=-1)
        return log_pa - cfg.kl_scale * kl, log_pa

    def perturb(lm_params, clf_params, cache, x, pos, hsum, count, target, logits_u, step_size=cfg.step_size,
                clean_cache=None):
        if cfg.grounded and clean_cache is None:
            raise ValueError("perturb: cfg.grounded needs clean_cache (the unperturbed cache after x)")
        logp_u = jax.nn.log_softmax(logits_u.astype(jnp.float32), axis=-1)
        args = (lm_params, clf_params, cache, x, pos, hsum, count, target, logp_u, clean_cache)
        delta = (tuple(jnp.zeros_like(a) for a in cache.k), tuple(jnp.zeros_like(a) for a in cache.v))

        def total(d):
            obj, log_pa = objective(d, *args)
            return jnp.sum(obj), log_pa  # examples are independent: per-example gradients

        def step(d, _):
            g, log_pa = jax.grad(total, has_aux=True)(d)

            def normalized(gl):  # per example, per layer buffer: g / ||g||^gamma (Eq. 3)
                norm = jnp.sqrt(jnp.sum(jnp.square(gl), axis=tuple(range(1, gl.ndim)), keepdims=True))
                return gl / (norm ** cfg.gamma + _EPS)

            d = jax.tree.map(lambda a, gl: a + step_size * normalized(gl), d, g)
            return d, log_pa

        delta, trace = jax.lax.scan(step, delta, None, length=cfg.num_iterations)
        _, last = objective(delta, *args)
        return delta, jnp.concatenate([trace, last[None]], axis=0)

    return perturb


def make_pplm_sampler(decoder: Decoder, layout: SequenceLayout, classifier: AttributeClassifier,
                      cfg: PPLMConfig) -> Callable:
    """``sample(lm_params, clf_params, key, num, target, cond=None, step_size=cfg.step_size)
    -> (tokens [num, L], log_p_a [L, num_iterations + 1, num])``.

    ``target``: the attribute class (int or int ``[num]``); ``step_size`` may be traced. ``tokens`` are the generated
    ``y_1..y_L`` (feed to ``layout.to_samples`` / ``layout.describe``); ``log_p_a`` is the
    attribute log-probability at each ascent iterate of each step (diagnostics). Same keys
    as the plain cached sampler: step ``t`` draws with ``split(key, L)[t]``.
    """
    check_sampling_args(cfg.temperature, cfg.top_k, cfg.top_p, layout.vocab, "make_pplm_sampler")
    perturb = make_perturbation(decoder, layout, classifier, cfg)
    choose = choose_token(lambda k, lg: sample_token(k, lg, cfg.temperature, cfg.top_k, cfg.top_p), layout.end_id)
    length = layout.length

    def sample(lm_params, clf_params, key, num: int, target, cond=None, step_size=cfg.step_size):
        first = layout.first_tokens(layout.prefix(cond, num, "pplm sample cond"))  # [num, P0]
        p0 = first.shape[1]
        target = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (num,))
        cache = decoder.init_cache(num)
        if p0 > 1:
            _, _, cache = decoder.decode(lm_params, cache, first[:, :-1], 0)
        d = decoder.cfg.d_model
        keys = jax.random.split(key, length)

        def body(carry, inp):
            cache_p, cache_u, hsum, x, done = carry
            i, k = inp
            pos = p0 - 1 + i
            logits_u, h_u, cache_u = decoder.decode(lm_params, cache_u, x[:, None], pos)  # clean run
            delta, log_pa = perturb(lm_params, clf_params, cache_p, x, pos, hsum, i.astype(jnp.float32), target,
                                    logits_u[:, 0], step_size, cache_u)
            logits_p, _, cache_p = decoder.decode(lm_params, _add(cache_p, delta), x[:, None], pos)
            if not cfg.accumulate:
                cache_p = cache_u
            fused = (cfg.gm_scale * jax.nn.log_softmax(logits_p[:, 0].astype(jnp.float32), axis=-1)
                     + (1.0 - cfg.gm_scale) * jax.nn.log_softmax(logits_u[:, 0].astype(jnp.float32), axis=-1))
            tok, done = choose(k, fused, done)
            return (cache_p, cache_u, hsum + h_u[:, 0], tok, done), (tok, log_pa)

        init = (cache, cache, jnp.zeros((num, d), jnp.float32), first[:, -1], jnp.zeros((num,), bool))
        _, (toks, log_pa) = jax.lax.scan(body, init, (jnp.arange(length), keys))
        return toks.T, log_pa

    return sample
