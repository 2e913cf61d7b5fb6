"""Score SDEs (gen_jax.diffusion.sde): marginals vs numerically solved moment ODEs, the
prior, discretization, the reverse SDE / ODE and the eps-to-score adapter."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from gen_jax.diffusion import sde as sde_lib


# ----------------------------------------------------------------------------------------
# SDEs.
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vp", "subvp", "ve"])
def test_sde_marginals_solve_moment_odes(kind):
    """For linear SDEs the kernel's mean and variance solve dm/dt = a(t) m,
    dv/dt = 2 a(t) v + g(t)^2 (f = a(t) x); integrate with scipy and compare."""
    sde = sde_lib.make_sde(kind)
    x1 = jnp.ones((1, 1))
    fg = jax.jit(sde.drift_diffusion)

    def rhs(t, y):
        f, g = fg(x1, jnp.array([t], jnp.float32))
        a = float(f[0, 0])  # f(x=1) = a(t)
        return [a * y[0], 2 * a * y[1] + float(g[0, 0]) ** 2]

    v0 = sde.sigma_min ** 2 if kind == "ve" else 0.0  # VE kernel variance is sigma(t)^2 (Song et al.)
    sol = scipy.integrate.solve_ivp(rhs, (0, 1), [1.0, v0], t_eval=[0.1, 0.5, 1.0], rtol=1e-8, atol=1e-10)
    m, s = sde.marginal(jnp.ones((3, 1)), jnp.array([0.1, 0.5, 1.0]))
    np.testing.assert_allclose(m[:, 0], sol.y[0], rtol=1e-4)
    np.testing.assert_allclose(np.square(s[:, 0]), sol.y[1], rtol=1e-3)
    z = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)) * sde.prior_std, jnp.float32)
    np.testing.assert_allclose(sde.prior_log_prob(z),
                               scipy.stats.norm(0, sde.prior_std).logpdf(np.asarray(z)).sum(1), rtol=1e-5)
    # One discretized step agrees with Euler-Maruyama to first order in dt.
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)), jnp.float32)
    t = jnp.array([0.3, 0.7])
    fd, gd_ = sde.discretize(x, t, 1e-4)
    f, g = sde.drift_diffusion(x, t)
    np.testing.assert_allclose(fd, f * 1e-4, rtol=2e-2, atol=1e-7)
    np.testing.assert_allclose(gd_, g * 1e-2, rtol=2e-2)


def test_reverse_and_score_adapter():
    sde = sde_lib.VPSDE()
    score = lambda x, t, c: -x
    x = jnp.ones((2, 3))
    t = jnp.array([0.2, 0.9])
    f, g = sde.drift_diffusion(x, t)
    d_sde, g_sde = sde_lib.reverse(sde, score).drift_diffusion(x, t)
    d_ode, g_ode = sde_lib.reverse(sde, score, probability_flow=True).drift_diffusion(x, t)
    np.testing.assert_allclose(d_sde, f + g ** 2 * x, rtol=1e-6)
    np.testing.assert_allclose(d_ode, f + 0.5 * g ** 2 * x, rtol=1e-6)
    assert np.all(np.asarray(g_ode) == 0) and np.allclose(g_sde, g)
    eps_fn = lambda x, t, c: 2 * x
    _, std = sde.marginal(x, t)
    np.testing.assert_allclose(sde_lib.score_from_eps(eps_fn, sde)(x, t, None), -2 * x / std, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown SDE"):
        sde_lib.make_sde("vpp")
    with pytest.raises(ValueError, match=r"t must be \[B\]"):
        sde.marginal(x, jnp.array([0.1]))
    with pytest.raises(ValueError, match="sigma_min"):
        sde_lib.VESDE(sigma_min=5.0, sigma_max=1.0)
