"""The train loop: any :class:`gen_jax.model.Model`, any mesh, resumable to the exact trajectory.

``train(exp, model, workdir, arrays, info)``:

1. mesh and shardings (data parallel; parameter rules from ``config.mesh``);
2. the deterministic batch stream (batch ``s`` depends only on ``(seed, s)``);
3. params from ``jax.jit(model.training.init)`` (with output shardings), one optimizer per
   trained group (its ``config.optim`` section), the state; frozen stage-one params placed
   once on the mesh (an argument of every step, never in the state or the checkpoint);
4. restore the latest readable checkpoint if the workdir has one (same architecture; the
   config it was trained with is compared first, :mod:`gen_jax.train.resume`);
5. loop: step, check finiteness (one step behind, so the device never idles), log to
   ``metrics.jsonl`` + TensorBoard, checkpoint (async orbax), draw sample grids; every
   ``config.train.eval_every`` steps run the caller's ``evaluator`` on the sampling params
   (logged as ``eval/<name>``) and keep the best checkpoint by ``config.train.best_metric``
   (:mod:`gen_jax.train.best`);
6. final checkpoint, loss-curve PNG.

A killed run restarted on the same workdir continues from its last checkpoint and writes
exactly the metrics an uninterrupted run would have written. The workdir is locked for the
whole call (:mod:`gen_jax.train.lock`): a second training into it fails at once.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from gen_jax import xla_options
from gen_jax.config import ConfigError
from gen_jax.model import MODEL_STATE, Model, full_params
from gen_jax.train import sharding as shd
from gen_jax.train.best import BestTracker, best_dir
from gen_jax.train.checkpoint import Checkpointer
from gen_jax.train.experiment import ExperimentConfig
from gen_jax.train.lock import WorkdirLock
from gen_jax.train.optim import make_optimizer, optimizer_for
from gen_jax.train.resume import check_resume, run_warnings
from gen_jax.train.state import TrainState, group_key, with_ema
from gen_jax.train.step import create_train_state, make_train_step
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


def sample_conditions(model: Model, info, num: int, arrays: Optional[dict] = None) -> Optional[dict]:
    """Conditions for ``num`` samples (``model.conditioning.draw``), ``None`` without conditioning."""
    cond = getattr(model, "conditioning", None)
    return None if cond is None else cond.draw(num, arrays)


def eval_params(state: TrainState, model: Optional[Model] = None):
    """The params to sample and evaluate with: the EMA of the EMA groups where the run keeps
    one, merged with the model's frozen groups (``model`` given), and for a model with
    non-trained state (``training.init_model_state``: batch statistics) that state under
    ``params[MODEL_STATE]``."""
    groups = None if model is None else model.training.ema_groups
    params = with_ema(state.params, state.ema_params, groups)
    if model is None:
        return params
    params = full_params(model, params)
    if model.training.init_model_state is not None and state.model_state:
        params = {**params, MODEL_STATE: state.model_state}
    return params


def make_optimizers(exp: ExperimentConfig, phases) -> dict:
    """``{group key: optax transformation}``, one per trained group, from its config section;
    a group trained by phases naming different sections is a ``ConfigError``."""
    chosen: dict = {}
    for p in phases:
        if p.loss is None:
            continue
        for g in p.groups:
            section, cfg = optimizer_for(p, g, exp.optim, exp.optim_sections)
            k = group_key(g)
            if k in chosen and chosen[k][0] != section:
                raise ConfigError(f"config.optim: group {k!r} is trained by phases naming the optimizer "
                                  f"sections {chosen[k][0]!r} and {section!r}; one group has one optimizer")
            chosen[k] = (section, cfg)
    return {k: make_optimizer(cfg, exp.train.steps) for k, (_, cfg) in chosen.items()}


def init_state(exp: ExperimentConfig, model: Model, example_batch, mesh, batch_sh):
    """Builds optimizers, the abstract state, its shardings, and an init function."""
    tr = model.training
    optimizers = make_optimizers(exp, tr.phases)
    use_ema = exp.train.ema_decay > 0 and tr.ema_groups != ()
    rng = jax.random.PRNGKey(exp.seed)

    def make(rng, batch):
        k_init, k_run = jax.random.split(rng)
        params = tr.init(k_init, batch)
        ms = tr.init_model_state(k_init, batch) if tr.init_model_state is not None else None
        return create_train_state(params, optimizers, k_run, phases=tr.phases, ema_groups=tr.ema_groups,
                                  use_ema=use_ema, model_state=ms)

    abstract = jax.eval_shape(make, rng, example_batch)
    state_sh = shd.state_shardings(abstract, mesh, exp.mesh)
    init_fn = xla_options.jit(make, in_shardings=(shd.replicated(mesh), batch_sh), out_shardings=state_sh)
    return tr.phases, optimizers, abstract, state_sh, lambda batch: init_fn(rng, batch)


def progress_metric(metrics: dict) -> dict:
    """The one metric the progress bar shows: ``loss``, or for a model without one (e.g. the
    GMM's EM, which reports ``loglik``) its first other metric, as ``{name: '%.4g'}``."""
    norms = ("finite", "grad_norm", "update_norm", "param_norm")
    losses = sorted(k for k in metrics if k == "loss" or k.endswith("/loss"))  # 'd/loss': a phase's loss
    names = losses or sorted(k for k in metrics if k.split("/")[0] not in norms)
    return {names[0]: f"{metrics[names[0]]:.4g}"} if names else {}


def step_batches(stream, step: int, per_step: int) -> tuple:
    """The ``per_step`` fresh batches of train step ``step``: stream batches
    ``step * per_step + r`` (one model, one deterministic order, resumable)."""
    return tuple(stream.batch_at(step * per_step + r) for r in range(per_step))


def place_frozen(model: Model, mesh):
    """The model's frozen groups on the mesh, replicated (``{}`` without frozen groups)."""
    frozen = dict(model.training.frozen)
    return jax.device_put(frozen, shd.replicated(mesh)) if frozen else {}


def _with_shardings(abstract, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def train(
    exp: ExperimentConfig,
    model: Model,
    workdir: str,
    stream,
    info,
    *,
    progress: bool = True,
    stop_after: Optional[int] = None,
    mesh=None,
    resume_step: Optional[int] = None,
    allow_config_change: bool = False,
    evaluator: Optional[Callable[[Any], dict]] = None,
) -> TrainResult:
    """Trains ``model`` on batches of ``stream`` (a :class:`gen_jax.data.pipeline.BatchStream`
    already bound to the mesh's batch sharding). ``stop_after`` ends the call after that many
    total steps (for tests that simulate an interruption); ``resume_step`` resumes from that
    checkpoint instead of the newest readable one (later ones are deleted);
    ``allow_config_change`` resumes under a config that leaves the checkpoint's trajectory.
    ``evaluator(params) -> {name: float}`` scores the sampling params (:func:`eval_params`)
    every ``config.train.eval_every`` steps (e.g. FID of the EMA generator; the experiment edge
    builds it); ``config.train.best_metric`` then keeps the best checkpoint in ``<workdir>/best``.

    Raises:
      WorkdirLocked: another live process trains into ``workdir``.
      ConfigError: a resume under a changed config (:func:`gen_jax.train.resume.check_resume`).
      CheckpointError: no checkpoint of ``workdir`` reads, or one of another architecture.
    """
    is_main = jax.process_index() == 0
    if not is_main:
        return _train(exp, model, workdir, stream, info, progress, stop_after, mesh, resume_step,
                      allow_config_change, evaluator)
    with WorkdirLock(workdir):
        return _train(exp, model, workdir, stream, info, progress, stop_after, mesh, resume_step,
                      allow_config_change, evaluator)


def _restore_or_init(exp, ckpt, abstract, state_sh, init_fn, example, resume_step, allow_change, is_main):
    """``(state, resumed_from)``: the checkpoint to resume from (checked against ``exp``;
    unreadable newer ones skipped and deleted) or a fresh init."""
    say = print if is_main else (lambda _: None)
    if ckpt.latest_step() is None and resume_step is None:
        return init_fn(example), None
    step = ckpt._resolve(resume_step)
    if resume_step is None:
        step = _newest_meta(ckpt, say)
    meta = ckpt.read_meta(step)
    check_resume(meta.get("config"), exp.raw.to_json(), step, exp.train.steps, ckpt._step_dir(step),
                 allow_change, say)
    state, meta = ckpt.restore_readable(_with_shardings(abstract, state_sh), resume_step, say, report_topology=True)
    resumed = int(meta.get("step", int(state.step)))
    ckpt.delete_after(resumed, say)  # on every process: orbax deletes on process 0 behind a barrier of all
    return state, resumed


def _newest_meta(ckpt, say) -> int:
    """The newest step whose metadata reads (an unreadable one is reported by the restore)."""
    from gen_jax.train.checkpoint import UnreadableCheckpoint

    steps = sorted(ckpt.all_steps(), reverse=True)
    for s in steps:
        try:
            ckpt.read_meta(s)
            return s
        except UnreadableCheckpoint as e:
            say(f"{e}; skipping it")
    return steps[0]


def _train(exp, model, workdir, stream, info, progress, stop_after, mesh, resume_step, allow_config_change,
           evaluator):
    mesh = mesh or shd.mesh_from_config(exp.mesh)
    batch_sh = shd.batch_sharding(mesh)
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    meta = {"model": model.name, "family": getattr(model, "family", "predictor"), "config": exp.raw.to_json()}
    per_step = model.training.batches_per_step
    if is_main:
        for w in run_warnings(exp, stream.num_examples):
            print(f"warning: {w}", flush=True)

    example = stream.batch_at(0)
    phases, optimizers, abstract, state_sh, init_fn = init_state(exp, model, example, mesh, batch_sh)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=exp.train.keep_checkpoints)
    try:
        state, resumed_from = _restore_or_init(exp, ckpt, abstract, state_sh, init_fn, example, resume_step,
                                               allow_config_change, is_main)
    except Exception:
        ckpt.close()
        raise
    start = int(state.step)
    writer = MetricWriter(workdir, enabled=is_main, resume_step=start)
    if exp.train.eval_every and evaluator is None and is_main:
        print("note: config.train.eval_every is set but no evaluator was given; nothing is evaluated", flush=True)
    best = (BestTracker(workdir, exp.train.best_metric, start, say=print if is_main else (lambda _: None))
            if exp.train.best_metric else None)
    train_step = make_train_step(phases, optimizers, ema_decay=exp.train.ema_decay or None,
                                 ema_groups=model.training.ema_groups, state_sharding=state_sh,
                                 batch_sharding=batch_sh, frozen_sharding=shd.replicated(mesh),
                                 grad_accum=exp.train.grad_accum)
    frozen = place_frozen(model, mesh)
    sampler = getattr(model, "sampler", None)
    # Sampling is collective under a multi-host mesh: every process calls it; the grid comes back
    # replicated (each process holds all of it) and process 0 writes it.
    sample_fn = None if sampler is None else xla_options.jit(sampler.sample, static_argnums=(2,),
                                                             out_shardings=shd.replicated(mesh))

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
            if s == start and is_main:
                print("compiling the train step...", end="", flush=True)
                t_compile = time.time()
            state, metrics = train_step(state, step_batches(stream, s, per_step), frozen)
            if s == start and is_main:
                jax.block_until_ready(metrics)
                print(f" done in {time.time() - t_compile:.1f} s", flush=True)
            done = s + 1
            if pending is not None:
                check(*pending)
            pending = (done, metrics)
            if done % exp.train.log_every == 0 or done == total:
                check(*pending)
                pending = None
                writer.write(done, {k: v for k, v in last_metrics.items() if k != "finite"})
                bar.set_postfix(progress_metric(last_metrics))
            if done % exp.train.ckpt_every == 0 or done == exp.train.steps:
                if pending is not None:
                    check(*pending)
                    pending = None
                ckpt.save(done, state, meta)
                last_good_ckpt = done
            if evaluator is not None and exp.train.eval_every and (done % exp.train.eval_every == 0 or done == exp.train.steps):
                if pending is not None:
                    check(*pending)
                    pending = None
                _evaluate(evaluator, state, model, writer, best, done, meta, is_main)
            if sample_fn is not None and exp.train.sample_every and done % exp.train.sample_every == 0:
                _write_grid(sample_fn, state, model, info, exp, workdir, done, stream, is_main)
        if pending is not None:
            check(*pending)
    finally:
        writer.close()
        ckpt.close()
        if best is not None:
            best.close()
    seconds = time.time() - t0
    if total == exp.train.steps:
        if sample_fn is not None:
            _write_grid(sample_fn, state, model, info, exp, workdir, total, stream, is_main)
        if is_main:
            _write_curves(workdir, model.name)
    return TrainResult(state=state, last_metrics=last_metrics, seconds=seconds,
                       resumed_from=resumed_from, mesh=mesh)


def _evaluate(evaluator, state, model, writer, best, step, meta, is_main):
    """One evaluation of the sampling params (on every process: sampling is collective), logged
    as ``eval/<name>`` by process 0; the best kept."""
    scores = {k: float(v) for k, v in evaluator(eval_params(state, model)).items()}
    writer.write(step, {f"eval/{k}": v for k, v in scores.items()})
    if best is not None and best.update(step, scores, state, meta) and is_main:
        print(f"step {step}: best {best.metric} so far, {scores[best.metric]:.4g} (saved in "
              f"{best_dir(best.workdir)})", flush=True)


def _write_grid(sample_fn, state, model, info, exp, workdir, step, stream, is_main=True):
    from gen_jax.viz import save_grid

    n = exp.train.grid_size
    key = jax.random.fold_in(jax.random.PRNGKey(exp.seed + 1), step)
    params = eval_params(state, model)
    x = np.asarray(sample_fn(params, key, n, sample_conditions(model, info, n, stream.arrays)))
    if not is_main:
        return
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    kind = model.sampler.kind
    if kind == "image":
        save_grid(os.path.join(out, f"grid_{step:07d}.png"), x)
    elif kind == "tokens" and model.sampler.describe is not None:  # one line per sample
        with open(os.path.join(out, f"samples_{step:07d}.txt"), "w") as f:
            f.write("\n".join(model.sampler.describe(x)) + "\n")
    else:  # signals (and undescribed tokens) as arrays
        np.save(os.path.join(out, f"samples_{step:07d}.npy"), x)


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
