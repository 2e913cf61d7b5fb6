"""gen_jax.gan.latent_tools: interpolation against plane-rotation geometry, inversion of a
known generator, the linear probe against a planted direction, SeFa against numpy.linalg.eigh."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from gen_jax.gan.latent_tools import (closed_form_directions, edit_grid, interpolation_grid, invert, lerp,
                                      probe_direction, slerp)


def _angle(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def _tanh_generator(z_dim=4, d=24, seed=0):
    """``x = tanh(z A)`` for a fixed ``A [Z, D]`` with orthogonal rows of equal norm (condition
    number 1), scaled so that the pre-activations of ``z ~ N(0, I)`` have standard deviation 0.8."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, z_dim)))  # orthonormal columns
    a = jnp.asarray(0.8 * np.sqrt(d / z_dim) * q.T, jnp.float32)
    return lambda z: jnp.tanh(z @ a).reshape(z.shape[0], 4, d // 4), a


# ----------------------------------------------------------------------------- interpolation

def test_lerp_endpoints_and_midpoint():
    r = np.random.default_rng(0)
    z0, z1 = r.normal(size=5), r.normal(size=5)
    got = np.asarray(lerp(z0, z1, jnp.array([0.0, 0.5, 1.0])))
    np.testing.assert_allclose(got, np.stack([z0, (z0 + z1) / 2, z1]), atol=1e-6)


def test_slerp_is_a_rotation_in_the_plane_of_its_endpoints():
    """Equal-norm endpoints: z(t) = r (cos(t w) u0 + sin(t w) u_perp), built by Gram-Schmidt."""
    r = np.random.default_rng(1)
    z0, z1 = r.normal(size=6), r.normal(size=6)
    z1 *= np.linalg.norm(z0) / np.linalg.norm(z1)
    ts = np.linspace(0.0, 1.0, 9)
    got = np.asarray(slerp(jnp.asarray(z0, jnp.float32), jnp.asarray(z1, jnp.float32), ts), np.float64)
    rad, w = np.linalg.norm(z0), _angle(z0, z1)
    u0 = z0 / rad
    perp = z1 - (z1 @ u0) * u0
    perp /= np.linalg.norm(perp)
    want = rad * (np.cos(ts * w)[:, None] * u0 + np.sin(ts * w)[:, None] * perp)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got[0], z0, atol=1e-6)
    np.testing.assert_allclose(got[-1], z1, atol=1e-5)
    # constant angular speed and on the sphere
    steps = [_angle(got[i], got[i + 1]) for i in range(len(ts) - 1)]
    np.testing.assert_allclose(steps, w / (len(ts) - 1), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), rad, rtol=1e-5)


def test_slerp_unequal_norms_and_small_angle_match_formula():
    """Against the formula in float64, incl. a small angle where arccos(cos) is imprecise in float32."""
    r = np.random.default_rng(2)
    z0 = r.normal(size=8)
    for z1 in (3.0 * r.normal(size=8), z0 + 1e-3 * r.normal(size=8)):
        ts = np.linspace(-0.25, 1.25, 7)
        w = _angle(z0, z1)
        want = (np.sin((1 - ts) * w)[:, None] * z0 + np.sin(ts * w)[:, None] * z1) / np.sin(w)
        got = slerp(jnp.asarray(z0, jnp.float32), jnp.asarray(z1, jnp.float32), ts)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("case", ["equal", "parallel", "antipodal", "zero"])
def test_slerp_degenerate_is_finite_lerp(case):
    z0 = jnp.asarray(np.random.default_rng(3).normal(size=4), jnp.float32)
    z1 = {"equal": z0, "parallel": 2.0 * z0, "antipodal": -z0, "zero": jnp.zeros(4)}[case]
    ts = jnp.linspace(0.0, 1.0, 5)
    got = slerp(z0, z1, ts)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got), np.asarray(lerp(z0, z1, ts)), atol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(slerp(a, z1, ts)))(z0)
    assert np.isfinite(np.asarray(grad)).all()


def test_interpolation_grid_rows_run_between_their_draws():
    z_dim, rows, steps = 3, 4, 6
    gen_a = jnp.asarray(np.random.default_rng(4).normal(size=(z_dim, 10)), jnp.float32)
    generate = lambda z: jnp.sin(z @ gen_a).reshape(z.shape[0], 2, 5)  # noqa: E731
    key = jax.random.PRNGKey(7)
    za, zb = np.asarray(jax.random.normal(key, (2, rows, z_dim)))
    for kind, path in (("slerp", slerp), ("linear", lerp)):
        images, latents = interpolation_grid(generate, key, rows, steps, z_dim, kind=kind)
        assert images.shape == (rows * steps, 2, 5) and latents.shape == (rows, steps, z_dim)
        np.testing.assert_allclose(np.asarray(latents[:, 0]), za, atol=1e-6)
        np.testing.assert_allclose(np.asarray(latents[:, -1]), zb, atol=1e-5)
        assert np.abs(za - zb).min() > 0  # distinct endpoints per row
        for r_ in range(rows):
            np.testing.assert_allclose(np.asarray(latents[r_]),
                                       np.asarray(path(za[r_], zb[r_], jnp.linspace(0, 1, steps))), atol=1e-5)
        np.testing.assert_allclose(np.asarray(images).reshape(rows, steps, 2, 5),
                                   np.asarray(generate(latents.reshape(-1, z_dim))).reshape(rows, steps, 2, 5),
                                   atol=1e-6)
    with pytest.raises(ValueError, match="kind must be 'slerp' or 'linear'"):
        interpolation_grid(generate, key, rows, steps, z_dim, kind="cubic")
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        interpolation_grid(generate, key, rows, 1, z_dim)


def test_interpolation_shape_errors():
    with pytest.raises(ValueError, match=r"z0 \(3,\) and z1 \(4,\)"):
        slerp(jnp.zeros(3), jnp.zeros(4), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"ts must be \[T\]"):
        lerp(jnp.zeros(3), jnp.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"z0 must be \[Z\]"):
        slerp(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros(2))


# ----------------------------------------------------------------------------- inversion

def test_invert_recovers_known_latents():
    generate, _ = _tanh_generator()
    z_true = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    x = generate(z_true)
    z_init = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
    assert float(jnp.mean((generate(z_init) - x) ** 2)) > 1e-2  # the start is far off
    z, mse = invert(generate, x, z_init, steps=500, learning_rate=0.05)
    assert z.shape == (8, 4) and mse.shape == (8,)
    assert float(mse.max()) < 1e-3
    recomputed = np.mean((np.asarray(generate(z)) - np.asarray(x)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(np.asarray(mse), recomputed, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(np.asarray(z), np.asarray(z_true), atol=0.1)  # A injective: z itself returns


def test_invert_examples_are_independent_and_prior_shrinks():
    """Inverting a batch equals inverting each example alone; a prior weight pulls |z| toward 0."""
    generate, _ = _tanh_generator()
    x = generate(jax.random.normal(jax.random.PRNGKey(2), (3, 4)))
    z_init = jax.random.normal(jax.random.PRNGKey(3), (3, 4))
    z_all, _ = invert(generate, x, z_init, steps=50)
    z_one, _ = invert(generate, x[1:2], z_init[1:2], steps=50)
    np.testing.assert_allclose(np.asarray(z_all[1:2]), np.asarray(z_one), atol=1e-5)
    z_prior, mse_prior = invert(generate, x, z_init, steps=200, prior_weight=1.0)
    z_plain, mse_plain = invert(generate, x, z_init, steps=200)
    assert np.all(np.linalg.norm(z_prior, axis=1) < np.linalg.norm(z_plain, axis=1))
    assert np.all(np.asarray(mse_prior) > np.asarray(mse_plain))


def test_invert_shape_errors():
    generate, _ = _tanh_generator()
    with pytest.raises(ValueError, match=r"x \(3, 4, 6\) and z_init \(2, 4\) must have the same batch size"):
        invert(generate, jnp.zeros((3, 4, 6)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"generate\(z_init\) has shape \(2, 4, 6\), but x has shape \(2, 24\)"):
        invert(generate, jnp.zeros((2, 24)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"z_init must be \[N, Z\]"):
        invert(generate, jnp.zeros((2, 4, 6)), jnp.zeros(4))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        invert(generate, jnp.zeros((2, 4, 6)), jnp.zeros((2, 4)), steps=0)


# ----------------------------------------------------------------------------- directions

def test_probe_finds_planted_direction_and_edits_move_the_factor():
    r = np.random.default_rng(5)
    z_dim = 8
    v = r.normal(size=z_dim)
    v /= np.linalg.norm(v)
    z = r.normal(size=(400, z_dim))
    factor = z @ v + 3.0 + 0.05 * r.normal(size=400)
    n = np.asarray(probe_direction(jnp.asarray(z, jnp.float32), jnp.asarray(factor, jnp.float32)))
    np.testing.assert_allclose(np.linalg.norm(n), 1.0, atol=1e-5)
    assert n @ v > 0.99
    # a generator whose output encodes <z, v> (plus an unrelated channel), measured back
    vj = jnp.asarray(v, jnp.float32)
    other = jnp.asarray(r.normal(size=z_dim), jnp.float32)
    generate = lambda q: jnp.stack([jnp.tanh(q @ vj)[:, None] * jnp.ones((1, 5)),  # noqa: E731
                                    jnp.cos(q @ other)[:, None] * jnp.ones((1, 5))], axis=1)
    alphas = jnp.linspace(-2.0, 2.0, 9)
    z_edit = jnp.asarray(r.normal(size=(3, z_dim)), jnp.float32)
    images = edit_grid(generate, z_edit, jnp.asarray(n), alphas)
    assert images.shape == (3 * 9, 2, 5)
    np.testing.assert_allclose(np.asarray(images[1 * 9 + 4]), np.asarray(generate(z_edit[1:2] + alphas[4] * n)[0]),
                               atol=1e-6)  # row-major by example
    measured = np.asarray(images[:, 0].mean(axis=1)).reshape(3, 9)
    for row in measured:
        assert spearmanr(row, np.asarray(alphas)).statistic > 0.9


def test_probe_errors():
    with pytest.raises(ValueError, match=r"z \(5, 3\) and factor \(4,\) must have the same N"):
        probe_direction(jnp.zeros((5, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"factor must be \[N\]"):
        probe_direction(jnp.zeros((5, 3)), jnp.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"direction \(4,\) must be \[Z\] with Z of z \(2, 3\)"):
        edit_grid(lambda q: q, jnp.zeros((2, 3)), jnp.zeros(4), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"alphas must be \[A\]"):
        edit_grid(lambda q: q, jnp.zeros((2, 3)), jnp.zeros(3), 1.0)


def test_closed_form_directions_match_eigh():
    w = np.random.default_rng(6).normal(size=(6, 10))
    dirs, vals = closed_form_directions(jnp.asarray(w, jnp.float32), 4)
    dirs, vals = np.asarray(dirs, np.float64), np.asarray(vals, np.float64)
    assert dirs.shape == (4, 6) and vals.shape == (4,)
    ref_vals, ref_vecs = np.linalg.eigh(w @ w.T)
    order = np.argsort(ref_vals)[::-1][:4]
    np.testing.assert_allclose(vals, ref_vals[order], rtol=1e-4)
    np.testing.assert_allclose(np.abs(np.sum(dirs * ref_vecs[:, order].T, axis=1)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(vals) < 0)
    np.testing.assert_allclose(np.sum((dirs @ w) ** 2, axis=1), vals, rtol=1e-4)  # SeFa's objective |n W|^2
    np.testing.assert_allclose(dirs @ dirs.T, np.eye(4), atol=1e-5)
    with pytest.raises(ValueError, match=r"k=7 exceeds Z=6"):
        closed_form_directions(jnp.asarray(w), 7)
    with pytest.raises(ValueError, match=r"weight must be \[Z, F\]"):
        closed_form_directions(jnp.zeros(6), 1)
