"""``make_train_step``: one compiled, sharded, donated train step for any family.

The step runs the model's :class:`gen_jax.model.Phase` list in order:

* a gradient phase differentiates its loss w.r.t. its parameter group only and applies that
  group's optax optimizer (GAN discriminator / generator, or the whole model);
* a gradient-free phase replaces the params with what its ``update`` returns (EM);
* a phase with ``repeats = k`` runs k times under ``lax.scan`` (k discriminator steps);
* groups no phase names are never touched (frozen stage-one params of two-stage models).

If any metric of the step is non-finite the state is left unchanged (the guard is a
``jnp.where`` on device, no host round trip) and ``metrics['finite']`` is 0, so the loop can
stop with an error naming the step and the offending terms while the last good state and
checkpoint stay valid.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from gen_jax.model import Phase
from gen_jax.train.state import TrainState

ALL = "__all__"


def group_key(group: Optional[str]) -> str:
    return ALL if group is None else group


def select_group(params, group: Optional[str]):
    if group is None:
        return params
    if not isinstance(params, Mapping) or group not in params:
        raise KeyError(f"parameter group {group!r} not in params (groups: {list(params)})")
    return params[group]


def merge_group(params, group: Optional[str], value):
    if group is None:
        return value
    out = dict(params)
    out[group] = value
    return out


def _mean_metrics(m):
    return jax.tree.map(lambda v: jnp.mean(v.astype(jnp.float32)), m)


def make_step_fn(
    phases: Sequence[Phase],
    optimizers: Mapping[str, optax.GradientTransformation],
    *,
    ema_decay: Optional[float] = None,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """The un-jitted pure step ``(state, batch) -> (state, metrics)`` (see module docstring).

    Metrics: every phase's loss terms (prefixed ``<phase>/`` when there are several phases),
    its ``grad_norm``, ``update_norm`` and ``param_norm``, and ``finite`` (1.0 or 0.0).
    """
    multi = len(phases) > 1

    def run_phase(phase: Phase, pidx: int, params, opt_state, model_state, batch, key):
        g = group_key(phase.group)

        def once(carry, rkey):
            params, opt_state, model_state = carry
            if phase.update is not None:
                new_params, m = phase.update(params, batch, rkey)
                m = dict(_mean_metrics(m))
                return (new_params, opt_state, model_state), m
            tx = optimizers[g]

            def loss_of_group(gp):
                full = merge_group(params, phase.group, gp)
                if phase.stateful:
                    loss, (m, ms) = phase.loss(full, model_state, batch, rkey)
                    return loss, (m, ms)
                loss, m = phase.loss(full, batch, rkey)
                return loss, (m, model_state)

            gp = select_group(params, phase.group)
            (loss, (m, model_state)), grads = jax.value_and_grad(loss_of_group, has_aux=True)(gp)
            updates, new_os = tx.update(grads, opt_state[g], gp)
            new_gp = optax.apply_updates(gp, updates)
            m = dict(_mean_metrics(m))
            m["loss"] = loss.astype(jnp.float32)
            m["grad_norm"] = optax.tree.norm(grads)
            m["update_norm"] = optax.tree.norm(updates)
            m["param_norm"] = optax.tree.norm(new_gp)
            opt_state = dict(opt_state)
            opt_state[g] = new_os
            return (merge_group(params, phase.group, new_gp), opt_state, model_state), m

        carry = (params, opt_state, model_state)
        if phase.repeats == 1:
            (params, opt_state, model_state), m = once(carry, key)
        else:
            keys = jax.random.split(key, phase.repeats)
            (params, opt_state, model_state), ms = jax.lax.scan(once, carry, keys)
            m = jax.tree.map(jnp.mean, ms)  # mean over the k repeats
        prefix = f"{phase.name or g}/" if multi else ""
        return params, opt_state, model_state, {prefix + k: v for k, v in m.items()}

    def step_fn(state: TrainState, batch):
        key = jax.random.fold_in(state.rng, state.step)
        params, opt_state, model_state = state.params, state.opt_state, state.model_state
        metrics = {}
        for i, phase in enumerate(phases):
            params, opt_state, model_state, m = run_phase(
                phase, i, params, opt_state, model_state, batch, jax.random.fold_in(key, i))
            metrics.update(m)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
        finite = finite & jnp.all(jnp.stack(
            [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)
             if jnp.issubdtype(x.dtype, jnp.floating)] or [jnp.array(True)]))
        ema = state.ema_params
        if ema is not None:
            d = jnp.float32(ema_decay if ema_decay is not None else 0.999)
            ema = jax.tree.map(lambda e, p: (d * e + (1 - d) * p).astype(e.dtype), ema, params)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema, model_state=model_state)
        # Non-finite step: keep the old state (the step counter still advances so the loop
        # can report which step failed; the loop stops there).
        kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        kept = kept.replace(step=state.step + 1)
        metrics["finite"] = finite.astype(jnp.float32)
        return kept, metrics

    return step_fn


def make_train_step(
    phases: Sequence[Phase],
    optimizers: Mapping[str, optax.GradientTransformation],
    *,
    ema_decay: Optional[float] = None,
    state_sharding=None,
    batch_sharding=None,
    donate: bool = True,
):
    """``train_step(state, batch) -> (state, metrics)`` compiled with ``jax.jit``.

    Args:
      phases: the model's phases (``GenerativeModel.train_phases()``).
      optimizers: ``group_key(phase.group) -> optax transformation`` for gradient phases.
      ema_decay: EMA decay for ``state.ema_params`` (ignored when the state has no EMA).
      state_sharding: a pytree of ``NamedSharding`` matching the state (from
        :func:`gen_jax.train.sharding.state_shardings`), or ``None`` for default placement.
      batch_sharding: sharding of every batch leaf (data-parallel: leading axis over 'data').
      donate: donate the input state buffers (the caller must not reuse the old state).
    """
    step_fn = make_step_fn(phases, optimizers, ema_decay=ema_decay)
    kwargs = {}
    if state_sharding is not None:
        kwargs["in_shardings"] = (state_sharding, batch_sharding)
        kwargs["out_shardings"] = (state_sharding, None)
    return jax.jit(step_fn, donate_argnums=(0,) if donate else (), **kwargs)
