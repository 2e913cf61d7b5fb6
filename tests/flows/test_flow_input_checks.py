"""The flow family's functions refuse bad input (gen_jax.checks through the contract): one test
per class of bad input on the host (eval_shape params, nothing compiles), and a NaN image
under jit caught by the checkify variant (one small compiled Glow log_prob)."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import checks
from gen_jax.flows.glow import GlowConfig, build_glow
from tests.input_errors import input_error

Info = collections.namedtuple("Info", "image_shape num_levels num_classes")
INFO = Info((8, 8, 1), 17, 10)
KEY = jax.random.PRNGKey(0)
EXPECTED = "expected level / (K - 1) in [0, 1] for K = 17 levels"


def _batch(n=2):
    r = np.random.default_rng(0)
    return {"image": jnp.asarray(r.integers(0, 17, (n, 8, 8, 1)) / 16, jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32)}


def _params(model, batch):
    r = np.random.default_rng(1)
    shapes = jax.eval_shape(model.training.init, KEY, batch)
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, 0.05, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def glow():
    model = build_glow(GlowConfig(levels=2, steps_per_level=1, hidden=8), INFO).model
    return model, jax.eval_shape(model.training.init, KEY, _batch())


@pytest.fixture(scope="module")
def cond_glow():
    model = build_glow(GlowConfig(levels=2, steps_per_level=1, hidden=8, conditioning="label"), INFO).model
    return model, jax.eval_shape(model.training.init, KEY, _batch())


def test_dtype(glow):
    model, params = glow
    b = _batch()
    assert input_error(model.likelihood.log_prob, params, {**b, "image": (b["image"] * 16).astype(jnp.int32)}, KEY) == (
        f"log_prob batch['image']: dtype int32; expected float32 {EXPECTED[9:]} "
        "(did you pass int32 levels? divide by 16)")


def test_range(glow):
    model, params = glow
    b = _batch()
    n = int(np.sum(np.asarray(b["image"]) > 0))
    assert input_error(model.likelihood.log_prob, params, {**b, "image": b["image"] * 255}, KEY) == (
        f"log_prob batch['image']: {n} value(s) outside [0, 1] in an input of shape (2, 8, 8, 1) "
        f"(values in [0, 255]); {EXPECTED} "
        "(did you pass [0, 255] pixels? divide by 255 and quantize to the levels)")
    assert input_error(model.codec.encode, params, b["image"] * 255).startswith(f"encode image: {n} value(s) outside [0, 1]")


def test_nan(glow):
    model, params = glow
    b = _batch()
    nan = {**b, "image": jnp.full_like(b["image"], jnp.nan)}
    assert input_error(model.likelihood.log_prob, params, nan, KEY) == (
        f"log_prob batch['image']: 128 non-finite value(s) (NaN/inf) in an input of shape (2, 8, 8, 1); {EXPECTED}")
    # Under jit the values are tracers: the checkify variant checks them in the program.
    log_prob = checks.checked_jit(checks.with_runtime_checks(model).likelihood.log_prob)
    real = _params(model, b)
    assert np.all(np.isfinite(log_prob(real, b, KEY)))
    assert input_error(log_prob, real, nan, KEY) == "log_prob batch['image']: non-finite values (NaN/inf)"


def test_labels(glow, cond_glow):
    model, params = cond_glow
    assert input_error(model.sampler.sample, params, KEY, 2, {"label": jnp.array([10, 0])}) == (
        "sample cond['label'] values lie in [0, 10]; expected [0, 10) (labels: 1 of 2 out of range, e.g. 10)")
    assert input_error(model.likelihood.log_prob, params, {**_batch(), "label": jnp.array([-1, 0])}, KEY) == (
        "log_prob batch['label'] values lie in [-1, 0]; expected [0, 10) (labels: 1 of 2 out of range, e.g. -1)")
    plain, p0 = glow
    assert input_error(plain.sampler.sample, p0, KEY, 2, {"label": jnp.array([1, 3], jnp.int32)}) == (
        "sample: model 'glow' is unconditional; cond={'label': int32[2]} was given")


def test_num(glow):
    model, params = glow
    assert input_error(model.sampler.sample, params, KEY, -1) == "sample: num must be a positive Python int, got -1"
    assert input_error(model.sampler.sample, params, KEY, True) == "sample: num must be a positive Python int, got True"
