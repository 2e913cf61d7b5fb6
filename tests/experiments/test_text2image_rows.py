"""The text-to-image outputs of a shapes bake-off row (experiments.text2image_rows.caption_row_outputs)
with a stand-in caption-conditioned model: the captions asked for, the ``heldout`` samples and
factors, and the heldout accuracy columns against a stand-in factor predictor."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import text2image_rows as T
from gen_jax.data import image_pairs
from gen_jax.data.datasets import load_split
from gen_jax.data.shapes import HELDOUT_COMBOS
from gen_jax.model import GenerativeModel, Phase, Sampler, Training, split_conditioning

N = 12


def _model():
    """Images whose mean brightness is the first caption token / 100 (checks the conditions used)."""
    def sample(params, key, num, cond):
        v = cond["caption_tokens"][:, 1].astype(jnp.float32) / 100.0
        return jnp.broadcast_to(v[:, None, None, None], (num, 32, 32, 3))

    return GenerativeModel(name="stand_in", family="multimodal", training=Training(init=lambda k, b: {}, phases=(Phase(None, loss=lambda p, b, k: (0.0, {})),)),
                           sampler=Sampler(sample, "image"),
                           conditioning=split_conditioning("caption_tokens", with_label=False))


def test_captions_heldout_samples_and_accuracy(tmp_path):
    test, heldout = load_split("shapes", "test"), load_split("shapes", "heldout")
    model = _model()
    assert T.is_caption_row(model)
    os.makedirs(tmp_path / "samples")
    np.save(tmp_path / "samples" / "m.npy", np.zeros((N, 32, 32, 3), np.float32))
    truth = image_pairs.split_factors(heldout, image_pairs.first_rows(heldout, N))
    wrong = truth.copy()
    wrong[: N // 4, 0] = (wrong[: N // 4, 0] + 1) % 5   # a quarter with the wrong shape
    wrong[N // 4: N // 2, 1] = (wrong[N // 4: N // 2, 1] + 1) % 6   # another quarter with the wrong colour

    out = T.caption_row_outputs(model, {}, str(tmp_path), {"model": "m", "samples": "samples/m.npy"},
                                test, heldout, predictor=lambda x: wrong, batch_size=5)
    assert json.load(open(tmp_path / out["captions"])) == [str(c) for c in np.asarray(test["caption"])[:N]]
    assert json.load(open(tmp_path / out["heldout_captions"])) == [str(c) for c in np.asarray(heldout["caption"])[:N]]
    x = np.load(tmp_path / out["heldout_samples"])
    assert x.dtype == np.float32 and x.shape == (N, 32, 32, 3)
    np.testing.assert_allclose(x[:, 0, 0, 0], np.asarray(heldout["caption_tokens"])[:N, 1] / 100.0, rtol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / out["heldout_factors"]), truth)
    assert out["heldout_acc_shape"] == pytest.approx(0.75)
    assert out["heldout_acc_colour"] == pytest.approx(0.75)
    assert out["heldout_acc_shape_colour"] == pytest.approx(0.5)
    assert {tuple(r) for r in truth[:, :2]} <= set(HELDOUT_COMBOS)   # only the held-out combinations
