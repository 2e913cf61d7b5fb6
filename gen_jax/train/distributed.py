"""Multi-process launch: ``jax.distributed`` initialization from flags and environment variables.

One training program runs as one process per host (or per accelerator group); every process
runs the same command, and :func:`initialize` joins them into one JAX runtime whose
``jax.devices()`` spans all hosts (the mesh of :mod:`gen_jax.train.sharding` then covers the
whole pod). Call it before anything touches a JAX device.

Clusters (``cluster``, flag ``--cluster``, env ``GEN_JAX_CLUSTER``):

* ``'tpu'``: a Cloud TPU pod slice (GCE TPU VM or GKE). ``jax.distributed.initialize()``
  finds the coordinator, process count and id from the TPU metadata; run the same command on
  every worker (``gcloud compute tpus tpu-vm ssh ... --worker=all --command=...``).
* ``'slurm'``: a SLURM job step (``srun``): coordinator = the first node of
  ``SLURM_STEP_NODELIST`` (port from ``SLURM_JOB_ID`` unless ``JAX_COORDINATOR_PORT``), count
  ``SLURM_NTASKS``, id ``SLURM_PROCID``; on GPUs each task sees one GPU (``SLURM_LOCALID``).
* ``'manual'``: explicit multi-GPU hosts or a localhost test: ``coordinator`` (``host:port``
  of process 0), ``num_processes`` and ``process_id`` from the flags, else from
  ``GEN_JAX_COORDINATOR`` / ``GEN_JAX_NUM_PROCESSES`` / ``GEN_JAX_PROCESS_ID`` (the
  coordinator also from JAX's own ``JAX_COORDINATOR_ADDRESS``).
* ``'none'``: one process, no initialization.
* ``'auto'`` (default): ``'manual'`` if a coordinator or more than one process is given,
  else ``'slurm'`` inside a SLURM step of more than one task, else ``'tpu'`` on a Cloud TPU
  VM, else ``'none'``.

Explicit values (flags, then ``GEN_JAX_*``) override what a cluster detects. Inconsistent
settings (``process_id >= num_processes``, a missing coordinator, a malformed address,
``--cluster slurm`` outside SLURM) raise :class:`LaunchError` naming the flag and the
environment variable.

Timeouts (JAX's ``jax.distributed.initialize`` arguments): ``init_timeout`` bounds how long
the processes wait for each other at start; ``heartbeat_timeout`` is the failure detection:
a process that stops sending heartbeats for that long (killed, crashed, preempted) is
declared dead, and every other process then terminates (JAX aborts it with "Terminating
process because the JAX distributed service detected fatal errors ... another task died")
instead of waiting forever at the next collective; ``shutdown_timeout`` bounds the exit
barrier. :func:`initialize` prints one line per process before connecting and enables
:mod:`faulthandler`, so such an abort also shows the Python stack where the process waited.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import os
import socket
import sys
import time
from typing import Callable, Mapping, Optional

from gen_jax.config import ConfigError

CLUSTERS = ("auto", "tpu", "slurm", "manual", "none")
ENV = {"cluster": "GEN_JAX_CLUSTER", "coordinator": "GEN_JAX_COORDINATOR",
       "num_processes": "GEN_JAX_NUM_PROCESSES", "process_id": "GEN_JAX_PROCESS_ID"}
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
TPU_HINT_VARS = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS")


class LaunchError(ConfigError):
    """Inconsistent or missing launch settings; the message names the flag and env variable."""


@dataclasses.dataclass(frozen=True)
class LaunchSpec:
    """A resolved launch: which cluster, and the explicit values passed to
    ``jax.distributed.initialize`` (``None`` = detected by JAX from the cluster)."""

    cluster: str                        # 'none' | 'tpu' | 'slurm' | 'manual'
    coordinator: Optional[str] = None   # 'host:port' of process 0
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    init_timeout: int = 300             # s: every process must connect within this
    heartbeat_timeout: int = 100        # s: a silent process is declared dead after this
    shutdown_timeout: int = 300         # s: the exit barrier waits at most this

    @property
    def multi_process(self) -> bool:
        return self.cluster != "none"

    def jax_kwargs(self) -> dict:
        """The keyword arguments of ``jax.distributed.initialize`` for this launch."""
        kw = dict(initialization_timeout=self.init_timeout, heartbeat_timeout_seconds=self.heartbeat_timeout,
                  shutdown_timeout_seconds=self.shutdown_timeout)
        if self.cluster == "slurm":
            kw["cluster_detection_method"] = "slurm"
        if self.cluster == "manual":
            kw["cluster_detection_method"] = "deactivate"
        for k in ("coordinator", "num_processes", "process_id"):
            v = getattr(self, k)
            if v is not None:
                kw["coordinator_address" if k == "coordinator" else k] = v
        return kw


def _names(field: str) -> str:
    return f"--{field} / {ENV[field]}"


def _int(field: str, value, env: Mapping[str, str]) -> Optional[int]:
    """The flag value, else the env variable's, as an int (``None`` if neither is set)."""
    if value is None:
        raw = env.get(ENV[field], "").strip()
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise LaunchError(f"{ENV[field]}={raw!r}: expected an integer") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise LaunchError(f"--{field}: expected an integer, got {value!r}")
    return value


def check_address(address: str, where: str) -> str:
    """``host:port`` with a port in 1..65535 (``LaunchError`` naming ``where`` otherwise)."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"{where}: expected host:port of process 0 (e.g. 10.0.0.1:1234), got {address!r}")
    return address.strip()


def tpu_vm_detected() -> bool:
    """Whether this process runs on a Cloud TPU VM (JAX's own check at import: libtpu plus TPU
    chips on the PCI bus), or under a TPU pod's environment variables."""
    try:
        from jax._src import cloud_tpu_init  # private, hence guarded

        if cloud_tpu_init.running_in_cloud_tpu_vm:
            return True
    except Exception:  # noqa: BLE001 - any failure means "not detected"
        pass
    return any(os.environ.get(v) for v in TPU_HINT_VARS)


def resolve(cluster: Optional[str] = None, coordinator: Optional[str] = None,
            num_processes: Optional[int] = None, process_id: Optional[int] = None, *,
            init_timeout: int = 300, heartbeat_timeout: int = 100, shutdown_timeout: int = 300,
            env: Optional[Mapping[str, str]] = None,
            tpu_detected: Callable[[], bool] = tpu_vm_detected) -> LaunchSpec:
    """The launch of this process from flag values (``None`` = unset) and ``env`` (default
    ``os.environ``); see the module docstring for the precedence. Pure apart from
    ``tpu_detected`` (called only for ``cluster='auto'`` without explicit settings).

    Raises:
      LaunchError: naming the flag / environment variable of an inconsistent setting.
    """
    env = os.environ if env is None else env
    cluster = (cluster or env.get(ENV["cluster"], "") or "auto").strip().lower()
    if cluster not in CLUSTERS:
        raise LaunchError(f"--cluster / {ENV['cluster']}: unknown cluster {cluster!r} (one of {', '.join(CLUSTERS)})")
    coord = coordinator or env.get(ENV["coordinator"], "") or None
    n = _int("num_processes", num_processes, env)
    pid = _int("process_id", process_id, env)
    for name, v, lo in (("init_timeout", init_timeout, 1), ("heartbeat_timeout", heartbeat_timeout, 1),
                        ("shutdown_timeout", shutdown_timeout, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise LaunchError(f"--{name}: expected an integer number of seconds >= {lo}, got {v!r}")
    if n is not None and n < 1:
        raise LaunchError(f"{_names('num_processes')}: must be >= 1, got {n}")
    if pid is not None and pid < 0:
        raise LaunchError(f"{_names('process_id')}: must be >= 0, got {pid}")
    if n is not None and pid is not None and pid >= n:
        raise LaunchError(f"{_names('process_id')} = {pid} but {_names('num_processes')} = {n}: "
                          f"process ids are 0 .. {n - 1}")
    if coord is not None:
        coord = check_address(coord, _names("coordinator"))

    if cluster == "auto":
        cluster = _detect(coord, n, pid, env, tpu_detected)
    times = dict(init_timeout=init_timeout, heartbeat_timeout=heartbeat_timeout, shutdown_timeout=shutdown_timeout)
    if cluster == "none":
        if (n or 1) > 1 or coord is not None:
            raise LaunchError(f"--cluster none is one process, but {_names('num_processes')} = {n} / "
                              f"{_names('coordinator')} = {coord!r} ask for several; drop them or pick a cluster")
        return LaunchSpec("none", **times)
    if cluster == "manual":
        return _manual(coord, n, pid, env, times)
    if cluster == "slurm":
        missing = [v for v in SLURM_VARS if v not in env]
        if missing:
            raise LaunchError(f"--cluster slurm: {', '.join(missing)} not set: launch every process with srun "
                              f"inside an allocation (or use --cluster manual with {_names('coordinator')})")
        ntasks = env["SLURM_NTASKS"]
        if n is not None and str(n) != ntasks.strip():
            raise LaunchError(f"{_names('num_processes')} = {n} but srun started SLURM_NTASKS = {ntasks} tasks; "
                              f"drop {_names('num_processes')} (SLURM sets it)")
    return LaunchSpec(cluster, coord, n, pid, **times)


def _detect(coord, n, pid, env, tpu_detected) -> str:
    if coord is not None or (n or 1) > 1:
        return "manual"
    if pid not in (None, 0):
        raise LaunchError(f"{_names('process_id')} = {pid} without {_names('num_processes')} or "
                          f"{_names('coordinator')}: set all three for a multi-process run")
    if all(v in env for v in SLURM_VARS) and env["SLURM_NTASKS"].strip() not in ("", "0", "1"):
        return "slurm"
    if n is None and tpu_detected():
        return "tpu"
    return "none"


def _manual(coord, n, pid, env, times) -> LaunchSpec:
    coord = coord or env.get("JAX_COORDINATOR_ADDRESS") or None
    if coord is None:
        raise LaunchError(f"{_names('coordinator')}: a multi-process run needs the host:port of process 0 "
                          f"(reachable from every process; any free port)")
    coord = check_address(coord, _names("coordinator"))
    if n is None:
        raise LaunchError(f"{_names('num_processes')}: not set; every process needs the total process count")
    if pid is None:
        raise LaunchError(f"{_names('process_id')}: not set; give each process its index 0 .. {n - 1}")
    return LaunchSpec("manual", coord, n, pid, **times)


PEER_FAILURE_MARKERS = ("Connection closed by peer", "Connection reset by peer", "heartbeat timeout",
                        "stopped sending heartbeats", "Gloo", "NCCL", "coordination service")


def peer_failure(e: BaseException) -> Optional[str]:
    """The first line of ``e`` if it looks like a collective or the coordination service
    failing because another process died (gloo's "Connection closed by peer", a heartbeat
    timeout), else ``None``. Only a JAX runtime error qualifies."""
    if type(e).__name__ not in ("JaxRuntimeError", "XlaRuntimeError"):
        return None
    first = (str(e).strip().splitlines() or [""])[0]
    return first[:400] if any(m in str(e) for m in PEER_FAILURE_MARKERS) else None


def exit_on_peer_failure(e: BaseException, spec: LaunchSpec, code: int = 3) -> None:
    """In a multi-process run, ``e`` a :func:`peer_failure`: print one clear line and end the
    process at once with ``code`` (``os._exit``: the normal exit would wait in JAX's shutdown
    barrier for the dead process, up to ``heartbeat_timeout``, and then abort). Otherwise return."""
    msg = peer_failure(e) if spec.multi_process else None
    if msg is None:
        return
    import jax

    _say(f"error: process {jax.process_index()} of {jax.process_count()}: a collective failed ({msg}); "
         f"another process of this run most likely died (see its log); exiting with code {code}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _say(msg: str) -> None:
    print(f"gen_jax.distributed: {msg}", file=sys.stderr, flush=True)


def wait_for_coordinator(address: str, timeout: float, poll: float = 0.2) -> float:
    """Polls a TCP connection to ``address`` until it opens; returns the seconds waited.

    Raises:
      LaunchError: it did not open within ``timeout`` seconds.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    t0 = time.monotonic()
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=max(poll, 0.5)):
                return time.monotonic() - t0
        except OSError as e:
            if time.monotonic() - t0 >= timeout:
                raise LaunchError(
                    f"{_names('coordinator')} = {address}: no coordinator answered within --init_timeout = "
                    f"{timeout:g} s ({type(e).__name__}: {e}); is process 0 running, on that host and port, "
                    f"and reachable from this one?") from None
            time.sleep(poll)


def initialize(spec: LaunchSpec, say: Callable[[str], None] = _say) -> LaunchSpec:
    """Joins this process to the others of ``spec`` (``jax.distributed.initialize``); nothing
    for ``cluster='none'``. Must run before anything touches a JAX device. A non-coordinator
    process of a manual launch first waits (at most ``init_timeout``) for process 0's port, so
    a coordinator that never comes up is a :class:`LaunchError`, not an abort.

    Returns ``spec`` (for chaining). Raises :class:`LaunchError` on a failed launch."""
    if not spec.multi_process:
        return spec
    import jax

    if jax.distributed.is_initialized():
        raise LaunchError("jax.distributed is already initialized in this process; initialize once")
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise LaunchError("a JAX device was used before the multi-process launch; call "
                              "gen_jax.train.distributed.initialize before anything touches jax.devices()")
    except ImportError:
        pass
    faulthandler.enable()  # a peer's death aborts this process: show where it waited
    env_pid, env_n = (os.environ.get("SLURM_PROCID"), os.environ.get("SLURM_NTASKS")) if spec.cluster == "slurm" \
        else (None, None)
    pid = spec.process_id if spec.process_id is not None else env_pid
    n = spec.num_processes if spec.num_processes is not None else env_n
    who = "process ?" if pid is None else f"process {pid}"
    of = "" if n is None else f" of {n}"
    left = float(spec.init_timeout)
    if spec.cluster == "manual" and spec.process_id != 0:
        left -= wait_for_coordinator(spec.coordinator, spec.init_timeout)
    say(f"{who}{of} ({spec.cluster}) connecting to {spec.coordinator or 'the detected coordinator'}: "
        f"waiting up to {int(left)} s (--init_timeout) for every process (one that never connects fails "
        f"all with 'DEADLINE_EXCEEDED ... RegisterTask'); a process silent for {spec.heartbeat_timeout} s "
        f"(--heartbeat_timeout) is declared dead and the others abort ('JAX distributed service "
        f"detected fatal errors')")
    kw = spec.jax_kwargs()
    kw["initialization_timeout"] = max(1, int(left))
    try:
        jax.distributed.initialize(**kw)
    except (ValueError, TypeError, RuntimeError) as e:
        hint = {"tpu": " (not on a Cloud TPU VM / pod slice?)", "slurm": " (not inside an srun job step?)"}
        raise LaunchError(f"--cluster {spec.cluster}: jax.distributed.initialize failed: {e}"
                          f"{hint.get(spec.cluster, '')}") from None
    say(f"process {jax.process_index()} of {jax.process_count()} connected: {jax.local_device_count()} "
        f"local of {jax.device_count()} devices")
    return spec
