"""gen_jax.gan.diffaugment (Zhao et al. 2020): autodiff vs finite differences through every op,
translation as an exact zero-padded shift (numpy slicing), cutout zeroing exactly its fraction
at the drawn corner, the colour ops against their formulas, identity at '', refusals."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.gan import diffaugment as da

B, H, W, C = 3, 8, 8, 2
X = np.random.default_rng(0).uniform(-1, 1, (B, H, W, C)).astype(np.float32) + 2.0  # no zeros
KEY = jax.random.PRNGKey(7)


def _np_shift(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = img[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_gradients_match_finite_differences(policy):
    """For a fixed draw, d/dx of <w, T(x)> by autodiff equals central finite differences (the
    ops are affine in x, so the difference quotient is exact up to rounding), and is non-zero."""
    x = jnp.asarray(X[:2, :4, :4])
    draws = da.augment_draws(KEY, policy, x.shape)
    wts = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
    f = jax.jit(lambda v: jnp.sum(wts * da.augment_with(v, draws, policy)))
    grad = np.asarray(jax.grad(f)(x))
    eps, fd = 1e-2, np.zeros(x.size)
    basis = np.eye(x.size, dtype=np.float32).reshape((x.size,) + x.shape)
    for i in range(x.size):
        fd[i] = (float(f(x + eps * basis[i])) - float(f(x - eps * basis[i]))) / (2 * eps)
    np.testing.assert_allclose(grad.ravel(), fd, rtol=0, atol=2e-3)
    assert np.abs(grad).max() > 0.1


def test_translation_is_an_exact_zero_padded_shift():
    draws = da.augment_draws(KEY, "translation", X.shape)
    shifts = np.asarray(draws["translation"])
    assert shifts.shape == (B, 2) and np.abs(shifts).max() <= 1  # round(8 / 8) = 1
    out = np.asarray(da.diff_augment(jnp.asarray(X), KEY, "translation"))
    for b in range(B):
        np.testing.assert_array_equal(out[b], _np_shift(X[b], *shifts[b]))
    # explicit shifts, both signs and the full range
    s = jnp.array([[3, -2], [-8, 0], [0, 5]], jnp.int32)
    out = np.asarray(da.translate(jnp.asarray(X), s))
    for b in range(B):
        np.testing.assert_array_equal(out[b], _np_shift(X[b], *np.asarray(s[b])))


def test_translation_draws_cover_the_range():
    draw = jax.vmap(lambda k: da.augment_draws(k, "translation", (16, 16, 16, 1))["translation"])
    s = np.asarray(draw(jax.random.split(KEY, 50)))
    assert set(np.unique(s)) == {-2, -1, 0, 1, 2}  # round(16 / 8) = 2


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_cutout_zeroes_exactly_its_fraction_at_the_drawn_corner(ratio):
    out = np.asarray(da.diff_augment(jnp.asarray(X), KEY, "cutout", cutout_ratio=ratio))
    draws = da.augment_draws(KEY, "cutout", X.shape, cutout_ratio=ratio)
    h = w = int(8 * ratio + 0.5)
    assert draws["cutout_size"] == (h, w)
    for b in range(B):
        oy, ox = np.asarray(draws["cutout"][b])
        expect = X[b].copy()
        expect[oy:oy + h, ox:ox + w] = 0.0
        np.testing.assert_array_equal(out[b], expect)
        assert np.mean(out[b, ..., 0] == 0) == (h * w) / (H * W)


def test_color_ops_are_their_formulas():
    draws = da.augment_draws(KEY, "color", X.shape)["color"]
    bri, sat, con = (np.asarray(draws[k], np.float64) for k in ("brightness", "saturation", "contrast"))
    assert np.all((-0.5 <= bri) & (bri < 0.5) & (0 <= sat) & (sat < 2) & (0.5 <= con) & (con < 1.5))
    x = X.astype(np.float64) + bri[:, None, None, None]
    m = x.mean(axis=3, keepdims=True)
    x = (x - m) * sat[:, None, None, None] + m
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - m) * con[:, None, None, None] + m
    np.testing.assert_allclose(np.asarray(da.diff_augment(jnp.asarray(X), KEY, "color")), x, atol=1e-5)


def test_identity_policy_and_the_same_draws_reproduce():
    np.testing.assert_array_equal(np.asarray(da.diff_augment(jnp.asarray(X), KEY, "")), X)
    full = "color,translation,cutout"
    a = da.diff_augment(jnp.asarray(X), KEY, full)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(da.augment_with(X, da.augment_draws(KEY, full, X.shape), full)))
    assert np.abs(np.asarray(a) - X).max() > 0.1


def test_unknown_policy_and_bad_input_refused():
    with pytest.raises(ValueError, match=r"config\.model\.diffaugment: unknown DiffAugment op 'flip'"):
        da.diff_augment(jnp.asarray(X), KEY, "color,flip")
    with pytest.raises(ValueError, match="twice"):
        da.parse_policy("cutout,cutout")
    with pytest.raises(ValueError, match=r"x must be float \[B, H, W, C\]"):
        da.diff_augment(jnp.zeros((8, 8, 1)), KEY, "color")
    assert da.parse_policy(" color , cutout ") == ("color", "cutout")
