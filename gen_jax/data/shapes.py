"""TFDS builder ``shapes``: procedurally generated, captioned 32x32 RGB shapes with known factors.

Every image shows one flat-coloured shape on a black background, rendered with analytic
anti-aliasing (pixel coverage ``clip(0.5 - d, 0, 1)`` from a signed distance ``d`` in
pixels), 8-bit RGB (256 levels). Rendering is vectorized in numpy and deterministic given
a seed (:func:`generate_shapes`). The builder downloads nothing.

Factor vocabulary (ids are positions in these tuples):

  * ``shape`` (also ``label``): ``circle, square, triangle, diamond, cross``;
  * ``colour``: ``red, green, blue, yellow, magenta, cyan``;
  * ``size``: ``small`` (radius ~4.5 px), ``large`` (radius ~7.5 px), +-0.3 px jitter;
  * ``x``: ``left, center, right``; ``y``: ``top, middle, bottom`` -- a 3x3 grid of regions
    with centres at 9.5, 16 and 22.5 px, plus uniform jitter of +-1 px.

Captions: ``"a {size} {colour} {shape} {where}"`` where ``where`` is ``"at the top left"``,
``"at the top"`` (x = center), ``"on the left"`` (y = middle), ``"in the center"`` (both),
e.g. ``"a small red circle at the top left"``.

Splits (each drawn with its own seed, ``numpy.random.default_rng([SEED, split_id])``):

  * ``train`` (12000) and ``test`` (2000): (shape, colour) uniform over the 25 allowed
    combinations; size, x, y uniform;
  * ``heldout`` (2000): only the 5 held-out (shape, colour) combinations
    :data:`HELDOUT_COMBOS` -- ``circle/blue, square/yellow, triangle/magenta,
    diamond/cyan, cross/red`` -- which never occur in train or test (every shape and every
    colour does occur there, so the held-out split tests compositional generalisation).

Features: ``image`` ``Tensor((32, 32, 3), uint8)``; ``label`` = shape id
(``ClassLabel``); ``caption`` ``Text``; ``shape``, ``colour``, ``size``, ``x``, ``y``
(``ClassLabel`` each); ``index`` ``int32`` (position in the generated split; records come
back in hashed order, sort by it).
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
SIZES = ("small", "large")
XS = ("left", "center", "right")
YS = ("top", "middle", "bottom")
COLOUR_RGB = np.array(
    [[230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40], [220, 50, 220], [40, 220, 230]],
    dtype=np.float32)
HELDOUT_COMBOS = ((0, 2), (1, 3), (2, 4), (3, 5), (4, 0))  # (shape id, colour id)

IMAGE_SIZE = 32
RADII = (4.5, 7.5)
CENTRES = (9.5, 16.0, 22.5)
POS_JITTER = 1.0
SIZE_JITTER = 0.3
SEED = 0
SPLIT_SIZES = {"train": 12000, "test": 2000, "heldout": 2000}
_SPLIT_IDS = {"train": 0, "test": 1, "heldout": 2}
FACTORS = ("shape", "colour", "size", "x", "y")


def allowed_combos(heldout: bool = False) -> list[tuple[int, int]]:
    """The (shape, colour) pairs of train/test (``heldout=False``) or of the held-out split."""
    if heldout:
        return list(HELDOUT_COMBOS)
    return [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS))
            if (s, c) not in HELDOUT_COMBOS]


def where_phrase(x: int, y: int) -> str:
    """``'at the top left'``, ``'at the top'``, ``'on the left'``, ``'in the center'``..."""
    if x == 1 and y == 1:
        return "in the center"
    if y == 1:
        return f"on the {XS[x]}"
    if x == 1:
        return f"at the {YS[y]}"
    return f"at the {YS[y]} {XS[x]}"


def caption_for(shape: int, colour: int, size: int, x: int, y: int) -> str:
    return f"a {SIZES[size]} {COLOURS[colour]} {SHAPES[shape]} {where_phrase(x, y)}"


def parse_caption(text: str) -> tuple[int, int, int, int, int]:
    """The factors a caption names, in :data:`FACTORS` order; ``-1`` for each factor it does not
    name unambiguously (the inverse of :func:`caption_for` on well-formed captions, used to judge
    generated captions attribute by attribute).

    The position follows :func:`where_phrase`: ``"in the center"`` is (center, middle),
    ``"on the <x>"`` puts y in the middle, ``"at the <y>"`` puts x in the center.
    """
    words = str(text).lower().split()

    def one_of(vocab) -> int:
        found = {vocab.index(w) for w in words if w in vocab}
        return found.pop() if len(found) == 1 else -1

    shape, colour, size = one_of(SHAPES), one_of(COLOURS), one_of(SIZES)
    x, y = one_of(XS), one_of(YS)
    joined = " ".join(words)
    if "in the center" in joined:
        x, y = (1, 1) if x in (-1, 1) and y == -1 else (-1, -1)
    elif "on the" in joined and y == -1 and x != -1:
        y = 1
    elif "at the" in joined and x == -1 and y != -1:
        x = 1
    return shape, colour, size, x, y


def caption_vocabulary() -> list[str]:
    """Every word any caption can contain (sorted)."""
    words = {"a", "at", "on", "in", "the"}
    for vocab in (SHAPES, COLOURS, SIZES, XS, YS):
        words.update(vocab)
    return sorted(words)


def _signed_distance(shape: int, px: np.ndarray, py: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) of ``shape``; broadcasting.

    ``px, py``: pixel-centre offsets from the shape centre ``[n, S, S]``; ``r``: ``[n, 1, 1]``.
    """
    ax, ay = np.abs(px), np.abs(py)
    if shape == 0:  # circle of radius r
        return np.sqrt(px * px + py * py) - r
    if shape == 1:  # axis-aligned square, half-side 0.85 r
        return np.maximum(ax, ay) - 0.85 * r
    if shape == 2:  # upward equilateral triangle with circumradius r (apex at -r in y)
        s3 = np.sqrt(3.0)
        # three half-planes: bottom edge y <= r/2, and the two slanted edges
        d_bottom = py - 0.5 * r
        d_side = (s3 * ax - py) / 2.0 - 0.5 * r
        return np.maximum(d_bottom, d_side)
    if shape == 3:  # diamond (square rotated 45 degrees), vertex distance r
        return (ax + ay - r) / np.sqrt(2.0)
    if shape == 4:  # plus-shaped cross: union of two bars, arm length r, half-width 0.33 r
        w = 0.33 * r
        bar_h = np.maximum(ax - r, ay - w)
        bar_v = np.maximum(ax - w, ay - r)
        return np.minimum(bar_h, bar_v)
    raise ValueError(f"unknown shape id {shape}")


def render(shape, colour, cx, cy, radius) -> np.ndarray:
    """Renders shapes; all arguments are ``[n]`` arrays; returns uint8 ``[n, 32, 32, 3]``."""
    shape = np.asarray(shape)
    n = shape.shape[0]
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5  # pixel centres
    coverage = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for s in range(len(SHAPES)):
        sel = np.flatnonzero(shape == s)
        if sel.size == 0:
            continue
        px = grid[None, None, :] - np.asarray(cx, np.float32)[sel, None, None]
        py = grid[None, :, None] - np.asarray(cy, np.float32)[sel, None, None]
        r = np.asarray(radius, np.float32)[sel, None, None]
        d = _signed_distance(s, px, py, r)
        coverage[sel] = np.clip(0.5 - d, 0.0, 1.0)
    rgb = coverage[..., None] * COLOUR_RGB[np.asarray(colour)][:, None, None, :]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def generate_shapes(num: int, seed: int, heldout: bool = False) -> dict[str, np.ndarray]:
    """Draws ``num`` examples deterministically from ``seed``.

    Returns a dict with ``image`` uint8 ``[num, 32, 32, 3]``, the factor ids ``shape``,
    ``colour``, ``size``, ``x``, ``y`` (int32 ``[num]``), ``cx``, ``cy``, ``radius`` (float32
    ``[num]``, pixels) and ``caption`` (``[num]`` str).
    """
    rng = np.random.default_rng(seed)
    combos = np.array(allowed_combos(heldout), dtype=np.int32)
    pick = rng.integers(0, len(combos), size=num)
    shape, colour = combos[pick, 0], combos[pick, 1]
    size = rng.integers(0, len(SIZES), size=num).astype(np.int32)
    x = rng.integers(0, len(XS), size=num).astype(np.int32)
    y = rng.integers(0, len(YS), size=num).astype(np.int32)
    centres = np.array(CENTRES, np.float32)
    cx = centres[x] + rng.uniform(-POS_JITTER, POS_JITTER, size=num).astype(np.float32)
    cy = centres[y] + rng.uniform(-POS_JITTER, POS_JITTER, size=num).astype(np.float32)
    radius = (np.array(RADII, np.float32)[size]
              + rng.uniform(-SIZE_JITTER, SIZE_JITTER, size=num).astype(np.float32))
    image = render(shape, colour, cx, cy, radius)
    caption = np.array([caption_for(*f) for f in zip(shape, colour, size, x, y)])
    return dict(image=image, shape=shape, colour=colour, size=size, x=x, y=y,
                cx=cx, cy=cy, radius=radius, caption=caption)


def render_factors(factors, rng: np.random.Generator) -> np.ndarray:
    """Renders images with the given factor ids: ``factors`` int ``[n, 5]`` in :data:`FACTORS`
    order (shape, colour, size, x, y); the within-factor jitter (position +-1 px, radius +-0.3 px)
    is drawn from ``rng`` as in :func:`generate_shapes`. Returns uint8 ``[n, 32, 32, 3]``.

    The factor-controlled generator of the intervention-style disentanglement scores
    (:mod:`gen_jax.metrics.disentanglement`); any (shape, colour) pair renders, held out or not.
    """
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(FACTORS) or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"factors must be int [n, {len(FACTORS)}] in the order {FACTORS}, "
                         f"got {f.dtype} {f.shape}")
    sizes = (len(SHAPES), len(COLOURS), len(SIZES), len(XS), len(YS))
    for k, (name, size) in enumerate(zip(FACTORS, sizes)):
        if f.size and (f[:, k].min() < 0 or f[:, k].max() >= size):
            raise ValueError(f"factors[:, {k}] ({name}) must lie in [0, {size}), "
                             f"got [{f[:, k].min()}, {f[:, k].max()}]")
    n = f.shape[0]
    centres = np.array(CENTRES, np.float32)
    cx = centres[f[:, 3]] + rng.uniform(-POS_JITTER, POS_JITTER, size=n).astype(np.float32)
    cy = centres[f[:, 4]] + rng.uniform(-POS_JITTER, POS_JITTER, size=n).astype(np.float32)
    radius = (np.array(RADII, np.float32)[f[:, 2]]
              + rng.uniform(-SIZE_JITTER, SIZE_JITTER, size=n).astype(np.float32))
    return render(f[:, 0], f[:, 1], cx, cy, radius)


def generate_split(split: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The examples of ``split`` (``train``/``test``/``heldout``) exactly as the builder stores them."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"shapes has splits {sorted(SPLIT_SIZES)}, got {split!r}")
    return generate_shapes(SPLIT_SIZES[split], seed=[seed, _SPLIT_IDS[split]],
                           heldout=split == "heldout")


class Shapes(tfds.core.GeneratorBasedBuilder):
    """Captioned 32x32 RGB shapes with ground-truth factors and a held-out combination split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8,
                    encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(SHAPES)),
                "caption": tfds.features.Text(),
                "shape": tfds.features.ClassLabel(names=list(SHAPES)),
                "colour": tfds.features.ClassLabel(names=list(COLOURS)),
                "size": tfds.features.ClassLabel(names=list(SIZES)),
                "x": tfds.features.ClassLabel(names=list(XS)),
                "y": tfds.features.ClassLabel(names=list(YS)),
                "index": tfds.features.Scalar(dtype=np.int32),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # procedurally generated: nothing to download
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split):
        data = generate_split(split)
        for i in range(SPLIT_SIZES[split]):
            ex = {"image": data["image"][i], "label": int(data["shape"][i]),
                  "caption": str(data["caption"][i]), "index": i}
            ex.update({f: int(data[f][i]) for f in FACTORS})
            yield i, ex
