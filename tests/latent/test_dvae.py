"""The Gumbel-softmax relaxation and its schedules (gen_jax.latent.gumbel) against their
mathematics, and the DALL-E discrete VAE (gen_jax.latent.dvae) through the real train step:
its step counter, annealed temperature and KL weight, codec round trip and refusals."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.latent import gumbel

LOGITS = jnp.array([1.5, -0.5, 0.3, 0.0, -2.0], jnp.float32)
SOFTMAX = np.exp(np.asarray(LOGITS, np.float64)) / np.exp(np.asarray(LOGITS, np.float64)).sum()
N = 20000


def _draws(tau, hard=False, n=N, key=0):
    keys = jax.random.split(jax.random.PRNGKey(key), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: gumbel.gumbel_softmax(k, LOGITS, tau, hard)))(keys), np.float64)


def test_samples_approach_one_hot_as_the_temperature_goes_to_zero():
    mean_max = [float(_draws(t, n=2000).max(-1).mean()) for t in (2.0, 0.5, 0.1, 0.01, 1e-3)]
    assert all(a < b for a, b in zip(mean_max, mean_max[1:])), mean_max
    assert mean_max[0] < 0.8 and mean_max[-1] > 0.999
    y = _draws(1e-3, n=2000)
    # the limit is the one-hot of the Gumbel-max draw of the same noise, at every temperature
    np.testing.assert_array_equal(y.argmax(-1), _draws(1.0, n=2000).argmax(-1))
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_expectation_matches_the_softmax():
    se = 4 * np.sqrt(SOFTMAX * (1 - SOFTMAX) / N)  # 4 standard errors of a frequency
    # the Gumbel-max draw (the argmax) is Categorical(softmax(l)) at any temperature ...
    freq = np.bincount(_draws(1.0).argmax(-1), minlength=5) / N
    assert np.all(np.abs(freq - SOFTMAX) < se), (freq, SOFTMAX)
    # ... so the relaxed samples' mean tends to the softmax as tau -> 0 (and is off at tau = 1)
    np.testing.assert_array_less(np.abs(_draws(0.05).mean(0) - SOFTMAX), se + 2e-3)
    assert np.max(np.abs(_draws(1.0).mean(0) - SOFTMAX)) > 0.02
    # straight-through: exact one-hots in the forward pass with the same expectation
    hard = _draws(0.7, hard=True)
    np.testing.assert_allclose(hard, np.round(hard), atol=1e-6)  # one-hot up to rounding of y - sg(y)
    np.testing.assert_array_equal(np.round(hard).sum(-1), 1.0)
    assert np.all(np.abs(hard.mean(0) - SOFTMAX) < se)


def test_straight_through_gradient_is_the_relaxed_one():
    key = jax.random.PRNGKey(3)
    w = jnp.arange(5.0)
    soft = jax.grad(lambda l: jnp.sum(w * gumbel.gumbel_softmax(key, l, 0.5)))(LOGITS)
    hard = jax.grad(lambda l: jnp.sum(w * gumbel.gumbel_softmax(key, l, 0.5, hard=True)))(LOGITS)
    np.testing.assert_allclose(hard, soft, rtol=1e-5, atol=1e-6)


def test_kl_to_uniform_equals_its_closed_form():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3, 7)) * 2
    q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ref = np.sum(q * (np.log(q) - np.log(1.0 / 7)), -1)  # sum_k q_k log(q_k / u_k)
    np.testing.assert_allclose(np.asarray(gumbel.kl_to_uniform(jnp.asarray(logits, jnp.float32))), ref,
                               rtol=1e-5, atol=1e-6)
    assert float(gumbel.kl_to_uniform(jnp.zeros(9))) == pytest.approx(0.0, abs=1e-6)
    assert float(gumbel.kl_to_uniform(jnp.array([50.0, 0, 0, 0]))) == pytest.approx(math.log(4), abs=1e-5)


def test_schedules_hit_their_ends_and_shapes():
    for kind in gumbel.SCHEDULES:
        v = [float(gumbel.anneal(s, 1.0, 1 / 16, 100, kind)) for s in (0, 50, 100, 1000)]
        assert v[0] == pytest.approx(1.0) and v[2] == pytest.approx(1 / 16) and v[3] == pytest.approx(1 / 16)
    assert float(gumbel.anneal(50, 1.0, 1 / 16, 100, "exponential")) == pytest.approx(0.25, rel=1e-5)
    assert float(gumbel.anneal(50, 0.0, 6.6, 100, "cosine")) == pytest.approx(3.3, rel=1e-5)
    assert float(gumbel.anneal(25, 0.0, 4.0, 100, "linear")) == pytest.approx(1.0, rel=1e-5)
    assert float(gumbel.anneal(25, 0.0, 4.0, 100, "cosine")) == pytest.approx(2 * (1 - math.cos(math.pi / 4)),
                                                                              rel=1e-5)


def test_bad_temperatures_and_schedules_are_refused():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gumbel.gumbel_softmax(jax.random.PRNGKey(0), LOGITS, 0.0)
    with pytest.raises(ValueError, match="logits must be a float"):
        gumbel.gumbel_softmax(jax.random.PRNGKey(0), jnp.arange(3), 1.0)
    assert "tau_steps" in gumbel.check_schedule(1.0, 0.1, 0, "cosine", "tau")
    assert "tau_schedule" in gumbel.check_schedule(1.0, 0.1, 10, "step", "tau")
    assert "tau_end" in gumbel.check_schedule(1.0, 0.0, 10, "cosine", "tau", positive=True)
    assert "kl_weight_start" in gumbel.check_schedule(0.0, 1.0, 10, "exponential", "kl_weight")
    assert gumbel.check_schedule(0.0, 6.6, 10, "cosine", "kl_weight") is None
    with pytest.raises(ValueError, match="anneal"):
        gumbel.anneal(0, 1.0, float("nan"), 10)


# ----------------------------------------------------------------------------- the dVAE model

import types  # noqa: E402

from gen_jax.checks import InputError  # noqa: E402
from gen_jax.config import ConfigError  # noqa: E402
from gen_jax.latent.dvae import make_dvae  # noqa: E402

INFO = types.SimpleNamespace(image_shape=(16, 16, 3), num_levels=256)
SMALL = dict(num_codes=16, code_dim=4, channels=(8,), downsample=2, res_blocks=0, rec_sigma=0.1,
             tau_start=1.0, tau_end=0.0625, tau_steps=4, tau_schedule="exponential",
             kl_weight_start=0.0, kl_weight_end=2.0, kl_weight_steps=2, kl_weight_schedule="linear")


@pytest.fixture(scope="module")
def dvae():
    from gen_jax.train.step import create_train_state, make_step_fn
    import optax

    model = make_dvae(SMALL, INFO)
    batch = {"image": jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)) / 255.0, jnp.float32)}
    params = model.training.init(jax.random.PRNGKey(0), batch)
    from gen_jax.train.state import group_key

    opts = {group_key(None): optax.adam(1e-3)}
    state = create_train_state(params, opts, jax.random.PRNGKey(1), phases=model.training.phases, use_ema=False,
                               model_state=model.training.init_model_state(jax.random.PRNGKey(0), batch))
    step = jax.jit(make_step_fn(model.training.phases, opts))
    metrics = []
    for _ in range(5):
        state, m = step(state, batch)
        metrics.append({k: float(v) for k, v in m.items()})
    return model, state, batch, metrics


def test_the_step_counter_drives_the_annealed_temperature_and_kl_weight(dvae):
    model, state, batch, metrics = dvae
    assert int(state.model_state["dvae"]["step"]) == 5
    taus = [m["tau"] for m in metrics]
    np.testing.assert_allclose(taus, [1.0, 0.5, 0.25, 0.125, 0.0625], rtol=1e-5)   # exponential over 4 steps
    np.testing.assert_allclose([m["kl_weight"] for m in metrics], [0.0, 1.0, 2.0, 2.0, 2.0], rtol=1e-6)
    assert all(m["finite"] == 1.0 for m in metrics)
    # the loss is the per-dimension negative ELBO of its own terms
    for m in metrics:
        np.testing.assert_allclose(m["loss"], m["mse"] / (2 * 0.1 ** 2) + m["kl_weight"] * m["kl"] * 16 / 768,
                                   rtol=1e-4)


def test_dvae_codec_round_trip_and_refusals(dvae):
    model, state, batch, _ = dvae
    p = state.params
    ids = model.codec.encode(p, batch["image"])
    assert ids.shape == (8, 4, 4) and ids.dtype == jnp.int32 and model.codec.kind == "ids"
    x = model.codec.decode(p, ids)
    assert x.shape == (8, 16, 16, 3) and float(x.min()) >= 0 and float(x.max()) <= 1
    # decode(ids) is the decoder fed the one-hot codes: the relaxed path at the tau -> 0 limit
    from gen_jax.latent.dvae import DVAENet, typed, DVAEConfig
    net = DVAENet(typed(DVAEConfig, SMALL), 3)
    onehot = jax.nn.one_hot(ids, 16)
    ref = net.apply({"params": p}, net.apply({"params": p}, onehot, method=DVAENet.embed_soft), method=DVAENet.decode)
    np.testing.assert_allclose(np.asarray(x), np.clip(np.asarray(ref), 0, 1), atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        model.codec.decode(p, ids.at[1, 2, 3].set(16))
    with pytest.raises(InputError, match=r"decode: ids must be \[B, 4, 4\]"):
        model.codec.decode(p, ids[:, :2])
    with pytest.raises(InputError, match="int"):
        model.codec.decode(p, ids.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"encode: x must be \[B, 16, 16, 3\]"):
        model.codec.encode(p, jnp.zeros((2, 8, 8, 3)))


def test_dvae_bad_configs_name_the_field():
    for field, bad in (("tau_end", dict(tau_end=0.0)), ("tau_steps", dict(tau_steps=0)),
                       ("tau_schedule", dict(tau_schedule="step")),
                       ("kl_weight_start", dict(kl_weight_schedule="exponential")),
                       ("kl_weight_end", dict(kl_weight_end=-1.0)), ("num_codes", dict(num_codes=1)),
                       ("downsample", dict(downsample=5))):
        with pytest.raises(ConfigError, match=rf"config\.model\.{field}"):
            make_dvae({**SMALL, **bad}, INFO)
