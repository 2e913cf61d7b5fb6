"""The train state pytree."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Attributes:
      step: int32 scalar, number of completed train steps.
      params: the model's parameter pytree (a dict of groups for multi-player models).
      opt_state: dict ``group -> optax state`` (``'__all__'`` when one optimizer owns all).
      ema_params: exponential moving average of ``params`` (same structure), or ``None``.
      model_state: non-trained model collections (e.g. batch statistics), ``{}`` if none.
      rng: base PRNG key (uint32 [2]); the key of step ``s`` is ``fold_in(rng, s)``, so a
        resumed run draws exactly the keys an uninterrupted run would have drawn.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    model_state: PyTree
    rng: jax.Array


def create_train_state(params, optimizers, rng, *, phases, use_ema: bool, model_state=None) -> TrainState:
    """Builds the initial state; one optimizer state per parameter group a phase trains."""
    from gen_jax.train.step import group_key, select_group  # local: step imports state

    opt_state = {}
    for phase in phases:
        if phase.loss is None:
            continue
        g = group_key(phase.group)
        if g not in opt_state:
            opt_state[g] = optimizers[g].init(select_group(params, phase.group))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        model_state={} if model_state is None else model_state,
        rng=rng,
    )
