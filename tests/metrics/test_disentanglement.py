"""Disentanglement metrics against their definitions: synthetic codes with known structure
(the factors themselves, rotations of them, a duplicated factor), the discrete mutual
information against sklearn and a closed form, DCI's entropies by hand, factor-name errors."""
import math

import numpy as np
import pytest
from scipy.stats import special_ortho_group
from sklearn.metrics import mutual_info_score

from gen_jax.data import shapes
from gen_jax.metrics import disentanglement as dm

SIZES = (3, 4, 5, 6)
NAMES = ("a", "b", "c", "d")
NOISE = 3
MEAN = np.array([(s - 1) / 2 for s in SIZES])
STD = np.array([math.sqrt((s * s - 1) / 12) for s in SIZES])


def _sample(rng, n):
    return np.stack([rng.integers(0, s, size=n) for s in SIZES], 1)


def _given(rng, k, values):
    f = _sample(rng, len(values))
    f[:, k] = values
    return f


def _observe(rng, f):
    """The 'image' of the synthetic source: the standardized factors plus unit noise dims."""
    return np.concatenate([(f - MEAN) / STD, rng.normal(size=(len(f), NOISE))], 1)


SOURCE = dm.FactorSource(NAMES, SIZES, _sample, _given, _observe)
Z = len(SIZES) + NOISE


def _rotation(seed):
    return special_ortho_group.rvs(Z, random_state=seed)


def _hadamard_mix():
    """Rotates the factor block by the normalized 4x4 Hadamard matrix: every code dim loads
    every factor with weight 1/2 (the most even mixing), noise dims untouched."""
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    m = np.eye(Z)
    m[:4, :4] = h
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    f = _sample(rng, 1000)
    x = _observe(rng, f)
    return f, x


# ---------------------------------------------------------------------------- discrete MI


def test_mutual_information_closed_form_and_sklearn():
    a = np.array([0, 0, 1, 1])
    assert dm.mutual_information(a, a) == pytest.approx(math.log(2))
    assert dm.mutual_information(a, np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # p(a, b) = [[3/8, 1/8], [1/8, 3/8]]: I = sum p log(p / (1/4)) = 3/4 log(3/2) + 1/4 log(1/2)
    a2 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b2 = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assert dm.mutual_information(a2, b2) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    rng = np.random.default_rng(1)
    u, v = rng.integers(0, 5, 300), rng.integers(0, 7, 300)
    v = np.where(rng.random(300) < 0.5, u, v)
    assert dm.mutual_information(u, v) == pytest.approx(mutual_info_score(u, v), rel=1e-10)
    assert dm.entropy(np.array([0, 1, 2, 2])) == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.5)))


# ---------------------------------------------------------------------------- MIG


def test_mig_identity_high_rotation_low_duplicate_lower(data):
    f, x = data
    ident = dm.mig(x, f)
    assert ident["mig"] >= 0.9
    assert ident["mi"].shape == (Z, len(SIZES))
    rotated = [dm.mig(x @ _rotation(s).T, f)["mig"] for s in range(3)]
    assert max(rotated) < 0.4, rotated
    dup = np.concatenate([x[:, :1], x], 1)  # factor a carried by two dims
    d = dm.mig(dup, f)
    assert d["per_factor"][0] < 0.05 and d["mig"] < ident["mig"] - 0.2


def test_mig_bad_input():
    with pytest.raises(ValueError, match="codes"):
        dm.mig(np.zeros((10,)), np.zeros((10, 2), int))
    with pytest.raises(ValueError, match="factors"):
        dm.mig(np.zeros((10, 3)), np.zeros((9, 2), int))
    with pytest.raises(ValueError, match="constant"):
        dm.mig(np.random.default_rng(0).normal(size=(10, 3)), np.zeros((10, 1), int))


# ---------------------------------------------------------------------------- DCI


def test_dci_from_importance_by_hand():
    # A permutation matrix: each code dim explains one factor -> D = C = 1.
    perm = dm.dci_from_importance(np.eye(3)[[2, 0, 1]])
    assert perm["disentanglement"] == pytest.approx(1.0) and perm["completeness"] == pytest.approx(1.0)
    # One dim explains both factors equally, the other nothing: D = 0, C = 1.
    r = np.array([[0.5, 0.5], [0.0, 0.0]])
    out = dm.dci_from_importance(r)
    assert out["disentanglement"] == pytest.approx(0.0, abs=1e-12)
    assert out["completeness"] == pytest.approx(1.0)
    # General: row entropies in base K, weighted by row mass; column entropies in base Z.
    r = np.array([[0.6, 0.1], [0.2, 0.3], [0.0, 0.4]])
    p = r / r.sum(1, keepdims=True)
    h = [-sum(q * math.log(q, 2) for q in row if q > 0) for row in p]
    d = sum(r.sum(1)[i] / r.sum() * (1 - h[i]) for i in range(3))
    pt = r / r.sum(0, keepdims=True)
    c = np.mean([1 + sum(q * math.log(q, 3) for q in pt[:, j] if q > 0) for j in range(2)])
    out = dm.dci_from_importance(r)
    assert out["disentanglement"] == pytest.approx(d) and out["completeness"] == pytest.approx(c)


@pytest.mark.parametrize("model", ["gbt", "forest"])
def test_dci_identity_high_rotation_low(data, model):
    f, x = data
    ident = dm.dci(x, f, model=model, n_estimators=20)
    assert ident["importance"].shape == (Z, len(SIZES))
    if model == "gbt":
        assert ident["disentanglement"] >= 0.9 and ident["completeness"] >= 0.9
    assert ident["informativeness"] >= 0.95
    rot = dm.dci(x @ _rotation(0).T, f, model=model, n_estimators=20)
    assert rot["disentanglement"] < 0.6 and rot["disentanglement"] < ident["disentanglement"] - 0.3


# ---------------------------------------------------------------------------- intervention scores


def test_factorvae_score_identity_high_mixed_low():
    rng = np.random.default_rng(2)
    kw = dict(num_train=150, num_eval=150, num_variance=2000)
    ident = dm.factorvae_score(lambda x: x, SOURCE, rng, **kw)
    assert ident["eval_accuracy"] >= 0.9 and ident["active_dims"] == Z
    # Even mixing: every dim's within-batch variance is 3/4 whichever factor is fixed, so the
    # argmin is noise and the majority vote is near chance (1/4).
    mixed = dm.factorvae_score(lambda x: x @ _hadamard_mix().T, SOURCE, rng, **kw)
    assert mixed["eval_accuracy"] < 0.5
    # A random rotation lowers it too (the vote goes to the dim loading factor k most, so it
    # stays well above chance; see the module docstring).
    rot = np.mean([dm.factorvae_score(lambda x, s=s: x @ _rotation(s).T, SOURCE, rng, **kw)["eval_accuracy"]
                   for s in range(3)])
    assert rot < ident["eval_accuracy"] - 0.05


def test_factorvae_score_prunes_collapsed_dims():
    rng = np.random.default_rng(3)
    out = dm.factorvae_score(lambda x: np.concatenate([x, np.zeros((len(x), 2))], 1), SOURCE, rng,
                             num_train=40, num_eval=40, num_variance=500)
    assert out["active_dims"] == Z and out["eval_accuracy"] >= 0.9


def test_beta_vae_score_identity_high_duplicate_only_informative():
    rng = np.random.default_rng(4)
    ident = dm.beta_vae_score(lambda x: x, SOURCE, rng, num_train=150, num_eval=150)
    assert ident["eval_accuracy"] >= 0.9
    # A code blind to factors c and d cannot tell them apart: at most ~3/4 of the points.
    blind = dm.beta_vae_score(lambda x: x[:, [0, 1, 4, 5, 6]], SOURCE, rng, num_train=150, num_eval=150)
    assert blind["eval_accuracy"] < 0.85


# ---------------------------------------------------------------------------- factor names


def test_unknown_factor_names_raise():
    with pytest.raises(ValueError, match=r"'hue'.*\['shape', 'colour', 'size', 'x', 'y'\]"):
        dm.dataset_factors({k: np.zeros(3, int) for k in shapes.FACTORS}, "shapes", ("shape", "hue"))
    with pytest.raises(ValueError, match="no known generative factors"):
        dm.dataset_factors({"label": np.zeros(3, int)}, "digits")
    with pytest.raises(ValueError, match=r"'rotation'"):
        dm.factorvae_score(lambda x: x, dm.shapes_source(), np.random.default_rng(0), factors=("rotation",))
    with pytest.raises(ValueError, match=r"'e'.*\['a', 'b', 'c', 'd'\]"):
        dm.beta_vae_score(lambda x: x, SOURCE, np.random.default_rng(0), factors=("a", "e"))
    f = dm.dataset_factors({k: np.arange(3) for k in shapes.FACTORS}, "shapes", ("x", "shape"))
    np.testing.assert_array_equal(f, np.stack([np.arange(3)] * 2, 1))


def test_encoder_output_shape_checked():
    with pytest.raises(ValueError, match=r"encode\(x\) must return codes \[N, Z\]"):
        dm.factorvae_score(lambda x: x[:, 0], SOURCE, np.random.default_rng(0), num_variance=10)


# ---------------------------------------------------------------------------- the shapes source


def test_shapes_source_respects_the_fixed_factor_and_renders_it():
    src = dm.shapes_source()
    rng = np.random.default_rng(5)
    allowed = set(shapes.allowed_combos())
    for k in range(5):
        f = src.sample_given(rng, k, np.full(40, 1))
        assert (f[:, k] == 1).all()
        assert {(int(a), int(b)) for a, b in f[:, :2]} <= allowed
    f = src.sample(rng, 30)
    img = src.observe(rng, f)
    assert img.shape == (30, 32, 32, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    # The brightest pixel has the factor's colour; the shape's centroid is in its x / y region.
    brightest = img.reshape(30, -1, 3)[np.arange(30), img.sum(-1).reshape(30, -1).argmax(1)]
    np.testing.assert_allclose(brightest * 255, shapes.COLOUR_RGB[f[:, 1]], atol=1.0)
    mass = img.sum(-1)
    cx = (mass * np.arange(32)[None, None]).sum((1, 2)) / mass.sum((1, 2)) + 0.5
    cy = (mass * np.arange(32)[None, :, None]).sum((1, 2)) / mass.sum((1, 2)) + 0.5
    np.testing.assert_array_equal(np.abs(cx[:, None] - np.array(shapes.CENTRES)).argmin(1), f[:, 3])
    np.testing.assert_array_equal(np.abs(cy[:, None] - np.array(shapes.CENTRES)).argmin(1), f[:, 4])
    with pytest.raises(ValueError, match=r"factors\[:, 1\] \(colour\)"):
        shapes.render_factors(np.array([[0, 9, 0, 0, 0]]), rng)
