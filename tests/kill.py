"""Killing a training process the moment its first checkpoint exists (resume tests)."""
import os
import signal
import subprocess
import time


def kill_after_first_checkpoint(cmd, workdir, *, env, cwd, timeout=300) -> None:
    """Starts ``cmd``, SIGKILLs it shortly after ``workdir/checkpoints`` holds a step, and
    asserts it died of the signal (not by finishing first)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckdir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [d for d in os.listdir(ckdir) if d.isdigit()] if os.path.isdir(ckdir) else []
        if done and proc.poll() is None:
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            break
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
