"""WaveNet: mu-law against numpy, causality and receptive field by autodiff, the queue
generator (Paine et al. 2016) against the full network, likelihood bookkeeping, and errors.

Small nets (T = 48, 6 local frames of 8 samples) with random params drawn in numpy on the
shapes of ``jax.eval_shape(init)`` (the real init zeroes the last layer, which would make every
gradient vanish); one real init checks the uniform start.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.data import mulaw
from gen_jax.autoregressive import wavenet as wn
from gen_jax.autoregressive.wavenet_model import build_wavenet, make_wavenet
from gen_jax.config import ConfigError
from gen_jax.data.datasets import DatasetInfo

T, F, LEVELS, CLASSES = 48, 6, 5, 3
INFO = DatasetInfo(name="toy_signals", image_shape=(T, 1, 1), num_levels=256, num_classes=CLASSES,
                   num_train=0, num_test=0, has_captions=False, caption_len=0, vocab_size=0,
                   local_cond_shape=(F,), local_cond_levels=LEVELS)
# A: K = 2 (the paper's), learned upsampling; B: K = 3 taps, 3-tap input conv, repetition.
CFG_A = dict(residual_channels=8, gate_channels=8, skip_channels=16, dilation_depth=4, stacks=2,
             kernel_size=2, input_kernel_size=2, local_channels=4, local_upsample="transposed")
CFG_B = dict(CFG_A, dilation_depth=3, kernel_size=3, input_kernel_size=3, local_upsample="repeat")


def _batch(seed, b=2, length=T):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (b, length, 1, 1)).astype(np.float32) / 255,
            "label": rng.integers(0, CLASSES, b).astype(np.int32),
            "local_cond": rng.integers(0, LEVELS, (b, F)).astype(np.int32)}


def _random_params(model, seed):
    """Params with every leaf drawn N(0, 1/fan_in) (biases N(0, 0.1^2)): logits of order 1."""
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), _batch(0))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if "bias" in name:
            return jnp.asarray(0.1 * rng.standard_normal(s.shape), jnp.float32)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 and "embedding" not in name else 1
        return jnp.asarray(rng.standard_normal(s.shape) / math.sqrt(fan_in), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def model_a():
    m = build_wavenet(CFG_A, INFO)
    return m, _random_params(m.model, 1)


@pytest.fixture(scope="module")
def model_b():
    m = build_wavenet(CFG_B, INFO)
    return m, _random_params(m.model, 2)


# ----------------------------------------------------------------------------- mu-law


def test_mulaw_against_numpy():
    x = np.linspace(-1.0, 1.0, 20001)
    y_ref = np.sign(x) * np.log(1.0 + 255.0 * np.abs(x)) / np.log(256.0)  # WaveNet Sec. 2.2
    np.testing.assert_allclose(mulaw.compand(x), y_ref, atol=1e-6)
    np.testing.assert_allclose(mulaw.expand(y_ref), x, atol=2e-6)
    codes_ref = np.floor((y_ref + 1.0) * 127.5 + 0.5).astype(np.int64)
    codes = mulaw.encode(x)
    assert codes.dtype == np.int32 and codes.min() == 0 and codes.max() == 255
    np.testing.assert_array_equal(codes, codes_ref)
    np.testing.assert_array_equal(np.asarray(mulaw.encode(jnp.asarray(x, jnp.float32))), codes)  # jnp path
    # Quantization error in the companded domain is at most half a step, 1/255.
    assert np.max(np.abs(mulaw.dequantize(codes) - y_ref)) <= 1.0 / 255 + 1e-6
    # Codes survive decode -> encode exactly; the extremes decode to -1 and 1.
    all_codes = np.arange(256)
    np.testing.assert_array_equal(mulaw.encode(mulaw.decode(all_codes)), all_codes)
    np.testing.assert_allclose(mulaw.decode(np.array([0, 255])), [-1.0, 1.0], atol=1e-6)
    # Companding resolves small amplitudes finely: the step near 0 is ~ 1/(255*128*mu/ln 256)...
    steps = np.diff(mulaw.decode(all_codes))
    assert steps[127] < 2e-4 and steps[-1] > 0.03


# ----------------------------------------------------------------------------- causality


def test_causality_and_receptive_field_by_autodiff(model_a):
    m, params = model_a
    net = m.network
    r = wn.receptive_field(net.dilations, net.kernel_size, net.input_kernel_size)
    assert r == 1 + (1 + 2 + 4 + 8) * 2 + 1 == 32 < T
    b = _batch(3, b=1)
    codes = m.codes(b)
    x = jax.nn.one_hot(codes, 256)
    v = jnp.asarray(np.random.default_rng(4).standard_normal(256), jnp.float32)

    def f(x):  # [1, T, 256] -> [T]: a random projection of each step's logits
        lg = net.apply(params, x, b["label"], b["local_cond"], method=wn.WaveNet.logits_from_one_hot)
        return lg[0] @ v

    jac = jax.jit(jax.jacrev(f))(x)  # [T, 1, T, 256]
    g = np.abs(np.asarray(jac[:, 0])).sum(-1)  # [t, tau]
    for t in range(T):
        assert np.all(g[t, t:] == 0.0), f"logits at {t} depend on inputs at >= {t}"
        assert np.all(g[t, max(0, t - r):t] > 0.0), f"logits at {t} miss an input within the receptive field"
        assert np.all(g[t, :max(0, t - r)] == 0.0), f"logits at {t} see beyond the receptive field"


# ----------------------------------------------------------------------------- fast generation


@pytest.mark.parametrize("which", ["a", "b"])
def test_queue_steps_equal_full_network(which, model_a, model_b):
    m, params = model_a if which == "a" else model_b
    batch = _batch(5)
    full = np.asarray(jax.jit(m.logits)(params, batch))
    fast = np.asarray(jax.jit(m.teacher_forced_logits)(params, batch))
    assert full.shape == fast.shape == (2, T, 256)
    assert 0.5 < np.abs(full).max() < 50
    np.testing.assert_allclose(fast, full, rtol=0, atol=1e-5)
    # Both conditions matter (so the test above exercised them).
    other = dict(batch, label=(batch["label"] + 1) % CLASSES, local_cond=(batch["local_cond"] + 1) % LEVELS)
    assert np.abs(np.asarray(jax.jit(m.logits)(params, other)) - full).max() > 1e-2


def test_fast_and_naive_samplers_draw_the_same_codes(model_a):
    m, params = model_a
    cond = {"label": np.array([0, 2], np.int32), "local_cond": _batch(6)["local_cond"]}
    key = jax.random.PRNGKey(7)
    fast = np.asarray(jax.jit(m.model.sampler.sample, static_argnums=2)(params, key, 2, cond))
    naive = np.asarray(jax.jit(m.sample_naive, static_argnums=2)(params, key, 2, cond))
    assert fast.shape == (2, T, 1, 1) and fast.dtype == np.float32
    codes = np.round(fast * 255)
    np.testing.assert_allclose(fast, codes / 255, rtol=0, atol=1e-7)  # code / 255
    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(codes)) > 10
    # decode_audio (the sampler's render) is the inverse mu-law of the codes.
    assert m.model.sampler.kind == "signal" and m.model.sampler.render is m.decode_audio
    audio = np.asarray(m.decode_audio(fast))
    np.testing.assert_allclose(audio, mulaw.decode(codes[:, :, 0, 0].astype(np.int32)), atol=1e-6)


# ----------------------------------------------------------------------------- likelihood


def test_loss_and_log_prob_are_the_chain_rule(model_b):
    m, params = model_b
    batch = _batch(8)
    logits = np.asarray(jax.jit(m.logits)(params, batch), np.float64)
    codes = np.round(batch["image"][:, :, 0, 0] * 255).astype(int)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    log_mass = np.take_along_axis(logp, codes[..., None], -1)[..., 0].sum(-1)  # [B]
    loss, metrics = jax.jit(m.model.training.phases[0].loss)(params, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(metrics["nll"], -log_mass, rtol=1e-5)
    np.testing.assert_allclose(metrics["bits_per_sample"], -log_mass / (T * np.log(2)), rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(-log_mass / (T * np.log(2))), rtol=1e-5)
    lp = jax.jit(m.model.likelihood.log_prob)(params, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(lp, log_mass + T * np.log(256), rtol=1e-5)


def test_real_init_starts_uniform():
    m = make_wavenet(dict(CFG_A, dilation_depth=1, stacks=1, local_cond=False), INFO)
    batch = _batch(9)
    params = jax.jit(m.training.init)(jax.random.PRNGKey(0), batch)
    loss, _ = m.training.phases[0].loss(params, batch, None)
    assert abs(float(loss) - 8.0) < 1e-5  # log2(256) bits per sample
    assert m.family == "autoregressive" and m.likelihood[1:] == ("exact", "dim", None) and m.conditional
    assert m.conditioning.keys == ("label",)
    np.testing.assert_array_equal(m.conditioning.draw(4)["label"], [0, 1, 2, 0])


def test_sampling_conditions_are_labels_and_a_splits_local_frames(model_a):
    m = model_a[0].model
    assert m.conditioning.keys == ("label", "local_cond")
    split = _batch(11, b=3)
    cond = m.conditioning.draw(4, split)
    np.testing.assert_array_equal(cond["label"], [0, 1, 2, 0])
    np.testing.assert_array_equal(cond["local_cond"], split["local_cond"][[0, 1, 2, 0]])
    local_only = make_wavenet(dict(CFG_A, global_cond=False), INFO).conditioning
    assert local_only.keys == ("local_cond",) and sorted(local_only.draw(2, split)) == ["local_cond"]
    assert make_wavenet(dict(CFG_A, global_cond=False, local_cond=False), INFO).conditioning is None


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors(model_a):
    parts, params = model_a
    m = parts.model
    loss, sample = m.training.phases[0].loss, m.sampler.sample
    b = _batch(10)
    with pytest.raises(ValueError, match=r"loss batch\['image'\] must be \[B, T, 1, 1\] = \[B, 48, 1, 1\].*\(2, 40, 1, 1\)"):
        loss(params, dict(b, image=b["image"][:, :40]), None)
    with pytest.raises(ValueError, match=r"log_prob batch\['image'\].*\(2, 48, 2, 1\)"):
        m.likelihood.log_prob(params, dict(b, image=np.repeat(b["image"], 2, axis=2)), None)
    with pytest.raises(ValueError, match=r"loss batch\['label'\] values lie in \[0, 3\]; expected \[0, 3\)"):
        loss(params, dict(b, label=np.array([0, 3], np.int32)), None)
    with pytest.raises(ValueError, match=r"loss batch: .*local_cond.*\[2, 6\]"):
        loss(params, {k: v for k, v in b.items() if k != "local_cond"}, None)
    with pytest.raises(ValueError, match=r"local_cond'\] must be \[B, F\] = \(2, 6\), got shape \(2, 5\)"):
        loss(params, dict(b, local_cond=b["local_cond"][:, :5]), None)
    with pytest.raises(ValueError, match=r"sample cond: .*local_cond"):
        sample(params, jax.random.PRNGKey(0), 2, {"label": b["label"]})
    with pytest.raises(ValueError, match=r"sample cond: .*label"):
        sample(params, jax.random.PRNGKey(0), 2, None)
    with pytest.raises(ValueError, match=r"local_cond'\] values lie in \[5, 5\]; expected \[0, 5\)"):
        sample(params, jax.random.PRNGKey(0), 2, {"label": b["label"], "local_cond": b["local_cond"] * 0 + 5})
    with pytest.raises(ConfigError, match=r"config.model.kernel_size"):
        make_wavenet(dict(CFG_A, kernel_size=1), INFO)
    with pytest.raises(ConfigError, match=r"config.model.local_upsample"):
        make_wavenet(dict(CFG_A, local_upsample="linear"), INFO)
    no_local = DatasetInfo(name="x", image_shape=(T, 1, 1), num_levels=256, num_classes=3, num_train=0,
                           num_test=0, has_captions=False, caption_len=0, vocab_size=0)
    with pytest.raises(ConfigError, match=r"config.model.local_cond"):
        make_wavenet(CFG_A, no_local)
    images = DatasetInfo(name="img", image_shape=(8, 8, 1), num_levels=256, num_classes=3, num_train=0,
                         num_test=0, has_captions=False, caption_len=0, vocab_size=0)
    with pytest.raises(ConfigError, match=r"\[T, 1, 1\].*\(8, 8, 1\)"):
        make_wavenet(CFG_A, images)
