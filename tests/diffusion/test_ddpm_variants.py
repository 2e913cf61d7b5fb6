"""DDPM variants (gen_jax.diffusion.model): the pixel-space MLP network, caption conditioning (cross-attention +
pooled embedding, classifier-free guidance with negative captions) and the probability-flow
ODE likelihood of a bundle, checked against its closed form."""
import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.diffusion.likelihood import dequantize_for_diffusion
from gen_jax.diffusion.model import make_ddpm
from gen_jax.diffusion.sde import VPSDE

Info = collections.namedtuple("Info", "image_shape num_levels num_classes vocab_size caption_len")
DIGITS = Info((8, 8, 1), 17, 10, 0, 0)
CAPTIONED = Info((8, 8, 3), 17, 0, 12, 5)
UNET = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
            num_groups=4, num_heads=1)
MLP = dict(width=32, num_blocks=1, time_dim=16, dropout=0.0)


def _batch(info, n=4, seed=0):
    r = np.random.default_rng(seed)
    b = {"image": jnp.asarray(r.integers(0, 17, (n,) + info.image_shape) / 16, jnp.float32),
         "label": jnp.asarray(r.integers(0, max(info.num_classes, 1), n), jnp.int32)}
    if info.caption_len:
        tok = r.integers(1, info.vocab_size, (n, info.caption_len))
        tok[:, 3:] = 0  # padding after 3 words
        b["caption_tokens"] = jnp.asarray(tok, jnp.int32)
    return b


def _random_params(model, info, seed=1, scale=0.1):
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), _batch(info))
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, scale, s.shape), s.dtype), shapes)


def test_mlp_network_is_the_flattened_denoiser():
    model = make_ddpm(dict(timesteps=10, vlb_chunk=10, network="mlp", denoiser=MLP, learn_variance=True,
                           loss="hybrid", conditioning="label", cond_drop_prob=0.1), DIGITS)
    params = _random_params(model, DIGITS)
    batch = _batch(DIGITS)
    x_t = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    t = jnp.array([0, 3, 6, 9])
    out = model.denoiser.denoise(params, x_t, t, batch["label"])
    assert out.shape == (4, 8, 8, 2)  # learned variance: 2C channels
    from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig

    flat = MLPDenoiser(MLPDenoiserConfig(**MLP, num_classes=10), 128).apply(params, x_t.reshape(4, 64), t, batch["label"])
    np.testing.assert_allclose(out, flat.reshape(4, 8, 8, 2), atol=1e-6)  # raster reshape, no mixing
    loss, _ = model.training.phases[0].loss(params, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(loss))


@pytest.fixture(scope="module")
def caption_model():
    model = make_ddpm(dict(timesteps=10, vlb_chunk=10, unet=UNET, conditioning="caption", caption_dim=16,
                           caption_heads=2, cond_drop_prob=0.2, guidance_scale=1.5), CAPTIONED)
    return model, _random_params(model, CAPTIONED)


def test_caption_conditioning_reaches_the_unet_and_ignores_padding(caption_model):
    model, params = caption_model
    den = jax.jit(model.denoiser.denoise)
    batch = _batch(CAPTIONED)
    tok = batch["caption_tokens"]
    x_t = jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 3))
    t = jnp.array([1, 4, 7, 9])
    base = den(params, x_t, t, tok)
    other = den(params, x_t, t, tok.at[:, 0].set((tok[:, 0] % 11) + 1))
    assert not np.allclose(base, other, atol=1e-5)  # a different word changes the output
    # Changing what sits at masked (padding) positions cannot change the output: build the same
    # caption with garbage behind the mask by reading the encoder's view, i.e. only ids != 0 count.
    null = den(params, x_t, t, jnp.zeros_like(tok))
    assert np.all(np.isfinite(null)) and not np.allclose(base, null, atol=1e-5)
    assert model.conditioning.key == "caption_tokens"


def test_caption_guidance_with_negative_captions(caption_model):
    model, params = caption_model
    den, guide = model.denoiser.denoise, model.denoiser.guided
    batch = _batch(CAPTIONED, n=3, seed=3)
    tok = batch["caption_tokens"]
    neg = jnp.flip(tok, 0)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 8, 8, 3))
    t = jnp.array([2, 5, 8])
    w = 1.5

    @jax.jit
    def run(params):
        outs = [den(params, x, t, c) for c in (tok, jnp.zeros_like(tok), neg)]
        return outs + [guide(params, {"caption_tokens": tok}, w, 3)(x, t, None),
                       guide(params, {"caption_tokens": tok, "negative_caption_tokens": neg}, w, 3)(x, t, None)]

    e_c, e_null, e_neg, g, g_neg = run(params)
    np.testing.assert_allclose(g, (1 + w) * e_c - w * e_null, atol=1e-5)  # Ho & Salimans 2022, Eq. 6
    np.testing.assert_allclose(g_neg, (1 + w) * e_c - w * e_neg, atol=1e-5)
    out = jax.eval_shape(lambda p: model.sampler.sample(p, jax.random.PRNGKey(6), 3, {"caption_tokens": tok}), params)
    assert out.shape == (3, 8, 8, 3)  # the sampler wiring (values: the guided eps above)


def test_caption_bad_inputs(caption_model):
    model, params = caption_model
    with pytest.raises(ValueError, match=r"caption_tokens.*must be int \[B, L\] = \[3, 5\]"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 3, {"caption_tokens": jnp.zeros((3, 4), jnp.int32)})
    with pytest.raises(ValueError, match=r"caption-conditional; pass cond=\{'caption_tokens'"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 3, {"label": jnp.zeros((3,), jnp.int32)})
    with pytest.raises(ConfigError, match=r"config\.model\.conditioning: 'caption' needs a dataset with captions"):
        make_ddpm(dict(timesteps=10, unet=UNET, conditioning="caption"), DIGITS)
    with pytest.raises(ConfigError, match=r"config\.model\.conditioning: 'caption' needs config\.model\.network='unet'"):
        make_ddpm(dict(timesteps=10, network="mlp", conditioning="caption"), CAPTIONED)
    with pytest.raises(ConfigError, match=r"config\.model\.caption_heads"):
        make_ddpm(dict(timesteps=10, unet=UNET, conditioning="caption", caption_dim=10, caption_heads=3), CAPTIONED)
    with pytest.raises(ConfigError, match=r"config\.model\.network"):
        make_ddpm(dict(timesteps=10, network="transformer"), DIGITS)


def test_ode_log_prob_of_a_zero_network_matches_the_closed_form():
    """A fresh MLP network outputs eps = 0 (zero-initialized last layer), so the PF-ODE is
    dx/dt = -beta(t) x / 2 (Song et al. 2021, Eq. 13 with s = 0): x(1) = x e^{-B/2},
    B = int_eps^1 beta, and log p(x) = log N(x e^{-B/2}; 0, I) - D B / 2 (Eq. 39)."""
    T, K, D = 100, 17, 64
    model = make_ddpm(dict(timesteps=T, network="mlp", denoiser=MLP, beta_start=1e-3, beta_end=0.2), DIGITS)
    batch = _batch(DIGITS)
    params = model.training.init(jax.random.PRNGKey(0), batch)
    key, eps = jax.random.PRNGKey(7), 1e-3
    lp = model.denoiser.ode_log_prob(params, batch, key, num_steps=20, divergence="exact", eps=eps)
    x, log_det = dequantize_for_diffusion(jax.random.split(key)[0], batch["image"], K)
    sde = VPSDE(beta_min=T * 1e-3, beta_max=T * 0.2)
    B = sde.beta_min * (1 - eps) + 0.5 * (1 - eps ** 2) * (sde.beta_max - sde.beta_min)
    z = np.asarray(x).reshape(4, D) * math.exp(-B / 2)
    expect = -0.5 * np.sum(z ** 2, 1) - 0.5 * D * math.log(2 * math.pi) - D * B / 2 + log_det
    np.testing.assert_allclose(lp, expect, rtol=2e-4)
    from gen_jax.diffusion.model import matched_ode_eps

    e = matched_ode_eps(sde.beta_min, sde.beta_max, K)  # the default start: noise var = dequantization var
    _, std = sde.marginal(jnp.zeros((1, 1)), jnp.array([e]))
    np.testing.assert_allclose(float(std[0, 0]) ** 2, (2 / (K - 1)) ** 2 / 12, rtol=1e-4)
    with pytest.raises(ValueError, match=r"beta_schedule is 'cosine'"):
        make_ddpm(dict(timesteps=T, network="mlp", denoiser=MLP, beta_schedule="cosine"),
                  DIGITS).denoiser.ode_log_prob(params, batch, key)


def test_level_posterior_is_bayes_rule_over_the_levels():
    """eps of the posterior mean over the K levels (Ho et al. 2020 Eq. 4 likelihood times the
    network's prior) against a direct numpy computation of Bayes' rule."""
    from gen_jax.diffusion.model import level_posterior_eps

    K = 5
    r = np.random.default_rng(0)
    logits = r.normal(0, 2, (3, 2, 2, 1, K)).astype(np.float32)
    x_t = r.normal(0, 1, (3, 2, 2, 1)).astype(np.float32)
    abar = np.array([0.999, 0.6, 0.01], np.float32)
    got = np.asarray(level_posterior_eps(jnp.asarray(logits), jnp.asarray(x_t), jnp.asarray(abar), K))
    levels = np.linspace(-1, 1, K)
    for b in range(3):
        a = float(abar[b])
        prior = np.exp(logits[b] - logits[b].max(-1, keepdims=True))
        prior /= prior.sum(-1, keepdims=True)
        like = np.exp(-(x_t[b][..., None] - math.sqrt(a) * levels) ** 2 / (2 * (1 - a)))
        post = prior * like / np.sum(prior * like, -1, keepdims=True)
        x0 = np.sum(post * levels, -1)
        np.testing.assert_allclose(got[b], (x_t[b] - math.sqrt(a) * x0) / math.sqrt(1 - a), rtol=2e-4, atol=2e-4)


def test_level_posterior_bundle_denoises_small_noise_exactly():
    model = make_ddpm(dict(timesteps=100, network="mlp", denoiser=MLP, level_posterior=True,
                           learn_variance=True, loss="hybrid"), DIGITS)
    batch = _batch(DIGITS)
    params = model.training.init(jax.random.PRNGKey(0), batch)  # zero last layer: a uniform prior
    x0 = 2 * batch["image"] - 1
    eps = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    a = model.denoiser.schedule.alpha_bars[0]
    out = model.denoiser.denoise(params, jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * eps, jnp.zeros((4,), jnp.int32))
    assert out.shape == (4, 8, 8, 2)
    np.testing.assert_allclose(out[..., :1], eps, atol=1e-3)  # noise 0.01 vs level spacing 0.125
    with pytest.raises(ConfigError, match=r"config\.model\.level_posterior"):
        make_ddpm(dict(timesteps=10, network="mlp", level_posterior=True, parameterization="x0"), DIGITS)


def test_fourier_features_and_dequantized_training_wiring():
    from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig

    net = MLPDenoiser(MLPDenoiserConfig(**MLP, fourier_exponents=(3, 4)), 64)
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((2, 64)), jnp.zeros((2,), jnp.int32))
    assert shapes["params"]["dense_in"]["kernel"].shape == (64 * (1 + 2 * 2), 32)  # [x, sin, cos] x 2 exponents
    with pytest.raises(ConfigError, match=r"fourier_exponents"):
        MLPDenoiserConfig(fourier_exponents=(-1,))
    model = make_ddpm(dict(timesteps=10, network="mlp", denoiser=MLP, train_dequantize=True), DIGITS)
    params = _random_params(model, DIGITS)
    batch = _batch(DIGITS)
    l1, _ = model.training.phases[0].loss(params, batch, jax.random.PRNGKey(0))
    plain = make_ddpm(dict(timesteps=10, network="mlp", denoiser=MLP), DIGITS)
    l2, _ = plain.training.phases[0].loss(params, batch, jax.random.PRNGKey(0))
    assert np.isfinite(float(l1)) and float(l1) != float(l2)  # the dequantization noise reaches x_0
