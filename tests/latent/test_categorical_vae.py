"""gen_jax.latent.categorical_vae: the REINFORCE (NVIL) encoder gradient is the score-function
formula, the evaluation ELBO is the discrete model's, the capabilities have their shapes, and
bad config / input is refused with the field or argument named."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.latent import categorical_vae as cv
from gen_jax.latent import gumbel

INFO = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=5)
SMALL = dict(num_latents=3, num_classes=4, hidden=(16,), baseline_hidden=(8,), likelihood="categorical",
             elbo_samples=4)
X = jnp.asarray(np.random.default_rng(0).integers(0, 5, (6, 4, 4, 1)) / 4.0, jnp.float32)


@pytest.fixture(scope="module")
def reinforce():
    model = cv.make_categorical_vae(dict(SMALL, estimator="reinforce"), INFO)
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), {"image": X})
    state = model.training.init_model_state(jax.random.PRNGKey(0), {"image": X})
    # Non-trivial moving averages, so that centring and normalisation are exercised.
    state = {cv.STATE: {**state[cv.STATE], "signal_mean": jnp.float32(-20.0), "signal_var": jnp.float32(9.0)}}
    return model, params, state


def test_nvil_signal_gradient_is_the_score_function_formula():
    # d/dl [stop(A) log Cat(z; softmax(l))] = A (one_hot(z) - softmax(l)), the categorical score.
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 4, (5, 3)), jnp.int32)
    signal, base = jnp.asarray(rng.normal(size=5) * 10, jnp.float32), jnp.asarray(rng.normal(size=5), jnp.float32)
    stats = {"signal_mean": jnp.float32(2.0), "signal_var": jnp.float32(16.0)}
    a, new = cv.nvil_signal(signal, base, stats, 0.9, True)
    np.testing.assert_allclose(a, (signal - base - 2.0) / 4.0, rtol=1e-6)
    np.testing.assert_allclose(new["signal_mean"], 0.9 * 2.0 + 0.1 * np.mean(signal - base), rtol=1e-6)
    np.testing.assert_allclose(new["signal_var"], 0.9 * 16.0 + 0.1 * np.mean((signal - base - 2.0) ** 2), rtol=1e-6)
    from gen_jax.distributions.gradient_estimators import score_function_surrogate
    g = jax.jit(jax.grad(lambda l: jnp.sum(score_function_surrogate(cv.categorical_log_q(l, ids), a))))(logits)
    want = np.asarray(a)[:, None, None] * (jax.nn.one_hot(ids, 4) - jax.nn.softmax(logits, -1))
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


def test_reinforce_encoder_gradient_is_score_function_plus_exact_kl(reinforce):
    model, params, state = reinforce
    key = jax.random.PRNGKey(7)
    loss = model.training.phases[0].loss
    grads, (metrics, new_state) = jax.jit(jax.grad(loss, has_aux=True))(params, state, {"image": X}, key)

    # The same draw, by hand: z ~ q with the loss's key convention, signal log p(x | z).
    net = cv.CategoricalVAENet(cv.CategoricalVAEConfig(**SMALL), (4, 4, 1), 5 * 1)
    ap = lambda p, *a, method: net.apply({"params": p}, *a, method=method)

    @jax.jit
    def draw(params):
        k_z, _ = jax.random.split(key)
        logits = ap(params, X, method=cv.CategoricalVAENet.logits)
        ids = jax.random.categorical(k_z, logits, axis=-1)
        out = ap(params, jax.nn.one_hot(ids, 4), method=cv.CategoricalVAENet.decode)
        levels = jnp.round(X * 4).astype(jnp.int32)
        lp = jax.nn.log_softmax(out.reshape(6, 4, 4, 1, 5), -1)
        rec = jnp.sum(jnp.take_along_axis(lp, levels[..., None], -1)[..., 0], (1, 2, 3))
        return ids, rec, ap(params, X, method=cv.CategoricalVAENet.baseline)

    ids, rec, b = draw(params)
    a = (rec - b - (-20.0)) / 3.0

    def by_hand(enc):
        p = {**params, "encoder": enc}
        l = ap(p, X, method=cv.CategoricalVAENet.logits)
        log_q = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(l, -1), ids[..., None], -1)[..., 0], -1)
        return jnp.mean(jnp.sum(gumbel.kl_to_uniform(l), -1)) - jnp.mean(a * log_q)

    want = jax.jit(jax.grad(by_hand))(params["encoder"])
    for g, w in zip(jax.tree.leaves(grads["encoder"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["recon"], jnp.mean(rec), rtol=1e-5)
    assert int(new_state[cv.STATE]["step"]) == 1
    # The baseline is fitted to the centred signal: its gradient is that of mean((s - c - b)^2).
    want_b = jax.jit(jax.grad(lambda bp: jnp.mean(jnp.square(rec + 20.0 - net.apply(
        {"params": {**params, "baseline_net": bp}}, X, method=cv.CategoricalVAENet.baseline)))))(params["baseline_net"])
    for g, w in zip(jax.tree.leaves(grads["baseline_net"]), jax.tree.leaves(want_b)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_multi_sample_reinforce_uses_the_leave_one_out_baseline():
    model = cv.make_categorical_vae(dict(SMALL, estimator="reinforce", reinforce_samples=3), INFO)
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), {"image": X})
    assert "baseline_net" not in params
    state = {cv.STATE: {"step": jnp.int32(0), "signal_mean": jnp.float32(0.5), "signal_var": jnp.float32(4.0)}}
    key = jax.random.PRNGKey(8)
    grads = jax.jit(jax.grad(lambda p: model.training.phases[0].loss(p, state, {"image": X}, key)[0]))(params)
    net = cv.CategoricalVAENet(cv.CategoricalVAEConfig(**dict(SMALL, reinforce_samples=3)), (4, 4, 1), 5)
    ap = lambda p, *a, method: net.apply({"params": p}, *a, method=method)

    @jax.jit
    def by_hand(enc):
        p = {**params, "encoder": enc}
        l = ap(p, X, method=cv.CategoricalVAENet.logits)
        ids = jax.random.categorical(jax.random.split(key)[0], jax.lax.stop_gradient(l), axis=-1, shape=(3, 6, 3))
        out = ap(p, jax.nn.one_hot(ids, 4).reshape(18, 3, 4), method=cv.CategoricalVAENet.decode)
        lp = jax.nn.log_softmax(out.reshape(3, 6, 4, 4, 1, 5), -1)
        levels = jnp.broadcast_to(jnp.round(X * 4).astype(jnp.int32), (3, 6, 4, 4, 1))
        rec = jnp.sum(jnp.take_along_axis(lp, levels[..., None], -1)[..., 0], (2, 3, 4))      # [3, 6]
        loo = (jnp.sum(rec, 0) - rec) / 2
        a = jax.lax.stop_gradient((rec - loo - 0.5) / 2.0)
        log_q = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(l, -1)[None], ids[..., None], -1)[..., 0], -1)
        return jnp.mean(jnp.sum(gumbel.kl_to_uniform(l), -1)) - jnp.mean(a * log_q)

    want = jax.grad(by_hand)(params["encoder"])
    for g, w in zip(jax.tree.leaves(grads["encoder"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_elbo_is_the_discrete_models(reinforce):
    # With a deterministic encoder (huge logits) the ELBO is log p(x | z*) - KL(one-hot || U) + D log K,
    # KL = N log K; log_prob must give exactly that.
    model, params, _ = reinforce
    enc = jax.tree.map(jnp.zeros_like, params["encoder"])
    bias = np.full((3, 4), -1e4, np.float32)
    bias[np.arange(3), [0, 3, 1]] = 1e4
    enc["head"]["mean"]["bias"] = jnp.asarray(bias.reshape(-1))
    p = {**params, "encoder": enc}
    lp = jax.jit(model.likelihood.log_prob)(p, {"image": X}, jax.random.PRNGKey(1))
    assert lp.shape == (6,) and model.likelihood.kind == "elbo"
    mean_img = jax.jit(model.codec.decode)(p, jnp.tile(jnp.array([[0, 3, 1]], jnp.int32), (6, 1)))
    assert mean_img.shape == (6, 4, 4, 1)
    net = cv.CategoricalVAENet(cv.CategoricalVAEConfig(**SMALL), (4, 4, 1), 5)

    @jax.jit
    def rec_at_mode(p):
        out = net.apply({"params": p}, jax.nn.one_hot(jnp.tile(jnp.array([[0, 3, 1]]), (6, 1)), 4),
                        method=cv.CategoricalVAENet.decode)
        lpix = jax.nn.log_softmax(out.reshape(6, 4, 4, 1, 5), -1)
        return jnp.sum(jnp.take_along_axis(lpix, jnp.round(X * 4).astype(jnp.int32)[..., None], -1)[..., 0], (1, 2, 3))

    rec = rec_at_mode(p)
    np.testing.assert_allclose(lp, rec - 3 * np.log(4) + 16 * np.log(5), rtol=1e-5)


def test_gumbel_estimator_trains_a_relaxed_elbo_and_the_capabilities_have_shapes():
    model = cv.make_categorical_vae(dict(SMALL, estimator="gumbel", tau_steps=10), INFO)
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), {"image": X})
    assert "baseline_net" not in params
    state = model.training.init_model_state(None, None)
    fn = jax.jit(jax.value_and_grad(model.training.phases[0].loss, has_aux=True))
    (loss, (m, new)), grads = fn(params, state, {"image": X}, jax.random.PRNGKey(2))
    assert np.isfinite(loss) and float(m["tau"]) == 1.0 and int(new[cv.STATE]["step"]) == 1
    assert float(m["kl_weight"]) == 1.0
    # KL warm-up: at step 2 of 4 the training loss weighs the KL by 1/2; the logged ELBO does not.
    warm = cv.make_categorical_vae(dict(SMALL, estimator="gumbel", tau_steps=10, kl_warmup_steps=4), INFO)
    st2 = {cv.STATE: {**state[cv.STATE], "step": jnp.int32(2)}}
    loss2, (m2, _) = jax.jit(warm.training.phases[0].loss)(params, st2, {"image": X}, jax.random.PRNGKey(2))
    np.testing.assert_allclose(m2["kl_weight"], 0.5)
    np.testing.assert_allclose(loss2, -(m2["recon"] - 0.5 * m2["kl"]), rtol=1e-5)
    np.testing.assert_allclose(m2["elbo"], m2["recon"] - m2["kl"], rtol=1e-5)
    enc_grad = grads["encoder"]
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(enc_grad)) > 0  # pathwise through y
    s = jax.jit(model.sampler.sample, static_argnums=2)(params, jax.random.PRNGKey(3), 5)
    assert s.shape == (5, 4, 4, 1) and s.dtype == jnp.float32 and float(s.min()) >= 0 and float(s.max()) <= 1
    ids = model.codec.encode(params, X)
    assert ids.shape == (6, 3) and ids.dtype == jnp.int32 and model.codec.kind == "ids"


def test_bad_config_and_input_are_named(reinforce):
    with pytest.raises(ConfigError, match=r"config.model.estimator.*must be one of \['reinforce', 'gumbel'\]"):
        cv.make_categorical_vae(dict(SMALL, estimator="rebar"), INFO)
    with pytest.raises(ConfigError, match="config.model.num_classes"):
        cv.make_categorical_vae(dict(SMALL, num_classes=1), INFO)
    with pytest.raises(ConfigError, match="config.model.tau_end"):
        cv.make_categorical_vae(dict(SMALL, tau_end=0.0), INFO)
    model, params, _ = reinforce
    with pytest.raises(ValueError, match=r"decode: ids must be \[B, 3\]"):
        model.codec.decode(params, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="decode: ids"):
        model.codec.decode(params, jnp.full((2, 3), 4, jnp.int32))
    with pytest.raises(ValueError, match="image"):
        model.likelihood.log_prob(params, {"image": jnp.zeros((2, 8, 8, 1))}, jax.random.PRNGKey(0))
