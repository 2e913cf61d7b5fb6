"""The image-to-text rows of the shapes bake-off: a caption for every image of a split, judged.

A row is image-to-text when its model's sampler draws ``'tokens'`` conditioned on ``'image'``
(Frozen, ``experiments/configs/frozen_shapes.py``). :func:`caption_row_outputs` captions every
image of the test split and of the ``heldout`` split (the (shape, colour) combinations never
trained on), writes ``samples/<model>_captions.json`` -- a list of ``{"index": i, "caption":
"..."}`` with ``i`` the dataset's ``index`` feature -- and ``samples/<model>_heldout_captions.json``
alike, and scores each caption attribute by attribute: :func:`gen_jax.data.shapes.parse_caption`
reads the factors a caption names, compared with the image's true factors (a caption that does not
name a factor, or names two, is wrong on it).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from gen_jax.data import image_pairs
from gen_jax.data.shapes import FACTORS, parse_caption

ACC_COLUMNS = tuple(f"acc_{f}" for f in FACTORS)
HELDOUT_COLUMNS = ("heldout_acc_shape", "heldout_acc_colour", "heldout_acc_shape_colour")


def is_image_to_text_row(model) -> bool:
    """A shapes row whose model writes captions for images (a tokens sampler conditioned on images)."""
    cond, sampler = getattr(model, "conditioning", None), getattr(model, "sampler", None)
    return sampler is not None and sampler.kind == "tokens" and cond is not None and "image" in cond.keys


def caption_split(model, params, split: dict, key: jax.Array, batch_size: int = 250) -> list[str]:
    """One caption per image of ``split`` (in split order), by the model's sampler and ``describe``.
    The conditions are the model's own draw over the split (its conditioning turns the split's
    stored levels into the images it reads)."""
    from gen_jax.evaluation.evaluate import draw_conditions
    from gen_jax.evaluation.sampling import sample_in_batches

    num = len(np.asarray(split["index"]))
    cond = draw_conditions(model, num, split)
    tokens = sample_in_batches(model, params, key, num, min(num, batch_size), cond)
    return [str(c) for c in model.sampler.describe(tokens)]


def caption_accuracy(captions: list[str], factors: np.ndarray) -> np.ndarray:
    """bool ``[N, 5]``: whether caption ``n`` names factor ``f`` of its image (``factors`` int
    ``[N, 5]`` in :data:`FACTORS` order)."""
    factors = np.asarray(factors)
    if len(captions) != len(factors) or factors.ndim != 2 or factors.shape[1] != len(FACTORS):
        raise ValueError(f"caption_accuracy: {len(captions)} captions for factors of shape {factors.shape}; "
                         f"expected [{len(captions)}, {len(FACTORS)}]")
    read = np.array([parse_caption(c) for c in captions], np.int64).reshape(-1, len(FACTORS))
    return read == factors


def write_captions(path: str, split: dict, captions: list[str]) -> None:
    """``[{"index": i, "caption": c}, ...]`` in split order (``i`` the split's ``index`` feature)."""
    index = np.asarray(split["index"]).tolist()
    with open(path, "w") as f:
        json.dump([{"index": int(i), "caption": c} for i, c in zip(index, captions)], f, indent=0)


def caption_row_outputs(model, params, base: str, row: dict, test: dict, heldout: dict,
                        batch_size: int = 250) -> dict:
    """Captions of every test and heldout image under ``<base>/samples/``; returns the row's
    fields: the two captions files, :data:`ACC_COLUMNS` on the test split and
    :data:`HELDOUT_COLUMNS` on the heldout split (shape_colour: both right)."""
    name = row["model"]
    out = {}
    for split, suffix, seed in ((test, "_captions.json", 11), (heldout, "_heldout_captions.json", 12)):
        captions = caption_split(model, params, split, jax.random.PRNGKey(seed), batch_size)
        rel = os.path.join("samples", f"{name}{suffix}")
        write_captions(os.path.join(base, rel), split, captions)
        right = caption_accuracy(captions, image_pairs.split_factors(split, np.arange(len(captions))))
        if split is test:
            out["captions"] = rel
            out.update({c: float(right[:, i].mean()) for i, c in enumerate(ACC_COLUMNS)})
        else:
            out["heldout_captions"] = rel
            out.update(dict(zip(HELDOUT_COLUMNS, (float(right[:, 0].mean()), float(right[:, 1].mean()),
                                                  float((right[:, 0] & right[:, 1]).mean())))))
    return out
