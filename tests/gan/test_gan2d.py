"""The MLP GAN on 2-D points (arch='mlp') and PacGAN packing: the real trainer, samples in data
coordinates, the sample CLI, and refusals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, sample
from experiments import train as train_cli
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info
from gen_jax.gan.model import make_gan, pack_samples
from gen_jax.train.loop import eval_params, train

SMALL = ["--config.model.g_hidden=(16, 16)", "--config.model.d_hidden=(16, 16)", "--config.train.batch_size=8",
         "--config.mesh.num_devices=1"]


def test_pack_concatenates_consecutive_examples():
    x = jnp.arange(12.0).reshape(6, 2)
    np.testing.assert_array_equal(pack_samples(x, 3), np.arange(12.0).reshape(2, 6))
    img = jnp.arange(4 * 2 * 2 * 3.0).reshape(4, 2, 2, 3)
    p = np.asarray(pack_samples(img, 2))
    assert p.shape == (2, 2, 2, 6)
    np.testing.assert_array_equal(p[1, :, :, 3:], img[3])
    with pytest.raises(ValueError, match=r"config\.model\.pack=4.*not divisible"):
        pack_samples(x, 4)


def test_bad_configs_are_refused():
    info = get_info("ring2d")
    exp = common.load_experiment("gan_ring2d")
    with pytest.raises(ConfigError, match=r"config\.model\.pack"):
        make_gan({**exp.model.to_dict(), "pack": 2, "conditioning": "label"}, info)
    with pytest.raises(ConfigError, match=r"config\.model\.arch"):
        make_gan({**exp.model.to_dict(), "pack": 1}, get_info("digits"))
    model = make_gan(exp.model, info)
    with pytest.raises(ValueError, match="not divisible by the pack size 2"):
        model.training.init(jax.random.PRNGKey(0), {"image": jnp.full((5, 1, 1, 2), 0.5)})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ring") / "wd"
    assert train_cli.main(["--config", "gan_ring2d", "--workdir", str(wd), "--no_progress",
                           "--config.train.steps=3", "--config.train.ckpt_every=3"] + SMALL) == 0
    return wd


def test_trains_and_samples_points_in_data_coordinates(trained, tmp_path, capsys):
    out = tmp_path / "pts.npy"
    assert sample.main(["--config", "gan_ring2d", "--workdir", str(trained), "--num", "10", "--out", str(out)]
                       + SMALL) == 0
    x = np.load(out)
    assert x.shape == (10, 2) and x.dtype == np.float32
    # the sampler is the generator on N(0, I) draws, in data coordinates (no [0, 1] map)
    exp = common.load_experiment("gan_ring2d", {"model.g_hidden": "(16, 16)", "model.d_hidden": "(16, 16)",
                                                "train.batch_size": "8", "mesh.num_devices": "1"})
    info, model, _ = common.setup(exp)
    state, _ = common.restore_state(exp, model, str(trained), info)
    params = eval_params(state, model)
    z = jax.random.normal(jax.random.PRNGKey(1), (4, exp.model.z_dim))
    g = model.sampler.sample(params, jax.random.PRNGKey(1), 4)
    ref = make_gan(exp.model, info)
    from gen_jax.gan.networks import MLPGenerator
    want = MLPGenerator(hidden=(16, 16), out_dim=2).apply({"params": params["gen"]}, z)
    np.testing.assert_allclose(np.asarray(g), np.asarray(want), atol=1e-5)
    assert model.sampler.kind == "points" and ref.codec is None
