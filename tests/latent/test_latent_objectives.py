"""Bounds of gen_jax.latent.objectives (ELBO, IWAE) on an exactly solvable linear-Gaussian
model; chunked IWAE evaluation."""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from gen_jax import distributions as dist
from gen_jax.latent import objectives

# ----------------------------------------------------------------------------------------
# Linear-Gaussian model: z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_4), p(x) = N(b, W W^T + s^2 I).
# W has orthogonal columns, so the exact posterior N(m, S) is diagonal:
# S = (I + W^T W / s^2)^-1, m = S W^T (x - b) / s^2.
# ----------------------------------------------------------------------------------------

S_NOISE = 0.5
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
W = _Q[:, :2] * np.array([1.5, 0.8])
B_VEC = np.array([0.2, -0.1, 0.4, 0.0])


def _lg_data(n=64):
    r = np.random.default_rng(1)
    z = r.normal(size=(n, 2))
    x = z @ W.T + B_VEC + S_NOISE * r.normal(size=(n, 4))
    log_px = scipy.stats.multivariate_normal(B_VEC, W @ W.T + S_NOISE ** 2 * np.eye(4)).logpdf(x)
    return x, log_px


def _exact_posterior(x):
    s_diag = 1.0 / (1.0 + np.diag(W.T @ W) / S_NOISE ** 2)
    mean = (x - B_VEC) @ W / S_NOISE ** 2 * s_diag
    return mean, np.broadcast_to(np.log(s_diag), mean.shape)


def _lg_recon(x_img, z):
    """log p(x | z) for images [N, 2, 2, 1] and z [N, 2] (objectives.gaussian_reconstruction)."""
    mean = (z @ jnp.asarray(W.T, jnp.float32) + jnp.asarray(B_VEC, jnp.float32)).reshape(-1, 2, 2, 1)
    return objectives.gaussian_reconstruction(x_img, mean, jnp.log(jnp.float32(S_NOISE)))


def _log_weight_fn(x, q_mean, q_log_var):
    x_img = jnp.asarray(x, jnp.float32).reshape(-1, 2, 2, 1)
    q_mean, q_log_var = jnp.asarray(q_mean, jnp.float32), jnp.asarray(q_log_var, jnp.float32)

    def fn(key, n):
        b = q_mean.shape[0]
        z = dist.gaussian_sample(key, jnp.broadcast_to(q_mean, (n, b, 2)), q_log_var)
        recon = _lg_recon(jnp.tile(x_img, (n, 1, 1, 1)), z.reshape(n * b, 2)).reshape(n, b)
        return recon + dist.gaussian_log_prob(z, 0.0, jnp.zeros(())) - dist.gaussian_log_prob(z, q_mean, q_log_var)

    return fn


def test_exact_posterior_makes_elbo_equal_log_px():
    x, log_px = _lg_data()
    m, lv = _exact_posterior(x)
    fn = _log_weight_fn(x, m, lv)
    # log w = log p(x, z) - log q(z | x) = log p(x) for every z.
    lw = np.asarray(jax.jit(fn, static_argnums=1)(jax.random.PRNGKey(0), 5))
    np.testing.assert_allclose(lw, np.broadcast_to(log_px, lw.shape), atol=2e-4)
    # The analytic-KL ELBO estimator (Kingma & Welling Eq. 10) averages to log p(x).
    n = 4000
    z = dist.gaussian_sample(jax.random.PRNGKey(1), jnp.broadcast_to(jnp.asarray(m, jnp.float32), (n,) + m.shape),
                             jnp.asarray(lv, jnp.float32))
    x_img = jnp.tile(jnp.asarray(x, jnp.float32).reshape(-1, 2, 2, 1), (n, 1, 1, 1))
    recon = _lg_recon(x_img, z.reshape(-1, 2)).reshape(n, -1)
    terms = objectives.elbo(recon, jnp.asarray(m, jnp.float32), jnp.asarray(lv, jnp.float32))
    elbo = np.asarray(terms["elbo"])
    se = elbo.std(0) / np.sqrt(n)
    assert np.all(np.abs(elbo.mean(0) - log_px) < 4 * se + 1e-4)


def test_elbo_and_iwae_bounds_with_inexact_posterior():
    x, log_px = _lg_data()
    m, lv = _exact_posterior(x)
    q_mean, q_log_var = 0.5 * m + 0.3, lv + np.log(2.5)  # deliberately wrong posterior
    fn = _log_weight_fn(x, q_mean, q_log_var)
    key = jax.random.PRNGKey(2)

    @jax.jit
    def run(key):
        elbo = jnp.mean(fn(jax.random.fold_in(key, 0), 2000), 0)  # [B] Monte Carlo ELBO
        # Each IWAE-k averaged over 4 independent evaluations and the batch, so that the
        # monotonicity in expectation (Burda et al. 2016, Thm. 1) shows reliably.
        bounds = [jnp.mean(jax.vmap(lambda kk: objectives.iwae_bound(kk, fn, k, 100))(
            jax.random.split(jax.random.fold_in(key, k), 4))) for k in (1, 10, 100, 1000)]
        return elbo, jnp.stack(bounds)

    elbo, bounds = map(np.asarray, run(key))
    assert np.all(elbo < log_px)
    bounds = dict(zip((1, 10, 100, 1000), bounds.tolist()))
    seq = [bounds[k] for k in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(seq, seq[1:])), seq
    assert seq[-1] <= log_px.mean() + 0.01
    gap_elbo = log_px.mean() - elbo.mean()
    assert log_px.mean() - seq[-1] < 0.25 * gap_elbo, (seq, log_px.mean(), gap_elbo)


def test_iwae_bound_chunking_matches_direct_logsumexp():
    def fn(key, n):
        return jax.random.normal(key, (n, 3)) * 2.0

    key = jax.random.PRNGKey(0)
    got = objectives.iwae_bound(key, fn, 10, chunk_size=3)
    lw = jnp.concatenate([fn(jax.random.fold_in(key, i), 3) for i in range(3)] + [fn(jax.random.fold_in(key, 3), 1)])
    np.testing.assert_allclose(got, jax.nn.logsumexp(lw, 0) - np.log(10.0), rtol=1e-6)

