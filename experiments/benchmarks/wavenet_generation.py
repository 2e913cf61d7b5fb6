"""WaveNet generation speed (queue generator vs naive recomputation) and a dedicated evaluation
of a trained wavenet_signals workdir.

    python -m experiments.benchmarks.wavenet_generation [--lengths 256 1024 4096] [--batch 16]
    python -m experiments.benchmarks.wavenet_generation --eval_workdir runs/wavenet_signals

**Speed** (default). A WaveNet of 2 stacks x 10 dilations (1..512; kernel 2, receptive field
2048 samples; R = G = 32, S = 64 channels), conditioned on a label and on per-64-sample frame
ids, random params. For each length ``T`` it times (after compilation, XLA defaults, median
of ``--repeats``):

* ``fast``: :func:`gen_jax.autoregressive.wavenet.generate_fast` (Paine et al. 2016: per-layer
  ring-buffer queues, one ``lax.scan``), for 1 sequence and for ``--batch`` sequences;
* ``naive``: :func:`gen_jax.autoregressive.wavenet.generate_naive` (the full causal net re-run
  over the last ``min(receptive field, T)`` inputs at every step, one ``lax.scan``), 1 sequence;

and prints milliseconds per generated step and audio samples per second (``num * T / s``), the
speedup, and whether both samplers drew the same codes from the same key. Measured here (2
shared CPU cores, other jobs running; see the table it prints):

         T window | fast ms/step fast smp/s   fast x16 smp/s | naive ms/step naive smp/s | speedup same codes
       256    256 |        0.200       4995             9963 |         4.243         236 |    21.2       True
      1024   1024 |        0.204       4899            10673 |        14.922          67 |    73.1       True
      4096   2048 |        0.158       6348            12511 |        26.743          37 |   169.8   (T=2048)

The queue generator's step costs the same at every length (~0.2 ms for one sequence: 20
layers of matrix-vector products), while the naive step grows with its window (the receptive
field, 2048 here): 21x slower at T = 256, 73x at 1024 and 170x once the window is the full
receptive field. Both draw identical codes from the same key. Batching 16 sequences doubles
the throughput (the 1-sequence step is overhead-bound on CPU). The T = 4096 naive figure is
its per-step cost measured at T = 2048 (same 2048-input window; ``(T=2048)`` in the table).

**Evaluation** (``--eval_workdir``). Restores the workdir's params (config ``--config``,
default wavenet_signals) and prints, on the signals test split (500 clips x 1024 samples):

* the exact test NLL in bits per sample (``model.likelihood``; bits/dim = bits per sample);
* baselines fitted on the train split, scored on the test split, bits per sample: the i.i.d.
  marginal histogram of the codes, the histogram per timbre (label), and an order-1 Markov
  chain ``p(x_t | x_{t-1})`` (add-0.1 smoothing; the first sample scored by the marginal);
* samples: ``--num_samples`` clips drawn by the queue generator conditioned on the first test
  clips' labels and pitch frames, and the pitch accuracy -- the fraction of two-frame stretches
  of one pitch whose autocorrelation pitch estimate lies within 50 cents of the conditioned
  pitch -- of the samples, of the real test clips (the estimator's ceiling), and of the
  samples scored against another clip's pitch frames (chance); a few samples are written as
  16-bit WAV files into ``<workdir>/samples``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import wave

import jax
import numpy as np

from gen_jax.data import mulaw
from gen_jax.autoregressive import wavenet as wn
from gen_jax.data import signals


def _timed(fn, args, repeats: int):
    """``(median seconds, last output)`` of the jitted ``fn(*args)``, compiled ahead of time
    (no warm-up run), over ``repeats`` runs."""
    compiled = jax.jit(fn).lower(*args).compile()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def _random_params(net, length: int, seed: int = 0):
    """Params of ``net`` drawn N(0, 1/fan_in) in numpy on ``eval_shape`` shapes (no init compile)."""
    b = 1
    f = length // net.hop
    shapes = jax.eval_shape(net.init, jax.random.PRNGKey(0), np.zeros((b, length), np.int32),
                            np.zeros((b,), np.int32), np.zeros((b, f), np.int32))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 and "embedding" not in name else 1
        scale = 0.1 if "bias" in name else 1.0 / math.sqrt(fan_in)
        return (scale * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def speed(lengths, batch: int, repeats: int, naive_max: int) -> None:
    net = wn.WaveNet(residual_channels=32, gate_channels=32, skip_channels=64,
                     dilations=tuple(2 ** i for i in range(10)) * 2, kernel_size=2, input_kernel_size=2,
                     num_classes=5, num_local_ids=16, hop=64, local_channels=16)
    r = wn.receptive_field(net.dilations, net.kernel_size, net.input_kernel_size)
    print(f"WaveNet 2 x 10 dilations, receptive field {r}, {jax.devices()[0].platform} x{jax.device_count()}")
    head = (f"{'T':>6} {'window':>6} | {'fast ms/step':>12} {'fast smp/s':>10} {f'fast x{batch} smp/s':>16} | "
            f"{'naive ms/step':>13} {'naive smp/s':>11} | {'speedup':>7} {'same codes':>10}")
    print(head)
    print("-" * len(head))

    def cond(n, length):
        rng = np.random.default_rng(2)
        return (rng.integers(0, 5, n).astype(np.int32),
                rng.integers(0, 16, (n, length // net.hop)).astype(np.int32))

    key = jax.random.PRNGKey(1)
    for length in lengths:
        params = _random_params(net, length)
        t1, codes_fast = _timed(lambda p, k, lab, loc: wn.generate_fast(net, p, k, 1, length, lab, loc),
                                (params, key, *cond(1, length)), repeats)
        tb, _ = _timed(lambda p, k, lab, loc: wn.generate_fast(net, p, k, batch, length, lab, loc),
                       (params, key, *cond(batch, length)), repeats)
        # The naive step re-runs the net on min(r, T) inputs: its cost per step is the same for
        # every T >= r, so above naive_max (>= r) it is measured at T = naive_max.
        n_len = length if length <= naive_max else (naive_max if naive_max >= r else 0)
        row = (f"{length:>6} {min(r, length):>6} | {t1 / length * 1e3:>12.3f} {length / t1:>10.0f} "
               f"{batch * length / tb:>16.0f} | ")
        if n_len:
            n_params = params if n_len == length else _random_params(net, n_len)
            tn, codes_naive = _timed(lambda p, k, lab, loc: wn.generate_naive(net, p, k, 1, n_len, lab, loc),
                                     (n_params, key, *cond(1, n_len)), 1)
            ms = tn / n_len * 1e3
            same = str(bool(np.array_equal(np.asarray(codes_fast), np.asarray(codes_naive)))) \
                if n_len == length else f"(T={n_len})"
            row += f"{ms:>13.3f} {1e3 / ms:>11.0f} | {ms / (t1 / length * 1e3):>7.1f} {same:>10}"
        else:
            row += f"{'skipped':>13} {'':>11} | {'':>7} {'':>10}"
        print(row, flush=True)


# ----------------------------------------------------------------------------- evaluation


def _smoothed_log2(counts: np.ndarray, alpha: float) -> np.ndarray:
    p = counts + alpha
    return np.log2(p / p.sum(-1, keepdims=True))


def baselines(train: dict, test: dict) -> dict:
    """Bits per sample on the test split of count models fitted on the train split."""
    tr = train["image"][:, :, 0, 0].astype(np.int64)
    te = test["image"][:, :, 0, 0].astype(np.int64)
    marg = _smoothed_log2(np.bincount(tr.ravel(), minlength=256).astype(np.float64), 0.5)
    out = {"iid_marginal": float(-marg[te].mean())}
    per_label = np.stack([np.bincount(tr[train["label"] == c].ravel(), minlength=256)
                          for c in range(len(signals.TIMBRES))]).astype(np.float64)
    lab = _smoothed_log2(per_label, 0.5)
    out["marginal_per_timbre"] = float(-lab[test["label"][:, None], te].mean())
    trans = np.zeros((256, 256))
    np.add.at(trans, (tr[:, :-1].ravel(), tr[:, 1:].ravel()), 1.0)
    mk = _smoothed_log2(trans, 0.1)
    bits = -marg[te[:, 0]].sum() - mk[te[:, :-1], te[:, 1:]].sum()
    out["markov1"] = float(bits / te.size)
    return out


def estimate_pitch(seg: np.ndarray) -> float:
    """Autocorrelation pitch (Hz) of a segment: the smallest lag in the 110-620 Hz range whose
    normalized autocorrelation is within 90% of the range's maximum (avoids octave-down errors)."""
    seg = seg - seg.mean()
    n = len(seg)
    ac = np.correlate(seg, seg, "full")[n - 1:] / (np.arange(n, 0, -1) * (seg @ seg / n) + 1e-12)
    lo, hi = int(signals.SAMPLE_RATE / 620), int(signals.SAMPLE_RATE / 110)
    best = ac[lo:hi + 1].max()
    lag = lo + int(np.flatnonzero(ac[lo:hi + 1] >= 0.9 * best)[0])
    if 0 < lag < len(ac) - 1:  # parabolic refinement
        a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
        den = a - 2 * b + c
        lag = lag + (0.5 * (a - c) / den if den < 0 else 0.0)
    return signals.SAMPLE_RATE / lag


def pitch_accuracy(waves: np.ndarray, local: np.ndarray) -> float:
    """Fraction of two-frame stretches of one sounding pitch id whose estimated pitch is within
    50 cents of it."""
    hits = total = 0
    hop = signals.HOP
    for w, lc in zip(waves, local):
        for f in range(len(lc) - 1):
            if lc[f] > 0 and lc[f + 1] == lc[f]:
                est = estimate_pitch(np.asarray(w[f * hop:(f + 2) * hop], np.float64))
                hits += abs(1200 * math.log2(est / float(signals.pitch_hz(lc[f])))) < 50
                total += 1
    return hits / max(total, 1)


def _write_wav(path: str, audio: np.ndarray) -> None:
    with wave.open(path, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(signals.SAMPLE_RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def evaluate(config: str, workdir: str, num_samples: int) -> None:
    from experiments import common
    from gen_jax.data.datasets import load_split
    from gen_jax.evaluation.likelihood import split_bpd
    from gen_jax.train.loop import eval_params

    exp = common.load_experiment(config)
    info, model, _ = common.setup(exp)
    if model.sampler is None or model.sampler.kind != "signal":
        common.fail(f"--config {config}: needs a model of 1-D signals (a wavenet)")
    state, _ = common.restore_state(exp, model, workdir, info)
    params = eval_params(state, model)
    train = load_split(exp.dataset.name, "train", common.data_dir(exp))
    test = load_split(exp.dataset.name, "test", common.data_dir(exp))
    t0 = time.time()
    res = {"step": int(state.step),
           "test_bits_per_sample": split_bpd(model, params, test, info, jax.random.PRNGKey(0), exp.eval.batch_size)}
    res["eval_seconds"] = round(time.time() - t0, 1)
    res["baselines_bits_per_sample"] = baselines(train, test)
    cond = {"label": test["label"][:num_samples], "local_cond": test["local_cond"][:num_samples]}
    sample = jax.jit(model.sampler.sample, static_argnums=2)
    jax.block_until_ready(sample(params, jax.random.PRNGKey(1), num_samples, cond))
    t0 = time.time()
    x = np.asarray(jax.block_until_ready(sample(params, jax.random.PRNGKey(2), num_samples, cond)))
    res["sample_seconds"] = round(time.time() - t0, 2)
    res["sample_audio_samples_per_second"] = round(x.shape[0] * x.shape[1] / (time.time() - t0))
    audio = np.asarray(model.sampler.render(x))
    real = mulaw.decode(test["image"][:num_samples, :, 0, 0].astype(np.int32))
    res["pitch_accuracy"] = {
        "samples": round(pitch_accuracy(audio, cond["local_cond"]), 3),
        "real_test_clips": round(pitch_accuracy(real, cond["local_cond"]), 3),
        "samples_vs_other_clips_pitch": round(pitch_accuracy(audio, np.roll(cond["local_cond"], 1, 0)), 3)}
    res["rms"] = {"samples": round(float(np.sqrt(np.mean(audio ** 2))), 4),
                  "real_test_clips": round(float(np.sqrt(np.mean(real ** 2))), 4)}
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "eval_samples.npy"), x)
    for i in range(min(4, num_samples)):
        name = f"eval_{i}_{signals.TIMBRES[cond['label'][i]]}.wav"
        _write_wav(os.path.join(out, name), audio[i])
    print(json.dumps(res))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive_max", type=int, default=2048,
                   help="above this T, time the naive step at T = naive_max (same cost once >= the receptive field)")
    p.add_argument("--eval_workdir", default="")
    p.add_argument("--config", default="experiments/configs/wavenet_signals.py")
    p.add_argument("--num_samples", type=int, default=32)
    args = p.parse_args(argv)
    if args.eval_workdir:
        evaluate(args.config, args.eval_workdir, args.num_samples)
    else:
        speed(args.lengths, args.batch, args.repeats, args.naive_max)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
