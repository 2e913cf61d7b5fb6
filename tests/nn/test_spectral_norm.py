"""gen_jax.nn.spectral_norm: power iteration (Miyato et al. 2018, Alg. 1) against numpy's SVD."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.nn.spectral_norm import SPECTRAL, SNConv, SNDense, sn_conv, sn_dense


def _layer(kind):
    """(layer, input, kernel-matrix of params, the layer's effective matrix from its outputs)."""
    if kind == "dense":
        layer, x = sn_dense(8), jnp.ones((2, 16))

        def effective(variables):  # rows of an identity input give W_SN + b
            out = layer.apply(variables, jnp.eye(16), False)
            return np.asarray(out - variables["params"]["dense"]["bias"])

        return layer, x, "dense", effective
    layer, x = sn_conv(6, (3, 3), 1, padding="VALID"), jnp.ones((2, 3, 3, 4))

    def effective(variables):  # one-hot 3x3x4 patches give the rows of W_SN reshaped to [36, 6]
        basis = jnp.eye(36).reshape(36, 3, 3, 4)
        out = layer.apply(variables, basis, False).reshape(36, 6)
        return np.asarray(out - variables["params"]["conv"]["bias"])

    return layer, x, "conv", effective


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_power_iteration_converges_to_largest_singular_value(kind):
    layer, x, name, effective = _layer(kind)
    variables = layer.init(jax.random.PRNGKey(0), x, False)
    kernel = np.asarray(jax.random.normal(jax.random.PRNGKey(1), variables["params"][name]["kernel"].shape))
    params = {name: {"kernel": jnp.asarray(kernel), "bias": variables["params"][name]["bias"] + 0.3}}
    spectral = variables[SPECTRAL]
    step = jax.jit(lambda s: layer.apply({"params": params, SPECTRAL: s}, x, True, mutable=[SPECTRAL])[1][SPECTRAL])
    for _ in range(50):
        spectral = step(spectral)
    matrix = kernel.reshape(-1, kernel.shape[-1]).astype(np.float64)
    top = np.linalg.svd(matrix, compute_uv=False)[0]
    sigma = float(spectral["sn"][f"{name}/kernel/sigma"])
    assert abs(sigma - top) / top < 0.01, (sigma, top)
    w_sn = effective({"params": params, SPECTRAL: spectral})
    np.testing.assert_allclose(w_sn, matrix / top, rtol=0, atol=0.01 * np.abs(matrix / top).max())
    assert abs(np.linalg.svd(w_sn, compute_uv=False)[0] - 1.0) < 0.01


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_eval_leaves_collection_unchanged_and_is_deterministic(kind):
    layer, x, name, _ = _layer(kind)
    variables = layer.init(jax.random.PRNGKey(2), x, False)
    assert set(variables) == {"params", SPECTRAL} and SPECTRAL == "spectral"
    assert set(variables["params"][name]) == {"kernel", "bias"}  # no u / sigma among the params
    assert set(variables[SPECTRAL]["sn"]) == {f"{name}/kernel/u", f"{name}/kernel/sigma"}
    x = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    y1, state = layer.apply(variables, x, False, mutable=[SPECTRAL])
    y2 = layer.apply(variables, x, False)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 state[SPECTRAL], variables[SPECTRAL])
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    # Training advances u (and is refused without the collection being mutable).
    _, trained = layer.apply(variables, x, True, mutable=[SPECTRAL])
    u = f"{name}/kernel/u"
    assert not np.array_equal(np.asarray(trained[SPECTRAL]["sn"][u]), np.asarray(variables[SPECTRAL]["sn"][u]))
    with pytest.raises(Exception, match="spectral"):
        layer.apply(variables, x, True)


def test_helpers_build_the_modules():
    assert isinstance(sn_dense(3, name="d"), SNDense) and sn_dense(3, name="d").name == "d"
    c = sn_conv(5, [4, 4], 2, padding="VALID")
    assert isinstance(c, SNConv) and c.kernel_size == (4, 4) and c.strides == 2 and c.padding == "VALID"
    v = c.init(jax.random.PRNGKey(0), jnp.ones((1, 8, 8, 2)), False)
    assert c.apply(v, jnp.ones((1, 8, 8, 2)), False).shape == (1, 3, 3, 5)
