"""The ahead-of-time compiled sampler of gen_jax.evaluation.sampling: the same draws as the
jitted sampler, its runtime checks kept, and the evaluation's likelihood switch."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.checks import InputError, jit_sample
from gen_jax.evaluation.evaluate import evaluate_params
from gen_jax.evaluation.sampling import compile_sampler, sample_in_batches
from gen_jax.model import DataSpec, GenerativeModel, Likelihood, Sampler, label_conditioning, loss_training


class Info:
    image_shape = (2, 2, 1)
    num_levels = 5
    num_classes = 3


def _model():
    def sample(params, key, num, cond=None):  # random, so that the keys matter
        u = jax.random.uniform(key, (num, 2, 2, 1)) * params["s"]
        return u + cond["label"][:, None, None, None] / 8.0

    def log_prob(params, batch, key):
        return -jnp.sum(batch["image"], axis=(1, 2, 3)).astype(jnp.float32)

    return GenerativeModel(name="fake", family="latent", training=loss_training(lambda k, b: {}, lambda p, b, k: (0.0, {})),
                           sampler=Sampler(sample, "image"), likelihood=Likelihood(log_prob, "exact"),
                           conditioning=label_conditioning(3),
                           data=DataSpec(image_shape=(2, 2, 1), num_levels=5, num_classes=3))


def test_compiled_sampler_draws_what_the_jitted_sampler_draws():
    m, params = _model(), {"s": 0.5}
    cond = {"label": np.array([0, 1, 2, 1], np.int32)}
    fn, seconds = compile_sampler(m, params, 4, cond)
    key = jax.random.PRNGKey(3)
    want = np.asarray(jit_sample(m)(params, key, 4, cond))
    np.testing.assert_array_equal(np.asarray(fn(params, key, cond)), want)
    assert seconds >= 0
    x = sample_in_batches(m, params, key, 7, 4, {"label": np.arange(7) % 3}, compiled=fn)
    y = sample_in_batches(m, params, key, 7, 4, {"label": np.arange(7) % 3})
    np.testing.assert_array_equal(x, y)


def test_compiled_sampler_keeps_the_runtime_label_check():
    m, params = _model(), {"s": 0.5}
    fn, _ = compile_sampler(m, params, 2, {"label": np.array([0, 1], np.int32)})
    with pytest.raises(InputError, match="label"):
        fn(params, jax.random.PRNGKey(0), {"label": jnp.array([0, 7], jnp.int32)})


def test_evaluate_params_can_skip_the_likelihood():
    arrays = {"image": np.ones((5, 2, 2, 1), np.uint8), "label": np.arange(5) % 3}
    m = dataclasses.replace(_model(), sampler=None)
    with_lik = evaluate_params(m, {"s": 0.5}, Info, arrays, None, num_samples=3, batch_size=2)
    assert with_lik.metrics["test_bpd"] > 0 and with_lik.metrics["bpd_kind"] == "exact"
    ev = evaluate_params(m, {"s": 0.5}, Info, arrays, None, num_samples=3, batch_size=2, likelihood=False)
    assert ev.metrics["test_bpd"] is None and ev.metrics["bpd_kind"] is None
