"""TFDS builders ``ring2d`` and ``grid2d``: the 2-D Gaussian mixtures of the PacGAN benchmark.

The mode-collapse benchmarks of VEEGAN (Srivastava et al. 2017, Sec. 5.1) and PacGAN (Lin et
al. 2018, Sec. 5.1, Table 1): equal-weight mixtures of isotropic Gaussians in the plane,

* ``ring2d``: 8 modes ``(cos(2 pi k / 8), sin(2 pi k / 8))``, ``k = 0..7`` (the unit circle),
  standard deviation 0.01;
* ``grid2d``: 25 modes on ``{-4, -2, 0, 2, 4}^2`` (mode ``k = 5 i + j`` at
  ``(v_i, v_j)``, ``v = (-4, -2, 0, 2, 4)``), standard deviation 0.05.

Points are drawn as ``label ~ U{0..M-1}``, ``x = mean[label] + std * N(0, I)``, deterministic
given the seed (``numpy.random.default_rng([SEED, dataset_id, split_id])``); nothing is
downloaded.

Storage through the image pipeline: a point is a ``[1, 1, 2]`` "image" of ``K = 65536``
integer levels (uint16) over the dataset's fixed coordinate range ``[lo, hi]`` (the same for
both axes; :data:`VALUE_RANGES`, ``DatasetInfo.value_range``)::

    level = round((x - lo) / (hi - lo) * (K - 1))        (:func:`to_levels`)
    x'    = lo + (hi - lo) * level / (K - 1)             (:func:`from_unit`, of level / (K - 1))

so ``|x' - x| <= (hi - lo) / (2 (K - 1))`` per coordinate: 2.3e-5 for the ring (range
``[-1.5, 1.5]``, 0.23% of its std) and 7.6e-5 for the grid (``[-5, 5]``, 0.15% of its std).
uint8 (K = 256) would be far too coarse (a level of the ring would be 1.2 std wide). The
ranges lie more than 40 std beyond every mode, so no point is clipped (generation checks it).

Features: ``image`` ``Tensor((1, 1, 2), uint16)`` (the levels); ``label`` ``ClassLabel(M)``
(the mode index); ``caption`` ``Text`` (``"a point near the mode at 45 degrees"``,
``"a point near the mode at x -4 y 2"``; captions exist because every embedded dataset has a
caption vocabulary); ``index`` ``int32`` (position in the generated split).

Splits: ``train`` (20000) and ``test`` (2500, the benchmark's sample count).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_LEVELS = 65536
SEED = 0
SPLIT_SIZES = {"train": 20000, "test": 2500}
_SPLIT_IDS = {"train": 0, "test": 1}
_DATASET_IDS = {"ring2d": 0, "grid2d": 1}
GRID_VALUES = (-4, -2, 0, 2, 4)
RING_ANGLES = tuple(45 * k for k in range(8))  # degrees
STDS = {"ring2d": 0.01, "grid2d": 0.05}
VALUE_RANGES = {"ring2d": (-1.5, 1.5), "grid2d": (-5.0, 5.0)}
POINT_SHAPE = (1, 1, 2)


def means(name: str) -> np.ndarray:
    """float64 ``[M, 2]``: the mixture's modes (``M = 8`` for ``ring2d``, 25 for ``grid2d``)."""
    if name == "ring2d":
        a = np.deg2rad(np.array(RING_ANGLES, np.float64))
        return np.stack([np.cos(a), np.sin(a)], axis=-1)
    if name == "grid2d":
        v = np.array(GRID_VALUES, np.float64)
        return np.array([(a, b) for a in v for b in v])
    raise ValueError(f"points2d: unknown dataset {name!r}; known: {sorted(STDS)}")


def caption_for(name: str, mode: int) -> str:
    if name == "ring2d":
        return f"a point near the mode at {RING_ANGLES[mode]} degrees"
    i, j = divmod(int(mode), len(GRID_VALUES))
    return f"a point near the mode at x {GRID_VALUES[i]} y {GRID_VALUES[j]}"


def caption_vocabulary(name: str) -> list[str]:
    """Every word a caption of ``name`` can contain (sorted)."""
    return sorted({w for k in range(len(means(name))) for w in caption_for(name, k).split()})


def to_levels(x, value_range) -> np.ndarray:
    """Points ``x [..., 2]`` in data coordinates -> uint16 levels ``round((x - lo) / (hi - lo)
    (K - 1))``; a ``ValueError`` for points outside ``[lo, hi]`` (nothing is silently clipped)."""
    lo, hi = (float(v) for v in value_range)
    u = (np.asarray(x, np.float64) - lo) / (hi - lo)
    if u.size and (u.min() < 0 or u.max() > 1):
        raise ValueError(f"points2d: points in [{np.min(x):.4g}, {np.max(x):.4g}] leave the value range "
                         f"[{lo}, {hi}]")
    return np.round(u * (NUM_LEVELS - 1)).astype(np.uint16)


def from_unit(u, value_range):
    """``level / (K - 1)`` in ``[0, 1]`` -> data coordinates ``lo + (hi - lo) u`` (numpy or jax
    arrays, any shape; the map the pipeline's batches and the 2-D models share)."""
    lo, hi = (float(v) for v in value_range)
    return lo + (hi - lo) * u


def generate_points(name: str, num: int, seed) -> dict[str, np.ndarray]:
    """``num`` points of mixture ``name`` drawn from ``seed``: ``{'x': float64 [num, 2],
    'label': int32 [num], 'levels': uint16 [num, 1, 1, 2], 'caption': [num] str}``."""
    m = means(name)
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(m), size=num).astype(np.int32)
    x = m[label] + STDS[name] * rng.standard_normal((num, 2))
    levels = to_levels(x, VALUE_RANGES[name]).reshape((num,) + POINT_SHAPE)
    caption = np.array([caption_for(name, k) for k in label])
    return dict(x=x, label=label, levels=levels, caption=caption)


def generate_split(name: str, split: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The points of ``split`` (``train``/``test``) of ``name`` exactly as the builder stores them."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"{name} has splits {sorted(SPLIT_SIZES)}, got {split!r}")
    return generate_points(name, SPLIT_SIZES[split], seed=[seed, _DATASET_IDS[name], _SPLIT_IDS[split]])


class _Points2D(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A 2-D Gaussian mixture stored as ``[1, 1, 2]`` uint16 levels (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MIXTURE = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=POINT_SHAPE, dtype=np.uint16,
                                              encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(num_classes=len(means(self.MIXTURE))),
                "caption": tfds.features.Text(),
                "index": tfds.features.Scalar(dtype=np.int32),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated: nothing to download
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        data = generate_split(self.MIXTURE, split)
        for i in range(SPLIT_SIZES[split]):
            yield i, {"image": data["levels"][i], "label": int(data["label"][i]),
                      "caption": str(data["caption"][i]), "index": i}


class Ring2d(_Points2D):
    """8 Gaussians of std 0.01 on the unit circle (PacGAN's ring)."""

    name = "ring2d"
    MIXTURE = "ring2d"


class Grid2d(_Points2D):
    """25 Gaussians of std 0.05 on {-4, -2, 0, 2, 4}^2 (PacGAN's grid)."""

    name = "grid2d"
    MIXTURE = "grid2d"
