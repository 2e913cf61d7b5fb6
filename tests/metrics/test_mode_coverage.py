"""gen_jax.metrics.mode_coverage against hand-built sample sets."""
import numpy as np
import pytest

from gen_jax.metrics.mode_coverage import grid_modes, mode_coverage, ring_modes


def test_modes_of_the_benchmarks():
    r = ring_modes()
    assert r.shape == (8, 2) and np.allclose(np.linalg.norm(r, axis=1), 1.0)
    np.testing.assert_allclose(r[2], [0.0, 1.0], atol=1e-12)
    g = grid_modes()
    assert g.shape == (25, 2) and {tuple(p) for p in g} == {(a, b) for a in range(-4, 5, 2) for b in range(-4, 5, 2)}


def test_true_mixture_covers_every_mode_with_the_gaussian_mass_inside_three_std():
    rng = np.random.default_rng(0)
    modes, std = grid_modes(), 0.05
    x = modes[rng.integers(0, 25, 20000)] + std * rng.normal(size=(20000, 2))
    out = mode_coverage(x, modes, std)
    assert out["modes_covered"] == 25 and out["num_modes"] == 25
    # P(chi_2 <= 9) = 1 - exp(-4.5) for a 2-D isotropic Gaussian
    assert out["high_quality"] == pytest.approx(1 - np.exp(-4.5), abs=0.005)


def test_collapse_and_off_mode_samples():
    modes, std = ring_modes(), 0.01
    x = np.concatenate([np.repeat(modes[:3], 10, axis=0),  # three modes hit exactly
                        np.zeros((30, 2))])  # the centre: far from every mode
    out = mode_coverage(x, modes, std)
    assert out["modes_covered"] == 3 and out["high_quality"] == 0.5
    assert out["per_mode"].tolist() == [10, 10, 10, 0, 0, 0, 0, 0]
    just_out = modes[:1] + np.array([[3.01 * std, 0.0]])
    assert mode_coverage(just_out, modes, std)["modes_covered"] == 0
    with pytest.raises(ValueError, match=r"share D"):
        mode_coverage(np.zeros((4, 3)), modes, std)
