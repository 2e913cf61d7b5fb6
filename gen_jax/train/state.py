"""The train state pytree and the parameter groups it is made of."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.struct
import jax

PyTree = Any
ALL = "__all__"  # the optimizer-state key of a phase that trains every param (group None)


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped (frozen stage-one params are
    not part of it: they are an argument of the step, see :mod:`gen_jax.train.step`).

    Attributes:
      step: int32 scalar, number of completed train steps.
      params: the trained parameter pytree (a dict of groups for multi-group models).
      opt_state: dict ``group -> optax state`` (``'__all__'`` when one optimizer owns all).
      ema_params: exponential moving average of the EMA groups' params: the whole ``params``
        tree when the model names no groups (``Training.ema_groups is None``), else
        ``{group: params[group]}`` of the named groups only; ``None`` without EMA.
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


def group_key(group: Optional[str]) -> str:
    """The optimizer-state key of a group (``None`` -> ``'__all__'``)."""
    return ALL if group is None else group


def select_group(params, group: Optional[str]):
    """``params[group]`` (``params`` itself for ``None``); a ``KeyError`` naming the groups."""
    if group is None:
        return params
    if not isinstance(params, Mapping) or group not in params:
        have = list(params) if isinstance(params, Mapping) else type(params).__name__
        raise KeyError(f"parameter group {group!r} not in params (groups: {have})")
    return params[group]


def merge_group(params, group: Optional[str], value):
    """``params`` with ``group`` replaced by ``value`` (``value`` itself for ``None``)."""
    if group is None:
        return value
    out = dict(params)
    out[group] = value
    return out


def ema_view(params, ema_groups: Optional[tuple[str, ...]]):
    """The part of ``params`` an EMA tracks: all of it (``None``) or the named groups."""
    if ema_groups is None:
        return params
    return {g: select_group(params, g) for g in ema_groups}


def with_ema(params, ema, ema_groups: Optional[tuple[str, ...]]):
    """``params`` with the EMA groups replaced by their averages (the params to sample with)."""
    if ema is None:
        return params
    if ema_groups is None:
        return ema
    out = dict(params)
    out.update(ema)
    return out
