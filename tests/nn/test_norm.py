"""gen_jax.nn.norm: the fused GroupNorm (+ SiLU) against flax.linen.GroupNorm and autodiff."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.nn.norm import GroupNorm, group_norm


def _reference(x, scale, bias, groups, silu):
    y = nn.GroupNorm(num_groups=groups, epsilon=1e-6).apply({"params": {"scale": scale, "bias": bias}}, x)
    return nn.silu(y) if silu else y


@pytest.mark.parametrize("shape,groups", [((2, 4, 5, 12), 3), ((3, 7, 8), 4), ((2, 6), 2)])
@pytest.mark.parametrize("silu", [False, True])
def test_value_and_vjp_match_flax_autodiff(shape, groups, silu):
    r = np.random.default_rng(0)
    c = shape[-1]
    x = jnp.asarray(2.0 + 3.0 * r.normal(size=shape), jnp.float32)
    scale = jnp.asarray(1.0 + 0.5 * r.normal(size=c), jnp.float32)
    bias = jnp.asarray(r.normal(size=c), jnp.float32)
    dy = jnp.asarray(r.normal(size=shape), jnp.float32)
    got, vjp = jax.vjp(lambda a, s, b: group_norm(a, s, b, groups, 1e-6, silu), x, scale, bias)
    want, vjp_ref = jax.vjp(lambda a, s, b: _reference(a, s, b, groups, silu), x, scale, bias)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
    for g, w in zip(vjp(dy), vjp_ref(dy)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4, rtol=1e-4)


def test_module_params_and_silu_fusion():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 3, 8)), jnp.float32)
    p = GroupNorm(4, silu=True).init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, p) == {"params": {"scale": (8,), "bias": (8,)}}
    fused = GroupNorm(4, silu=True).apply(p, x)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(nn.silu(GroupNorm(4).apply(p, x))), atol=1e-6)


def test_bad_channels_named():
    with pytest.raises(ValueError, match=r"6 channels are not divisible by num_groups=4"):
        GroupNorm(4).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 6)))
    with pytest.raises(ValueError, match=r"x must be \[B, \.\.\., C\]"):
        group_norm(jnp.zeros((6,)), jnp.ones(6), jnp.zeros(6), 2)
