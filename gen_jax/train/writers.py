"""Metric writers: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard
event files (written with tensorboard's own event writer; no TensorFlow needed)."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def _py(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else (float("nan") if math.isnan(v) else v)


class MetricWriter:
    """Appends scalars to ``<workdir>/metrics.jsonl`` and ``<workdir>/tb/`` events.

    Only process 0 writes (pass ``enabled=False`` elsewhere). On resume, lines of steps
    beyond the restored step are dropped first, so the file equals an uninterrupted run's.
    """

    def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
            with open(self.path) as f:
                keep = [l for l in f if l.strip() and json.loads(l)["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(keep)
        self._tb = EventFileWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), **{k: _py(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        values = [summary_pb2.Summary.Value(tag=k, simple_value=_py(v)) for k, v in scalars.items()]
        self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary_pb2.Summary(value=values)))

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``<workdir>/metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]
