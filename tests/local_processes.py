"""Local multi-process test runs: a free localhost port, and worker scripts run as one
process each on it (``jax.distributed`` over gloo), never left running."""
import socket
import subprocess
import sys


def free_port() -> int:
    """A localhost TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: str, args_per_process, *, env: dict, cwd, timeout: float = 120) -> list[str]:
    """Runs ``python -c script *args`` once per entry of ``args_per_process`` at the same time,
    asserts each exits 0 and prints ``OK``, and returns their stdouts; every process still alive
    at the end (a failure or a timeout) is killed."""
    procs = [subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in args_per_process]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0 and "OK" in out, err[-3000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs
