"""Static and dynamic thresholding (Saharia et al. 2022, Sec. 2.3) against a numpy reference, and
inside the pixel-space DDIM / DDPM samplers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.diffusion import samplers, thresholding as th
from gen_jax.diffusion.schedules import make_schedule


def numpy_dynamic(x0, p, bound=1.0):
    """Imagen's dynamic thresholding written directly in numpy, per sample."""
    out = np.empty_like(x0)
    for i, row in enumerate(x0 / bound):
        s = max(1.0, float(np.quantile(np.abs(row).ravel(), p)))
        out[i] = bound * np.clip(row, -s, s) / s
    return out


def test_identity_inside_range():
    x = np.random.default_rng(0).uniform(-1, 1, (4, 5, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(th.dynamic_threshold(jnp.asarray(x), 0.995)), x)
    np.testing.assert_array_equal(np.asarray(th.static_threshold(jnp.asarray(x))), x)


@pytest.mark.parametrize("p,bound", [(0.995, 1.0), (0.9, 1.0), (0.8, 2.5)])
def test_matches_numpy_and_stays_in_range(p, bound):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 4, 4, 3)) * np.array([0.3, 1, 2, 4, 8, 20])[:, None, None, None]).astype(np.float32)
    out = np.asarray(th.dynamic_threshold(jnp.asarray(x), p, bound))
    np.testing.assert_allclose(out, numpy_dynamic(x.astype(np.float64), p, bound), rtol=1e-5, atol=1e-6)
    assert np.abs(out).max() <= bound + 1e-6
    # a sample already in range is untouched, a wide one is shrunk (not only clipped)
    assert np.abs(x[0]).max() <= bound
    np.testing.assert_allclose(out[0], x[0], rtol=1e-6)
    wide = x[-1] / bound
    s = np.quantile(np.abs(wide), p)
    assert s > 1 and np.allclose(out[-1][np.abs(wide) < s], bound * wide[np.abs(wide) < s] / s, rtol=1e-5)


def test_static_is_clip_and_make_threshold():
    x = jnp.linspace(-3, 3, 24).reshape(2, 12)
    np.testing.assert_array_equal(np.asarray(th.make_threshold("static")(x)), np.clip(np.asarray(x), -1, 1))
    assert th.make_threshold("none") is None
    np.testing.assert_allclose(np.asarray(th.make_threshold("dynamic", 0.9)(x)),
                               numpy_dynamic(np.asarray(x, np.float64), 0.9), rtol=1e-6)
    with pytest.raises(ValueError, match="threshold must be one of"):
        th.make_threshold("dynamic_x")
    with pytest.raises(ValueError, match="percentile"):
        th.make_threshold("dynamic", 0.0)
    with pytest.raises(ValueError, match="bound"):
        th.dynamic_threshold(x, 0.9, bound=0.0)


def test_in_the_pixel_samplers():
    """One DDIM step from t = T-1 to x_0 returns the thresholded x0_hat exactly; a DDPM run with
    dynamic thresholding differs from the unthresholded one only by thresholding."""
    sched = make_schedule("linear", 50)
    model_fn = lambda x, t, c: -4.0 * x   # eps = -4 x: x0_hat = (1 + 4 sqrt(1 - abar)) x / sqrt(abar), large
    key = jax.random.PRNGKey(0)
    shape = (3, 4, 4, 1)
    dyn = lambda x0: th.dynamic_threshold(x0, 0.9)
    raw = samplers.make_ddim_sampler(model_fn, sched, 1)(key, shape)
    thr = samplers.make_ddim_sampler(model_fn, sched, 1, clip_x0=dyn)(key, shape)
    np.testing.assert_allclose(np.asarray(thr), numpy_dynamic(np.asarray(raw, np.float64), 0.9), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(raw)).max() > 1.5 and np.abs(np.asarray(thr)).max() <= 1.0 + 1e-6
    ddpm = samplers.make_ddpm_sampler(model_fn, sched, clip_x0=dyn)(key, shape)
    assert np.all(np.isfinite(np.asarray(ddpm)))
