"""gen_jax.train.best through the real train loop: the periodic evaluation is logged, the best
checkpoint holds exactly the state of the step with the lowest value, survives a resume, and a
best recorded after an explicit earlier resume step is dropped."""
import json
import os

import jax
import numpy as np
import pytest

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.train.best import BestTracker, best_dir, read_best
from gen_jax.train.loop import train
from gen_jax.train.writers import read_metrics

SCRIPT = {10: 3.0, 20: 1.0, 30: 2.0, 40: 1.5}  # evaluation step -> value: the best is step 20


def _scripted(log):
    def evaluator(params):
        step = 10 * (len(log) + 1)
        log.append(jax.tree.leaves(params)[0].sum())
        return {"fid": SCRIPT[step], "other": float(step)}
    return evaluator


def _run(workdir, stop_after=None, log=None, **ov):
    ov = {"train.steps": "40", "train.log_every": "10", "train.ckpt_every": "10", "train.keep_checkpoints": "10",
          "train.eval_every": "10", "train.best_metric": "fid", **ov}
    exp = common.load_experiment("classifier_digits", ov)
    info, model, mesh = common.setup(exp)
    return exp, model, info, train(exp, model, str(workdir), common.build_stream(exp, info, mesh), info,
                                   progress=False, mesh=mesh, stop_after=stop_after,
                                   evaluator=_scripted([] if log is None else log))


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_data_dir):
    wd = tmp_path_factory.mktemp("best")
    return wd, _run(wd)


def test_evaluations_logged_and_best_is_the_lowest(run):
    wd, _ = run
    evals = {r["step"]: r["eval/fid"] for r in read_metrics(str(wd)) if "eval/fid" in r}
    assert evals == SCRIPT
    assert read_best(str(wd)) == {"metric": "fid", "value": 1.0, "step": 20}


def test_best_checkpoint_is_the_state_of_that_step(run):
    wd, (exp, model, info, _) = run
    best, _, which = common.restore_for_eval(exp, model, str(wd), info)
    at20, _ = common.restore_state(exp, model, str(wd), info, step=20)
    assert int(best.step) == 20 and which.startswith("best fid 1")
    for a, b in zip(jax.tree.leaves(best.params), jax.tree.leaves(at20.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    latest, _ = common.restore_state(exp, model, str(wd), info)
    assert int(latest.step) == 40


def test_resume_keeps_the_best_and_explicit_earlier_step_drops_it(tmp_path, digits_data_dir):
    _run(tmp_path, stop_after=30)
    assert read_best(str(tmp_path))["step"] == 20
    _run(tmp_path)  # resumes at 30: evaluates step 40 only (1.5 > 1.0: the best stays)
    assert read_best(str(tmp_path)) == {"metric": "fid", "value": 1.0, "step": 20}
    tracker = BestTracker(str(tmp_path), "fid", resume_step=10, say=lambda _: None)
    assert tracker.best is None and not os.path.exists(best_dir(str(tmp_path)))


def test_missing_metric_and_non_finite_values(tmp_path):
    tracker = BestTracker(str(tmp_path), "fid")
    with pytest.raises(ConfigError, match="config.train.best_metric.*'fid'.*\\['kid'\\]"):
        tracker.update(1, {"kid": 0.1}, {"w": np.zeros(2)}, {})
    assert not tracker.update(1, {"fid": float("nan")}, {"w": np.zeros(2)}, {})
    assert read_best(str(tmp_path)) is None


def test_best_metric_needs_eval_every():
    with pytest.raises(ConfigError, match="config.train.best_metric.*eval_every"):
        common.load_experiment("classifier_digits", {"train.best_metric": "fid"})
