"""The DiT as the network of the DDPM bundle and of latent diffusion (network='dit'): the
label reaches the adaLN conditioning vector (null class included), learned variances are the
2C outputs and only the mean channels are guided (Ho & Salimans 2022, Eq. 6), a few train steps
reduce the loss, sampling and the bound run unchanged, and the config errors name
config.model.dit.<field> / config.model.latent_grid."""
import collections
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gen_jax.config import ConfigError
from gen_jax.diffusion.latent import build_latent_diffusion
from gen_jax.diffusion.model import make_ddpm
from gen_jax.model import Codec, GenerativeModel, Stage, loss_training

Info = collections.namedtuple("Info", "image_shape num_levels num_classes")
INFO = Info((8, 8, 1), 17, 10)
DIT = dict(patch_size=2, width=32, depth=2, num_heads=2, mlp_ratio=2.0, time_dim=16)


def _cfg(**kw):
    base = dict(timesteps=20, vlb_chunk=10, network="dit", dit=DIT, conditioning="label", cond_drop_prob=0.1,
                guidance_scale=1.0, loss="hybrid", learn_variance=True)
    base.update(kw)
    return base


def _batch(n=8, seed=0):
    r = np.random.default_rng(seed)
    return {"image": jnp.asarray(r.integers(0, 17, (n, 8, 8, 1)) / 16, jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32)}


def _perturbed(params, seed=1, scale=0.1):
    """The params with noise added everywhere (the zero-initialized adaLN and output layers
    would otherwise hide the conditioning)."""
    r = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + jnp.asarray(r.normal(0.0, scale, p.shape), p.dtype), params)


@pytest.fixture(scope="module")
def dit_model():
    model = make_ddpm(_cfg(), INFO)
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), _batch())
    return model, params


def test_dit_is_the_network_with_the_label_in_its_conditioning(dit_model):
    model, params = dit_model
    p = params["params"]
    assert p["label_embed"]["embedding"].shape == (11, 32)  # 10 classes + the null class
    assert p["final"]["linear"]["kernel"].shape == (32, 2 * 2 * 2)  # p^2 * 2C: learned variances
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))
    t = jnp.array([0, 7, 19], jnp.int32)
    den = jax.jit(model.denoiser.denoise)
    out = den(params, x, t, jnp.array([1, 2, 10]))
    assert out.shape == (3, 8, 8, 2) and not np.any(np.asarray(out))  # zero at init
    noisy = _perturbed(params)
    a, b = den(noisy, x, t, jnp.array([1, 2, 10])), den(noisy, x, t, jnp.array([1, 5, 3]))
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(a[1:] - b[1:])).reshape(2, -1).max(1).min() > 1e-4


def test_guidance_guides_only_the_mean_channels(dit_model):
    model, params = dit_model
    noisy = _perturbed(params)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 8, 8, 1))
    t = jnp.array([3, 10, 19], jnp.int32)
    lab, w = jnp.array([1, 2, 3]), 2.0

    @jax.jit
    def run(params):
        den = model.denoiser.denoise
        return (den(params, x, t, lab), den(params, x, t, jnp.full((3,), 10)),
                model.denoiser.guided(params, {"label": lab}, w, 3)(x, t, None))

    e_c, e_null, g = run(noisy)
    np.testing.assert_allclose(g[..., :1], (1 + w) * e_c[..., :1] - w * e_null[..., :1], atol=1e-5)
    np.testing.assert_allclose(g[..., 1:], e_c[..., 1:], atol=1e-6)  # the variance channel: conditional


def test_sampling_and_the_bound_run_unchanged(dit_model):
    model, params = dit_model
    noisy = _perturbed(params, scale=0.02)
    x = jax.jit(model.sampler.sample, static_argnums=2)(noisy, jax.random.PRNGKey(3), 3, {"label": jnp.arange(3)})
    assert x.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(np.asarray(x) * 16, np.round(np.asarray(x) * 16), atol=1e-5)  # on the levels
    lp = jax.jit(model.likelihood.log_prob)(noisy, _batch(4), jax.random.PRNGKey(4))
    assert lp.shape == (4,) and np.all(np.isfinite(np.asarray(lp)))


def test_a_few_train_steps_reduce_the_loss():
    model = make_ddpm(_cfg(timesteps=1000, dit=dict(DIT, depth=1), conditioning="none", cond_drop_prob=0.0, guidance_scale=0.0,
                           loss="simple", learn_variance=False), INFO)  # T = 1000: eps is learnable at large t
    batch = _batch(16)
    loss = model.training.phases[0].loss
    opt = optax.adam(3e-3)
    eval_key = jax.random.PRNGKey(7)  # the same (t, eps) draws before and after

    @jax.jit
    def run(key):
        params = model.training.init(key, batch)

        def step(carry, k):
            p, s = carry
            g = jax.grad(lambda p: loss(p, batch, k)[0])(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (trained, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 30))
        return loss(params, batch, eval_key)[0], loss(trained, batch, eval_key)[0]

    before, after = (float(v) for v in run(jax.random.PRNGKey(5)))
    assert abs(before - 1.0) < 0.3  # zero output at init: mse = E[eps^2] = 1
    assert after < 0.6 * before, (before, after)


def test_config_errors_name_the_dit_field():
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.patch_size=3"):
        make_ddpm(_cfg(dit=dict(DIT, patch_size=3)), INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.num_heads: must divide width=32"):
        make_ddpm(_cfg(dit=dict(DIT, num_heads=3)), INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.network"):
        make_ddpm(_cfg(conditioning="caption", cond_drop_prob=0.0, guidance_scale=0.0),
                  types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, vocab_size=12, caption_len=5))
    with pytest.raises(ConfigError, match=r"config\.model\.network: must be one of"):
        make_ddpm(_cfg(network="vit"), INFO)


# ----------------------------------------------------------------------------------------
# Latent diffusion with the DiT over a stand-in stage one (a fixed linear Gaussian codec).
# ----------------------------------------------------------------------------------------


def _linear_stage(data_dir: str, z_dim: int = 4) -> Stage:
    """A stand-in for a trained VAE: posterior mean ``x W``, log-variance -2, decoder ``z W^T``
    on the levels (only what latent diffusion uses of a stage: its codec)."""
    w = np.random.default_rng(0).normal(0.0, 0.3, (64, z_dim)).astype(np.float32)

    def posterior(params, x, cond=None):
        mu = x.reshape(x.shape[0], -1) @ params["w"]
        return mu, jnp.full_like(mu, -2.0)

    def decode(params, z, cond=None, key=None):
        return jnp.round(jnp.clip(z @ params["w"].T, 0.0, 1.0).reshape(-1, 8, 8, 1) * 16) / 16

    model = GenerativeModel(name="linear_vae", family="latent",
                            training=loss_training(lambda k, b: {"w": w}, lambda p, b, k: (0.0, {})),
                            codec=Codec(lambda p, x, c=None: posterior(p, x)[0], decode, posterior=posterior))
    config = types.SimpleNamespace(dataset=types.SimpleNamespace(name="digits", data_dir=data_dir))
    return Stage(model=model, params={"w": w}, config=config, workdir="", step=0)


def test_latent_diffusion_with_the_dit(digits_data_dir):
    stages = {"stage1": _linear_stage(digits_data_dir)}
    cfg = dict(timesteps=20, network="dit", latent_grid=(2, 2, 1), conditioning="label", cond_drop_prob=0.1,
               dit=dict(DIT, patch_size=1))
    parts = build_latent_diffusion(cfg, INFO, stages)
    model = parts.model
    params = {**jax.jit(model.training.init)(jax.random.PRNGKey(0), _batch(4)), **model.training.frozen}
    assert params["denoiser"]["params"]["patch_embed"]["kernel"].shape == (1, 32)  # one latent value per token
    loss, _ = jax.jit(model.training.phases[0].loss)(params, _batch(4), jax.random.PRNGKey(1))
    assert np.isfinite(float(loss))
    z_t = jax.random.normal(jax.random.PRNGKey(3), (3, 4))
    out = jax.jit(model.denoiser.denoise)(params, z_t, jnp.array([0, 5, 19]), jnp.array([0, 1, 10]))
    assert out.shape == (3, 4) and not np.any(np.asarray(out))  # [B, Z] back from the grid; zero at init
    z = jax.jit(model.denoiser.make_sampler(return_latents=True), static_argnums=2)(
        params, jax.random.PRNGKey(2), 3, {"label": jnp.arange(3)})
    assert z.shape == (3, 4) and np.all(np.isfinite(np.asarray(z)))
    with pytest.raises(ConfigError, match=r"config\.model\.latent_grid: .*Z=4"):
        build_latent_diffusion(dict(cfg, latent_grid=(2, 3, 1)), INFO, stages)
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.patch_size=2"):
        build_latent_diffusion(dict(cfg, latent_grid=(1, 4, 1), dit=DIT), INFO, stages)
