"""The embedded 2-D mixtures (ring2d, grid2d) through the normal loader and batch stream:
mode statistics against their definition, the quantization bound, dtype and range."""
import numpy as np
import pytest

from gen_jax.data import points2d
from gen_jax.data.datasets import get_info, load_split
from gen_jax.data.pipeline import BatchStream


@pytest.mark.parametrize("name,modes,std", [("ring2d", 8, 0.01), ("grid2d", 25, 0.05)])
def test_loaded_points_follow_the_mixture(name, modes, std, digits_data_dir):
    info = get_info(name)
    arrays = load_split(name, "train")
    assert arrays["image"].dtype == np.uint16 and arrays["image"].shape == (20000, 1, 1, 2)
    assert info.num_levels == 65536 and info.num_classes == modes and info.value_range is not None
    x = points2d.from_unit(arrays["image"].reshape(-1, 2) / (info.num_levels - 1), info.value_range)
    m, lab = points2d.means(name), arrays["label"]
    counts = np.bincount(lab, minlength=modes)
    n = len(lab)  # equal weights: each count ~ Binomial(n, 1/M), within 5 sd
    assert np.all(np.abs(counts - n / modes) < 5 * np.sqrt(n / modes))
    for k in range(modes):
        d = x[lab == k] - m[k]
        se = std / np.sqrt(len(d))
        assert np.all(np.abs(d.mean(0)) < 5 * se)
        np.testing.assert_allclose(d.std(0), std, rtol=6 / np.sqrt(len(d)))


def test_quantization_error_is_half_a_level():
    lo, hi = points2d.VALUE_RANGES["ring2d"]
    x = np.random.default_rng(0).uniform(-1.2, 1.2, size=(5000, 2))
    back = points2d.from_unit(points2d.to_levels(x, (lo, hi)) / (points2d.NUM_LEVELS - 1), (lo, hi))
    assert np.max(np.abs(back - x)) <= (hi - lo) / (2 * (points2d.NUM_LEVELS - 1)) * (1 + 1e-9)
    with pytest.raises(ValueError, match="leave the value range"):
        points2d.to_levels(np.array([[2.0, 0.0]]), (lo, hi))


def test_batch_stream_scales_uint16_levels_into_the_unit_interval(digits_data_dir):
    info = get_info("grid2d")
    arrays = load_split("grid2d", "test")
    batch = BatchStream(arrays, info, 64, seed=0, validate=True).batch_at(0)
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (64, 1, 1, 2)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
