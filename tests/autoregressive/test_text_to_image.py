"""The text-to-image prior (gen_jax/autoregressive/text_to_image.py) and guided token sampling
(gen_jax/autoregressive/guided_tokens.py) on a stand-in tokenizer (8x8 RGB -> 2x2 ids of 8 colours)."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.autoregressive import guided_tokens as G
from gen_jax.autoregressive import text_to_image as T
from gen_jax.config import ConfigError
from gen_jax.model import Codec, GenerativeModel, Stage, loss_training

K, GRID, TEXT, VOCAB = 8, (2, 2), 6, 12
CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(K)], np.float32)  # [K, 3]
INFO = types.SimpleNamespace(name="toy", image_shape=(8, 8, 3), has_captions=True, caption_len=5, vocab_size=VOCAB,
                             num_levels=256)
CFG = dict(codebook_size=K, token_grid=GRID, text_len=TEXT, num_layers=2, d_model=32, num_heads=2,
           caption_drop=0.25, guidance_scale=3.0)


def stand_in_stage(num_codes=K, patch=4):
    """A frozen 'tokenizer': each patch's mean colour -> the nearest RGB cube corner."""

    def encode(params, x, cond=None):
        b, h, w, c = x.shape
        m = x.reshape(b, h // patch, patch, w // patch, patch, c).mean((2, 4))
        return jnp.argmin(jnp.sum((m[..., None, :] - params["codes"]) ** 2, -1), -1).astype(jnp.int32)

    def decode(params, ids, cond=None, key=None):
        return jnp.repeat(jnp.repeat(params["codes"][ids], patch, 1), patch, 2)

    model = GenerativeModel(name="toy_tok", family="latent", codec=Codec(encode, decode, kind="ids"),
                            training=loss_training(lambda k, b: {}, lambda p, b, k: (0.0, {})))
    config = types.SimpleNamespace(model=ml_collections.ConfigDict({"num_codes": num_codes}))
    return Stage(model=model, params={"codes": jnp.asarray(CORNERS)}, config=config, workdir="/toy", step=0)


def captions(key, b):
    body = jax.random.randint(key, (b, 3), 4, VOCAB)
    return jnp.concatenate([jnp.full((b, 1), T.BOS), body, jnp.full((b, 1), T.EOS)], 1).astype(jnp.int32)


@pytest.fixture(scope="module")
def setup():
    parts = T.build_text_to_image(CFG, INFO, {"stage1": stand_in_stage()})
    x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 3))
    batch = {"image": x, "caption_tokens": captions(jax.random.PRNGKey(1), 4)}
    trained = jax.jit(parts.model.training.init)(jax.random.PRNGKey(2), batch)
    params = {**trained, "stage1": parts.stage.params}
    return parts, params, batch


def test_causality(setup):
    parts, params, batch = setup
    caps = T.fit_captions(batch["caption_tokens"], TEXT, VOCAB, "t")
    ids = jax.random.randint(jax.random.PRNGKey(3), (4, 4), 0, K)
    base = parts.image_logits(params, caps, ids)  # [B, N, K]
    for j in range(4):
        other = ids.at[:, j:].set((ids[:, j:] + 1 + jnp.arange(4 - j)) % K)
        new = parts.image_logits(params, caps, other)
        np.testing.assert_allclose(new[:, :j + 1], base[:, :j + 1], atol=1e-6)  # logits of img_<=j see ids < j
        if j < 3:
            assert float(jnp.max(jnp.abs(new[:, j + 1:] - base[:, j + 1:]))) > 1e-4
    other_caps = captions(jax.random.PRNGKey(9), 4)
    assert float(jnp.max(jnp.abs(parts.image_logits(params, other_caps, ids) - base))) > 1e-4


def test_cached_guided_sampler_equals_recomputation(setup):
    parts, params, batch = setup
    cond = {"caption_tokens": batch["caption_tokens"]}
    key, s = jax.random.PRNGKey(4), 3.0
    ids, logits = parts.make_sampler(s, return_ids=True)(params, key, 4, cond)
    ids_r, logits_r = parts.make_sampler(s, use_cache=False, return_ids=True)(params, key, 4, cond)
    np.testing.assert_array_equal(ids, ids_r)
    np.testing.assert_allclose(logits, logits_r, atol=1e-4)
    # Step by step against full forward passes of both streams (image_logits) on the drawn ids.
    flat = ids.reshape(4, -1)
    caps = T.fit_captions(cond["caption_tokens"], TEXT, VOCAB, "t")
    lc = parts.image_logits(params, caps, flat)
    lu = parts.image_logits(params, jnp.asarray(T.null_captions(4, TEXT)), flat)
    np.testing.assert_allclose(logits, lu + s * (lc - lu), atol=1e-4)
    # The draws: with the step keys, each token is the categorical draw from the guided logits.
    keys = jax.random.split(key, flat.shape[1])
    pick = jax.vmap(lambda k, lg: jax.random.categorical(k, lg), in_axes=(0, 1), out_axes=1)
    np.testing.assert_array_equal(pick(keys, logits), flat)


def test_guidance_scale_one_is_conditional(setup):
    parts, params, batch = setup
    cond = {"caption_tokens": batch["caption_tokens"]}
    ids, logits = parts.make_sampler(1.0, return_ids=True)(params, jax.random.PRNGKey(5), 4, cond)
    caps = T.fit_captions(cond["caption_tokens"], TEXT, VOCAB, "t")
    np.testing.assert_allclose(logits, parts.image_logits(params, caps, ids.reshape(4, -1)), atol=1e-5)
    lc, lu = jnp.arange(5.0), jnp.ones(5)
    np.testing.assert_allclose(G.guided_logits(lc, lu, 1.0), lc)
    np.testing.assert_allclose(G.guided_logits(lc, lu, 0.0), lu)


def test_sampler_decodes_through_codec(setup):
    parts, params, batch = setup
    x = parts.model.sampler.sample(params, jax.random.PRNGKey(6), 4, {"caption_tokens": batch["caption_tokens"]})
    assert x.shape == (4, 8, 8, 3)
    pixels = np.asarray(x).reshape(-1, 3)
    assert np.all(np.min(np.abs(pixels[:, None] - CORNERS[None]).sum(-1), 1) < 1e-6)  # codebook colours only


def test_caption_dropout_rate(setup):
    parts, params, batch = setup
    caps = captions(jax.random.PRNGKey(7), 20000)
    out, dropped = T.drop_captions(jax.random.PRNGKey(8), caps, 0.25)
    rate, sd = float(jnp.mean(dropped)), np.sqrt(0.25 * 0.75 / 20000)
    assert abs(rate - 0.25) < 4 * sd
    null = T.null_captions(1, caps.shape[1])[0]
    np.testing.assert_array_equal(np.asarray(out)[np.asarray(dropped)], np.broadcast_to(null, (int(dropped.sum()), caps.shape[1])))
    np.testing.assert_array_equal(np.asarray(out)[~np.asarray(dropped)], np.asarray(caps)[~np.asarray(dropped)])
    # The loss drops at the configured rate (caption_drop = 0.25) and is finite.
    loss = jax.jit(parts.model.training.phases[0].loss)
    big = {"image": jnp.tile(batch["image"], (50, 1, 1, 1)), "caption_tokens": jnp.tile(batch["caption_tokens"], (50, 1))}
    value, metrics = loss(params, big, jax.random.PRNGKey(9))
    assert np.isfinite(float(value)) and abs(float(jnp.mean(metrics["caption_dropped"])) - 0.25) < 4 * np.sqrt(0.25 * .75 / 200)
    # The image NLL is near log K at init (uniform over the codebook).
    assert abs(float(jnp.mean(metrics["image_nll"])) - np.log(K)) < 0.5


def test_rerank_picks_argmax():
    rng = np.random.default_rng(0)
    cands, scores = rng.normal(size=(8, 5, 3, 2)), rng.normal(size=(8, 5))
    best, idx = G.pick_best(jnp.asarray(cands), jnp.asarray(scores))
    np.testing.assert_array_equal(idx, np.argmax(scores, 0))
    np.testing.assert_allclose(best, cands[np.argmax(scores, 0), np.arange(5)], rtol=1e-6)

    def sample(params, key, num, cond):
        return jax.random.normal(key, (num, 3))

    score = lambda x, cond: -jnp.abs(x[:, 0] - cond["target"])  # closest first coordinate wins
    cond = {"target": jnp.array([0.0, 1.0, -1.0, 2.0])}
    key = jax.random.PRNGKey(0)
    out, sc = G.best_of_n(sample, score, None, key, 4, 8, cond)
    ref = np.stack([np.asarray(sample(None, k, 4, cond)) for k in jax.random.split(key, 8)])  # [8, 4, 3]
    want = np.argmin(np.abs(ref[:, :, 0] - np.asarray(cond["target"])), 0)
    np.testing.assert_allclose(out, ref[want, np.arange(4)], rtol=1e-6)


def test_refusals(setup):
    parts, params, batch = setup
    with pytest.raises(ConfigError, match="config.stages.stage1"):
        T.build_text_to_image(CFG, INFO, {})
    with pytest.raises(ConfigError, match="config.model.codebook_size"):
        T.build_text_to_image(CFG, INFO, {"stage1": stand_in_stage(num_codes=16)})
    with pytest.raises(ConfigError, match="config.model.token_grid"):
        T.build_text_to_image(CFG, INFO, {"stage1": stand_in_stage(patch=2)})
    with pytest.raises(ConfigError, match="config.model.text_len"):
        T.build_text_to_image({**CFG, "text_len": 4}, INFO, {"stage1": stand_in_stage()})
    sample = parts.model.sampler.sample
    with pytest.raises(ValueError, match="config.model.text_len"):
        sample(params, jax.random.PRNGKey(0), 2, {"caption_tokens": jnp.full((2, TEXT + 1), 4)})
    with pytest.raises(ValueError, match="vocabulary"):
        sample(params, jax.random.PRNGKey(0), 2, {"caption_tokens": jnp.full((2, TEXT), VOCAB)})
    caps = T.fit_captions(batch["caption_tokens"], TEXT, VOCAB, "t")
    with pytest.raises(ValueError, match="codebook"):
        parts.image_logits(params, caps, jnp.full((4, 4), K))
    with pytest.raises(ValueError, match="codebook"):
        parts.image_logits(params, caps, jnp.full((4, 4), -1))


def test_stage_one_checkpoint_missing(tmp_path):
    from experiments import common

    exp = common.load_experiment("dalle_shapes", {"stages.stage1.workdir": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="config.stages.stage1.workdir"):
        common.setup(exp)
