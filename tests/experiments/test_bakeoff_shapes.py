"""The bake-off's shapes table (experiments.bakeoff, shapes section): its contract (table.json
columns, samples/<model>.npy and <model>_factors.npy) with rows from a stand-in trainer, the
scores against their definitions, and --only selecting the shapes rows."""
import json
import os

import jax
import numpy as np
import pytest

from experiments import bakeoff
from gen_jax.data import image_pairs
from gen_jax.data.shapes import FACTORS, generate_shapes
from gen_jax.metrics.features import FeatureExtractor

N = 24


def _split(n, seed):
    a = generate_shapes(n, seed=seed)
    return {"image": a["image"], "label": a["shape"], "index": np.arange(n), **{k: a[k] for k in FACTORS}}


TRAIN, TEST = _split(40, 0), _split(30, 1)


def _blur(x):
    return (x + np.roll(x, 1, 1) + np.roll(x, -1, 1) + np.roll(x, 1, 2) + np.roll(x, -1, 2)) / 5.0


def _nearest_test_factors(images):
    """A stand-in factor predictor: the factors of the nearest test image."""
    ref = TEST["image"].reshape(len(TEST["image"]), -1) / 255.0
    d = ((np.asarray(images).reshape(len(images), -1)[:, None] - ref[None]) ** 2).sum(-1)
    return image_pairs.split_factors(TEST, d.argmin(1))


def _runner(name, ov, base, extractor, test, progress, row_name, extras=None):
    """Writes the outputs a trained image-to-image row would: exact targets for pix2pix, blurred
    ones for the L1 baseline (the task's rows of the test split, cycled). These rows are not
    caption-conditioned, so the caption ``extras`` a real run would call add nothing."""
    rows = image_pairs.first_rows(test, N)
    x = test["image"][rows].astype(np.float32) / 255.0
    if ov.get("model.adv_weight") == 0.0:
        x = _blur(x)
    rel = os.path.join("samples", f"{row_name}.npy")
    np.save(os.path.join(base, rel), x.astype(np.float32))
    return {"model": row_name, "family": "gan", "fid": 1.0, "kid": 0.0, "precision": 1.0, "recall": 1.0,
            "train_seconds": 1.0, "sample_seconds": 0.1, "checkpoint": "latest", "samples": rel}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bake"))
    fake_net = FeatureExtractor(apply=jax.jit(lambda p, x: (x.mean((1, 2)), x.reshape(x.shape[0], -1)[:, :8])),
                                params=None, batch_size=32)
    rows = bakeoff.run_shapes(out, [r for r in bakeoff.SHAPES_BAKEOFF if r[0] == "pix2pix_shapes"], False,
                              runner=_runner, extractor=fake_net, predictor=_nearest_test_factors,
                              arrays=(TRAIN, TEST))
    return out, rows


def test_table_contract(table):
    out, rows = table
    base = os.path.join(out, "shapes")
    with open(os.path.join(base, "table.json")) as f:
        saved = json.load(f)
    assert [r["model"] for r in saved] == ["pix2pix_shapes", "unet_l1_shapes", "real-vs-real"]
    for r in saved:
        assert set(bakeoff.SHAPES_COLUMNS) <= set(r), set(bakeoff.SHAPES_COLUMNS) - set(r)
    for r in saved[:2]:
        x = np.load(os.path.join(base, r["samples"]))
        f = np.load(os.path.join(base, r["factors"]))
        assert x.dtype == np.float32 and x.shape == (N, 32, 32, 3) and 0 <= x.min() and x.max() <= 1
        assert np.issubdtype(f.dtype, np.integer) and f.shape == (N, 5)
        np.testing.assert_array_equal(f, image_pairs.target_factors("outline", TEST, N))
    assert os.path.exists(os.path.join(base, "table.md"))
    floor = saved[2]
    assert floor["acc_colour"] == 1.0 and floor["sharpness"] == 1.0 and np.isfinite(floor["fid"])


def test_scores_follow_their_definitions(table):
    _, rows = table
    exact, blurred = rows[0], rows[1]
    assert all(exact[c] == 1.0 for c in bakeoff.SHAPES_FACTOR_COLUMNS)
    assert exact["l1"] == 0.0 and exact["sharpness"] == pytest.approx(1.0)
    rows_ = image_pairs.first_rows(TEST, N)
    target = TEST["image"][rows_] / 255.0
    assert blurred["l1"] == pytest.approx(np.abs(_blur(target) - target).mean(), rel=1e-5)
    assert 0 < blurred["sharpness"] < 0.95  # blur lowers the gradient energy (0.90 for this 5-point blur)
    # gradient_energy against a closed form: a horizontal ramp of slope s has |grad| = s everywhere.
    ramp = np.tile(np.arange(8.0)[None, None, :, None] * 0.1, (1, 8, 1, 1))
    assert bakeoff.gradient_energy(ramp) == pytest.approx(0.1)


def test_only_selects_the_shapes_rows(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run(out, todo, progress):
        seen["todo"] = todo
        os.makedirs(os.path.join(out, "shapes"), exist_ok=True)
        bakeoff.write_shapes_tables(os.path.join(out, "shapes"), [])

    monkeypatch.setattr(bakeoff, "run_shapes", fake_run)
    assert bakeoff.main(["--out", str(tmp_path), "--only", "pix2pix_shapes", "--no_progress"]) == 0
    assert [bakeoff.shapes_row_name(n, ov)[0] for n, ov, _ in seen["todo"]] == ["pix2pix_shapes", "unet_l1_shapes"]
    assert not os.path.exists(tmp_path / "table.json")  # no digits rows were asked for
    assert bakeoff.main(["--out", str(tmp_path), "--only", "pix2pix_shapez"]) == 2
    assert "pix2pix_shapes" in capsys.readouterr().err


def test_an_unconditional_row_has_no_factor_accuracy(tmp_path):
    """A row whose model takes no conditions is scored for FID and sharpness only: its samples
    ask for no factors, so acc_<factor> is None and no _factors.npy is written."""
    from types import SimpleNamespace

    def runner(name, ov, base, extractor, test, progress, row_name, extras=None):
        row = _runner(name, ov, base, extractor, test, progress, row_name)
        row.update(extras(None, SimpleNamespace(conditioning=None), {}, row))
        return row

    fake_net = FeatureExtractor(apply=jax.jit(lambda p, x: (x.mean((1, 2)), x.reshape(x.shape[0], -1)[:, :8])),
                                params=None, batch_size=32)
    rows = bakeoff.run_shapes(str(tmp_path), [("pix2pix_shapes", {}, 1)], False, runner=runner,
                              extractor=fake_net, predictor=_nearest_test_factors, arrays=(TRAIN, TEST))
    row = rows[0]
    assert all(row[c] is None for c in bakeoff.SHAPES_FACTOR_COLUMNS)
    assert row["factors"] is None and "unconditional" not in row
    assert row["sharpness"] > 0.5 and row["fid"] == 1.0   # the image scores are still there
    assert not os.path.exists(tmp_path / "shapes" / "samples" / "pix2pix_shapes_factors.npy")
