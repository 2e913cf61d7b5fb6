"""gen_jax.distributions.bpd: bits per dimension from log-densities of dequantized data."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.distributions import bpd


def test_bits_per_dim_uniform_model_is_log2_levels():
    # The uniform density on [0,1)^D has log p = 0, i.e. a uniform pmf over K^D grids.
    d, k = 64, 17
    out = bpd.bits_per_dim(jnp.zeros(3), d, k)
    np.testing.assert_allclose(out, math.log2(k), rtol=1e-6)
    # One nat more of log-density lowers bpd by 1 / (D log 2).
    np.testing.assert_allclose(bpd.bits_per_dim(1.0, d, k), math.log2(k) - 1 / (d * math.log(2)),
                               rtol=1e-6)
    np.testing.assert_allclose(bpd.nats_to_bits_per_dim(d * math.log(2), d), 1.0, rtol=1e-6)


def test_bits_per_dim_rejects_bad_dims():
    with pytest.raises(ValueError, match="num_levels"):
        bpd.bits_per_dim(0.0, 10, 1)
    with pytest.raises(ValueError, match="num_dims"):
        bpd.bits_per_dim(0.0, 0, 256)
