"""Noise schedules (gen_jax.diffusion.schedules): the derived constants, the cosine
schedule, bad arguments."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.diffusion import schedules


@pytest.fixture(scope="module")
def lin1000():
    return schedules.make_schedule("linear", 1000)


# ----------------------------------------------------------------------------------------
# Schedules.
# ----------------------------------------------------------------------------------------


def test_schedule_constants(lin1000):
    s = lin1000
    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    np.testing.assert_allclose(s.betas, b, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bars, ab, rtol=1e-5)
    np.testing.assert_allclose(s.alpha_bars_prev[1:], ab[:-1], rtol=1e-5)
    assert s.alpha_bars_prev[0] == 1.0 and s.posterior_variance[0] == 0.0
    np.testing.assert_allclose(s.posterior_log_variance_clipped[0], s.posterior_log_variance_clipped[1])
    # Cosine: alpha_bar_t follows Eq. 17 wherever beta is not clipped.
    c = schedules.make_schedule("cosine", 1000)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    want = f(np.arange(1, 1001) / 1000) / f(0)
    np.testing.assert_allclose(c.alpha_bars[:990], want[:990], rtol=1e-4)
    assert float(jnp.max(c.betas)) <= 0.999 + 1e-7
    assert jax.tree.leaves(s)[0].shape == (1000,)  # a pytree


@pytest.mark.parametrize("kind,t,match", [("quadratic", 10, "unknown schedule kind"),
                                          ("linear", 0, "num_timesteps"),
                                          ("cosine", 2.5, "num_timesteps"),
                                          ("linear", True, "num_timesteps")])
def test_schedule_errors(kind, t, match):
    with pytest.raises(ValueError, match=match):
        schedules.make_schedule(kind, t)


def test_schedule_bad_params():
    with pytest.raises(ValueError, match="beta_start"):
        schedules.make_schedule("linear", 10, beta_start=0.5, beta_end=0.1)
    with pytest.raises(ValueError, match="bad arguments"):
        schedules.make_schedule("cosine", 10, beta_end=0.1)
