"""Tests for gen_jax.metrics (everything except Inception-v3, see test_inception.py; bits/dim
is gen_jax.distributions.bpd, see tests/distributions/test_bpd.py)."""
import collections
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.linalg
from sklearn.datasets import load_digits

from gen_jax.config import ConfigError
from gen_jax.model import GenerativeModel, Predictor
from gen_jax.metrics import fid, features, mmd
from gen_jax.metrics import classifier as clf
from gen_jax.metrics.inception_score import inception_score
from gen_jax.metrics.precision_recall import knn_radii, precision_recall

Info = collections.namedtuple("Info", ["image_shape", "num_classes"])


# ---------------------------------------------------------------- FID / KID

def _random_psd(rng, f, rank=None):
    a = rng.normal(size=(f, rank or f))
    return a @ a.T / f


def test_frechet_distance_matches_sqrtm():
    rng = np.random.default_rng(0)
    f = 12
    mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
    s1, s2 = _random_psd(rng, f), _random_psd(rng, f)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), direct, rtol=1e-6)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(1)
    v1, v2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    np.testing.assert_allclose(fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)),
                               expected, rtol=1e-10)


def test_frechet_distance_singular_covariances():
    # N < F gives rank-deficient covariances: result stays finite and non-negative.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 30))
    assert abs(fid.fid_from_features(x, x)) < 1e-10
    y = rng.normal(size=(10, 30)) + 1.0
    assert fid.fid_from_features(x, y) > 0


def test_gaussian_statistics_and_fid_shapes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 4))
    mu, sigma = fid.gaussian_statistics(x)
    assert mu.shape == (4,) and sigma.shape == (4, 4) and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.T, ddof=1))
    with pytest.raises(ValueError, match="real_features"):
        fid.fid_from_features(x[:, :, None], x)
    with pytest.raises(ValueError, match="sigma2"):
        fid.frechet_distance(mu, sigma, mu, sigma[:3, :3])


def test_kid_same_and_shifted():
    # Unbiased: over independent data sets from one distribution the estimates average to 0.
    rng = np.random.default_rng(4)
    d, reps = 4, 60
    same = np.array([fid.kernel_inception_distance(rng.normal(size=(100, d)), rng.normal(size=(100, d)),
                                                   num_subsets=1, subset_size=100)[0]
                     for _ in range(reps)])
    assert abs(same.mean()) < 3 * same.std() / math.sqrt(reps)
    a, b = rng.normal(size=(400, d)), rng.normal(size=(400, d))
    mean, std = fid.kernel_inception_distance(a, b, num_subsets=20, subset_size=200, seed=0)
    shifted, _ = fid.kernel_inception_distance(a, b + 0.5, num_subsets=20, subset_size=200, seed=0)
    assert shifted > 5 * (abs(mean) + std)
    # Reproducible from the seed; a Generator works too.
    assert fid.kernel_inception_distance(a, b, 5, 100, seed=7) == \
        fid.kernel_inception_distance(a, b, 5, 100, seed=np.random.default_rng(7))


def test_kid_matches_brute_force_on_one_subset():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    k = lambda u, v: (u @ v / 3 + 1) ** 3
    m = 6
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    mean, std = fid.kernel_inception_distance(x, y, num_subsets=3, subset_size=6)
    np.testing.assert_allclose(mean, sxx + syy - 2 * sxy, rtol=1e-10)  # subsets = whole sets
    assert std < 1e-10


# ---------------------------------------------------------------- precision / recall

def _brute_force_pr(real, fake, k):
    def radii(s):
        return np.array([np.sort([np.linalg.norm(p - q) for q in s])[k] for p in s])

    def inside(points, ref, rad):
        return np.mean([any(np.linalg.norm(p - q) <= r for q, r in zip(ref, rad)) for p in points])

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(40, 3))
    fake = rng.normal(size=(30, 3)) * 1.5 + 0.5
    expected = _brute_force_pr(real, fake, 3)
    got = precision_recall(real, fake, k=3, batch_size=7)  # ragged batches
    np.testing.assert_allclose(got, expected)
    assert 0 < got[0] < 1  # the wider fake set covers the real one: recall may be 1


def test_precision_recall_limits():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 4))
    assert precision_recall(x, x) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    np.testing.assert_allclose(knn_radii(x, 1, batch_size=8),
                               [np.sort(np.linalg.norm(x - p, axis=1))[1] for p in x])
    with pytest.raises(ValueError, match="k must be"):
        knn_radii(x[:3], k=3)


# ---------------------------------------------------------------- Inception Score

def test_inception_score_limits():
    assert inception_score(np.zeros((100, 10)), num_splits=5) == pytest.approx((1.0, 0.0))
    labels = np.tile(np.arange(10), 20)  # each of the 4 splits holds 5 of each class
    logits = 50.0 * np.eye(10)[labels]
    mean, std = inception_score(logits, num_splits=4)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    # Confident but collapsed onto one class -> 1.
    assert inception_score(50.0 * np.eye(10)[np.zeros(40, int)], 2)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="logits"):
        inception_score(np.zeros(10))


# ---------------------------------------------------------------- MMD

def test_mmd2_matches_double_loop():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(7, 2)), rng.normal(size=(9, 2)) + 0.4
    bw = 0.8
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * bw ** 2))
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    np.testing.assert_allclose(mmd.mmd2_unbiased(x, y, bw), sxx + syy - 2 * sxy, rtol=1e-5, atol=1e-6)
    # Median heuristic = median pairwise distance of the pooled sample.
    z = np.concatenate([x, y])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    np.testing.assert_allclose(mmd.median_heuristic(jnp.asarray(z)), np.median(dists), rtol=1e-4)


def test_mmd_permutation_test():
    rng = np.random.default_rng(9)
    key = jax.random.PRNGKey(0)
    pvals = []
    for i in range(20):  # same shapes -> one compile
        x, y = rng.normal(size=(60, 3)), rng.normal(size=(60, 3))
        stat, p = mmd.mmd_permutation_test(jax.random.fold_in(key, i), x, y, num_permutations=200)
        np.testing.assert_allclose(stat, mmd.mmd2_unbiased(x, y), rtol=1e-4, atol=1e-6)
        pvals.append(float(p))
    pvals = np.array(pvals)
    assert 0.25 < pvals.mean() < 0.75  # roughly uniform under the null
    assert np.mean(pvals < 0.05) <= 0.2
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 1.0
    _, p = mmd.mmd_permutation_test(key, x, y, num_permutations=200)
    assert float(p) < 0.01
    with pytest.raises(ValueError, match="feature sizes"):
        mmd.mmd2_unbiased(x, y[:, :2])


# ---------------------------------------------------------------- classifier

@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1], 17 levels
    labels = d.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(labels))
    tr, te = perm[:1437], perm[1437:]
    return images[tr], labels[tr], images[te], labels[te]


@pytest.fixture(scope="module")
def trained_classifier(digits):
    xtr, ytr, _, _ = digits
    cfg = ml_collections.ConfigDict({"features": (16, 32), "hidden": 64, "dropout_rate": 0.1})
    model = clf.make_classifier(cfg, Info((8, 8, 1), 10))
    key = jax.random.PRNGKey(0)
    params = jax.jit(model.training.init)(key, {"image": xtr[:2], "label": ytr[:2]})
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        (loss, metrics), grads = jax.value_and_grad(model.training.phases[0].loss, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    rng = np.random.default_rng(1)
    for i in range(300):
        idx = rng.integers(0, len(ytr), size=64)
        params, opt_state, metrics = step(params, opt_state, {"image": xtr[idx], "label": ytr[idx]},
                                          jax.random.fold_in(key, i))
    return cfg, model, params


def test_classifier_learns_digits(digits, trained_classifier):
    _, _, xte, yte = digits
    _, model, params = trained_classifier
    logits, feats = model.classifier.logits(params, xte), model.classifier.features(params, xte)
    assert logits.shape == (len(yte), 10) and feats.shape == (len(yte), 64)
    acc = float(np.mean(np.argmax(logits, -1) == yte))
    assert acc > 0.9, acc
    loss, metrics = model.training.phases[0].loss(params, {"image": xte, "label": yte}, jax.random.PRNGKey(1))
    assert set(metrics) == {"loss", "accuracy"} and np.isfinite(loss)
    # A feature network is a Predictor: it never poses as a generative model (no sampler,
    # no likelihood).
    assert isinstance(model, Predictor) and not isinstance(model, GenerativeModel)
    assert len(model.training.phases) == 1 and model.classifier.num_classes == 10
    assert not hasattr(model, "sampler") and not hasattr(model, "likelihood")


def test_classifier_shapes_images():
    net = clf.FeatureClassifier(num_classes=4)
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
    logits, feats = jax.eval_shape(net.apply, variables, x)
    assert logits.shape == (2, 4) and feats.shape == (2, 128)


def test_classifier_config_errors():
    with pytest.raises(ConfigError, match=r"config\.model\.hiden"):
        clf.make_classifier({"hiden": 3}, Info((8, 8, 1), 10))
    with pytest.raises(ConfigError, match=r"config\.model\.hidden"):
        clf.make_classifier({"hidden": "wide"}, Info((8, 8, 1), 10))
    with pytest.raises(ConfigError, match=r"config\.model\.dropout_rate"):
        clf.make_classifier({"dropout_rate": 1.5}, Info((8, 8, 1), 10))
    with pytest.raises(ValueError, match="num_classes"):
        clf.make_classifier({}, Info((8, 8, 1), None))
    model = clf.make_classifier(clf.ClassifierConfig(), Info((8, 8, 1), 10))
    with pytest.raises(ValueError, match=r"batch\['image'\]"):
        model.training.init(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 4, 4, 1))})


# ---------------------------------------------------------------- features + scoring

@pytest.fixture(scope="module")
def extractor(trained_classifier):
    cfg, _, params = trained_classifier
    return features.make_classifier_extractor(cfg, params, batch_size=128)


def test_extractor_pads_last_batch(digits, extractor, trained_classifier):
    _, _, xte, _ = digits
    out = extractor(xte[:150])  # 128 + 22 (padded)
    assert out["features"].shape == (150, 64) and out["features"].dtype == np.float64
    assert out["logits"].shape == (150, 10)
    _, model, params = trained_classifier
    ref_logits, ref_feats = model.classifier.logits(params, xte[:150]), model.classifier.features(params, xte[:150])
    np.testing.assert_allclose(out["features"], ref_feats, rtol=1e-5, atol=1e-5)


def test_score_samples(digits, extractor):
    xtr, _, xte, _ = digits
    same = features.score_samples(xte, xte, extractor, kid_subset_size=200, kid_num_subsets=10)
    assert set(same) == {"fid", "kid", "kid_std", "precision", "recall", "inception_score", "class_kl"}
    pred = np.argmax(extractor(xte)["logits"], axis=-1)
    hist = np.bincount(pred, minlength=10) / len(pred)
    assert same["class_kl"] == pytest.approx(float(np.sum(hist[hist > 0] * np.log(10 * hist[hist > 0]))))
    ones = xte[pred == pred[0]]  # samples of one class only: KL = log C
    assert features.score_samples(ones, xte, extractor, kid_subset_size=10, kid_num_subsets=2)["class_kl"] == \
        pytest.approx(np.log(10))
    assert abs(same["fid"]) < 1e-6 and same["precision"] == 1.0 and same["recall"] == 1.0
    assert same["inception_score"] > 5  # confident, balanced classifier on real digits
    real = features.score_samples(xtr[:360], xte, extractor, kid_subset_size=200,
                                  kid_num_subsets=10)
    noise = np.random.default_rng(0).uniform(size=xte.shape).astype(np.float32)
    bad = features.score_samples(noise, xte, extractor, kid_subset_size=200, kid_num_subsets=10)
    assert bad["fid"] > 10 * real["fid"] and bad["kid"] > 10 * real["kid"]
    assert bad["precision"] < 0.2 < real["precision"]


def test_label_accuracy_of_conditional_samples(digits, extractor):
    _, _, xte, yte = digits
    pred = np.argmax(extractor(xte)["logits"], axis=-1)
    right = features.score_samples(xte, xte, extractor, kid_subset_size=200, kid_num_subsets=10, labels=pred)
    assert right["label_accuracy"] == 1.0
    wrong = (pred + 1 + np.arange(len(pred)) % 2) % 10  # every label wrong
    half = np.where(np.arange(len(pred)) % 2 == 0, pred, wrong)
    got = features.score_samples(xte, xte, extractor, kid_subset_size=200, kid_num_subsets=10, labels=half)
    assert got["label_accuracy"] == pytest.approx(np.mean(np.arange(len(pred)) % 2 == 0))
    with pytest.raises(ValueError, match=r"labels must be \[N=360\]"):
        features.score_samples(xte, xte, extractor, labels=pred[:10])


def test_score_samples_validation(digits, extractor):
    _, _, xte, _ = digits
    with pytest.raises(ValueError, match="samples.*shape"):
        features.score_samples(xte[..., 0], xte, extractor)
    with pytest.raises(ValueError, match="reference.*NaN"):
        features.score_samples(xte, np.full_like(xte, np.nan), extractor)
    with pytest.raises(ValueError, match=r"samples.*\[0, 1\]"):
        features.score_samples(xte * 2, xte, extractor)
    with pytest.raises(ValueError, match="samples.*dtype"):
        features.score_samples((xte * 16).astype(np.int32), xte, extractor)
    with pytest.raises(ValueError, match="image shape"):
        features.score_samples(xte, np.zeros((5, 4, 4, 1), np.float32), extractor)
