"""The input pipeline: deterministic (seed, step) -> batch streams, batch checks, dequantization.

Dequantization and level conversion live in :mod:`gen_jax.distributions` (``dequantize``,
``to_levels``); this module adds the ``[0, 1] <-> [-1, 1]`` scalings.

A :class:`BatchStream` is a pure function of ``(seed, step)``: the sample stream is the
concatenation of per-epoch permutations (epoch ``e`` permuted by
``numpy.random.default_rng([seed, e])``), and batch ``step`` is the global positions
``[step * B, (step + 1) * B)`` of that stream. Restarting from a checkpoint at step ``s``
therefore reproduces the batches exactly, on any number of devices or processes: with a
``NamedSharding`` each process materializes only the rows of the global batch its devices
hold, and :func:`jax.make_array_from_process_local_data` assembles the global array.

Batch convention: ``image`` float32 ``[B, H, W, C]`` = ``level / (K - 1)`` in ``[0, 1]``,
``label`` int32 ``[B]``, ``caption_tokens`` int32 ``[B, L]`` (0 = pad); 1-D signal datasets
add ``local_cond`` int32 ``[B, *info.local_cond_shape]`` (a low-rate conditioning sequence).
"""
from __future__ import annotations

import itertools
from typing import Iterator, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.data.datasets import DatasetInfo

BATCH_KEYS = ("image", "label", "caption_tokens", "caption_chars", "local_cond", "factors")
# Datasets with known factors (shapes) also batch them as ``factors`` int32 [B, 5] in this order.
FACTOR_KEYS = ("shape", "colour", "size", "x", "y")


class BatchError(ValueError):
    """A malformed batch or batch configuration; the message names the key or field."""


# ----------------------------------------------------------------------------- checks


def validate_batch(batch: Mapping, info: DatasetInfo) -> None:
    """Host-side checks of a batch against ``info``; raises :class:`BatchError`.

    Checks: ``image`` present, shape ``[B, *info.image_shape]``, floating dtype, finite,
    values in ``[0, 1]``; ``label`` (if present) integer ``[B]`` in ``[0, num_classes)``;
    ``caption_tokens`` (if present) integer ``[B, L]`` in ``[0, vocab_size)``; ``caption_chars``
    (if present) integer ``[B, L]`` in ``[0, 257)``; ``local_cond`` (if present) integer
    ``[B, *info.local_cond_shape]`` in ``[0, info.local_cond_levels)``.
    """
    if not isinstance(batch, Mapping):
        raise BatchError(f"batch must be a dict of arrays, got {type(batch).__name__}")
    if "image" not in batch:
        raise BatchError(f"batch['image'] is missing (keys: {sorted(batch)})")
    image = np.asarray(batch["image"])
    want = tuple(info.image_shape)
    if image.ndim != 4 or image.shape[1:] != want:
        raise BatchError(f"batch['image'] has shape {image.shape}; expected [B, H, W, C] = "
                         f"[B, {', '.join(map(str, want))}] for dataset {info.name!r}")
    if not np.issubdtype(image.dtype, np.floating):
        raise BatchError(f"batch['image'] has dtype {image.dtype}; expected floating values "
                         f"level / (K - 1) in [0, 1] (K = {info.num_levels})")
    if not np.all(np.isfinite(image)):
        raise BatchError(f"batch['image'] contains {int(np.sum(~np.isfinite(image)))} NaN/inf values")
    if image.size and (image.min() < 0.0 or image.max() > 1.0):
        raise BatchError(f"batch['image'] values lie in [{float(image.min()):.4g}, "
                         f"{float(image.max()):.4g}]; expected [0, 1]")
    b = image.shape[0]
    if "label" in batch and batch["label"] is not None:
        label = np.asarray(batch["label"])
        if not np.issubdtype(label.dtype, np.integer):
            raise BatchError(f"batch['label'] has dtype {label.dtype}; expected integer (int32)")
        if label.shape != (b,):
            raise BatchError(f"batch['label'] has shape {label.shape}; expected [B] = ({b},)")
        if info.num_classes > 0 and label.size and (label.min() < 0 or label.max() >= info.num_classes):
            raise BatchError(f"batch['label'] values lie in [{label.min()}, {label.max()}]; "
                             f"expected [0, {info.num_classes})")
    for key, vocab in (("caption_tokens", info.vocab_size), ("caption_chars", 257)):
        if key not in batch or batch[key] is None:
            continue
        tok = np.asarray(batch[key])
        if not np.issubdtype(tok.dtype, np.integer):
            raise BatchError(f"batch[{key!r}] has dtype {tok.dtype}; expected integer")
        if tok.ndim != 2 or tok.shape[0] != b:
            raise BatchError(f"batch[{key!r}] has shape {tok.shape}; expected [B, L] with B = {b}")
        if vocab > 0 and tok.size and (tok.min() < 0 or tok.max() >= vocab):
            raise BatchError(f"batch[{key!r}] values lie in [{tok.min()}, {tok.max()}]; "
                             f"expected [0, {vocab})")
    if "local_cond" in batch and batch["local_cond"] is not None:
        lc = np.asarray(batch["local_cond"])
        want_lc = (b,) + tuple(info.local_cond_shape)
        if not info.local_cond_shape:
            raise BatchError(f"batch['local_cond'] given, but dataset {info.name!r} has no local "
                             f"conditioning (DatasetInfo.local_cond_shape is ())")
        if not np.issubdtype(lc.dtype, np.integer):
            raise BatchError(f"batch['local_cond'] has dtype {lc.dtype}; expected integer ids")
        if lc.shape != want_lc:
            raise BatchError(f"batch['local_cond'] has shape {lc.shape}; expected {want_lc}")
        if info.local_cond_levels > 0 and lc.size and (lc.min() < 0 or lc.max() >= info.local_cond_levels):
            raise BatchError(f"batch['local_cond'] values lie in [{lc.min()}, {lc.max()}]; "
                             f"expected [0, {info.local_cond_levels})")


# ----------------------------------------------------------------------------- stream


def _leading_axis_shards(sharding: jax.sharding.NamedSharding) -> int:
    spec = sharding.spec
    first = spec[0] if len(spec) else None
    if first is None:
        return 1
    names = first if isinstance(first, tuple) else (first,)
    return int(np.prod([sharding.mesh.shape[n] for n in names]))


def batch_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The batched keys (:data:`BATCH_KEYS`) of ``load_split``-style arrays, with the factor
    features (:data:`FACTOR_KEYS`) stacked into ``factors`` ``[N, 5]`` where all are present."""
    out = {k: np.asarray(arrays[k]) for k in BATCH_KEYS if k in arrays}
    if "factors" not in arrays and all(k in arrays for k in FACTOR_KEYS):
        out["factors"] = np.stack([np.asarray(arrays[k]) for k in FACTOR_KEYS], axis=1)
    return out


def to_batch(rows: Mapping[str, np.ndarray], num_levels: int) -> dict[str, np.ndarray]:
    """A host batch from the rows of :func:`batch_arrays`: ``image`` float32
    ``level / (K - 1)``, ``label`` and the token/id keys int32."""
    batch = {"image": rows["image"].astype(np.float32) / np.float32(num_levels - 1)}
    if "label" in rows:
        batch["label"] = rows["label"].astype(np.int32)
    for key in ("caption_tokens", "caption_chars", "local_cond", "factors"):
        if key in rows:
            batch[key] = rows[key].astype(np.int32)
    return batch


def local_rows(sharding: jax.sharding.NamedSharding, global_batch_size: int,
               item_shape: tuple) -> tuple[int, int]:
    """``(lo, hi)``: the rows of the global batch (``[B, *item_shape]``) that this process's
    devices hold under ``sharding`` (one contiguous block); raises :class:`BatchError` when
    ``B`` does not divide over the batch-axis shards or the processes."""
    b = global_batch_size
    n_dev = sharding.mesh.devices.size
    shards = _leading_axis_shards(sharding)
    if b % shards:
        raise BatchError(f"train.batch_size={b} is not divisible by the {shards} shards of the "
                         f"batch axis ({n_dev} devices in the mesh {dict(sharding.mesh.shape)})")
    n_proc = jax.process_count()
    if b % n_proc:
        raise BatchError(f"train.batch_size={b} is not divisible by the process count {n_proc} "
                         f"({n_dev} devices in the mesh)")
    index_map = sharding.addressable_devices_indices_map((b,) + tuple(item_shape))
    starts, stops = [], []
    for idx in index_map.values():
        sl = idx[0]
        starts.append(0 if sl.start is None else sl.start)
        stops.append(b if sl.stop is None else sl.stop)
    lo, hi = min(starts), max(stops)
    covered = np.zeros(b, bool)
    for s, e in zip(starts, stops):
        covered[s:e] = True
    if not covered[lo:hi].all():
        raise BatchError("this process's devices hold a non-contiguous part of the batch axis; "
                         "order the mesh devices so each process owns one block")
    return lo, hi


def to_global(local: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding,
              global_batch_size: int) -> dict:
    """Global ``jax.Array``s of batch ``global_batch_size`` from this process's rows ``local``
    (every key sharded on its leading axis like ``sharding``'s first dimension)."""
    spec = jax.sharding.PartitionSpec(sharding.spec[0] if len(sharding.spec) else None)
    sh = jax.sharding.NamedSharding(sharding.mesh, spec)
    return {k: jax.make_array_from_process_local_data(sh, v, (global_batch_size,) + v.shape[1:])
            for k, v in local.items()}


class BatchStream:
    """Deterministic batches ``batch_at(step)`` over in-memory arrays.

    Args:
      arrays: ``load_split`` output: ``image`` uint8 levels ``[N, H, W, C]``, ``label``
        ``[N]``, optional ``caption_tokens`` ``[N, L]``, ``caption_chars`` ``[N, L']``,
        ``local_cond`` ``[N, ...]``.
      info: the dataset's :class:`DatasetInfo` (for ``num_levels`` and checks).
      global_batch_size: ``B`` (the ``train.batch_size`` config field), summed over all
        devices and processes. May exceed ``N`` (epochs wrap).
      seed: data-order seed.
      sharding: optional ``NamedSharding`` sharding the leading (batch) axis; batches are then
        global ``jax.Array``s (labels/tokens use the same sharding's leading-axis spec).
      validate: run :func:`validate_batch` on every produced (host-local) batch.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], info: DatasetInfo,
                 global_batch_size: int, seed: int,
                 sharding: Optional[jax.sharding.NamedSharding] = None, validate: bool = False):
        if "image" not in arrays:
            raise BatchError(f"arrays['image'] is missing (keys: {sorted(arrays)})")
        self.info = info
        self.seed = int(seed)
        self.sharding = sharding
        self.validate = validate
        self._arrays = batch_arrays(arrays)
        self.num_examples = int(self._arrays["image"].shape[0])
        if self.num_examples == 0:
            raise BatchError("arrays['image'] is empty: nothing to batch")
        for k, v in self._arrays.items():
            if v.shape[0] != self.num_examples:
                raise BatchError(f"arrays[{k!r}] has {v.shape[0]} rows, arrays['image'] has "
                                 f"{self.num_examples}")
        if tuple(self._arrays["image"].shape[1:]) != tuple(info.image_shape):
            raise BatchError(f"arrays['image'] has shape {self._arrays['image'].shape}; expected "
                             f"[N, {', '.join(map(str, info.image_shape))}]")
        img = self._arrays["image"]
        if not np.issubdtype(img.dtype, np.integer):
            raise BatchError(f"arrays['image'] has dtype {img.dtype}; the stream takes integer levels "
                             f"0..{info.num_levels - 1} (as load_split returns) and scales them itself")
        if img.min() < 0 or img.max() > info.num_levels - 1:
            raise BatchError(f"arrays['image'] levels lie in [{img.min()}, {img.max()}]; expected "
                             f"[0, {info.num_levels - 1}] for {info.num_levels} levels")
        if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, (int, np.integer)) \
                or global_batch_size <= 0:
            raise BatchError(f"train.batch_size must be a positive integer, got {global_batch_size!r}")
        self.global_batch_size = int(global_batch_size)
        self._perm_cache: dict[int, np.ndarray] = {}
        self._local = (0, self.global_batch_size)
        if sharding is not None:
            self._local = self._check_sharding(sharding)

    def _check_sharding(self, sharding) -> tuple[int, int]:
        return local_rows(sharding, self.global_batch_size, self.info.image_shape)

    # -- order

    def _perm(self, epoch: int) -> np.ndarray:
        p = self._perm_cache.get(epoch)
        if p is None:
            p = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            if len(self._perm_cache) >= 4:
                self._perm_cache.pop(next(iter(self._perm_cache)))
            self._perm_cache[epoch] = p
        return p

    def indices_at(self, step: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Example indices of rows ``[start, stop)`` of global batch ``step``."""
        if step < 0:
            raise BatchError(f"step must be >= 0, got {step}")
        stop = self.global_batch_size if stop is None else stop
        pos = step * self.global_batch_size + np.arange(start, stop, dtype=np.int64)
        epoch, offset = np.divmod(pos, self.num_examples)
        out = np.empty(pos.shape, np.int64)
        for e in np.unique(epoch):
            m = epoch == e
            out[m] = self._perm(int(e))[offset[m]]
        return out

    # -- batches

    def _host_batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return to_batch({k: v[idx] for k, v in self._arrays.items()}, self.info.num_levels)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The (host-local, full) arrays this stream batches from; do not modify."""
        return self._arrays

    def batch_at(self, step: int) -> dict:
        """Batch number ``step``: numpy arrays, or global ``jax.Array``s with ``sharding``."""
        lo, hi = self._local
        local = self._host_batch(self.indices_at(step, lo, hi))
        if self.validate:
            validate_batch(local, self.info)
        if self.sharding is None:
            return local
        return to_global(local, self.sharding, self.global_batch_size)

    def iterate(self, start_step: int = 0) -> Iterator[dict]:
        """Yields ``batch_at(start_step)``, ``batch_at(start_step + 1)``, ... forever."""
        for step in itertools.count(start_step):
            yield self.batch_at(step)

    def __iter__(self) -> Iterator[dict]:
        return self.iterate(0)

    @property
    def steps_per_epoch(self) -> float:
        return self.num_examples / self.global_batch_size


# ----------------------------------------------------------------------------- transforms


def scale_to_symmetric(x: jax.Array) -> jax.Array:
    """``[0, 1]`` -> ``[-1, 1]``: ``2 x - 1``."""
    return 2.0 * x - 1.0


def scale_from_symmetric(x: jax.Array) -> jax.Array:
    """``[-1, 1]`` -> ``[0, 1]``: ``(x + 1) / 2`` (inverse of :func:`scale_to_symmetric`)."""
    return (x + 1.0) / 2.0
