"""The Gaussian diffusion (gen_jax.diffusion.gaussian_diffusion) against closed forms and
independent references: the forward chain vs its marginal, the posterior vs Bayes' rule,
parameterizations, the discretized decoder vs scipy, the variational bound (terms, prior term,
oracle sanity), hybrid and score-matching losses, bad input."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import schedules
from gen_jax.diffusion import sde as sde_lib


@pytest.fixture(scope="module")
def lin1000():
    return schedules.make_schedule("linear", 1000)


# ----------------------------------------------------------------------------------------
# Forward process and posterior.
# ----------------------------------------------------------------------------------------


def test_one_step_chain_matches_marginal(lin1000):
    """x_t built from t transitions q(x_t | x_{t-1}) has the moments of q(x_t | x_0) (Eq. 4)."""
    s = lin1000
    n = 2000
    x0 = jnp.array([-1.0, -0.3, 0.5, 1.0])
    xs = jnp.broadcast_to(x0, (n, 4))

    @jax.jit
    def run(key):
        def body(x, t):
            x = gd.q_step_sample(s, x, jnp.full((n,), t), jax.random.normal(jax.random.fold_in(key, t), x.shape))
            return x, (jnp.mean(x, 0), jnp.var(x, 0, ddof=1))
        return jax.lax.scan(body, xs, jnp.arange(1000))[1]

    means, variances = map(np.asarray, run(jax.random.PRNGKey(0)))
    ab = np.asarray(s.alpha_bars, np.float64)[:, None]
    want_m, want_v = np.sqrt(ab) * np.asarray(x0), 1 - ab
    # Standard errors of a sample mean and sample variance of n Gaussian draws; 5 SE keeps the
    # family of 8000 comparisons honest (P(|Z| > 5) = 6e-7 each).
    assert np.all(np.abs(means - want_m) < 5 * np.sqrt(want_v / n))
    assert np.all(np.abs(variances - want_v) < 5 * want_v * np.sqrt(2 / (n - 1)))
    # The closed-form sampler agrees in distribution too (same check at one t).
    t = 300
    xt = gd.q_sample(s, xs, jnp.full((n,), t), jax.random.normal(jax.random.PRNGKey(1), xs.shape))
    assert np.all(np.abs(np.mean(xt, 0) - want_m[t]) < 5 * np.sqrt(want_v[t] / n))


def test_posterior_is_bayes_rule(lin1000):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): product of Gaussians in numpy."""
    b = np.linspace(1e-4, 0.02, 1000)
    ab = np.cumprod(1 - b)
    r = np.random.default_rng(0)
    t = np.array([1, 2, 10, 500, 999])
    x0 = r.uniform(-1, 1, (5, 3))
    xt = r.normal(size=(5, 3))
    prior_var = 1 - ab[t - 1]  # q(x_{t-1} | x_0) = N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1})
    prec = 1 / prior_var + (1 - b[t]) / b[t]  # likelihood in x_{t-1}: N(x_t; sqrt(a_t) x_{t-1}, b_t)
    var = 1 / prec
    mean = var[:, None] * (np.sqrt(ab[t - 1])[:, None] * x0 / prior_var[:, None]
                           + np.sqrt(1 - b[t])[:, None] * xt / b[t][:, None])
    m, v, lv = gd.q_posterior_mean_variance(lin1000, jnp.asarray(x0, jnp.float32),
                                            jnp.asarray(xt, jnp.float32), jnp.asarray(t))
    np.testing.assert_allclose(m, mean, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(v[:, 0], var, rtol=2e-4)
    np.testing.assert_allclose(lv[:, 0], np.log(var), atol=2e-4)
    # Index 0 (paper t = 1): the posterior is the point mass at x_0.
    m0, v0, _ = gd.q_posterior_mean_variance(lin1000, jnp.asarray(x0, jnp.float32),
                                             jnp.asarray(xt, jnp.float32), jnp.zeros(5, jnp.int32))
    np.testing.assert_allclose(m0, x0, atol=1e-6)
    assert np.all(np.asarray(v0) == 0)


def test_parameterizations_round_trip(lin1000):
    s = lin1000
    t = jnp.array([0, 1, 10, 400, 800, 999])

    @jax.jit
    def compute(key):
        k1, k2 = jax.random.split(key)
        x0 = jax.random.uniform(k1, (6, 4, 4, 2), minval=-1, maxval=1)
        eps = jax.random.normal(k2, x0.shape)
        xt = gd.q_sample(s, x0, t, eps)
        v = gd.v_from_x0_eps(s, x0, t, eps)
        preds = dict(eps=eps, x0=x0, v=v)
        conv = {n: gd.to_x0_eps(s, xt, t, p, n) for n, p in preds.items()}
        targets = {n: gd.target_for(s, x0, t, eps, n) for n in preds}
        mean = gd.p_mean_variance(s, eps, xt, t, "eps")["mean"]
        bt = s.betas[t].reshape(-1, 1, 1, 1)
        # Ho et al. Eq. 11: mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t).
        eq11 = (xt - bt / jnp.sqrt(1 - s.alpha_bars[t]).reshape(-1, 1, 1, 1) * eps) / jnp.sqrt(1 - bt)
        return x0, eps, preds, conv, targets, mean, eq11

    x0, eps, preds, conv, targets, mean, eq11 = compute(jax.random.PRNGKey(0))
    for name, pred in preds.items():
        x0h, epsh = conv[name]
        np.testing.assert_allclose(x0h, x0, atol=3e-3 if name == "eps" else 1e-4)  # eps->x0 divides by sqrt(abar)
        np.testing.assert_allclose(epsh, eps, atol=1e-3 if name == "x0" else 1e-4)
        np.testing.assert_allclose(targets[name], pred)
    np.testing.assert_allclose(mean, eq11, atol=2e-5)
    # v = sqrt(abar) eps - sqrt(1 - abar) x0 is a rotation of (eps, x0): unit coefficient norm.
    np.testing.assert_allclose(np.square(s.sqrt_alpha_bars) + np.square(s.sqrt_one_minus_alpha_bars), 1.0, atol=1e-6)


def test_variance_types(lin1000):
    s = lin1000
    x = jnp.zeros((3, 2, 2, 1))
    t = jnp.array([0, 5, 999])
    out = jnp.zeros_like(x)

    @jax.jit
    def compute():
        small = gd.p_mean_variance(s, out, x, t, var_type="fixed_small")["variance"]
        large = gd.p_mean_variance(s, out, x, t, var_type="fixed_large")["variance"]
        learned = [gd.p_mean_variance(s, jnp.concatenate([out, jnp.full_like(out, raw)], -1), x, t,
                                      var_type="learned_range")["log_variance"] for raw in (1.0, -1.0, 0.0)]
        return small, large, learned

    small, large, learned = compute()
    np.testing.assert_allclose(small[1:, 0, 0, 0], s.posterior_variance[t[1:]], rtol=1e-6)
    np.testing.assert_allclose(large[1:, 0, 0, 0], s.betas[t[1:]], rtol=1e-6)
    np.testing.assert_allclose(large[0, 0, 0, 0], s.posterior_variance[1], rtol=1e-6)
    # Nichol & Dhariwal Eq. 15: raw +1 -> beta_t, raw -1 -> beta~_t, 0 -> geometric mean.
    wants = [np.log(s.betas[t]), s.posterior_log_variance_clipped[t],
             0.5 * (np.log(s.betas[t]) + s.posterior_log_variance_clipped[t])]
    for lv, want in zip(learned, wants):
        np.testing.assert_allclose(lv[:, 0, 0, 0], want, rtol=1e-5)
    with pytest.raises(ValueError, match="learned_range"):
        gd.p_mean_variance(s, out, x, t, var_type="learned_range")
    with pytest.raises(ValueError, match="var_type"):
        gd.p_mean_variance(s, out, x, t, var_type="tiny")
    with pytest.raises(ValueError, match=r"t must be \[B\]"):
        gd.p_mean_variance(s, out, x, t[:2])


@pytest.mark.parametrize("k", [2, 17, 256])
def test_discretized_gaussian_vs_scipy(k):
    levels = np.arange(k)
    x = 2 * levels / (k - 1) - 1
    means, sds = np.array([0.0, 0.9, -0.99, 0.2]), np.array([0.3, 0.01, 1e-3, 5.0])
    lp = jax.jit(gd.discretized_gaussian_log_likelihood, static_argnums=3)(
        jnp.asarray(np.tile(x, (4, 1)), jnp.float32), jnp.asarray(means[:, None], jnp.float32),
        jnp.asarray(np.log(sds)[:, None], jnp.float32), k)
    lp = np.asarray(lp, np.float64)
    hi = np.where(levels == k - 1, np.inf, x + 1 / (k - 1))
    lo = np.where(levels == 0, -np.inf, x - 1 / (k - 1))
    for i, (mean, sd) in enumerate(zip(means, sds)):
        p = scipy.stats.norm.cdf(hi, mean, sd) - scipy.stats.norm.cdf(lo, mean, sd)
        np.testing.assert_allclose(np.exp(lp[i]).sum(), 1.0, atol=1e-4)
        big = p > 1e-6
        np.testing.assert_allclose(lp[i][big], np.log(p[big]), atol=2e-3, rtol=1e-3)
        assert np.all(np.isfinite(lp[i]))


# ----------------------------------------------------------------------------------------
# The variational bound.
# ----------------------------------------------------------------------------------------


def test_prior_term_below_1e4_bits_per_dim():
    x0 = jnp.array([[-1.0, 1.0, 0.0, 0.5]])  # |x0| = 1 is the worst case on [-1, 1]
    for kind in ("linear", "cosine"):
        s = schedules.make_schedule(kind, 1000)
        bpd = float(gd.prior_kl(s, x0)[0]) / (4 * math.log(2))
        assert 0 <= bpd < 1e-4, (kind, bpd)


def _gauss_eps_fn(schedule, mu, var):
    """Oracle E[eps | x_t] for Gaussian data N(mu, diag(var)): s (x_t - m mu) / (m^2 var + s^2)."""
    mu, var = jnp.asarray(mu, jnp.float32), jnp.asarray(var, jnp.float32)

    def eps_fn(x, t, cond=None):
        m = schedule.sqrt_alpha_bars[t][:, None]
        s = schedule.sqrt_one_minus_alpha_bars[t][:, None]
        return s * (x - m * mu) / (m ** 2 * var + s ** 2)

    return eps_fn


def _level_posterior_x0_fn(schedule, log_p, grid):
    """Bayes-optimal E[x_0 | x_t] for data with independent discrete coordinates,
    ``log_p [D, K]`` over the level values ``grid [K]``: a softmax over the K levels."""
    log_p, grid = jnp.asarray(log_p, jnp.float32), jnp.asarray(grid, jnp.float32)

    def x0_fn(x, t, cond=None):
        m = schedule.sqrt_alpha_bars[t][:, None, None]
        s = schedule.sqrt_one_minus_alpha_bars[t][:, None, None]
        logits = log_p[None] - jnp.square(x[..., None] - m * grid) / (2 * s ** 2)
        return jnp.sum(jax.nn.softmax(logits, -1) * grid, -1)

    return x0_fn


def _discrete_gaussian_data(k, mu, sd, n, seed=0):
    """Levels of N(mu, diag(sd^2)) binned into K bins with edges to +-inf (D = len(mu))."""
    grid = 2 * np.arange(k) / (k - 1) - 1
    hi = np.where(np.arange(k) == k - 1, np.inf, grid + 1 / (k - 1))
    lo = np.where(np.arange(k) == 0, -np.inf, grid - 1 / (k - 1))
    p = scipy.stats.norm.cdf(hi[:, None], mu, sd) - scipy.stats.norm.cdf(lo[:, None], mu, sd)  # [K, D]
    r = np.random.default_rng(seed)
    lv = np.stack([r.choice(k, n, p=p[:, d]) for d in range(len(mu))], 1)
    true_nll = -np.log(p[lv, np.arange(len(mu))]).sum(1)  # [n] exact -log P(levels)
    return jnp.asarray(grid[lv], jnp.float32), true_nll, np.log(p).T, grid


@pytest.fixture(scope="module")
def oracle_vlb(lin1000):
    """K = 33 levels of N(mu, diag(sd^2)) in D = 2, B = 256; two denoisers: the Bayes-optimal
    x0 predictor for these discrete data, and the eps oracle of the continuous Gaussian."""
    k, mu, sd = 33, np.array([0.1, -0.2]), np.array([0.3, 0.5])
    x0, true_nll, log_p, grid = _discrete_gaussian_data(k, mu, sd, 256)
    best = _level_posterior_x0_fn(lin1000, log_p, grid)
    gauss = _gauss_eps_fn(lin1000, mu, sd ** 2 + (2 / (k - 1)) ** 2 / 12)

    @jax.jit
    def f(x, key):
        a = gd.vlb_terms(best, lin1000, x, key, k, parameterization="x0", chunk_size=250)
        b = gd.vlb_terms(gauss, lin1000, x, key, k, parameterization="eps", chunk_size=250)
        return a["total"], b["total"], a["prior"], a["decoder"]

    best_total, gauss_total, prior, decoder = map(np.asarray, f(x0, jax.random.PRNGKey(0)))
    return dict(best=best_total.astype(np.float64), gauss=gauss_total.astype(np.float64),
                prior=prior, decoder=decoder, true_nll=true_nll, x0=x0, k=k)


@pytest.mark.slow  # two compilations of the full bound: > 10 s on a loaded 2-core machine
def test_vlb_terms_sum_and_chunking():
    s = schedules.make_schedule("linear", 100, scale_to_1000=True)
    x0, _, log_p, grid = _discrete_gaussian_data(17, np.array([0.0, 0.3, -0.5]), np.array([0.4, 0.2, 0.3]), 8)
    fn = _level_posterior_x0_fn(s, log_p, grid)
    f = jax.jit(lambda x, key, chunk: gd.vlb_terms(fn, s, x, key, 17, parameterization="x0", chunk_size=chunk),
                static_argnums=2)
    a = f(x0, jax.random.PRNGKey(3), 100)
    b = f(x0, jax.random.PRNGKey(3), 7)  # chunking (with a remainder) changes nothing
    for name in ("vb", "prior", "total"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=2e-5)  # float32 reassociation
    assert a["vb"].shape == (8, 100) and a["prior"].shape == (8,)
    np.testing.assert_allclose(a["total"], a["prior"] + a["decoder"] + a["kl"].sum(1), rtol=1e-5)
    np.testing.assert_allclose(a["decoder"], a["vb"][:, 0])
    assert np.all(np.asarray(a["kl"][:, 1:]) >= -1e-5)  # KLs are non-negative
    out = gd.vlb_to_log_prob(a, num_dims=3, num_levels=17)
    np.testing.assert_allclose(out["bpd"], out["bpd_prior"] + out["bpd_decoder"] + out["bpd_kl"], rtol=1e-5)
    # The contract's formula: bpd = (-log_prob + D log K) / (D log 2).
    np.testing.assert_allclose(out["bpd"], (-out["log_prob"] + 3 * np.log(17)) / (3 * np.log(2)), rtol=1e-5)
    np.testing.assert_allclose(out["log_p_levels"], -a["total"])


def test_vlb_with_oracle_models(oracle_vlb):
    """(1) The bound holds: E[VLB] >= the exact entropy E[-log P(levels)] for any model.
    (2) For fixed variances each KL term is minimized by the Bayes-optimal mean E[x_0 | x_t],
    so the exact level-posterior denoiser beats the continuous-Gaussian oracle (paired, same
    noise). (3) It is a sane bound: within 0.6 nats/dim of the entropy (the remaining gap is
    the fixed-variance Gaussian reverse step where the noise is comparable to a bin), the
    prior term is negligible and the decoder term small. Tolerances: 3 standard errors."""
    o = oracle_vlb
    n = o["best"].size
    for total in (o["best"], o["gauss"]):
        gap = total - o["true_nll"]
        assert gap.mean() > -3 * gap.std(ddof=1) / np.sqrt(n), gap.mean()
    diff = o["gauss"] - o["best"]
    assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(n), diff.mean()
    gap = o["best"] - o["true_nll"]
    assert gap.mean() < 0.6 * 2, gap.mean()
    assert o["prior"].max() < 1e-4 and o["decoder"].mean() < 0.01


def test_vlb_errors(lin1000):
    f = lambda x, t, c: x
    with pytest.raises(ValueError, match="chunk_size"):
        gd.vlb_terms(f, lin1000, jnp.zeros((2, 3)), jax.random.PRNGKey(0), 17, chunk_size=0)
    with pytest.raises(ValueError, match="x0 must be"):
        gd.vlb_terms(f, lin1000, jnp.zeros((3,)), jax.random.PRNGKey(0), 17)
    with pytest.raises(ValueError, match="model output"):
        gd.vlb_terms(lambda x, t, c: x[:, :1], lin1000, jnp.zeros((2, 3)), jax.random.PRNGKey(0), 17)
    with pytest.raises(ValueError, match="num_levels"):
        gd.vlb_to_log_prob(dict(total=jnp.zeros(2)), 3, 1)


# ----------------------------------------------------------------------------------------
# Losses.
# ----------------------------------------------------------------------------------------


def test_simple_loss_targets(lin1000):
    s = lin1000
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 3, 3, 1), minval=-1, maxval=1)
    noise = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
    t = jnp.array([0, 10, 500, 999])

    @jax.jit
    def compute():
        res = {}
        for p in ("eps", "x0", "v"):
            tgt = gd.target_for(s, x0, t, noise, p)
            perfect = gd.simple_loss(lambda x, tt, c: tgt, s, x0, jax.random.PRNGKey(2), parameterization=p,
                                     t=t, noise=noise)["loss"]
            zero = gd.simple_loss(lambda x, tt, c: jnp.zeros_like(x), s, x0, jax.random.PRNGKey(2),
                                  parameterization=p, t=t, noise=noise)["loss"]
            res[p] = (tgt, perfect, zero)
        return res

    for tgt, perfect, zero in compute().values():
        np.testing.assert_allclose(perfect, 0.0, atol=1e-12)
        np.testing.assert_allclose(zero, np.mean(np.square(tgt), axis=(1, 2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="noise"):
        gd.simple_loss(lambda x, tt, c: x, s, x0, jax.random.PRNGKey(0), noise=noise[:2])


def test_hybrid_loss_stops_mean_gradient_of_vlb(lin1000):
    s = lin1000
    x0 = jax.random.uniform(jax.random.PRNGKey(0), (4, 2, 2, 1), minval=-1, maxval=1)
    t = jnp.array([0, 3, 100, 900])

    def model(params):
        return lambda x, tt, c: jnp.concatenate([params["m"] * x, jnp.broadcast_to(params["v"], x.shape)], -1)

    params = dict(m=jnp.float32(0.3), v=jnp.float32(0.2))
    noise = jax.random.normal(jax.random.split(jax.random.PRNGKey(1))[1], x0.shape)  # hybrid_loss's draw
    xt = gd.q_sample(s, x0, t, noise)

    @jax.jit
    def compute(p):
        vb_only = lambda q: jnp.sum(gd.hybrid_loss(model(q), s, x0, jax.random.PRNGKey(1), 17, t=t)["vb"])
        ref = gd.vb_term(s, model(p)(xt, t, None), x0, xt, t, 17, var_type="learned_range")
        return jax.grad(vb_only)(p), gd.hybrid_loss(model(p), s, x0, jax.random.PRNGKey(1), 17, t=t), ref

    g, out, ref = compute(params)
    assert float(g["m"]) == 0.0 and abs(float(g["v"])) > 0
    np.testing.assert_allclose(out["loss"], out["mse"] + 1e-3 * 1000 * out["vb"], rtol=1e-6)
    # vb in bits/dim equals vb_term / (D log 2).
    np.testing.assert_allclose(out["vb"], ref / (4 * np.log(2)), rtol=1e-5)


def test_dsm_loss_closed_form():
    """E ||sigma s*(x_t) + z||^2 = D - sigma^2 tr(C_t^{-1}) for the exact score of Gaussian data."""
    sde = sde_lib.VPSDE()
    mu = np.array([0.3, -0.5, 0.1])
    a = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, -0.1], [0.0, -0.1, 0.4]])
    cov = a @ a.T + 0.05 * np.eye(3)
    n, t0 = 20000, 0.3
    m, s = (float(v.ravel()[0]) for v in sde.marginal(jnp.ones((1, 1)), jnp.array([t0])))
    ct = m * m * cov + s * s * np.eye(3)
    cinv = jnp.asarray(np.linalg.inv(ct), jnp.float32)
    score = lambda x, t, c: -(x - m * jnp.asarray(mu, jnp.float32)) @ cinv
    x0 = jnp.asarray(np.random.default_rng(0).multivariate_normal(mu, cov, n), jnp.float32)
    out = jax.jit(lambda x: gd.dsm_loss(score, sde, x, jax.random.PRNGKey(0), t=jnp.full((n,), t0), reduce="sum"))(x0)
    loss = np.asarray(out["loss"], np.float64)
    want = 3 - s * s * np.trace(np.linalg.inv(ct))
    assert abs(loss.mean() - want) < 4 * loss.std() / np.sqrt(n)
    # Likelihood weighting multiplies ||s + z / sigma||^2 by g^2 = beta(t).
    lw = gd.dsm_loss(score, sde, x0[:5], jax.random.PRNGKey(0), t=jnp.full((5,), t0), reduce="sum",
                     likelihood_weighting=True)
    z = jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[1], (5, 3))
    xt = m * x0[:5] + s * z
    ref = np.sum(np.square(np.asarray(score(xt, None, None)) + np.asarray(z) / s), 1) * (0.1 + t0 * 19.9)
    np.testing.assert_allclose(lw["loss"], ref, rtol=1e-4)
    with pytest.raises(ValueError, match="reduce"):
        gd.dsm_loss(score, sde, x0, jax.random.PRNGKey(0), reduce="max")
