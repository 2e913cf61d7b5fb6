"""Tests for gen_jax.data.records: streamed, per-process batches of array_record datasets.

A tiny TFDS dataset (``tiny_records``: 37 train records whose image encodes the record id)
is prepared locally as array_record; the embedded digits are compared with the memory reader
(:class:`gen_jax.data.pipeline.BatchStream` over ``load_split``). Nothing is downloaded.
"""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gen_jax.config import ConfigError
from gen_jax.data import datasets, records
from gen_jax.data.datasets import DatasetError
from gen_jax.data.pipeline import BatchError, BatchStream, validate_batch
from tests.local_processes import free_port, run_workers

N_TRAIN, N_TEST = 37, 11


class TinyRecords(tfds.core.GeneratorBasedBuilder):
    """Record ``i``: a 4x4x1 uint8 image whose pixel (0, 0) is ``i`` (the rest ``3 i % 256``),
    label ``i % 5``."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=5)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(N_TRAIN), "test": self._generate_examples(N_TEST)}

    def _generate_examples(self, n):
        for i in range(n):
            image = np.full((4, 4, 1), (3 * i) % 256, np.uint8)
            image[0, 0, 0] = i
            yield i, {"image": image, "label": i % 5}


class CountingSource:
    """A record source that counts the records read through it."""

    def __init__(self, source):
        self.source, self.reads = source, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        self.reads += 1
        return self.source[key]

    def __getitems__(self, keys):
        self.reads += len(keys)
        return self.source.__getitems__(keys)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tiny_tfds"))
    TinyRecords(data_dir=d, file_format="array_record").download_and_prepare(file_format="array_record")
    return d


@pytest.fixture(scope="module")
def tiny_info(tiny_dir):
    return datasets.get_info("tiny_records", tiny_dir)


def _tiny(tiny_dir, tiny_info, batch_size=8, seed=0, **kw):
    return records.open_records("tiny_records", "train", tiny_dir, tiny_info, batch_size, seed, **kw)


def _ids(batch) -> np.ndarray:
    """Record ids of a tiny_records batch (pixel (0, 0) is the id; images scale by 1/255)."""
    return np.rint(np.asarray(batch["image"])[:, 0, 0, 0] * 255).astype(int)


def test_tiny_dataset_reads_records_with_their_labels(tiny_dir, tiny_info):
    assert tiny_info.num_train == N_TRAIN and tiny_info.num_classes == 5
    b = _tiny(tiny_dir, tiny_info, validate=True).batch_at(0)
    np.testing.assert_array_equal(b["label"], _ids(b) % 5)
    assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32


def test_deterministic_in_seed_and_step(tiny_dir, tiny_info):
    a, b = _tiny(tiny_dir, tiny_info), _tiny(tiny_dir, tiny_info)
    late = b.batch_at(40)  # computed first, on a fresh stream: no replay of earlier steps
    for s in (0, 5, 40):
        for k in ("image", "label"):
            np.testing.assert_array_equal(a.batch_at(s)[k], b.batch_at(s)[k])
    np.testing.assert_array_equal(late["image"], a.batch_at(40)["image"])
    other = _tiny(tiny_dir, tiny_info, seed=1)
    assert not np.array_equal(_ids(other.batch_at(0)), _ids(a.batch_at(0)))


def test_iterate_from_a_step_equals_batches_from_that_step(tiny_dir, tiny_info):
    direct = _tiny(tiny_dir, tiny_info)
    want = [_ids(direct.batch_at(s)) for s in (7, 8, 9, 10)]
    for prefetch in (0, 2):
        with _tiny(tiny_dir, tiny_info, prefetch=prefetch) as stream:
            it = stream.iterate(7)
            got = [_ids(next(it)) for _ in range(4)]
            np.testing.assert_array_equal(got, want)
            # non-sequential access with a prefetch thread still gives the pure batch
            np.testing.assert_array_equal(_ids(stream.batch_at(3)), _ids(direct.batch_at(3)))
            np.testing.assert_array_equal(_ids(stream.batch_at(9)), want[2])


@pytest.mark.parametrize("num_processes", [2, 4])
def test_process_slices_are_disjoint_and_form_the_global_batch(tiny_dir, tiny_info, num_processes):
    whole = _tiny(tiny_dir, tiny_info, process_index=0, process_count=1)
    parts = [_tiny(tiny_dir, tiny_info, process_index=p, process_count=num_processes)
             for p in range(num_processes)]
    for s in (0, 4, 13):  # step 4 crosses the epoch boundary (positions 32..39 of 37 records)
        slices = [p.batch_at(s) for p in parts]
        assert all(sl["image"].shape[0] == 8 // num_processes for sl in slices)
        for k in ("image", "label"):
            np.testing.assert_array_equal(np.concatenate([sl[k] for sl in slices]), whole.batch_at(s)[k])
        if s == 0:  # within one epoch, the slices hold distinct records
            ids = np.concatenate([_ids(sl) for sl in slices])
            assert len(set(ids.tolist())) == len(ids)
    assert [p.local_rows for p in parts] == [(i * 8 // num_processes, (i + 1) * 8 // num_processes)
                                             for i in range(num_processes)]


def test_each_record_once_per_epoch_and_epochs_reshuffled(tiny_dir, tiny_info):
    stream = _tiny(tiny_dir, tiny_info)  # B = 8 does not divide N = 37: batches straddle epochs
    ids = np.concatenate([_ids(stream.batch_at(s)) for s in range(10)])  # 80 positions
    first, second = ids[:N_TRAIN], ids[N_TRAIN:2 * N_TRAIN]
    assert sorted(first.tolist()) == list(range(N_TRAIN)) == sorted(second.tolist())
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(N_TRAIN))


def test_one_batch_reads_only_its_rows(tiny_dir, tiny_info):
    src = CountingSource(datasets.open_source("tiny_records", "train", tiny_dir))
    decode = datasets.record_decoder("tiny_records", tiny_dir)
    stream = records.RecordStream(src, decode, tiny_info, 8, seed=0)
    assert src.reads == 0
    stream.batch_at(123)
    assert src.reads == 8
    part = records.RecordStream(src, decode, tiny_info, 8, seed=0, process_index=1, process_count=4)
    part.batch_at(5)
    assert src.reads == 8 + 2  # one process of four reads a quarter of the batch


@pytest.fixture(scope="module")
def digits_memory(digits_data_dir):
    info = datasets.get_info("digits")
    return info, datasets.load_split("digits", "train", digits_data_dir)


def test_digits_records_reader_matches_memory_reader(digits_memory, digits_data_dir):
    info, arrays = digits_memory
    n = info.num_train
    b = 479  # 3 * 479 = 1437 = N: three batches are exactly one epoch
    assert 3 * b == n
    rec = records.open_records("digits", "train", digits_data_dir, info, b, seed=0, validate=True)
    mem = BatchStream(arrays, info, b, seed=0)
    want = mem.batch_at(0)
    batches = [rec.batch_at(s) for s in range(3)]
    for got in batches:
        validate_batch(got, info)
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert got["image"].min() >= 0.0 and got["image"].max() <= 1.0
    # the same examples over an epoch: rows (image, label, caption tokens) as sorted byte strings

    def rows(batch):
        levels = np.rint(batch["image"] * (info.num_levels - 1)).astype(np.uint8).reshape(len(batch["label"]), -1)
        return sorted(levels[i].tobytes() + batch["label"][i:i + 1].tobytes()
                      + batch["caption_tokens"][i].tobytes() + batch["caption_chars"][i].tobytes()
                      for i in range(len(levels)))

    epoch = {k: np.concatenate([bt[k] for bt in batches]) for k in want}
    whole = {k: np.concatenate([mem.batch_at(s)[k] for s in range(3)]) for k in want}
    assert rows(epoch) == rows(whole)
    assert set(rec.arrays) == set(mem.arrays) and len(rec.arrays["image"]) == records.HEAD_SIZE


def test_sharded_batches_are_global_arrays_on_the_mesh(tiny_dir, tiny_info):
    import jax

    from gen_jax.train import sharding as shd

    mesh = shd.make_mesh(8)
    sharded = _tiny(tiny_dir, tiny_info, batch_size=16, sharding=shd.batch_sharding(mesh))
    plain = _tiny(tiny_dir, tiny_info, batch_size=16)
    got = sharded.batch_at(2)
    assert isinstance(got["image"], jax.Array) and got["image"].sharding.spec == shd.batch_sharding(mesh).spec
    assert len(got["image"].sharding.device_set) == 8
    for k in ("image", "label"):
        np.testing.assert_array_equal(np.asarray(got[k]), plain.batch_at(2)[k])


def test_build_stream_picks_the_reader_from_config(tiny_dir, digits_data_dir):
    from experiments import common
    from gen_jax.train import sharding as shd

    exp = common.load_experiment("classifier_digits", {"dataset.reader": "records", "train.batch_size": "16"})
    info = datasets.get_info("digits")
    stream = common.build_stream(exp, info, shd.make_mesh(8))
    assert isinstance(stream, records.RecordStream) and stream.batch_at(0)["image"].shape == (16, 8, 8, 1)
    stream.close()
    memory = common.build_stream(common.load_experiment("classifier_digits", {"train.batch_size": "16"}),
                                 info, shd.make_mesh(8))
    assert isinstance(memory, BatchStream)
    with pytest.raises(ConfigError, match=r"config\.dataset\.reader: must be 'memory'.*'records'.*'disk'"):
        common.load_experiment("classifier_digits", {"dataset.reader": "disk"})
    with pytest.raises(ConfigError, match=r"config\.dataset\.prefetch: must be >= 0"):
        common.load_experiment("classifier_digits", {"dataset.prefetch": "-1"})


def test_mock_data_standard_dataset(tmp_path):
    with tfds.testing.mock_data(num_examples=10):
        info = datasets.get_info("mnist", str(tmp_path))
        stream = records.open_records("mnist", "train", str(tmp_path), info, 4, seed=0, validate=True)
        b = stream.batch_at(3)
    assert b["image"].shape == (4, 28, 28, 1) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and stream.num_examples == 10


def test_errors_name_the_problem(tiny_dir, tiny_info, tmp_path):
    with pytest.raises(DatasetError, match=r"config\.dataset\.data_dir: '.*nowhere' does not exist"):
        records.open_records("tiny_records", "train", str(tmp_path / "nowhere"), tiny_info, 8, 0)
    with pytest.raises(DatasetError, match=r"unknown dataset 'no_such_data'"):
        records.open_records("no_such_data", "train", tiny_dir, tiny_info, 8, 0)
    with pytest.raises(DatasetError, match=r"no split 'heldout'"):
        records.open_records("tiny_records", "heldout", tiny_dir, tiny_info, 8, 0)
    with pytest.raises(DatasetError, match=r"'mnist' split 'train' is not prepared as array_record"):
        records.open_records("mnist", "train", tiny_dir, tiny_info, 8, 0)
    with pytest.raises(BatchError, match=r"train\.batch_size=6 is not divisible by the process count 4"):
        _tiny(tiny_dir, tiny_info, batch_size=6, process_index=0, process_count=4)
    with pytest.raises(BatchError, match=r"process_index=4 is not in \[0, process_count=4\)"):
        _tiny(tiny_dir, tiny_info, batch_size=8, process_index=4, process_count=4)
    with pytest.raises(BatchError, match=r"train\.batch_size must be a positive integer, got 0"):
        _tiny(tiny_dir, tiny_info, batch_size=0)
    from gen_jax.train import sharding as shd

    with pytest.raises(BatchError, match=r"train\.batch_size=12 is not divisible by the 8 shards"):
        _tiny(tiny_dir, tiny_info, batch_size=12, sharding=shd.batch_sharding(shd.make_mesh(8)))
    no_image = [{"label": 1}] * 3
    stream = records.RecordStream(no_image, datasets.record_decoder("tiny_records", tiny_dir), tiny_info, 2, 0)
    with pytest.raises(DatasetError, match=r"records lack the feature\(s\) \['image'\]"):
        stream.batch_at(0)


def test_train_loop_on_the_records_reader_resumes_exactly(tmp_path, digits_data_dir):
    """The unchanged train loop on ``config.dataset.reader='records'``: 2 steps, a resume to 4,
    and an uninterrupted 4-step run end with the same params (the batch of step s is read
    directly on resume)."""
    import jax

    from experiments import common
    from gen_jax.train.loop import train

    ov = {"dataset.reader": "records", "train.steps": "4", "train.log_every": "2", "train.ckpt_every": "2",
          "train.batch_size": "16"}
    exp = common.load_experiment("classifier_digits", ov)
    info, model, mesh = common.setup(exp)

    def run(workdir, stop_after=None):
        with common.build_stream(exp, info, mesh) as stream:
            return train(exp, model, str(workdir), stream, info, progress=False, mesh=mesh, stop_after=stop_after)

    run(tmp_path / "a", stop_after=2)
    resumed = run(tmp_path / "a")
    straight = run(tmp_path / "b")
    assert resumed.resumed_from == 2 and int(straight.state.step) == 4
    for x, y in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(straight.state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


MULTIPROCESS_WORKER = """
import sys
import jax
pid, port, data_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                           initialization_timeout=60)
import numpy as np
from jax.experimental import multihost_utils
from gen_jax.data import datasets, records
from gen_jax.train import sharding as shd

info = datasets.get_info("digits")
with records.open_records("digits", "train", data_dir, info, 16, seed=0, prefetch=2,
                          sharding=shd.batch_sharding(shd.make_mesh(8))) as stream:
    assert stream.local_rows == (8 * pid, 8 * pid + 8), stream.local_rows
    batch = stream.batch_at(5)
    whole = records.open_records("digits", "train", data_dir, info, 16, seed=0, process_index=0,
                                 process_count=1).batch_at(5)
    for k in ("image", "label", "caption_tokens"):
        got = np.asarray(multihost_utils.process_allgather(batch[k], tiled=True))
        assert np.array_equal(got, whole[k]), k
print("OK")
"""


def test_two_processes_read_disjoint_halves_of_the_one_process_batch(digits_data_dir):
    """Two real processes x 4 fake devices: each reads its 8 rows of the 16-row global batch
    (from the mesh's batch sharding), and the assembled global batch is the one-process batch."""
    import os
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    port = free_port()
    run_workers(MULTIPROCESS_WORKER, [(i, port, digits_data_dir) for i in range(2)], env=env, cwd=root)
