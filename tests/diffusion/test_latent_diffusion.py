"""Latent diffusion over a frozen VAE stage one: a tiny vae_digits (hidden (32,), Z = 4)
trained a few steps by the real train loop and restored by the experiment edge
(experiments.common.load_stage) as a gen_jax.model.Stage, then the ldm_digits config (T = 50,
a small MLP denoiser) trained and checked: frozen stage one, the loss's encoding, latent
statistics, samples on the levels, scan vs loop sampler, and the build errors (of
load_stage and of the factory's stage checks)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info, load_split
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion.latent import build_latent_diffusion, latent_stats, make_latent_diffusion
from gen_jax.model import full_params, label_conditioning
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig
from gen_jax.train.loop import train

# train.steps is one more than the fixtures run (stop_after), which skips the end-of-run
# sample grid and curves (compile time); the checkpoint at ckpt_every is what is restored.
STAGE1 = {"model.hidden": "(32,)", "model.latent_dim": "4", "train.steps": "31",
          "train.batch_size": "64", "train.log_every": "30", "train.ckpt_every": "30",
          "train.grid_size": "4", "mesh.num_devices": "1"}
STAGE1_ARCH = ("model.hidden=(32,)", "model.latent_dim=4")
T = 50


@pytest.fixture(scope="module")
def stage1_dir(tmp_path_factory, digits_data_dir):
    exp = common.load_experiment("vae_digits", dict(STAGE1, **{"dataset.data_dir": digits_data_dir}))
    info, model, mesh = common.setup(exp)
    d = str(tmp_path_factory.mktemp("vae"))
    train(exp, model, d, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh,
          stop_after=30)
    return d


def _ldm_overrides(stage1_dir, data_dir, **kw):
    o = {"stages.stage1.overrides": repr(STAGE1_ARCH), "stages.stage1.workdir": stage1_dir,
         "model.timesteps": str(T), "model.denoiser.width": "32", "model.denoiser.num_blocks": "2",
         "model.denoiser.time_dim": "16", "train.steps": "5", "train.batch_size": "32",
         "train.log_every": "4", "train.ckpt_every": "4", "train.grid_size": "4",
         "mesh.num_devices": "1", "dataset.data_dir": data_dir}
    o.update(kw)
    return o


@pytest.fixture(scope="module")
def ldm(stage1_dir, digits_data_dir, tmp_path_factory):
    """The ldm_digits config on the tiny VAE (restored by common.load_stage), trained 4 steps
    by the real loop."""
    exp = common.load_experiment("ldm_digits", _ldm_overrides(stage1_dir, digits_data_dir))
    info, model, mesh = common.setup(exp)  # the edge: load_stage, then the registry's factory
    stage = common.load_stage("stage1", exp.stages["stage1"], info)
    parts = build_latent_diffusion(exp.model, info, {"stage1": stage})
    d = str(tmp_path_factory.mktemp("ldm"))
    res = train(exp, model, d, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh,
                stop_after=4)
    params = jax.device_get(res.state.params)
    # Random denoiser weights around the trained ones: the zero-initialized output layer
    # would otherwise hide the wiring under test.
    r = np.random.default_rng(0)
    noisy = dict(params, denoiser=jax.tree.map(
        lambda a: np.asarray(a + r.normal(0.0, 0.1, a.shape), a.dtype), params["denoiser"]))
    return dict(exp=exp, info=info, model=model, parts=parts, stage=stage, workdir=d, res=res,
                params=params, full=full_params(model, params), noisy=full_params(model, noisy))


def _train_images(data_dir, n=None):
    x = load_split("digits", "train", data_dir)["image"].astype(np.float32) / 16.0
    return x if n is None else x[:n]


def test_train_step_updates_only_the_denoiser(ldm):
    model, params, stage = ldm["model"], ldm["params"], ldm["stage"]
    assert [(p.group, p.loss is not None) for p in model.training.phases] == [("denoiser", True)]
    assert set(ldm["res"].state.opt_state) == {"denoiser"}
    assert set(params) == {"denoiser"}  # the trained params: the denoiser only
    frozen = model.training.frozen
    assert set(frozen) == {"stage1", "latent_stats"}
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b), frozen["stage1"], stage.params)
    assert all(jax.tree.leaves(same))  # stage one is the restored VAE, bit for bit
    full = ldm["full"]
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), b),
                                            full["stage1"], stage.params)))
    assert stage.step == 30 and stage.model.codec.posterior is not None
    # The model the edge built (common.setup) and the one built here on the same stage agree.
    for k in ("mean", "std"):
        np.testing.assert_array_equal(frozen["latent_stats"][k], ldm["parts"].model.training.frozen["latent_stats"][k])
    assert np.any(params["denoiser"]["params"]["dense_out"]["kernel"] != 0)  # zero init moved
    # The checkpoint carries the trained denoiser; stage one and the latent statistics are
    # frozen groups (restored from the stage's own workdir, never checkpointed again).
    state, _ = common.restore_state(ldm["exp"], model, ldm["workdir"], ldm["info"])
    assert set(state.params) == {"denoiser"}
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_loss_encodes_with_the_frozen_vae(ldm, digits_data_dir):
    model, p, stage = ldm["model"], ldm["noisy"], ldm["stage"]
    batch = {"image": jnp.asarray(_train_images(digits_data_dir, 16))}
    key = jax.random.PRNGKey(3)
    net = MLPDenoiser(MLPDenoiserConfig(width=32, num_blocks=2, time_dim=16), 4)
    loss_fn = model.training.phases[0].loss

    @jax.jit
    def run(p):
        (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, key)
        # Independent reference: the VAE's encoder mean (its codec's posterior),
        # standardized, then L_simple (Ho et al. Eq. 14) with the key of the documented split.
        mu, _ = stage.model.codec.posterior(p["stage1"], batch["image"])
        z0 = (mu - p["latent_stats"]["mean"]) / p["latent_stats"]["std"]
        fn = lambda z, t, _: net.apply(p["denoiser"], z, t)
        ref = gd.simple_loss(fn, model.denoiser.schedule, z0, jax.random.split(key, 3)[2])
        return loss, m, grads, jnp.mean(ref["loss"])

    loss, m, grads, ref = run(p)
    assert np.isfinite(float(loss)) and m["mse"].shape == (16,)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["stage1"]))
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(grads["latent_stats"]))
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(grads["denoiser"]))) > 0


def test_latent_statistics_standardize_the_train_means(ldm, digits_data_dir):
    parts, p, stage = ldm["parts"], ldm["full"], ldm["stage"]
    x = _train_images(digits_data_dir)
    z = np.asarray(jax.jit(parts.encode_latents)(p, x), np.float64)  # [N, 4]
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    # latent='sample': the draws of q(z|x) standardize too (law of total variance), Monte
    # Carlo over the N = 1437 train images: s.e. of a variance ~ sqrt(2 / N) = 0.037.
    m, s = latent_stats(stage, 17, "sample")
    mu, log_var = jax.jit(stage.model.codec.posterior)(stage.params, x)
    draws = np.asarray(mu) + np.exp(0.5 * np.asarray(log_var)) * np.random.default_rng(1).normal(size=mu.shape)
    np.testing.assert_allclose(((draws - m) / s).var(0), 1.0, atol=0.15)
    assert np.all(s >= np.asarray(p["latent_stats"]["std"]) - 1e-6)


def test_samples_on_the_levels_and_scan_equals_loop(ldm):
    model, parts, p = ldm["model"], ldm["parts"], ldm["noisy"]
    make = model.denoiser.make_sampler
    key = jax.random.PRNGKey(5)

    codec = ldm["stage"].model.codec

    @jax.jit
    def run(p):
        x, z = model.sampler.sample(p, key, 6), make("ddpm", return_latents=True)(p, key, 6)
        # sample = decode_latents of the scan's latents with the second half of the key, which
        # is the stage-one codec's decode (a draw of p(x | z)) at s z + m.
        x_dec = parts.decode_latents(p, z, jax.random.split(key)[1])
        st = p["latent_stats"]
        x_codec = codec.decode(p["stage1"], z * st["std"] + st["mean"], None, jax.random.split(key)[1])
        return x, z, x_dec, x_codec, make("ddim", 10, 0.5)(p, key, 6)

    x, z_scan, x_dec, x_codec, x_ddim = run(p)
    for img in (x, x_ddim):
        img = np.asarray(img)
        assert img.shape == (6, 8, 8, 1) and img.dtype == np.float32
        np.testing.assert_allclose(img * 16, np.round(img * 16), atol=1e-5)  # the 17 levels
        assert img.min() >= 0.0 and img.max() <= 1.0
    np.testing.assert_array_equal(x, x_dec)
    np.testing.assert_array_equal(x, x_codec)
    z_loop = make("ddpm", return_latents=True, use_scan=False)(p, key, 6)
    assert z_scan.shape == (6, 4) and np.std(np.asarray(z_scan)) > 0.1
    np.testing.assert_allclose(z_scan, z_loop, atol=1e-5)


def test_build_errors(stage1_dir, digits_data_dir, tmp_path):
    """Stage-one restore errors (experiments.common.load_stage, through common.setup) and
    config errors (the factory)."""
    def build(**kw):
        exp = common.load_experiment("ldm_digits", _ldm_overrides(stage1_dir, digits_data_dir, **kw))
        return common.setup(exp)

    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir.*no checkpoint directory"):
        build(**{"stages.stage1.workdir": str(tmp_path / "missing")})
    # The stage-one config without the overrides describes latent_dim 16; the checkpoint has 4.
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir.*another architecture"):
        build(**{"stages.stage1.overrides": "()"})
    with pytest.raises(ConfigError, match=r"config\.model\.latent: must be one of"):
        build(**{"model.latent": "median"})
    with pytest.raises(ConfigError, match=r"config\.model\.denoiser\.width"):
        build(**{"model.denoiser.width": "0"})
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config"):
        build(**{"stages.stage1.config": "no_such_config"})
    # The same restore error straight from load_stage, with the hint that trains stage one.
    exp = common.load_experiment("ldm_digits", _ldm_overrides(stage1_dir, digits_data_dir,
                                                              **{"stages.stage1.workdir": str(tmp_path / "w")}))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir.*train stage one first"):
        common.load_stage("stage1", exp.stages["stage1"], get_info("digits", digits_data_dir))


def test_factory_checks_the_stage(ldm):
    """The factory accepts only an unconditional Gaussian codec of the same dataset; errors
    name config.stages.stage1.config (config.stages.stage1 when there is no stage one)."""
    exp, info, stage = ldm["exp"], ldm["info"], ldm["stage"]
    build = lambda s: make_latent_diffusion(exp.model, info, {"stage1": s})
    no_posterior = dataclasses.replace(stage.model, codec=stage.model.codec._replace(posterior=None))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config: .*Gaussian encoder"):
        build(stage._replace(model=no_posterior))
    conditional = dataclasses.replace(stage.model, conditioning=label_conditioning(10))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config: .*must be unconditional"):
        build(stage._replace(model=conditional))
    other = dataclasses.replace(stage.config, dataset=dataclasses.replace(stage.config.dataset, name="shapes"))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config: .*dataset 'shapes'"):
        build(stage._replace(config=other))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1: latent diffusion needs a trained stage one"):
        make_latent_diffusion(exp.model, info, {})
