"""gen_jax.distributions.gradient_estimators against closed forms.

Objectives: ``E_{N(mu, sigma^2)}[x^2] = mu^2 + sigma^2`` (gradient ``(2 mu, 2 sigma)``) and
``E_{Bern(p)}[(x - t)^2]`` (gradient ``f(1) - f(0) = 1 - 2t`` w.r.t. ``p``, times ``p (1 - p)``
w.r.t. the logit). Unbiasedness is a z-test on means of independent groups of draws
(``|mean - truth| < 4`` standard errors); variances are checked against their exact values
(Gauss-Hermite quadrature, exact for these polynomial integrands, and enumeration of {0, 1}).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.distributions import gradient_estimators as ge

MU, SIGMA = 1.0, 1.5
T = 0.45
GROUPS, PER_GROUP = 4000, 8
NORMAL, BERN_LOGIT, BERN_PROB = ge.normal(), ge.bernoulli("logits"), ge.bernoulli("probs")


def square(x):
    return jnp.sum(x * x)


def bern_f(x):
    return jnp.sum((x - T) ** 2)


GAUSS = dict(f=square, dist=NORMAL, params={"loc": jnp.float32(MU), "scale": jnp.float32(SIGMA)},
             truth={"loc": 2 * MU, "scale": 2 * SIGMA}, baseline=MU ** 2 + SIGMA ** 2)
P = 0.3
BERN = dict(f=bern_f, dist=BERN_LOGIT, params={"logits": jnp.float32(np.log(P / (1 - P)))},
            truth={"logits": P * (1 - P) * (1 - 2 * T)}, baseline=0.25)
BERNP = dict(f=bern_f, dist=BERN_PROB, params={"probs": jnp.float32(P)}, truth={"probs": 1 - 2 * T}, baseline=0.25)

ESTIMATORS = {
    "score": ge.score_function,
    "score_const_baseline": None,  # ge.score_function with the problem's constant baseline
    "leave_one_out": ge.leave_one_out,
    "control_variate": ge.control_variate,
    "pathwise": ge.pathwise,
}


@functools.lru_cache(maxsize=None)
def grouped(est_name, problem_name, groups=GROUPS, per_group=PER_GROUP):
    """Group means ``[groups]`` of each leaf and the per-sample estimates (flattened)."""
    problem = PROBLEMS[problem_name]
    est = ESTIMATORS[est_name] or functools.partial(ge.score_function, baseline=problem["baseline"])

    @jax.jit
    def run(params, key):
        out = jax.vmap(lambda k: est(problem["f"], problem["dist"], params, k, per_group))(
            jax.random.split(key, groups))
        return out.grads

    grads = run(problem["params"], jax.random.PRNGKey(0))
    return {k: np.asarray(v, np.float64) for k, v in grads.items()}


PROBLEMS = {"gauss": GAUSS, "bern": BERN, "bernp": BERNP}


@pytest.mark.parametrize("problem,est", [(p, e) for p in PROBLEMS for e in ESTIMATORS
                                         if e != "pathwise" or p == "gauss"])
def test_every_estimator_is_unbiased(problem, est):
    grads = grouped(est, problem)
    for name, truth in PROBLEMS[problem]["truth"].items():
        means = grads[name].mean(1)  # [groups]: independent, unbiased
        se = means.std(ddof=1) / np.sqrt(means.size)
        assert abs(means.mean() - truth) < 4 * se, (problem, est, name, means.mean(), truth, se)


def hermite_moments(g):
    """``(E[g(eps)], Var[g(eps)])`` for ``eps ~ N(0, 1)``, exact for polynomials of degree < 60."""
    x, w = np.polynomial.hermite_e.hermegauss(30)
    w = w / w.sum()
    v = g(x)
    m = np.sum(w * v)
    return m, np.sum(w * v * v) - m * m


def gauss_score_var(b):
    """Exact per-sample variances of ``(x^2 - b) grad log N(x; mu, sigma^2)``, ``x = mu + sigma eps``."""
    x = lambda e: MU + SIGMA * e
    return {"loc": hermite_moments(lambda e: (x(e) ** 2 - b) * e / SIGMA)[1],
            "scale": hermite_moments(lambda e: (x(e) ** 2 - b) * (e * e - 1) / SIGMA)[1]}


def gauss_pathwise_var():
    return {"loc": hermite_moments(lambda e: 2 * (MU + SIGMA * e))[1],
            "scale": hermite_moments(lambda e: 2 * (MU + SIGMA * e) * e)[1]}


def test_closed_form_gaussian_variances_by_hand():
    # Var of x^2 eps / sigma = mu^4 / sigma^2 + 14 mu^2 + 15 sigma^2; pathwise 4 sigma^2.
    np.testing.assert_allclose(gauss_score_var(0.0)["loc"], MU ** 4 / SIGMA ** 2 + 14 * MU ** 2 + 15 * SIGMA ** 2)
    np.testing.assert_allclose(gauss_pathwise_var()["loc"], 4 * SIGMA ** 2)
    np.testing.assert_allclose(gauss_pathwise_var()["scale"], 4 * (MU ** 2 + 2 * SIGMA ** 2))


def _per_sample_var(grads):
    return {k: v.reshape(-1).var(ddof=1) for k, v in grads.items()}


def test_gaussian_variances_match_closed_form_and_order():
    score = _per_sample_var(grouped("score", "gauss"))
    const = _per_sample_var(grouped("score_const_baseline", "gauss"))
    path = _per_sample_var(grouped("pathwise", "gauss"))
    for name in ("loc", "scale"):
        # 32000 draws; heavy-tailed integrands (degree-6 polynomials of eps): 20% tolerance.
        np.testing.assert_allclose(score[name], gauss_score_var(0.0)[name], rtol=0.2)
        np.testing.assert_allclose(const[name], gauss_score_var(GAUSS["baseline"])[name], rtol=0.2)
        np.testing.assert_allclose(path[name], gauss_pathwise_var()[name], rtol=0.1)
        assert path[name] < 0.5 * score[name], (name, path, score)
        assert const[name] < score[name], (name, const, score)
    loo = _per_sample_var(grouped("leave_one_out", "gauss"))
    cv = _per_sample_var(grouped("control_variate", "gauss"))
    # Leave-one-out: b_i is independent of x_i with mean E[f] and variance Var[f] / (n - 1), so
    # Var[g_i] = Var[(f - E f) s] + Var[f] E[s^2] / (n - 1), E[s_mu^2] = 1 / sigma^2.
    var_f = 4 * MU ** 2 * SIGMA ** 2 + 2 * SIGMA ** 4
    np.testing.assert_allclose(loo["loc"], gauss_score_var(GAUSS["baseline"])["loc"]
                               + var_f / (PER_GROUP - 1) / SIGMA ** 2, rtol=0.2)
    assert loo["loc"] < 0.75 * score["loc"] and cv["loc"] < 0.75 * score["loc"], (loo, cv, score)
    assert loo["scale"] < score["scale"] and cv["scale"] < score["scale"], (loo, cv, score)


@pytest.mark.parametrize("problem", ["bern", "bernp"])
def test_bernoulli_variances_match_enumeration(problem):
    f1, f0 = (1 - T) ** 2, T ** 2
    name = "logits" if problem == "bern" else "probs"
    s1, s0 = (1 - P, -P) if problem == "bern" else (1 / P, -1 / (1 - P))  # score at x = 1, 0

    def exact_var(b):
        m2 = P * ((f1 - b) * s1) ** 2 + (1 - P) * ((f0 - b) * s0) ** 2
        return m2 - PROBLEMS[problem]["truth"][name] ** 2

    score = _per_sample_var(grouped("score", problem))[name]
    const = _per_sample_var(grouped("score_const_baseline", problem))[name]
    loo = _per_sample_var(grouped("leave_one_out", problem))[name]
    cv = _per_sample_var(grouped("control_variate", problem))[name]
    np.testing.assert_allclose(score, exact_var(0.0), rtol=0.05)
    np.testing.assert_allclose(const, exact_var(0.25), rtol=0.05)
    assert const < 0.05 * score, (const, score)
    # f ranges over [0.2025, 0.3025]: a baseline near E[f] removes almost all the variance.
    assert loo < 0.05 * score and cv < 0.05 * score, (loo, cv, score)


def test_moving_average_baseline_is_unbiased_and_lowers_variance():
    f, dist, params = GAUSS["f"], GAUSS["dist"], GAUSS["params"]

    @jax.jit
    def run(key):
        def step(b, k):
            out = ge.score_function(f, dist, params, k, 16, baseline=b)
            return ge.moving_average(b, out.values, 0.9), out.grads
        return jax.lax.scan(step, jnp.float32(0.0), jax.random.split(key, 2000))

    b, grads = run(jax.random.PRNGKey(3))
    np.testing.assert_allclose(b, MU ** 2 + SIGMA ** 2, rtol=0.3)   # tracks E[f]
    plain = _per_sample_var(grouped("score", "gauss"))
    for name, truth in GAUSS["truth"].items():
        g = np.asarray(grads[name][100:], np.float64)              # after the warm-up
        means = g.mean(1)                                            # per step: martingale differences
        assert abs(means.mean() - truth) < 4 * means.std(ddof=1) / np.sqrt(means.size)
        assert g.reshape(-1).var() < plain[name], name


def test_control_variate_reaches_the_optimal_coefficient_variance():
    # h(x) = x, E[h] = mu: v = x s, m = grad E[h] = (1, 0). With c* = Cov(a, v) / Var(v) the
    # variance is Var(a) - Cov(a, v)^2 / Var(v) (exact by quadrature); the leave-one-out
    # estimate of c* from 63 other draws gets close to it (its own noise adds ~20% for d/dmu;
    # for d/dsigma, whose integrands are heavier-tailed, only unbiasedness is checked).
    h, h_mean = (lambda x: jnp.sum(x)), (lambda p: p["loc"])
    run = jax.jit(jax.vmap(lambda k: ge.control_variate(square, NORMAL, GAUSS["params"], k, 64, h, h_mean).grads))
    grads = {k: np.asarray(v, np.float64) for k, v in run(jax.random.split(jax.random.PRNGKey(5), 500)).items()}
    x, w = np.polynomial.hermite_e.hermegauss(30)
    w, xx = w / w.sum(), MU + SIGMA * x
    for name, truth in GAUSS["truth"].items():
        means = grads[name].mean(1)
        assert abs(means.mean() - truth) < 4 * means.std(ddof=1) / np.sqrt(means.size), name
        score = x / SIGMA if name == "loc" else (x * x - 1) / SIGMA
        a, d = xx ** 2 * score, xx * score - (1.0 if name == "loc" else 0.0)
        var_a = np.sum(w * a * a) - truth ** 2
        optimal = var_a - np.sum(w * (a - truth) * d) ** 2 / np.sum(w * d * d)
        assert optimal < 0.65 * var_a
        if name == "loc":
            assert optimal < grads[name].var() < min(1.4 * optimal, 0.8 * var_a), (grads[name].var(), optimal, var_a)


def test_surrogate_gradient_is_the_score_function_formula():
    params = GAUSS["params"]
    xs = jnp.array([0.3, -1.2, 2.5])
    signal, b = jnp.array([1.0, -2.0, 0.5]), 0.25
    g = jax.jit(jax.grad(lambda p: jnp.sum(ge.score_function_surrogate(
        jax.vmap(NORMAL.log_prob, (None, 0))(p, xs), signal, b))))(params)
    s = jax.jit(lambda p, x: ge.scores(NORMAL, p, x))(params, xs)
    for name in params:
        np.testing.assert_allclose(g[name], np.sum((signal - b) * s[name]), rtol=1e-5)
    np.testing.assert_allclose(s["loc"], (xs - MU) / SIGMA ** 2, rtol=1e-5)   # autodiff score vs closed form


def test_moments_of_samples():
    out = jax.jit(lambda p, k: ge.score_function(square, NORMAL, p, k, 50))(GAUSS["params"], jax.random.PRNGKey(0))
    mean, var = ge.moments(out)
    np.testing.assert_allclose(mean["loc"], np.mean(out.grads["loc"]), rtol=1e-6)
    np.testing.assert_allclose(var["scale"], np.var(out.grads["scale"], ddof=1), rtol=1e-5)


def test_bad_input_is_named():
    key, p = jax.random.PRNGKey(0), GAUSS["params"]
    with pytest.raises(ValueError, match="num must be a Python int >= 1"):
        ge.score_function(square, NORMAL, p, key, 0)
    with pytest.raises(ValueError, match="num must be a Python int >= 2"):
        ge.leave_one_out(square, NORMAL, p, key, 1)
    with pytest.raises(ValueError, match=r"baseline must be a scalar \[\] or one per draw \[4\]"):
        ge.score_function(square, NORMAL, p, key, 4, baseline=jnp.zeros(3))
    with pytest.raises(ValueError, match="not reparameterisable"):
        ge.pathwise(bern_f, BERN_LOGIT, BERN["params"], key, 4)
    with pytest.raises(ValueError, match="f must map one draw to a scalar"):
        ge.score_function(lambda x: jnp.stack([x, x]), NORMAL, p, key, 4)
    with pytest.raises(ValueError, match="f must map one draw to a scalar"):
        ge.pathwise(lambda x: jnp.stack([x, x]), NORMAL, p, key, 4)
    with pytest.raises(ValueError, match=r"params\['loc'\] must be a float array"):
        ge.score_function(square, NORMAL, {"loc": jnp.int32(1), "scale": jnp.float32(1)}, key, 4)
    with pytest.raises(ValueError, match="both h and h_mean"):
        ge.control_variate(square, NORMAL, p, key, 4, h=jnp.sum)
    with pytest.raises(ValueError, match="decay must lie in"):
        ge.moving_average(0.0, jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match="dist must be"):
        ge.score_function(square, (NORMAL.sample, NORMAL.log_prob), p, key, 4)
