"""Bijectors of gen_jax.flows: round trips, forward/inverse log-det symmetry, log-dets against
``slogdet(jax.jacfwd(f))``, ActNorm's data-dependent init, LU vs plain 1x1 convolution,
MADE's autoregressive mask, fresh couplings are the identity, and bad-input errors.

Shapes and parameters are drawn by hypothesis from small sets (each new shape compiles)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gen_jax.flows.actnorm import ActNorm
from gen_jax.flows.autoregressive import IAF, MAF
from gen_jax.flows.bijector import Chain, Invert, check_finite
from gen_jax.flows.conv1x1 import Invertible1x1Conv, random_rotation
from gen_jax.flows.coupling import Coupling
from gen_jax.flows.made import MADE
from gen_jax.flows.multiscale import Split, TopPrior
from gen_jax.flows.permute import Reverse
from gen_jax.flows.preprocess import Affine, Logit
from gen_jax.flows.squeeze import Squeeze, squeeze2x2, unsqueeze2x2

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)
COND_DIM = 3


@functools.lru_cache(maxsize=None)
def _param_shapes(bij, x, cond, method):
    return jax.eval_shape(lambda x, c: bij.init(jax.random.PRNGKey(0), x, c, method=method), x, cond)


def _random_params(bij, x, cond, seed, scale, method="forward"):
    """Random params with the structure ``bij.init`` gives (``eval_shape``: nothing compiled):
    ``N(0, scale^2)`` entries, around the identity for plain 1x1 convolution kernels (so ``W``
    stays invertible). Zero-initialized layers become non-trivial."""
    shapes = _param_shapes(bij, jax.ShapeDtypeStruct(x.shape, x.dtype),
                           None if cond is None else jax.ShapeDtypeStruct(cond.shape, cond.dtype), method)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        v = scale * rng.normal(size=leaf.shape)
        if "Invertible1x1Conv" in jax.tree_util.keystr(path) and path[-1].key == "kernel":
            v = v + np.eye(leaf.shape[0])
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _x(seed, shape, unit=False):
    rng = np.random.default_rng(seed + 7)
    if unit:
        return jnp.asarray(rng.uniform(0.0, 0.999, shape), jnp.float32)
    return jnp.asarray(1.5 * rng.normal(size=shape) + 0.3, jnp.float32)


def _cond(seed, b):
    return jnp.asarray(np.random.default_rng(seed + 11).normal(size=(b, COND_DIM)), jnp.float32)


def _run_checks(bij, params, x, cond):
    """Forward, inverse, and the dense Jacobian of example 0."""
    y, ldj = bij.apply(params, x, cond, method="forward")
    x2, ildj = bij.apply(params, y, cond, method="inverse")

    def f0(v):
        c0 = None if cond is None else cond[:1]
        return bij.apply(params, v.reshape((1,) + x.shape[1:]), c0, method="forward")[0].reshape(-1)

    return dict(y=y, ldj=ldj, x2=x2, ildj=ildj, jac=jax.jacfwd(f0)(x[0].reshape(-1)))


def _assert_checks(name, x, r):
    b = x.shape[0]
    assert r["ldj"].shape == (b,) and r["ildj"].shape == (b,), name
    # inverse(forward(x)) = x; inverse log-det = -forward log-det; log-det = slogdet(jacfwd).
    np.testing.assert_allclose(np.asarray(r["x2"]), np.asarray(x), atol=1e-4, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(np.asarray(r["ildj"]), -np.asarray(r["ldj"]), atol=1e-4, rtol=1e-4, err_msg=name)
    sign, dense = np.linalg.slogdet(np.asarray(r["jac"], np.float64))
    assert sign != 0, name
    np.testing.assert_allclose(float(r["ldj"][0]), dense, rtol=1e-4, atol=2e-4, err_msg=name)


# Shapes are drawn from short lists: every new shape compiles the whole check program once.
IMAGE_SHAPES = [(1, 2, 2, 4), (3, 4, 4, 2)]  # [B, H, W, C]
VECTOR_SHAPES = [(2, 2), (3, 5)]  # [B, D]
seeds = st.integers(0, 2 ** 16)
scales = st.floats(0.01, 0.2)


@functools.lru_cache(maxsize=None)
def _image_bijectors(shape):
    """name -> (bijector, input kind, conditioned)."""
    _, h, w, c = shape
    return {
        "actnorm": (ActNorm(), "normal", False),
        "conv1x1": (Invertible1x1Conv(seed=3), "normal", False),
        "conv1x1_lu": (Invertible1x1Conv(lu=True, seed=3), "normal", False),
        "affine_channel": (Coupling("channel", 0, "affine", hidden=8), "normal", False),
        "affine_channel_tanh_cond": (Coupling("channel", 1, "affine", hidden=8, scale_fn="tanh"), "normal", True),
        "affine_checkerboard": (Coupling("checkerboard", 1, "affine", hidden=8), "normal", False),
        "additive_channel": (Coupling("channel", 1, "additive", hidden=8), "normal", False),
        "additive_checkerboard_cond": (Coupling("checkerboard", 0, "additive", hidden=8), "normal", True),
        "squeeze": (Squeeze(), "normal", False),
        "glow_step": (Chain((ActNorm(), Invertible1x1Conv(lu=True, seed=1), Coupling(hidden=8))), "normal", False),
        "invert_lu": (Invert(Invertible1x1Conv(lu=True, seed=5)), "normal", False),
        "split_learned": (Split(TopPrior((h, w, c // 2), use_cond=True), (h, w, c), "learned", True), "normal", True),
        "split_standard": (Split(TopPrior((h, w, c // 2), learned=False), (h, w, c), "standard"), "normal", False),
        "logit": (Logit(0.05), "unit", False),
        "logit_small_alpha": (Logit(1e-3), "unit", False),
        "affine_const": (Affine(2.5, -0.5), "unit", False),
    }


@functools.lru_cache(maxsize=None)
def _image_program(shape):
    bijs = _image_bijectors(shape)

    def run(params, x, u, cond):
        return {name: _run_checks(b, params[name], u if kind == "unit" else x, cond if c else None)
                for name, (b, kind, c) in bijs.items()}

    return jax.jit(run)


@SETTINGS
@given(shape=st.sampled_from(IMAGE_SHAPES), seed=seeds, scale=scales)
def test_image_bijectors_round_trip_and_log_det(shape, seed, scale):
    x, u, cond = _x(seed, shape), _x(seed, shape, unit=True), _cond(seed, shape[0])
    bijs = _image_bijectors(shape)
    params = {name: _random_params(b, u if kind == "unit" else x, cond if c else None, seed, scale)
              for name, (b, kind, c) in bijs.items()}
    res = _image_program(shape)(params, x, u, cond)
    for name, (_, kind, _) in bijs.items():
        _assert_checks(name, u if kind == "unit" else x, res[name])
    for name in ("split_learned", "split_standard"):
        assert res[name]["y"].shape == (shape[0], int(np.prod(shape[1:]))), name


@functools.lru_cache(maxsize=None)
def _vector_bijectors():
    # (The unconditional MAF is checked inside "chain".)
    return {"iaf": IAF((16,)), "maf_cond": MAF((16, 16)),
            "coupling": Coupling("channel", 1, "affine", hidden=8),
            "coupling_checkerboard": Coupling("checkerboard", 0, "affine", hidden=8),
            "actnorm": ActNorm(),
            "chain": Chain((ActNorm(), MAF((8,)), Reverse(), Invert(MAF((8,))), Coupling("checkerboard", 0, hidden=8)))}


@functools.lru_cache(maxsize=None)
def _vector_program(shape):
    bijs = _vector_bijectors()

    def run(params, x, cond):
        return {name: _run_checks(b, params[name], x, cond if name.endswith("cond") else None)
                for name, b in bijs.items()}

    return jax.jit(run)


@SETTINGS
@given(shape=st.sampled_from(VECTOR_SHAPES), seed=seeds, scale=scales)
def test_vector_bijectors_round_trip_and_log_det(shape, seed, scale):
    x, cond = _x(seed, shape), _cond(seed, shape[0])
    params = {name: _random_params(b, x, cond if name.endswith("cond") else None, seed, scale)
              for name, b in _vector_bijectors().items()}
    res = _vector_program(shape)(params, x, cond)
    for name in _vector_bijectors():
        _assert_checks(name, x, res[name])


@SETTINGS
@given(shape=st.sampled_from(IMAGE_SHAPES), seed=seeds, loc=st.floats(-3, 3), sd=st.floats(0.1, 5))
def test_actnorm_data_dependent_init(shape, seed, loc, sd):
    x = jnp.asarray(sd * np.random.default_rng(seed).normal(size=shape) + loc, jnp.float32)
    params = ActNorm().init(jax.random.PRNGKey(0), x, method="forward")
    y, _ = ActNorm().apply(params, x, method="forward")
    np.testing.assert_allclose(np.mean(np.asarray(y), axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.var(np.asarray(y), axis=(0, 1, 2)), 1.0, rtol=1e-3)


@settings(max_examples=3, deadline=None, derandomize=True)
@given(c=st.sampled_from([2, 3, 5]), seed=seeds)
def test_lu_conv_agrees_with_plain_conv(c, seed):
    w = np.asarray(random_rotation(seed, c)) @ np.diag(np.linspace(0.5, 2.0, c)) @ random_rotation(seed + 1, c)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(2, 3, 3, c)), jnp.float32)
    out = []
    for lu in (False, True):
        bij = Invertible1x1Conv(lu=lu, w_init=tuple(map(tuple, w)))
        params = bij.init(jax.random.PRNGKey(0), x, method="forward")
        out.append(bij.apply(params, x, method="forward"))
    np.testing.assert_allclose(out[1][0], out[0][0], atol=1e-4)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[0][1][0], 9 * np.linalg.slogdet(w)[1], rtol=1e-4, atol=1e-4)
    # The same seed gives the same initial W in both parameterizations.
    same = [Invertible1x1Conv(lu=lu, seed=seed).apply(
        Invertible1x1Conv(lu=lu, seed=seed).init(jax.random.PRNGKey(0), x, method="forward"), x, method="forward")[0]
        for lu in (False, True)]
    np.testing.assert_allclose(same[0], same[1], atol=1e-5)


def test_made_is_autoregressive():
    d = 5
    made = MADE((12, 12), num_params=2)
    x = jnp.ones((1, d))
    params = _random_params(made, x, None, 0, 0.5, method=None)
    jac = jax.jacfwd(lambda v: made.apply(params, v[None])[0])(x[0])  # [2, D, D]
    for p in range(2):
        assert np.all(np.triu(np.abs(np.asarray(jac[p]))) == 0)  # output i sees only inputs < i
        assert np.any(np.tril(np.abs(np.asarray(jac[p])), -1) > 0)


def test_fresh_couplings_and_priors_are_the_identity():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 4))
    bij = Chain((Coupling("channel", 0), Coupling("checkerboard", 1, "affine", scale_fn="tanh"),
                 Coupling("channel", 1, "additive"), Split(TopPrior((4, 4, 2)), (4, 4, 4))))
    y, ldj = jax.jit(lambda x: bij.init_with_output(jax.random.PRNGKey(1), x, method="forward")[0])(x)
    np.testing.assert_array_equal(np.asarray(ldj), 0.0)
    expect = jnp.concatenate([x[..., 2:].reshape(2, -1), x[..., :2].reshape(2, -1)], -1)
    np.testing.assert_allclose(y, expect, atol=1e-6)


def test_squeeze_layout_and_inverse():
    x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
    y = squeeze2x2(x)
    assert y.shape == (2, 2, 3, 12)
    np.testing.assert_array_equal(y[1, 1, 2, (2 * 1 + 0) * 3 + 2], x[1, 3, 4, 2])  # (di, dj) = (1, 0)
    np.testing.assert_array_equal(unsqueeze2x2(y), x)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"spatial size must be even.*\(1, 3, 4, 1\)"):
        squeeze2x2(jnp.zeros((1, 3, 4, 1)))
    with pytest.raises(ValueError, match=r"channel count must be even.*\(2, 2, 3\)"):
        Split(TopPrior((2, 2, 1)), (2, 2, 3)).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)), method="forward")
    with pytest.raises(ValueError, match=r"channel mask needs at least 2 channels.*\(1, 2, 2, 1\)"):
        Coupling("channel").init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 1)), method="forward")
    singular = ((1.0, 2.0), (2.0, 4.0))
    for lu in (False, True):
        with pytest.raises(ValueError, match=r"w_init.*singular"):
            Invertible1x1Conv(lu=lu, w_init=singular).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 2)),
                                                           method="forward")
    with pytest.raises(ValueError, match=r"w_init: must be \[3, 3\].*\(2, 2\)"):
        Invertible1x1Conv(w_init=((1.0, 0.0), (0.0, 1.0))).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 3)),
                                                                method="forward")
    with pytest.raises(ValueError, match=r"batch\['x'\]: 1 non-finite value.*\(2, 3\)"):
        check_finite(jnp.array([[0.0, 1.0, np.nan], [0.0, 0.0, 0.0]]), "batch['x']")
    with pytest.raises(ValueError, match="Logit.alpha"):
        Logit(0.5).forward(jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"vectors \[B, D\].*\(2, 2, 2\)"):
        MAF().init(jax.random.PRNGKey(0), jnp.zeros((2, 2, 2)), method="forward")
