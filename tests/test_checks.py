"""The input checks of the contract (gen_jax.checks) on a hand-made model of trivial functions:
each class of bad input gets its one-line message, valid input returns the very same result,
the wrappers are trace-time only (same jaxpr), and the checkify variant catches NaN and
out-of-range labels inside jit."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import checks
from gen_jax.checks import DataSpec, InputError
from gen_jax.model import Codec, GenerativeModel, Likelihood, Sampler, label_conditioning, loss_training

SPEC = DataSpec((2, 2, 1), 5, 3, (("caption_tokens", 7),))


def _log_prob(params, batch, key):
    return jnp.sum(batch["image"], axis=(1, 2, 3)) * params + jnp.asarray(batch.get("label", 0), jnp.float32)


def _sample(params, key, num, cond=None):
    return jnp.zeros((num, 2, 2, 1), jnp.float32) + params


def _model(conditional=True, null_label=None, data=SPEC):
    return GenerativeModel(
        name="toy", family="latent",
        training=loss_training(lambda key, batch: jnp.float32(1.0),
                               lambda p, batch, key: (jnp.mean(_log_prob(p, batch, key)), {})),
        sampler=Sampler(_sample), likelihood=Likelihood(_log_prob, "exact"),
        codec=Codec(lambda p, x, cond=None: x.reshape(x.shape[0], -1), lambda p, z, cond=None, key=None: z),
        conditioning=label_conditioning(3, null_label=null_label) if conditional else None, data=data)


def _batch(n=2):
    lev = np.arange(n * 4).reshape(n, 2, 2, 1) % 5
    return {"image": jnp.asarray(lev / 4, jnp.float32), "label": jnp.arange(n, dtype=jnp.int32) % 3,
            "caption_tokens": jnp.ones((n, 3), jnp.int32)}


def _msg(fn, *args, **kw):
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    return str(e.value)


K = "expected level / (K - 1) in [0, 1] for K = 5 levels"
OF = "in an input of shape (2, 2, 2, 1)"


@pytest.mark.parametrize("image,expected", [
    (np.zeros((2, 2, 2, 1), np.uint8),
     f"log_prob batch['image']: dtype uint8; expected float32 {K[9:]} (did you pass uint8 levels? divide by 4)"),
    (np.full((2, 2, 2, 1), 255.0, np.float32),
     f"log_prob batch['image']: 8 value(s) outside [0, 1] {OF} (values in [255, 255]); {K} (did you pass "
     "[0, 255] pixels? divide by 255 and quantize to the levels)"),
    (np.full((2, 2, 2, 1), 3.0, np.float32),
     f"log_prob batch['image']: 8 value(s) outside [0, 1] {OF} (values in [3, 3]); {K} (did you pass levels "
     "0..4? divide by 4)"),
    (np.full((2, 2, 2, 1), -1.0, np.float32),
     f"log_prob batch['image']: 8 value(s) outside [0, 1] {OF} (values in [-1, -1]); {K} (did you pass data in "
     "[-1, 1]? use (x + 1) / 2)"),
    (np.full((2, 2, 2, 1), 0.3, np.float32),
     f"log_prob batch['image']: 8 value(s) off the level grid {OF} (up to 0.05 from the nearest k / 4); "
     f"{K} (quantize with round(x * 4) / 4)"),
    (np.full((2, 2, 2, 1), np.nan, np.float32), f"log_prob batch['image']: 8 non-finite value(s) (NaN/inf) {OF}; {K}"),
])
def test_image_checks(image, expected):
    model = _model()
    assert _msg(model.likelihood.log_prob, 1.0, {**_batch(), "image": image}, None) == expected


def test_label_token_num_and_cond_checks():
    model = _model()
    b = _batch()
    assert _msg(model.likelihood.log_prob, 1.0, {**b, "label": jnp.array([0, 3])}, None) == (
        "log_prob batch['label'] values lie in [0, 3]; expected [0, 3) (labels: 1 of 2 out of range, e.g. 3)")
    assert _msg(model.likelihood.log_prob, 1.0, {**b, "label": jnp.array([0.0, 1.0])}, None) == (
        "log_prob batch['label']: dtype float32; expected int labels in [0, 3)")
    assert _msg(model.likelihood.log_prob, 1.0, {**b, "caption_tokens": jnp.full((2, 3), 7)}, None) == (
        "log_prob batch['caption_tokens']: token ids lie in [7, 7], outside the vocabulary [0, 7) (6 of 6 out of "
        "range, e.g. 7)")
    assert _msg(model.sampler.sample, 1.0, None, -1, {"label": jnp.array([0])}) == (
        "sample: num must be a positive Python int, got -1")
    assert _msg(model.sampler.sample, 1.0, None, 2.0, {"label": jnp.array([0, 1])}) == (
        "sample: num must be a positive Python int, got 2.0")
    assert _msg(model.sampler.sample, 1.0, None, 2, {"label": jnp.array([-1, 1])}) == (
        "sample cond['label'] values lie in [-1, 1]; expected [0, 3) (labels: 1 of 2 out of range, e.g. -1)")
    assert _msg(_model(conditional=False).sampler.sample, 1.0, None, 2, {"label": jnp.array([0, 1], jnp.int32)}) == (
        "sample: model 'toy' is unconditional; cond={'label': int32[2]} was given")
    assert _msg(model.codec.encode, 1.0, b["image"] * 4) == (
        f"encode image: 4 value(s) outside [0, 1] {OF} (values in [0, 4]); {K} (did you pass levels 0..4? "
        "divide by 4)")
    loss = model.training.phases[0].loss
    assert _msg(loss, 1.0, {**b, "image": b["image"] * 255}, None).startswith(
        "loss batch['image']: 6 value(s) outside [0, 1]")


def test_null_label_is_accepted_and_unconditional_models_ignore_batch_labels():
    guided = _model(null_label=3)
    assert guided.sampler.sample(1.0, None, 2, {"label": jnp.array([3, 0])}).shape == (2, 2, 2, 1)
    assert _msg(guided.sampler.sample, 1.0, None, 1, {"label": jnp.array([4])}) == (
        "sample cond['label'] values lie in [4, 4]; expected [0, 3) or the null label 3 "
        "(labels: 1 of 1 out of range, e.g. 4)")
    plain = _model(conditional=False)
    plain.likelihood.log_prob(1.0, {**_batch(), "label": jnp.array([7, 9])}, None)  # labels do not condition it


def test_valid_input_gives_the_same_result_and_the_same_program():
    model, b = _model(), _batch()
    np.testing.assert_array_equal(model.likelihood.log_prob(1.5, b, None), _log_prob(1.5, b, None))
    loss = model.training.phases[0].loss
    assert loss.__wrapped__ is not loss
    assert str(jax.make_jaxpr(loss)(1.5, b, None)) == str(jax.make_jaxpr(loss.__wrapped__)(1.5, b, None))
    # Inside jit the values are tracers: only shapes and dtypes are checked (at trace time).
    out = jax.jit(model.likelihood.log_prob)(1.0, {**b, "image": jnp.full((2, 2, 2, 1), jnp.nan)}, None)
    assert bool(jnp.all(jnp.isnan(out)))
    with pytest.raises(InputError, match=r"^log_prob batch\['image'\]: dtype int32"):
        jax.jit(model.likelihood.log_prob)(1.0, {**b, "image": jnp.zeros((2, 2, 2, 1), jnp.int32)}, None)


def test_rebuilding_a_model_does_not_wrap_twice_and_no_data_wraps_nothing():
    model = _model()
    again = dataclasses.replace(model, name="toy2")
    assert again.likelihood.log_prob is model.likelihood.log_prob
    assert again.likelihood.log_prob.__wrapped__ is _log_prob
    assert _model(data=None).likelihood.log_prob is _log_prob
    with pytest.raises(TypeError, match="model 'toy': data must be a DataSpec, got dict"):
        _model(data={})


def test_runtime_checks_catch_nan_and_labels_inside_jit():
    rt = checks.with_runtime_checks(_model())
    log_prob = checks.checked_jit(rt.likelihood.log_prob)
    b = _batch()
    np.testing.assert_array_equal(log_prob(1.0, b, None), _log_prob(1.0, b, None))
    with pytest.raises(InputError) as e:
        log_prob(1.0, {**b, "image": jnp.full((2, 2, 2, 1), jnp.nan)}, None)
    assert str(e.value) == "log_prob batch['image']: non-finite values (NaN/inf)"
    sample = checks.checked_jit(rt.sampler.sample, static_argnums=2)
    with pytest.raises(InputError) as e:
        sample(1.0, None, 2, {"label": jnp.array([5, 0])})
    assert str(e.value) == "sample cond['label']: values outside [0, 3)"
    assert sample(1.0, None, 2, {"label": jnp.array([2, 0])}).shape == (2, 2, 2, 1)


def test_jit_log_prob_and_jit_sample_for_the_clis():
    model, b = _model(), _batch()
    nan = {**b, "image": jnp.full((2, 2, 2, 1), jnp.nan)}
    plain, checked = checks.jit_log_prob(model, runtime_checks=False), checks.jit_log_prob(model)
    np.testing.assert_array_equal(plain(1.0, b, None), checked(1.0, b, None))
    assert bool(jnp.all(jnp.isnan(plain(1.0, nan, None))))  # plain jit: values unchecked
    with pytest.raises(InputError, match=r"^log_prob batch\['image'\]: non-finite values \(NaN/inf\)$"):
        checked(1.0, nan, None)
    with pytest.raises(InputError, match=r"^sample cond\['label'\]: values outside \[0, 3\)$"):
        checks.jit_sample(model)(1.0, None, 1, {"label": jnp.array([-2])})
    assert checks.jit_sample(model, runtime_checks=False)(1.0, None, 1, {"label": jnp.array([0])}).shape == (1, 2, 2, 1)
