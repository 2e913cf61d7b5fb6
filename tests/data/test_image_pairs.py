"""gen_jax.data.image_pairs: the coloured outline of rendered shapes against their analytic
signed distance, and the task plumbing (rows, inputs, target factors)."""
import numpy as np
import pytest

from gen_jax.data import image_pairs as ip
from gen_jax.data import shapes as sh

N = 8
RNG = np.random.default_rng(0)
CX = RNG.uniform(10, 22, N).astype(np.float32)
CY = RNG.uniform(10, 22, N).astype(np.float32)
RADIUS = RNG.choice([4.5, 7.5], N).astype(np.float32)
COLOUR = np.arange(N) % len(sh.COLOURS)


def _circle_distance():
    """Signed distance (px) of every pixel centre to each circle's boundary, ``[N, 32, 32]``."""
    g = np.arange(32) + 0.5
    return np.hypot(g[None, None, :] - CX[:, None, None], g[None, :, None] - CY[:, None, None]) - RADIUS[:, None, None]


def test_outline_lies_on_the_boundary_and_carries_the_colour():
    images = sh.render(np.zeros(N, int), COLOUR, CX, CY, RADIUS).astype(np.float32) / 255.0
    out = np.asarray(ip.outline(images))
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    d = _circle_distance()
    on = out.max(-1) > 0
    # Coverage clip(0.5 - d, 0, 1) changes only where |d| < 0.5, and the 3x3 window reaches
    # sqrt(2) px: the outline is zero farther than 0.5 + sqrt(2) from the boundary...
    assert not on[np.abs(d) > 0.5 + np.sqrt(2) + 1e-4].any()
    # ... and nonzero at every partially covered pixel and at pixels just across the boundary.
    assert on[np.abs(d) < 0.45].all() and on[np.abs(d) < 1.0].mean() > 0.99
    for i in range(N):  # the colour: where the window spans full and empty coverage, exactly the rgb
        rgb = sh.COLOUR_RGB[COLOUR[i]] / 255.0
        full = out[i][np.abs(d[i]) < 0.2]
        ring = out[i].reshape(-1, 3)[on[i].reshape(-1)]
        np.testing.assert_allclose(out[i].max(axis=(0, 1)), rgb, atol=1.0 / 255)
        direction = ring.sum(0) / np.linalg.norm(ring.sum(0))
        np.testing.assert_allclose(direction, rgb / np.linalg.norm(rgb), atol=0.01)
        assert full.size > 0


def test_outline_equals_a_numpy_morphological_gradient():
    x = RNG.random((2, 6, 5, 3)).astype(np.float32)
    pad_hi = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    pad_lo = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.inf)
    win = lambda p: np.stack([p[:, i:i + 6, j:j + 5] for i in range(3) for j in range(3)])
    ref = win(pad_hi).max(0) - win(pad_lo).min(0)
    np.testing.assert_allclose(np.asarray(ip.outline(x)), ref, atol=1e-7)
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ip.outline(x[0])


def test_task_inputs_and_target_factors_follow_the_rows():
    arrays = sh.generate_shapes(5, seed=3)
    task = ip.get_task("outline")
    rows, inputs = ip.task_inputs(task, arrays, 7, 256)
    np.testing.assert_array_equal(rows, [0, 1, 2, 3, 4, 0, 1])
    np.testing.assert_allclose(inputs, np.asarray(ip.outline(arrays["image"][rows] / 255.0)), atol=1e-6)
    f = ip.target_factors("outline", arrays, 7)
    assert f.dtype == np.int32 and f.shape == (7, 5)
    np.testing.assert_array_equal(f[:, 1], arrays["colour"][rows])
    np.testing.assert_array_equal(f[:, 0], arrays["shape"][rows])
    np.testing.assert_allclose(task.targets(arrays, rows, 256), arrays["image"][rows] / 255.0)
    with pytest.raises(ValueError, match="config.model.task"):
        ip.get_task("edges")
    with pytest.raises(ValueError, match="missing"):
        ip.target_factors("outline", {"image": arrays["image"]}, 2)
