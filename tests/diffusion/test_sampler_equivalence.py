"""The DDIM sampler's fast paths give the samples of the plain formula (Song et al. 2021, Eq. 12).

``make_ddim_sampler`` with ``eta = 0`` skips the noise draw (``sigma_i = 0``); these tests check
that its samples are bit-identical to the step that draws ``z`` and adds ``0 * z``, and that
both ``eta = 0`` and ``eta > 0`` agree with an independent float64 NumPy loop of Eq. 12/16.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.diffusion import samplers
from gen_jax.diffusion.schedules import make_schedule

T, S, SHAPE = 100, 10, (3, 4, 2)


def toy_eps(x, t, _):
    """A smooth nonlinear eps model of ``x [B, ...]`` and ``t [B]``."""
    tt = t.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1)) / T
    return jnp.tanh(0.7 * x + tt) - 0.3 * tt * x


@pytest.fixture(scope="module")
def setup():
    sched = make_schedule("linear", T)
    return sched, jax.random.PRNGKey(7)


def reference(sched, key, eta, clip):
    """Eq. 12 (with Eq. 16's sigma) in float64 NumPy: ``x_T`` and the step noise from the
    library's key convention (``split(key, 3)``; noise of step ``tau`` from ``fold_in(k, tau)``)."""
    k_init, k_steps, _ = jax.random.split(key, 3)
    x = np.asarray(jax.random.normal(k_init, SHAPE, jnp.float32), np.float64)
    ab = np.asarray(sched.alpha_bars, np.float64)
    taus = samplers.ddim_timesteps(T, S)[::-1]
    for i, tau in enumerate(taus):
        a, a_prev = ab[tau], (ab[taus[i + 1]] if i + 1 < len(taus) else 1.0)
        eps = np.asarray(toy_eps(jnp.asarray(x, jnp.float32), jnp.full((SHAPE[0],), tau, jnp.int32), None),
                         np.float64)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        if clip:
            x0 = np.clip(x0, -1, 1)
            eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
        z = np.asarray(jax.random.normal(jax.random.fold_in(k_steps, int(tau)), SHAPE, jnp.float32), np.float64)
        x = np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps + sigma * z
    return x


@pytest.mark.parametrize("eta,clip", [(0.0, True), (0.0, False), (0.5, True)])
def test_ddim_matches_eq12_reference(setup, eta, clip):
    sched, key = setup
    out = jax.jit(lambda k: samplers.make_ddim_sampler(toy_eps, sched, S, eta, clip_x0=clip)(k, SHAPE))(key)
    np.testing.assert_allclose(np.asarray(out), reference(sched, key, eta, clip), rtol=2e-5, atol=2e-5)


def test_eta0_skips_noise_without_changing_samples(setup):
    """eta = 0 (no noise drawn) is bit-identical to the noise-drawing step with a sigma so small
    (eta = 1e-30) that ``mean + sigma z`` rounds to ``mean`` in float32."""
    sched, key = setup
    fast = samplers.make_ddim_sampler(toy_eps, sched, S, 0.0)
    noisy = samplers.make_ddim_sampler(toy_eps, sched, S, 1e-30)
    a, b = jax.jit(lambda k: (fast(k, SHAPE), noisy(k, SHAPE)))(key)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Trajectories and the Python-loop path agree too.
    traj = samplers.make_ddim_sampler(toy_eps, sched, S, 0.0, return_trajectory=True, use_scan=False)(key, SHAPE)
    np.testing.assert_array_equal(np.asarray(traj[0]), np.asarray(a))
    assert traj[1].shape == (S + 1,) + SHAPE
