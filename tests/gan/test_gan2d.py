"""MLP GANs on the 2-D mixtures (PacGAN's benchmark) through the real pipeline, trainer and
sample CLI: packing against a numpy reference, refusals, points in data coordinates."""
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, sample
from gen_jax.config import ConfigError
from gen_jax.data import points2d
from gen_jax.gan.model import pack_samples
from gen_jax.train.loop import eval_params, train

FAST = {"train.steps": "4", "train.batch_size": "16", "train.log_every": "2", "train.ckpt_every": "4",
        "model.g_hidden": "(16, 16)", "model.d_hidden": "(16, 16)", "eval.rejection_steps": "0"}


def test_pack_concatenates_consecutive_examples():
    x = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)
    want = np.stack([np.concatenate(x[i:i + 3]) for i in (0, 3)])
    np.testing.assert_array_equal(np.asarray(pack_samples(jnp.asarray(x), 3)), want)
    img = np.random.default_rng(0).normal(size=(4, 2, 2, 3)).astype(np.float32)
    got = np.asarray(pack_samples(jnp.asarray(img), 2))
    np.testing.assert_array_equal(got, np.concatenate([img[0::2], img[1::2]], axis=-1))
    with pytest.raises(ValueError, match="config.model.pack=4.*not divisible"):
        pack_samples(jnp.zeros((6, 2)), 4)


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory, digits_data_dir):
    wd = str(tmp_path_factory.mktemp("ring"))
    exp = common.load_experiment("gan_ring2d", FAST)
    info, model, mesh = common.setup(exp)
    result = train(exp, model, wd, common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
    return wd, exp, info, model, result


def test_sampler_returns_points_in_data_coordinates(ring_run):
    _, exp, info, model, result = ring_run
    assert model.sampler.kind == "points" and exp.model.pack == 2
    import jax

    x = np.asarray(model.sampler.sample(eval_params(result.state, model), jax.random.PRNGKey(0), 50))
    assert x.shape == (50, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))


def test_sample_cli_writes_float32_points(ring_run, tmp_path):
    wd = ring_run[0]
    out = str(tmp_path / "points.npy")
    argv = ["--config", "gan_ring2d", "--workdir", wd, "--num", "30", "--out", out] + \
        [f"--config.{k}={v}" for k, v in FAST.items()]
    assert sample.main(argv) == 0
    x = np.load(out)
    assert x.shape == (30, 2) and x.dtype == np.float32


def test_sample_cli_rejection_sampling(ring_run, tmp_path, capsys):
    """``eval.rejection_steps > 0``: the CLI draws through DRS (acceptance printed), same format."""
    out = str(tmp_path / "drs.npy")
    argv = ["--config", "gan_ring2d", "--workdir", ring_run[0], "--num", "30", "--out", out] + \
        [f"--config.{k}={v}" for k, v in {**FAST, "eval.rejection_steps": "50"}.items()]
    assert sample.main(argv) == 0
    assert "DRS (50 discriminator steps): acceptance" in capsys.readouterr().out
    x = np.load(out)
    assert x.shape == (30, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))


def test_rejection_refused_for_image_samplers():
    from types import SimpleNamespace

    from experiments.rejection import check_rejection

    exp = SimpleNamespace(eval=SimpleNamespace(rejection_steps=10))
    with pytest.raises(ValueError, match="config.eval.rejection_steps=10.*points samplers"):
        check_rejection(exp, SimpleNamespace(name="gan", sampler=SimpleNamespace(kind="image")))
    with pytest.raises(ConfigError, match="rejection_steps"):
        common.load_experiment("gan_ring2d", {"eval.rejection_steps": "-1"})


def test_refusals_name_the_field(digits_data_dir):
    with pytest.raises(ConfigError, match="config.model.arch.*unconditional"):
        common.setup(common.load_experiment("gan_ring2d", {**FAST, "model.conditioning": "label", "model.pack": "1"}))
    exp = common.load_experiment("gan_ring2d", {**FAST, "train.batch_size": "24", "model.pack": "16"})
    info, model, mesh = common.setup(exp)
    with pytest.raises(ValueError, match="config.model.pack=16"):
        train(exp, model, "/tmp/never_used_ring", common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
    assert points2d.means("grid2d").shape == (25, 2)
