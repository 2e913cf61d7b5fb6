"""The text-to-image judges (experiments.benchmarks.t2i_judge): accuracy by definition, and the
analytic check's ceiling of 1 on real shapes images (the heldout split included)."""
import numpy as np
import pytest

from experiments.benchmarks import t2i_judge as J
from gen_jax.data import image_pairs
from gen_jax.data.datasets import load_split


def test_accuracy_by_definition():
    truth = np.array([[0, 1, 0, 2, 2], [1, 2, 1, 0, 0], [2, 3, 0, 1, 1], [3, 4, 1, 2, 0]])
    pred = truth.copy()
    pred[0, 0] = 4          # shape wrong
    pred[1, 1] = 0          # colour wrong
    pred[2, 4] = 0          # y wrong
    a = J.accuracy(pred, truth)
    assert a["shape"] == a["colour"] == a["y"] == pytest.approx(0.75)
    assert a["size"] == a["x"] == 1.0
    assert a["shape+colour"] == pytest.approx(0.5) and a["all"] == pytest.approx(0.25)


def test_real_images_reach_the_analytic_ceiling():
    splits = {s: {k: np.asarray(v)[:40] for k, v in load_split("shapes", s).items()} for s in ("test", "heldout")}
    lookup = {}   # a stand-in feature network that knows every image's factors
    for a in splits.values():
        x = a["image"].astype(np.float32) / 255.0
        lookup.update({xi.tobytes(): f for xi, f in zip(x, image_pairs.split_factors(a, np.arange(40)))})
    row = J.real_images_row(splits, 40, predictor=lambda x: np.array([lookup[xi.tobytes()] for xi in x]))
    for s in ("test", "heldout"):
        assert row[s]["all"] == 1.0
        assert row[f"{s}_analytic"]["all"] == 1.0   # the analytic check reads real images exactly
