"""``make_train_step``: one compiled, sharded, donated train step for any model.

``train_step(state, batches, frozen) -> (state, metrics)`` runs the model's
:class:`gen_jax.model.Phase` list in order:

* a gradient phase differentiates its loss w.r.t. its parameter group only and applies that
  group's optax optimizer (each group has its own optimizer and its own config section:
  a GAN's ``config.optim.disc`` and ``config.optim.gen``);
* a phase over several groups is a simultaneous update: one forward pass returns one loss per
  group, and each group follows the gradient of its own loss (one VJP per group);
* a gradient-free phase replaces the params with what its ``update`` returns (EM);
* a phase with ``repeats = k`` runs k times under ``lax.scan``, repeat ``r`` on ``batches[r]``:
  the step receives ``R = max(repeats)`` fresh batches of the stream (a phase with one repeat
  sees ``batches[0]``);
* ``frozen`` holds the stage-one params of two-stage models (``Training.frozen``): merged into
  the params every loss sees, never differentiated, never donated, never in the state;
* the EMA tracks only the groups the model names (``Training.ema_groups``);
* with ``grad_accum = k`` (``config.train.grad_accum``) every gradient update splits its
  batch into ``k`` micro-batches and accumulates their gradients under ``lax.scan`` before
  its one optimizer update (:class:`Accumulation`).

If a loss term or a gradient of the step is non-finite the state is left unchanged and
``metrics['finite']`` is 0, so the loop can stop with an error naming the step and the
offending terms while the last good state and checkpoint stay valid. The guard is decided
*before* the update, from the loss terms and the gradient norm (scalars), so each
``where(ok, new, old)`` fuses into the optimizer's own elementwise pass: guarding the finished
state instead read and wrote the whole state (params, optimizer moments, EMA) once more per
step (ddpm_digits: 1.26x slower, ``experiments/benchmarks/train_step_guard.py``). With several updates in a step (phases, repeats) a
failed update also skips every later one, and the state is restored as a whole at the end.
An update that overflows from finite gradients (non-finite ``update_norm``/``param_norm``)
is flagged too (``finite`` 0: the loop stops before any checkpoint holds it).

Keys: step ``s`` uses ``k_s = fold_in(rng, s)``; phase ``i`` uses ``fold_in(k_s, i)``, split
into ``repeats`` keys when it repeats.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from gen_jax import xla_options
from gen_jax.config import ConfigError
from gen_jax.model import Phase
from gen_jax.train.state import TrainState, ema_view, group_key, merge_group, select_group


def _mean_metrics(m):
    return jax.tree.map(lambda v: jnp.mean(v.astype(jnp.float32)), m)


def _merged(params, frozen):
    return {**params, **frozen} if frozen else params


def _finite(metrics) -> jax.Array:
    """All scalars of ``metrics`` are finite (a ``bool`` scalar)."""
    checks = [jnp.all(jnp.isfinite(v)) for v in metrics.values()]
    return jnp.all(jnp.stack(checks)) if checks else jnp.array(True)


def _unless(ok, new, old):
    """``new`` where the scalar ``ok`` holds, else ``old`` (leaf by leaf; fuses into the
    producer of ``new`` since ``ok`` is known before it)."""
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


@dataclasses.dataclass(frozen=True)
class Accumulation:
    """Gradient accumulation over ``steps`` micro-batches inside one update.

    Each gradient phase splits its batch ``[B, ...]`` into ``steps`` micro-batches of
    ``B / steps`` along the leading axis and runs them one after another under ``lax.scan``,
    summing the gradients; the update then applies their mean (and the metrics are the means
    over the micro-batches). For a loss that is a mean over the examples, the mean of the
    micro-batch gradients is the gradient of the whole batch, so the update is the large-batch
    update with the activations of one micro-batch in memory (the usual accumulation of
    data-parallel training; Goyal et al. 2017, Sec. 2). Micro-batch ``i`` uses key
    ``split(key, steps)[i]``, so a stochastic loss draws independent noise per micro-batch
    (equal in distribution, not bit for bit, to one pass over the whole batch); a stateful
    phase threads its state (batch statistics) through the micro-batches in order.

    With a ``batch_sharding`` the split is made within each device's rows: micro-batch ``i``
    holds rows ``i m .. (i + 1) m - 1`` of every data shard (``m = B / (shards steps)``), so no
    example crosses devices; ``B`` must be divisible by ``shards * steps``.

    Attributes:
      steps: micro-batches per update (``config.train.grad_accum``; 1 = no accumulation).
      batch_sharding: the sharding of every batch leaf (``None``: one shard).
    """

    steps: int = 1
    batch_sharding: Any = None

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"config.train.grad_accum: must be an int >= 1, got {self.steps!r}")

    def _shards(self, shape) -> int:
        if self.batch_sharding is None or not hasattr(self.batch_sharding, "shard_shape"):
            return 1
        return shape[0] // self.batch_sharding.shard_shape(shape)[0]

    def split(self, batch):
        """``batch`` leaves ``[B, ...]`` -> ``[steps, B / steps, ...]`` (class docstring)."""
        k = self.steps

        def one(x):
            if x.ndim == 0:
                raise ConfigError("config.train.grad_accum: accumulation splits every batch leaf along its "
                                  f"leading (batch) axis; got a scalar leaf (grad_accum={k})")
            b, shards = x.shape[0], self._shards(x.shape)
            if b % (shards * k):
                raise ConfigError(
                    f"config.train.grad_accum: the batch of {b} examples ({b // shards} per data shard, "
                    f"{shards} shard{'s' * (shards > 1)}) is not divisible into grad_accum={k} micro-batches "
                    f"per shard; choose a batch size divisible by {shards * k}")
            m = b // (shards * k)
            x = x.reshape((shards, k, m) + x.shape[1:]).swapaxes(0, 1).reshape((k, b // k) + x.shape[1:])
            spec = getattr(self.batch_sharding, "spec", None)
            if spec is not None and hasattr(self.batch_sharding, "mesh") and shards > 1:
                x = jax.lax.with_sharding_constraint(
                    x, NamedSharding(self.batch_sharding.mesh, PartitionSpec(None, *spec)))
            return x

        return jax.tree.map(one, batch)

    def run(self, grads_of: Callable, model_state, batch, key):
        """``grads_of(model_state, batch, key) -> (grads, metrics, model_state)`` over the
        micro-batches: ``(mean grads, mean metrics, last model_state)``; one call when
        ``steps == 1``."""
        k = self.steps
        if k == 1:
            return grads_of(model_state, batch, key)
        micro, keys = self.split(batch), jax.random.split(key, k)
        first = jax.tree.map(lambda x: x[0], micro)
        shapes = jax.eval_shape(lambda: grads_of(model_state, first, keys[0])[0])
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(carry, xs):
            acc, ms = carry
            grads, m, ms = grads_of(ms, *xs)
            return (jax.tree.map(jnp.add, acc, grads), ms), m

        (total, model_state), ms = jax.lax.scan(body, (zeros, model_state), (micro, keys))
        grads = jax.tree.map(lambda g: (g / k).astype(g.dtype), total)
        return grads, jax.tree.map(lambda v: jnp.mean(v, axis=0), ms), model_state


def _grad_phase(phase: Phase, tx, params, opt_state, model_state, batch, key, frozen, ok, accum):
    """One gradient update of a single-group phase, applied only where ``ok`` and its own loss
    terms and gradients are finite: ``(params, opt_state, model_state, metrics, ok)``.
    ``accum``: the :class:`Accumulation` of the step (gradients over its micro-batches)."""
    g = group_key(phase.group)
    gp = select_group(params, phase.group)

    def loss_of_group(gp, ms, batch, key):
        full = _merged(merge_group(params, phase.group, gp), frozen)
        if phase.stateful:
            return phase.loss(full, ms, batch, key)
        loss, m = phase.loss(full, batch, key)
        return loss, (m, ms)

    def grads_of(ms, batch, key):
        (loss, (m, new_ms)), grads = jax.value_and_grad(loss_of_group, has_aux=True)(gp, ms, batch, key)
        return grads, {**_mean_metrics(m), "loss": loss.astype(jnp.float32)}, new_ms

    grads, m, new_ms = accum.run(grads_of, model_state, batch, key)
    m = dict(m)
    m.update(grad_norm=optax.tree.norm(grads))
    ok = ok & _finite(m)
    updates, new_os = tx[g].update(grads, opt_state[g], gp)
    new_gp = _unless(ok, optax.apply_updates(gp, updates), gp)
    m.update(update_norm=optax.tree.norm(updates), param_norm=optax.tree.norm(new_gp))
    return (merge_group(params, phase.group, new_gp), {**opt_state, g: _unless(ok, new_os, opt_state[g])},
            _unless(ok, new_ms, model_state), m, ok)


def _simultaneous_phase(phase: Phase, tx, params, opt_state, model_state, batch, key, frozen, ok, accum):
    """A simultaneous update of several groups from one forward pass: the loss returns
    ``({group: scalar}, metrics)``; group ``g`` descends the gradient of its own scalar (every
    group's update applied only where ``ok`` and all losses and gradients are finite)."""
    groups = phase.groups
    gps = tuple(select_group(params, g) for g in groups)

    def losses_of(gps, ms, batch, key):
        full = dict(params)
        full.update(zip(groups, gps))
        if phase.stateful:  # ({group: scalar}, (metrics, model_state))
            losses, (m, ms) = phase.loss(_merged(full, frozen), ms, batch, key)
        else:
            (losses, m) = phase.loss(_merged(full, frozen), batch, key)
        missing = set(groups) - set(losses)
        if missing:
            raise KeyError(f"phase {phase.name!r}: the loss returned no scalar for groups {sorted(missing)}")
        return {g: losses[g] for g in groups}, (m, ms)

    def grads_of(ms, batch, key):
        losses, vjp, (m, new_ms) = jax.vjp(lambda p: losses_of(p, ms, batch, key), gps, has_aux=True)
        m, grads = dict(_mean_metrics(m)), {}
        for i, g in enumerate(groups):
            cot = {h: jnp.ones_like(v) if h == g else jnp.zeros_like(v) for h, v in losses.items()}
            grads[g] = vjp(cot)[0][i]
            m[f"loss/{g}"] = losses[g].astype(jnp.float32)
        return grads, m, new_ms

    grads, m, new_ms = accum.run(grads_of, model_state, batch, key)
    m = dict(m)
    m.update({f"grad_norm/{g}": optax.tree.norm(grads[g]) for g in groups})
    ok = ok & _finite(m)
    new_params, new_opt = dict(params), dict(opt_state)
    for i, g in enumerate(groups):
        updates, os_g = tx[g].update(grads[g], opt_state[g], gps[i])
        new_params[g] = _unless(ok, optax.apply_updates(gps[i], updates), gps[i])
        new_opt[g] = _unless(ok, os_g, opt_state[g])
        m.update({f"update_norm/{g}": optax.tree.norm(updates), f"param_norm/{g}": optax.tree.norm(new_params[g])})
    return new_params, new_opt, _unless(ok, new_ms, model_state), m, ok


def _run_phase(phase: Phase, tx, params, opt_state, model_state, batches, key, frozen, ok, accum):
    """``phase.repeats`` updates, repeat ``r`` on ``batches[r]``; metrics are means over repeats.
    ``ok``: every earlier update of the step was finite (a failed update skips the later ones)."""

    def once(carry, xs):
        params, opt_state, model_state, ok = carry
        rkey, batch = xs
        if phase.update is not None:
            new_params, m = phase.update(_merged(params, frozen), batch, rkey)
            new_params = {g: new_params[g] for g in params} if frozen else new_params
            m = dict(_mean_metrics(m))
            ok = ok & _finite(m) & _finite({i: x for i, x in enumerate(jax.tree.leaves(new_params))
                                            if jnp.issubdtype(x.dtype, jnp.floating)})
            return (_unless(ok, new_params, params), opt_state, model_state, ok), m
        fn = _simultaneous_phase if isinstance(phase.group, tuple) else _grad_phase
        params, opt_state, model_state, m, ok = fn(phase, tx, params, opt_state, model_state, batch, rkey, frozen, ok,
                                                   accum)
        return (params, opt_state, model_state, ok), m

    carry = (params, opt_state, model_state, ok)
    if phase.repeats == 1:
        return once(carry, (key, batches[0]))
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches[: phase.repeats])
    carry, ms = jax.lax.scan(once, carry, (jax.random.split(key, phase.repeats), stacked))
    return carry, jax.tree.map(jnp.mean, ms)


def make_step_fn(
    phases: Sequence[Phase],
    optimizers: Mapping[str, optax.GradientTransformation],
    *,
    ema_decay: Optional[float] = None,
    ema_groups: Optional[tuple[str, ...]] = None,
    grad_accum: int = 1,
    batch_sharding=None,
) -> Callable[[TrainState, Sequence, Mapping], tuple[TrainState, dict]]:
    """The un-jitted pure step ``(state, batches, frozen) -> (state, metrics)`` (module docstring).

    ``batches`` is a sequence of ``R = max(repeats)`` batch dicts; ``frozen`` a dict of frozen
    groups (``{}`` when the model has none). Metrics: every phase's loss terms (prefixed
    ``<phase>/`` when there are several phases), its ``grad_norm``, ``update_norm`` and
    ``param_norm``, and ``finite`` (1.0 or 0.0). ``grad_accum``: micro-batches per gradient
    update (:class:`Accumulation`; ``batch_sharding`` tells it the data shards).
    """
    accum = Accumulation(grad_accum, batch_sharding)
    multi = len(phases) > 1
    several_updates = multi or any(p.repeats > 1 for p in phases)

    def step_fn(state: TrainState, batches, frozen=None):
        frozen = {} if frozen is None else frozen
        if isinstance(batches, Mapping):
            batches = (batches,)
        need = max(p.repeats for p in phases)
        if len(batches) < need:
            raise ValueError(f"train step: the phases repeat up to {need} times and take {need} fresh "
                             f"batches; got {len(batches)}")
        key = jax.random.fold_in(state.rng, state.step)
        params, opt_state, model_state = state.params, state.opt_state, state.model_state
        metrics, ok = {}, jnp.array(True)
        for i, phase in enumerate(phases):
            (params, opt_state, model_state, ok), m = _run_phase(
                phase, optimizers, params, opt_state, model_state, batches, jax.random.fold_in(key, i), frozen, ok,
                accum)
            prefix = f"{phase.name or group_key(phase.group)}/" if multi else ""
            metrics.update({prefix + k: v for k, v in m.items()})
        ema = state.ema_params
        if ema is not None:
            d = jnp.float32(ema_decay if ema_decay is not None else 0.999)
            ema = _unless(ok, jax.tree.map(lambda e, p: (d * e + (1 - d) * p).astype(e.dtype), ema,
                                           ema_view(params, ema_groups)), ema)
        # The step counter advances even when the step failed, so the loop can report which
        # step it was (the loop stops there).
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema, model_state=model_state)
        if several_updates:  # a later update failed: the earlier ones of the step are undone too
            new = _unless(ok, new, state).replace(step=state.step + 1)
        metrics["finite"] = (ok & _finite(metrics)).astype(jnp.float32)
        return new, metrics

    return step_fn


REMAT_CPU_OPTIONS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
"""XLA:CPU options of the train step that keep rematerialization (:mod:`gen_jax.nn.remat`).

``jax.checkpoint`` fences the recomputed forward pass with optimization barriers so that
common-subexpression elimination cannot merge it back into the original forward pass; the CPU
compiler's ``cse_barrier_expander`` pass removes those barriers before CSE, so on CPU the
recomputation was deduplicated and remat changed nothing (same compiled program, same temp
memory). With the pass disabled the barriers survive and remat lowers the step's temp memory
(``python -m experiments.benchmarks.remat_memory``). A program without barriers (no remat)
is unaffected; ``XLA_FLAGS`` naming ``--xla_disable_hlo_passes`` takes precedence."""


def step_compiler_options() -> dict:
    """The compiler options of the train step: :func:`gen_jax.xla_options.compiler_options`
    plus, on CPU, :data:`REMAT_CPU_OPTIONS`."""
    opts = dict(xla_options.compiler_options())
    if jax.default_backend() == "cpu" and "--xla_disable_hlo_passes" not in os.environ.get("XLA_FLAGS", ""):
        opts.update(REMAT_CPU_OPTIONS)
    return opts


def make_train_step(
    phases: Sequence[Phase],
    optimizers: Mapping[str, optax.GradientTransformation],
    *,
    ema_decay: Optional[float] = None,
    ema_groups: Optional[tuple[str, ...]] = None,
    state_sharding=None,
    batch_sharding=None,
    frozen_sharding=None,
    donate: bool = True,
    grad_accum: int = 1,
):
    """``train_step(state, batches, frozen={}) -> (state, metrics)`` compiled with ``jax.jit``.

    Args:
      phases: the model's phases (``model.training.phases``).
      optimizers: ``group_key(group) -> optax transformation`` for every trained group.
      ema_decay: EMA decay for ``state.ema_params`` (ignored when the state has no EMA).
      ema_groups: the groups the EMA tracks (``None`` = all params).
      state_sharding: a pytree of ``NamedSharding`` matching the state (from
        :func:`gen_jax.train.sharding.state_shardings`), or ``None`` for default placement.
      batch_sharding: sharding of every batch leaf (data-parallel: leading axis over 'data').
      frozen_sharding: sharding of every frozen leaf (replicated, typically).
      donate: donate the input state buffers (the caller must not reuse the old state);
        ``batches`` and ``frozen`` are never donated.
      grad_accum: micro-batches per gradient update (``config.train.grad_accum``,
        :class:`Accumulation`); the batch size per data shard must be divisible by it.
    """
    step_fn = make_step_fn(phases, optimizers, ema_decay=ema_decay, ema_groups=ema_groups,
                           grad_accum=grad_accum, batch_sharding=batch_sharding)
    kwargs = {}
    if state_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding, frozen_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    jitted = xla_options.jit(step_fn, donate_argnums=(0,) if donate else (), compiler_options=step_compiler_options(),
                             **kwargs)
    # Traced with the state's mesh active, so the networks' activation annotations
    # (gen_jax.nn.partitioning.constrain) apply; no mesh: they are no-ops.
    meshes = {s.mesh for s in jax.tree.leaves(state_sharding) if isinstance(s, NamedSharding)}
    active = (lambda: jax.set_mesh(next(iter(meshes)))) if len(meshes) == 1 else contextlib.nullcontext

    def train_step(state, batches, frozen=None):
        with active():
            return jitted(state, batches, {} if frozen is None else frozen)

    def lower(state, batches, frozen=None):
        with active():
            return jitted.lower(state, batches, {} if frozen is None else frozen)

    train_step.lower = lower  # for compiled memory / cost analysis (experiments/benchmarks)
    return train_step


def create_train_state(params, optimizers, rng, *, phases, ema_groups=None, use_ema: bool,
                       model_state=None) -> TrainState:
    """The initial state: one optimizer state per trained group, EMA of the EMA groups."""
    opt_state = {}
    for phase in phases:
        if phase.loss is None:
            continue
        for g in phase.groups:
            k = group_key(g)
            if k not in opt_state:
                opt_state[k] = optimizers[k].init(select_group(params, g))
    ema = jax.tree.map(jnp.copy, ema_view(params, ema_groups)) if use_ema else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, ema_params=ema,
                      model_state={} if model_state is None else model_state, rng=rng)
