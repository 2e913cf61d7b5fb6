"""orbax checkpointing of the train state, with errors that name the path and the leaf.

Each checkpoint holds the :class:`TrainState` and a JSON ``meta`` record (model name,
config, the shape signature of the state, and the topology it was written on). Restoring
checks the signature against the architecture being restored *before* orbax reads any array,
so a checkpoint from another architecture fails with the first differing leaf named; a
missing directory or a corrupted file fails with the path named.

**Topologies.** The arrays are stored whole (orbax, OCDBT), not per device: a checkpoint
restores onto any mesh whose shardings the caller passes in the abstract state (8 -> 4
devices, a ('data', 'model') mesh -> a data-only one, several processes -> one device);
:meth:`Checkpointer.restore_readable` reports a change of topology in one line.

**Several processes** (``jax.distributed``): every process constructs the
:class:`Checkpointer` on the same directory (a filesystem all of them see) and calls every
method (``save``, ``restore``, ``delete_after``, ``close``: orbax synchronizes them with
barriers). Each process writes the shards its devices own (``state/ocdbt.process_<i>``);
process 0 writes the metadata, commits the step and deletes old steps.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from gen_jax.train.sharding import _path_str


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupted, or of another architecture."""


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint whose files cannot be read (truncated, corrupted, incomplete)."""


def _short(e: BaseException) -> str:
    """The first line of the root cause of an exception (orbax wraps TensorStore's error,
    which names the array and the bad byte range, in a dump of hundreds of lines)."""
    seen = {id(e)}
    while (e.__cause__ or e.__context__) is not None and id(e.__cause__ or e.__context__) not in seen:
        e = e.__cause__ or e.__context__
        seen.add(id(e))
    first = (str(e).strip().splitlines() or [""])[0].split(" See full TensorStore details")[0]
    return f"{type(e).__name__}: {first[:300]}"


def signature(tree: Any) -> dict:
    """``{leaf path: [shape..., dtype]}`` of a pytree of arrays or ``ShapeDtypeStruct``s."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[_path_str(path)] = [int(d) for d in np.shape(leaf)] + [str(np.dtype(leaf.dtype))]
    return out


def topology(tree: Any) -> dict:
    """``{'mesh': {axis: size}, 'devices': n, 'processes': p}`` of the first ``NamedSharding``
    leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s; ``mesh`` empty without one)."""
    for leaf in jax.tree.leaves(tree):
        sh = getattr(leaf, "sharding", None)
        mesh = getattr(sh, "mesh", None)
        if mesh is not None:
            procs = {d.process_index for d in mesh.devices.flat}
            return {"mesh": {str(k): int(v) for k, v in mesh.shape.items()}, "devices": int(mesh.devices.size),
                    "processes": len(procs)}
    return {"mesh": {}, "devices": 1, "processes": 1}


def _describe(t: dict) -> str:
    mesh = " x ".join(f"{k} {v}" for k, v in t.get("mesh", {}).items()) or "no mesh"
    return f"{t.get('devices', '?')} devices ({mesh}), {t.get('processes', '?')} process(es)"


def _first_difference(expected: dict, found: dict) -> Optional[str]:
    for k in expected:
        if k not in found:
            return f"leaf {k!r} (shape {expected[k][:-1]}) is missing from the checkpoint"
        if expected[k] != found[k]:
            return (f"leaf {k!r}: the model expects shape/dtype {expected[k]}, "
                    f"the checkpoint has {found[k]}")
    for k in found:
        if k not in expected:
            return f"the checkpoint has leaf {k!r} (shape {found[k][:-1]}) that the model lacks"
    return None


class Checkpointer:
    """Periodic asynchronous saves with keep-N, restore of the latest (or a given) step."""

    def __init__(self, directory: str, max_to_keep: int = 3, create: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoint directory at {self.directory}")
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
        self._mgr = ocp.CheckpointManager(self.directory, options=opts)

    def latest_step(self) -> Optional[int]:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> None:
        meta = dict(meta, signature=signature(state), step=int(step), topology=topology(state))
        self._mgr.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def read_meta(self, step: Optional[int] = None) -> dict:
        step = self._resolve(step)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise UnreadableCheckpoint(
                f"checkpoint metadata at {self._step_dir(step)} is unreadable "
                f"(corrupted or incomplete?): {_short(e)}") from None
        return dict(out["meta"])

    def restore(self, abstract_state: Any, step: Optional[int] = None) -> tuple[Any, dict]:
        """Restores onto ``abstract_state`` (``ShapeDtypeStruct`` leaves, optionally with
        shardings). Returns ``(state, meta)``."""
        step = self._resolve(step)
        meta = self.read_meta(step)
        diff = _first_difference(signature(abstract_state), meta.get("signature", {}))
        if diff is not None:
            raise CheckpointError(
                f"checkpoint {self._step_dir(step)} is from another architecture "
                f"(model {meta.get('model')!r}): {diff}")
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))
        except Exception as e:
            raise UnreadableCheckpoint(
                f"checkpoint state at {self._step_dir(step)} is unreadable "
                f"(corrupted or incomplete?): {_short(e)}") from None
        return out["state"], meta

    def restore_readable(self, abstract_state: Any, step: Optional[int] = None,
                         say: Callable[[str], None] = print, report_topology: bool = False) -> tuple[Any, dict]:
        """:meth:`restore` of ``step``, or (``None``) of the newest checkpoint that reads: each
        unreadable newer one is reported in one line and skipped. Raises the last
        :class:`UnreadableCheckpoint` when none reads; an architecture mismatch is raised at once.
        ``report_topology``: also say when the checkpoint was written on another topology
        (mesh, devices, processes) than ``abstract_state``'s shardings (a resume does)."""

        def restored(out):
            if report_topology:
                self._say_topology(out[1], abstract_state, say)
            return out

        if step is not None:
            return restored(self.restore(abstract_state, step))
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            self._resolve(None)
        for i, s in enumerate(steps):
            try:
                return restored(self.restore(abstract_state, s))
            except UnreadableCheckpoint as e:
                nxt = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint"
                say(f"{e}; {nxt}")
                if i + 1 == len(steps):
                    raise UnreadableCheckpoint(f"no readable checkpoint in {self.directory} "
                                               f"(tried steps {steps})") from None

    def _say_topology(self, meta: dict, abstract_state: Any, say: Callable[[str], None]) -> None:
        saved, now = meta.get("topology"), topology(abstract_state)
        if saved is not None and saved != now:
            say(f"restored {self._step_dir(int(meta.get('step', -1)))}, written on {_describe(saved)}, "
                f"onto {_describe(now)}")

    def delete_after(self, step: int, say: Callable[[str], None] = print) -> None:
        """Deletes the checkpoints of steps after ``step`` (a resume from ``step`` rewrites them).
        With several processes every process calls it (orbax: process 0 deletes, all wait)."""
        for s in sorted(self.all_steps()):
            if s > step:
                say(f"deleting checkpoint {self._step_dir(s)} (the run resumes from step {step})")
                self._mgr.delete(s)

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _resolve(self, step: Optional[int]) -> int:
        if not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoint directory at {self.directory}")
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
        elif step not in self.all_steps():
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
        return step
