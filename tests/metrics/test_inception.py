"""Tests for gen_jax.metrics.inception (Inception-v3, no weights are downloaded)."""
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.metrics import inception
from gen_jax.metrics.features import make_inception_extractor


@pytest.fixture(scope="module")
def variables():
    return inception.random_inception_variables(seed=0)


def test_param_count():
    abstract = inception.abstract_variables(1008)
    # torchvision's inception_v3 has 27,161,264 trainable params; without the auxiliary head
    # (3,326,696) that is 23,834,568 for 1000 classes; BN scale+bias are counted, running
    # statistics are not. The FID head has 1008 classes: + 8 * (2048 + 1) = 23,850,960.
    assert inception.count_params(abstract) == 23_850_960
    assert inception.count_params(inception.abstract_variables(1000)) == 23_834_568
    assert inception.count_params(abstract, "batch_stats") == 2 * 17_216  # mean + var


def test_forward_random_weights_gives_finite_pool3(variables):
    extractor = make_inception_extractor(variables, batch_size=2)
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    out = extractor(images)  # 2 batches (last one padded), one compile
    assert out["features"].shape == (3, 2048) and out["logits"].shape == (3, 1008)
    assert np.all(np.isfinite(out["features"])) and np.all(np.isfinite(out["logits"]))
    assert np.all(out["features"] >= 0)  # mean of ReLU outputs (max-pooled in Mixed_7c)
    assert np.std(out["features"]) > 0


def test_preprocess():
    x = jnp.full((2, 8, 8, 1), 0.25)
    y = inception.preprocess(x)
    assert y.shape == (2, 299, 299, 3)
    np.testing.assert_allclose(y, -0.5, atol=1e-6)
    with pytest.raises(ValueError, match="1 or 3"):
        inception.preprocess(jnp.zeros((2, 8, 8, 2)))


def test_save_load_round_trip(variables, tmp_path):
    path = str(tmp_path / "inception.npz")
    inception.save_inception_params(variables, path)
    loaded = inception.load_inception_params(path)
    flat_a = inception.flatten_variables(variables)
    flat_b = inception.flatten_variables(loaded)
    assert sorted(flat_a) == sorted(flat_b)
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_bad_weight_files(variables, tmp_path):
    flat = {k: np.asarray(v) for k, v in inception.flatten_variables(variables).items()}
    key = "params/Mixed_6b/branch7x7_2/conv/kernel"

    wrong = dict(flat, **{key: np.zeros((7, 1, 128, 128), np.float32)})
    path = str(tmp_path / "wrong_shape.npz")
    np.savez(path, **wrong)
    with pytest.raises(inception.FeatureWeightsError, match=key) as err:
        inception.load_inception_params(path)
    assert "wrong_shape.npz" in str(err.value) and "(1, 7, 128, 128)" in str(err.value)

    missing = {k: v for k, v in flat.items() if k != key}
    path = str(tmp_path / "missing.npz")
    np.savez(path, **missing)
    with pytest.raises(inception.FeatureWeightsError, match=f"missing key '{key}'"):
        inception.load_inception_params(path)

    extra = dict(flat, **{"params/AuxLogits/fc/kernel": np.zeros((768, 1000), np.float32)})
    path = str(tmp_path / "extra.npz")
    np.savez(path, **extra)
    with pytest.raises(inception.FeatureWeightsError, match="unexpected key 'params/AuxLogits"):
        inception.load_inception_params(path)

    with pytest.raises(inception.FeatureWeightsError, match="nowhere.npz"):
        inception.load_inception_params(str(tmp_path / "nowhere.npz"))
    assert issubclass(inception.FeatureWeightsError, ValueError)
