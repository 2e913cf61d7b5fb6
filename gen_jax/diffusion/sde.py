"""Score SDEs in continuous time ``t in [0, 1]`` (Song et al. 2021): VP, sub-VP and VE.

Forward SDE ``dx = f(x, t) dt + g(t) dw``. Each class holds its own math -- drift and
diffusion, the Gaussian perturbation kernel ``p_0t(x_t | x_0) = N(m(t) x_0, sigma(t)^2 I)``,
the prior ``p_1`` and a one-step discretization -- and :func:`reverse` derives from any
``score_fn(x, t, cond)`` the reverse-time SDE (Eq. 6)

    dx = [f(x, t) - g(t)^2 grad_x log p_t(x)] dt + g(t) dw_bar

and the probability-flow ODE (Eq. 13)

    dx/dt = f(x, t) - 1/2 g(t)^2 grad_x log p_t(x).

Shapes: ``x`` is ``[B, ...]``, ``t`` is float ``[B]``; per-time scalars come back broadcast as
``[B, 1, ..., 1]``.

References:
  * Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole 2021, "Score-Based Generative Modeling
    through Stochastic Differential Equations" (Eqs. 6, 9, 11, 13, 29-34, App. B, C, E).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

ScoreFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def _bt(t: jax.Array, x: jax.Array) -> jax.Array:
    """``t [B]`` -> ``[B, 1, ..., 1]`` matching ``x [B, ...]``."""
    t = jnp.asarray(t, x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32)
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must be [B] with B={x.shape[0]} (from x {x.shape}), got shape "
                         f"{t.shape}")
    return t.reshape((-1,) + (1,) * (x.ndim - 1))


def _sum_flat(x):
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


class SDE:
    """Interface shared by the SDEs (see module docstring). ``T = 1``.

    Subclasses define ``drift_diffusion``, ``marginal``, ``prior_std`` and may override
    ``discretize`` and ``langevin_alpha``.
    """

    T = 1.0

    def drift_diffusion(self, x, t):
        """``(f(x, t) [B, ...], g(t) [B, 1, ..., 1])``."""
        raise NotImplementedError

    def marginal(self, x0, t):
        """``(m(t) x_0 [B, ...], sigma(t) [B, 1, ..., 1])`` of ``p_0t(x_t | x_0)``."""
        raise NotImplementedError

    prior_std: float = 1.0

    def prior_sample(self, key, shape, dtype=jnp.float32):
        """``x_1 ~ p_1 = N(0, prior_std^2 I)``, ``shape = [B, ...]``."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_log_prob(self, z):
        """``log N(z; 0, prior_std^2 I)`` summed over dims, ``[B]``."""
        d = math.prod(z.shape[1:])
        s2 = self.prior_std ** 2
        return -0.5 * d * math.log(2.0 * math.pi * s2) - 0.5 * _sum_flat(jnp.square(z)) / s2

    def discretize(self, x, t, dt):
        """One forward step over ``[t, t + dt]``: ``x_{i+1} = x_i + f_i + G_i z``; returns
        ``(f_i [B, ...], G_i [B, 1, ..., 1])``. Default: Euler-Maruyama, ``f dt, g sqrt(dt)``
        (Song et al. 2021, App. E uses this for the sub-VP SDE)."""
        f, g = self.drift_diffusion(x, t)
        return f * dt, g * jnp.sqrt(dt)

    def langevin_alpha(self, x, t, dt):
        """``alpha_i`` of the Langevin corrector step size (Song et al. 2021, Alg. 5); 1 here."""
        return jnp.ones_like(_bt(t, x))


@dataclasses.dataclass(frozen=True)
class VPSDE(SDE):
    """Variance-preserving SDE (Song et al. 2021, Eq. 11), the continuum of DDPM:

        dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw,  beta(t) = beta_min + t (beta_max - beta_min),
        p_0t = N(x_0 e^{-1/2 int_0^t beta}, (1 - e^{-int_0^t beta}) I)  (Eq. 29),
        int_0^t beta(s) ds = beta_min t + 1/2 t^2 (beta_max - beta_min).

    ``beta_min = 0.1, beta_max = 20`` correspond to DDPM's ``1e-4..0.02`` with ``T = 1000``
    (``beta_i = beta(i / N) / N``, App. B).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if not (0.0 < self.beta_min <= self.beta_max):
            raise ValueError(f"VPSDE needs 0 < beta_min <= beta_max, got {self.beta_min}, "
                             f"{self.beta_max}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t):
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def drift_diffusion(self, x, t):
        tb = _bt(t, x)
        b = self.beta(tb)
        return -0.5 * b * x, jnp.sqrt(b)

    def marginal(self, x0, t):
        lmc = self._log_mean_coeff(_bt(t, x0))
        return jnp.exp(lmc) * x0, jnp.sqrt(-jnp.expm1(2.0 * lmc))

    def discretize(self, x, t, dt):
        """DDPM's Markov chain (Song et al. 2021, Eq. 9 and App. B/E):
        ``x_{i+1} = sqrt(1 - beta_i) x_i + sqrt(beta_i) z`` with
        ``beta_i = 1 - exp(-int_t^{t+dt} beta(s) ds)``, the exact VP transition over
        ``[t, t + dt]`` (Song et al. use its first-order form ``beta(t) dt``, which exceeds 1
        on coarse grids)."""
        tb = _bt(t, x)
        b = -jnp.expm1(2.0 * (self._log_mean_coeff(tb + dt) - self._log_mean_coeff(tb)))
        return (jnp.sqrt(1.0 - b) - 1.0) * x, jnp.sqrt(b)

    def langevin_alpha(self, x, t, dt):
        """``alpha_i = 1 - beta_i`` (Song et al. 2021, Alg. 5 for the VP SDE)."""
        tb = _bt(t, x)
        return jnp.exp(self._log_mean_coeff(tb + dt) * 2.0 - self._log_mean_coeff(tb) * 2.0)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """Sub-VP SDE (Song et al. 2021, Eq. 34):

        dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - e^{-2 int_0^t beta})) dw,
        p_0t = N(x_0 e^{-1/2 int beta}, (1 - e^{-int beta})^2 I)   (Eq. 29 / App. C).

    Its variance is bounded by the VP SDE's at every ``t``. Discretized by Euler-Maruyama.
    """

    def drift_diffusion(self, x, t):
        tb = _bt(t, x)
        b = self.beta(tb)
        disc = -jnp.expm1(4.0 * self._log_mean_coeff(tb))  # 1 - e^{-2 int beta}
        return -0.5 * b * x, jnp.sqrt(b * disc)

    def marginal(self, x0, t):
        lmc = self._log_mean_coeff(_bt(t, x0))
        return jnp.exp(lmc) * x0, -jnp.expm1(2.0 * lmc)

    def discretize(self, x, t, dt):
        return SDE.discretize(self, x, t, dt)


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE (Song et al. 2021, Eq. 9 and App. C, Eq. 30):

        dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dw,
        sigma(t) = sigma_min (sigma_max / sigma_min)^t,
        p_0t = N(x_0, sigma(t)^2 I),   prior N(0, sigma_max^2 I).

    As in the paper, the kernel's variance is ``sigma(t)^2`` rather than the exact
    ``sigma(t)^2 - sigma(0)^2``: ``p_0`` is the data convolved with ``N(0, sigma_min^2 I)``,
    which keeps ``p_t = p_0 * N(0, (sigma(t)^2 - sigma_min^2) I)`` consistent with the SDE.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        if not (0.0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, "
                             f"{self.sigma_max}")

    @property
    def prior_std(self):
        return self.sigma_max

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift_diffusion(self, x, t):
        s = self.sigma(_bt(t, x))
        return jnp.zeros_like(x), s * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def marginal(self, x0, t):
        return x0, self.sigma(_bt(t, x0))

    def discretize(self, x, t, dt):
        """SMLD's chain (Song et al. 2021, Eq. 8 / App. E):
        ``x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z``."""
        tb = _bt(t, x)
        return jnp.zeros_like(x), jnp.sqrt(jnp.square(self.sigma(tb + dt)) - jnp.square(self.sigma(tb)))


SDES = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def make_sde(kind: str, **kwargs) -> SDE:
    """``'vp'``, ``'subvp'`` or ``'ve'`` with the class's keyword arguments."""
    if kind not in SDES:
        raise ValueError(f"unknown SDE kind {kind!r}; expected one of {tuple(SDES)}")
    return SDES[kind](**kwargs)


class ReverseSDE(NamedTuple):
    """The reverse-time process of an SDE given a score (see :func:`reverse`).

    ``drift_diffusion(x, t, cond) -> (drift [B, ...], diffusion [B, 1.., 1])`` and
    ``discretize(x, t, dt, cond) -> (f_rev, G_rev)`` for a step from ``t`` back to ``t - dt``
    (``dt > 0``): ``x_{i} = x_{i+1} - f_rev + G_rev z``.
    """

    sde: SDE
    score_fn: ScoreFn
    probability_flow: bool
    drift_diffusion: Callable
    discretize: Callable


def reverse(sde: SDE, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
    """Reverse-time SDE (Song et al. 2021, Eq. 6) or probability-flow ODE (Eq. 13).

        reverse SDE:  drift = f - g^2 s,        diffusion = g
        PF ODE:       drift = f - 1/2 g^2 s,    diffusion = 0

    (both to be integrated backwards in time). The discretized version (Eq. 45-46, the
    "reverse diffusion" predictor) uses the forward discretization ``(f_i, G_i)``:
    ``f_rev = f_i - G_i^2 s`` (``- 1/2 G_i^2 s`` for the ODE), ``G_rev = G_i`` (0).
    """
    w = 0.5 if probability_flow else 1.0

    def drift_diffusion(x, t, cond=None):
        f, g = sde.drift_diffusion(x, t)
        s = score_fn(x, t, cond)
        drift = f - w * jnp.square(g) * s
        return drift, (jnp.zeros_like(g) if probability_flow else g)

    def discretize(x, t, dt, cond=None):
        f, g = sde.discretize(x, t - dt, dt)  # forward step over [t - dt, t] (App. E)
        s = score_fn(x, t, cond)
        rev_f = f - w * jnp.square(g) * s
        return rev_f, (jnp.zeros_like(g) if probability_flow else g)

    return ReverseSDE(sde, score_fn, probability_flow, drift_diffusion, discretize)


def score_from_eps(eps_fn: Callable, sde: SDE) -> ScoreFn:
    """``s(x, t) = -eps_theta(x, t) / sigma(t)`` (Song et al. 2021, App. B / Eq. 7 with the
    kernel ``x_t = m x_0 + sigma z``): adapts a noise predictor to a score function."""

    def score_fn(x, t, cond=None):
        _, std = sde.marginal(jnp.zeros_like(x), t)
        return -eps_fn(x, t, cond) / std

    return score_fn
