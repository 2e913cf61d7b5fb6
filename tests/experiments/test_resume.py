"""A run killed with SIGKILL after a checkpoint and restarted on its workdir writes exactly
the metrics (and ends with exactly the params) of an uninterrupted run."""
import json
import os
import subprocess
import sys

import pytest

from tests.kill import kill_after_first_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 600
ARGS = ["--config", "experiments/configs/vae_digits.py", "--no_progress",
        f"--config.train.steps={STEPS}", "--config.train.ckpt_every=100",
        "--config.train.log_every=25", "--config.train.batch_size=32"]


def _env(data_dir):
    env = dict(os.environ)
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
               GEN_JAX_DATA_DIR=str(data_dir), PYTHONPATH=REPO)
    return env


def _train(workdir, env):
    return subprocess.run([sys.executable, "-m", "experiments.train", "--workdir", str(workdir), *ARGS],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f]


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted(tmp_path, digits_data_dir):
    env = _env(digits_data_dir)
    full = _train(tmp_path / "full", env)
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    kill_after_first_checkpoint([sys.executable, "-m", "experiments.train", "--workdir", str(killed), *ARGS],
                                str(killed), env=env, cwd=REPO)
    before = _lines(killed)
    assert before[-1]["step"] < STEPS, "killed too late to test anything"

    resumed = _train(killed, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert 0 < summary["resumed_from"] < STEPS
    a, b = _lines(tmp_path / "full"), _lines(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert a == b  # bit-identical metrics, including losses after the resume point
