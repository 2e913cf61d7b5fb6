"""Mesh and sharding helpers: data parallel by default, parameter sharding by name rules.

One mesh axis, ``'data'``, spans every device of every process. Batches are split along
their leading axis over ``'data'``. Parameters (and the matching optimizer and EMA leaves)
follow name rules: a list of ``(regex, tactic)`` pairs matched against the leaf's path
(``params/Dense_0/kernel``), first match wins:

* ``'replicate'``: a full copy on every device (plain data parallelism, the default);
* ``'fsdp'``: split the largest axis divisible by the device count over ``'data'`` (fully
  sharded data parallelism: XLA all-gathers for compute and reduce-scatters the gradients);
  leaves with fewer than ``fsdp_min_size`` elements or no divisible axis stay replicated.

So FSDP is a config change: ``config.mesh.rules = (('.*', 'fsdp'),)``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gen_jax.config import ConfigError

DATA_AXIS = "data"
TACTICS = ("replicate", "fsdp")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """``config.mesh``: how many devices to use and how parameters are placed."""

    num_devices: int = 0  # 0 = every device of every process
    rules: tuple = ()     # ((regex, tactic), ...); unmatched leaves are replicated
    fsdp_min_size: int = 2 ** 12

    def __post_init__(self):
        for i, rule in enumerate(self.rules):
            if len(rule) != 2 or rule[1] not in TACTICS:
                raise ConfigError(
                    f"config.mesh.rules[{i}]: expected (regex, one of {TACTICS}), got {rule!r}")
            try:
                re.compile(rule[0])
            except re.error as e:
                raise ConfigError(f"config.mesh.rules[{i}]: bad regex {rule[0]!r}: {e}") from e
        if self.num_devices < 0:
            raise ConfigError(f"config.mesh.num_devices: must be >= 0, got {self.num_devices}")


def make_mesh(num_devices: int = 0) -> Mesh:
    """A 1-D ``('data',)`` mesh over the first ``num_devices`` devices (0 = all)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(
            f"config.mesh.num_devices: {n} requested but only {len(devices)} devices exist")
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``'data'``."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "config.train.batch_size") -> None:
    n = mesh.devices.size
    if batch_size <= 0:
        raise ConfigError(f"{field}: must be > 0, got {batch_size}")
    if batch_size % n:
        raise ConfigError(
            f"{field}: {batch_size} is not divisible by the {n} devices of the mesh")


def _path_str(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            parts.append(k.name)
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        else:
            parts.append(str(k))
    return "/".join(parts)


def leaf_spec(path: str, shape: Sequence[int], mesh: Mesh, rules: Sequence, fsdp_min_size: int) -> P:
    """The ``PartitionSpec`` of one leaf under the name rules (see module docstring)."""
    n = mesh.devices.size
    for regex, tactic in rules:
        if re.search(regex, path):
            if tactic == "replicate" or n == 1 or int(np.prod(shape, dtype=np.int64)) < fsdp_min_size:
                return P()
            axes = sorted(range(len(shape)), key=lambda a: -shape[a])
            for a in axes:
                if shape[a] % n == 0:
                    spec = [None] * len(shape)
                    spec[a] = DATA_AXIS
                    return P(*spec)
            return P()
    return P()


def tree_shardings(abstract_tree: Any, mesh: Mesh, rules: Sequence = (), fsdp_min_size: int = 2 ** 12):
    """A ``NamedSharding`` per leaf of ``abstract_tree`` (arrays or ``ShapeDtypeStruct``s)."""

    def one(path, leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, leaf_spec(_path_str(path), shape, mesh, rules, fsdp_min_size))

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def state_shardings(abstract_state: Any, mesh: Mesh, cfg: Optional[MeshConfig] = None):
    """Shardings for a whole :class:`TrainState`: rules apply to params, the optimizer
    state and the EMA alike (leaf paths inside the optimizer state end with the param path,
    so one regex such as ``'kernel'`` places a parameter and its Adam moments together)."""
    cfg = cfg or MeshConfig()
    return tree_shardings(abstract_state, mesh, cfg.rules, cfg.fsdp_min_size)
