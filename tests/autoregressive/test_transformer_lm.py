"""Decoder-only transformer, KV cache, token sampling and the transformer LM bundle: checked
against autodiff (causality), full recomputation (cache), RoFormer Eq. 34 written as a
matrix (rotary), numpy references (top-k / top-p), exact enumeration of a tiny model's
distribution (normalization, sampler frequencies) and bad inputs."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive import token_sampling as ts
from gen_jax.autoregressive.transformer_lm import build_transformer_lm, make_transformer_lm
from gen_jax.config import ConfigError
from gen_jax.data.datasets import DatasetInfo
from gen_jax.nn.transformer import TransformerConfig, apply_rotary, make_decoder

V, L = 11, 8


def random_params(init, *args, scale=0.3, seed=0):
    """Params of ``init``'s shapes drawn N(0, scale^2) on the host (no init compile; larger
    weights than an init, so every path carries signal)."""
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0), *args)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module", params=["learned", "rotary"])
def dec(request):
    cfg = TransformerConfig(vocab_size=V, max_len=L, num_layers=2, d_model=16, num_heads=2,
                            positions=request.param)
    d = make_decoder(cfg)
    params = random_params(d.init)
    def both_ways(params, toks):
        """Full forward, and prefill of 3 tokens + a lax.scan of decode_steps (one compile)."""
        logits, cache = d.prefill(params, toks[:, :3])

        def body(cache, tok):
            lg, cache = d.decode_step(params, cache, tok)
            return cache, lg

        cache, rest = jax.lax.scan(body, cache, toks[:, 3:].T)
        return d.apply(params, toks), jnp.concatenate([logits, rest.transpose(1, 0, 2)], 1), cache

    fns = {"apply": jax.jit(d.apply), "both_ways": jax.jit(both_ways), "decode_step": jax.jit(d.decode_step)}
    return d, params, fns


def test_causality_by_autodiff(dec):
    """d logits_i / d embed_j == 0 exactly for j > i (logits_i predict token i + 1, so the
    prediction of token i depends on no input at a position >= i); nonzero for j <= i."""
    d, params, _ = dec
    emb = jax.random.normal(jax.random.PRNGKey(1), (L, 16))
    jac = jax.jit(jax.jacrev(lambda e: d.apply_embeds(params, e[None])[0]))(emb)  # [L, V, L, d]
    block = np.asarray(jnp.max(jnp.abs(jac), axis=(1, 3)))  # [L (out), L (in)]
    future = np.triu(np.ones((L, L), bool), k=1)
    assert np.all(block[future] == 0.0)
    assert np.all(block[~future] > 1e-6)


def test_cached_decoding_equals_full_recomputation(dec):
    d, params, fns = dec
    toks = jax.random.randint(jax.random.PRNGKey(2), (3, L), 0, V)
    full, incremental, cache = fns["both_ways"](params, toks)
    np.testing.assert_allclose(np.asarray(incremental), np.asarray(full), atol=1e-5, rtol=0)
    assert int(cache.index) == L


def _rotation_matrix(m, dim, base=10000.0):
    """RoFormer Eq. 34: block-diagonal R^d_{Theta, m} with 2x2 blocks [[cos, -sin], [sin, cos]]."""
    r = np.zeros((dim, dim))
    for i in range(dim // 2):
        th = m * base ** (-2 * i / dim)
        r[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
    return r


def test_rotary_matches_eq34_and_scores_depend_on_relative_position():
    dim = 8
    x = np.random.default_rng(0).normal(size=(1, 5, 2, dim)).astype(np.float32)
    pos = np.array([0, 1, 3, 7, 50])
    out = np.asarray(apply_rotary(jnp.asarray(x), jnp.asarray(pos)))
    for t, m in enumerate(pos):
        for h in range(2):
            np.testing.assert_allclose(out[0, t, h], _rotation_matrix(m, dim) @ x[0, t, h], atol=1e-5)
    q, k = (jnp.asarray(np.random.default_rng(s).normal(size=(1, 1, 1, dim)), jnp.float32) for s in (1, 2))

    @jax.jit
    def scores(m, n):  # [S] query positions m, key positions n -> <R_m q, R_n k>
        rq = jax.vmap(lambda p: apply_rotary(q, p[None]))(m)
        rk = jax.vmap(lambda p: apply_rotary(k, p[None]))(n)
        return jnp.sum(rq * rk, axis=(1, 2, 3, 4))

    got = np.asarray(scores(jnp.array([3, 4, 8, 43, 3]), jnp.array([1, 2, 6, 41, 2])))
    np.testing.assert_allclose(got[1:4], got[0], atol=1e-4)  # same offset, shifted by 1, 5, 40
    assert abs(got[4] - got[0]) > 1e-3  # a different offset gives a different score


# ----------------------------------------------------------------------------- token sampling


def _np_filtered_probs(logits, temperature, k, p):
    z = logits / temperature
    if 0 < k < len(z):
        z = np.where(z >= np.sort(z)[::-1][k - 1], z, -np.inf)
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]
        keep = np.zeros(len(z), bool)
        keep[order[before < p]] = True
        keep[order[0]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


@pytest.mark.parametrize("temperature,k,p", [(1.0, 3, 1.0), (1.0, 0, 0.7), (0.7, 5, 0.9), (2.0, 0, 1.0)])
def test_filters_match_numpy(temperature, k, p):
    logits = np.random.default_rng(3).normal(size=(4, 9)).astype(np.float32) * 2
    got = np.asarray(jax.nn.softmax(ts.filter_logits(jnp.asarray(logits), temperature, k, p), axis=-1))
    for row, g in zip(logits, got):
        want = _np_filtered_probs(row.astype(np.float64), temperature, k, p)
        np.testing.assert_array_equal(g > 0, want > 0)
        np.testing.assert_allclose(g, want, atol=1e-6)


def test_top_k_keeps_ties_and_top_p_keeps_the_first_token():
    logits = jnp.array([[1.0, 3.0, 3.0, 0.0]])
    assert np.isfinite(np.asarray(ts.top_k_filter(logits, 1))).tolist() == [[False, True, True, False]]
    peaked = jnp.array([[10.0, 0.0, 0.0]])
    assert np.isfinite(np.asarray(ts.top_p_filter(peaked, 0.01))).tolist() == [[True, False, False]]


def test_temperature_zero_is_argmax_and_small_temperature_tends_to_it():
    logits = jax.random.normal(jax.random.PRNGKey(4), (64, 7))
    arg = np.asarray(jnp.argmax(logits, -1))
    np.testing.assert_array_equal(np.asarray(ts.sample_token(jax.random.PRNGKey(5), logits, 0.0)), arg)
    np.testing.assert_array_equal(np.asarray(ts.sample_token(jax.random.PRNGKey(5), logits, 1e-4)), arg)


def test_sampling_frequencies_match_filtered_softmax():
    logits = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -1.0], np.float32)
    n = 20000
    draws = jax.jit(lambda k: ts.sample_token(k, jnp.broadcast_to(jnp.asarray(logits), (n, 6)), 0.8, 4, 0.9))(
        jax.random.PRNGKey(6))
    freq = np.bincount(np.asarray(draws), minlength=6) / n
    want = _np_filtered_probs(logits.astype(np.float64), 0.8, 4, 0.9)
    assert np.all(freq[want == 0] == 0)
    sigma = np.sqrt(want * (1 - want) / n)
    assert np.all(np.abs(freq - want) <= 5 * sigma + 1e-12), (freq, want)


def test_bad_sampling_arguments_raise():
    for kw, field in ((dict(temperature=-0.1), "temperature"), (dict(top_k=-1), "top_k"),
                      (dict(top_k=2.5), "top_k"), (dict(top_k=12), "top_k"),
                      (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p")):
        args = dict(temperature=1.0, top_k=0, top_p=1.0) | kw
        with pytest.raises(ValueError, match=field):
            ts.check_sampling_args(args["temperature"], args["top_k"], args["top_p"], vocab_size=11)


# ----------------------------------------------------------------------------- bad inputs


def test_sequence_longer_than_the_cache_raises(dec):
    d, params, fns = dec
    if d.cfg.positions == "rotary":
        pytest.skip("checks of the decoder API: run once (learned positions)")
    with pytest.raises(ValueError, match=f"sequence length {L + 1} exceeds max_len = {L}"):
        d.prefill(params, jnp.zeros((2, L + 1), jnp.int32))
    _, _, cache = fns["both_ways"](params, jnp.zeros((3, L), jnp.int32))
    with pytest.raises(ValueError, match=r"positions 8..8 lie outside the cache \[0, max_len = 8\)"):
        d.decode_step(params, cache, jnp.zeros((3,), jnp.int32))
    # Under jit the position cannot be checked on the host: the logits are NaN instead.
    assert np.all(np.isnan(np.asarray(fns["decode_step"](params, cache, jnp.zeros((3,), jnp.int32))[0])))


def test_token_ids_outside_the_vocabulary_raise(dec):
    d, params, fns = dec
    if d.cfg.positions == "rotary":
        pytest.skip("checks of the decoder API: run once (learned positions)")
    bad = jnp.array([[0, 3, V]])
    with pytest.raises(ValueError, match=rf"token ids lie in \[0, {V}\], outside the vocabulary \[0, {V}\)"):
        d.prefill(params, bad)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        d.apply(params, jnp.array([[-1, 2]]))
    cache = d.init_cache(3)
    with pytest.raises(ValueError, match="decode: token ids"):
        d.decode_step(params, cache, jnp.array([0, 1, V + 3]))
    # Under jit: out-of-vocabulary ids (negative too) embed to NaN; attention spreads the NaN
    # to every position's logits (0 * NaN), so the loss is NaN and the train loop stops.
    for bad_id in (-1, V):
        out = np.asarray(fns["apply"](params, jnp.array([[1, 2, 3], [4, bad_id, 5], [6, 7, 8]])))
        assert np.all(np.isnan(out[1])) and np.all(np.isfinite(out[[0, 2]]))


# ----------------------------------------------------------------------------- the bundle


def _info(**kw):
    base = dict(name="fake", image_shape=(1, 2, 1), num_levels=3, num_classes=2, num_train=0, num_test=0,
                has_captions=True, caption_len=0, vocab_size=0, caption_char_len=5)
    return DatasetInfo(**(base | kw))


@pytest.fixture(scope="module")
def image_lm():
    """A class-conditional LM over 1x2 images with K = 3 levels: 9 images per class."""
    parts = build_transformer_lm(dict(tokens="image", condition="label", num_layers=2, d_model=16, num_heads=2,
                                      positions="learned"), _info())
    m = parts.model
    batch = {"image": jnp.zeros((2, 1, 2, 1)), "label": jnp.zeros((2,), jnp.int32)}
    params = random_params(m.training.init, batch, scale=0.5)
    return m, params, jax.jit(m.sampler.sample, static_argnums=2), jax.jit(parts.sample_no_cache, static_argnums=2)


N_IMAGE_SAMPLES = 6000


def _all_images(label):
    levels = np.array(list(itertools.product(range(3), repeat=2)))  # [9, 2]
    return {"image": jnp.asarray(levels.reshape(9, 1, 2, 1) / 2.0, jnp.float32),
            "label": jnp.full((9,), label, jnp.int32)}, levels


def test_image_lm_is_normalized_and_its_sampler_draws_from_it(image_lm):
    m, params, sample, _ = image_lm
    batch, levels = _all_images(1)
    assert m.sampler.kind == "image" and m.likelihood[1:] == ("exact", "dim", None)
    lp, metrics = jax.jit(lambda p, b: (m.likelihood.log_prob(p, b, None), m.training.phases[0].loss(p, b, None)[1]))(
        params, batch)
    lp = np.asarray(lp)  # log P + D log K
    prob = np.exp(lp - 2 * np.log(3.0))
    assert abs(prob.sum() - 1.0) < 1e-5
    np.testing.assert_allclose(np.mean((-lp + 2 * np.log(3.0)) / (2 * np.log(2.0))), metrics["bpd"], rtol=1e-5)
    n = N_IMAGE_SAMPLES
    x = sample(params, jax.random.PRNGKey(7), n, {"label": jnp.ones((n,), jnp.int32)})
    assert x.shape == (n, 1, 2, 1) and x.dtype == jnp.float32
    idx = np.round(np.asarray(x).reshape(n, 2) * 2).astype(int) @ np.array([3, 1])
    freq = np.bincount(idx, minlength=9) / n
    sigma = np.sqrt(prob * (1 - prob) / n)
    assert np.all(np.abs(freq - prob) <= 5 * sigma + 1e-3), (freq, prob)


def test_cached_and_recomputing_samplers_agree(image_lm):
    m, params, sample, sample_no_cache = image_lm
    n = N_IMAGE_SAMPLES
    cond = {"label": jnp.arange(n) % 2}
    a = sample(params, jax.random.PRNGKey(8), n, cond)
    b = sample_no_cache(params, jax.random.PRNGKey(8), n, cond)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="cond"):
        m.sampler.sample(params, jax.random.PRNGKey(0), 4, None)
    with pytest.raises(ValueError, match=r"'label': token ids lie in \[0, 2\], outside the vocabulary \[0, 2\)"):
        m.sampler.sample(params, jax.random.PRNGKey(0), 2, {"label": jnp.array([0, 2])})
    assert m.conditioning.keys == ("label",)
    np.testing.assert_array_equal(m.conditioning.draw(3)["label"], [0, 1, 0])


@pytest.fixture(scope="module")
def char_lm():
    parts = build_transformer_lm(dict(tokens="caption_chars", num_layers=1, d_model=16, num_heads=2, top_k=40),
                                 _info())
    batch = {"caption_chars": jnp.array([[98, 99, 0, 0, 0], [98, 99, 100, 101, 102]])}
    params = random_params(parts.model.training.init, batch)
    head = params["params"]["head"]
    head["bias"] = head["bias"].at[0].set(4.0)  # end of text likely, so samples end early
    return parts, params


def test_char_lm_scores_up_to_the_end_of_text(char_lm):
    parts, params = char_lm
    m = parts.model
    loss = m.training.phases[0].loss
    batch = {"caption_chars": jnp.array([[98, 99, 0, 0, 0], [98, 99, 100, 101, 102],
                                         [98, 99, 0, 5, 7]])}  # row 2: row 0 with garbage after the end
    metrics, lp, lik, count = jax.jit(lambda p, b: (loss(p, b, None)[1], parts.token_log_prob(p, b),
                                                    m.likelihood.log_prob(p, b, None), m.likelihood.count(b)))(
        params, batch)
    np.testing.assert_array_equal(metrics["scored_tokens"], [3, 6, 3])  # chars + the end-of-text 0
    assert lp[0] == lp[2] and lp[0] != lp[1]
    # A text LM's likelihood is per token (no density over pixels): the same nats, and the count.
    assert m.likelihood.kind == "exact" and m.likelihood.unit == "token"
    np.testing.assert_array_equal(lik, lp)
    np.testing.assert_array_equal(count, [3, 6, 3])
    with pytest.raises(ValueError, match=r"batch\['caption_chars'\]: token ids lie in \[0, 300\]"):
        loss(params, {"caption_chars": jnp.array([[300, 1, 0, 0, 0]])}, None)
    with pytest.raises(ValueError, match=r"batch\['caption_chars'\] must be int \[B, 5\]"):
        loss(params, {"caption_chars": jnp.ones((2, 7), jnp.int32)}, None)


def test_char_lm_samples_stop_at_the_end_and_match_the_no_cache_sampler(char_lm):
    parts, params = char_lm
    m = parts.model
    assert m.sampler.kind == "tokens" and not m.conditional
    a = np.asarray(jax.jit(m.sampler.sample, static_argnums=2)(params, jax.random.PRNGKey(9), 64))
    b = np.asarray(jax.jit(parts.sample_no_cache, static_argnums=2)(params, jax.random.PRNGKey(9), 64))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 6) and a.dtype == np.int32
    ended = np.cumsum(a == 0, axis=1) > 0
    assert np.all(a[ended] == 0) and ended.any()
    texts = m.sampler.describe(a)
    assert len(texts) == 64 and all(isinstance(t, str) for t in texts)


def test_bad_configs_name_the_field():
    for kw, field in ((dict(top_p=0.0), "top_p"), (dict(top_k=-2), "top_k"), (dict(temperature=-1.0), "temperature"),
                      (dict(tokens="pixels"), "tokens"), (dict(positions="sinusoidal"), "positions"),
                      (dict(num_heads=3), "num_heads"), (dict(top_k=300), "top_k")):
        with pytest.raises(ConfigError, match=f"config.model.*{field}"):
            make_transformer_lm(kw, _info())
    with pytest.raises(ValueError, match="top_p"):
        build_transformer_lm({}, _info()).make_sampler(top_p=2.0)


def test_caption_prefix_conditioning_shapes_and_errors():
    info = _info(image_shape=(2, 2, 1), caption_len=4, vocab_size=9)
    parts = build_transformer_lm(dict(tokens="image", condition="caption_tokens", num_layers=1, d_model=16,
                                      num_heads=2), info)
    m = parts.model
    assert m.conditional and m.conditioning.key == "caption_tokens" and parts.layout.max_len == 4 + 4
    drawn = m.conditioning.draw(4, {"caption_tokens": np.arange(12).reshape(3, 4), "label": np.array([5, 6, 7])})
    np.testing.assert_array_equal(drawn["caption_tokens"], np.arange(12).reshape(3, 4)[[0, 1, 2, 0]])
    np.testing.assert_array_equal(drawn["label"], [5, 6, 7, 5])
    batch = {"image": jnp.zeros((3, 2, 2, 1)), "caption_tokens": jnp.ones((3, 4), jnp.int32)}
    params = jax.eval_shape(m.training.init, jax.random.PRNGKey(0), batch)
    out = jax.eval_shape(lambda p: m.sampler.sample(p, jax.random.PRNGKey(1), 3, batch), params)
    assert out.shape == (3, 2, 2, 1) and out.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"'caption_tokens' must have shape \[3, 4\], got \(2, 4\)"):
        m.sampler.sample(params, jax.random.PRNGKey(1), 3, {"caption_tokens": jnp.ones((2, 4), jnp.int32)})
    with pytest.raises(ValueError, match=r"'caption_tokens': token ids lie in \[1, 9\]"):
        m.training.phases[0].loss(params, batch | {"caption_tokens": jnp.array([[1, 9, 1, 1]] * 3)}, None)
