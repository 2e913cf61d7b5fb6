"""The train loop: any :class:`GenerativeModel`, any mesh, resumable to the exact trajectory.

``train(exp, model, workdir, arrays, info)``:

1. mesh and shardings (data parallel; parameter rules from ``config.mesh``);
2. the deterministic batch stream (batch ``s`` depends only on ``(seed, s)``);
3. params from ``jax.jit(model.init)`` (with output shardings), optimizers, the state;
4. restore the latest checkpoint if the workdir has one (same config and architecture);
5. loop: step, check finiteness (one step behind, so the device never idles), log to
   ``metrics.jsonl`` + TensorBoard, checkpoint (async orbax), draw sample grids;
6. final checkpoint, loss-curve PNG.

A killed run restarted on the same workdir continues from its last checkpoint and writes
exactly the metrics an uninterrupted run would have written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from gen_jax.model import GenerativeModel
from gen_jax.train import sharding as shd
from gen_jax.train.checkpoint import Checkpointer
from gen_jax.train.experiment import ExperimentConfig
from gen_jax.train.optim import make_optimizer
from gen_jax.train.state import TrainState, create_train_state
from gen_jax.train.step import group_key, make_train_step
from gen_jax.train.writers import MetricWriter, read_metrics


class NonFiniteError(FloatingPointError):
    """A train step produced a non-finite loss term, gradient or parameter."""


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    last_metrics: dict
    seconds: float          # wall time of this call's training steps (compile included)
    resumed_from: Optional[int]
    mesh: Any


def sample_conditions(model: GenerativeModel, info, num: int, arrays: Optional[dict] = None) -> Optional[dict]:
    """Conditions for ``num`` samples of a conditional model (``None`` for unconditional ones).

    * ``condition_key='label'``: labels cycling ``0..C-1`` (as int32 numpy); datasets with
      local conditioning also give the ``local_cond`` of the first ``num`` examples of ``arrays``.
    * ``condition_key='caption_tokens'``: the captions of the first ``num`` examples of
      ``arrays`` (a split, cycled if shorter), with their labels under ``'label'``.
    """
    if not model.conditional:
        return None
    if model.condition_key == "label":
        cond = {"label": (np.arange(num) % max(info.num_classes, 1)).astype(np.int32)}
        if arrays is not None and "local_cond" in arrays:  # e.g. WaveNet's per-frame pitch ids
            local = np.asarray(arrays["local_cond"])
            cond["local_cond"] = local[np.arange(num) % len(local)]
        return cond
    key = model.condition_key
    if arrays is None or key not in arrays:
        raise ValueError(f"model {model.name!r} samples from {key!r} conditions; the dataset split "
                         f"given has {'no split' if arrays is None else sorted(arrays)}")
    idx = np.arange(num) % len(arrays[key])
    cond = {key: np.asarray(arrays[key])[idx]}
    if "label" in arrays:
        cond["label"] = np.asarray(arrays["label"])[idx].astype(np.int32)
    return cond


def eval_params(state: TrainState):
    """The params to sample and evaluate with: the EMA when the run keeps one."""
    return state.ema_params if state.ema_params is not None else state.params


def init_state(exp: ExperimentConfig, model: GenerativeModel, example_batch, mesh, batch_sh):
    """Builds optimizers, the abstract state, its shardings, and an init function."""
    phases = model.train_phases()
    groups = {group_key(p.group) for p in phases if p.loss is not None}
    optimizers = {g: make_optimizer(exp.optim, exp.train.steps) for g in groups}
    use_ema = exp.train.ema_decay > 0
    rng = jax.random.PRNGKey(exp.seed)

    def make(rng, batch):
        k_init, k_run = jax.random.split(rng)
        params = model.init(k_init, batch)
        return create_train_state(params, optimizers, k_run, phases=phases, use_ema=use_ema)

    abstract = jax.eval_shape(make, rng, example_batch)
    state_sh = shd.state_shardings(abstract, mesh, exp.mesh)
    init_fn = jax.jit(make, in_shardings=(shd.replicated(mesh), batch_sh), out_shardings=state_sh)
    return phases, optimizers, abstract, state_sh, lambda batch: init_fn(rng, batch)


def _with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def train(
    exp: ExperimentConfig,
    model: GenerativeModel,
    workdir: str,
    stream,
    info,
    *,
    progress: bool = True,
    stop_after: Optional[int] = None,
    mesh=None,
) -> TrainResult:
    """Trains ``model`` on batches of ``stream`` (a :class:`gen_jax.data.pipeline.BatchStream`
    already bound to the mesh's batch sharding). ``stop_after`` ends the call after that many
    total steps (for tests that simulate an interruption)."""
    mesh = mesh or shd.make_mesh(exp.mesh.num_devices)
    batch_sh = shd.batch_sharding(mesh)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    meta = {"model": model.name, "family": model.family, "config": exp.raw.to_json()}

    example = stream.batch_at(0)
    phases, optimizers, abstract, state_sh, init_fn = init_state(exp, model, example, mesh, batch_sh)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=exp.train.keep_checkpoints)
    resumed_from = ckpt.latest_step()
    if resumed_from is not None:
        state, _ = ckpt.restore(_with_shardings(abstract, state_sh))
    else:
        state = init_fn(example)
    start = int(state.step)
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start)
    train_step = make_train_step(phases, optimizers, ema_decay=exp.train.ema_decay or None,
                                 state_sharding=state_sh, batch_sharding=batch_sh)
    sample_fn = None
    if model.sample is not None:
        sample_fn = jax.jit(model.sample, static_argnums=(2,))

    total = exp.train.steps if stop_after is None else min(stop_after, exp.train.steps)
    last_good_ckpt = resumed_from
    pending = None  # (step number, metrics) of the previous step, checked one step behind
    last_metrics: dict = {}
    t0 = time.time()

    def check(step_no, metrics):
        nonlocal last_metrics
        host = jax.device_get(metrics)
        if host["finite"] < 1:
            bad = sorted(k for k, v in host.items() if k != "finite" and not np.isfinite(v))
            ckpt.wait()
            raise NonFiniteError(
                f"non-finite values at step {step_no}: "
                f"{', '.join(bad) if bad else 'parameters (loss terms were finite)'}; "
                f"the state was not updated by that step; last good checkpoint: "
                f"{'none' if last_good_ckpt is None else f'step {last_good_ckpt}'} in {ckpt.directory}")
        last_metrics = {k: float(v) for k, v in host.items()}
        return last_metrics

    bar = tqdm(range(start, total), initial=start, total=total, disable=not (progress and is_main),
               desc=model.name, dynamic_ncols=True)
    try:
        for s in bar:
            batch = stream.batch_at(s)
            state, metrics = train_step(state, batch)
            done = s + 1
            if pending is not None:
                check(*pending)
            pending = (done, metrics)
            if done % exp.train.log_every == 0 or done == total:
                check(*pending)
                pending = None
                writer.write(done, {k: v for k, v in last_metrics.items() if k != "finite"})
                bar.set_postfix(loss=f"{last_metrics.get('loss', float('nan')):.4g}")
            if done % exp.train.ckpt_every == 0 or done == exp.train.steps:
                if pending is not None:
                    check(*pending)
                    pending = None
                ckpt.save(done, state, meta)
                last_good_ckpt = done
            if sample_fn is not None and exp.train.sample_every and done % exp.train.sample_every == 0 and is_main:
                _write_grid(sample_fn, state, model, info, exp, workdir, done, stream)
        if pending is not None:
            check(*pending)
    finally:
        writer.close()
        ckpt.close()
    seconds = time.time() - t0
    if is_main and total == exp.train.steps:
        if sample_fn is not None:
            _write_grid(sample_fn, state, model, info, exp, workdir, total, stream)
        _write_curves(workdir, model.name)
    return TrainResult(state=state, last_metrics=last_metrics, seconds=seconds,
                       resumed_from=resumed_from, mesh=mesh)


def _write_grid(sample_fn, state, model, info, exp, workdir, step, stream):
    from gen_jax.viz import save_grid

    n = exp.train.grid_size
    key = jax.random.fold_in(jax.random.PRNGKey(exp.seed + 1), step)
    x = np.asarray(sample_fn(eval_params(state), key, n, sample_conditions(model, info, n, stream.arrays)))
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    if "describe_samples" in model.extras:  # text (and other non-image) models: one line per sample
        with open(os.path.join(workdir, "samples", f"samples_{step:07d}.txt"), "w") as f:
            f.write("\n".join(model.extras["describe_samples"](x)) + "\n")
    elif x.ndim == 4 and x.shape[1] > 1 and x.shape[2] > 1:
        save_grid(os.path.join(workdir, "samples", f"grid_{step:07d}.png"), x)
    else:  # e.g. 1-D signals stored as [N, T, 1, 1]
        np.save(os.path.join(workdir, "samples", f"samples_{step:07d}.npy"), x)


def _write_curves(workdir, title):
    from gen_jax.viz import save_curves

    try:
        recs = read_metrics(workdir)
    except FileNotFoundError:
        return
    keys = [k for k in ("loss", "grad_norm") if any(k in r for r in recs)]
    keys += sorted({k for r in recs for k in r if k.endswith("/loss")})
    if keys:
        save_curves(os.path.join(workdir, "loss_curve.png"), recs, keys, title=title)
