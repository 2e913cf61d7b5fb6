"""VQGAN (gen_jax.latent.vqgan): the adaptive weight against gradient norms computed by hand and
by autodiff of the model's own losses, the discriminator off before its start step, the perceptual
distance against numpy, the codec round trip and refusals; the paper-scale f16 config's shapes and
parameter count."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gen_jax.checks import InputError
from gen_jax.config import ConfigError
from gen_jax.latent import vqgan
from gen_jax.metrics.classifier import make_classifier
from gen_jax.model import MODEL_STATE, Stage

INFO = types.SimpleNamespace(image_shape=(16, 16, 3), num_levels=256, num_classes=5)
CLF = dict(features=(8, 8), hidden=16)
SMALL = dict(num_codes=8, code_dim=4, channels=(8,), downsample=1, res_blocks=0, kmeans_iters=2,
             disc_base=8, disc_layers=1, disc_start=3)


def _images(n=8, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)) / 255.0, jnp.float32)


def _stage():
    clf = make_classifier(CLF, INFO)
    params = clf.training.init(jax.random.PRNGKey(5), {"image": _images(2)})
    return Stage(clf, params, types.SimpleNamespace(model=CLF, dataset=types.SimpleNamespace(name="shapes")), "", 0)


@pytest.fixture(scope="module")
def built():
    model = vqgan.make_vqgan(SMALL, INFO, {"features": _stage()})
    batch = {"image": _images()}
    params = {**model.training.init(jax.random.PRNGKey(0), batch), **model.training.frozen}
    state = model.training.init_model_state(jax.random.PRNGKey(0), batch)
    d_phase, ae_phase = model.training.phases
    losses = jax.jit(lambda p, s, step: (ae_phase.loss(p, {**s, "vqgan": {"step": step}}, batch, jax.random.PRNGKey(1)),
                                         d_phase.loss(p, {**s, "vqgan": {"step": step}}, batch, jax.random.PRNGKey(2))))
    return model, params, state, batch, losses


def test_adaptive_weight_equals_the_ratio_of_hand_computed_gradient_norms():
    rng = np.random.default_rng(0)
    h, x, v = rng.normal(size=(6, 4)), rng.normal(size=(6, 3)), rng.normal(size=(3,))
    w = rng.normal(size=(4, 3))
    # last layer x_hat = h W; L_rec = mean (x_hat - x)^2; L_GAN = -mean_n D(x_hat_n), D(y) = y . v
    g_rec = 2.0 / x.size * h.T @ (h @ w - x)
    g_gan = -np.outer(h.sum(0), v) / len(h)
    want = np.linalg.norm(g_rec) / (np.linalg.norm(g_gan) + 1e-6)
    hj, xj, vj = (jnp.asarray(a, jnp.float32) for a in (h, x, v))
    lam, rn, gn = vqgan.adaptive_weight(lambda k: jnp.mean(jnp.square(hj @ k - xj)),
                                        lambda k: -jnp.mean((hj @ k) @ vj), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose([float(lam), float(rn), float(gn)],
                               [want, np.linalg.norm(g_rec), np.linalg.norm(g_gan)], rtol=1e-4)
    # no gradient flows through the weight, and it is clipped
    assert float(jax.grad(lambda k: vqgan.adaptive_weight(lambda a: jnp.sum(a * k), lambda a: jnp.sum(a), k)[0])(
        jnp.ones(3)).sum()) == 0.0
    assert float(vqgan.adaptive_weight(lambda a: jnp.sum(a), lambda a: 0.0 * jnp.sum(a), jnp.ones(2),
                                       max_weight=50.0)[0]) == 50.0


def test_model_lambda_is_the_gradient_norm_ratio_at_conv_out(built):
    model, params, state, batch, losses = built
    (loss, (m, _)), _ = losses(params, state, jnp.int32(5))
    # the model's lambda against full autodiff of its two terms w.r.t. the decoder's conv_out kernel
    tok = vqgan.VQTokenizer(vqgan.typed(vqgan.VQGANConfig, SMALL, "config.model"), INFO.image_shape)
    x = batch["image"]
    z_q = tok.quantize(params["ae"], state, tok.encode_continuous(params["ae"], x)).z_q
    feats = vqgan.feature_layers(_stage(), ("conv0", "conv1", "hidden"))[0]
    disc = vqgan.PatchDiscriminator(base=8, n_layers=1, norm="instance", conditional=False)

    def terms(ae):
        x_hat = tok.decode_codes(ae, z_q)
        rec = jnp.mean(jnp.mean(jnp.abs(x - x_hat).reshape(8, -1), -1)
                       + vqgan.perceptual_distance(feats(params["features"], x), feats(params["features"], x_hat)))
        gan = -jnp.mean(disc.apply({"params": params["disc"]}, x_hat))
        return rec, gan

    @jax.jit
    def hand(ae):
        kernel = lambda i: jax.grad(lambda a: terms(a)[i])(ae)["decoder"]["conv_out"]["kernel"]
        return optax.tree.norm(kernel(0)) / (optax.tree.norm(kernel(1)) + 1e-6), terms(ae)[1]

    want, gan = hand(params["ae"])
    assert float(m["lambda"]) == pytest.approx(float(want), rel=1e-3)
    assert float(m["g_adv"]) == pytest.approx(float(gan), rel=1e-4)
    np.testing.assert_allclose(float(loss), float(jnp.mean(m["l1"] + m["perceptual"]) + 0.25 * jnp.mean(m["commitment"])
                                                  + 0.8 * m["lambda"] * m["g_adv"]), rtol=1e-5)


def test_discriminator_is_off_before_the_start_step(built):
    model, params, state, batch, losses = built
    (l_off, (m_off, s_off)), (d_off, (md_off, _)) = losses(params, state, jnp.int32(2))
    (l_on, (m_on, s_on)), (d_on, (md_on, _)) = losses(params, state, jnp.int32(3))
    assert float(m_off["disc_active"]) == 0 and float(m_on["disc_active"]) == 1
    assert float(m_off["g_adv"]) == 0 and float(m_off["lambda"]) == 0 and float(d_off) == 0
    np.testing.assert_allclose(float(l_off), float(jnp.mean(m_off["l1"] + m_off["perceptual"])
                                                   + 0.25 * jnp.mean(m_off["commitment"])), rtol=1e-6)
    assert float(d_on) > 0 and float(m_on["lambda"]) > 0 and float(l_on) != float(l_off)
    # the discriminator's gradient is zero before the start, not after
    d_phase = model.training.phases[0]
    grad = jax.jit(lambda step: optax.tree.norm(jax.grad(lambda pd: d_phase.loss(
        {**params, "disc": pd}, {**state, "vqgan": {"step": step}}, batch, jax.random.PRNGKey(2))[0])(
        params["disc"])))
    assert float(grad(jnp.int32(2))) == 0.0 and float(grad(jnp.int32(3))) > 0.0
    # the tokenizer phase advances the counter; the discriminator phase leaves it
    assert int(s_on["vqgan"]["step"]) == 4


def test_perceptual_distance_against_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3, 3, 4)), rng.normal(size=(2, 3, 3, 4))
    c, d = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    unit = lambda f: f / np.linalg.norm(f, axis=-1, keepdims=True)
    want = (np.sum((unit(a) - unit(b)) ** 2, -1).mean((1, 2)) + np.sum((unit(c) - unit(d)) ** 2, -1))
    got = vqgan.perceptual_distance([jnp.asarray(a), jnp.asarray(c)], [jnp.asarray(b), jnp.asarray(d)])
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
    assert float(jnp.max(vqgan.perceptual_distance([jnp.asarray(a)], [jnp.asarray(2 * a)]))) < 1e-6


def test_codec_round_trip_and_refusals(built):
    model, params, state, batch, _ = built
    p = {**params, MODEL_STATE: state}
    ids = model.codec.encode(p, batch["image"])
    assert ids.shape == (8, 8, 8) and ids.dtype == jnp.int32 and model.codec.kind == "ids"
    x = model.codec.decode(p, ids)
    assert x.shape == (8, 16, 16, 3) and float(x.min()) >= 0 and float(x.max()) <= 1
    # the codec's round trip is the reconstruction the training pass makes (ids -> codes -> decoder)
    tok = vqgan.VQTokenizer(vqgan.typed(vqgan.VQGANConfig, SMALL, "config.model"), INFO.image_shape)
    x_hat = tok.forward(params["ae"], state, batch["image"])[0]
    np.testing.assert_allclose(np.asarray(x), np.clip(np.asarray(x_hat), 0, 1), atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        model.codec.decode(p, ids.at[0, 0, 0].set(8))
    with pytest.raises(InputError, match=r"decode: ids must be \[B, 8, 8\]"):
        model.codec.decode(p, ids[:, :4])
    with pytest.raises(InputError, match="int"):
        model.codec.decode(p, ids.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"encode: x must be \[B, 16, 16, 3\]"):
        model.codec.encode(p, jnp.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="model_state"):
        model.codec.encode(params, batch["image"])


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match=r"config\.stages\.features"):
        vqgan.make_vqgan(SMALL, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.perceptual_layers"):
        vqgan.make_vqgan({**SMALL, "perceptual_layers": ("conv7",)}, INFO, {"features": _stage()})
    with pytest.raises(ConfigError, match=r"config\.model\.disc_layers"):
        vqgan.make_vqgan({**SMALL, "disc_layers": 4, "perceptual_weight": 0.0}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.disc_start"):
        vqgan.make_vqgan({**SMALL, "disc_start": -1, "perceptual_weight": 0.0}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.disc_norm"):
        vqgan.make_vqgan({**SMALL, "disc_norm": "batch", "perceptual_weight": 0.0}, INFO)
    with pytest.raises(ConfigError, match=r"config\.model\.downsample"):
        vqgan.make_vqgan({**SMALL, "downsample": 5, "perceptual_weight": 0.0}, INFO)
    with pytest.raises(ConfigError, match=r"config\.stages\.features\.config"):
        bad = Stage(types.SimpleNamespace(name="vae"), {"encoder": {}}, types.SimpleNamespace(model={}), "", 0)
        vqgan.make_vqgan(SMALL, INFO, {"features": bad})
