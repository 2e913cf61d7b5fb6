"""Samplers (gen_jax.diffusion.samplers) and the ODE likelihood (gen_jax.diffusion.likelihood)
with analytic denoisers for Gaussian data N(mu, Sigma): every diffused marginal is Gaussian in
closed form, so eps / score / log-density are exact. DDIM(eta=1, S=T) == DDPM; scan == Python
loop; moments of every sampler; PF-ODE log-likelihood vs the exact Gaussian log-density (exact
and Hutchinson divergence); dequantized bits/dim; inpainting; bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gen_jax.diffusion import likelihood, samplers, schedules
from gen_jax.diffusion import sde as sde_lib

MU = np.array([0.3, -0.4])
COV = np.array([[0.25, 0.1], [0.1, 0.16]])


def _inv_marginal_cov(cov):
    """``(m, s, r) -> (m^2 Sigma + s^2 I)^{-1} r`` through the eigendecomposition of Sigma
    (numpy, once), so the oracle is elementwise in JAX."""
    lam, u = np.linalg.eigh(cov)
    lam, u = jnp.asarray(lam, jnp.float32), jnp.asarray(u, jnp.float32)

    def apply(m, s, r):  # m, s: [B, 1]; r: [B, D]
        return ((r @ u) / (m ** 2 * lam + s ** 2)) @ u.T

    return apply


def discrete_eps_fn(schedule, mu=MU, cov=COV):
    """E[eps | x_t] = s C_t^{-1} (x_t - m mu), C_t = m^2 Sigma + s^2 I (x_t = m x_0 + s eps)."""
    mu, inv = jnp.asarray(mu, jnp.float32), _inv_marginal_cov(cov)

    def fn(x, t, cond=None):
        m, s = schedule.sqrt_alpha_bars[t][:, None], schedule.sqrt_one_minus_alpha_bars[t][:, None]
        return s * inv(m, s, x - m * mu)

    return fn


def score_fn_for(sde, mu=MU, cov=COV):
    """grad log p_t(x) = -C_t^{-1} (x - m(t) mu) for Gaussian data under a linear SDE."""
    mu, inv = jnp.asarray(mu, jnp.float32), _inv_marginal_cov(cov)

    def fn(x, t, cond=None):
        m, s = sde.marginal(jnp.ones((x.shape[0], 1)), t)
        return -inv(m, s, x - m * mu)

    return fn


def exact_marginal(sde, t, mu=MU, cov=COV):
    m, s = (float(v.ravel()[0]) for v in sde.marginal(jnp.ones((1, 1)), jnp.array([t])))
    return m * mu, m * m * cov + s * s * np.eye(len(mu))


def assert_moments(x, mean, cov, z=4.0):
    """Sample mean and covariance within ``z`` standard errors of the targets:
    SE(mean_i) = sqrt(S_ii / n), SE(cov_ij) = sqrt((S_ii S_jj + S_ij^2) / n)."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    se_m = np.sqrt(np.diag(cov) / n)
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    assert np.all(np.abs(x.mean(0) - mean) < z * se_m), (x.mean(0), mean, se_m)
    assert np.all(np.abs(np.cov(x.T) - cov) < z * se_c), (np.cov(x.T), cov, se_c)


@pytest.fixture(scope="module")
def lin100():
    return schedules.make_schedule("linear", 100, scale_to_1000=True)


@pytest.fixture(scope="module")
def lin1000():
    return schedules.make_schedule("linear", 1000)


# ----------------------------------------------------------------------------------------
# DDPM / DDIM.
# ----------------------------------------------------------------------------------------


def test_ddim_eta1_full_schedule_is_ddpm(lin100):
    fn = discrete_eps_fn(lin100)
    pairs = [(samplers.make_ddpm_sampler(fn, lin100, clip_x0=clip),
              samplers.make_ddim_sampler(fn, lin100, 100, eta=1.0, clip_x0=clip)) for clip in (False, True)]
    out = jax.jit(lambda k: [(a(k, (64, 2)), b(k, (64, 2))) for a, b in pairs])(jax.random.PRNGKey(0))
    for a, b in out:
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert float(jnp.std(a)) > 0.1
    assert not np.allclose(out[0][0], out[1][0])  # clipping x0 is active here


@pytest.mark.slow  # ~8 compilations: > 10 s on a loaded 2-core machine
def test_scan_equals_python_loop(lin100):
    fn = discrete_eps_fn(lin100)
    vp = sde_lib.VPSDE()
    score = score_fn_for(vp)
    x0 = jnp.tile(jnp.asarray(MU, jnp.float32), (8, 1))
    mask = jnp.array([1.0, 0.0])
    lin20 = schedules.make_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    cases = [  # (factory, args, kwargs, also test inpainting)
        (samplers.make_ddpm_sampler, (discrete_eps_fn(lin20), lin20), {}, False),
        (samplers.make_ddim_sampler, (fn, lin100, 10, 0.5), dict(skip="quadratic"), True),
        (samplers.make_pc_sampler, (score, vp, 15), dict(predictor="reverse_diffusion", n_corrector_steps=2), False),
        (samplers.make_ode_sampler, (score, vp, 15), {}, False),
    ]
    for make, args, kw, inpaint in cases:
        scan = make(*args, return_trajectory=True, **kw)
        loop = make(*args, return_trajectory=True, use_scan=False, **kw)
        n_steps = args[2] if len(args) > 2 else 20
        extra = dict(x0_fixed=x0, mask=mask) if inpaint else {}
        xs, ts = jax.jit(lambda k: scan(k, (8, 2), **extra))(jax.random.PRNGKey(1))
        xl, tl = loop(jax.random.PRNGKey(1), (8, 2), **extra)
        np.testing.assert_allclose(xs, xl, rtol=0, atol=1e-6, err_msg=make.__name__)
        np.testing.assert_allclose(ts, tl, rtol=0, atol=1e-6, err_msg=make.__name__)
        assert ts.shape == (n_steps + 1, 8, 2) and np.all(np.isfinite(ts))
        if inpaint:  # the known coordinate is exactly x0_fixed
            np.testing.assert_array_equal(xs[:, 0], x0[:, 0])


def test_ddim_timesteps_and_strides(lin100):
    for s in (1, 7, 10, 50, 100):
        for kind in ("uniform", "quadratic"):
            seq = samplers.ddim_timesteps(100, s, kind)
            assert len(seq) == s and np.all(np.diff(seq) > 0) and seq[-1] == 99 and seq.min() >= 0
    np.testing.assert_array_equal(samplers.ddim_timesteps(100, 100), np.arange(100))
    fn = discrete_eps_fn(lin100)
    seq = samplers.ddim_timesteps(100, 10)
    fs = [samplers.make_ddim_sampler(fn, lin100, 10), samplers.make_ddim_sampler(fn, lin100, 10, timesteps=list(seq)),
          samplers.make_ddim_sampler(fn, lin100, 20, timesteps=range(4, 100, 5))]  # every 5th step
    a, b, c = jax.jit(lambda k: [f(k, (4, 2)) for f in fs])(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(c)) and not np.allclose(a, c)


@pytest.fixture(scope="module")
def discrete_samples(lin1000):
    fn = discrete_eps_fn(lin1000)
    ddpm = samplers.make_ddpm_sampler(fn, lin1000)
    ddim = samplers.make_ddim_sampler(fn, lin1000, 100, eta=0.0)
    return jax.jit(lambda k: (ddpm(k, (4000, 2)), ddim(k, (4000, 2))))(jax.random.PRNGKey(2))


def test_ddpm_and_ddim_reproduce_gaussian_data(discrete_samples):
    for x in discrete_samples:
        assert_moments(x, MU, COV)


# ----------------------------------------------------------------------------------------
# SDE samplers.
# ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_sde_samplers_reproduce_gaussian_data(kind):
    """Euler-Maruyama (VP only), reverse-diffusion + Langevin PC and the Heun PF-ODE reach the
    exact marginal at t = eps. The Langevin snr is 0.05: at Song et al.'s 0.16 (tuned for
    images) the unadjusted Langevin step visibly shrinks the variance of this 2-D target."""
    sde = sde_lib.make_sde(kind) if kind != "ve" else sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0)
    score = score_fn_for(sde)
    eps = 1e-3
    mean, cov = exact_marginal(sde, eps)
    run = [samplers.make_pc_sampler(score, sde, 500, predictor="reverse_diffusion", snr=0.05, eps=eps),
           samplers.make_ode_sampler(score, sde, 100, eps=eps)]
    if kind == "vp":
        run.append(samplers.make_pc_sampler(score, sde, 1000, corrector="none", eps=eps))
    for x in jax.jit(lambda k: [f(k, (4000, 2)) for f in run])(jax.random.PRNGKey(3)):
        assert_moments(x, mean, cov)


def test_rk45_ode_sampler_matches_heun():
    vp = sde_lib.VPSDE()
    score = score_fn_for(vp)
    heun = samplers.make_ode_sampler(score, vp, 200)
    rk45 = samplers.make_ode_sampler(score, vp, 20, method="rk45", rtol=1e-5, atol=1e-5)
    a, b = jax.jit(lambda k: (heun(k, (256, 2)), rk45(k, (256, 2))))(jax.random.PRNGKey(4))
    np.testing.assert_allclose(a, b, atol=2e-3)


# ----------------------------------------------------------------------------------------
# Probability-flow ODE likelihood.
# ----------------------------------------------------------------------------------------

MU3 = np.array([0.2, -0.1, 0.4])
_A = np.array([[0.5, 0.1, 0.0], [0.2, 0.3, -0.1], [0.0, -0.2, 0.4]])
COV3 = _A @ _A.T + 0.02 * np.eye(3)


@pytest.fixture(scope="module")
def ode_setup():
    vp = sde_lib.VPSDE()
    score = score_fn_for(vp, MU3, COV3)
    eps = 1e-5
    mean, cov = exact_marginal(vp, eps, MU3, COV3)
    x = np.random.default_rng(0).multivariate_normal(MU3, COV3, 16).astype(np.float32)
    exact = scipy.stats.multivariate_normal(mean, cov).logpdf(x)
    return vp, score, jnp.asarray(x), exact, eps


@pytest.mark.parametrize("method,steps", [("rk4", 100), ("rk45", 10)])
def test_ode_likelihood_exact_divergence(ode_setup, method, steps):
    vp, score, x, exact, eps = ode_setup
    f = jax.jit(lambda x, k: likelihood.ode_log_likelihood(score, vp, x, k, num_steps=steps, method=method,
                                                           eps=eps))
    out = f(x, jax.random.PRNGKey(0))
    np.testing.assert_allclose(out["log_prob"], exact, atol=1e-2)
    np.testing.assert_allclose(out["log_prob"], out["prior_log_prob"] + out["delta_log_prob"], rtol=1e-6)


def test_ode_likelihood_hutchinson_is_unbiased(ode_setup):
    """One x repeated with 512 independent probes (Rademacher, Gaussian): the mean is within
    3 SE of the exact value."""
    vp, score, x, exact, eps = ode_setup
    xs = jnp.tile(x[:1], (512, 1))
    f = lambda probe: likelihood.ode_log_likelihood(score, vp, xs, jax.random.PRNGKey(5), num_steps=100,
                                                     method="rk4", divergence="hutchinson", probe=probe,
                                                     eps=eps)["log_prob"]
    for lp in jax.jit(lambda: [f("rademacher"), f("gaussian")])():
        lp = np.asarray(lp, np.float64)
        se = lp.std(ddof=1) / np.sqrt(lp.size)
        assert lp.std() > 1e-3  # it is an estimator, not the exact trace
        assert abs(lp.mean() - exact[0]) < 3 * se + 1e-2, (lp.mean(), exact[0], se)


def test_dequantization_and_bits_per_dim(ode_setup):
    vp, score, _, _, _ = ode_setup
    k = 17
    levels = jnp.asarray(np.random.default_rng(1).integers(0, k, (8, 3)))
    image = levels / (k - 1)
    for mode, scale in (("unit", 2.0), ("centered", 2 * k / (k - 1))):
        x, log_det = likelihood.dequantize_for_diffusion(jax.random.PRNGKey(0), image, k, mode)
        np.testing.assert_allclose(log_det, 3 * np.log(scale))
        centre = 2 * levels / (k - 1) - 1
        if mode == "centered":  # inside the bin of width 2 / (K - 1) around the training point
            assert np.all(np.abs(x - centre) <= 1 / (k - 1) + 1e-6)
        else:
            assert np.all((x >= -1) & (x < 1))
    out = jax.jit(lambda im, key: likelihood.ode_bits_per_dim(score, vp, im, key, k, num_steps=4, method="euler"))(
        image, jax.random.PRNGKey(0))
    x, log_det = likelihood.dequantize_for_diffusion(jax.random.split(jax.random.PRNGKey(0))[0], image, k)
    np.testing.assert_allclose(out["log_prob"], out["ode"]["log_prob"] + log_det, rtol=1e-6)
    np.testing.assert_allclose(out["bpd"], (-out["log_prob"] + 3 * np.log(k)) / (3 * np.log(2)), rtol=1e-5)


# ----------------------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------------------


def test_bad_input_errors(lin100):
    fn = discrete_eps_fn(lin100)
    vp = sde_lib.VPSDE()
    score = score_fn_for(vp)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"num_steps S=101 must be <= the schedule's T=100"):
        samplers.make_ddim_sampler(fn, lin100, 101)
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        samplers.make_ddim_sampler(fn, lin100, 0)
    with pytest.raises(ValueError, match="eta must be finite and >= 0"):
        samplers.make_ddim_sampler(fn, lin100, 10, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        samplers.make_ddim_sampler(fn, lin100, 10, eta=float("nan"))
    with pytest.raises(ValueError, match="strictly increasing"):
        samplers.make_ddim_sampler(fn, lin100, 3, timesteps=[5, 3, 9])
    with pytest.raises(ValueError, match="timesteps has 2 entries but num_steps=3"):
        samplers.make_ddim_sampler(fn, lin100, 3, timesteps=[1, 2])
    with pytest.raises(ValueError, match="timesteps must be strictly increasing in"):
        samplers.make_ddim_sampler(fn, lin100, 2, timesteps=[1, 100])
    with pytest.raises(ValueError, match="parameterization"):
        samplers.make_ddpm_sampler(fn, lin100, parameterization="score")
    with pytest.raises(ValueError, match="predictor"):
        samplers.make_pc_sampler(score, vp, 10, predictor="ancestral")
    with pytest.raises(ValueError, match="corrector"):
        samplers.make_pc_sampler(score, vp, 10, corrector="ald")
    with pytest.raises(ValueError, match="eps must be in"):
        samplers.make_ode_sampler(score, vp, 10, eps=1.5)
    with pytest.raises(ValueError, match="method"):
        samplers.make_ode_sampler(score, vp, 10, method="rk23")
    ddim = samplers.make_ddim_sampler(fn, lin100, 5)
    with pytest.raises(ValueError, match=r"x_T must have shape \(4, 2\)"):
        ddim(key, (4, 2), x_T=jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="shape must be a tuple"):
        ddim(key, 4)
    with pytest.raises(ValueError, match="both x0_fixed and mask"):
        ddim(key, (4, 2), x0_fixed=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="mask must broadcast"):
        ddim(key, (4, 2), x0_fixed=jnp.zeros((4, 2)), mask=jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"cond\['label'\] has shape \(3,\)"):
        ddim(key, (4, 2), {"label": jnp.zeros((3,), jnp.int32)})
    with pytest.raises(ValueError, match="model output must have the shape of x_t"):
        samplers.make_ddim_sampler(lambda x, t, c: x[:, :1], lin100, 5)(key, (4, 2))
    with pytest.raises(ValueError, match="rk45"):
        samplers.make_ode_sampler(score, vp, 10, method="rk45")(key, (4, 2), x0_fixed=jnp.zeros((4, 2)),
                                                                 mask=jnp.ones((2,)))
    with pytest.raises(ValueError, match="divergence"):
        likelihood.ode_log_likelihood(score, vp, jnp.zeros((2, 2)), key, divergence="trace")
    with pytest.raises(ValueError, match="x must be"):
        likelihood.ode_log_likelihood(score, vp, jnp.zeros((2,)), key)
