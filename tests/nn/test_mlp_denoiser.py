"""The residual MLP denoiser (gen_jax.nn.mlp_denoiser): zero-initialized output, the label
embedding with its null class, input and config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.nn.mlp_denoiser import MLPDenoiser, MLPDenoiserConfig


def test_mlp_denoiser_zero_init_and_labels():
    cfg = MLPDenoiserConfig(width=16, num_blocks=1, time_dim=8, num_classes=3)
    net = MLPDenoiser(cfg, 5)
    z, t = jnp.ones((2, 5)), jnp.array([0, 7])
    params = jax.jit(net.init)(jax.random.PRNGKey(0), z, t, jnp.array([0, 1]))
    np.testing.assert_array_equal(net.apply(params, z, t, jnp.array([0, 1])), 0.0)  # zero init
    r = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + r.normal(0, 0.1, a.shape).astype(a.dtype), params)
    out = jax.jit(lambda p: jnp.stack([net.apply(p, z, t, jnp.array([0, 0])),
                                       net.apply(p, z, t, jnp.array([2, 2])),
                                       net.apply(p, z, t), net.apply(p, z, t, jnp.array([3, 3]))]))(params)
    assert not np.allclose(out[0], out[1], atol=1e-4)  # the label reaches the output
    np.testing.assert_array_equal(out[2], out[3])  # no label = the null class (id 3)
    with pytest.raises(ValueError, match=r"x must be \[B, Z\]"):
        net.apply(params, jnp.ones((2, 1, 5)), t)
    with pytest.raises(ConfigError, match=r"config\.model\.denoiser\.time_dim"):
        MLPDenoiserConfig(time_dim=7)
