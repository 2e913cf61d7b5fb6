"""Discriminator rejection sampling against closed forms: exact density ratios give the target
distribution (Kolmogorov-Smirnov), a fitted discriminator recovers the log ratio of two Gaussians."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gen_jax.gan.networks import MLPDiscriminator
from gen_jax.gan.rejection import acceptance_probability, fit_density_ratio, rejection_sample

SIGMA_G = 2.0  # proposal N(0, 2^2) covers the target N(0, 1)


def _propose(key, n):
    return SIGMA_G * jax.random.normal(key, (n, 1))


def _true_log_ratio(x):
    """log N(x; 0, 1) - log N(x; 0, SIGMA_G^2) for x [N, 1]."""
    x = x[:, 0]
    return -0.5 * x ** 2 + 0.5 * (x / SIGMA_G) ** 2 + jnp.log(SIGMA_G)


def test_acceptance_probability_matches_formulas():
    d = np.array([-3.0, -0.5, 0.0, 1.0])
    np.testing.assert_allclose(acceptance_probability(d, 1.0), np.exp(np.minimum(d - 1.0, 0)), rtol=1e-6)
    gamma, eps = 0.3, 1e-6
    f = (d - 1.0) - np.log(1 - np.exp(d - 1.0 - eps)) - gamma
    np.testing.assert_allclose(acceptance_probability(d, 1.0, gamma, eps), 1 / (1 + np.exp(-f)), rtol=1e-5)


def test_exact_ratio_draws_the_target():
    x, info = rejection_sample(jax.random.PRNGKey(0), _propose, _true_log_ratio, 4000, pool=8000)
    assert x.shape == (4000, 1)
    assert stats.kstest(x[:, 0], "norm").pvalue > 0.01
    # acceptance of exact rejection sampling is 1 / M with M = max p/q = SIGMA_G
    assert abs(info["acceptance"] - 1 / SIGMA_G) < 0.03
    proposals = np.asarray(_propose(jax.random.PRNGKey(1), 4000))[:, 0]
    assert stats.kstest(proposals, "norm").pvalue < 1e-6  # the test can tell the proposal apart


def test_fitted_discriminator_estimates_the_log_ratio():
    real = jax.random.normal(jax.random.PRNGKey(2), (20000, 1))
    disc = MLPDiscriminator(hidden=(32, 32))
    v = fit_density_ratio(jax.random.PRNGKey(3), disc, real, _propose, steps=1500, batch_size=256,
                          learning_rate=3e-3)
    grid = jnp.linspace(-2, 2, 41)[:, None]
    err = np.abs(np.asarray(disc.apply(v, grid, train=False)) - np.asarray(_true_log_ratio(grid)))
    assert err.mean() < 0.15, err.mean()


def test_refuses_bad_input():
    with pytest.raises(ValueError, match="logits must be \\[N\\]"):
        acceptance_probability(jnp.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="real must be points"):
        fit_density_ratio(jax.random.PRNGKey(0), MLPDiscriminator(), jnp.zeros(5), _propose)
    with pytest.raises(RuntimeError, match="raise pool or max_rounds"):
        rejection_sample(jax.random.PRNGKey(0), _propose, lambda x: 100.0 * x[:, 0],  # accepts ~1 per pool
                         10, pool=100, max_rounds=2)
