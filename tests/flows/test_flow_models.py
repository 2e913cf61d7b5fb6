"""Glow, class-conditional Glow and RealNVP bundles: exact round trips and log-dets of the
whole model, the density / bits-per-dim convention, encode / decode / interpolate,
temperature sampling, the paper-scale Glow CIFAR-10 config (shapes only), and errors.

Each model compiles two programs (init; one check program), reused across the
hypothesis examples, which vary the data and the parameters."""
import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gen_jax import distributions as dist
from gen_jax.config import ConfigError
from gen_jax.flows.glow import GlowConfig, build_glow, make_glow
from gen_jax.flows.image_flow import interpolate, standard_normal_log_prob
from gen_jax.flows.realnvp import RealNVPConfig, build_realnvp, make_realnvp
from gen_jax.distributions.bpd import bits_per_dim

Info = collections.namedtuple("Info", "image_shape num_levels num_classes")
INFO = Info((8, 8, 1), 17, 10)
B = 4
D = 64

MODELS = {  # name -> ImageFlow (the model and its raw bijection)
    "glow_cond": lambda: build_glow(GlowConfig(levels=2, steps_per_level=1, hidden=8, conditioning="label",
                                               cond_coupling=True), INFO),
    "realnvp": lambda: build_realnvp(RealNVPConfig(scales=2, checkerboard_couplings=1, channel_couplings=1,
                                                   final_couplings=2, hidden=8, num_blocks=0), INFO),
}


def _batch(seed, n=B):
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, INFO.num_levels, size=(n, 8, 8, 1))
    levels[:, 2:6, 3:5] = INFO.num_levels - 1  # some structure
    return {"image": jnp.asarray(levels / (INFO.num_levels - 1), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, size=n), jnp.int32)}


@functools.lru_cache(maxsize=None)
def _model_and_params(name):
    flow = MODELS[name]()
    return flow, jax.jit(flow.model.training.init)(jax.random.PRNGKey(0), _batch(0, 16))


@functools.lru_cache(maxsize=None)
def _program(name):
    flow, _ = _model_and_params(name)
    model = flow.model
    (phase,) = model.training.phases
    assert phase.group is None and model.likelihood.kind == "exact" and model.sampler.kind == "image"

    def run(params, batch, key):
        cond = {"label": batch["label"]}
        y = dist.dequantize(key, batch["image"], INFO.num_levels)  # what log_prob(.., key) sees
        eps, ldj = flow.forward(params, y, cond)
        y2, ildj = flow.inverse(params, eps, cond)
        f0 = lambda v: flow.forward(params, v.reshape(1, 8, 8, 1), {"label": batch["label"][:1]})[0][0]
        loss, metrics = phase.loss(params, batch, key)
        return dict(
            y=y, eps=eps, ldj=ldj, y2=y2, ildj=ildj, jac=jax.jacfwd(f0)(y[0].reshape(-1)),
            lerp=interpolate(model, params, batch["image"], batch["image"][::-1], 3, cond),
            log_prob=model.likelihood.log_prob(params, batch, key), loss=loss, bpd=metrics["bpd"],
            sample_t0=model.sampler.sample(params, key, B, cond if model.conditional else None, temperature=0.0),
            decode0=model.codec.decode(params, jnp.zeros((B, D)), cond))

    return jax.jit(run)


def _perturbed(params, seed, scale):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(p + scale * rng.normal(size=p.shape), p.dtype), params)


def _check_model(name, params, seed):
    batch = _batch(seed)
    r = jax.device_get(_program(name)(params, batch, jax.random.PRNGKey(seed)))
    # inverse(forward(y)) = y, log-dets opposite, log-det = slogdet(jacfwd) (64 x 64).
    np.testing.assert_allclose(r["y2"], r["y"], atol=1e-4)
    np.testing.assert_allclose(r["ildj"], -r["ldj"], rtol=1e-5, atol=1e-3)
    sign, dense = np.linalg.slogdet(np.asarray(r["jac"], np.float64))
    assert sign != 0 and r["eps"].shape == (B, D)
    np.testing.assert_allclose(r["ldj"][0], dense, rtol=1e-4)
    # log_prob = log N(f(y); 0, I) + log|det df/dy| of the dequantized y; the loss is its bits/dim.
    np.testing.assert_allclose(r["log_prob"], standard_normal_log_prob(r["eps"]) + r["ldj"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(r["bpd"], bits_per_dim(r["log_prob"], D, INFO.num_levels), rtol=1e-5)
    np.testing.assert_allclose(r["loss"], np.mean(r["bpd"]), rtol=1e-5)
    # encode -> decode recovers the images exactly: the interpolation ends at the two images.
    assert r["lerp"].shape == (B, 3, 8, 8, 1)
    np.testing.assert_array_equal(r["lerp"][:, 0], batch["image"])
    np.testing.assert_array_equal(r["lerp"][:, -1], batch["image"][::-1])
    # Samples lie on the levels; temperature 0 decodes the latent mode eps = 0.
    s = r["sample_t0"]
    assert s.shape == (B, 8, 8, 1) and s.dtype == np.float32 and s.min() >= 0 and s.max() <= 1
    np.testing.assert_allclose(s * 16, np.round(s * 16), atol=1e-5)
    np.testing.assert_array_equal(s, r["decode0"])
    return r


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=4, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 16), scale=st.sampled_from([0.02, 0.05]))
def test_model_is_an_exact_bijection_with_the_stated_density(name, seed, scale):
    _, params0 = _model_and_params(name)
    _check_model(name, _perturbed(params0, seed, scale), seed)


def test_fresh_glow_zero_inits_and_ignores_the_label():
    _, params = _model_and_params("glow_cond")
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    zero_init = [k for k in flat if "ZeroConv" in k or "ZeroDense" in k or "'prior'" in k]
    assert len(zero_init) >= 10 and all(np.all(np.asarray(flat[k]) == 0) for k in zero_init)
    r = _check_model("glow_cond", params, 1)
    # Zero-init label maps: a fresh conditional model gives every label the same density.
    batch = _batch(1)
    r2 = jax.device_get(_program("glow_cond")(params, dict(batch, label=(batch["label"] + 1) % 10),
                                              jax.random.PRNGKey(1)))
    np.testing.assert_allclose(r["log_prob"], r2["log_prob"], rtol=1e-6)


def test_glow_cifar10_config_is_paper_scale():
    from experiments.configs.glow_cifar10 import get_config

    c = get_config()
    assert c.dataset.name == "cifar10" and c.model.name == "glow"
    assert (c.model.levels, c.model.steps_per_level, c.model.hidden) == (3, 32, 512)
    model = make_glow({k: v for k, v in c.model.items() if k != "name"}, Info((32, 32, 3), 256, 10))
    batch = {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)}
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert count == 44_055_408  # the paper's CIFAR-10 Glow has about 44.0M


def test_bad_inputs_and_configs_raise_clear_errors():
    flow, params = _model_and_params("glow_cond")
    model = flow.model
    assert model.conditioning.keys == ("label",) and model.conditioning.num_classes == 10
    bad = np.asarray(_batch(0)["image"]).copy()
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"log_prob batch\['image'\]: 1 non-finite.*\(4, 8, 8, 1\)"):
        model.likelihood.log_prob(params, {"image": jnp.asarray(bad), "label": jnp.zeros(4, jnp.int32)}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"encode image must be \[B, 8, 8, 1\], got \(2, 8, 8\)"):
        model.codec.encode(params, jnp.zeros((2, 8, 8)), {"label": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ValueError, match=r"sample: the model is class-conditional"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"decode: latents must be \[B, 64\]"):
        model.codec.decode(params, jnp.zeros((2, 63)), {"label": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ConfigError, match=r"config.model.levels: 4 squeeze\(s\) need H and W divisible by 16, "
                                          r"got image shape \(8, 8, 1\)"):
        make_glow({"levels": 4}, INFO)
    with pytest.raises(ConfigError, match=r"config.model.scales: .*\(12, 12, 3\)"):
        make_realnvp({"scales": 4}, Info((12, 12, 3), 256, 0))
    with pytest.raises(ConfigError, match="config.model.cond_coupling"):
        make_glow({"cond_coupling": True}, INFO)
    with pytest.raises(ConfigError, match="config.model.coupling"):
        make_glow({"coupling": "spline"}, INFO)
    with pytest.raises(ConfigError, match="config.model.steps"):
        make_glow({"steps": 3}, INFO)
    with pytest.raises(ConfigError, match="config.model.conditioning"):
        make_glow({"conditioning": "label"}, Info((8, 8, 1), 17, 0))


def test_maf_bundle_on_images_by_shape():
    """The registered MAF also serves image datasets (flattened, logit pre-processing):
    shapes only, by eval_shape."""
    from gen_jax.flows.maf import MAFConfig, make_maf

    model = make_maf(MAFConfig(num_layers=2, hidden=(16,)), INFO)
    batch = {"image": jax.ShapeDtypeStruct((3, 8, 8, 1), jnp.float32)}
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    assert jax.eval_shape(model.likelihood.log_prob, params, batch, jax.random.PRNGKey(1)).shape == (3,)
    out = jax.eval_shape(lambda p: model.sampler.sample(p, jax.random.PRNGKey(2), 5), params)
    assert out.shape == (5, 8, 8, 1) and model.likelihood.kind == "exact"
