"""An exclusive lock on a workdir, so two trainings never write into one at once.

The lock is ``fcntl.flock`` on ``<workdir>/.lock``: the kernel releases it when the holder
exits or dies (SIGKILL included), so a lock of a dead process is never "held". The file
records the holder's pid and host; it is left in place on release (unlinking it would let a
third process lock a fresh file while a second still waits on the old inode), so a leftover
file with no holder is the normal stale case and is taken over with a line saying so.
"""
from __future__ import annotations

import fcntl
import os
import socket
from typing import Callable, Optional


class WorkdirLocked(RuntimeError):
    """Another live process holds the workdir."""


LOCK_NAME = ".lock"


def _holder(text: str) -> tuple[Optional[int], str]:
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else "?")
    except (IndexError, ValueError):
        return None, "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """``with WorkdirLock(workdir): ...`` holds the workdir exclusively (non-blocking: a held
    lock raises :class:`WorkdirLocked` naming the holder's pid and host at once)."""

    def __init__(self, workdir: str, say: Callable[[str], None] = print):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_NAME)
        self._say = say
        self._fd: Optional[int] = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid, host = _holder(os.pread(fd, 256, 0).decode(errors="replace"))
            os.close(fd)
            who = f"pid {pid} on {host}" if pid is not None else "another process"
            raise WorkdirLocked(f"workdir {os.path.dirname(self.path)} is in use by {who} (lock file {self.path}); "
                                f"wait for that run to end or choose another --workdir") from None
        old_pid, old_host = _holder(os.pread(fd, 256, 0).decode(errors="replace"))
        if old_pid is not None and old_pid != os.getpid():
            state = "no longer running" if old_host != socket.gethostname() or not _alive(old_pid) else "not holding it"
            self._say(f"taking over the stale lock of pid {old_pid} on {old_host} ({state}) in {self.path}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
