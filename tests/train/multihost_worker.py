"""One process of tests/train/test_multihost.py: the library's train loop under the launcher's
flags (``experiments.train`` ``--coordinator/--num_processes/--process_id``), on a tiny
transformer LM over a (4, 2) ('data', 'model') mesh with FSDP + tensor parallelism.

    python tests/train/multihost_worker.py --config image_transformer_digits --workdir W \
        --record R.jsonl [--stall_at S] [launch flags]

The data come from the streaming record reader (``config.dataset.reader = 'records'``,
:mod:`gen_jax.data.records`), which reads only this process's rows of each global batch.
Every batch the loop asks for is recorded to ``--record`` as one JSON line: the step, this
process's rows of the global batch, the record keys the reader fetched from the
``array_record`` source for it (a proxy of the source sees every read), and the labels and
per-row image sums on this process's devices. With ``--stall_at S`` the process, when asked
for batch ``S``, waits for the checkpoint before it to be committed, prints ``STALLED`` and
sleeps (the test then kills it while the others wait in step ``S + 1``'s collectives). A sample
grid is drawn at step 3 (collective: every process samples, process 0 writes it).
``--probe``: no model, see :func:`probe`.
"""
from __future__ import annotations

import json
import os
import sys
import time

if __name__ == "__main__":  # run as a script: the repository on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np

CONFIG = "image_transformer_digits"
STEPS, CKPT_AT = 4, 3   # the schedule is constant, so the 4-step config trains steps 1-3 like a 3-step one
# SGD with momentum: float32 round-off of another summation order stays round-off (Adam's
# normalised step turns a differing gradient entry near 0 into a difference of up to 2 lr).
OVERRIDES = {"model.num_layers": "1", "model.d_model": "32", "model.num_heads": "4", "model.dropout": "0.0",
             "optim.name": "sgd", "optim.momentum": "0.9", "optim.learning_rate": "0.3",
             "optim.schedule": "constant", "optim.warmup_steps": "0", "optim.weight_decay": "0.0",
             "train.batch_size": "16", "train.steps": str(STEPS), "train.log_every": "1",
             "train.ckpt_every": str(CKPT_AT), "train.sample_every": str(CKPT_AT), "train.grid_size": "4",
             "train.keep_checkpoints": "1", "train.eval_every": "0", "dataset.reader": "records", "dataset.prefetch": "0",
             "mesh.shape": "(4, 2)", "mesh.preset": "fsdp_tp", "mesh.fsdp_min_size": "64"}


def experiment(extra: dict | None = None):
    """The worker's config: the tiny LM, FSDP + TP on a (4, 2) mesh."""
    from experiments import common

    return common.load_experiment(CONFIG, {**OVERRIDES, **(extra or {})})


def local_rows(batch_array) -> tuple[int, int]:
    """``[lo, hi)``: the rows of the global batch on this process's devices (from the shards)."""
    n = batch_array.shape[0]
    spans = {(s.index[0].start or 0, n if s.index[0].stop is None else s.index[0].stop)
             for s in batch_array.addressable_shards}
    return min(a for a, _ in spans), max(b for _, b in spans)


def local_values(batch_array) -> np.ndarray:
    """This process's rows of a global batch array, in batch order."""
    out = {}
    for s in batch_array.addressable_shards:
        out[s.index[0].start or 0] = np.asarray(s.data)
    return np.concatenate([out[k] for k in sorted(out)])


class RecordingSource:
    """A record source that remembers the keys read through it (everything else delegated)."""

    def __init__(self, source):
        self._source, self.read = source, []

    def __len__(self):
        return len(self._source)

    def __getitem__(self, key):
        self.read.append(int(key))
        return self._source[key]

    def __getitems__(self, keys):
        self.read.extend(int(k) for k in keys)
        return self._source.__getitems__(keys)

    def __getattr__(self, name):
        return getattr(self._source, name)


class RecordingStream:
    """A batch stream that records what this process read (everything else delegated)."""

    def __init__(self, stream, record: str, stall_at: int, ckpt_dir: str):
        self._stream, self._record, self._stall_at, self._ckpt_dir = stream, record, stall_at, ckpt_dir
        self._source = stream.source = RecordingSource(stream.source)

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def batch_at(self, step: int):
        if step == self._stall_at:
            self._stall(step)
        self._source.read = []
        batch = self._stream.batch_at(step)
        lo, hi = local_rows(batch["label"])
        labels = local_values(batch["label"])
        sums = local_values(batch["image"]).reshape(hi - lo, -1).sum(1)
        with open(self._record, "a") as f:
            f.write(json.dumps({"step": step, "rows": [lo, hi], "read": self._source.read,
                                "labels": labels.tolist(), "image_sums": sums.tolist()}) + "\n")
        return batch

    def _stall(self, step: int):
        want = os.path.join(self._ckpt_dir, str(step))
        t0 = time.time()
        while not os.path.isdir(want):  # the async save of step `step` committed by every process
            if time.time() - t0 > 120:
                sys.exit(f"worker: checkpoint {want} never appeared")
            time.sleep(0.1)
        print("STALLED", flush=True)
        time.sleep(3600)


def probe(spec) -> int:
    """``--probe``: no model. Prints the launch (cluster, process, devices) with one global sum
    over all devices; process 1 then prints ``READY`` and sleeps, so process 0 waits in a
    second sum's collective (the test freezes process 1 with SIGSTOP: only the heartbeats can
    tell process 0)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.ones(jax.local_device_count()),
                                               (jax.device_count(),))
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))
    print(json.dumps({"cluster": spec.cluster, "process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "sum": float(total(x))}), flush=True)
    if jax.process_index() == 1:
        print("READY", flush=True)
        time.sleep(3600)
    time.sleep(1.0)
    print("WAITING", flush=True)
    print(json.dumps({"sum": float(total(x))}), flush=True)
    return 0


def main(argv=None) -> int:
    from experiments import common
    from experiments import train as train_cli

    p = train_cli.parser()
    p.add_argument("--record", default="")
    p.add_argument("--stall_at", type=int, default=-1)
    p.add_argument("--probe", action="store_true", help="no training: see probe()")
    args, overrides = common.parse_args(p, argv)
    if args.probe:
        return probe(train_cli.launch(args))
    exp = experiment(overrides)
    spec = train_cli.launch(args)  # before anything touches a device

    import jax

    from gen_jax.train.distributed import exit_on_peer_failure
    from gen_jax.train.loop import train

    info, model, mesh = common.setup(exp)
    stream = RecordingStream(common.build_stream(exp, info, mesh), args.record, args.stall_at,
                             os.path.join(args.workdir, "checkpoints"))
    try:
        res = train(exp, model, args.workdir, stream, info, progress=False, mesh=mesh)
    except Exception as e:  # as experiments.train does
        exit_on_peer_failure(e, spec)
        raise
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "devices": jax.device_count(), "steps": int(res.state.step)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
