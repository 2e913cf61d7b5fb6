"""Text-conditioned latent diffusion (gen_jax/diffusion/text_latent.py) on tiny random stages over the
digits (8x8 images, 6-token captions): a VQ-VAE's continuous codec and CLIP's text tower, frozen."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info, load_split
from gen_jax.data.tokenizers import UnknownWordsError
from gen_jax.diffusion.text_latent import build_text_latent_diffusion, prompt_condition
from gen_jax.latent.vqvae import make_vqvae
from gen_jax.model import MODEL_STATE, Stage, full_params
from gen_jax.multimodal.clip import make_clip
from gen_jax.nn.conditioning import null_caption

T = 40
CLIP = dict(embed_dim=8, image_size=8, patch_size=4, vision_width=8, vision_layers=1, vision_heads=2, text_len=6,
            text_width=8, text_layers=1, text_heads=2)
MODEL = dict(timesteps=T, cond_drop_prob=0.2, guidance_scale=2.0, sampler="ddim", sample_steps=4,
             unet=dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4, 2), dropout=0.0, num_groups=4,
                       num_heads=2))


def _stages(data_dir):
    info = get_info("digits", data_dir)
    tr = load_split("digits", "train", data_dir)
    batch = {"image": jnp.asarray(tr["image"][:32] / 16.0, jnp.float32),
             "caption_tokens": jnp.asarray(tr["caption_tokens"][:32])}
    ds = types.SimpleNamespace(name="digits", data_dir=data_dir)
    vq = make_vqvae(dict(num_codes=16, code_dim=4, channels=(8,), downsample=1, res_blocks=0, kmeans_iters=2), info)
    k = jax.random.PRNGKey(0)
    vq_params = jax.jit(lambda k: {**vq.training.init(k, batch), MODEL_STATE: vq.training.init_model_state(k, batch)})(k)
    clip = make_clip(CLIP, info)
    clip_params = jax.jit(clip.training.init)(jax.random.PRNGKey(1), batch)
    return info, batch, {"stage1": Stage(vq, vq_params, types.SimpleNamespace(dataset=ds), "", 0),
                         "text": Stage(clip, clip_params, types.SimpleNamespace(dataset=ds, model=CLIP), "", 0)}


@pytest.fixture(scope="module")
def ldm(digits_data_dir):
    info, batch, stages = _stages(digits_data_dir)
    parts = build_text_latent_diffusion(MODEL, info, stages)
    model = parts.model
    params = jax.jit(model.training.init)(jax.random.PRNGKey(2), batch)
    # random weights around init: the zero-initialized output layers would hide the wiring under test
    r = np.random.default_rng(0)
    params = {"denoiser": jax.tree.map(lambda a: a + jnp.asarray(r.normal(0, 0.2, a.shape), a.dtype),
                                       params["denoiser"])}
    full = full_params(model, params)
    denoise = jax.jit(lambda p, z, t, tok: model.denoiser.denoise(p, z, t, tok))
    return dict(info=info, batch=batch, stages=stages, parts=parts, model=model, params=params, full=full,
                denoise=denoise)


def test_loss_is_l_simple_on_the_standardized_frozen_latents(ldm):
    model, full, batch = ldm["model"], ldm["full"], ldm["batch"]
    key = jax.random.PRNGKey(5)
    loss_fn = model.training.phases[0].loss
    (loss, metrics), g = jax.jit(jax.value_and_grad(lambda p: loss_fn(full_params(model, p), batch, key),
                                                    has_aux=True))(ldm["params"])
    # reference: the same draws (key split as documented), written out with the forward process
    k_drop, k_loss = jax.random.split(key)
    tokens = jnp.where(jax.random.bernoulli(k_drop, 0.2, (32,))[:, None], 0, batch["caption_tokens"])
    st = full["latent_stats"]
    z0 = (ldm["stages"]["stage1"].model.codec.continuous.encode(full["stage1"], batch["image"]) - st["mean"]) / st["std"]
    kt, kn = jax.random.split(k_loss)
    t = jax.random.randint(kt, (32,), 0, T, jnp.int32)
    eps = jax.random.normal(kn, z0.shape)
    ab = model.denoiser.schedule.alpha_bars[t][:, None, None, None]
    z_t = jnp.sqrt(ab) * z0 + jnp.sqrt(1 - ab) * eps
    ref = jnp.mean(jnp.square(eps - ldm["denoise"](full, z_t, t, tokens)), axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(metrics["mse"]), np.asarray(ref), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(loss), float(np.mean(metrics["mse"])), rtol=1e-6)
    # only the denoiser is trained: the gradient reaches no frozen group
    assert set(g) == {"denoiser"} and set(model.training.frozen) == {"stage1", "text", "latent_stats"}


def test_latents_standardized_and_decoded_through_the_codes(ldm, digits_data_dir):
    parts, full = ldm["parts"], ldm["full"]
    x = jnp.asarray(load_split("digits", "train", digits_data_dir)["image"] / 16.0, jnp.float32)
    z = np.asarray(jax.jit(parts.encode_latents)(full, x), np.float64).reshape(-1, 4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(float(full["latent_stats"]["bound"]), np.abs(z).max(), rtol=1e-4)
    codec = ldm["stages"]["stage1"].model.codec
    xs = x[:8]
    np.testing.assert_allclose(np.asarray(parts.decode_latents(full, parts.encode_latents(full, xs))),
                               np.asarray(codec.decode(full["stage1"], codec.encode(full["stage1"], xs))), atol=1e-5)
    with pytest.raises(ValueError, match=r"z must be \[B, 4, 4, 4\]"):
        parts.decode_latents(full, jnp.zeros((2, 16)))


def test_cross_attention_reads_the_text_and_the_empty_caption_is_null(ldm):
    full, tok, denoise = ldm["full"], ldm["batch"]["caption_tokens"][:4], ldm["denoise"]
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 4, 4, 4))
    t = jnp.full((4,), 10, jnp.int32)
    other = dict(full, text=jax.tree.map(lambda a: a * 1.5 + 0.1, full["text"]))  # another text encoder
    a, b = denoise(full, z, t, tok), denoise(other, z, t, tok)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3           # the condition goes through CLIP's token states
    assert float(jnp.max(jnp.abs(a - denoise(full, z, t, tok[::-1])))) > 1e-3
    n0, n1 = denoise(full, z, t, null_caption(4, 6)), denoise(other, z, t, null_caption(4, 6))
    np.testing.assert_allclose(np.asarray(n0), np.asarray(n1), atol=1e-6)  # empty caption: no text at all


def test_guidance_and_negative_prompt(ldm):
    model, full, tok, denoise = ldm["model"], ldm["full"], ldm["batch"]["caption_tokens"][:4], ldm["denoise"]
    z = jax.random.normal(jax.random.PRNGKey(4), (4, 4, 4, 4))
    t = jnp.full((4,), 20, jnp.int32)
    w = 2.5
    neg = jnp.roll(tok, -1, axis=0)
    run = jax.jit(lambda p, cond: model.denoiser.guided(p, cond, w, 4)(z, t, None))
    guided = run(full, {"caption_tokens": tok, "negative_caption_tokens": null_caption(4, 6)})
    ref = (1 + w) * denoise(full, z, t, tok) - w * denoise(full, z, t, null_caption(4, 6))
    np.testing.assert_allclose(np.asarray(guided), np.asarray(ref), rtol=1e-4, atol=1e-5)
    guided = run(full, {"caption_tokens": tok, "negative_caption_tokens": neg})
    ref = (1 + w) * denoise(full, z, t, tok) - w * denoise(full, z, t, neg)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_sampler_images_and_dynamic_thresholding(ldm):
    model, full, tok = ldm["model"], ldm["full"], ldm["batch"]["caption_tokens"][:3]
    cond = {"caption_tokens": tok}
    img = model.sampler.sample(full, jax.random.PRNGKey(6), 3, cond)
    assert img.shape == (3, 8, 8, 1) and img.dtype == jnp.float32 and 0 <= float(img.min()) <= float(img.max()) <= 1
    key = jax.random.PRNGKey(7)
    raw = model.denoiser.make_sampler(guidance_scale=8.0, return_latents=True)(full, key, 3, cond)
    dyn = model.denoiser.make_sampler(guidance_scale=8.0, threshold="dynamic", percentile=0.9,
                                      return_latents=True)(full, key, 3, cond)
    # DDIM's last step returns the thresholded z0_hat: inside [-c, c], c the training latents' largest |z|
    c = float(full["latent_stats"]["bound"])
    assert np.abs(np.asarray(dyn)).max() <= c + 1e-4 < np.abs(np.asarray(raw)).max()
    with pytest.raises(ValueError, match="caption_tokens"):
        model.sampler.sample(full, key, 3, None)


def test_prompts_and_bad_input(ldm):
    cond = prompt_condition(["a handwritten digit three", "a digit seven"], 6, negative="a digit one",
                            dataset="digits")
    assert cond["caption_tokens"].shape == (2, 6) and cond["negative_caption_tokens"].shape == (2, 6)
    with pytest.raises(UnknownWordsError, match="drei"):
        prompt_condition(["eine handgeschriebene ziffer drei"], 6, dataset="digits")
    info, stages = ldm["info"], ldm["stages"]
    with pytest.raises(ConfigError, match="config.stages.text"):
        build_text_latent_diffusion(MODEL, info, {"stage1": stages["stage1"]})
    with pytest.raises(ConfigError, match="config.stages.stage1"):
        build_text_latent_diffusion(MODEL, info, {"text": stages["text"]})
    with pytest.raises(ConfigError, match="config.stages.stage1.config"):  # CLIP has no codec
        build_text_latent_diffusion(MODEL, info, {"stage1": stages["text"], "text": stages["text"]})
    with pytest.raises(ConfigError, match="config.model.threshold"):
        build_text_latent_diffusion(dict(MODEL, threshold="dynamic_x"), info, stages)
