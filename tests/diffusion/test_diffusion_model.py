"""The DDPM (gen_jax.diffusion.model): loss, the VLB likelihood, samplers and classifier-free
guidance wired to the U-Net, on a tiny U-Net and a short schedule (T = 20)."""
import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.diffusion.model import make_ddpm

Info = collections.namedtuple("Info", "image_shape num_levels num_classes")
INFO = Info((8, 8, 1), 17, 10)
UNET = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
            num_groups=4, num_heads=1)


def _cfg(**kw):
    base = dict(timesteps=20, vlb_chunk=10, unet=UNET)
    base.update(kw)
    return base


def _batch(n=4, seed=0):
    r = np.random.default_rng(seed)
    return {"image": jnp.asarray(r.integers(0, 17, (n, 8, 8, 1)) / 16, jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32)}


def _random_params(model, seed=1, scale=0.05):
    """Random params of the model's shapes (``eval_shape`` of init: no compiled init, whose
    random-number code dominates compile time here). Random rather than the real init, whose
    zero output convolution would hide the wiring under test."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), _batch())
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def cond_model():
    model = make_ddpm(_cfg(conditioning="label", cond_drop_prob=0.1, guidance_scale=2.0), INFO)
    return model, _random_params(model)


def test_loss_log_prob_and_sample(cond_model):
    model, params = cond_model
    batch = _batch()
    loss, metrics = jax.jit(model.training.phases[0].loss)(params, batch, jax.random.PRNGKey(2))
    assert np.isfinite(float(loss)) and metrics["mse"].shape == (4,)
    terms, lp = jax.jit(lambda p, b, k: (model.denoiser.vlb_terms(p, b, k), model.likelihood.log_prob(p, b, k)))(
        params, batch, jax.random.PRNGKey(3))
    # log_prob = -(L_T + sum_t L_t) + D log K (the model's density convention).
    np.testing.assert_allclose(lp, -terms["total"] + 64 * math.log(17), rtol=1e-6)
    np.testing.assert_allclose(terms["total"], terms["prior"] + terms["vb"].sum(1), rtol=1e-6)
    assert model.likelihood.kind == "vlb" and model.likelihood.unit == "dim"
    assert model.sampler.kind == "image" and model.conditioning.keys == ("label",)
    x = jax.jit(model.sampler.sample, static_argnums=2)(params, jax.random.PRNGKey(4), 3, {"label": jnp.arange(3)})
    assert x.shape == (3, 8, 8, 1) and x.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x) * 16, np.round(np.asarray(x) * 16), atol=1e-5)  # on the levels


def test_classifier_free_guidance_formula(cond_model):
    model, params = cond_model
    den, guide = model.denoiser.denoise, model.denoiser.guided
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 8, 8, 1))
    t = jnp.array([3, 10, 19], jnp.int32)
    lab, neg = jnp.array([1, 2, 3]), jnp.array([7, 7, 0])
    w = 2.0

    @jax.jit
    def run(params):
        outs = [den(params, x, t, l) for l in (lab, jnp.full((3,), 10), neg)]
        return outs + [guide(params, {"label": lab}, w, 3)(x, t, None),
                       guide(params, {"label": lab, "negative_label": neg}, w, 3)(x, t, None)]

    e_c, e_null, e_neg, guided, guided_neg = run(params)
    np.testing.assert_allclose(guided, (1 + w) * e_c - w * e_null, atol=1e-5)  # Ho & Salimans Eq. 6
    np.testing.assert_allclose(guided_neg, (1 + w) * e_c - w * e_neg, atol=1e-5)
    assert not np.allclose(e_c, e_null, atol=1e-4)  # the label reaches the network


def test_ddim_scan_equals_loop(cond_model):
    """(DDIM eta = 1 on the full schedule = DDPM is checked in tests/diffusion/test_samplers.py.)"""
    model, params = cond_model
    cond = {"label": jnp.arange(2)}
    key = jax.random.PRNGKey(6)
    scan = model.denoiser.make_sampler("ddim", 5, 0.0)(params, key, 2, cond)
    loop = model.denoiser.make_sampler("ddim", 5, 0.0, use_scan=False)(params, key, 2, cond)
    np.testing.assert_allclose(scan, loop, atol=1e-6)


def test_bad_configs_and_inputs(cond_model):
    with pytest.raises(ConfigError, match="config.model.guidance_scale"):
        make_ddpm(_cfg(guidance_scale=1.0), INFO)  # no conditional model
    with pytest.raises(ConfigError, match="config.model.guidance_scale"):
        make_ddpm(_cfg(conditioning="label", guidance_scale=1.0), INFO)  # no null-label training
    with pytest.raises(ConfigError, match="sample_steps"):
        make_ddpm(_cfg(sampler="ddim", sample_steps=50), INFO)  # S > T
    with pytest.raises(ConfigError, match="beta_schedule"):
        make_ddpm(_cfg(beta_schedule="quadratic"), INFO)
    with pytest.raises(ConfigError, match="timesteps"):
        make_ddpm(_cfg(timesteps=0), INFO)
    with pytest.raises(ConfigError, match="not divisible"):
        make_ddpm(_cfg(), Info((7, 7, 1), 17, 10))
    with pytest.raises(ConfigError, match="conditioning"):
        make_ddpm(_cfg(conditioning="label"), Info((8, 8, 1), 17, 0))
    model, params = cond_model
    with pytest.raises(ValueError, match=r"cond\['label'\] must be \[2\]"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"label": jnp.arange(3)})
    with pytest.raises(ValueError, match="class-conditional"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, None)
    with pytest.raises(ValueError, match="steps S=30"):
        model.denoiser.make_sampler("ddim", 30)
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        model.training.phases[0].loss(params, {"image": jnp.zeros((2, 8, 8, 3)),
                                               "label": jnp.zeros((2,), jnp.int32)}, jax.random.PRNGKey(0))
