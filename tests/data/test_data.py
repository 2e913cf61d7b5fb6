"""Tests for gen_jax.data (builders, loading, batch stream, checks) and the tokenizers.

Everything is prepared into a pytest temporary directory; nothing touches the network or the
home cache. Standard TFDS datasets are exercised through ``tfds.testing.mock_data``.
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from gen_jax import distributions as dist
import tensorflow_datasets as tfds

from gen_jax.data import datasets, digits, pipeline, shapes
from gen_jax.data.datasets import DatasetError, DatasetInfo
from gen_jax.data.pipeline import BatchError, BatchStream, validate_batch
from gen_jax.data.tokenizers import ByteTokenizer, WordTokenizer
from tests.local_processes import free_port, run_workers

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPLIT_JSON = pathlib.Path(__file__).parent / "digits_test_split.json"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def digits_splits(data_dir):
    return {s: datasets.load_split("digits", s, data_dir) for s in ("train", "test")}


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits
    return load_digits()


def _run(code: str, env_extra: dict, timeout: int = 120) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **env_extra)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


# ----------------------------------------------------------------------------- digits


def test_digits_split_matches_reference_and_is_stratified(sk_digits):
    ref = np.array(json.loads(SPLIT_JSON.read_text())["test_idx"])
    test_idx = digits.digits_test_indices()
    np.testing.assert_array_equal(test_idx, ref)
    counts = np.bincount(sk_digits.target, minlength=10)
    test_counts = np.bincount(sk_digits.target[test_idx], minlength=10)
    np.testing.assert_array_equal(test_counts, [36, 37, 35, 37, 36, 36, 36, 36, 35, 36])
    # Largest remainder: every class within one of its exact quota.
    assert np.all(np.abs(test_counts - 360 * counts / counts.sum()) < 1)
    assert test_counts.sum() == 360


def test_digits_builder_matches_sklearn(digits_splits, sk_digits):
    tr, te = digits_splits["train"], digits_splits["test"]
    assert tr["image"].shape == (1437, 8, 8, 1) and te["image"].shape == (360, 8, 8, 1)
    assert tr["image"].dtype == np.uint8 and tr["image"].max() == 16
    np.testing.assert_array_equal(te["index"], digits.digits_test_indices())
    np.testing.assert_array_equal(np.sort(np.concatenate([tr["index"], te["index"]])), np.arange(1797))
    for s in (tr, te):
        np.testing.assert_array_equal(s["image"][..., 0], sk_digits.images[s["index"]].astype(np.uint8))
        np.testing.assert_array_equal(s["label"], sk_digits.target[s["index"]])
        assert s["label"].dtype == np.int32
    assert te["caption"][0] == f"a handwritten digit {digits.DIGIT_WORDS[te['label'][0]]}"
    info = datasets.get_info("digits")
    assert (info.num_train, info.num_test, info.num_levels, info.image_shape) == (1437, 360, 17, (8, 8, 1))
    tok = datasets.get_tokenizer("digits")
    assert te["caption_tokens"].shape == (360, info.caption_len)
    assert tok.decode(te["caption_tokens"]) == list(te["caption"])
    from gen_jax.data.tokenizers import ByteTokenizer
    assert te["caption_chars"].shape == (360, info.caption_char_len)
    assert ByteTokenizer().decode(te["caption_chars"]) == list(te["caption"])  # nothing truncated


# ----------------------------------------------------------------------------- shapes


def test_shapes_generation_is_deterministic():
    a = shapes.generate_shapes(64, seed=3)
    b = shapes.generate_shapes(64, seed=3)
    c = shapes.generate_shapes(64, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["image"], c["image"])
    assert a["image"].dtype == np.uint8 and a["image"].shape == (64, 32, 32, 3)


def test_shapes_captions_factors_and_heldout():
    train = shapes.generate_split("train")
    combos = set(zip(train["shape"].tolist(), train["colour"].tolist()))
    assert combos == set(shapes.allowed_combos())
    assert not combos & set(shapes.HELDOUT_COMBOS)
    assert set(train["shape"].tolist()) == set(range(5)) and set(train["colour"].tolist()) == set(range(6))
    for i in range(50):
        cap = train["caption"][i]
        assert shapes.SIZES[train["size"][i]] in cap.split()
        assert f"{shapes.COLOURS[train['colour'][i]]} {shapes.SHAPES[train['shape'][i]]}" in cap
    assert shapes.caption_for(0, 0, 0, 0, 0) == "a small red circle at the top left"
    assert shapes.caption_for(1, 2, 1, 1, 1) == "a large blue square in the center"
    # The rendered colour is the named colour, and the shape sits in the named region.
    img = train["image"].astype(float)
    for i in range(20):
        full = np.all(img[i] == shapes.COLOUR_RGB[train["colour"][i]], axis=-1)  # fully covered
        assert full.sum() >= 9
        ys, xs = np.nonzero(img[i].sum(-1) > 0)
        cy, cx = shapes.CENTRES[train["y"][i]], shapes.CENTRES[train["x"][i]]
        assert abs(xs.mean() + 0.5 - cx) < 2.5 and abs(ys.mean() + 0.5 - cy) < 3.5


def test_shapes_builder_equals_generator(data_dir):
    for split in ("test", "heldout"):
        got = datasets.load_split("shapes", split, data_dir)
        want = shapes.generate_split(split)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["shape"])
        for f in shapes.FACTORS:
            np.testing.assert_array_equal(got[f], want[f])
        assert list(got["caption"]) == list(want["caption"])
        pairs = set(zip(got["shape"].tolist(), got["colour"].tolist()))
        assert (pairs <= set(shapes.HELDOUT_COMBOS)) == (split == "heldout")
    info = datasets.get_info("shapes")
    assert got["caption_tokens"].shape == (2000, info.caption_len)
    assert datasets.get_tokenizer("shapes").decode(got["caption_tokens"][:5]) == list(got["caption"][:5])


# ----------------------------------------------------------------------------- datasets


def test_unknown_dataset_and_split(data_dir):
    with pytest.raises(DatasetError, match=r"no_such_data.*digits.*shapes"):
        datasets.load_split("no_such_data", "train", data_dir)
    with pytest.raises(DatasetError, match=r"no_such_data"):
        datasets.get_info("no_such_data")
    with pytest.raises(DatasetError, match=r"heldout.*train"):
        datasets.load_split("digits", "heldout", data_dir)


def test_unprepared_standard_dataset_raises_without_download(tmp_path):
    with pytest.raises(DatasetError, match=r"not prepared.*never downloads"):
        datasets.load_split("mnist", "train", str(tmp_path))


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_standard_dataset_via_mock_data(name, shape, tmp_path):
    with tfds.testing.mock_data(num_examples=7):
        info = datasets.get_info(name, str(tmp_path))
        arrays = datasets.load_split(name, "train", str(tmp_path))
    assert info.image_shape == shape and info.num_levels == 256 and info.num_classes == 10
    assert info.num_train == 7 and not info.has_captions
    assert arrays["image"].shape == (7,) + shape and arrays["image"].dtype == np.uint8
    assert arrays["label"].dtype == np.int32 and arrays["label"].max() < 10
    batch = BatchStream(arrays, info, 4, seed=0, validate=True).batch_at(3)
    assert batch["image"].shape == (4,) + shape


def test_unlabelled_dataset_gets_zero_labels(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        info = datasets.get_info("celeb_a", str(tmp_path))
        arrays = datasets.load_split("celeb_a", "train", str(tmp_path))
    assert not info.has_labels and info.num_classes == 0
    np.testing.assert_array_equal(arrays["label"], 0)


# ----------------------------------------------------------------------------- tokenizers


def test_word_tokenizer():
    tok = WordTokenizer.from_texts(["a red circle", "a blue square"])
    assert tok.words == ("<pad>", "<unk>", "<bos>", "<eos>", "a", "blue", "circle", "red", "square")
    assert tok.vocab_size == 9
    ids = tok.encode(["a red circle", "A green square"], max_len=6)
    np.testing.assert_array_equal(ids, [[2, 4, 7, 6, 3, 0], [2, 4, 1, 8, 3, 0]])
    assert ids.dtype == np.int32
    assert tok.decode(ids) == ["a red circle", "a <unk> square"]
    assert tok.encode(["a red circle"], max_len=3).tolist() == [[2, 4, 7]]  # truncated
    assert WordTokenizer(["b", "a", "b"]).words == WordTokenizer(["a", "b"]).words


def test_byte_tokenizer():
    tok = ByteTokenizer()
    ids = tok.encode(["hi", "é!"], max_len=4)
    np.testing.assert_array_equal(ids, [[105, 106, 0, 0], [0xC3 + 1, 0xA9 + 1, 34, 0]])
    assert tok.decode(ids) == ["hi", "é!"] and tok.vocab_size == 257


# ----------------------------------------------------------------------------- pipeline

FAKE_INFO = DatasetInfo(name="fake", image_shape=(4, 4, 1), num_levels=17, num_classes=10,
                        num_train=10, num_test=0, has_captions=True, caption_len=3, vocab_size=20)


def _fake_arrays(n=10):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 17, (n, 4, 4, 1)).astype(np.uint8),
            "label": (np.arange(n) % 10).astype(np.int32),
            "caption_tokens": rng.integers(0, 20, (n, 3)).astype(np.int32),
            "index": np.arange(n, dtype=np.int32)}


def test_stream_deterministic_and_restartable():
    arrays = _fake_arrays()
    s1, s2 = BatchStream(arrays, FAKE_INFO, 4, seed=7), BatchStream(arrays, FAKE_INFO, 4, seed=7)
    first = [b for _, b in zip(range(6), s1)]
    for step in (5, 2, 0):
        for k in first[step]:
            np.testing.assert_array_equal(s2.batch_at(step)[k], first[step][k])
    resumed = [b for _, b in zip(range(3), s2.iterate(3))]
    for a, b in zip(first[3:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
    other = BatchStream(arrays, FAKE_INFO, 4, seed=8)
    assert any(not np.array_equal(other.batch_at(s)["label"], first[s]["label"]) for s in range(3))
    b = first[0]
    assert b["image"].dtype == np.float32 and b["image"].shape == (4, 4, 4, 1)
    assert b["label"].dtype == np.int32 and b["caption_tokens"].shape == (4, 3)
    idx = s1.indices_at(0)
    np.testing.assert_array_equal(b["image"], arrays["image"][idx] / np.float32(16))
    np.testing.assert_array_equal(b["label"], arrays["label"][idx])


def test_stream_covers_each_example_once_per_epoch():
    arrays = _fake_arrays(10)
    s = BatchStream(arrays, FAKE_INFO, 3, seed=1)
    pos = np.concatenate([s.indices_at(t) for t in range(10)])  # 30 positions = 3 epochs
    for e in range(3):
        np.testing.assert_array_equal(np.sort(pos[10 * e: 10 * (e + 1)]), np.arange(10))
        np.testing.assert_array_equal(pos[10 * e: 10 * (e + 1)],
                                      np.random.default_rng([1, e]).permutation(10))
    big = BatchStream(arrays, FAKE_INFO, 25, seed=1).indices_at(0)  # batch > dataset wraps
    assert big.shape == (25,) and np.all(np.bincount(big[:20], minlength=10) == 2)


def test_stream_with_single_device_sharding_returns_jax_arrays():
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    sh = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    s = BatchStream(_fake_arrays(), FAKE_INFO, 4, seed=0, sharding=sh, validate=True)
    ref = BatchStream(_fake_arrays(), FAKE_INFO, 4, seed=0).batch_at(2)
    got = s.batch_at(2)
    assert isinstance(got["image"], jax.Array)
    for k in ref:
        np.testing.assert_array_equal(np.asarray(got[k]), ref[k])


def test_stream_batch_size_errors():
    for bad in (0, -4, 2.5):
        with pytest.raises(BatchError, match="train.batch_size"):
            BatchStream(_fake_arrays(), FAKE_INFO, bad, seed=0)
    with pytest.raises(BatchError, match=r"arrays\['image'\]"):
        BatchStream({"image": np.zeros((3, 5, 5, 1), np.uint8)}, FAKE_INFO, 2, seed=0)
    shape = (3,) + tuple(FAKE_INFO.image_shape)
    with pytest.raises(BatchError, match=r"arrays\['image'\] has dtype float32"):  # already scaled
        BatchStream({"image": np.full(shape, 0.5, np.float32)}, FAKE_INFO, 2, seed=0)
    with pytest.raises(BatchError, match=r"levels lie in \[99, 99\]; expected \[0, 16\]"):
        BatchStream({"image": np.full(shape, 99, np.uint8)},
                    FAKE_INFO, 2, seed=0)


def test_sharded_stream_on_eight_fake_devices():
    out = _run("""
        import jax, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from gen_jax.data.datasets import DatasetInfo
        from gen_jax.data.pipeline import BatchStream, BatchError
        assert jax.device_count() == 8
        info = DatasetInfo(name='fake', image_shape=(4, 4, 1), num_levels=17, num_classes=10,
                           num_train=10, num_test=0, has_captions=False, caption_len=0, vocab_size=0)
        rng = np.random.default_rng(0)
        arrays = {'image': rng.integers(0, 17, (10, 4, 4, 1)).astype(np.uint8),
                  'label': rng.integers(0, 10, 10).astype(np.int32)}
        meshes = [Mesh(np.array(jax.devices()), ('data',)),
                  Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))]
        for mesh, b in zip(meshes, (16, 12)):
            sh = NamedSharding(mesh, P('data'))
            s = BatchStream(arrays, info, b, seed=3, sharding=sh, validate=True)
            ref = BatchStream(arrays, info, b, seed=3)
            for step in (0, 1, 7):
                got, want = s.batch_at(step), ref.batch_at(step)
                for k in want:
                    assert got[k].sharding.spec == P('data'), got[k].sharding
                    np.testing.assert_array_equal(np.asarray(got[k]), want[k])
        try:
            BatchStream(arrays, info, 12, seed=0, sharding=NamedSharding(meshes[0], P('data')))
        except BatchError as e:
            assert 'train.batch_size=12' in str(e) and '8' in str(e), e
        else:
            raise AssertionError('no BatchError')
        print('OK')
    """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"})
    assert "OK" in out


def test_validate_batch_errors():
    good = {"image": np.full((2, 4, 4, 1), 0.5, np.float32), "label": np.array([0, 9], np.int32),
            "caption_tokens": np.zeros((2, 3), np.int32)}
    validate_batch(good, FAKE_INFO)
    cases = [
        ({"label": good["label"]}, r"batch\['image'\] is missing"),
        ({**good, "image": np.zeros((2, 4, 4, 3), np.float32)}, r"image.*shape.*\[B, 4, 4, 1\]"),
        ({**good, "image": np.zeros((4, 4, 1), np.float32)}, r"image.*shape"),
        ({**good, "image": np.zeros((2, 4, 4, 1), np.uint8)}, r"image.*dtype uint8.*floating"),
        ({**good, "image": np.full((2, 4, 4, 1), 1.5, np.float32)}, r"image.*\[0, 1\]"),
        ({**good, "image": np.full((2, 4, 4, 1), -0.1, np.float32)}, r"image.*\[0, 1\]"),
        ({**good, "image": np.full((2, 4, 4, 1), np.nan, np.float32)}, r"image.*NaN"),
        ({**good, "label": np.array([0, 10], np.int32)}, r"label.*\[0, 10\)"),
        ({**good, "label": np.array([0.0, 1.0])}, r"label.*dtype"),
        ({**good, "label": np.array([0, 1, 2], np.int32)}, r"label.*shape"),
        ({**good, "caption_tokens": np.full((2, 3), 20, np.int32)}, r"caption_tokens"),
    ]
    for batch, msg in cases:
        with pytest.raises(BatchError, match=msg):
            validate_batch(batch, FAKE_INFO)


def test_dequantize_and_scaling():
    k = 17
    levels = np.arange(k, dtype=np.float32).reshape(1, k, 1, 1) * np.ones((2000, 1, 1, 1), np.float32)
    image = levels / (k - 1)
    y = np.asarray(dist.dequantize(jax.random.PRNGKey(0), image, k))
    assert y.dtype == np.float32 and y.min() >= 0.0 and y.max() < 1.0
    np.testing.assert_array_equal(np.floor(y * k), levels)  # y lies in [level/K, (level+1)/K)
    u = y * k - levels
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005  # U[0, 1) moments
    np.testing.assert_array_equal(np.asarray(dist.to_levels(image, k)), levels.astype(np.int32))
    x = np.linspace(0, 1, 11, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(pipeline.scale_to_symmetric(x)), 2 * x - 1)
    np.testing.assert_allclose(np.asarray(pipeline.scale_from_symmetric(pipeline.scale_to_symmetric(x))), x,
                               atol=1e-7)


def test_concurrent_preparation_is_safe(tmp_path):
    code = """
        import sys
        from gen_jax.data import datasets
        d = datasets.load_split('digits', 'test', sys.argv[1])
        assert d['image'].shape == (360, 8, 8, 1)
        print('OK')
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(tmp_path)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "OK" in out, err[-3000:]
    assert sorted(os.listdir(tmp_path / "digits")) == ["1.0.0"]


MULTIPROCESS_WORKER = """
    import sys
    import jax, numpy as np
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=2,
                               process_id=pid, initialization_timeout=60)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from gen_jax.data.datasets import DatasetInfo
    from gen_jax.data.pipeline import BatchStream
    info = DatasetInfo(name='fake', image_shape=(4, 4, 1), num_levels=17, num_classes=10,
                       num_train=10, num_test=0, has_captions=False, caption_len=0, vocab_size=0)
    rng = np.random.default_rng(0)
    arrays = {'image': rng.integers(0, 17, (10, 4, 4, 1)).astype(np.uint8),
              'label': rng.integers(0, 10, 10).astype(np.int32)}
    sh = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
    s = BatchStream(arrays, info, 16, seed=3, sharding=sh)
    ref = BatchStream(arrays, info, 16, seed=3)
    assert s._local == (8 * pid, 8 * pid + 8), s._local  # each process builds only its rows
    for step in (0, 5):
        got, want = s.batch_at(step), ref.batch_at(step)
        for k in want:
            for shard in got[k].addressable_shards:
                np.testing.assert_array_equal(np.asarray(shard.data), want[k][shard.index])
        total = jax.jit(lambda x: x.sum())(got['image'])
        np.testing.assert_allclose(float(total), want['image'].sum(), rtol=1e-6)
    print('OK')
"""


def test_sharded_stream_across_two_processes():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    port = free_port()
    run_workers(textwrap.dedent(MULTIPROCESS_WORKER), [(i, port) for i in range(2)], env=env, cwd=ROOT)
