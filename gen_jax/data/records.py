"""Sharded, streaming batches from TFDS ``array_record`` data: no split is held in memory.

Usage (one process, or each process of a multi-host run with the same arguments)::

    from gen_jax.data import records
    stream = records.open_records("digits", "train", data_dir, info, global_batch_size=64,
                                  seed=0, sharding=batch_sharding)   # or sharding=None
    batch = stream.batch_at(step)          # global jax.Arrays (numpy rows without sharding)
    for batch in stream.iterate(start):    # == batch_at(start), batch_at(start + 1), ...
        ...
    stream.close()                         # stops the prefetch thread (also a context manager)

Without ``sharding``, ``batch_at`` returns this process's rows of the global batch as numpy
arrays; ``process_index`` / ``process_count`` (default ``jax.process_index()`` /
``jax.process_count()``) pick which rows, so tests can simulate several processes in one.
With ``sharding`` (``gen_jax.train.sharding.batch_sharding(mesh)``), the rows are those the
process's devices hold and the batch is assembled with
:func:`jax.make_array_from_process_local_data`, exactly like
:class:`gen_jax.data.pipeline.BatchStream` (the train loop takes either). Experiments pick this
reader with ``config.dataset.reader = 'records'`` (default ``'memory'``).

The order (a pure function of ``(seed, step)``, nothing replayed): the record stream is the
concatenation of per-epoch permutations of the ``N`` records, epoch ``e`` permuted by grain's
O(1)-memory bijective index shuffle (``grain.experimental.index_shuffle``, 4 rounds) under the
32-bit seed ``SeedSequence([seed, e])`` (distinct seeds give unrelated orders in every epoch);
global batch ``s`` is positions ``[s B, (s + 1) B)`` of that stream, and process ``p`` of
``P`` reads only rows ``[p B / P, (p + 1) B / P)`` of it. Each epoch visits every record once.
Only the records of the requested rows are read (``source.__getitems__``), decoded by
:func:`gen_jax.data.datasets.record_decoder` (the arrays of ``load_split``) and batched by
:func:`gen_jax.data.pipeline.to_batch` (the dtypes and ``level / (K - 1)`` scaling of
``BatchStream``).

The order differs from the memory reader's (``numpy`` permutations of the index-sorted split):
switching readers changes the data order, not the data.

Prefetch: with ``prefetch = k > 0`` one background thread computes the host rows of the next
``k`` steps after each request; since a batch is a pure function of its step, prefetched and
direct batches are identical.
"""
from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Callable, Iterator, Mapping, Optional, Sequence

import jax
import numpy as np
from grain.experimental import index_shuffle

from gen_jax.data import datasets
from gen_jax.data.datasets import DatasetError, DatasetInfo
from gen_jax.data.pipeline import BatchError, batch_arrays, local_rows, to_batch, to_global, validate_batch

SHUFFLE_ROUNDS = 4
HEAD_SIZE = 256  # records of ``RecordStream.arrays`` (conditions for sample grids)


def epoch_seed(seed: int, epoch: int) -> int:
    """The 32-bit index-shuffle seed of ``epoch`` under data seed ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])


def record_keys(positions: np.ndarray, num_records: int, seed: int, shuffle: bool = True) -> np.ndarray:
    """Record keys of global stream ``positions`` (int ``[n]``): position ``e N + i`` is the
    ``i``-th record of epoch ``e``'s permutation (the identity with ``shuffle=False``)."""
    positions = np.asarray(positions, np.int64)
    epoch, offset = np.divmod(positions, num_records)
    if not shuffle:
        return offset
    seeds = {e: epoch_seed(seed, e) for e in np.unique(epoch).tolist()}
    last = num_records - 1
    return np.array([index_shuffle(i, max_index=last, seed=seeds[e], rounds=SHUFFLE_ROUNDS)
                     for e, i in zip(epoch.tolist(), offset.tolist())], np.int64)


def read_records(source, keys: Sequence[int]) -> list:
    """The records ``keys`` of a random-access ``source`` (one ``__getitems__`` read, or
    per-key reads for sources without a working one, e.g. TFDS's mock data)."""
    keys = [int(k) for k in keys]
    getitems = getattr(source, "__getitems__", None)
    if getitems is not None:
        try:
            return list(getitems(keys))
        except (TypeError, NotImplementedError, AttributeError):
            pass
    return [source[k] for k in keys]


class _Prefetcher:
    """Computes ``fn(step)`` for the ``depth`` steps after each request on one thread."""

    def __init__(self, fn: Callable[[int], dict], depth: int):
        self._fn, self._depth = fn, depth
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="records")
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()

    def get(self, step: int) -> dict:
        with self._lock:
            fut = self._futures.pop(step, None)
            for s in [s for s in self._futures if not step < s <= step + self._depth]:
                self._futures.pop(s).cancel()
            for s in range(step + 1, step + 1 + self._depth):
                if s not in self._futures:
                    self._futures[s] = self._pool.submit(self._fn, s)
        return fut.result() if fut is not None else self._fn(step)

    def close(self) -> None:
        with self._lock:
            for f in self._futures.values():
                f.cancel()
            self._futures.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _positive_int(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise BatchError(f"{field} must be a positive integer, got {value!r}")
    return int(value)


class RecordStream:
    """Deterministic batches ``batch_at(step)`` read from a random-access record source.

    Args:
      source: ``len(source)`` records, ``source[key]`` / ``source.__getitems__(keys)`` -> dicts
        of features (e.g. :func:`gen_jax.data.datasets.open_source`).
      decode: ``records -> arrays`` in ``load_split``'s format
        (:func:`gen_jax.data.datasets.record_decoder`).
      info: the dataset's :class:`DatasetInfo`.
      global_batch_size: ``B`` (``train.batch_size``) over all devices and processes.
      seed: data-order seed.
      sharding: optional ``NamedSharding`` of the batch axis (``batch_at`` then returns global
        ``jax.Array``s and this process reads the rows its devices hold).
      process_index, process_count: without ``sharding``, which rows this process reads
        (default from jax); for simulating several processes in one.
      shuffle: ``False`` reads the records in source order (e.g. for evaluation).
      prefetch: steps computed ahead by a background thread (0 = none).
      validate: run :func:`gen_jax.data.pipeline.validate_batch` on every host batch.
      head_size: records of :attr:`arrays`.
    """

    def __init__(self, source, decode: Callable[[list], dict], info: DatasetInfo, global_batch_size: int,
                 seed: int, *, sharding: Optional[jax.sharding.NamedSharding] = None,
                 process_index: Optional[int] = None, process_count: Optional[int] = None,
                 shuffle: bool = True, prefetch: int = 0, validate: bool = False, head_size: int = HEAD_SIZE):
        self.source, self.decode, self.info = source, decode, info
        self.seed, self.shuffle, self.validate = int(seed), bool(shuffle), validate
        self.sharding = sharding
        self.num_examples = len(source)
        if self.num_examples == 0:
            raise BatchError(f"dataset {info.name!r}: the record source is empty: nothing to batch")
        self.global_batch_size = _positive_int(global_batch_size, "train.batch_size")
        self._head_size = head_size
        self._head: Optional[dict] = None
        self._local = self._rows(sharding, process_index, process_count)
        if isinstance(prefetch, bool) or not isinstance(prefetch, (int, np.integer)) or prefetch < 0:
            raise BatchError(f"config.dataset.prefetch must be an integer >= 0, got {prefetch!r}")
        self._prefetcher = _Prefetcher(self._host_rows, int(prefetch)) if prefetch else None

    def _rows(self, sharding, process_index, process_count) -> tuple[int, int]:
        b = self.global_batch_size
        if sharding is not None:
            if process_index is not None or process_count is not None:
                raise BatchError("process_index / process_count override the process only without a "
                                 "sharding (with one, the rows are those this process's devices hold)")
            return local_rows(sharding, b, self.info.image_shape)
        count = jax.process_count() if process_count is None else _positive_int(process_count, "process_count")
        index = jax.process_index() if process_index is None else int(process_index)
        if not 0 <= index < count:
            raise BatchError(f"process_index={index} is not in [0, process_count={count})")
        if b % count:
            raise BatchError(f"train.batch_size={b} is not divisible by the process count {count}")
        per = b // count
        return index * per, (index + 1) * per

    @property
    def local_rows(self) -> tuple[int, int]:
        """``(lo, hi)``: the rows of every global batch this process reads."""
        return self._local

    # -- order

    def indices_at(self, step: int, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Record keys of rows ``[start, stop)`` of global batch ``step`` (int64)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise BatchError(f"step must be an integer >= 0, got {step!r}")
        stop = self.global_batch_size if stop is None else stop
        pos = int(step) * self.global_batch_size + np.arange(start, stop, dtype=np.int64)
        return record_keys(pos, self.num_examples, self.seed, self.shuffle)

    # -- batches

    def _read(self, keys: np.ndarray) -> dict:
        """``load_split``-style arrays of records ``keys`` (in that order)."""
        return self.decode(read_records(self.source, keys))

    def _host_rows(self, step: int) -> dict:
        lo, hi = self._local
        arrays = batch_arrays(self._read(self.indices_at(step, lo, hi)))
        image = arrays["image"]
        if not np.issubdtype(image.dtype, np.integer):
            raise BatchError(f"dataset {self.info.name!r}: records hold image dtype {image.dtype}; "
                             f"expected integer levels 0..{self.info.num_levels - 1}")
        batch = to_batch(arrays, self.info.num_levels)
        if self.validate:
            validate_batch(batch, self.info)
        return batch

    def batch_at(self, step: int) -> dict:
        """Batch number ``step``: this process's numpy rows, or global ``jax.Array``s with
        ``sharding``. Reads ``hi - lo`` records (:attr:`local_rows`)."""
        local = self._prefetcher.get(step) if self._prefetcher is not None else self._host_rows(step)
        if self.sharding is None:
            return local
        return to_global(local, self.sharding, self.global_batch_size)

    def iterate(self, start_step: int = 0) -> Iterator[dict]:
        """Yields ``batch_at(start_step)``, ``batch_at(start_step + 1)``, ... forever."""
        step = start_step
        while True:
            yield self.batch_at(step)
            step += 1

    def __iter__(self) -> Iterator[dict]:
        return self.iterate(0)

    @property
    def steps_per_epoch(self) -> float:
        return self.num_examples / self.global_batch_size

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The first ``head_size`` records in source order as ``batch_arrays`` (read once, on
        first use): what the train loop draws sample-grid conditions from (``BatchStream.arrays``
        is the whole split)."""
        if self._head is None:
            n = min(self._head_size, self.num_examples)
            self._head = batch_arrays(self._read(np.arange(n)))
        return self._head

    def close(self) -> None:
        """Stops the prefetch thread (batches can still be computed directly afterwards)."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_records(name: str, split: str, data_dir: Optional[str], info: DatasetInfo, global_batch_size: int,
                 seed: int, **kwargs) -> RecordStream:
    """A :class:`RecordStream` over split ``split`` of dataset ``name`` (embedded: prepared
    into ``data_dir`` first; standard TFDS: already prepared there as ``array_record``).
    ``kwargs``: :class:`RecordStream`'s keyword arguments. Raises :class:`DatasetError` for a
    missing ``data_dir``, an unknown dataset or split, or an unprepared dataset."""
    if name not in datasets.EMBEDDED and data_dir and not os.path.isdir(os.path.expanduser(data_dir)):
        raise DatasetError(f"config.dataset.data_dir: {data_dir!r} does not exist (dataset {name!r} "
                           f"must be prepared there as array_record)")
    source = datasets.open_source(name, split, data_dir)
    return RecordStream(source, datasets.record_decoder(name, data_dir), info, global_batch_size, seed,
                        **kwargs)

