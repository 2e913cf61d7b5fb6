"""The ``signals`` dataset (procedural mu-law melodies) and its path through the pipeline."""
import numpy as np
import pytest

from gen_jax.data import mulaw
from gen_jax.data import datasets, signals
from gen_jax.data.pipeline import BatchError, BatchStream, validate_batch


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    return datasets.load_split("signals", "test", str(tmp_path_factory.mktemp("tfds")))


def test_generation_is_deterministic():
    a = signals.generate_signals(6, seed=3)
    b = signals.generate_signals(6, seed=3)
    c = signals.generate_signals(6, seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["codes"], c["codes"])
    assert a["codes"].dtype == np.uint8 and a["codes"].shape == (6, signals.LENGTH)
    assert a["local_cond"].shape == (6, signals.FRAMES) and a["local_cond"].dtype == np.int32
    np.testing.assert_array_equal(a["codes"], mulaw.encode(a["wave"]))
    assert np.all(np.abs(a["wave"]) <= 1.0)


def test_builder_equals_generator_and_info(test_split):
    info = datasets.get_info("signals")
    assert (info.num_train, info.num_test) == (4000, 500) == tuple(signals.SPLIT_SIZES.values())
    assert info.image_shape == (1024, 1, 1) and info.num_levels == 256 and info.num_classes == 5
    assert info.local_cond_shape == (16,) and info.local_cond_levels == 16
    want = signals.generate_split("test")
    got = test_split
    assert got["image"].shape == (500, 1024, 1, 1) and got["image"].dtype == np.uint8
    np.testing.assert_array_equal(got["image"][:, :, 0, 0], want["codes"])
    np.testing.assert_array_equal(got["label"], want["label"])
    np.testing.assert_array_equal(got["local_cond"], want["local_cond"])
    assert got["local_cond"].shape == (500,) + info.local_cond_shape
    assert 0 <= got["local_cond"].min() and got["local_cond"].max() < info.local_cond_levels
    assert got["local_cond"].max() == signals.NUM_PITCHES and got["local_cond"].min() == 0
    assert set(got["label"].tolist()) == set(range(5))
    assert list(got["caption"]) == list(want["caption"])
    assert datasets.get_tokenizer("signals").decode(got["caption_tokens"][:5]) == list(got["caption"][:5])
    # Train and test are different draws.
    assert not np.array_equal(signals.generate_signals(4, [signals.SEED, 0])["codes"], want["codes"][:4])


def test_clips_have_the_stated_structure():
    d = signals.generate_signals(60, seed=11)
    for i in range(60):
        lc, wave, timbre = d["local_cond"][i], d["wave"][i].astype(np.float64), d["label"][i]
        frames = wave.reshape(signals.FRAMES, signals.HOP)
        rms = np.sqrt(np.mean(frames ** 2, axis=1))
        # Rest frames hold only the noise (std <= 0.01); sounding frames well above it.
        assert np.all(rms[lc == 0] < 0.02)
        assert np.median(rms[lc > 0]) > 0.05
        assert signals.caption_for(timbre, lc) == d["caption"][i]
        assert d["caption"][i].split()[2] == signals.TIMBRES[timbre]
        if timbre != 0:
            continue
        # Sine clips: the spectral peak of every two-frame stretch of one pitch is its f0.
        for f in range(signals.FRAMES - 1):
            if lc[f] > 0 and lc[f + 1] == lc[f]:
                seg = wave[f * signals.HOP:(f + 2) * signals.HOP] * np.hanning(2 * signals.HOP)
                spec = np.abs(np.fft.rfft(seg, 8192))
                peak = np.argmax(spec) * signals.SAMPLE_RATE / 8192
                assert abs(peak - signals.pitch_hz(lc[f])) < 8.0, (i, f, peak)


def test_stream_and_validation_carry_local_cond(test_split):
    info = datasets.get_info("signals")
    stream = BatchStream(test_split, info, 8, seed=0, validate=True)
    b = stream.batch_at(2)
    idx = stream.indices_at(2)
    assert b["local_cond"].shape == (8, 16) and b["local_cond"].dtype == np.int32
    np.testing.assert_array_equal(b["local_cond"], test_split["local_cond"][idx])
    np.testing.assert_array_equal(np.round(b["image"] * 255).astype(np.uint8), test_split["image"][idx])
    bad = dict(b, local_cond=b["local_cond"][:, :8])
    with pytest.raises(BatchError, match=r"local_cond.*shape \(8, 8\).*\(8, 16\)"):
        validate_batch(bad, info)
    with pytest.raises(BatchError, match=r"local_cond.*\[0, 16\)"):
        validate_batch(dict(b, local_cond=b["local_cond"] + 16), info)
    with pytest.raises(BatchError, match=r"local_cond.*no local"):
        validate_batch({"image": np.zeros((2, 8, 8, 1), np.float32), "local_cond": np.zeros((2, 16), np.int32)},
                       datasets.get_info("digits"))
