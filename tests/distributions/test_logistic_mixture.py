"""Discretized logistic mixture (Salimans et al. 2017, Eq. 2, Secs. 2.1-2.2): normalization over
every bin at extreme parameters, agreement with a float64 scipy.stats.logistic computation,
finite gradients, the collapsed-bin fallback, sampler frequencies against the mass function,
and input errors."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gen_jax.distributions import logistic_mixture as lm

def _extreme_raw(rng, n, m, c):
    """``[n, P]`` raw params: log s in {-9 (clamped), -7, ..., 7}, means at and beyond the
    edges (+-1, +-3, just inside), skewed and flat logits, coefficients up to tanh(+-4).
    Row 0 is a moderate parameter set (for the sampler tests), rows 1 and 2 are all-sharp
    (log s = -7) and all-flat (log s = 7)."""
    raw = rng.normal(size=(n, lm.num_params(m, c))) * 2.0
    raw[:, :m] = rng.normal(size=(n, m)) * rng.choice([0.1, 5.0, 30.0], size=(n, 1))
    raw[:, m:m + c * m] = rng.choice([-3.0, -1.0, 1.0, 3.0, -0.999, 0.999, 0.0], size=(n, c * m)) \
        + rng.choice([0.0, 0.0, 1e-3], size=(n, c * m))
    raw[:, m + c * m:m + 2 * c * m] = rng.choice([-9.0, -7.0, -4.0, -1.0, 0.0, 2.0, 5.0, 7.0], size=(n, c * m))
    raw[:, m + 2 * c * m:] *= 2.0
    raw[0] = rng.normal(size=raw.shape[1]) * 0.5
    raw[0, m + c * m:m + 2 * c * m] = -1.5
    raw[0, m + 2 * c * m:] = 2.0  # strong coupling
    raw[1, m + c * m:m + 2 * c * m] = -7.0
    raw[2, m + c * m:m + 2 * c * m] = 7.0
    return raw.astype(np.float32)


def _all_bins(raw, k, c):
    """Every combination of the ``K^C`` levels per parameter set: raw ``[n, 1, K^C, P]``,
    levels ``[n, 1, K^C, C]``."""
    combos = np.array(list(itertools.product(range(k), repeat=c)), np.int32)
    n = raw.shape[0]
    return (np.broadcast_to(raw[:, None, None, :], (n, 1, len(combos), raw.shape[-1])),
            np.broadcast_to(combos[None, None], (n, 1, len(combos), c)))


# (K, C, M): coupled mixtures over all K^C bins; "channel": 3 uncoupled channels, K = 256.
CASES = {"K2": (2, 1, 3), "K17": (17, 1, 4), "K256": (256, 1, 4), "K5_rgb": (5, 3, 3)}
CHANNEL = (256, 3, 4)
N = 48  # parameter sets per case


def _channel_args(raw, c, m):
    """Uncoupled per-channel params [n, K, C, M] from ``n * C`` single-channel raw rows."""
    n, k = raw.shape[0] // c, CHANNEL[0]
    return [np.broadcast_to(raw[:, i * m:(i + 1) * m].reshape(n, 1, c, m), (n, k, c, m)) for i in range(3)]


@pytest.fixture(scope="module")
def mass():
    """One compiled program: log-masses of every bin and their gradients for all cases."""
    inputs = {name: _all_bins(_extreme_raw(np.random.default_rng(i), N, m, c), k, c)
              for i, (name, (k, c, m)) in enumerate(CASES.items())}
    k, c, m = CHANNEL
    ch_raw = _extreme_raw(np.random.default_rng(9), N * c, m, 1)
    ch_levels = np.broadcast_to(np.arange(k, dtype=np.int32)[None, :, None], (N, k, c))
    inputs["channel"] = (_channel_args(ch_raw, c, m), ch_levels)

    def program(inputs):
        out = {}
        for name, (k, c, m) in CASES.items():
            raw, levels = inputs[name]
            f = lambda r: lm.log_prob_levels(r, levels, k)
            lp, vjp = jax.vjp(f, raw)
            out[name] = (lp, vjp(jnp.ones_like(lp))[0])
        args, levels = inputs["channel"]
        f = lambda a: lm.channel_log_prob(levels, *a, CHANNEL[0])
        lp, vjp = jax.vjp(f, args)
        out["channel"] = (lp, vjp(jnp.ones_like(lp))[0])
        return out

    out = jax.device_get(jax.jit(program)(inputs))
    return inputs, out


@pytest.mark.parametrize("name", list(CASES) + ["channel"])
def test_mass_sums_to_one_over_all_bins_and_gradients_are_finite(mass, name):
    inputs, out = mass
    lp, grad = out[name]
    lp = np.asarray(lp, np.float64)  # [n, 1, K^C] (coupled) or [n, K, C] (per channel)
    assert np.all(np.isfinite(lp))
    total = np.exp(lp).sum(axis=(1, 2)) if name != "channel" else np.exp(lp).sum(axis=1)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # measured <= 2.1e-7 (brief: 1e-5)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grad))


def _scipy_mixture(levels, raw, k, m, c):
    """float64 reference: Eq. 2 with scipy.stats.logistic CDFs, edge bins to +-inf, the
    Sec. 2.2 means mu_G + a0 x_R, mu_B + a1 x_R + a2 x_G (levels [C], raw [P])."""
    raw = raw.astype(np.float64)
    pi = np.exp(raw[:m] - raw[:m].max())
    pi /= pi.sum()
    mu = raw[m:m + c * m].reshape(c, m)
    s = np.exp(np.maximum(raw[m + c * m:m + 2 * c * m].reshape(c, m), -7.0))
    alpha = np.tanh(raw[m + 2 * c * m:].reshape(-1, m))
    x = 2.0 * levels / (k - 1) - 1.0
    total = 0.0
    for j in range(m):
        p, idx = pi[j], 0
        for ch in range(c):
            mean = mu[ch, j]
            for prev in range(ch):
                mean += alpha[idx, j] * x[prev]
                idx += 1
            hi = np.inf if levels[ch] == k - 1 else x[ch] + 1.0 / (k - 1)
            lo = -np.inf if levels[ch] == 0 else x[ch] - 1.0 / (k - 1)
            p *= stats.logistic.cdf(hi, mean, s[ch, j]) - stats.logistic.cdf(lo, mean, s[ch, j])
        total += p
    return np.log(total) if total > 0 else -np.inf


@pytest.mark.parametrize("name", ["K17", "K256", "K5_rgb"])
def test_log_mass_matches_scipy_logistic_cdf(mass, name):
    """Bins of the first 16 parameter sets (the moderate, all-sharp and all-flat ones among them)
    against float64 scipy, wherever float64 itself resolves the bin (mass > 1e-9)."""
    k, c, m = CASES[name]
    inputs, out = mass
    raw, levels = inputs[name]
    lp = np.asarray(out[name][0], np.float64)
    rng = np.random.default_rng(2)
    got, want = [], []
    for i in range(16):
        bins = {0, levels.shape[2] - 1, *rng.integers(0, levels.shape[2], size=6).tolist()}
        for j in bins:
            ref = _scipy_mixture(levels[i, 0, j], raw[i, 0, j], k, m, c)
            if ref > np.log(1e-9):
                got.append(lp[i, 0, j])
                want.append(ref)
    assert len(want) >= 30
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def _fallback_program(mean, log_s, levels):
    lp, vjp = jax.vjp(lambda a, b: lm.discretized_logistic_log_prob(levels, a, b, 256), mean, log_s)
    return lp, vjp(jnp.ones_like(lp))


def test_fallback_for_collapsed_bins_is_the_midpoint_rule_and_differentiable():
    """Where the bin has no width in float32 (|x - mu| ~ 1e6, or s ~ e^120), log P is the log
    pdf at the centre plus log(2 / (K - 1)); checked against float64 and for finite grads."""
    k = 256
    levels = jnp.array([100, 101, 200, 100], jnp.int32)
    mean = jnp.array([2e6, -3e6, 0.0, 0.3], jnp.float32)
    log_s = jnp.array([0.0, 1.0, 120.0, -2.0], jnp.float32)  # the last bin is ordinary
    lp, grads = jax.device_get(jax.jit(_fallback_program)(mean, log_s, levels))
    x = 2.0 * np.asarray(levels, np.float64) / (k - 1) - 1.0
    mu, ls = np.asarray(mean, np.float64), np.asarray(log_s, np.float64)
    mid = stats.logistic.logpdf(x, mu, np.exp(ls)) + np.log(2.0 / (k - 1))
    np.testing.assert_allclose(lp[:3], mid[:3], rtol=1e-6)
    exact = np.log(stats.logistic.cdf(x[3] + 1 / (k - 1), mu[3], np.exp(ls[3]))
                   - stats.logistic.cdf(x[3] - 1 / (k - 1), mu[3], np.exp(ls[3])))
    np.testing.assert_allclose(lp[3], exact, rtol=1e-5)
    assert all(np.all(np.isfinite(g)) for g in grads)


def _chi2_pvalue(counts, p, n):
    """Pearson chi-square p-value of ``counts`` against probabilities ``p``; bins with an
    expected count below 5 are pooled into one (dropped if that is still below 5)."""
    small = p * n < 5
    obs, exp = list(counts[~small]), list(n * p[~small])
    if n * p[small].sum() >= 5:
        obs.append(counts[small].sum())
        exp.append(n * p[small].sum())
    else:
        assert counts[small].sum() < 20
    obs, exp = np.array(obs, np.float64), np.array(exp)
    assert len(obs) >= 2
    return stats.chi2.sf(np.sum((obs - exp) ** 2 / exp), len(obs) - 1)


@pytest.fixture(scope="module")
def draws(mass):
    """20000 draws from the moderate parameter set of the RGB case (coupled) and of the
    per-channel case (channels: moderate, all-sharp, all-flat), one compiled program."""
    inputs, _ = mass
    n = 20000
    raw = inputs["K5_rgb"][0][0, 0, 0]  # [P]
    ch_args = [a[0, 0] for a in inputs["channel"][0]]  # 3 x [C, M]

    def program(key):
        k1, k2 = jax.random.split(key)
        rgb = lm.sample(jnp.broadcast_to(raw, (n, 1, 1, raw.size)), k1, CASES["K5_rgb"][0], 3)
        ch = lm.channel_sample(k2, *(jnp.broadcast_to(a, (n,) + a.shape) for a in ch_args), CHANNEL[0])
        return rgb, ch

    return jax.device_get(jax.jit(program)(jax.random.PRNGKey(0)))


def test_coupled_sampler_frequencies_match_the_mass_function(mass, draws):
    k, c, _ = CASES["K5_rgb"]
    lv = draws[0]
    assert lv.shape == (20000, 1, 1, c) and lv.dtype == np.int32 and lv.min() >= 0 and lv.max() < k
    p = np.exp(np.asarray(mass[1]["K5_rgb"][0][0, 0], np.float64))  # combos in itertools order
    counts = np.bincount((lv[:, 0, 0] * k ** np.arange(c)[::-1]).sum(-1), minlength=k ** c)
    assert _chi2_pvalue(counts, p, len(lv)) > 1e-4


def test_channel_sampler_frequencies_match_the_mass_function(mass, draws):
    lv = draws[1]  # [n, C]
    p = np.exp(np.asarray(mass[1]["channel"][0][0], np.float64))  # [K, C]
    for ch in range(CHANNEL[1]):
        counts = np.bincount(lv[:, ch], minlength=CHANNEL[0])
        assert _chi2_pvalue(counts, p[:, ch], len(lv)) > 1e-4, ch


def test_layout_and_input_errors():
    m, c = 10, 3
    assert lm.num_params(m, 3) == 100 and lm.num_params(m, 1) == 30 and lm.num_params(2, 2) == 12
    raw = np.arange(100, dtype=np.float32).reshape(1, 1, 1, 100)
    p = lm.unpack(raw, m, c)
    assert p.logits.shape == (1, 1, 1, 10) and p.means.shape == (1, 1, 1, 3, 10)
    assert p.coeffs.shape == (1, 1, 1, 3, 10)
    np.testing.assert_array_equal(p.means[0, 0, 0, 1], np.arange(20, 30))  # channel-major blocks
    np.testing.assert_array_equal(p.log_scales[0, 0, 0, 0], np.arange(40, 50))
    np.testing.assert_allclose(p.coeffs[0, 0, 0, 2], np.tanh(np.arange(90, 100)))
    assert lm.unpack(raw[..., :30], m, 1).coeffs is None
    good = np.zeros((1, 1, 1, 3), np.int32)
    bad = good.copy()
    bad[0, 0, 0, 1] = 17
    with pytest.raises(ValueError, match=r"levels must be in 0\.\.16 \(K=17\), got values in \[0, 17\]"):
        lm.log_prob_levels(raw, bad, 17)
    bad[0, 0, 0, 1] = -1
    with pytest.raises(ValueError, match=r"got values in \[-1, 0\]"):
        lm.log_prob_levels(raw, bad, 17)
    with pytest.raises(ValueError, match="must be an integer array.*float32"):
        lm.log_prob_levels(raw, good.astype(jnp.float32), 17)
    with pytest.raises(ValueError, match=r"99 features per pixel is not M \* 10"):
        lm.log_prob_levels(raw[..., :99], good, 17)
    with pytest.raises(ValueError, match=r"same B, H, W.*\(1, 1, 1, 100\).*\(1, 2, 1, 3\)"):
        lm.log_prob_levels(raw, np.zeros((1, 2, 1, 3), np.int32), 17)
    with pytest.raises(ValueError, match=r"raw must be \[\.\.\., 30\]"):
        lm.unpack(raw, m, 1)
    with pytest.raises(ValueError, match="num_levels must be >= 2"):
        lm.log_prob_levels(raw, good, 1)
    with pytest.raises(ValueError, match=r"channel_log_prob levels: levels must be in 0\.\.4"):
        lm.channel_log_prob(np.full((2, 3), 5, np.int32), *(np.zeros((2, 3, 4), np.float32),) * 3, 5)
