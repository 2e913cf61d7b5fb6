"""CLIP model: normalized embeddings, the loss is the contrastive loss of its embeddings, text
features at the last non-pad token, temperature init/clamp/no decay, refusals naming the field,
the embedder scoring path of experiments/text2image_rows.py, and the ViT-B/32 parameter count."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.multimodal import clip as CL
from gen_jax.multimodal import contrastive as C
from gen_jax.train.optim import decay_mask

INFO = types.SimpleNamespace(name="toy", image_shape=(16, 16, 3), num_levels=256, vocab_size=20, caption_len=6)
SMALL = dict(embed_dim=8, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2, text_len=6,
             text_width=16, text_layers=1, text_heads=2, mlp_ratio=2)


def _batch(b=4, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(b, 16, 16, 3)).astype(np.float32) / 255.0
    tok = np.zeros((b, 6), np.int32)
    for i in range(b):
        n = 2 + i % 3
        tok[i, 0], tok[i, 1:n + 1], tok[i, n + 1] = 2, rng.integers(4, 20, size=n), 3   # <bos> words <eos>
    return {"image": jnp.asarray(img), "caption_tokens": jnp.asarray(tok)}


@pytest.fixture(scope="module")
def vit():
    model = CL.make_clip(dict(SMALL), INFO)
    batch = _batch()
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    return model, params, batch


@pytest.fixture(scope="module")
def jitted(vit):
    """The embedder and the loss compiled once (the checks run at trace time)."""
    model = vit[0]
    return types.SimpleNamespace(image=jax.jit(model.embedder.embed_image), text=jax.jit(model.embedder.embed_text),
                                 loss=jax.jit(model.training.phases[0].loss))


def test_embeddings_are_normalized(vit, jitted):
    model, params, batch = vit
    zi = jitted.image(params, batch["image"])
    zt = jitted.text(params, batch["caption_tokens"])
    assert zi.shape == zt.shape == (4, model.embedder.dim) == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(zt, axis=1), 1.0, atol=1e-5)


def test_loss_is_infonce_of_the_embeddings(vit, jitted):
    model, params, batch = vit
    value, m = model.training.phases[0].loss(params, batch, jax.random.PRNGKey(1))   # eager: the value checks
    zi, zt = jitted.image(params, batch["image"]), jitted.text(params, batch["caption_tokens"])
    ref = C.infonce_loss(zi, zt, params["params"]["log_scale"])
    np.testing.assert_allclose(float(value), float(ref), rtol=1e-5)
    assert set(m) >= {"loss", "logit_scale", "acc_i2t", "acc_t2i"}
    np.testing.assert_allclose(float(m["logit_scale"]), 1 / 0.07, rtol=1e-5)
    assert CL.logit_scale_of(params) == pytest.approx(1 / 0.07, rel=1e-5)


def test_text_features_at_the_last_non_pad_token(vit, jitted):
    """Causal mask + last-token pooling: trailing padding changes nothing (trimmed or not),
    while a word before the <eos> does."""
    model, params, batch = vit
    tok = batch["caption_tokens"]
    full = jitted.text(params, tok)
    trimmed = jitted.text(params, jnp.pad(tok[:, :4], ((0, 0), (0, 2)))[:1])   # row 0 is <bos> w w <eos>
    np.testing.assert_allclose(full[:1], trimmed, atol=1e-6)
    short = jitted.text(params, tok[:, :4])          # rows 0 and 3 end by position 3; row 1 is cut
    np.testing.assert_allclose(np.asarray(full)[[0, 3]], np.asarray(short)[[0, 3]], atol=1e-6)
    other = jitted.text(params, tok.at[0, 1].set(5 if int(tok[0, 1]) != 5 else 6))
    assert float(jnp.max(jnp.abs(other[0] - full[0]))) > 1e-4


def test_temperature_is_not_decayed_and_clamps(vit, jitted):
    model, params, batch = vit
    mask = decay_mask(params)
    assert mask["params"]["log_scale"] is False
    assert mask["params"]["image"]["proj"]["kernel"] is True
    assert not any(m for path, m in jax.tree_util.tree_leaves_with_path(mask)
                   if "bias" in jax.tree_util.keystr(path) or "scale" in jax.tree_util.keystr(path))
    hot = jax.tree.map(lambda x: x, params)
    hot["params"]["log_scale"] = jnp.float32(math.log(500.0))
    loss = model.training.phases[0].loss
    g, m = jax.jit(jax.grad(lambda p: loss(p, batch, None), has_aux=True))(hot)
    assert float(g["params"]["log_scale"]) == 0.0
    assert float(m["logit_scale"]) == pytest.approx(100.0)


def test_siglip_option():
    model = CL.make_clip(dict(SMALL, loss="siglip"), INFO)
    batch = _batch()
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    assert float(params["params"]["log_scale"]) == pytest.approx(math.log(10.0))
    assert float(params["params"]["bias"]) == -10.0

    @jax.jit
    def run(p):
        return (model.training.phases[0].loss(p, batch, None), model.embedder.embed_image(p, batch["image"]),
                model.embedder.embed_text(p, batch["caption_tokens"]))

    (value, m), zi, zt = run(params)
    np.testing.assert_allclose(float(value), float(C.siglip_loss(zi, zt, math.log(10.0), -10.0)), rtol=1e-5)
    assert float(m["bias"]) == -10.0


@pytest.mark.parametrize("variant", [dict(image_encoder="resnet", resnet_widths=(8, 16)), dict(conv_stem=2)])
def test_other_image_encoders(variant):
    model = CL.make_clip(dict(SMALL, **variant), INFO)
    batch = _batch()
    zi = jax.jit(lambda k: model.embedder.embed_image(model.training.init(k, batch), batch["image"]))(
        jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.linalg.norm(zi, axis=1), 1.0, atol=1e-5)


def test_refusals(vit):
    model, params, batch = vit
    with pytest.raises(ValueError, match="config.model.text_len"):
        model.embedder.embed_text(params, jnp.ones((2, 7), jnp.int32))
    with pytest.raises(ValueError, match="text_len"):
        model.training.phases[0].loss(params, {**batch, "caption_tokens": jnp.ones((4, 9), jnp.int32)}, None)
    with pytest.raises(ValueError, match="vocabulary"):
        model.embedder.embed_text(params, jnp.full((2, 6), 20, jnp.int32))
    with pytest.raises(ValueError, match="embed_image"):
        model.embedder.embed_image(params, jnp.zeros((2, 12, 12, 3)))
    with pytest.raises(ConfigError, match="config.model.patch_size"):
        CL.make_clip(dict(SMALL, patch_size=5), INFO)
    with pytest.raises(ConfigError, match="config.model.text_len"):
        CL.make_clip(dict(SMALL, text_len=4), INFO)
    with pytest.raises(ConfigError, match="config.model.conv_stem"):
        CL.make_clip(dict(SMALL, conv_stem=4), INFO)
    with pytest.raises(ConfigError, match="config.model.vocab_size"):
        CL.make_clip(dict(SMALL, vocab_size=10), INFO)
    with pytest.raises(ConfigError, match="config.model.vision_width"):
        CL.make_clip(dict(SMALL, vision_width=15), INFO)


def test_out_of_vocabulary_under_jit_is_nan(vit):
    model, params, _ = vit
    z = jax.jit(model.embedder.embed_text)(params, jnp.full((1, 6), 25, jnp.int32))
    assert bool(jnp.all(jnp.isnan(z)))


def test_embedder_score_path(vit, jitted):
    """experiments/text2image_rows.clip_score hands stage.model.embedder to
    guided_tokens.embedder_score: the cosine of the pairs, under jit too."""
    from gen_jax.autoregressive.guided_tokens import embedder_score

    model, params, batch = vit
    score = embedder_score(model.embedder, params)
    cond = {"caption_tokens": np.asarray(batch["caption_tokens"])}
    s = jax.jit(score)(batch["image"], cond)
    zi, zt = jitted.image(params, batch["image"]), jitted.text(params, batch["caption_tokens"])
    np.testing.assert_allclose(s, np.sum(np.asarray(zi) * np.asarray(zt), 1), atol=1e-5)


# Radford et al. 2021 ViT-B/32 (the released model's state dict): per-part parameter counts.
def _vit_block(w):
    return 4 * w * w + 4 * w + 2 * (4 * w * w) + 4 * w + w + 2 * 2 * w   # attn qkv+out, mlp, 2 LN


B32 = {"image/patchify": 3 * 32 * 32 * 768, "image/class_token": 768, "image/pos_embed": 50 * 768,
       "image/ln_pre": 2 * 768, "image/block": _vit_block(768), "image/ln_post": 2 * 768,
       "image/proj": 768 * 512, "text/tok_embed": 49408 * 512, "text/pos_embed": 77 * 512,
       "text/block": _vit_block(512), "text/ln_final": 2 * 512, "text/proj": 512 * 512, "log_scale": 1}


def test_vit_b32_parameter_count():
    from experiments import common

    exp = common.load_experiment("clip_vit_b32_paper")
    info = types.SimpleNamespace(name="imagenet2012", image_shape=(224, 224, 3), num_levels=256, vocab_size=0,
                                 caption_len=0)
    model = CL.make_clip(exp.model, info)
    p = CL.abstract_params(model, (224, 224, 3), 77)["params"]
    n = CL.count_params
    assert B32["image/block"] == 7_087_872 and B32["text/block"] == 3_152_384
    for part in ("image", "text"):
        for i in range(12):
            assert n(p[part][f"block_{i}"]) == B32[f"{part}/block"], (part, i)
    assert n(p["image"]["patchify"]) == B32["image/patchify"]
    for k in ("class_token", "pos_embed", "ln_pre", "ln_post", "proj"):
        assert n(p["image"][k]) == B32[f"image/{k}"], k
    for k in ("tok_embed", "pos_embed", "ln_final", "proj"):
        assert n(p["text"][k]) == B32[f"text/{k}"], k
    vision, text = n(p["image"]), n(p["text"])
    assert vision == 87_849_216 and text == 63_428_096
    assert n(p) == vision + text + 1 == 151_277_313   # the paper's ViT-B/32: 151.3M
