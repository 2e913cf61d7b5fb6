"""gen_jax.gan.model: the image GAN as a two-player model of the contract, through the real
trainer (k discriminator steps, two optimizer sections, EMA of the generator with its batch
statistics for sampling) and its refusals of bad configs and inputs."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.checks import InputError
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info, load_split
from gen_jax.data.pipeline import BatchStream
from gen_jax.gan.model import DISC, GEN, make_gan
from gen_jax.model import MODEL_STATE
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import parse_config
from gen_jax.train.loop import eval_params, train

INFO = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, num_classes=10)
SMALL = dict(name="gan", z_dim=8, g_base=8, d_base=8)


def _config(steps, **model):
    return ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "digits"}, "model": {**SMALL, **model},
        "optim": {"name": "adam", "learning_rate": 2e-4, "b1": 0.5,
                  "gen": {"learning_rate": 2e-4}, "disc": {"learning_rate": 1e-3}},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "ckpt_every": 10, "ema_decay": 0.5},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    """A conditional DCGAN (batch-norm D, 2 disc steps per gen step) trained 3 steps."""
    exp = parse_config(_config(3, conditioning="label", d_norm="batch", d_steps=2))
    info = get_info("digits")
    model = make_gan(exp.model, info)
    mesh = shd.make_mesh(1)
    stream = BatchStream(load_split("digits", "train"), info, exp.train.batch_size, exp.seed,
                         sharding=shd.batch_sharding(mesh))
    wd = tmp_path_factory.mktemp("gan")
    result = train(exp, model, str(wd), stream, info, progress=False, mesh=mesh)
    return model, result


def test_two_players_each_with_its_optimizer_and_state(trained):
    model, result = trained
    s = result.state
    assert set(s.params) == {GEN, DISC}
    assert [p.group for p in model.training.phases] == [DISC, GEN]
    assert model.training.phases[0].repeats == 2 and model.training.batches_per_step == 2
    # the generator's BN running statistics advanced from their initial values; the EMA is
    # of the generator only
    init_ms = jax.jit(model.training.init_model_state)(jax.random.PRNGKey(0), {
        "image": jnp.zeros((2, 8, 8, 1)), "label": jnp.zeros((2,), jnp.int32)})
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), s.model_state[GEN], init_ms[GEN])
    assert max(jax.tree.leaves(moved)) > 0
    assert "batch_stats" in s.model_state[DISC]
    assert set(s.ema_params) == {GEN}


def test_sampler_uses_the_running_statistics(trained):
    model, result = trained
    params = eval_params(result.state, model)
    assert MODEL_STATE in params
    cond = {"label": jnp.arange(6, dtype=jnp.int32) % 10}
    key = jax.random.PRNGKey(3)
    x = np.asarray(model.sampler.sample(params, key, 6, cond))
    assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    # evaluation mode: an image does not depend on the others drawn with it
    y = np.asarray(model.sampler.sample(params, key, 6, {"label": cond["label"].at[5].set(2)}))
    np.testing.assert_allclose(x[:5], y[:5], atol=1e-6)
    # and it reads the running statistics it is given
    shifted = jax.tree.map(lambda a: a + 1.0, params[MODEL_STATE])
    z = np.asarray(model.sampler.sample({**params, MODEL_STATE: shifted}, key, 6, cond))
    assert np.max(np.abs(z - x)) > 1e-3


def test_conditional_labels_out_of_range_refused():
    model = make_gan(_config(1, conditioning="label").model, INFO)
    good = {"image": jnp.zeros((4, 8, 8, 1)), "label": jnp.array([0, 1, 9, 2], jnp.int32)}
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), good)
    state = jax.jit(model.training.init_model_state)(jax.random.PRNGKey(0), good)
    bad = {**good, "label": jnp.array([0, 1, 10, 2], jnp.int32)}
    with pytest.raises(InputError, match="label"):
        model.training.phases[0].loss(params, state, bad, jax.random.PRNGKey(1))
    with pytest.raises(InputError, match="label"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"label": jnp.array([3, 11], jnp.int32)})


def test_bad_configs_and_inputs_name_the_field():
    with pytest.raises(ConfigError, match=r"config\.model\.d_norm.*penalty"):
        make_gan(_config(1, gp_weight=10.0, d_norm="batch").model, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.d_norm"):
        make_gan(_config(1, r1_gamma=1.0, d_norm="batch").model, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.aux_weight"):
        make_gan(_config(1, aux_weight=1.0).model, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.loss"):
        make_gan(_config(1, loss="nonsense").model, INFO)
    with pytest.raises(ConfigError, match="image_shape"):
        make_gan(_config(1).model, types.SimpleNamespace(image_shape=(7, 7, 1), num_levels=17, num_classes=0))
    model = make_gan(_config(1).model, INFO)
    with pytest.raises(ValueError, match=r"batch\['image'\] must be \[B, 8, 8, 1\]"):
        model.training.init(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 16, 16, 1))})


def test_gradient_penalty_critic_trains_and_reports_its_norms():
    model = make_gan(_config(1, loss="wasserstein", gp_weight=10.0, d_norm="layer").model, INFO)
    batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 17, (8, 8, 8, 1)) / 16.0, jnp.float32)}
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    state = jax.jit(model.training.init_model_state)(jax.random.PRNGKey(0), batch)
    loss, (m, _) = jax.jit(model.training.phases[0].loss)(params, state, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(loss)) and {"gp", "grad_norm_dev", "d_adv"} <= set(m)
    np.testing.assert_allclose(float(loss), float(m["d_adv"] + 10.0 * m["gp"]), rtol=1e-5)


def test_sampler_without_running_statistics_says_how_to_get_them(trained):
    model, result = trained
    with pytest.raises(ValueError, match=r"params\['model_state'\]\['gen'\].*eval_params"):
        model.sampler.sample(dict(result.state.params), jax.random.PRNGKey(0), 2, {"label": jnp.arange(2)})


def test_codec_decodes_as_the_sampler_and_inverts_its_own_samples(trained):
    model, result = trained
    params = eval_params(result.state, model)
    # a generator whose output depends strongly on z (3 training steps leave it nearly constant)
    rng = np.random.default_rng(0)
    params = {**params, GEN: jax.tree.map(lambda p: p + 0.3 * jnp.asarray(rng.normal(size=p.shape), p.dtype),
                                          params[GEN])}
    cond = {"label": jnp.arange(4, dtype=jnp.int32)}
    key = jax.random.PRNGKey(5)
    z = jax.random.normal(key, (4, 8))
    np.testing.assert_array_equal(np.asarray(model.sampler.sample(params, key, 4, cond)),
                                  np.asarray(model.codec.decode(params, z, cond)))
    x = model.codec.decode(params, z, cond)
    z_hat = jax.jit(model.codec.encode)(params, x, cond)
    mse = float(jnp.mean(jnp.square(model.codec.decode(params, z_hat, cond) - x)))
    start = float(jnp.mean(jnp.square(model.codec.decode(params, jax.random.normal(jax.random.PRNGKey(0), z.shape),
                                                         cond) - x)))
    assert mse < 1e-3 and mse < 0.1 * start


def test_diffaugment_reaches_both_players_and_bad_policies_are_refused():
    with pytest.raises(ConfigError, match=r"config\.model\.diffaugment.*'rotate'"):
        make_gan(_config(1, diffaugment="color,rotate").model, INFO)
    plain, aug = (make_gan(_config(1, **kw).model, INFO) for kw in ({}, {"diffaugment": "translation,cutout"}))
    batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 17, (8, 8, 8, 1)) / 16.0, jnp.float32)}
    params = jax.jit(plain.training.init)(jax.random.PRNGKey(0), batch)
    state = jax.jit(plain.training.init_model_state)(jax.random.PRNGKey(0), batch)
    key = jax.random.PRNGKey(1)
    d_plain = float(jax.jit(plain.training.phases[0].loss)(params, state, batch, key)[0])
    d_aug = float(jax.jit(aug.training.phases[0].loss)(params, state, batch, key)[0])
    assert np.isfinite(d_aug) and abs(d_aug - d_plain) > 1e-4  # the discriminator sees augmented images
    g = jax.jit(jax.grad(lambda gp: aug.training.phases[1].loss({**params, GEN: gp}, state, batch, key)[0]))(params[GEN])
    norms = [float(jnp.linalg.norm(v)) for v in jax.tree.leaves(g)]
    assert all(np.isfinite(norms)) and max(norms) > 0  # G's gradient flows through the augmentation
