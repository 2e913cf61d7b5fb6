"""Multi-process acceptance: two processes x 4 fake CPU devices on localhost, launched with
the launcher's flags (``--coordinator/--num_processes/--process_id``, gloo collectives),
train the tiny transformer LM of :mod:`tests.train.multihost_worker` on one (4, 2) ('data',
'model') mesh with FSDP + tensor parallelism exactly as one process with 8 devices does:
same losses and params after 3 steps, each process reading a disjoint shard of every global
batch, the step-3 checkpoint written by both processes (and restored here, in one process).
Then process 1 is SIGKILLed while process 0 waits in step 4's collectives: process 0 must
exit non-zero with a clear message within ``KILL_EXIT_S``. Meanwhile a second pair (no model,
``--probe``), launched only by a SLURM job step's environment (``--cluster auto``), checks the
other failure: a peer frozen by SIGSTOP (a hung host, connections left open) is declared dead
by the heartbeats and the other process aborts within ``FROZEN_EXIT_S``. The train step compiled with the global shardings is checked on a pretend
two-host layout of this session's 8 devices, and the launch settings' validation in-process
(:func:`gen_jax.train.distributed.resolve`).

Hard limits: every subprocess is killed after ``TIMEOUT_S``; ports are free ports.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gen_jax.train import distributed as dist
from gen_jax.train.distributed import LaunchError
from tests.local_processes import free_port
from tests.train import multihost_worker as worker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(REPO, "tests", "train", "multihost_worker.py")
TIMEOUT_S = 240        # hard limit on any worker
HEARTBEAT_S = 10       # the workers' --heartbeat_timeout
KILL_EXIT_S = HEARTBEAT_S + 20   # process 0 must be gone this long after process 1's SIGKILL
FROZEN_HEARTBEAT_S = 4           # the probe workers' --heartbeat_timeout
FROZEN_EXIT_S = FROZEN_HEARTBEAT_S + 25   # ... and after a probe process 1's SIGSTOP
# One process sums the 8 devices' gradients in one order; two processes all-reduce over gloo
# in another: float32 round-off (~1e-7 relative), carried through 3 SGD-momentum steps.
RTOL, ATOL = 1e-5, 1e-7


def subprocess_env(devices: int, data_dir) -> dict:
    """This session's environment with ``devices`` fake CPU devices (other XLA flags kept)."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, GEN_JAX_DATA_DIR=str(data_dir),
               XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}".strip())
    for k in list(env):
        if k.startswith(("GEN_JAX_CLUSTER", "GEN_JAX_COORDINATOR", "GEN_JAX_NUM_PROCESSES", "GEN_JAX_PROCESS_ID",
                         "SLURM_", "JAX_COORDINATOR")):
            env.pop(k)
    return env


def _wait_for(path, text, procs, deadline):
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        for p, log in procs:
            if p.poll() is not None:
                raise AssertionError(f"worker exited early with {p.returncode}:\n{open(log).read()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {path} within the deadline")


def reference(exp, model, mesh, stream):
    """One process, 8 devices: the train step compiled ahead of time with the global
    shardings (abstract inputs), then run for ``CKPT_AT`` steps from the loop's init.
    Returns ``(compiled, state_shardings, batch_sharding, losses, state)``."""
    from gen_jax.train import sharding as shd
    from gen_jax.train.loop import _with_shardings, init_state
    from gen_jax.train.step import make_train_step

    batch_sh = shd.batch_sharding(mesh)
    phases, optimizers, abstract, state_sh, init_fn = init_state(exp, model, stream.batch_at(0), mesh, batch_sh)
    step = make_train_step(phases, optimizers, state_sharding=state_sh, batch_sharding=batch_sh,
                           frozen_sharding=shd.replicated(mesh))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh) for k, v in stream.batch_at(0).items()}
    compiled = step.lower(_with_shardings(abstract, state_sh), (batch,), {}).compile()
    state, losses = init_fn(stream.batch_at(0)), []
    for s in range(worker.CKPT_AT):
        state, metrics = compiled(state, (stream.batch_at(s),), {})
        losses.append(float(metrics["loss"]))
    return compiled, state_sh, batch_sh, losses, state


def _spawn(tmp, tag, args, env):
    """A worker process with stdout/stderr in ``tmp/<tag>.out|err``; ``(Popen, err path)``."""
    out, err = tmp / f"{tag}.out", tmp / f"{tag}.err"
    p = subprocess.Popen([sys.executable, WORKER, "--config", worker.CONFIG, *args], stdout=open(out, "w"),
                         stderr=open(err, "w"), env=env, cwd=REPO)
    return p, str(err)


def _launch_flags(port, i, heartbeat, shutdown):
    return ["--coordinator", f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i),
            "--init_timeout", "120", "--heartbeat_timeout", str(heartbeat), "--shutdown_timeout", str(shutdown)]


def _stop_and_time(procs, tmp, prefix, ready, sig, within, deadline) -> dict:
    """Waits for ``ready`` = ``[(tag, text)]`` in the workers' outputs, sends ``sig`` to process
    1 of the ``prefix`` workers, and times process 0's exit (``rc`` None: still running after
    ``within`` s); returns its exit code, the seconds, its stderr and stdout."""
    for tag, text in ready:
        _wait_for(tmp / f"{tag}.out", text, procs, deadline)
    assert procs[0][0].poll() is None, open(procs[0][1]).read()[-3000:]
    t0 = time.time()
    procs[1][0].send_signal(sig)
    try:
        rc = procs[0][0].wait(timeout=within)
    except subprocess.TimeoutExpired:
        rc = None
    return dict(rc=rc, seconds=time.time() - t0, err=open(procs[0][1]).read(),
                out=open(tmp / f"{prefix}0.out").read())


def _kill_all(procs):
    for p, _ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_data_dir):
    """Starts the two training workers and the two probe workers; while this process computes
    the one-process reference, a thread freezes probe process 1 (SIGSTOP) and times probe
    process 0's exit; then training process 1 is killed at its stall (SIGKILL) and training
    process 0's exit is timed."""
    import threading

    from experiments import common
    from gen_jax.train import sharding as shd

    tmp = tmp_path_factory.mktemp("multihost")
    wd, env, deadline = tmp / "wd", subprocess_env(4, digits_data_dir), time.time() + TIMEOUT_S
    port, probe_port = free_port(), free_port()
    trainers, probes, frozen = [], [], {}
    try:
        for i in range(2):
            trainers.append(_spawn(tmp, f"train{i}", ["--workdir", str(wd), "--record", str(tmp / f"record{i}.jsonl"),
                                                      *_launch_flags(port, i, HEARTBEAT_S, 10)]
                                   + (["--stall_at", str(worker.CKPT_AT)] if i == 1 else []), env))
        # The probes run as a SLURM job step would on one node (the environment srun gives its
        # tasks, no launch flags): --cluster auto must detect SLURM and JAX find the rest.
        slurm = dict(env, SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2",
                     JAX_COORDINATOR_PORT=str(probe_port))
        for i in range(2):
            probes.append(_spawn(tmp, f"probe{i}", ["--probe", "--workdir", str(tmp), "--init_timeout", "120",
                                                    "--heartbeat_timeout", str(FROZEN_HEARTBEAT_S),
                                                    "--shutdown_timeout", "5"],
                                 dict(slurm, SLURM_PROCID=str(i), SLURM_LOCALID=str(i))))

        def freeze():
            try:
                frozen.update(_stop_and_time(probes, tmp, "probe", [("probe1", "READY"), ("probe0", "WAITING")],
                                             signal.SIGSTOP, FROZEN_EXIT_S, deadline))
            except BaseException as e:  # reported by the test
                frozen["error"] = repr(e)

        thread = threading.Thread(target=freeze, daemon=True)
        thread.start()

        exp = worker.experiment()
        info, model, mesh = common.setup(exp)
        stream = common.build_stream(exp, info, mesh)
        compiled, state_sh, batch_sh, losses, state = reference(exp, model, mesh, stream)

        killed = _stop_and_time(trainers, tmp, "train", [("train1", "STALLED")], signal.SIGKILL, KILL_EXIT_S, deadline)
        thread.join(timeout=max(1.0, deadline - time.time()))
    finally:
        _kill_all(trainers + probes)
    probe_out = [(open(tmp / f"probe{i}.out").read(), open(tmp / f"probe{i}.err").read()) for i in range(2)]
    print(f"after SIGKILL of its peer, process 0 exited with {killed['rc']} in {killed['seconds']:.2f} s; "
          f"after SIGSTOP, with {frozen.get('rc')} in {frozen.get('seconds', float('nan')):.2f} s "
          f"(heartbeat timeout {FROZEN_HEARTBEAT_S} s)")
    return dict(tmp=tmp, wd=wd, exp=exp, model=model, mesh=mesh, stream=stream, compiled=compiled,
                state_sh=state_sh, batch_sh=batch_sh, losses=losses, state=state, killed=killed, frozen=frozen,
                probes=probe_out)


def _records(path):
    recs = {}
    for line in open(path):
        r = json.loads(line)
        recs[r["step"]] = r   # batch 0 is read twice (the example batch), identically
    return recs


def test_two_processes_train_like_one_with_eight_devices(runs):
    from gen_jax.train import sharding as shd
    from gen_jax.train.checkpoint import Checkpointer
    from gen_jax.train.loop import _with_shardings, init_state

    mp_metrics = [json.loads(l) for l in open(runs["wd"] / "metrics.jsonl")]
    assert [m["step"] for m in mp_metrics] == [1, 2, 3]
    np.testing.assert_allclose([m["loss"] for m in mp_metrics], runs["losses"], rtol=RTOL)
    assert runs["losses"][-1] < runs["losses"][0]

    # The step-3 checkpoint both processes wrote, restored in this one process onto the same mesh.
    exp, model, mesh, stream = runs["exp"], runs["model"], runs["mesh"], runs["stream"]
    _, _, abstract, state_sh, _ = init_state(exp, model, stream.batch_at(0), mesh, shd.batch_sharding(mesh))
    ckpt = Checkpointer(str(runs["wd"] / "checkpoints"), create=False)
    try:
        state, meta = ckpt.restore(_with_shardings(abstract, state_sh), step=worker.CKPT_AT)
    finally:
        ckpt.close()
    assert int(state.step) == int(runs["state"].step) == worker.CKPT_AT
    assert meta["topology"] == {"mesh": {"data": 4, "model": 2}, "devices": 8, "processes": 2}
    ref_leaves = jax.tree_util.tree_leaves_with_path((runs["state"].params, runs["state"].opt_state))
    mp_leaves = jax.tree.leaves((state.params, state.opt_state))
    assert len(ref_leaves) == len(mp_leaves) > 10
    for (path, a), b in zip(ref_leaves, mp_leaves):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=RTOL, atol=ATOL,
                                   err_msg=jax.tree_util.keystr(path))
    # The mesh really is 2-D with tensor-parallel and FSDP leaves across both processes.
    specs = {str(s.spec) for s in jax.tree.leaves(state_sh.params)}
    assert any("model" in s and "data" in s for s in specs), specs


def test_each_process_reads_a_disjoint_shard_of_every_batch(runs):
    """The record keys each process fetched from the array_record source for batch s are
    disjoint, their union (in row order) is global batch s of the one-process reader, and
    the rows on each process's devices are that batch's rows."""
    r0, r1 = _records(runs["tmp"] / "record0.jsonl"), _records(runs["tmp"] / "record1.jsonl")
    b = runs["exp"].train.batch_size
    assert sorted(r1) == [0, 1, 2] and sorted(r0)[:3] == [0, 1, 2]   # process 1 stalled before batch 3
    for step in range(worker.CKPT_AT):
        a, c = r0[step], r1[step]
        assert a["rows"] == [0, b // 2] and c["rows"] == [b // 2, b]
        assert len(a["read"]) == len(c["read"]) == b // 2            # each read only its half
        assert not set(a["read"]) & set(c["read"])
        np.testing.assert_array_equal(a["read"] + c["read"], runs["stream"].indices_at(step))
        batch = runs["stream"].batch_at(step)                          # one process reads it all
        np.testing.assert_array_equal(a["labels"] + c["labels"], np.asarray(batch["label"]))
        np.testing.assert_allclose(a["image_sums"] + c["image_sums"],
                                   np.asarray(batch["image"]).reshape(b, -1).sum(1), rtol=1e-6)


def test_sample_grid_is_drawn_by_every_process_and_written_once(runs):
    """Sampling a model sharded over both processes is collective: both call it (else process
    0 would wait forever in its gathers), process 0 writes the grid, and both then train on."""
    assert (runs["wd"] / "samples" / f"grid_{worker.CKPT_AT:07d}.png").stat().st_size > 100
    assert worker.CKPT_AT in _records(runs["tmp"] / "record0.jsonl")   # process 0 went on to batch 3


def test_checkpoint_is_written_by_every_process(runs):
    state_dir = runs["wd"] / "checkpoints" / str(worker.CKPT_AT) / "state"
    for i in range(2):  # orbax (OCDBT): each process writes the shards it owns into its own store
        d = state_dir / f"ocdbt.process_{i}"
        assert d.is_dir() and any(f.stat().st_size > 0 for f in d.rglob("*") if f.is_file()), sorted(os.listdir(state_dir))


def test_killed_process_fails_the_other_with_a_clear_message(runs):
    k = runs["killed"]
    assert k["rc"] is not None, f"process 0 still ran {KILL_EXIT_S} s after process 1 was killed (hang)"
    assert k["rc"] != 0 and k["seconds"] < KILL_EXIT_S
    # Either gloo sees the closed connection (our one-line error, exit code 3), or the
    # coordination service misses the dead process's heartbeats (JAX's fatal message, SIGABRT).
    assert ("another process of this run most likely died" in k["err"]
            or "JAX distributed service detected fatal errors" in k["err"]), k["err"][-3000:]


def test_frozen_process_is_declared_dead_by_heartbeats(runs):
    """A peer that stops without closing its connections (SIGSTOP: a hung host) leaves the
    collective waiting; the coordination service misses its heartbeats and process 0 aborts
    with JAX's message within the heartbeat timeout plus slack, instead of hanging."""
    f = runs["frozen"]
    assert "error" not in f, f.get("error")
    assert f["rc"] is not None, f"probe process 0 still waited {FROZEN_EXIT_S} s after its peer froze (hang)"
    assert f["rc"] != 0 and f["seconds"] < FROZEN_EXIT_S
    assert "JAX distributed service detected fatal errors" in f["err"] and "heartbeat" in f["err"], f["err"][-3000:]
    assert f["out"].count('"sum": 8.0') == 1 and "WAITING" in f["out"]   # the second sum never finished


def test_slurm_step_is_detected_and_launched(runs):
    """The probe processes got only the environment srun gives its tasks (one node,
    ``localhost``) and no launch flags: ``--cluster auto`` picked SLURM and JAX found the
    coordinator, the count and the ids."""
    for i, (out, err) in enumerate(runs["probes"]):
        rec = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        assert rec == {"cluster": "slurm", "process": i, "processes": 2, "devices": 8, "sum": 8.0}, err[-3000:]
        assert f"process {i} of 2 (slurm) connecting" in err


def test_pretend_two_hosts_layout_compiles_with_the_global_shardings(runs):
    """What a pod runs and this machine cannot: 8 devices as 2 pretend hosts x 4 (devices
    0-3, 4-7, the order one process per host gives). The (4, 2) mesh keeps every 'model' row
    inside one host (tensor parallelism never crosses hosts), each host owns a contiguous
    block of 'data' rows and so of the batch (what BatchStream requires of a process), and the
    train step compiled with the global shardings keeps them on its inputs and outputs."""
    mesh, compiled = runs["mesh"], runs["compiled"]
    host = {d: d.id // 4 for d in jax.devices()}
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    assert all(len({host[d] for d in row}) == 1 for row in mesh.devices)
    b = runs["exp"].train.batch_size
    rows = {h: set() for h in (0, 1)}
    for d, idx in runs["batch_sh"].devices_indices_map((b,)).items():
        rows[host[d]].update(range(*idx[0].indices(b)))
    assert rows == {0: set(range(b // 2)), 1: set(range(b // 2, b))}

    (state_in, batches_in, _), _ = compiled.input_shardings
    state_out, _ = compiled.output_shardings
    for want, got_in, got_out, leaf in zip(jax.tree.leaves(runs["state_sh"]), jax.tree.leaves(state_in),
                                           jax.tree.leaves(state_out), jax.tree.leaves(runs["state"])):
        assert got_in.is_equivalent_to(want, leaf.ndim) and got_out.is_equivalent_to(want, leaf.ndim), \
            (want.spec, got_in, got_out)
    assert batches_in[0]["image"].is_equivalent_to(runs["batch_sh"], 4)   # (the LM ignores 'label': pruned)
    split = [s.spec for s in jax.tree.leaves(runs["state_sh"].params)]
    assert any("model" in p and "data" in p for p in split) and any(p == jax.sharding.PartitionSpec() for p in split)
    hlo = compiled.as_text()
    assert "all-reduce" in hlo or "reduce-scatter" in hlo          # gradient reduction over 'data'
    assert "all-gather" in hlo                                    # FSDP gathers of the params


@pytest.mark.parametrize("hosts, per_host, shape", [(4, 2, (4, 2)), (2, 4, (2, 4)), (8, 1, (8, 1))])
def test_pretend_pod_layouts_keep_model_rows_on_one_host(hosts, per_host, shape):
    """The mesh of ``hosts`` pretend hosts x ``per_host`` devices: every 'model' row on one host
    and each host's 'data' rows contiguous, whenever the model size divides the devices per host."""
    from gen_jax.train import sharding as shd

    mesh = shd.make_mesh(0, shape)
    host = {d: d.id // per_host for d in jax.devices()}
    assert all(len({host[d] for d in row}) == 1 for row in mesh.devices)
    first_rows = [min(i for i, row in enumerate(mesh.devices) if host[row[0]] == h) for h in range(hosts)]
    assert first_rows == sorted(first_rows) and len(set(first_rows)) == hosts


# ----------------------------------------------------------------------------- launch settings


def test_manual_launch_from_flags_and_env():
    spec = dist.resolve(coordinator="10.0.0.1:1234", num_processes=4, process_id=3, env={})
    assert (spec.cluster, spec.coordinator, spec.num_processes, spec.process_id) == ("manual", "10.0.0.1:1234", 4, 3)
    kw = spec.jax_kwargs()
    assert kw["coordinator_address"] == "10.0.0.1:1234" and kw["cluster_detection_method"] == "deactivate"
    env = {"GEN_JAX_COORDINATOR": "h:5", "GEN_JAX_NUM_PROCESSES": "2", "GEN_JAX_PROCESS_ID": "1"}
    assert dist.resolve(env=env).process_id == 1
    assert dist.resolve(process_id=0, env=env).process_id == 0          # the flag wins
    assert dist.resolve(env={}, tpu_detected=lambda: False).cluster == "none"


@pytest.mark.parametrize("kw, env, match", [
    (dict(num_processes=2, process_id=2, coordinator="h:1"), {}, r"--process_id / GEN_JAX_PROCESS_ID = 2 .*0 \.\. 1"),
    (dict(num_processes=2, process_id=0), {}, r"--coordinator / GEN_JAX_COORDINATOR: a multi-process run needs"),
    (dict(coordinator="h:1", process_id=0), {}, r"--num_processes / GEN_JAX_NUM_PROCESSES: not set"),
    (dict(coordinator="h:1", num_processes=2), {}, r"--process_id / GEN_JAX_PROCESS_ID: not set"),
    (dict(coordinator="h", num_processes=2, process_id=0), {}, r"--coordinator .*expected host:port"),
    (dict(), {"GEN_JAX_NUM_PROCESSES": "two"}, r"GEN_JAX_NUM_PROCESSES='two': expected an integer"),
    (dict(cluster="slurm"), {}, r"--cluster slurm: SLURM_JOB_ID.* not set"),
    (dict(cluster="none", num_processes=2), {}, r"--cluster none is one process"),
    (dict(cluster="mpi"), {}, r"--cluster / GEN_JAX_CLUSTER: unknown cluster 'mpi'"),
    (dict(heartbeat_timeout=0), {}, r"--heartbeat_timeout"),
])
def test_inconsistent_launch_settings_name_the_flag(kw, env, match):
    with pytest.raises(LaunchError, match=match):
        dist.resolve(env=env, tpu_detected=lambda: False, **kw)


def test_cluster_auto_detection():
    slurm = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[01-04]", "SLURM_NTASKS": "4",
             "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    spec = dist.resolve(env=slurm, tpu_detected=lambda: False)
    assert spec.cluster == "slurm" and spec.jax_kwargs()["cluster_detection_method"] == "slurm"
    assert "coordinator_address" not in spec.jax_kwargs()   # JAX derives it from the node list
    assert dist.resolve(env=dict(slurm, SLURM_NTASKS="1"), tpu_detected=lambda: False).cluster == "none"
    assert dist.resolve(coordinator="n:9", num_processes=4, process_id=2, env=slurm).cluster == "manual"
    tpu = dist.resolve(env={}, tpu_detected=lambda: True, heartbeat_timeout=30)
    assert tpu.cluster == "tpu" and tpu.jax_kwargs() == dict(
        initialization_timeout=300, heartbeat_timeout_seconds=30, shutdown_timeout_seconds=300)


def test_unreachable_coordinator_is_a_clear_error():
    with pytest.raises(LaunchError, match=r"no coordinator answered within .*is process 0 running"):
        dist.wait_for_coordinator(f"127.0.0.1:{free_port()}", timeout=0.5, poll=0.1)


def test_peer_failure_is_recognised():
    e = jax.errors.JaxRuntimeError("UNKNOWN: Gloo AllGather failed: [pair.cc:547] Connection closed by peer [x]:1")
    assert dist.peer_failure(e).startswith("UNKNOWN: Gloo AllGather failed")
    assert dist.peer_failure(jax.errors.JaxRuntimeError("INVALID_ARGUMENT: bad shape")) is None
    assert dist.peer_failure(RuntimeError("Connection closed by peer")) is None


def test_cli_names_the_missing_flag(capsys, tmp_path):
    from experiments import train as train_cli

    with pytest.raises(SystemExit) as e:
        train_cli.main(["--config", "classifier_digits", "--workdir", str(tmp_path), "--num_processes", "2",
                        "--process_id", "1"])
    assert e.value.code == 2
    assert "--coordinator / GEN_JAX_COORDINATOR" in capsys.readouterr().err
