"""Checkpoints across topologies: a checkpoint saved by the train loop on a (4, 2) ('data',
'model') mesh with FSDP + tensor parallelism (leaves split over both axes) resumes through
the loop's restore path (``train()`` on the workdir, restoring onto the current mesh's
shardings) onto other meshes with bit-identical params and optimizer state:

* here (8 devices): onto (8, 1) (2-D -> 1-D) and (2, 4);
* in a subprocess with 4 CPU devices (8 -> 4): onto (4, 1) with FSDP only, onto (2, 2) with
  FSDP + TP, onto one device, and through ``experiments.common.restore_state`` (the
  sampling / evaluation path, always one device).

The model and config are :mod:`tests.train.multihost_worker`'s (tiny transformer LM).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

if __name__ == "__main__":  # the 4-device restore worker (see _restore_worker)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.train import multihost_worker as worker  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 240
SUBPROCESS_TARGETS = {"4x1_fsdp": ((4, 1), "fsdp"), "2x2_fsdp_tp": ((2, 2), "fsdp_tp"), "1x1": ((1, 1), "fsdp_tp")}


def _setup(shape, preset):
    """``(exp, info, model, mesh, stream)`` of the worker's config on a ``shape`` mesh (the
    ``config.mesh`` overrides a user would pass: a resume may change the mesh section)."""
    from experiments import common

    exp = worker.experiment({"mesh.shape": repr(tuple(shape)), "mesh.preset": preset,
                             "mesh.num_devices": str(int(np.prod(shape))), "train.sample_every": "0"})
    info, model, mesh = common.setup(exp)
    return exp, info, model, mesh, common.build_stream(exp, info, mesh)


def _resume(workdir, shape, preset):
    """The loop's resume of ``workdir`` onto a ``shape`` mesh (no step is run)."""
    from gen_jax.train.loop import train

    exp, info, model, mesh, stream = _setup(shape, preset)
    res = train(exp, model, str(workdir), stream, info, progress=False, mesh=mesh, stop_after=worker.CKPT_AT)
    assert res.resumed_from == worker.CKPT_AT
    return res.state


def flat(state) -> dict:
    """``{leaf path: numpy array}`` of the params and the optimizer state."""
    import jax

    leaves = jax.tree_util.tree_leaves_with_path({"params": state.params, "opt_state": state.opt_state})
    return {jax.tree_util.keystr(p): np.asarray(jax.device_get(v)) for p, v in leaves}


def specs(state) -> dict:
    import jax

    return {jax.tree_util.keystr(p): (tuple(v.sharding.spec), len(v.sharding.device_set))
            for p, v in jax.tree_util.tree_leaves_with_path(state.params)}


@pytest.fixture(scope="module")
def saved(tmp_path_factory, digits_data_dir):
    """Three steps of the loop on a (4, 2) mesh; the step-3 checkpoint in ``workdir``."""
    from gen_jax.train.loop import train

    wd = tmp_path_factory.mktemp("topology") / "wd"
    exp, info, model, mesh, stream = _setup((4, 2), "fsdp_tp")
    res = train(exp, model, str(wd), stream, info, progress=False, mesh=mesh, stop_after=worker.CKPT_AT)
    assert int(res.state.step) == worker.CKPT_AT
    sp = specs(res.state)
    assert any("data" in s and "model" in s for s, _ in sp.values()), sp   # split over both axes
    ref = flat(res.state)
    np.savez(wd.parent / "ref.npz", **ref)
    return wd, ref


def _assert_equal(got: dict, ref: dict):
    assert sorted(got) == sorted(ref) and len(ref) > 10
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_checkpoint_records_its_topology(saved):
    from gen_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(str(saved[0] / "checkpoints"), create=False)
    try:
        meta = ckpt.read_meta(worker.CKPT_AT)
    finally:
        ckpt.close()
    assert meta["topology"] == {"mesh": {"data": 4, "model": 2}, "devices": 8, "processes": 1}


@pytest.mark.parametrize("shape, preset", [((8, 1), "fsdp"), ((2, 4), "fsdp_tp")])
def test_resume_onto_another_mesh_here(saved, shape, preset, capsys):
    wd, ref = saved
    state = _resume(wd, shape, preset)
    out = capsys.readouterr().out
    assert (f"written on 8 devices (data 4 x model 2), 1 process(es), onto 8 devices "
            f"(data {shape[0]} x model {shape[1]})") in out, out
    assert "config.mesh.shape: [4, 2] -> " in out or "config.mesh.shape: (4, 2) -> " in out, out
    _assert_equal(flat(state), ref)
    sp = specs(state)
    assert all(n == 8 for _, n in sp.values())
    assert any(("model" in s) == (shape[1] > 1) and "data" in s for s, _ in sp.values())
    if shape[1] == 1:
        assert not any("model" in s for s, _ in sp.values())


@pytest.mark.slow
def test_resume_onto_four_devices_and_one(saved):
    wd, ref = saved
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO,
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace("device_count=8", "device_count=4"))
    out = wd.parent / "restored"
    p = subprocess.run([sys.executable, os.path.abspath(__file__), str(wd), str(out)], env=env, cwd=REPO,
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0, p.stderr[-3000:]
    for name, (shape, _) in list(SUBPROCESS_TARGETS.items()) + [("restore_state", ((1, 1), ""))]:
        got = np.load(out / f"{name}.npz")
        _assert_equal({k: got[k] for k in got.files}, ref)
        devices = np.load(out / f"{name}.devices.npy")
        assert devices.min() == devices.max() == int(np.prod(shape)), (name, devices)


def _restore_worker(workdir: str, out: str) -> None:
    """In a 4-device process: each target's restored arrays to ``out/<name>.npz`` and the
    device count of each params leaf to ``out/<name>.devices.npy``."""
    import jax

    from experiments import common

    assert jax.device_count() == 4, jax.devices()
    os.makedirs(out, exist_ok=True)

    def dump(name, state):
        np.savez(os.path.join(out, f"{name}.npz"), **flat(state))
        np.save(os.path.join(out, f"{name}.devices.npy"), np.array([n for _, n in specs(state).values()]))

    for name, (shape, preset) in SUBPROCESS_TARGETS.items():
        dump(name, _resume(workdir, shape, preset))
    exp, info, model, _, _ = _setup((1, 1), "fsdp_tp")
    state, _ = common.restore_state(exp, model, workdir, info)
    dump("restore_state", state)


if __name__ == "__main__":
    _restore_worker(sys.argv[1], sys.argv[2])
