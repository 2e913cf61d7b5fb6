"""Two processes on localhost (2 CPU devices each) form one 4-device mesh; their data-parallel
run, each process feeding only its slice of every global batch, matches one process with 4
devices."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices, data_dir):
    env = dict(os.environ)
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=REPO, GEN_JAX_DATA_DIR=str(data_dir))
    return env


def _result(out):
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


@pytest.mark.slow
def test_two_processes_match_one(digits_data_dir):
    worker = os.path.join(REPO, "tests", "train", "mp_worker.py")
    single = subprocess.run([sys.executable, worker, "0", "1", "0"], env=_env(4, digits_data_dir),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", str(port)], env=_env(2, digits_data_dir),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            outs.append(_result(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ref = _result(single.stdout)
    assert ref["devices"] == 4 and all(o["devices"] == 4 for o in outs)
    # Cross-process all-reduce (gloo) sums in another order than one process: float32
    # round-off, amplified a little by Adam's normalisation, stays below 1e-4 relative.
    for o in outs:
        np.testing.assert_allclose(o["losses"], ref["losses"], rtol=1e-4)
        np.testing.assert_allclose(o["w_sum"], ref["w_sum"], rtol=1e-4)
    assert ref["losses"][-1] < ref["losses"][0]
