"""The best checkpoint of a run by a tracked evaluation metric (e.g. FID of the EMA generator).

The train loop evaluates the params it would sample with every ``config.train.eval_every``
steps through an evaluator handed in by the caller (the trainer knows no metric or family:
``evaluator(params) -> {name: float}``); with ``config.train.best_metric`` set, the state of
the lowest value so far is saved to ``<workdir>/best/checkpoints/<step>`` (one kept) and
``<workdir>/best/best.json`` records ``{"metric", "value", "step"}``.

A resumed run keeps the best of its earlier part; a resume from an explicit earlier step
(whose later checkpoints are deleted) drops a best recorded after that step, so the record
always belongs to the run's current trajectory. Saving the best is one more orbax save, never
instead of the periodic checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Callable, Mapping, Optional

import jax

from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import Checkpointer

BEST_DIR = "best"


def best_dir(workdir: str) -> str:
    """``<workdir>/best``: a workdir of its own (``checkpoints/`` and ``best.json``), so every
    restore helper that takes a workdir restores the best state from it."""
    return os.path.join(workdir, BEST_DIR)


def read_best(workdir: str) -> Optional[dict]:
    """``{"metric", "value", "step"}`` of the run's best checkpoint, or ``None``."""
    path = os.path.join(best_dir(workdir), "best.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


class BestTracker:
    """Keeps the lowest-``metric`` state of a run (lower is better: FID, KID, bits/dim).

    Args:
      workdir: the run's directory.
      metric: the evaluator output to minimize.
      resume_step: the step the run continues from (``0`` for a fresh run): a best recorded
        after it is dropped.
      say: where notes go.
    """

    def __init__(self, workdir: str, metric: str, resume_step: int = 0, say: Callable[[str], None] = print):
        self.workdir = workdir
        self.metric = metric
        rec = read_best(workdir)
        if rec is not None and (rec.get("metric") != metric or int(rec.get("step", 0)) > resume_step):
            say(f"dropping the best checkpoint of step {rec.get('step')} ({rec.get('metric')}): the run "
                f"resumes from step {resume_step} with best_metric {metric!r}")
            shutil.rmtree(best_dir(workdir), ignore_errors=True)
            rec = None
        self.best = rec
        self._ckpt: Optional[Checkpointer] = None

    def update(self, step: int, metrics: Mapping[str, float], state: Any, meta: dict) -> bool:
        """Saves ``state`` as the best if ``metrics[metric]`` beats the best so far; returns
        whether it did. A missing metric is a ``ConfigError`` naming ``config.train.best_metric``;
        a non-finite value never becomes the best."""
        if self.metric not in metrics:
            raise ConfigError(f"config.train.best_metric: {self.metric!r} is not among the evaluator's "
                              f"metrics {sorted(metrics)}")
        value = float(metrics[self.metric])
        if not math.isfinite(value) or (self.best is not None and value >= float(self.best["value"])):
            return False
        if self._ckpt is None:
            self._ckpt = Checkpointer(os.path.join(best_dir(self.workdir), "checkpoints"), max_to_keep=1)
        self._ckpt.save(step, state, meta, force=True)
        self._ckpt.wait()
        self.best = {"metric": self.metric, "value": value, "step": int(step)}
        if jax.process_index() != 0:
            return True
        tmp = os.path.join(best_dir(self.workdir), "best.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.best, f)
        os.replace(tmp, os.path.join(best_dir(self.workdir), "best.json"))
        return True

    def close(self) -> None:
        if self._ckpt is not None:
            self._ckpt.close()
