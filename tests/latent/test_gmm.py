"""GMM-EM: monotone log-likelihood, agreement with scikit-learn from the same start,
densities vs scipy, the model bundle."""
import collections
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gen_jax.config import ConfigError
from gen_jax.latent import gmm

Info = collections.namedtuple("Info", "image_shape num_levels num_classes vocab_size caption_len")


def _mixture_data(n_per=150, d=3, seed=0):
    r = np.random.default_rng(seed)
    centers = np.array([[0.0] * d, [4.0] * d, [-3.0, 5.0] + [2.0] * (d - 2)])
    parts = [r.normal(size=(n_per, d)) @ r.normal(size=(d, d)) * 0.7 + c for c in centers]
    return np.concatenate(parts)


def test_component_log_probs_match_scipy():
    r = np.random.default_rng(1)
    d, k = 3, 2
    a = r.normal(size=(k, d, d))
    covs = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    means = r.normal(size=(k, d))
    weights = np.array([0.3, 0.7])
    x = r.normal(size=(10, d))
    p = gmm.GMMParams(jnp.asarray(weights, jnp.float32), jnp.asarray(means, jnp.float32), jnp.asarray(covs, jnp.float32))
    ref = np.stack([scipy.stats.multivariate_normal(means[i], covs[i]).logpdf(x) for i in range(k)], 1)
    np.testing.assert_allclose(gmm.component_log_probs(p, jnp.asarray(x, jnp.float32)), ref, rtol=1e-4, atol=1e-4)
    mix = scipy.special.logsumexp(ref + np.log(weights), axis=1)
    np.testing.assert_allclose(gmm.log_prob(p, jnp.asarray(x, jnp.float32)), mix, rtol=1e-4, atol=1e-4)


def test_log_likelihood_never_decreases():
    x = jnp.asarray(_mixture_data(), jnp.float32)
    _, trace = gmm.fit(jax.random.PRNGKey(0), x, 3, 30, 1e-6, init="random")
    trace = np.asarray(trace)
    assert np.all(np.diff(trace) >= -1e-5 * np.abs(trace[:-1])), np.diff(trace).min()
    assert trace[-1] > trace[0]


def test_matches_sklearn_from_same_initialization():
    from sklearn.mixture import GaussianMixture

    x = _mixture_data(seed=2)
    reg, iters = 1e-4, 15
    with jax.enable_x64(True):
        xj = jnp.asarray(x, jnp.float64)
        p0 = gmm.init_params(jax.random.PRNGKey(3), xj, 3, reg, "random")
        assert p0.means.dtype == jnp.float64
        p, _ = gmm.fit(jax.random.PRNGKey(0), xj, 3, iters, reg, params_init=p0)
        ours = np.asarray(gmm.log_prob(p, xj))
    sk = GaussianMixture(3, covariance_type="full", reg_covar=reg, tol=0.0, max_iter=iters,
                         weights_init=np.asarray(p0.weights), means_init=np.asarray(p0.means),
                         precisions_init=np.linalg.inv(np.asarray(p0.covs)),
                         init_params="random_from_data", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never converges
        sk.fit(x)
    assert sk.n_iter_ == iters
    np.testing.assert_allclose(ours, sk.score_samples(x), atol=1e-3)
    np.testing.assert_allclose(np.sort(np.asarray(p.weights)), np.sort(sk.weights_), atol=1e-6)


def test_kmeans_plusplus_picks_distinct_data_points():
    x = jnp.asarray(_mixture_data(), jnp.float32)
    c = gmm.kmeans_plusplus(jax.random.PRNGKey(0), x, 5)
    d = np.asarray(gmm._sq_dists(c, x))
    assert np.all(d.min(1) < 1e-4)  # every center is a data point
    assert len({tuple(np.round(np.asarray(v), 5)) for v in c}) == 5


def test_sample_moments_single_component():
    cov = jnp.array([[1.0, 0.6], [0.6, 2.0]])
    p = gmm.GMMParams(jnp.ones(1), jnp.array([[1.0, -2.0]]), cov[None])
    s = np.asarray(gmm.sample(p, jax.random.PRNGKey(0), 40000))
    np.testing.assert_allclose(s.mean(0), [1.0, -2.0], atol=0.03)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.05)


def test_make_gmm_bundle():
    info = Info((4, 4, 1), 17, 10, 0, 0)
    r = np.random.default_rng(0)
    levels = np.clip(np.round(r.normal(8, 3, size=(200, 4, 4, 1))), 0, 16)
    batch = {"image": jnp.asarray(levels / 16, jnp.float32)}
    model = gmm.make_gmm({"name": "gmm", "num_components": 3, "reg_covar": 1e-4}, info)
    assert model.family == "latent" and model.likelihood.kind == "exact"
    (phase,) = model.training.phases
    assert phase.loss is None and phase.update is not None and phase.group is None
    assert model.sampler.kind == "image" and model.codec is None and not model.conditional
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    update = jax.jit(phase.update)
    lls = []
    for i in range(5):
        params, m = update(params, batch, jax.random.PRNGKey(1))  # same dequantization: plain EM
        lls.append(float(m["loglik"]))
    assert all(b >= a - 1e-3 for a, b in zip(lls, lls[1:])), lls
    lp = model.likelihood.log_prob(params, batch, jax.random.PRNGKey(2))
    assert lp.shape == (200,) and np.all(np.isfinite(np.asarray(lp)))
    s = model.sampler.sample(params, jax.random.PRNGKey(3), 7)
    assert s.shape == (7, 4, 4, 1) and s.dtype == jnp.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(s) * 16, np.round(np.asarray(s) * 16), atol=1e-5)  # on the levels


def test_gmm_config_errors():
    info = Info((4, 4, 1), 17, 10, 0, 0)
    with pytest.raises(ConfigError, match="config.model.num_componets"):
        gmm.make_gmm({"num_componets": 3}, info)
    with pytest.raises(ConfigError, match="config.model.init"):
        gmm.make_gmm({"init": "spectral"}, info)
    with pytest.raises(ConfigError, match="config.model.reg_covar"):
        gmm.make_gmm({"reg_covar": "big"}, info)
