"""The diffusion family's functions refuse bad input (gen_jax.checks through the contract):
one test per class of bad input, on the host before anything compiles (eval_shape params),
and the wrapped loss traces to the unwrapped loss's jaxpr."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.diffusion.model import make_ddpm
from tests.input_errors import assert_same_program, input_error

Info = collections.namedtuple("Info", "image_shape num_levels num_classes vocab_size caption_len")
DIGITS = Info((8, 8, 1), 17, 10, 0, 0)
CAPTIONED = Info((8, 8, 1), 17, 0, 12, 5)
UNET = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0, num_groups=4, num_heads=1)
KEY = jax.random.PRNGKey(0)
EXPECTED = "expected level / (K - 1) in [0, 1] for K = 17 levels"
OF = "in an input of shape (2, 8, 8, 1)"


def _batch(info=DIGITS):
    r = np.random.default_rng(0)
    return {"image": jnp.asarray(r.integers(0, 17, (2, 8, 8, 1)) / 16, jnp.float32),
            "label": jnp.array([1, 9]), "caption_tokens": jnp.asarray(r.integers(1, 12, (2, 5)), jnp.int32)}


def _model(info=DIGITS, **kw):
    model = make_ddpm(dict(timesteps=10, vlb_chunk=10, unet=UNET, **kw), info)
    return model, jax.eval_shape(model.training.init, KEY, _batch(info))


@pytest.fixture(scope="module")
def ddpm():
    return _model()


def test_dtype(ddpm):
    model, params = ddpm
    b = _batch()
    assert input_error(model.training.phases[0].loss, params, {**b, "image": (b["image"] * 16).astype(jnp.int32)}, KEY) == (
        f"loss batch['image']: dtype int32; expected float32 {EXPECTED[9:]} (did you pass int32 levels? divide by 16)")


def test_range(ddpm):
    model, params = ddpm
    b = _batch()
    n = int(np.sum(np.asarray(b["image"]) > 0))
    assert input_error(model.training.phases[0].loss, params, {**b, "image": b["image"] * 255}, KEY) == (
        f"loss batch['image']: {n} value(s) outside [0, 1] {OF} (values in [0, 255]); {EXPECTED} "
        "(did you pass [0, 255] pixels? divide by 255 and quantize to the levels)")
    assert input_error(model.likelihood.log_prob, params, {**b, "image": b["image"] * 2 - 1}, KEY).startswith(
        "log_prob batch['image']: ")


def test_nan(ddpm):
    model, params = ddpm
    assert input_error(model.likelihood.log_prob, params, {"image": jnp.full((2, 8, 8, 1), jnp.nan)}, KEY) == (
        f"log_prob batch['image']: 128 non-finite value(s) (NaN/inf) {OF}; {EXPECTED}")


def test_labels(ddpm):
    model, params = _model(conditioning="label", cond_drop_prob=0.1, guidance_scale=1.0)
    assert input_error(model.sampler.sample, params, KEY, 2, {"label": jnp.array([11, 0])}) == (
        "sample cond['label'] values lie in [0, 11]; expected [0, 10) or the null label 10 "
        "(labels: 1 of 2 out of range, e.g. 11)")
    assert input_error(model.training.phases[0].loss, params, {**_batch(), "label": jnp.array([-1, 0])}, KEY).startswith(
        "loss batch['label'] values lie in [-1, 0]; expected [0, 10) or the null label 10")
    jax.eval_shape(lambda p: model.sampler.sample(p, KEY, 2, {"label": jnp.array([10, 0])}), params)  # null: fine
    plain, p0 = ddpm
    assert input_error(plain.sampler.sample, p0, KEY, 2, {"label": jnp.array([1, 2], jnp.int32)}) == (
        "sample: model 'ddpm' is unconditional; cond={'label': int32[2]} was given")


def test_tokens():
    model, params = _model(CAPTIONED, conditioning="caption", caption_dim=8, caption_heads=2)
    bad = _batch()["caption_tokens"].at[1, 2].set(12)
    assert input_error(model.sampler.sample, params, KEY, 2, {"caption_tokens": bad}) == (
        "sample cond['caption_tokens']: token ids lie in [1, 12], outside the vocabulary [0, 12) "
        "(1 of 10 out of range, e.g. 12)")


def test_num(ddpm):
    model, params = ddpm
    assert input_error(model.sampler.sample, params, KEY, -1) == "sample: num must be a positive Python int, got -1"


def test_wrapped_loss_traces_to_the_same_program(ddpm):
    model, params = ddpm
    loss, b = model.training.phases[0].loss, _batch()
    assert_same_program(loss, params, b, KEY)
