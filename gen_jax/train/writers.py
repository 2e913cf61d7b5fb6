"""Metric writers: ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard
event files (written with tensorboard's own event writer; no TensorFlow needed)."""
from __future__ import annotations

import glob
import json
import math
import os
import time
from typing import Callable, Mapping

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def _py(v) -> float:
    v = float(v)
    return v if math.isfinite(v) else (float("nan") if math.isnan(v) else v)


class MetricWriter:
    """Appends scalars to ``<workdir>/metrics.jsonl`` and ``<workdir>/tb/`` events.

    Only process 0 writes (pass ``enabled=False`` elsewhere). On resume, records of steps
    beyond the restored step are dropped first, so the file equals an uninterrupted run's; a
    torn last line (a crash mid-write) is dropped with a line saying so, a corrupt line
    elsewhere is a :class:`MetricsError` naming the file and line. The TensorBoard events are
    rewritten from the kept records (old event files removed), so TensorBoard shows each step
    once, never the overlapping tail of the interrupted run.
    """

    def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0,
                 say: Callable[[str], None] = print):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        if not enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        keep = []
        if os.path.exists(self.path):
            keep = [r for r in parse_metrics(self.path, say=say) if r["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in keep)
        tb = os.path.join(workdir, "tb")
        for old in glob.glob(os.path.join(tb, "events.out.tfevents.*")):
            os.remove(old)
        self._tb = EventFileWriter(tb)
        for r in keep:
            self._add_event(r["step"], {k: v for k, v in r.items() if k != "step"})

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), **{k: _py(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self._add_event(step, scalars)

    def _add_event(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [summary_pb2.Summary.Value(tag=k, simple_value=_py(v)) for k, v in scalars.items()]
        self._tb.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                           summary=summary_pb2.Summary(value=values)))

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()


class MetricsError(ValueError):
    """A ``metrics.jsonl`` line that is not a record (named by file and line number)."""


def parse_metrics(path: str, say: Callable[[str], None] = print) -> list[dict]:
    """The records of a ``metrics.jsonl`` file. A torn last line (a crash while writing it)
    is dropped with a line saying so; any other line that is not a JSON object with an int
    ``step`` raises :class:`MetricsError` naming ``path:line``."""
    with open(path) as f:
        lines = f.read().split("\n")
    numbered = [(i + 1, l) for i, l in enumerate(lines) if l.strip()]
    recs = []
    for j, (n, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise ValueError("not an object with an int 'step'")
        except ValueError as e:
            if j == len(numbered) - 1:
                say(f"{path}:{n}: dropping a torn last line (a crash while writing it): {line[:60]!r}")
                break
            raise MetricsError(f"{path}:{n}: corrupt metrics record ({e}); fix or delete that line "
                               f"(a resume rewrites every step after the checkpoint)") from None
        recs.append(rec)
    return recs


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``<workdir>/metrics.jsonl`` (see :func:`parse_metrics`)."""
    return parse_metrics(os.path.join(workdir, "metrics.jsonl"))
