"""unCLIP (gen_jax/diffusion/unclip.py): the embedding prior, the decoder, guidance, slerp and the
width checks, on tiny random-init networks over a tiny random-init CLIP."""
from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info
from gen_jax.diffusion import unclip as U
from gen_jax.diffusion.embedding_prior import PriorConfig, build_prior
from gen_jax.diffusion.unclip_decoder import DecoderConfig, build_decoder
from gen_jax.model import Stage, full_params
from gen_jax.multimodal.clip import make_clip
from gen_jax.nn.dit import DiTConfig

D = 16
B = 3


def tiny_cfg(**over):
    prior = dict(width=32, depth=1, num_heads=2, time_dim=16, timesteps=20, sample_steps=3, candidates=2,
                 guidance_scale=1.0)
    decoder = dict(dit=dict(patch_size=8, width=32, depth=1, num_heads=2, time_dim=16), timesteps=20,
                   sample_steps=2, guidance_scale=1.0, caption=True)
    prior.update(over.pop("prior", {}))
    decoder.update(over.pop("decoder", {}))
    return {"name": "unclip", "prior": prior, "decoder": decoder, **over}


@pytest.fixture(scope="module")
def info():
    return get_info("shapes")


@pytest.fixture(scope="module")
def clip_stage(info):
    cfg = dict(name="clip", embed_dim=D, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2,
               text_len=info.caption_len, text_width=16, text_layers=1, text_heads=2)
    model = make_clip(cfg, info)
    batch = {"image": jnp.zeros((1, 32, 32, 3)), "caption_tokens": jnp.zeros((1, info.caption_len), jnp.int32)}
    params = jax.tree.map(np.asarray, jax.jit(model.training.init)(jax.random.PRNGKey(0), batch))
    conf = types.SimpleNamespace(dataset=types.SimpleNamespace(name="shapes"))
    return Stage(model=model, params=params, config=conf, workdir="", step=0)


@pytest.fixture(scope="module")
def data(info):
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (B, 32, 32, 3)) / 255.0).astype(np.float32)
    toks = np.zeros((B, info.caption_len), np.int32)
    toks[:, 0], toks[:, 1:5], toks[:, 5] = 2, rng.integers(4, info.vocab_size, (B, 4)), 3
    return {"image": jnp.asarray(images), "caption_tokens": jnp.asarray(toks)}


def perturb(params, key, scale=0.3):
    """Random params everywhere (the DiT's zero-initialized gates and output would hide the
    conditioning at init)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def parts(info, clip_stage, data):
    p = U.build_unclip(tiny_cfg(), info, {"clip": clip_stage})
    params = jax.jit(p.model.training.init)(jax.random.PRNGKey(1), data)
    params = jax.jit(perturb)(params, jax.random.PRNGKey(2))
    fns = types.SimpleNamespace(
        predict=jax.jit(p.prior.predict), denoise=jax.jit(p.decoder.denoise),
        embed_text=jax.jit(p.stage.model.embedder.embed_text), embed_image=jax.jit(p.stage.model.embedder.embed_image),
        guided=jax.jit(lambda q, zt, tok, x, s, w: p.prior.guided(q, zt, tok, w)(x, s, None), static_argnums=5))
    return p, full_params(p.model, params), fns


def test_prior_predicts_x0_of_embedding_shape(parts, data):
    p, params, f = parts
    x = jax.random.normal(jax.random.PRNGKey(3), (B, D))
    s = jnp.array([0, 5, 19])
    zt = f.embed_text(params["clip"], data["caption_tokens"])
    out = f.predict(params["prior"], x, s, zt, data["caption_tokens"])
    assert out.shape == (B, D) and np.all(np.isfinite(out))
    z = p.prior_embed(params, jax.random.PRNGKey(4), data["caption_tokens"])
    assert z.shape == (B, D)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)


def test_guidance_scale_zero_is_conditional_and_w_combines(parts, data):
    p, params, f = parts
    x = jax.random.normal(jax.random.PRNGKey(5), (B, D))
    s = jnp.array([1, 7, 13])
    tok = data["caption_tokens"]
    zt = f.embed_text(params["clip"], tok)
    cond = f.predict(params["prior"], x, s, zt, tok)
    uncond = f.predict(params["prior"], x, s, jnp.zeros_like(zt), jnp.zeros_like(tok))
    assert float(jnp.max(jnp.abs(cond - uncond))) > 1e-3
    np.testing.assert_allclose(f.guided(params["prior"], zt, tok, x, s, 0.0), cond, atol=1e-5)
    np.testing.assert_allclose(f.guided(params["prior"], zt, tok, x, s, 2.0), 3 * cond - 2 * uncond, atol=1e-4)


def test_decoder_guidance_zero_equals_conditional_sampler(parts, data):
    """The guided decoder sampler at w = 0 is DDIM on the conditional network alone (an
    independent DDIM loop written from Song et al. 2021, Eq. 12 with eta = 0)."""
    p, params, f = parts
    dec = p.decoder
    z = f.embed_image(params["clip"], data["image"])
    tok = data["caption_tokens"]
    key = jax.random.PRNGKey(6)
    x_T = jax.random.normal(key, (B, 32, 32, 3))
    got = jax.jit(lambda q, k, z, tok, x_T: dec.sample(q, k, z, tok, 0.0, 2, x_T=x_T))(params["decoder"], key, z,
                                                                                    tok, x_T)
    ab = np.asarray(dec.schedule.alpha_bars)
    x = x_T
    taus = [19, 0]
    for i, tau in enumerate(taus):
        eps = f.denoise(params["decoder"], x, jnp.full((B,), tau), z, tok)
        x0 = jnp.clip((x - np.sqrt(1 - ab[tau]) * eps) / np.sqrt(ab[tau]), -1, 1)
        eps = (x - np.sqrt(ab[tau]) * x0) / np.sqrt(1 - ab[tau])
        a_prev = ab[taus[i + 1]] if i + 1 < len(taus) else 1.0
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    want = np.round((np.clip(x, -1, 1) + 1) / 2 * 255) / 255
    np.testing.assert_allclose(got, want, atol=1.5 / 255)


def test_decoder_conditioning_changes_output(parts, data):
    p, params, f = parts
    x = jax.random.normal(jax.random.PRNGKey(7), (B, 32, 32, 3))
    t = jnp.array([3, 10, 17])
    z = f.embed_image(params["clip"], data["image"])
    base = f.denoise(params["decoder"], x, t, z, data["caption_tokens"])
    other = f.denoise(params["decoder"], x, t, jnp.roll(z, 1, axis=0), data["caption_tokens"])
    null = f.denoise(params["decoder"], x, t, jnp.zeros_like(z), data["caption_tokens"])
    assert float(jnp.mean(jnp.abs(base - other))) > 1e-3
    assert float(jnp.mean(jnp.abs(base - null))) > 1e-3
    # The loss reaches the embedding projection (the conditioning is trained).
    g = jax.jit(jax.grad(lambda q: jnp.mean(p.decoder.loss(q, data["image"], z, data["caption_tokens"],
                                                           jax.random.PRNGKey(8))["loss"])))(params["decoder"])
    assert float(jnp.max(jnp.abs(g["params"]["emb_proj"]["kernel"]))) > 0


def test_slerp_unit_norm_endpoints_and_angle():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 7))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    th = np.linspace(0, 1, 5)
    out = np.asarray(jax.jit(U.slerp)(a[:, None], b[:, None], th[None]))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], a, atol=1e-5)
    np.testing.assert_allclose(out[:, -1], b, atol=1e-5)
    omega = np.arccos(np.sum(a * b, 1))
    ang = np.arccos(np.clip(np.einsum("nd,nkd->nk", a, out), -1, 1))
    np.testing.assert_allclose(ang, omega[:, None] * th[None], atol=1e-3)   # constant angular speed
    same = np.asarray(jax.jit(U.slerp)(a, a, 0.3))
    np.testing.assert_allclose(same, a, atol=1e-5)


def test_text_diff_embeddings_rotate_toward_difference():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(3, 3, 8)).astype(np.float32)
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    out = np.asarray(jax.jit(U.text_diff_embeddings)(z[0], z[1], z[2], jnp.array([0.0, 0.25, 0.5])))
    d = (z[2] - z[1]) / np.linalg.norm(z[2] - z[1], axis=-1, keepdims=True)
    np.testing.assert_allclose(out[:, 0], z[0], atol=1e-5)
    cos = np.einsum("bkd,bd->bk", out, d)
    assert np.all(np.diff(cos, axis=1) > 0)


def test_width_mismatch_names_both_widths(info, clip_stage):
    with pytest.raises(ValueError, match=r"16.*32|32.*16"):
        U.build_unclip(tiny_cfg(prior={"embed_dim": 16}, decoder={"embed_dim": 32}), info, {"clip": clip_stage})
    with pytest.raises(ConfigError, match="config.model.decoder.embed_dim.*24.*16"):
        U.build_unclip(tiny_cfg(decoder={"embed_dim": 24}), info, {"clip": clip_stage})
    # A prior and a decoder built (trained) for different CLIP widths, combined from params.
    prior = build_prior(PriorConfig(width=32, depth=1, num_heads=2, time_dim=16, timesteps=10, sample_steps=2),
                        16, info.vocab_size, info.caption_len)
    dec = build_decoder(DecoderConfig(dit=DiTConfig(patch_size=8, width=32, depth=1, num_heads=2, time_dim=16),
                                      timesteps=10, sample_steps=2), 32, (32, 32, 3), 256)
    params = {"prior": jax.eval_shape(prior.init, jax.random.PRNGKey(0)),
              "decoder": jax.eval_shape(dec.init, jax.random.PRNGKey(0))}
    with pytest.raises(ValueError, match="width 16.*width 32"):
        U.check_pair(params)
    U.check_widths(16, 16, 16)
    with pytest.raises(ConfigError, match="config.stages.stage1"):
        U.build_unclip(tiny_cfg(decoder={"space": "latent"}), info, {"clip": clip_stage})


def test_bad_cond_shapes_are_clear_errors(parts, data, info):
    p, params, f = parts
    with pytest.raises(ValueError, match=r"caption_tokens.*\[2, 10\]"):
        p.model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"caption_tokens": data["caption_tokens"][:, :4]})
    with pytest.raises(ValueError, match="caption_tokens"):
        p.model.sampler.sample(params, jax.random.PRNGKey(0), 2, None)
    with pytest.raises(ValueError, match=r"z must be \[B, D\] = \[B, 16\]"):
        p.decode(params, jax.random.PRNGKey(0), jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match="thetas"):
        p.text_diff(params, jax.random.PRNGKey(0), data["image"], data["caption_tokens"], data["caption_tokens"],
                    np.zeros((2, 2)))


def test_sampler_text_diff_and_training_phases(parts, data):
    p, params, f = parts
    x = p.model.sampler.sample(params, jax.random.PRNGKey(9), B, {"caption_tokens": data["caption_tokens"]})
    assert x.shape == (B, 32, 32, 3) and float(x.min()) >= 0 and float(x.max()) <= 1
    np.testing.assert_allclose(np.asarray(x) * 255, np.round(np.asarray(x) * 255), atol=1e-3)
    td = p.text_diff(params, jax.random.PRNGKey(11), data["image"][:1], data["caption_tokens"][:1],
                     data["caption_tokens"][1:2], [0.0, 0.5])
    assert td.shape == (1, 2, 32, 32, 3)
    names = [ph.group for ph in p.model.training.phases]
    assert names == ["prior", "decoder"] and "clip" in p.model.training.frozen
    for ph in p.model.training.phases:
        value, _ = jax.jit(ph.loss)(params, data, jax.random.PRNGKey(12))
        assert np.isfinite(float(value))


def test_vq_latent_space_standardizes_and_the_decoder_diffuses_in_it():
    """A stand-in tokenizer (z_e = 3 avgpool_4(x) + 1, decoded by nearest upsampling): the
    per-channel statistics match numpy's, the standardized latents have mean 0 / std 1, decoding
    inverts encoding, and the decoder's networks, loss and sampler run on the 8x8 latents."""
    from gen_jax.diffusion.unclip_decoder import vq_latent_space
    from gen_jax.model import Codec

    pool = lambda x: x.reshape(x.shape[0], 8, 4, 8, 4, 3).mean((2, 4))
    enc = lambda p, x: 3.0 * pool(x) + p["b"]
    dec = lambda p, z: jnp.repeat(jnp.repeat((z - p["b"]) / 3.0, 4, 1), 4, 2)
    model = types.SimpleNamespace(name="fake_vq", codec=types.SimpleNamespace(continuous=Codec(enc, dec)))
    stage = Stage(model=model, params={"b": jnp.array([1.0, -2.0, 0.5])}, config=None, workdir="", step=0)
    imgs = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3)).astype(np.uint8)
    space, stats = vq_latent_space(stage, imgs, batch=16)
    ref = 3.0 * imgs.astype(np.float64).reshape(40, 8, 4, 8, 4, 3).mean((2, 4)) / 255.0 + np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(stats["mean"], ref.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], ref.std((0, 1, 2)), rtol=1e-4)
    sp = {"stage1": stage.params, "latent_stats": stats}
    x = jnp.asarray(imgs, jnp.float32) / 255.0
    z = np.asarray(space.encode(sp, x))
    assert space.shape == (8, 8, 3) and not space.clip
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std((0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(space.decode(sp, z), np.repeat(np.repeat(pool(x), 4, 1), 4, 2), atol=1e-5)
    cfg = DecoderConfig(dit=DiTConfig(patch_size=2, width=32, depth=1, num_heads=2, time_dim=16), timesteps=10,
                        sample_steps=2, clip_x0=False)
    d = build_decoder(cfg, D, (32, 32, 3), 256, space=space)
    params = jax.jit(d.init)(jax.random.PRNGKey(0))
    zc = jnp.ones((2, D)) / 4.0
    loss = jax.jit(lambda q: d.loss(q, x[:2], zc, None, jax.random.PRNGKey(1), sp)["loss"])(params)
    assert loss.shape == (2,) and np.all(np.isfinite(loss))
    out = jax.jit(lambda q: d.sample(q, jax.random.PRNGKey(2), zc, None, 1.0, 2, None, sp))(params)
    assert out.shape == (2, 32, 32, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
