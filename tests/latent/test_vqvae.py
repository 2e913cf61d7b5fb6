"""gen_jax.latent.vqvae through the real trainer on digits (8x8 -> a 4x4 grid): the EMA codebook in
the model state, the codec of kind 'ids' (shapes, nearest codes, decode = decoder of the codes),
the 'loss' codebook in the params, and the refusals of bad configs and inputs."""
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
from gen_jax.latent.vqvae import STATE, VQTokenizer, VQVAEConfig, make_vqvae
from gen_jax.model import MODEL_STATE
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import parse_config
from gen_jax.train.loop import eval_params, train

SMALL = dict(name="vqvae", num_codes=8, code_dim=4, channels=(8,), downsample=1, res_blocks=1,
             kmeans_iters=3, dead_threshold=1.0, usage_window=2)
INFO = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, num_classes=10)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_data_dir):
    exp = parse_config(ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "digits"}, "model": SMALL,
        "optim": {"name": "adam", "learning_rate": 1e-3},
        "train": {"steps": 3, "batch_size": 16, "log_every": 1, "ckpt_every": 3}}))
    info = get_info("digits")
    model = make_vqvae(exp.model, info)
    mesh = shd.make_mesh(1)
    arrays = load_split("digits", "train")
    stream = BatchStream(arrays, info, 16, 0, sharding=shd.batch_sharding(mesh))
    result = train(exp, model, str(tmp_path_factory.mktemp("vqvae")), stream, info, progress=False, mesh=mesh)
    x = jnp.asarray(arrays["image"][:6], jnp.float32) / 16.0
    return model, result, stream.batch_at(0), x


def test_the_ema_codebook_is_model_state_advanced_by_training(trained):
    model, result, batch, _ = trained
    s = result.state
    assert set(s.params) == {"encoder", "decoder"}           # no codebook among the trained params
    init_state = jax.jit(model.training.init_model_state)(jax.random.split(jax.random.PRNGKey(0))[0], batch)
    moved = np.abs(np.asarray(s.model_state[STATE]["codebook"]) - np.asarray(init_state[STATE]["codebook"]))
    assert moved.max() > 0
    assert int(s.model_state[STATE]["window_step"]) == 1     # 3 steps, window of 2
    m = result.last_metrics
    for k in ("mse", "commitment", "perplexity", "codes_used_batch", "codes_used_window", "codes_reset"):
        assert k in m and np.isfinite(m[k])
    assert 1.0 <= m["perplexity"] <= 8.0 and 0 < m["codes_used_window"] <= 1.0


def test_codec_round_trips_shapes_through_the_nearest_codes(trained):
    model, result, _, x = trained
    params = eval_params(result.state, model)
    tok = VQTokenizer(VQVAEConfig(**SMALL), (8, 8, 1))
    ids = jax.jit(model.codec.encode)(params, x)
    assert model.codec.kind == "ids" and ids.shape == (6, 4, 4) and ids.dtype == jnp.int32
    # the ids are the nearest codes of the encoder outputs (numpy argmin)
    z = np.asarray(jax.jit(tok.encode_continuous)(params, x)).reshape(-1, 4)
    cb = np.asarray(params[MODEL_STATE][STATE]["codebook"])
    np.testing.assert_array_equal(np.asarray(ids).reshape(-1), np.argmin(((z[:, None] - cb[None]) ** 2).sum(-1), -1))
    y = jax.jit(model.codec.decode)(params, ids)
    assert y.shape == (6, 8, 8, 1) and y.dtype == jnp.float32
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    want = np.clip(np.asarray(jax.jit(tok.decode_codes)(params, jnp.asarray(cb[np.asarray(ids)]))), 0, 1)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-5)
    assert model.sampler is None and model.likelihood is None


def test_loss_codebook_is_a_trained_param():
    model = make_vqvae({**SMALL, "codebook": "loss", "dead_threshold": 0.0}, INFO)
    batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 17, (16, 8, 8, 1)) / 16.0, jnp.float32)}
    key = jax.random.PRNGKey(0)
    params, state = jax.eval_shape(lambda k, b: (model.training.init(k, b), model.training.init_model_state(k, b)),
                                   key, batch)
    assert params["quantizer"]["codebook"].shape == (8, 4) and "codebook" not in state[STATE]
    # the gradient reaches it (the codebook term; its closed form is checked in test_quantizer)
    phase = model.training.phases[0]
    grads = jax.eval_shape(jax.grad(lambda p, s: phase.loss(p, s, batch, key)[0]), params, state)
    assert grads["quantizer"]["codebook"].shape == (8, 4)


def test_bad_configs_are_refused_naming_the_field():
    for kw, field in ((dict(num_codes=1), "num_codes"), (dict(code_dim=0), "code_dim"),
                      (dict(norm="group", groups=3), "channels"), (dict(channels=()), "channels"),
                      (dict(downsample=0), "downsample")):
        with pytest.raises(ConfigError, match=f"config.model.{field}"):
            make_vqvae({**SMALL, **kw}, INFO)
    with pytest.raises(ConfigError, match="config.model.downsample"):  # 8 is not divisible by 2^4
        make_vqvae({**SMALL, "downsample": 4, "channels": (8,)}, INFO)
    model = make_vqvae({**SMALL, "num_codes": 64}, INFO)    # k-means: 2 images give 32 outputs < 64 codes
    with pytest.raises(ConfigError, match="num_codes"):
        model.training.init_model_state(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 8, 8, 1))})


def test_bad_inputs_are_refused_naming_the_argument(trained):
    model, result, _, x = trained
    params = eval_params(result.state, model)
    ids = np.zeros((2, 4, 4), np.int32)
    with pytest.raises(InputError, match=r"decode: ids.*\[0, 8\)"):
        model.codec.decode(params, jnp.asarray(np.where(np.arange(16).reshape(1, 4, 4) == 5, 8, ids)))
    with pytest.raises(InputError, match="decode: ids"):
        model.codec.decode(params, jnp.asarray(ids - 1))
    with pytest.raises(InputError, match="int"):
        model.codec.decode(params, jnp.zeros((2, 4, 4)))
    with pytest.raises(InputError, match=r"\[B, 4, 4\]"):
        model.codec.decode(params, jnp.zeros((2, 2, 2), jnp.int32))
    with pytest.raises(ValueError, match="encode: x"):
        model.codec.encode(params, jnp.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="model_state"):
        model.codec.decode(result.state.params, jnp.asarray(ids))
