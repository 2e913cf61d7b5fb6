"""TFDS builder ``signals``: procedurally generated 1-D melodies, 8-bit mu-law coded.

Every clip is ``T = 1024`` samples at ``SAMPLE_RATE = 4000`` Hz (0.256 s) of a short melody
played by one synthetic instrument, then mu-law companded and quantized to 256 codes
(:mod:`gen_jax.data.mulaw`, WaveNet Sec. 2.2). Rendering is vectorized per note in
numpy and deterministic given a seed (:func:`generate_signals`). The builder downloads nothing.

Structure of a clip:

* **timbre** (also ``label``, the global condition): ``sine, square, sawtooth, triangle, fm``
  -- band-limited additive synthesis (harmonics below ``0.45 * SAMPLE_RATE``) of the Fourier
  series of a square (odd harmonics, ``1/k``), sawtooth (all harmonics, ``1/k``) and triangle
  (odd harmonics, ``1/k^2``, alternating signs), or 1:1 FM ``sin(phi + I sin phi)`` with
  index ``I`` in ``[0.8, 1.6]``;
* **melody**: the clip is ``FRAMES = T / HOP = 16`` frames of ``HOP = 64`` samples (16 ms);
  notes last 1-4 frames, their pitches are a random walk (steps +-1, +-2 scale degrees plus a
  per-clip drift of -1, 0 or +1, reflected at the range ends, never repeating the previous
  pitch) on the C-major scale from C3 to C5 (15 pitches, 130.8-523.3 Hz); after the first
  note, a note is a rest with probability 0.12;
* **envelope**: per note, a linear attack of 4-12 ms, exponential decay (time constant
  60-400 ms, per clip) and an 4 ms linear release at the note end; per-note velocity in
  ``[0.35, 0.85]``; a random start phase per note;
* **noise**: white Gaussian, standard deviation 0.002-0.01 (per clip); the sum is clipped to
  ``[-1, 1]``.

Features:

* ``image``: ``Tensor((T, 1, 1), uint8)``: the mu-law codes ``0..255`` (``K = 256``; a batch
  carries ``code / 255``);
* ``label``: ``ClassLabel(TIMBRES)``;
* ``local_cond``: ``Tensor((FRAMES,), int32)``: the pitch id of each frame, ``0`` = rest,
  ``i = 1..15`` = scale degree ``i - 1`` above C3 (the local conditioning sequence,
  ``NUM_PITCH_IDS = 16`` values);
* ``caption``: ``Text``, ``"a {contour} {timbre} melody"``, ``contour`` = ``rising`` /
  ``falling`` when the last sounding note is more than two scale degrees above / below the
  first, else ``wandering`` (e.g. ``"a rising sawtooth melody"``);
* ``index``: ``int32`` (position in the generated split; records come back in hashed order).

Splits (each drawn with its own seed, ``numpy.random.default_rng([SEED, split_id])``):
``train`` (4000) and ``test`` (500), all factors independent and uniform.
"""
from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import mulaw

SAMPLE_RATE = 4000
LENGTH = 1024
HOP = 64
FRAMES = LENGTH // HOP
TIMBRES = ("sine", "square", "sawtooth", "triangle", "fm")
CONTOURS = ("rising", "falling", "wandering")
# C major from C3 (MIDI 48) to C5 (MIDI 72): 15 pitches; pitch id 0 is a rest.
SCALE_MIDI = tuple(48 + 12 * o + s for o in range(2) for s in (0, 2, 4, 5, 7, 9, 11)) + (72,)
NUM_PITCHES = len(SCALE_MIDI)
NUM_PITCH_IDS = NUM_PITCHES + 1
REST_PROB = 0.12
DURATION_PROBS = (0.3, 0.35, 0.2, 0.15)  # 1, 2, 3, 4 frames
SEED = 0
SPLIT_SIZES = {"train": 4000, "test": 500}
_SPLIT_IDS = {"train": 0, "test": 1}
MAX_HARMONIC_HZ = 0.45 * SAMPLE_RATE


def pitch_hz(pitch_id) -> np.ndarray:
    """Fundamental (Hz) of pitch ids ``1..NUM_PITCHES`` (equal temperament, A4 = 440 Hz)."""
    midi = np.asarray(SCALE_MIDI, np.float64)[np.asarray(pitch_id) - 1]
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def oscillator(timbre: int, phase: np.ndarray, f0: float, fm_index: float = 1.2) -> np.ndarray:
    """One band-limited period shape of ``timbre`` at instantaneous phase ``phase`` (radians)."""
    if timbre == 0:
        return np.sin(phase)
    if timbre == 4:
        return np.sin(phase + fm_index * np.sin(phase))
    kmax = max(1, int(MAX_HARMONIC_HZ // f0))
    k = np.arange(1, kmax + 1, dtype=np.float64)[:, None]
    if timbre == 1:  # square: (4/pi) sum_{k odd} sin(k phi) / k
        w = np.where(k % 2 == 1, 4.0 / (np.pi * k), 0.0)
    elif timbre == 2:  # sawtooth: (2/pi) sum_k (-1)^(k+1) sin(k phi) / k
        w = 2.0 / np.pi * (-1.0) ** (k + 1) / k
    elif timbre == 3:  # triangle: (8/pi^2) sum_{k odd} (-1)^((k-1)/2) sin(k phi) / k^2
        w = np.where(k % 2 == 1, 8.0 / np.pi ** 2 * (-1.0) ** ((k - 1) // 2) / k ** 2, 0.0)
    else:
        raise ValueError(f"timbre id must be in [0, {len(TIMBRES)}), got {timbre}")
    return 0.85 * np.sum(w * np.sin(k * phase[None, :]), axis=0)  # 0.85: Gibbs overshoot head-room


def _melody(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Notes ``(first frame, num frames, pitch id)`` covering the ``FRAMES`` frames."""
    drift = int(rng.integers(-1, 2))
    if drift > 0:
        pitch = int(rng.integers(1, 6))
    elif drift < 0:
        pitch = int(rng.integers(NUM_PITCHES - 4, NUM_PITCHES + 1))
    else:
        pitch = int(rng.integers(1, NUM_PITCHES + 1))
    notes, f, last = [], 0, pitch
    while f < FRAMES:
        dur = min(int(rng.choice(4, p=DURATION_PROBS)) + 1, FRAMES - f)
        if notes and rng.random() < REST_PROB:
            notes.append((f, dur, 0))
        else:
            if notes:
                step = int(rng.choice((-2, -1, 1, 2))) + drift
                pitch = last + (step if step != 0 else int(rng.choice((-1, 1))))
                if pitch < 1:
                    pitch = 2 - pitch
                if pitch > NUM_PITCHES:
                    pitch = 2 * NUM_PITCHES - pitch
                if pitch == last:
                    pitch = last + 1 if last < NUM_PITCHES else last - 1
            notes.append((f, dur, pitch))
            last = pitch
        f += dur
    return notes


def contour_of(local_cond: np.ndarray) -> str:
    """``rising`` / ``falling`` / ``wandering`` from the first and last sounding pitch ids."""
    sounding = [int(p) for p in local_cond if p > 0]
    delta = sounding[-1] - sounding[0]
    return "rising" if delta > 2 else "falling" if delta < -2 else "wandering"


def caption_for(timbre: int, local_cond: np.ndarray) -> str:
    return f"a {contour_of(local_cond)} {TIMBRES[int(timbre)]} melody"


def caption_vocabulary() -> list[str]:
    """Every word any caption can contain (sorted)."""
    return sorted({"a", "melody", *TIMBRES, *CONTOURS})


def render_clip(rng: np.random.Generator, timbre: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip: ``(waveform float32 [LENGTH] in [-1, 1], pitch ids int32 [FRAMES])``."""
    wave = np.zeros(LENGTH, np.float64)
    local = np.zeros(FRAMES, np.int32)
    decay = rng.uniform(0.06, 0.4) * SAMPLE_RATE
    fm_index = rng.uniform(0.8, 1.6)
    release = int(0.004 * SAMPLE_RATE)
    for f, dur, pitch in _melody(rng):
        local[f:f + dur] = pitch
        if pitch == 0:
            continue
        n = dur * HOP
        t = np.arange(n, dtype=np.float64)
        f0 = float(pitch_hz(pitch))
        phase = 2 * np.pi * f0 * t / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
        attack = rng.uniform(0.004, 0.012) * SAMPLE_RATE
        env = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
        env *= np.clip((n - t) / release, 0.0, 1.0)
        wave[f * HOP:f * HOP + n] = rng.uniform(0.35, 0.85) * env * oscillator(timbre, phase, f0, fm_index)
    wave += rng.uniform(0.002, 0.01) * rng.standard_normal(LENGTH)
    return np.clip(wave, -1.0, 1.0).astype(np.float32), local


def generate_signals(num: int, seed) -> dict[str, np.ndarray]:
    """Draws ``num`` clips deterministically from ``seed``.

    Returns a dict with ``wave`` float32 ``[num, LENGTH]`` in ``[-1, 1]``, ``codes`` uint8
    ``[num, LENGTH]`` (``mulaw.encode(wave)``), ``label`` (timbre id) int32 ``[num]``,
    ``local_cond`` int32 ``[num, FRAMES]`` and ``caption`` (``[num]`` str).
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(TIMBRES), size=num).astype(np.int32)
    waves, locals_ = zip(*(render_clip(rng, int(c)) for c in label)) if num else ((), ())
    wave = np.stack(waves) if num else np.zeros((0, LENGTH), np.float32)
    local = np.stack(locals_) if num else np.zeros((0, FRAMES), np.int32)
    codes = mulaw.encode(wave).astype(np.uint8)
    caption = np.array([caption_for(c, lc) for c, lc in zip(label, local)])
    return dict(wave=wave, codes=codes, label=label, local_cond=local, caption=caption)


def generate_split(split: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """The clips of ``split`` (``train``/``test``) exactly as the builder stores them."""
    if split not in SPLIT_SIZES:
        raise ValueError(f"signals has splits {sorted(SPLIT_SIZES)}, got {split!r}")
    return generate_signals(SPLIT_SIZES[split], seed=[seed, _SPLIT_IDS[split]])


class Signals(tfds.core.GeneratorBasedBuilder):
    """Procedural mu-law coded melodies (T=1024 at 4 kHz) with timbre labels and pitch frames."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(
                    shape=(LENGTH, 1, 1), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES),
                "label": tfds.features.ClassLabel(names=list(TIMBRES)),
                "local_cond": tfds.features.Tensor(shape=(FRAMES,), dtype=np.int32),
                "caption": tfds.features.Text(),
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
            yield i, {"image": data["codes"][i][:, None, None], "label": int(data["label"][i]),
                      "local_cond": data["local_cond"][i], "caption": str(data["caption"][i]),
                      "index": i}
