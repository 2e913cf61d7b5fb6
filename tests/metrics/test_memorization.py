"""gen_jax.metrics.memorization against scipy's exact pairwise distances."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from gen_jax.metrics.memorization import memorization_ratio, nearest_distances


def test_nearest_distances_match_scipy():
    rng = np.random.default_rng(0)
    q, r = rng.uniform(size=(700, 4, 4, 1)), rng.uniform(size=(300, 4, 4, 1))
    want = cdist(q.reshape(700, -1), r.reshape(300, -1)).min(1)
    np.testing.assert_allclose(nearest_distances(q, r, batch_size=256), want, rtol=1e-4, atol=1e-4)


def test_copies_have_ratio_zero_and_fresh_data_about_one():
    rng = np.random.default_rng(1)
    train, test, fresh = (rng.uniform(size=(n, 8, 8, 1)) for n in (500, 200, 200))
    copies = train[rng.choice(500, 200)]
    assert memorization_ratio(copies, test, train)["nn_train_ratio"] < 1e-3
    assert abs(memorization_ratio(fresh, test, train)["nn_train_ratio"] - 1.0) < 0.03


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="queries have 64 values per row, reference 16"):
        nearest_distances(np.zeros((2, 8, 8, 1)), np.zeros((2, 4, 4, 1)))
