"""Cached samplers of the PixelCNN family (gen_jax.autoregressive.pixelcnn_cached /
pixelcnnpp_cached, Ramachandran et al. 2017) against the re-running reference sampler: the
same images from the same keys, on tiny networks with large random parameters so that every
output depends strongly on its context (a cache that reads a wrong or stale activation
changes the draws), and no full-image convolution inside the cached samplers."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive import image_model as im
from gen_jax.autoregressive.pixelcnnpp_model import build_pixelcnnpp

NUM = 12
# name -> (builder, config, image shape, cond for sampling, sampler kwargs)
CASES = {
    "pixelcnn_rgb": (im.build_pixelcnn, dict(hidden=6, num_blocks=2, first_kernel=3, kernel=3, out_hidden=6),
                     (4, 4, 3), None, dict(temperature=0.7)),
    "gated_label_rgb": (im.build_gated_pixelcnn, dict(hidden=6, num_layers=3, first_kernel=5, kernel=3, out_hidden=6,
                                                      conditioning="label"), (4, 5, 3), "label", {}),
    "gated_caption_gray": (im.build_gated_pixelcnn, dict(hidden=4, num_layers=2, first_kernel=3, kernel=3,
                                                         out_hidden=4, conditioning="caption"), (5, 4, 1), "caption", {}),
    "pixelcnnpp_label_rgb": (build_pixelcnnpp, dict(nr_resnet=1, nr_filters=4, num_stages=2, nr_logistic_mix=2,
                                                    conditional=True), (4, 4, 3), "label", {}),
}


def _info(shape):
    return types.SimpleNamespace(image_shape=shape, num_levels=5, num_classes=3, vocab_size=7, caption_len=3)


def _cond(kind, n):
    if kind == "label":
        return {"label": jnp.arange(n, dtype=jnp.int32) % 3}
    if kind == "caption":
        return {"caption_tokens": (jnp.arange(n * 3, dtype=jnp.int32).reshape(n, 3) * 5) % 7}
    return None


def _conv_inputs(fn, *args):
    """Shapes of the inputs of every convolution in ``fn``'s program (inside loops too)."""
    out = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                out.append(tuple(eqn.invars[0].aval.shape))
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return out


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    build, cfg, shape, cond_kind, kwargs = CASES[request.param]
    parts = build(cfg, _info(shape))
    batch = {"image": jnp.zeros((2,) + shape), **(_cond(cond_kind, 2) or {})}
    # Random params of the init's structure (no init program to compile), larger than the
    # initializers' so that every output depends strongly on its context.
    shapes = jax.eval_shape(parts.model.training.init, jax.random.PRNGKey(0), batch)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(0.0, 0.5, a.shape), a.dtype), shapes)
    cond = _cond(cond_kind, NUM)
    cached = lambda p, k: parts.model.sampler.sample(p, k, NUM, cond, **kwargs)
    naive = lambda p, k: parts.sample_naive(p, k, NUM, cond, **kwargs)
    return types.SimpleNamespace(shape=shape, params=params, cached=cached, naive=naive)


def test_cached_sampler_draws_the_naive_samplers_images(case):
    key = jax.random.PRNGKey(7)
    a = np.asarray(jax.jit(case.cached)(case.params, key))
    b = np.asarray(jax.jit(case.naive)(case.params, key))
    assert a.shape == b.shape == (NUM,) + case.shape
    np.testing.assert_array_equal(a, b)
    # not a degenerate draw: the images differ from one another at most positions
    assert np.mean(a.std(axis=0) > 0) > 0.5


def test_cached_sampler_never_convolves_a_whole_image(case):
    h, w, _ = case.shape
    key = jax.random.PRNGKey(0)
    full = lambda shapes: [s for s in shapes if s[1:3] == (h, w)]
    assert full(_conv_inputs(case.naive, case.params, key))  # the reference re-runs the network
    cached = _conv_inputs(case.cached, case.params, key)
    assert cached and not full(cached)
