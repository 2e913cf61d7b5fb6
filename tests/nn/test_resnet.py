"""The pre-activation ResNet trunk: every block starts as the identity (its last conv is zero), so at
init a one-stage trunk is its stem; the layers live in the calling module with flat names."""
import flax.linen as nn
import jax
import numpy as np

from gen_jax.nn.resnet import preact_resnet


class Trunk(nn.Module):
    widths: tuple
    blocks: int

    @nn.compact
    def __call__(self, x):
        return preact_resnet(x, self.widths, self.blocks)


def test_blocks_start_as_the_identity_and_names_are_flat():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    m = Trunk((4,), 2)
    p = m.init(jax.random.PRNGKey(1), x)
    stem = p["params"]["stem"]
    ref = jax.lax.conv_general_dilated(2 * x - 1, stem["kernel"], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + stem["bias"]
    np.testing.assert_allclose(m.apply(p, x), ref, rtol=1e-5, atol=1e-6)
    assert set(p["params"]) == {"stem", "s0_b0_gn1", "s0_b0_conv1", "s0_b0_gn2", "s0_b0_conv2",
                                "s0_b1_gn1", "s0_b1_conv1", "s0_b1_gn2", "s0_b1_conv2"}


def test_stages_halve_the_resolution_and_project_the_skip():
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 3))
    m = Trunk((4, 8, 8), 1)
    p = m.init(jax.random.PRNGKey(1), x)
    assert m.apply(p, x).shape == (1, 4, 4, 8)
    assert "s1_b0_skip" in p["params"] and "s2_b0_skip" not in p["params"]
