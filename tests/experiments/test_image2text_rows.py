"""The image-to-text outputs of a shapes bake-off row (experiments.image2text_rows) with a stand-in
captioner: the captions files' format and the per-attribute accuracy against the split's factors."""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import image2text_rows as I
from gen_jax.data.datasets import get_tokenizer, load_split
from gen_jax.model import Conditioning, GenerativeModel, Phase, Sampler, Training

CAPTION = "a small red circle in the center"   # shape 0, colour 0, size 0, x 1, y 1


def _model(tok):
    ids = jnp.asarray(tok.encode([CAPTION], 10))

    def sample(params, key, num, cond):
        assert cond["image"].dtype == jnp.float32 and cond["image"].shape[1:] == (32, 32, 3)
        return jnp.broadcast_to(ids, (num, 10))

    def draw(num, arrays=None):
        return {"image": np.asarray(arrays["image"][:num], np.float32) / 255.0}

    return GenerativeModel(name="stand_in", family="autoregressive",
                           training=Training(init=lambda k, b: {}, phases=(Phase(None, loss=lambda p, b, k: (0.0, {})),)),
                           sampler=Sampler(sample, "tokens", describe=tok.decode),
                           conditioning=Conditioning(keys=("image",), draw=draw))


def _first(split, n):
    return {k: np.asarray(v)[:n] for k, v in split.items()}


def test_captions_files_and_accuracy(tmp_path):
    test, heldout = _first(load_split("shapes", "test"), 40), _first(load_split("shapes", "heldout"), 30)
    model = _model(get_tokenizer("shapes"))
    assert I.is_image_to_text_row(model)
    os.makedirs(tmp_path / "samples")
    out = I.caption_row_outputs(model, {}, str(tmp_path), {"model": "m"}, test, heldout, batch_size=16)
    rows = json.load(open(tmp_path / out["captions"]))
    assert [r["index"] for r in rows] == test["index"].tolist()
    assert {r["caption"] for r in rows} == {CAPTION}
    assert len(json.load(open(tmp_path / out["heldout_captions"]))) == 30
    # the constant caption is right exactly where the image has its factor value
    for col, key, value in zip(I.ACC_COLUMNS, ("shape", "colour", "size", "x", "y"), (0, 0, 0, 1, 1)):
        assert out[col] == pytest.approx(np.mean(test[key] == value))
    assert out["heldout_acc_shape_colour"] == pytest.approx(np.mean((heldout["shape"] == 0) & (heldout["colour"] == 0)))


def test_caption_accuracy_checks_shapes():
    with pytest.raises(ValueError, match=r"expected \[2, 5\]"):
        I.caption_accuracy(["a", "b"], np.zeros((3, 5), int))
