"""TFDS builder ``digits``: scikit-learn's 1797 real handwritten 8x8 digits, 17 grey levels.

Source: ``sklearn.datasets.load_digits()`` (the UCI "Optical Recognition of Handwritten
Digits" test set, Alpaydin & Kaynak 1998), bundled with scikit-learn, so nothing is
downloaded. Each image is 8x8 with integer levels ``0..16`` (``K = 17``).

Features:
  * ``image``: ``Tensor(shape=(8, 8, 1), dtype=uint8)``, levels ``0..16``;
  * ``label``: ``ClassLabel(10)``;
  * ``caption``: ``Text``, e.g. ``"a handwritten digit seven"``;
  * ``index``: ``int32``, the row in ``load_digits()`` (records come back in hashed order;
    sort by ``index`` for a deterministic order).

The fixed split (must reproduce ``tests/data/digits_test_split.json``):

1. ``n_c`` = number of images of class ``c``; ``N = 1797``; 360 test images in total.
2. Per-class test counts by the largest-remainder rule: ``quota_c = 360 * n_c / N``;
   ``t_c = floor(quota_c)``; the ``360 - sum_c t_c`` remaining units go one each to the
   classes with the largest fractional remainders ``quota_c - t_c`` (ties to the lower
   class id).
3. One ``rng = numpy.random.default_rng(20240601)``; for classes ``c = 0..9`` in order,
   the test images of class ``c`` are the first ``t_c`` entries of
   ``rng.permutation(indices_of_class_c)`` (indices in increasing order before permuting).
4. The other 1437 images are ``train``.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360
SPLIT_SEED = 20240601
NUM_LEVELS = 17
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _load_sklearn() -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images uint8 [1797, 8, 8], labels int64 [1797])`` from scikit-learn."""
    from sklearn.datasets import load_digits  # local: sklearn is slow to import

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


def largest_remainder_counts(class_counts: np.ndarray, total: int) -> np.ndarray:
    """Integer per-class counts summing to ``total``, proportional to ``class_counts``.

    Floors of ``total * n_c / sum(n)``, then the leftover units one each to the largest
    fractional remainders, ties broken towards the lower class id.
    """
    class_counts = np.asarray(class_counts, dtype=np.int64)
    n = int(class_counts.sum())
    # Exact rational arithmetic: quota_c = total * n_c / n.
    numer = total * class_counts
    base = numer // n
    rem = numer - base * n  # remainder numerators, comparable exactly
    left = total - int(base.sum())
    order = sorted(range(len(class_counts)), key=lambda c: (-int(rem[c]), c))
    out = base.copy()
    for c in order[:left]:
        out[c] += 1
    return out


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, test_idx)`` (both sorted) for the fixed recipe in the module docstring."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=10)
    test_counts = largest_remainder_counts(counts, NUM_TEST)
    rng = np.random.default_rng(SPLIT_SEED)
    test = []
    for c in range(10):
        perm = rng.permutation(np.flatnonzero(labels == c))
        test.append(perm[: test_counts[c]])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def digits_test_indices() -> np.ndarray:
    """The 360 sorted row indices (into ``load_digits()``) of the fixed test split."""
    _, labels = _load_sklearn()
    return split_indices(labels)[1]


def caption_for(label: int) -> str:
    return f"a handwritten digit {DIGIT_WORDS[int(label)]}"


class Digits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits (8x8, 17 levels) with a fixed stratified 1437/360 split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=(8, 8, 1), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(DIGIT_WORDS)),
                "caption": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int32),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the data ships with scikit-learn
        images, labels = _load_sklearn()
        train_idx, test_idx = split_indices(labels)
        return {
            "train": self._generate_examples(images, labels, train_idx),
            "test": self._generate_examples(images, labels, test_idx),
        }

    def _generate_examples(self, images, labels, idx):
        for i in idx:
            i = int(i)
            yield i, {
                "image": images[i][:, :, None],
                "label": int(labels[i]),
                "caption": caption_for(labels[i]),
                "index": i,
            }
