"""Workdirs under faults (issue 11 section 2): a second training into a locked workdir, torn
and corrupt metrics.jsonl lines, truncated checkpoint files, resumes under a changed config,
a feature network that is missing or unusable, runs too short to show anything."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import UnreadableCheckpoint
from gen_jax.train.lock import WorkdirLock, WorkdirLocked
from gen_jax.train.loop import train
from gen_jax.train.resume import check_resume, run_warnings
from gen_jax.train.writers import MetricsError, MetricWriter

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = {"train.steps": "40", "train.log_every": "10", "train.ckpt_every": "20"}


def _setup(**overrides):
    exp = common.load_experiment("classifier_digits", {**BASE, **overrides})
    info, model, mesh = common.setup(exp)
    return exp, info, model, mesh


def _run(workdir, allow=False, resume_step=None, **overrides):
    exp, info, model, mesh = _setup(**overrides)
    return train(exp, model, str(workdir), common.build_stream(exp, info, mesh), info, progress=False,
                 mesh=mesh, allow_config_change=allow, resume_step=resume_step)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, digits_data_dir):
    wd = tmp_path_factory.mktemp("faults") / "run"
    return wd, _run(wd)


@pytest.fixture
def copy(finished, tmp_path):
    shutil.copytree(finished[0], tmp_path / "wd")
    return tmp_path / "wd"


def _truncate_state(workdir, step):
    """Truncates every array data file of checkpoint ``step`` to half its size."""
    state_dir = os.path.join(workdir, "checkpoints", str(step), "state")
    hit = 0
    for root, _, files in os.walk(state_dir):
        for f in files:
            p = os.path.join(root, f)
            if "/d/" in p or "ocdbt.process" in root and f != "manifest.ocdbt":
                size = os.path.getsize(p)
                if size > 64:
                    os.truncate(p, size // 2)
                    hit += 1
    assert hit, f"no array data files found under {state_dir}: {list(os.walk(state_dir))}"


HOLDER = """import sys, time
from gen_jax.train.lock import WorkdirLock
with WorkdirLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_training_into_a_locked_workdir_refuses_naming_the_pid(tmp_path, digits_data_dir):
    wd = tmp_path / "wd"
    env = dict(os.environ, PYTHONPATH=REPO)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(wd)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLocked, match=rf"workdir {wd} is in use by pid {holder.pid} on \S+ "
                                                rf"\(lock file {wd}/.lock\); wait for that run"):
            _run(wd)
        assert not (wd / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    said = []  # the dead holder's record is left in the file: a stale lock, taken over
    with WorkdirLock(str(wd), say=said.append):
        assert open(wd / ".lock").read().split()[0] == str(os.getpid())
    assert said == [f"taking over the stale lock of pid {holder.pid} on {os.uname().nodename} "
                    f"(no longer running) in {wd}/.lock"]
    said.clear()
    with WorkdirLock(str(wd), say=said.append):  # released cleanly: nothing to say
        pass
    assert said == []


def test_torn_last_metrics_line_is_dropped_and_said(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "loss": 1.5}\n{"step": 20, "loss": 1.25}\n{"step": 30, "lo')
    MetricWriter(str(tmp_path), resume_step=20).close()
    assert [json.loads(l) for l in open(path)] == [{"step": 10, "loss": 1.5}, {"step": 20, "loss": 1.25}]
    assert f"{path}:3: dropping a torn last line (a crash while writing it): '{{\"step\": 30, \"lo'" in \
        capsys.readouterr().out


def test_corrupt_metrics_line_elsewhere_names_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "loss": 1.5}\n{"step": 2x}\n{"step": 30, "loss": 1.0}\n')
    with pytest.raises(MetricsError, match=rf"^{path}:2: corrupt metrics record \(Expecting"):
        MetricWriter(str(tmp_path), resume_step=30)


def test_truncated_checkpoint_falls_back_for_sample_and_evaluate(copy, capsys):
    _truncate_state(copy, 40)
    exp, info, model, _ = _setup()
    state, meta = common.restore_state(exp, model, str(copy), info)
    assert int(state.step) == 20 and meta["step"] == 20
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"checkpoint state at {copy}/checkpoints/40 is unreadable "
                                               "(corrupted or incomplete?): ")
    assert err[0].endswith("; falling back to step 20")
    state, _ = common.restore_state(exp, model, str(copy), info, step=20)  # --step chooses one
    assert int(state.step) == 20
    with pytest.raises(UnreadableCheckpoint, match=rf"^checkpoint state at {copy}/checkpoints/40 is unreadable"):
        common.restore_state(exp, model, str(copy), info, step=40)


def test_resume_past_a_truncated_checkpoint_rewrites_the_tail_once(finished, copy, capsys):
    """Checkpoint 40 truncated: the resume says so, continues from 20, and ends with the
    uninterrupted run's metrics, params and TensorBoard steps (each once)."""
    wd, full = finished
    _truncate_state(copy, 40)
    res = _run(copy)
    assert res.resumed_from == 20
    out = capsys.readouterr().out
    assert "is unreadable (corrupted or incomplete?)" in out and "falling back to step 20" in out
    assert f"deleting checkpoint {copy}/checkpoints/40 (the run resumes from step 20)" in out
    assert re.search(r"^compiling the train step\.\.\. done in \d+\.\d s$", out, re.M), out
    assert open(copy / "metrics.jsonl").read() == open(wd / "metrics.jsonl").read()
    for a, b in zip(jax.tree.leaves(full.state.params), jax.tree.leaves(res.state.params)):
        np.testing.assert_array_equal(a, b)
    acc = EventAccumulator(str(copy / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == [10, 20, 30, 40]
    ref = [json.loads(l)["loss"] for l in open(wd / "metrics.jsonl")]
    np.testing.assert_allclose([e.value for e in acc.Scalars("loss")], ref, rtol=1e-6)


def test_resume_with_a_changed_seed_is_refused_and_the_difference_printed(copy, capsys):
    with pytest.raises(ConfigError, match=rf"^config.seed: the checkpoint {copy}/checkpoints/40 was trained "
                                          r"with 1234, this run asks for 1; resuming would leave the uninterrupted "
                                          r"run's trajectory. Pass --allow_config_change"):
        _run(copy, seed="1")
    assert "with a changed config: config.seed: 1234 -> 1" in capsys.readouterr().out


def test_fewer_steps_than_the_checkpoint_holds_is_refused(copy):
    with pytest.raises(ConfigError, match=rf"^config.train.steps: 30 is fewer than the 40 steps the checkpoint "
                                          rf"{copy}/checkpoints/40 already holds"):
        _run(copy, **{"train.steps": "30"})
    assert not (copy / "samples").exists()


def _cfg(**kw):
    base = {"seed": 0, "dataset": {"name": "digits"}, "train": {"steps": 100, "batch_size": 8, "log_every": 10},
            "optim": {"learning_rate": 0.001, "schedule": "constant"}}
    for k, v in kw.items():
        sec, field = k.split("__")
        base[sec] = dict(base[sec], **{field: v})
    return json.dumps(base)


@pytest.mark.parametrize("change, refused", [
    ({"train__log_every": 5}, None),
    ({"train__steps": 200}, None),  # a constant schedule does not depend on the step count
    ({"train__steps": 200, "optim__schedule": "cosine"}, "config.optim.schedule"),
    ({"optim__learning_rate": 0.01}, "config.optim.learning_rate: the checkpoint C was trained with 0.001, "
                                     "this run asks for 0.01;"),
    ({"train__batch_size": 16}, "config.train.batch_size"),
    # placement levers: the same computation placed or scheduled otherwise
    ({"train__grad_accum": 4}, None),
    # a field added after the checkpoint was written, at the value that reproduces the old run
    ({"train__grad_accum": 1, "dataset__reader": "memory"}, None),
    ({"dataset__reader": "records"}, "config.dataset.reader: the checkpoint C was trained with '<absent>', "
                                     "this run asks for 'records';"),
])
def test_which_resume_changes_break_the_trajectory(change, refused):
    said = []
    new = _cfg(**change)
    if refused is None:
        check_resume(_cfg(), new, 100, 200, "C", say=said.append)
    else:
        with pytest.raises(ConfigError, match="^" + refused.replace("(", r"\(").replace(".", r"\.")):
            check_resume(_cfg(), new, 100, 200, "C", say=said.append)
        check_resume(_cfg(), new, 100, 200, "C", allow_change=True, say=lambda _: None)
    assert said[0].startswith("resuming from C with a changed config: config.")


def test_steps_growth_under_a_decaying_schedule_is_refused_with_the_reason():
    old = _cfg(optim__schedule="cosine")
    with pytest.raises(ConfigError, match=r"^config.train.steps: .* 100, this run asks for 200 with a "
                                          r"non-constant learning-rate schedule, which depends on the step count"):
        check_resume(old, _cfg(optim__schedule="cosine", train__steps=200), 100, 200, "C", say=lambda _: None)


def test_short_run_warnings(digits_data_dir):
    exp = common.load_experiment("classifier_digits", {"train.steps": "100", "train.ema_decay": "0.999",
                                                       "train.batch_size": "4096", "optim.warmup_steps": "100"})
    w = run_warnings(exp, 1437)
    assert w == [
        "config.train.ema_decay=0.999 averages over ~1000 steps, more than half of the 100 steps: the EMA "
        "params (used for samples and evaluation) will still be close to the initialization",
        "config.train.batch_size=4096 is larger than the training split (1437 examples): every batch "
        "repeats examples",
        "config.optim.warmup_steps=100 is not shorter than the run (100 steps): the learning rate never "
        "reaches config.optim.learning_rate"]
    assert run_warnings(common.load_experiment("classifier_digits", {}), 1437) == []


def test_feature_net_path_without_a_checkpoint_refuses(tmp_path, digits_data_dir):
    nothing = tmp_path / "nothing"
    with pytest.raises(ConfigError, match=rf"^config.eval.feature_net: no feature-network checkpoint in {nothing} "
                                          r".*pass --train_feature_net to train one there"):
        common.feature_extractor("digits", digits_data_dir, str(nothing))
    assert not nothing.exists()


def test_unusable_feature_net_checkpoint_says_the_feature_network_is_the_problem(copy, digits_data_dir):
    _truncate_state(copy, 40)
    _truncate_state(copy, 20)
    with pytest.raises(ConfigError, match=rf"^config.eval.feature_net: the feature network at {copy} is not a "
                                          r"usable classifier_digits checkpoint \(the feature network is the "
                                          r"problem, not the model being evaluated\): no readable checkpoint"):
        common.feature_extractor("digits", digits_data_dir, str(copy))


def test_resume_from_a_step_that_was_never_checkpointed(copy):
    from gen_jax.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=rf"^no checkpoint for step 30 in {copy}/checkpoints \(have \[20, 40\]\)"):
        _run(copy, resume_step=30)
