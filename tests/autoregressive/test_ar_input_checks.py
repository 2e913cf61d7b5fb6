"""The autoregressive family's functions refuse bad input (gen_jax.checks through the
contract): one test per class of bad input, on the host before anything compiles (eval_shape
params), and the wrapped loss traces to the unwrapped loss's jaxpr."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive import image_model as im
from gen_jax.autoregressive.transformer_lm import make_transformer_lm
from gen_jax.data.datasets import DatasetInfo
from tests.input_errors import assert_same_program, input_error

INFO = types.SimpleNamespace(image_shape=(4, 4, 1), num_levels=5, num_classes=3, vocab_size=0, caption_len=0)
SMALL = dict(hidden=4, num_blocks=1, first_kernel=3, kernel=3, out_hidden=4)
GATED = dict(hidden=4, num_layers=1, first_kernel=3, kernel=3, out_hidden=4)
KEY = jax.random.PRNGKey(0)
EXPECTED = "expected level / (K - 1) in [0, 1] for K = 5 levels"
OF = "in an input of shape (2, 4, 4, 1)"


def _batch():
    r = np.random.default_rng(0)
    return {"image": jnp.asarray(r.integers(0, 5, (2, 4, 4, 1)) / 4, jnp.float32), "label": jnp.array([0, 2])}


@pytest.fixture(scope="module")
def pixelcnn():
    model = im.make_pixelcnn(SMALL, INFO)
    return model, jax.eval_shape(model.training.init, KEY, _batch())


@pytest.fixture(scope="module")
def gated():
    model = im.make_gated_pixelcnn(dict(GATED, conditioning="label"), INFO)
    return model, jax.eval_shape(model.training.init, KEY, _batch())


def test_dtype(pixelcnn):
    model, params = pixelcnn
    b = _batch()
    assert input_error(model.likelihood.log_prob, params, {**b, "image": (b["image"] * 4).astype(jnp.uint8)}, KEY) == (
        f"log_prob batch['image']: dtype uint8; expected float32 {EXPECTED[9:]} (did you pass uint8 levels? "
        "divide by 4)")


def test_range(pixelcnn):
    model, params = pixelcnn
    b = _batch()
    n = int(np.sum(np.asarray(b["image"]) > 0))
    assert input_error(model.likelihood.log_prob, params, {**b, "image": b["image"] * 255}, KEY) == (
        f"log_prob batch['image']: {n} value(s) outside [0, 1] {OF} (values in [0, 255]); {EXPECTED} "
        "(did you pass [0, 255] pixels? divide by 255 and quantize to the levels)")
    assert input_error(model.likelihood.log_prob, params, {**b, "image": b["image"] * 0.9}, KEY).startswith(
        f"log_prob batch['image']: {n} value(s) off the level grid {OF}")


def test_nan(pixelcnn):
    model, params = pixelcnn
    nan = {"image": jnp.full((2, 4, 4, 1), jnp.nan)}
    assert input_error(model.likelihood.log_prob, params, nan, KEY) == (
        f"log_prob batch['image']: 32 non-finite value(s) (NaN/inf) {OF}; {EXPECTED}")
    assert input_error(model.training.phases[0].loss, params, nan, KEY).startswith("loss batch['image']: 32 non-finite")


def test_labels(pixelcnn, gated):
    model, params = gated
    assert input_error(model.sampler.sample, params, KEY, 2, {"label": jnp.array([3, 0])}) == (
        "sample cond['label'] values lie in [0, 3]; expected [0, 3) (labels: 1 of 2 out of range, e.g. 3)")
    assert input_error(model.likelihood.log_prob, params, {**_batch(), "label": jnp.array([0.0, 1.0])}, KEY) == (
        "log_prob batch['label']: dtype float32; expected int labels in [0, 3)")
    plain, p0 = pixelcnn
    assert input_error(plain.sampler.sample, p0, KEY, 2, {"label": jnp.array([1, 2], jnp.int32)}) == (
        "sample: model 'pixelcnn' is unconditional; cond={'label': int32[2]} was given")


def test_tokens():
    info = DatasetInfo(name="fake", image_shape=(1, 2, 1), num_levels=3, num_classes=2, num_train=0, num_test=0,
                       has_captions=True, caption_len=0, vocab_size=0, caption_char_len=5)
    model = make_transformer_lm(dict(tokens="caption_chars", num_layers=1, d_model=8, num_heads=2), info)
    batch = {"caption_chars": jnp.array([[98, 99, 0, 0, 0], [98, 99, 100, 101, 102]])}
    params = jax.eval_shape(model.training.init, KEY, batch)
    assert input_error(model.likelihood.log_prob, params, {"caption_chars": batch["caption_chars"].at[0, 0].set(257)},
                KEY) == ("log_prob batch['caption_chars']: token ids lie in [0, 257], outside the vocabulary "
                         "[0, 257) (1 of 10 out of range, e.g. 257)")
    assert input_error(model.sampler.sample, params, KEY, 0) == "sample: num must be a positive Python int, got 0"


def test_num(pixelcnn):
    model, params = pixelcnn
    assert input_error(model.sampler.sample, params, KEY, -1) == "sample: num must be a positive Python int, got -1"


def test_wrapped_loss_traces_to_the_same_program(gated):
    model, params = gated
    loss, b = model.training.phases[0].loss, _batch()
    assert_same_program(loss, params, b, KEY)
