"""gen_jax.gan.pix2pix: two players through the real trainer, the losses of Isola et al. 2017
Eq. 1-4 recomputed from the networks, the source-conditional sampler and its evaluation, the
L1-only baseline, and refusals of bad configs and conditions."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.data import image_pairs
from gen_jax.data.pipeline import BatchStream
from gen_jax.data.shapes import generate_shapes
from gen_jax.evaluation.evaluate import evaluate_params
from gen_jax.gan.image_networks import PatchDiscriminator, UNetGenerator
from gen_jax.gan.pix2pix import DISC, GEN, make_pix2pix
from gen_jax.metrics.features import FeatureExtractor
from gen_jax.model import MODEL_STATE
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import parse_config
from gen_jax.train.loop import eval_params, train

# Shapes at 8x8 (every 4th pixel of the 32x32 renders) keep the networks small and fast to compile.
INFO = types.SimpleNamespace(name="shapes", image_shape=(8, 8, 3), num_levels=256, num_classes=5)
SMALL = dict(name="pix2pix", g_base=4, g_depth=3, d_base=4, d_layers=1, dropout_layers=2)


def _arrays(n, seed):
    a = generate_shapes(n, seed=seed)
    return {"image": a["image"][:, 1::4, 1::4], "label": a["shape"],
            **{k: a[k] for k in ("shape", "colour", "size", "x", "y")}}


def _config(steps, **model):
    return ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "shapes"}, "model": {**SMALL, **model},
        "optim": {"name": "adam", "learning_rate": 2e-4, "b1": 0.5,
                  "gen": {"learning_rate": 2e-4}, "disc": {"learning_rate": 2e-4}},
        "train": {"steps": steps, "batch_size": 8, "log_every": 1, "ckpt_every": 10, "ema_decay": 0.5},
    })


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    exp = parse_config(_config(2))
    model = make_pix2pix(exp.model, INFO)
    mesh = shd.make_mesh(1)
    stream = BatchStream(_arrays(32, 0), INFO, exp.train.batch_size, exp.seed, sharding=shd.batch_sharding(mesh))
    result = train(exp, model, str(tmp_path_factory.mktemp("p2p")), stream, INFO, progress=False, mesh=mesh)
    return model, result


def test_two_players_train_and_the_sampler_is_source_conditional(trained):
    model, result = trained
    s = result.state
    assert set(s.params) == {GEN, DISC} and set(s.ema_params) == {GEN}
    assert [p.group for p in model.training.phases] == [DISC, GEN]
    assert "batch_stats" in s.model_state[DISC]  # the PatchGAN's batch norm advanced in its phase
    assert model.conditioning.keys == ("source",)
    params = eval_params(s, model)
    test = _arrays(6, 1)
    cond = model.conditioning.draw(6, test)
    np.testing.assert_allclose(cond["source"], np.asarray(image_pairs.outline(test["image"] / 255.0)), atol=1e-6)
    x = np.asarray(model.sampler.sample(params, jax.random.PRNGKey(0), 6, cond))
    assert x.shape == (6, 8, 8, 3) and x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    # The dropout noise is drawn from the key; an output depends on its own source only.
    other = np.concatenate([cond["source"][:5], np.zeros_like(cond["source"][5:])])
    y = np.asarray(model.sampler.sample(params, jax.random.PRNGKey(0), 6, {"source": other}))
    np.testing.assert_allclose(x[:5], y[:5], atol=1e-6)
    assert np.abs(x[5] - y[5]).max() > 0


def test_evaluation_of_the_conditional_model_runs(trained):
    model, result = trained
    fake_net = FeatureExtractor(apply=jax.jit(lambda p, x: (x.mean((1, 2)), x.reshape(x.shape[0], -1)[:, :16])),
                                params=None, batch_size=8)
    ev = evaluate_params(model, eval_params(result.state, model), INFO, _arrays(12, 2), fake_net,
                         num_samples=12, batch_size=8, likelihood=False)
    assert ev.samples.shape == (12, 8, 8, 3) and ev.labels is None and np.isfinite(ev.metrics["fid"])


def test_losses_match_eq_1_to_4_recomputed_from_the_networks(trained):
    model, result = trained
    params, state = result.state.params, result.state.model_state
    y = jnp.asarray(_arrays(4, 3)["image"] / 255.0, jnp.float32)
    batch, key = {"image": y}, jax.random.PRNGKey(1)
    x = image_pairs.outline(y)
    g = UNetGenerator(out_channels=3, base=4, depth=3, dropout_layers=2)
    d = PatchDiscriminator(base=4, n_layers=1, norm="batch", conditional=True)
    # The same dropout masks (the phase's key) and batch statistics of each call, as the phases use.
    fake = g.apply({"params": params[GEN]}, x, noise=True, rngs={"dropout": key})
    dv = {"params": params[DISC], **state[DISC]}
    real_logits = np.asarray(d.apply(dv, y, x, train=True, mutable=["batch_stats"])[0], np.float64)
    fake_logits = np.asarray(d.apply(dv, fake, x, train=True, mutable=["batch_stats"])[0], np.float64)
    softplus = lambda t: np.logaddexp(0.0, t)
    d_phase, g_phase = model.training.phases
    d_val, _ = d_phase.loss(params, state, batch, key)
    # -L_cGAN / 2 for D: -(log sigmoid(D(x, y)) + log(1 - sigmoid(D(x, G(x))))) / 2, mean over patches.
    np.testing.assert_allclose(float(d_val), 0.5 * (softplus(-real_logits).mean() + softplus(fake_logits).mean()),
                               rtol=1e-5)
    g_val, (gm, _) = g_phase.loss(params, state, batch, key)
    l1 = np.abs(np.asarray(y) - np.asarray(fake)).mean()
    np.testing.assert_allclose(float(gm["l1"]), l1, rtol=1e-5)
    # non-saturating adversarial term + lambda * L1 on [-1, 1] images (2 * the mean on [0, 1]).
    np.testing.assert_allclose(float(g_val), softplus(-fake_logits).mean() + 100.0 * 2.0 * l1, rtol=1e-5)
    # The sampler is the same generator in evaluation mode (instance norm: no running statistics).
    out = model.sampler.sample({**params, MODEL_STATE: state}, key, 4, {"source": x})
    np.testing.assert_allclose(np.asarray(out), np.asarray(fake), atol=1e-6)


def test_l1_only_baseline_has_one_player():
    model = make_pix2pix(ml_collections.ConfigDict({**SMALL, "adv_weight": 0.0}), INFO)
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), {"image": jnp.zeros((2, 8, 8, 3))})
    assert set(params) == {GEN} and [p.group for p in model.training.phases] == [GEN]


def test_refuses_bad_config_and_conditions(trained):
    with pytest.raises(ConfigError, match="task"):
        make_pix2pix(ml_collections.ConfigDict({**SMALL, "task": "edges"}), INFO)
    with pytest.raises(ConfigError, match="g_depth"):
        make_pix2pix(ml_collections.ConfigDict({**SMALL, "g_depth": 4}), INFO)
    with pytest.raises(ConfigError, match="l1_weight"):
        make_pix2pix(ml_collections.ConfigDict({**SMALL, "adv_weight": 0.0, "l1_weight": 0.0}), INFO)
    model, result = trained
    params = eval_params(result.state, model)
    with pytest.raises(ValueError, match="conditioned on the source"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match=r"cond\['source'\] must be \[2, 8, 8, 3\]"):
        model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"source": jnp.zeros((2, 16, 16, 3))})
    with pytest.raises(ValueError, match="split"):
        model.conditioning.draw(2, None)
