"""Activation sharding annotations for the networks: logical axis names -> mesh axes.

The trainer's mesh is 2-D, ``('data', 'model')`` (:mod:`gen_jax.train.sharding`): the batch is
split over ``'data'``; tensor parallelism (Shoeybi et al. 2019, "Megatron-LM", Sec. 3) splits
attention heads and the MLP hidden width over ``'model'``. Parameters are placed by name rules;
:func:`constrain` pins the matching *activations* so that XLA's sharding propagation keeps the
heads / hidden units on their devices between the column-parallel in-projection and the
row-parallel out-projection, and inserts exactly one all-reduce after the latter::

    q = constrain(q, 'batch', None, 'heads', None)      # [B, L, N, D]: heads over 'model'
    h = constrain(h, 'batch', None, 'mlp')               # [B, L, 4 d]: hidden over 'model'

Logical names (:data:`LOGICAL_AXES`): ``'batch'`` -> ``'data'``; ``'heads'``, ``'mlp'`` ->
``'model'``; ``None`` leaves a dimension unconstrained-replicated.

:func:`constrain` is a no-op (returns ``x`` itself) when no mesh is active (sampling, eager
calls, single-device code: the train step traces under ``jax.set_mesh``), when a named mesh
axis does not exist or has size 1, when the dimension is not divisible by the axis size (e.g.
one attention head on a model axis of 2), and inside ``shard_map`` over that axis (a manual
axis). So the networks carry the annotations unconditionally and nothing changes off-mesh.
"""
from __future__ import annotations

from typing import Optional

import jax
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
MODEL_AXIS = "model"

LOGICAL_AXES: dict = {"batch": DATA_AXIS, "heads": MODEL_AXIS, "mlp": MODEL_AXIS}


def mesh_axis_sizes() -> dict:
    """``{axis name: size}`` of the active (abstract) mesh, ``{}`` when none is active; manual
    axes (inside ``shard_map``) are left out."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return {}
    manual = set(getattr(mesh, "manual_axes", ()) or ())
    return {n: s for n, s in zip(mesh.axis_names, mesh.axis_sizes) if n not in manual}


def logical_spec(shape, names, sizes: dict) -> Optional[P]:
    """The ``PartitionSpec`` of an activation of ``shape`` with logical axis ``names`` on a mesh
    of axis ``sizes``, or ``None`` when nothing would be split (see :func:`constrain`)."""
    if len(names) != len(shape):
        raise ValueError(f"constrain: {len(names)} axis names {names} for an array of rank "
                         f"{len(shape)} (shape {tuple(shape)})")
    spec = []
    for dim, name in zip(shape, names):
        if name is not None and name not in LOGICAL_AXES:
            raise ValueError(f"constrain: unknown logical axis {name!r} (known: {sorted(LOGICAL_AXES)})")
        axis = LOGICAL_AXES.get(name)
        size = sizes.get(axis, 1)
        spec.append(axis if axis is not None and size > 1 and dim % size == 0 else None)
    return P(*spec) if any(a is not None for a in spec) else None


def constrain(x: jax.Array, *names: Optional[str]) -> jax.Array:
    """``x`` with its sharding pinned by logical axis ``names`` (one per dimension; module
    docstring); ``x`` unchanged when no active mesh axis would split it."""
    sizes = mesh_axis_sizes()
    if not sizes:
        return x
    spec = logical_spec(x.shape, names, sizes)
    return x if spec is None else jax.lax.with_sharding_constraint(x, spec)
