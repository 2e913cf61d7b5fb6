"""Precision of one discretized logistic bin (Salimans et al. 2017, Eq. 2) when the mean lies
far from the bin: against a 60-digit ``decimal`` reference of the same float32 inputs."""
import decimal
from decimal import Decimal

import jax
import numpy as np
import pytest

from gen_jax.distributions import logistic_mixture as lm

K = 256
CTX = decimal.Context(prec=60, Emax=10**8, Emin=-10**8)


def _sigmoid(t: Decimal) -> Decimal:
    return 1 / (1 + (-t).exp())


def _reference(level: int, mean: float, log_s: float) -> float:
    """``log P(level)`` at 60 digits for the exact float32 ``mean`` and ``log_s``: an interior
    bin's mass as ``sigma(a) sigma(-b) (1 - exp(-(a - b)))`` (no cancellation), edge bins
    ``sigma(a)`` and ``1 - sigma(b) = sigma(-b)``."""
    with decimal.localcontext(CTX):
        mu, s = Decimal(float(mean)), Decimal(float(max(log_s, lm.MIN_LOG_SCALE))).exp()
        a = (Decimal(2 * level + 1 - (K - 1)) / (K - 1) - mu) / s
        b = (Decimal(2 * level - 1 - (K - 1)) / (K - 1) - mu) / s
        if level == 0:
            p = _sigmoid(a)
        elif level == K - 1:
            p = _sigmoid(-b)
        else:
            p = _sigmoid(a) * _sigmoid(-b) * (1 - (-(Decimal(2) / (K - 1)) / s).exp())
        return float(p.ln())


# Means far from every bin (both sides), at the scales a trained decoder produces.
MEANS = [1e4, -1e4, 12345.678, -9876.5, 3e4, 1e3]
LOG_S = [-7.0, -3.0, -1.0, 0.0, 1.5, 4.0]
LEVELS = [0, 1, 37, 128, 200, 254, 255]


@pytest.fixture(scope="module")
def far_mean_cases():
    grid = np.array([(lv, m, ls) for m in MEANS for ls in LOG_S for lv in LEVELS])
    levels = grid[:, 0].astype(np.int32)
    mean = grid[:, 1].astype(np.float32)
    log_s = grid[:, 2].astype(np.float32)
    got = np.asarray(jax.jit(lm.discretized_logistic_log_prob, static_argnums=3)(levels, mean, log_s, K),
                     np.float64)
    want = np.array([_reference(int(l), m, s) for l, m, s in zip(levels, mean, log_s)])
    return got, want


def test_far_means_keep_float32_precision_of_the_log_mass(far_mean_cases):
    """The error stays within a few float32 ulps of |log P| itself (the inputs' own rounding);
    the edge difference ``a - b`` lost up to ~0.5 nats here."""
    got, want = far_mean_cases
    assert np.all(np.isfinite(got))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    err = np.abs(got - want)
    assert np.all(err <= 4 * ulp + 1e-6), (err / ulp).max()


def test_reference_resolves_the_width():
    """The reference itself: at a moderate mean it agrees with the closed form
    ``log(sigma(a) - sigma(b))`` in float64."""
    lv, mean, log_s = 130, 0.25, -3.0
    s = np.exp(log_s)
    x = 2.0 * lv / (K - 1) - 1.0
    sig = lambda t: 1.0 / (1.0 + np.exp(-t))
    closed = np.log(sig((x + 1 / (K - 1) - mean) / s) - sig((x - 1 / (K - 1) - mean) / s))
    np.testing.assert_allclose(_reference(lv, mean, log_s), closed, rtol=1e-12)
