"""Dataset metadata and whole-split loading for the embedded and the standard TFDS datasets.

Two kinds of dataset are served by one :func:`load_split`:

* **Embedded** (``digits``, ``shapes``, ``signals``, ``ring2d``, ``grid2d``; see
  :mod:`gen_jax.data.digits`, :mod:`gen_jax.data.shapes`, :mod:`gen_jax.data.signals`,
  :mod:`gen_jax.data.points2d`): built offline by their TFDS builders and prepared on first
  use into ``data_dir`` (default ``$GEN_JAX_DATA_DIR``, else ``~/.cache/gen_jax/tfds``) as
  ``array_record`` files. Preparation holds an exclusive file lock
  (``<data_dir>/.<name>.lock``), so concurrent processes prepare once; TFDS itself writes
  into an ``.incomplete`` directory and renames it into place when done.
* **Standard TFDS image datasets** (``mnist``, ``fashion_mnist``, ``cifar10``, ``celeb_a``,
  ...): read with ``tfds.data_source(name, split, data_dir, download=False)``, i.e. only
  data already prepared in ``array_record`` format is read; nothing is ever downloaded
  (TensorFlow is not installed, and ``tfds.load`` does not work without it). Prepare such a
  dataset on a networked machine with
  ``tfds.builder(name, data_dir=D, file_format='array_record').download_and_prepare()``.
  ``data_dir=None`` means TFDS's own default (``$TFDS_DATA_DIR`` or
  ``~/tensorflow_datasets``). Images must be uint8 (256 levels). Datasets without a
  ``label`` feature (``celeb_a``) get all-zero labels and ``DatasetInfo.has_labels=False``.

Arrays returned by :func:`load_split` hold integer levels; :mod:`gen_jax.data.pipeline`
turns them into float batches ``level / (K - 1)``. :func:`open_source` (random access, nothing
read) and :func:`record_decoder` (records -> the same arrays) serve the streamed reader
:mod:`gen_jax.data.records`, which never holds a split in memory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import time
from typing import Callable, Optional

import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import digits as digits_lib
from gen_jax.data import points2d as points_lib
from gen_jax.data import shapes as shapes_lib
from gen_jax.data import signals as signals_lib
from gen_jax.data.tokenizers import ByteTokenizer, WordTokenizer


class DatasetError(ValueError):
    """Unknown dataset or split, or a dataset that is not prepared locally."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What models need to know about a dataset.

    Attributes:
      name: dataset name (``'digits'``, ``'mnist'``...).
      image_shape: ``(H, W, C)``.
      num_levels: ``K``, the number of integer intensity levels (17 digits, 256 for 8-bit).
      num_classes: number of label classes (0 when there are no labels).
      num_train, num_test: examples in the ``train`` / ``test`` splits (0 if absent).
      has_captions: whether examples carry a caption (and ``caption_tokens``).
      caption_len: token length ``L`` of ``caption_tokens`` (0 without captions).
      vocab_size: caption tokenizer vocabulary size (0 without captions).
      has_labels: ``False`` for datasets without a ``label`` feature (labels are zeros).
      splits: the split names.
      caption_char_len: length of ``caption_chars`` (the caption as UTF-8 bytes + 1 from
        :class:`~gen_jax.data.tokenizers.ByteTokenizer`, 0-padded; vocabulary 257);
        0 without captions.
      local_cond_shape: shape (without the batch axis) of ``local_cond``, the low-rate
        local-conditioning sequence of 1-D signal datasets (``(T // hop,)`` int ids for
        ``signals``); ``()`` when the dataset has none.
      local_cond_levels: number of ``local_cond`` ids (values lie in ``[0, levels)``); 0 without.
      value_range: ``(lo, hi)`` for datasets of points (``ring2d``, ``grid2d``): an "image"
        ``[1, 1, D]`` of levels stands for the point ``lo + (hi - lo) * level / (K - 1)`` in
        data coordinates (:func:`gen_jax.data.points2d.from_unit`); ``None`` for images.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_levels: int
    num_classes: int
    num_train: int
    num_test: int
    has_captions: bool
    caption_len: int
    vocab_size: int
    has_labels: bool = True
    splits: tuple[str, ...] = ("train", "test")
    caption_char_len: int = 0
    local_cond_shape: tuple[int, ...] = ()
    local_cond_levels: int = 0
    value_range: Optional[tuple[float, float]] = None


@dataclasses.dataclass(frozen=True)
class _Embedded:
    builder_cls: type
    image_shape: tuple[int, int, int]
    num_levels: int
    num_classes: int
    split_sizes: dict
    caption_vocabulary: Callable[[], list]
    caption_len: int  # words of the longest caption + <bos> + <eos>
    caption_char_len: int  # bytes of the longest caption, rounded up
    local_cond_shape: tuple = ()  # per-example shape of the 'local_cond' feature, if any
    local_cond_levels: int = 0
    value_range: Optional[tuple] = None  # (lo, hi) of a dataset of points


def _points(name: str, builder_cls: type, caption_len: int) -> _Embedded:
    return _Embedded(
        builder_cls=builder_cls, image_shape=points_lib.POINT_SHAPE, num_levels=points_lib.NUM_LEVELS,
        num_classes=len(points_lib.means(name)), split_sizes=dict(points_lib.SPLIT_SIZES),
        caption_vocabulary=lambda: points_lib.caption_vocabulary(name), caption_len=caption_len,
        caption_char_len=40, value_range=points_lib.VALUE_RANGES[name])


EMBEDDED = {
    "digits": _Embedded(
        builder_cls=digits_lib.Digits, image_shape=(8, 8, 1), num_levels=digits_lib.NUM_LEVELS,
        num_classes=10, split_sizes={"train": 1797 - digits_lib.NUM_TEST, "test": digits_lib.NUM_TEST},
        caption_vocabulary=lambda: sorted({"a", "handwritten", "digit", *digits_lib.DIGIT_WORDS}),
        caption_len=4 + 2, caption_char_len=32),  # "a handwritten digit seven": 25 bytes
    "shapes": _Embedded(
        builder_cls=shapes_lib.Shapes, image_shape=(32, 32, 3), num_levels=256,
        num_classes=len(shapes_lib.SHAPES), split_sizes=dict(shapes_lib.SPLIT_SIZES),
        caption_vocabulary=shapes_lib.caption_vocabulary,
        caption_len=8 + 2,  # "a large red circle at the top left"
        caption_char_len=48),  # "a large magenta triangle at the bottom right": 44 bytes
    "signals": _Embedded(
        builder_cls=signals_lib.Signals, image_shape=(signals_lib.LENGTH, 1, 1), num_levels=256,
        num_classes=len(signals_lib.TIMBRES), split_sizes=dict(signals_lib.SPLIT_SIZES),
        caption_vocabulary=signals_lib.caption_vocabulary,
        caption_len=4 + 2,  # "a wandering sawtooth melody"
        caption_char_len=32,  # "a wandering sawtooth melody": 27 bytes
        local_cond_shape=(signals_lib.FRAMES,), local_cond_levels=signals_lib.NUM_PITCH_IDS),
    # "a point near the mode at 315 degrees" (36 bytes); "a point near the mode at x -4 y -2" (34)
    "ring2d": _points("ring2d", points_lib.Ring2d, caption_len=8 + 2),
    "grid2d": _points("grid2d", points_lib.Grid2d, caption_len=10 + 2),
}


def default_data_dir() -> str:
    """``$GEN_JAX_DATA_DIR`` if set, else ``~/.cache/gen_jax/tfds``."""
    return os.environ.get("GEN_JAX_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gen_jax", "tfds")


def get_tokenizer(name: str) -> WordTokenizer:
    """The caption tokenizer of embedded dataset ``name`` (vocabulary fixed by its generator)."""
    if name not in EMBEDDED:
        raise DatasetError(f"dataset {name!r} has no caption tokenizer; captioned datasets: "
                           f"{sorted(EMBEDDED)}")
    return WordTokenizer(EMBEDDED[name].caption_vocabulary())


@contextlib.contextmanager
def _file_lock(path: str):
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def prepare(name: str, data_dir: Optional[str] = None):
    """Prepares embedded dataset ``name`` into ``data_dir`` if needed; returns its builder."""
    spec = _embedded(name)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    builder = spec.builder_cls(data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    os.makedirs(data_dir, exist_ok=True)
    with _file_lock(os.path.join(data_dir, f".{name}.lock")):
        builder = spec.builder_cls(data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():  # another process may have finished while we waited
            _build(builder, name, data_dir)
            builder = spec.builder_cls(data_dir=data_dir, file_format="array_record")
    return builder


def _build(builder, name: str, data_dir: str) -> None:
    """Generates embedded dataset ``name`` locally, saying so. TFDS prints "Downloading and
    preparing ..." and "... downloaded and prepared" to stdout (``termcolor.cprint``, no
    switch): nothing is downloaded here, so its stdout is replaced by our two lines (its
    progress bars, on stderr, stay)."""
    print(f"gen_jax: building the embedded {name} dataset in {data_dir} (once; generated locally, "
          f"nothing is downloaded; a few seconds) ...", flush=True)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(file_format="array_record",
                                     download_dir=os.path.join(data_dir, "downloads"))
    print(f"gen_jax: {name} ready in {time.perf_counter() - start:.1f} s; later runs reuse "
          f"{os.path.join(data_dir, name)}", flush=True)


def _embedded(name: str) -> _Embedded:
    if name not in EMBEDDED:
        raise DatasetError(f"{name!r} is not an embedded dataset (embedded: {sorted(EMBEDDED)})")
    return EMBEDDED[name]


def _standard_builder(name: str, data_dir: Optional[str]):
    try:
        tfds.builder_cls(name.split(":")[0].split("/")[0])
    except tfds.core.registered.DatasetNotFoundError:
        raise DatasetError(
            f"unknown dataset {name!r}: neither embedded ({', '.join(sorted(EMBEDDED))}) nor a "
            f"registered TFDS dataset") from None
    return tfds.builder(name, data_dir=data_dir)


def _image_feature(builder, name: str):
    features = builder.info.features
    if "image" not in features:
        raise DatasetError(f"dataset {name!r} has no 'image' feature (features: {list(features)})")
    feat = features["image"]
    shape = tuple(feat.shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise DatasetError(f"dataset {name!r}: image shape {shape} is not a fixed (H, W, C)")
    if np.dtype(feat.np_dtype) != np.uint8:
        raise DatasetError(f"dataset {name!r}: image dtype {feat.np_dtype} is not uint8")
    return shape


def _label_classes(builder) -> int:
    features = builder.info.features
    if "label" in features and isinstance(features["label"], tfds.features.ClassLabel):
        return int(features["label"].num_classes)
    return 0


def _standard_source(name: str, split: str, data_dir: Optional[str], builder):
    known = list(builder.info.splits.keys())
    if known and split not in known:
        raise DatasetError(f"dataset {name!r} has no split {split!r} (splits: {sorted(known)})")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except DatasetError:
        raise
    except Exception as e:  # not prepared, or prepared as tfrecord
        where = data_dir or "the TFDS default data_dir"
        raise DatasetError(
            f"dataset {name!r} split {split!r} is not prepared as array_record in {where} "
            f"(gen_jax never downloads). Prepare it on a networked machine: "
            f"tfds.builder({name!r}, data_dir=..., file_format='array_record')"
            f".download_and_prepare(). Cause: {type(e).__name__}: {str(e)[:300]}") from e


def get_info(name: str, data_dir: Optional[str] = None) -> DatasetInfo:
    """Metadata of dataset ``name`` (see :class:`DatasetInfo`); raises :class:`DatasetError`."""
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        tok = get_tokenizer(name)
        return DatasetInfo(
            name=name, image_shape=spec.image_shape, num_levels=spec.num_levels,
            num_classes=spec.num_classes, num_train=spec.split_sizes.get("train", 0),
            num_test=spec.split_sizes.get("test", 0), has_captions=True,
            caption_len=spec.caption_len, vocab_size=tok.vocab_size,
            has_labels=True, splits=tuple(spec.split_sizes), caption_char_len=spec.caption_char_len,
            local_cond_shape=tuple(spec.local_cond_shape), local_cond_levels=spec.local_cond_levels,
            value_range=spec.value_range)
    builder = _standard_builder(name, data_dir)
    shape = _image_feature(builder, name)
    known = dict(builder.info.splits.items()) if builder.info.splits else {}
    nums = {}
    for split in ("train", "test"):
        if known:
            nums[split] = known[split].num_examples if split in known else 0
        else:  # metadata unavailable (e.g. under tfds.testing.mock_data): count records
            nums[split] = len(_standard_source(name, split, data_dir, builder))
    num_classes = _label_classes(builder)
    return DatasetInfo(
        name=name, image_shape=shape, num_levels=256, num_classes=num_classes,
        num_train=nums["train"], num_test=nums["test"], has_captions=False, caption_len=0,
        vocab_size=0, has_labels=num_classes > 0,
        splits=tuple(sorted(known)) if known else ("train", "test"))


def _read_all(source) -> list:
    n = len(source)
    try:
        return list(source.__getitems__(list(range(n))))
    except Exception:  # the mock data source's __getitems__ is broken; plain indexing works
        return [source[i] for i in range(n)]


def load_split(name: str, split: str, data_dir: Optional[str] = None) -> dict[str, np.ndarray]:
    """Loads a whole split into memory, in a deterministic order.

    Returns a dict with ``image`` uint8 ``[N, H, W, C]`` (levels ``0..K-1``; uint16 for
    ``K > 256``, the points of ``ring2d`` / ``grid2d``), ``label``
    int32 ``[N]``; for captioned datasets ``caption`` (``[N]`` str) and ``caption_tokens``
    int32 ``[N, L]`` and ``caption_chars`` int32 ``[N, info.caption_char_len]`` (UTF-8 bytes
    + 1, 0-padded); for embedded datasets also ``index`` int32 ``[N]`` (the order key) and
    any integer factor features (``shape``, ``colour``, ``size``, ``x``, ``y`` for shapes;
    ``local_cond`` int32 ``[N, *info.local_cond_shape]`` for signals).
    """
    source = open_source(name, split, data_dir)
    records = _read_all(source)
    if not records:
        raise DatasetError(f"dataset {name!r} split {split!r} is empty")
    if name in EMBEDDED:
        records.sort(key=lambda r: int(r["index"]))
    return record_decoder(name, data_dir)(records)


def open_source(name: str, split: str, data_dir: Optional[str] = None):
    """The random-access record source of ``split``, nothing read yet: a TFDS ``array_record``
    data source (``len(src)``, ``src[key]``, ``src.__getitems__(keys)``; records are dicts of
    features). Embedded datasets are prepared first. Raises :class:`DatasetError` for an
    unknown dataset or split, or a standard dataset not prepared as ``array_record``."""
    if name in EMBEDDED:
        spec = EMBEDDED[name]
        if split not in spec.split_sizes:
            raise DatasetError(f"dataset {name!r} has no split {split!r} "
                               f"(splits: {sorted(spec.split_sizes)})")
        return prepare(name, data_dir).as_data_source(split)
    builder = _standard_builder(name, data_dir)
    _image_feature(builder, name)
    return _standard_source(name, split, data_dir, builder)


def _require_features(record, keys: tuple, name: str) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DatasetError(f"dataset {name!r}: records lack the feature(s) {missing} "
                           f"(features: {sorted(record)})")


def record_decoder(name: str, data_dir: Optional[str] = None) -> Callable[[list], dict]:
    """``decode(records) -> arrays``: source records (dicts of features, e.g. from
    :func:`open_source`) to the arrays of :func:`load_split` (same keys and dtypes), in the
    given order. Used by :func:`load_split` for a whole split and by
    :mod:`gen_jax.data.records` for one batch at a time."""
    if name in EMBEDDED:
        return _embedded_decoder(name)
    builder = _standard_builder(name, data_dir)
    _image_feature(builder, name)
    labelled = bool(_label_classes(builder))

    def decode(records: list) -> dict:
        _require_features(records[0], ("image", "label") if labelled else ("image",), name)
        out = {"image": np.stack([np.asarray(r["image"]) for r in records]).astype(np.uint8)}
        out["label"] = (np.array([r["label"] for r in records], np.int32) if labelled
                        else np.zeros(len(records), np.int32))
        return out

    return decode


def _embedded_decoder(name: str) -> Callable[[list], dict]:
    spec = EMBEDDED[name]
    words, chars = get_tokenizer(name), ByteTokenizer()
    dtype = np.uint8 if spec.num_levels <= 256 else np.uint16

    def decode(records: list) -> dict:
        _require_features(records[0], ("image", "label", "caption"), name)
        out = {"image": np.stack([r["image"] for r in records]).astype(dtype),
               "label": np.array([r["label"] for r in records], np.int32)}
        for key in records[0]:
            if key not in ("image", "label", "caption"):
                out[key] = np.array([r[key] for r in records], np.int32)
        captions = [r["caption"] for r in records]
        out["caption"] = np.array([c.decode("utf-8") if isinstance(c, bytes) else str(c)
                                   for c in captions])
        out["caption_tokens"] = words.encode(list(out["caption"]), spec.caption_len)
        out["caption_chars"] = chars.encode(list(out["caption"]), spec.caption_char_len)
        return out

    return decode
