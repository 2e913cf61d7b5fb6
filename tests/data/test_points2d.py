"""gen_jax.data.points2d: the PacGAN 2-D mixtures, their statistics against the definition,
the uint16 storage through the pipeline and its quantization error bound."""
import numpy as np
import pytest

from gen_jax.data import points2d as P
from gen_jax.data.datasets import get_info, load_split
from gen_jax.data.pipeline import BatchStream
from gen_jax.metrics.mode_coverage import grid_modes, ring_modes


def test_modes_match_the_benchmark_definition():
    np.testing.assert_allclose(P.means("ring2d"), ring_modes(8), atol=1e-12)
    np.testing.assert_allclose(P.means("grid2d"), grid_modes(), atol=1e-12)


@pytest.mark.parametrize("name", ["ring2d", "grid2d"])
def test_split_statistics_and_quantization(name):
    d = P.generate_split(name, "train")
    x, lab, m, std = d["x"], d["label"], P.means(name), P.STDS[name]
    n = len(x)
    counts = np.bincount(lab, minlength=len(m))
    # uniform mode weights: each count within 5 binomial standard deviations
    p = 1 / len(m)
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p)))
    for k in range(len(m)):
        xk = x[lab == k]
        se = std / np.sqrt(len(xk))
        assert np.all(np.abs(xk.mean(0) - m[k]) < 5 * se)
        assert np.all(np.abs(xk.std(0) / std - 1) < 5 / np.sqrt(2 * len(xk)))
    lo, hi = P.VALUE_RANGES[name]
    back = P.from_unit(d["levels"].reshape(n, 2) / (P.NUM_LEVELS - 1), (lo, hi))
    bound = (hi - lo) / (2 * (P.NUM_LEVELS - 1))
    err = np.abs(back - x).max()
    assert err <= bound * (1 + 1e-9) and err > 0.5 * bound and bound < 0.01 * std
    assert d["levels"].dtype == np.uint16


def test_out_of_range_points_are_refused():
    with pytest.raises(ValueError, match="value range"):
        P.to_levels(np.array([[0.0, 1.6]]), P.VALUE_RANGES["ring2d"])


def test_ring2d_through_the_pipeline():
    info = get_info("ring2d")
    assert info.image_shape == (1, 1, 2) and info.num_levels == 65536 and info.value_range == (-1.5, 1.5)
    assert info.num_classes == 8 and info.num_train == 20000 and info.num_test == 2500
    test = load_split("ring2d", "test")
    assert test["image"].dtype == np.uint16 and test["image"].shape == (2500, 1, 1, 2)
    ref = P.generate_split("ring2d", "test")
    np.testing.assert_array_equal(test["image"], ref["levels"])
    np.testing.assert_array_equal(test["label"], ref["label"])
    b = BatchStream(test, info, 64, 0, validate=True).batch_at(1)
    assert b["image"].dtype == np.float32 and b["image"].shape == (64, 1, 1, 2)
    pts = P.from_unit(b["image"].reshape(64, 2), info.value_range)
    d = np.linalg.norm(pts[:, None] - P.means("ring2d")[None], axis=-1).min(1)
    assert d.max() < 6 * P.STDS["ring2d"]
