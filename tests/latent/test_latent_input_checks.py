"""The latent family's functions refuse bad input (gen_jax.checks through the contract): one
test per class of bad input, on the host before anything compiles (eval_shape params), and
the wrapped loss traces to the unwrapped loss's jaxpr."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.latent.gmm import make_gmm
from gen_jax.latent.vae import make_vae
from tests.input_errors import assert_same_program, input_error
from tests.latent.stand_in import INFO, stand_in_batch

SMALL = dict(name="v", likelihood="categorical", encoder="mlp", hidden=(8,), latent_dim=2, iwae_k=2, iwae_chunk=2)
KEY = jax.random.PRNGKey(0)
EXPECTED = "expected level / (K - 1) in [0, 1] for K = 17 levels"


@pytest.fixture(scope="module")
def vae():
    model = make_vae(dict(SMALL, conditioning="none"), INFO)
    return model, jax.eval_shape(model.training.init, KEY, stand_in_batch())


@pytest.fixture(scope="module")
def cond_vae():
    model = make_vae(dict(SMALL, conditioning="label"), INFO)
    return model, jax.eval_shape(model.training.init, KEY, stand_in_batch())


def test_dtype(vae):
    model, params = vae
    b = stand_in_batch()
    levels = np.asarray(b["image"] * 16).round().astype(np.uint8)  # as load_split returns them
    assert input_error(model.likelihood.log_prob, params, {**b, "image": levels}, KEY) == (
        f"log_prob batch['image']: dtype uint8; expected float32 {EXPECTED[9:]} "
        "(did you pass uint8 levels? divide by 16)")


@pytest.mark.parametrize("scale,shift,hint", [
    (255.0, 0.0, "values in [0, 255]); {e} (did you pass [0, 255] pixels? divide by 255 and quantize to the levels)"),
    (2.0, -1.0, "values in [-1, 1]); {e} (did you pass data in [-1, 1]? use (x + 1) / 2)"),
])
def test_range(vae, scale, shift, hint):
    model, params = vae
    b = stand_in_batch()
    x = b["image"] * scale + shift
    n = int(np.sum((np.asarray(x) < 0) | (np.asarray(x) > 1)))
    assert input_error(model.likelihood.log_prob, params, {**b, "image": x}, KEY) == (
        f"log_prob batch['image']: {n} value(s) outside [0, 1] in an input of shape (8, 8, 8, 1) ("
        + hint.format(e=EXPECTED))
    assert input_error(model.training.phases[0].loss, params, {**b, "image": x}, KEY).startswith(
        f"loss batch['image']: {n} value(s) outside [0, 1]")
    assert input_error(model.codec.encode, params, x).startswith(f"encode image: {n} value(s) outside [0, 1]")


def test_nan(vae):
    model, params = vae
    b = stand_in_batch()
    assert input_error(model.likelihood.log_prob, params, {**b, "image": b["image"].at[0, 0, 0, 0].set(jnp.nan)}, KEY) == (
        f"log_prob batch['image']: 1 non-finite value(s) (NaN/inf) in an input of shape (8, 8, 8, 1); {EXPECTED}")


def test_labels(vae, cond_vae):
    model, params = cond_vae
    assert input_error(model.sampler.sample, params, KEY, 2, {"label": jnp.array([11, 3])}) == (
        "sample cond['label'] values lie in [3, 11]; expected [0, 10) (labels: 1 of 2 out of range, e.g. 11)")
    assert input_error(model.sampler.sample, params, KEY, 2, {"label": jnp.array([-1, 3])}) == (
        "sample cond['label'] values lie in [-1, 3]; expected [0, 10) (labels: 1 of 2 out of range, e.g. -1)")
    plain, p0 = vae
    assert input_error(plain.sampler.sample, p0, KEY, 2, {"label": jnp.array([1, 3], jnp.int32)}) == (
        "sample: model 'v' is unconditional; cond={'label': int32[2]} was given")


def test_tokens():
    model = make_vae(dict(SMALL, conditioning="caption"), INFO)
    b = stand_in_batch()
    params = jax.eval_shape(model.training.init, KEY, b)
    bad = b["caption_tokens"].at[0, 0].set(12)  # vocab_size 12
    assert input_error(model.likelihood.log_prob, params, {**b, "caption_tokens": bad}, KEY) == (
        "log_prob batch['caption_tokens']: token ids lie in [0, 12], outside the vocabulary [0, 12) "
        "(1 of 40 out of range, e.g. 12)")


def test_num(vae):
    model, params = vae
    assert input_error(model.sampler.sample, params, KEY, -1) == "sample: num must be a positive Python int, got -1"
    gmm = make_gmm(dict(name="g", num_components=2), INFO)
    assert input_error(gmm.sampler.sample, None, KEY, 0) == "sample: num must be a positive Python int, got 0"
    assert input_error(gmm.likelihood.log_prob, None, {"image": stand_in_batch()["image"] * 16}, KEY).startswith(
        "log_prob batch['image']: 445 value(s) outside [0, 1]")


def test_wrapped_loss_traces_to_the_same_program(vae):
    model, params = vae
    loss = model.training.phases[0].loss
    b = stand_in_batch()
    assert_same_program(loss, params, b, KEY)
