"""Distributions vs closed forms, scipy, Monte Carlo, and normalization over all bins."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gen_jax import distributions as dist


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_gaussian_log_prob_and_entropy_match_scipy():
    r = _rng(0)
    x, mu = r.normal(size=(5, 3)), r.normal(size=(5, 3))
    log_var = r.normal(size=(5, 3))
    sd = np.exp(0.5 * log_var)
    ours = dist.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(log_var))
    ref = scipy.stats.norm.logpdf(x, mu, sd).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dist.gaussian_entropy(jnp.asarray(log_var)),
                               scipy.stats.norm.entropy(0.0, sd).sum(-1), rtol=1e-5)
    # Image-shaped events: [B, H, W, C] summed over the last 3 axes.
    xi = r.normal(size=(2, 4, 4, 3))
    np.testing.assert_allclose(dist.gaussian_log_prob(jnp.asarray(xi), 0.0, jnp.zeros(()), event_ndims=3),
                               scipy.stats.norm.logpdf(xi).sum((1, 2, 3)), rtol=1e-5)


def test_reparameterized_sample_moments():
    mu, log_var = jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.25, 4.0]))
    z = dist.gaussian_sample(jax.random.PRNGKey(0), jnp.broadcast_to(mu, (50000, 2)), log_var)
    np.testing.assert_allclose(z.mean(0), mu, atol=0.03)
    np.testing.assert_allclose(z.var(0), jnp.exp(log_var), rtol=0.03)


@pytest.mark.parametrize("against_standard", [True, False])
def test_closed_form_kl_matches_monte_carlo(against_standard):
    r = _rng(1)
    z_dim, n = 4, 200_000
    mq, lq = jnp.asarray(r.normal(size=z_dim)), jnp.asarray(r.normal(size=z_dim) * 0.5)
    if against_standard:
        mp, lp = jnp.zeros(z_dim), jnp.zeros(z_dim)
        kl = dist.kl_standard_normal(mq, lq)
    else:
        mp, lp = jnp.asarray(r.normal(size=z_dim)), jnp.asarray(r.normal(size=z_dim) * 0.5)
        kl = dist.kl_gaussians(mq, lq, mp, lp)
    z = dist.gaussian_sample(jax.random.PRNGKey(2), jnp.broadcast_to(mq, (n, z_dim)), lq)
    terms = np.asarray(dist.gaussian_log_prob(z, mq, lq) - dist.gaussian_log_prob(z, mp, lp), np.float64)
    se = terms.std() / math.sqrt(n)
    assert abs(terms.mean() - float(kl)) < 4 * se, (terms.mean(), float(kl), se)
    assert float(kl) > 0


def test_kl_of_identical_gaussians_is_zero():
    m, lv = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, -0.7]])
    np.testing.assert_allclose(dist.kl_gaussians(m, lv, m, lv), [0.0], atol=1e-6)
    np.testing.assert_allclose(dist.kl_standard_normal(jnp.zeros((1, 2)), jnp.zeros((1, 2))), [0.0], atol=1e-7)


def test_bernoulli_matches_direct_formula():
    r = _rng(3)
    x = r.uniform(size=(3, 4, 4, 1))
    logits = r.normal(size=(3, 4, 4, 1)) * 3
    p = 1.0 / (1.0 + np.exp(-logits))
    ref = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum((1, 2, 3))
    np.testing.assert_allclose(dist.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits), 3), ref,
                               rtol=1e-5, atol=1e-5)
    # Stable at extreme logits (no inf/nan).
    ext = dist.bernoulli_log_prob(jnp.array([1.0, 0.0]), jnp.array([-200.0, 200.0]), 0)
    np.testing.assert_allclose(ext, [-200.0, -200.0], rtol=1e-6)


def test_categorical_and_pixel_categorical():
    r = _rng(4)
    logits = r.normal(size=(2, 3, 3, 1, 5))
    levels = r.integers(0, 5, size=(2, 3, 3, 1))
    logp = logits - scipy.special.logsumexp(logits, -1, keepdims=True)
    ref = np.take_along_axis(logp, levels[..., None], -1)[..., 0].sum((1, 2, 3))
    np.testing.assert_allclose(dist.pixel_categorical_log_prob(jnp.asarray(levels), jnp.asarray(logits)),
                               ref, rtol=1e-5)
    s = dist.pixel_categorical_sample(jax.random.PRNGKey(0), jnp.asarray(logits))
    assert s.shape == levels.shape and s.dtype == jnp.int32 and int(s.max()) < 5


def _dlm_params(r, lead, c, m, log_scale_range, mean_choices):
    logit_probs = r.normal(size=lead + (m,)) * 2
    means = r.choice(mean_choices, size=lead + (c, m)) + r.normal(size=lead + (c, m)) * 0.01
    log_scales = r.uniform(*log_scale_range, size=lead + (c, m))
    coeffs = np.tanh(r.normal(size=lead + (c * (c - 1) // 2, m))) if c > 1 else None
    return dist.LogisticMixture(jnp.asarray(logit_probs, jnp.float32), jnp.asarray(means, jnp.float32),
                                jnp.asarray(log_scales, jnp.float32),
                                None if coeffs is None else jnp.asarray(coeffs, jnp.float32))


@pytest.mark.parametrize("num_levels", [17, 256])
@pytest.mark.parametrize("log_scale_range", [(-12.0, -6.0), (-3.0, 1.0), (4.0, 8.0)])
def test_logistic_mixture_sums_to_one_single_channel(num_levels, log_scale_range):
    """Sum over all K bins of one sub-pixel, for 6 random pixels with means at the edges,
    inside, and beyond [-1, 1]."""
    r = _rng(5)
    params = _dlm_params(r, (1, 1, 6), 1, 4, log_scale_range, [-1.0, 1.0, 0.0, -1.3, 1.3, 0.37])
    levels = jnp.broadcast_to(jnp.arange(num_levels)[:, None, None, None], (num_levels, 1, 6, 1))
    bparams = dist.LogisticMixture(*[jnp.broadcast_to(a, (num_levels,) + a.shape[1:])
                                     for a in params if a is not None])
    # Levels [K, H=1, W=6, C=1]: log P of every level for 6 pixels, no event reduction.
    lp = dist.discretized_logistic_mixture_log_prob(levels, bparams, num_levels, event_ndims=0)
    assert lp.shape == (num_levels, 1, 6)
    total = np.exp(np.asarray(lp, np.float64)).sum(0)  # [1, 6]
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(lp)))


def test_logistic_mixture_sums_to_one_coupled_rgb():
    """Three coupled channels (Salimans et al. 2017, Sec. 2.2): the joint over all 17^3 RGB
    values sums to 1."""
    k = 17
    r = _rng(6)
    params = _dlm_params(r, (1, 1, 1), 3, 3, (-4.0, 0.5), [-1.0, 1.0, 0.2])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 1, 1, 3)
    n = grid.shape[0]
    bparams = dist.LogisticMixture(*[jnp.broadcast_to(a, (n,) + a.shape[1:]) for a in params])
    lp = dist.discretized_logistic_mixture_log_prob(jnp.asarray(grid), bparams, k, event_ndims=2)
    np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(), 1.0, atol=1e-5)


def test_logistic_mixture_sampler_matches_probabilities():
    k, n = 17, 40_000
    params = dist.LogisticMixture(jnp.array([[[[0.3, -0.5]]]]), jnp.array([[[[[-0.4, 0.8]]]]]),
                                  jnp.array([[[[[-1.5, -2.5]]]]]))  # [N, H, W, (C,) M]
    lp = dist.discretized_logistic_mixture_log_prob(
        jnp.arange(k).reshape(k, 1, 1, 1),
        dist.LogisticMixture(*[jnp.broadcast_to(a, (k,) + a.shape[1:]) for a in params if a is not None]),
        k, event_ndims=2)
    probs = np.exp(np.asarray(lp))
    bparams = dist.LogisticMixture(*[jnp.broadcast_to(a, (n,) + a.shape[1:]) for a in params if a is not None])
    s = np.asarray(dist.discretized_logistic_mixture_sample(jax.random.PRNGKey(0), bparams, k)).ravel()
    freq = np.bincount(s, minlength=k) / n
    assert np.all(np.abs(freq - probs) <= 4 * np.sqrt(probs * (1 - probs) / n) + 1e-3), (freq, probs)


def test_unpack_logistic_mixture_shapes_and_errors():
    raw = jnp.zeros((2, 4, 4, dist.logistic_mixture_num_params(3, 5, True)))
    p = dist.unpack_logistic_mixture(raw, 3, 5, True)
    assert p.logit_probs.shape == (2, 4, 4, 5) and p.means.shape == (2, 4, 4, 3, 5)
    assert p.coeffs.shape == (2, 4, 4, 3, 5)
    with pytest.raises(ValueError, match="features per pixel"):
        dist.unpack_logistic_mixture(raw[..., :-1], 3, 5, True)


def test_dequantize_quantize_round_trip():
    k = 17
    levels = jnp.arange(k, dtype=jnp.float32)
    img = levels / (k - 1)
    y = dist.dequantize(jax.random.PRNGKey(0), jnp.tile(img, (100, 1)), k)
    assert float(y.min()) >= 0.0 and float(y.max()) < 1.0
    np.testing.assert_array_equal(dist.to_levels(dist.quantize(y, k), k), jnp.tile(levels, (100, 1)))
