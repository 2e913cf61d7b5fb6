"""gen_jax.gan.began: BEGAN (Berthelot et al. 2017) through the real trainer: the k_t control
(Eq. 4) and M_global (Sec. 3.4.1) recomputed in numpy from the logged losses step by step,
the losses logged against Eq. 4, the gamma refusal, the sampler's shape and range."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info, load_split
from gen_jax.data.pipeline import BatchStream
from gen_jax.gan.began import DISC, GEN, STATE, make_began
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import parse_config
from gen_jax.train.loop import eval_params, train
from gen_jax.train.writers import read_metrics

INFO = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, num_classes=0)
# a large gain and k_0 inside (0, 1), so that k moves every step without touching the clip
GAMMA, LAMBDA_K, K0, STEPS = 0.5, 0.1, 0.5, 5
SMALL = dict(name="began", z_dim=4, h_dim=4, base=4, gamma=GAMMA, lambda_k=LAMBDA_K, k_init=K0)


def _config(steps):
    return ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "digits"}, "model": SMALL,
        "optim": {"name": "adam", "learning_rate": 1e-3, "b1": 0.5,
                  "gen": {"learning_rate": 1e-3}, "disc": {"learning_rate": 1e-3}},
        "train": {"steps": steps, "batch_size": 8, "log_every": 1, "ckpt_every": 100, "ema_decay": 0.5},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    exp = parse_config(_config(STEPS))
    info = get_info("digits")
    model = make_began(exp.model, info)
    mesh = shd.make_mesh(1)
    stream = BatchStream(load_split("digits", "train"), info, exp.train.batch_size, exp.seed,
                         sharding=shd.batch_sharding(mesh))
    wd = str(tmp_path_factory.mktemp("began"))
    result = train(exp, model, wd, stream, info, progress=False, mesh=mesh)
    recs = read_metrics(wd)
    cols = {k: np.array([r[k] for r in recs], np.float64)
            for k in ("k", "k_next", "L_real", "L_fake", "L_fake_d", "M_global", "loss/disc", "loss/gen")}
    return model, result, [r["step"] for r in recs], cols


def _k_formula(k, l_real, l_fake):
    return np.clip(k + LAMBDA_K * (GAMMA * l_real - l_fake), 0.0, 1.0)


def test_k_follows_its_control_law_step_by_step(trained):
    _, result, steps, c = trained
    assert steps == list(range(1, STEPS + 1))
    assert c["k"][0] == np.float32(K0)
    expected = _k_formula(c["k"], c["L_real"], c["L_fake"])     # k_{t+1} from step t's own losses
    np.testing.assert_allclose(c["k"][1:], expected[:-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(c["k_next"], expected, rtol=0, atol=1e-6)
    # the state's k after the last step is the last step's update
    k_state = float(result.state.model_state[STATE]["k"])
    np.testing.assert_allclose(k_state, expected[-1], rtol=0, atol=1e-6)
    # the test has teeth: k moved every step and stayed off the clip bounds
    assert np.all(np.abs(np.diff(c["k"])) > 1e-4) and np.all((c["k"] > 0) & (c["k"] < 1))


def test_losses_and_m_global_are_their_formulas(trained):
    _, _, _, c = trained
    np.testing.assert_allclose(c["M_global"], c["L_real"] + np.abs(GAMMA * c["L_real"] - c["L_fake"]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c["loss/disc"], c["L_real"] - c["k"] * c["L_fake_d"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c["loss/gen"], c["L_fake"], rtol=1e-6)
    # L1 reconstruction errors of [-1, 1] images: positive, and below 2
    assert np.all((c["L_real"] > 0) & (c["L_real"] < 2) & (c["L_fake"] > 0))


def test_sampler_shape_range_and_codec(trained):
    model, result, _, _ = trained
    params = eval_params(result.state, model)
    assert set(result.state.ema_params) == {GEN} and set(result.state.params) == {GEN, DISC}
    x = np.asarray(jax.jit(model.sampler.sample, static_argnums=2)(params, jax.random.PRNGKey(3), 6))
    assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert np.std(x, axis=0).max() > 1e-4  # samples depend on z
    z = jnp.linspace(-1, 1, 4 * 4).reshape(4, 4)
    y = np.asarray(jax.jit(model.codec.decode)(params, z))
    assert y.shape == (4, 8, 8, 1) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match=r"z must be \[N, Z=4\]"):
        model.codec.decode(params, z[:, :3])


@pytest.mark.parametrize("gamma", [0.0, -0.5, 1.5])
def test_gamma_outside_unit_interval_refused(gamma):
    with pytest.raises(ConfigError, match=r"config\.model\.gamma: gamma must be in \(0, 1\]"):
        make_began({**SMALL, "gamma": gamma}, INFO)


def test_bad_config_and_shapes_name_the_field():
    make_began({**SMALL, "gamma": 1.0}, INFO)  # the closed end is allowed
    with pytest.raises(ConfigError, match=r"config\.model\.k_init"):
        make_began({**SMALL, "k_init": 1.5}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.scales"):
        make_began({**SMALL, "scales": 3}, types.SimpleNamespace(image_shape=(6, 6, 1), num_levels=17, num_classes=0))
    model = make_began(SMALL, INFO)
    with pytest.raises(ValueError, match=r"batch\['image'\] must be \[B, 8, 8, 1\]"):
        model.training.init(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 16, 16, 1))})
