"""The train loop end to end on the digits classifier (the cheapest real model): artifacts,
resume, the non-finite stop, and CLI errors that name the field before anything compiles."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import common
from gen_jax.data.datasets import DatasetError
from gen_jax.train.checkpoint import Checkpointer
from gen_jax.train.loop import NonFiniteError, train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(workdir, allow_config_change=False, **overrides):
    ov = {"train.steps": "60", "train.log_every": "10", "train.ckpt_every": "20", **overrides}
    exp = common.load_experiment("classifier_digits", ov)
    info, model, mesh = common.setup(exp)
    return train(exp, model, str(workdir), common.build_stream(exp, info, mesh), info,
                 progress=False, mesh=mesh, allow_config_change=allow_config_change)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits_data_dir):
    wd = tmp_path_factory.mktemp("loop")
    return wd, _run(wd)


def test_artifacts(finished):
    wd, res = finished
    recs = [json.loads(l) for l in open(wd / "metrics.jsonl")]
    assert [r["step"] for r in recs] == [10, 20, 30, 40, 50, 60]
    assert {"loss", "accuracy", "grad_norm", "param_norm", "update_norm"} <= set(recs[-1])
    assert recs[-1]["loss"] < recs[0]["loss"]
    assert sorted(int(s) for s in os.listdir(wd / "checkpoints") if s.isdigit()) == [20, 40, 60]
    acc = EventAccumulator(str(wd / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [10, 20, 30, 40, 50, 60]
    assert (wd / "loss_curve.png").stat().st_size > 1000
    assert int(res.state.step) == 60


def test_rerun_of_finished_workdir_resumes_and_does_nothing(finished):
    wd, res = finished
    again = _run(wd)
    assert again.resumed_from == 60
    for a, b in zip(jax.tree.leaves(res.state.params), jax.tree.leaves(again.state.params)):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_with_step_and_terms(tmp_path, digits_data_dir):
    _run(tmp_path, **{"train.steps": "20"})  # a good run with a checkpoint at step 20
    # Continue the same workdir with a step size that overflows at once.
    with pytest.raises(NonFiniteError, match=r"non-finite values at step 21: [a-z_, ]*norm.*last good checkpoint: step 20"):
        _run(tmp_path, allow_config_change=True,  # the changed learning rate is the point
             **{"optim.learning_rate": "1e38", "train.ckpt_every": "1", "train.steps": "50"})
    ck = Checkpointer(str(tmp_path / "checkpoints"), create=False)
    assert ck.latest_step() == 20
    exp = common.load_experiment("classifier_digits", {})
    info, model, _ = common.setup(exp)
    state, _ = common.restore_state(exp, model, str(tmp_path), info)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_unknown_dataset_name():
    exp = common.load_experiment("classifier_digits", {"dataset.name": "mnits"})
    with pytest.raises(DatasetError, match="mnits"):
        common.setup(exp)


def test_cli_reports_bad_config_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    cases = [("--config.train.batch_szie=8", "config.train.batch_szie: unknown field"),
             ("--config.train.batch_size=60", "config.train.batch_size: 60 is not divisible by the 8 devices"),
             ("--config.model.hidden=big", "config.model.hidden: expected int")]
    for arg, needle in cases:
        p = subprocess.run([sys.executable, "-m", "experiments.train", "--config", "classifier_digits",
                            "--workdir", str(tmp_path), arg], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2, p.stderr[-2000:]
        assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]


def test_save_curves_leaves_the_matplotlib_backend_alone(tmp_path):
    """Writing loss curves must not switch a notebook's backend (no hidden global mutation)."""
    import matplotlib

    from gen_jax.viz import save_curves

    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        path = save_curves(str(tmp_path / "c.png"), [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}], ["loss"])
        assert matplotlib.get_backend() == "pdf"
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        matplotlib.use(before)
