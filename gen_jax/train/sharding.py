"""The 2-D device mesh ``('data', 'model')`` and parameter placement by name rules.

**Mesh.** Always two axes: ``'data'`` (batch split, FSDP) and ``'model'`` (tensor
parallelism). ``config.mesh.shape = (data, model)``, e.g. ``(4, 2)``; one entry may be ``-1``
(inferred from the device count, so one config runs on 8 CPU devices and on a pod); the empty
default puts every device on ``'data'`` (shape ``(n, 1)``: plain data parallelism, the old 1-D
behaviour). Devices fill the mesh row-major in ``jax.devices()`` order, so each process owns a
contiguous block of ``'data'`` rows (the batch stream needs this) whenever ``model`` divides
its local device count.

**Batches** are split along their leading axis over ``'data'`` only (replicated over
``'model'``): the global batch size must be divisible by the data-axis size.

**Parameters** (and the matching optimizer-state and EMA leaves, whose paths end with the
parameter path) follow name rules: ``(regex, tactic)`` pairs matched with ``re.search``
against the leaf path (``params/block_0/attn/query/kernel``); the first match wins, unmatched
leaves are replicated. ``config.mesh.rules`` are tried before the rules of
``config.mesh.preset``. Tactics:

* ``'replicate'``: a full copy on every device;
* ``'fsdp'``: split the largest axis divisible by the device count over ``('data', 'model')``
  jointly (every device; on a ``(n, 1)`` mesh: ``'data'``), else the largest divisible by the
  data-axis size over ``'data'`` (fully sharded data parallelism, Rajbhandari et al. 2020
  "ZeRO" stage 3: XLA all-gathers for compute and reduce-scatters the gradients); leaves
  smaller than ``fsdp_min_size`` elements or without a divisible axis stay unsplit;
* tensor parallelism over ``'model'`` (Shoeybi et al. 2019, "Megatron-LM", Sec. 3):

  - ``'tp_heads'``: attention q/k/v projections, ``DenseGeneral`` kernel ``[F, N, D]`` and
    bias ``[N, D]``: the heads axis ``N`` (rank-2 from the end);
  - ``'tp_heads_out'``: the attention output projection, kernel ``[N, D, F]``: axis ``N``
    (its bias ``[F]`` stays unsplit);
  - ``'tp_column'``: a column-parallel in-projection (MLP in, kernel ``[..., in, out]``, bias
    ``[out]``): the last axis;
  - ``'tp_row'``: a row-parallel out-projection (MLP out, kernel ``[..., in, out]``): axis
    ``in`` (rank-2 from the end; the bias stays unsplit);

* ``'<tp>+fsdp'`` (e.g. ``'tp_heads+fsdp'``): both; the TP axis over ``'model'`` first, then
  FSDP over ``'data'`` on the largest *other* axis divisible by the data-axis size (a leaf
  whose TP split does not apply is FSDP'd as by ``'fsdp'``).

A TP axis not divisible by the model-axis size (one U-Net attention head on a model axis of 2)
leaves the leaf unsplit over ``'model'`` (its FSDP part still applies); ``config.mesh.tp_strict
= True`` makes that a ``ConfigError`` naming the leaf instead. On a model axis of size 1 TP
tactics do nothing.

Presets (``config.mesh.preset``): ``'dp'`` (replicate everything), ``'fsdp'`` (``('.*',
'fsdp')``), ``'tp'`` (the TP rules of :data:`TP_RULES`, the rest replicated) and ``'fsdp_tp'``
(the TP rules composed with FSDP, the rest FSDP). The TP rules name the layers of
:mod:`gen_jax.nn.attention` (``attn``/``mha`` with ``query``/``key``/``value``/``out``), the MLP
of :mod:`gen_jax.nn.transformer`, :mod:`gen_jax.nn.dit` and CLIP (``mlp_in``/``mlp_out``), the
caption encoder (``layer<i>_mlp0/1``) and the U-Net residual blocks (``conv1``/``temb_proj``
column-, ``conv2`` row-parallel). The networks pin the matching activations
(:func:`gen_jax.nn.partitioning.constrain`).

So FSDP is ``config.mesh.preset = 'fsdp'``, and FSDP + TP on 8 devices
``config.mesh.shape = (4, 2); config.mesh.preset = 'fsdp_tp'``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gen_jax.config import ConfigError
from gen_jax.nn.partitioning import DATA_AXIS, MODEL_AXIS  # noqa: F401 (public names)

TP_TACTICS = ("tp_heads", "tp_heads_out", "tp_column", "tp_row")
TACTICS = ("replicate", "fsdp") + TP_TACTICS + tuple(f"{t}+fsdp" for t in TP_TACTICS)

_ATTN = r"(^|/)(attn|mha)/"
_RES = r"(^|/)(down\d+|up\d+|mid)_res\d+/"
TP_RULES = (
    (_ATTN + r"(query|key|value)/(kernel|bias)$", "tp_heads"),
    (_ATTN + r"out/kernel$", "tp_heads_out"),
    (r"(^|/)(mlp_in|layer\d+_mlp0)/(kernel|bias)$", "tp_column"),
    (r"(^|/)(mlp_out|layer\d+_mlp1)/kernel$", "tp_row"),
    (_RES + r"(conv1|temb_proj)/(kernel|bias)$", "tp_column"),
    (_RES + r"conv2/kernel$", "tp_row"),
)
PRESETS = {
    "dp": (),
    "fsdp": ((".*", "fsdp"),),
    "tp": TP_RULES,
    "fsdp_tp": tuple((r, f"{t}+fsdp") for r, t in TP_RULES) + ((".*", "fsdp"),),
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """``config.mesh``: the devices, the mesh shape, and how parameters are placed (module
    docstring)."""

    num_devices: int = 0  # 0 = every device of every process
    shape: tuple = ()     # (data, model); one entry may be -1; () = (num_devices, 1)
    preset: str = ""      # '' | 'dp' | 'fsdp' | 'tp' | 'fsdp_tp': rules tried after `rules`
    rules: tuple = ()     # ((regex, tactic), ...); unmatched leaves are replicated
    fsdp_min_size: int = 2 ** 12
    tp_strict: bool = False  # a TP axis not divisible by the model size: error, not unsplit

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
        if self.preset and self.preset not in PRESETS:
            raise ConfigError(f"config.mesh.preset: unknown preset {self.preset!r} (known: "
                              f"{', '.join(repr(p) for p in PRESETS)} or '' for none)")
        _check_shape(self.shape)
        if self.shape and self.num_devices and -1 not in self.shape \
                and int(np.prod(self.shape)) != self.num_devices:
            raise ConfigError(f"config.mesh.shape: {tuple(self.shape)} holds {int(np.prod(self.shape))} "
                              f"devices but config.mesh.num_devices = {self.num_devices}")

    @property
    def all_rules(self) -> tuple:
        """``rules`` followed by the preset's rules (first match wins)."""
        return tuple(self.rules) + PRESETS.get(self.preset, ())


def _check_shape(shape) -> None:
    shape = tuple(shape)
    if not shape:
        return
    if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape):
        raise ConfigError(f"config.mesh.shape: expected (data, model) integers, got {shape!r}")
    if any(s == 0 or s < -1 for s in shape) or shape.count(-1) > 1:
        raise ConfigError(f"config.mesh.shape: sizes must be positive (one may be -1 = inferred), got {shape!r}")


def resolve_shape(n: int, shape: Sequence[int] = ()) -> tuple[int, int]:
    """``(data, model)`` for ``n`` devices from ``config.mesh.shape`` (module docstring)."""
    _check_shape(shape)
    if not shape:
        return n, 1
    data, model = (int(s) for s in shape)
    if -1 in (data, model):
        known = model if data == -1 else data
        if n % known:
            raise ConfigError(f"config.mesh.shape: {tuple(shape)}: {n} devices are not divisible by {known}")
        data, model = (n // known, model) if data == -1 else (data, n // known)
    if data * model != n:
        raise ConfigError(f"config.mesh.shape: {tuple(shape)} holds {data * model} devices but {n} are used "
                          f"(config.mesh.num_devices, 0 = all {len(jax.devices())}); make the product {n} "
                          f"or set num_devices = {data * model}")
    return data, model


def make_mesh(num_devices: int = 0, shape: Sequence[int] = ()) -> Mesh:
    """The ``('data', 'model')`` mesh over the first ``num_devices`` devices (0 = all; with a
    full ``shape`` and ``num_devices = 0``, all devices too) of shape ``shape`` (module
    docstring; ``()`` = ``(n, 1)``)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if n > len(devices):
        raise ConfigError(
            f"config.mesh.num_devices: {n} requested but only {len(devices)} devices exist")
    data, model = resolve_shape(n, shape)
    return Mesh(np.asarray(devices[:n]).reshape(data, model), (DATA_AXIS, MODEL_AXIS))


def mesh_from_config(cfg: MeshConfig) -> Mesh:
    """:func:`make_mesh` of ``config.mesh``."""
    return make_mesh(cfg.num_devices, cfg.shape)


def axis_size(mesh: Mesh, name: str) -> int:
    """The size of mesh axis ``name`` (1 when the mesh has no such axis)."""
    return int(dict(mesh.shape).get(name, 1))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``'data'`` (replicated over ``'model'``)."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "config.train.batch_size") -> None:
    """``batch_size`` is positive and divisible by the data-axis size (``ConfigError`` naming
    ``field`` otherwise)."""
    n = axis_size(mesh, DATA_AXIS)
    if batch_size <= 0:
        raise ConfigError(f"{field}: must be > 0, got {batch_size}")
    if batch_size % n:
        what = (f"{n} devices of the mesh" if n == mesh.devices.size
                else f"data-axis size {n} of the mesh {dict(mesh.shape)}")
        raise ConfigError(f"{field}: {batch_size} is not divisible by the {what}")


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


def _tp_axis(tactic: str, ndim: int) -> Optional[int]:
    """The axis a TP tactic splits on a leaf of rank ``ndim`` (``None``: this leaf has none,
    e.g. the bias of a row-parallel projection)."""
    if tactic == "tp_heads":
        return ndim - 2 if ndim >= 2 else None
    if tactic == "tp_heads_out":
        return 0 if ndim == 3 else None
    if tactic == "tp_column":
        return ndim - 1 if ndim >= 1 else None
    if tactic == "tp_row":
        return ndim - 2 if ndim >= 2 else None
    raise ConfigError(f"config.mesh.rules: unknown tactic {tactic!r} (known: {TACTICS})")


def _spec(path, shape, tactic, data, model, fsdp_min_size, tp_strict) -> P:
    spec = [None] * len(shape)
    parts = tactic.split("+")
    if parts[0] in TP_TACTICS and model > 1:
        a = _tp_axis(parts[0], len(shape))
        if a is not None:
            if shape[a] % model == 0:
                spec[a] = MODEL_AXIS
            elif tp_strict:
                raise ConfigError(f"config.mesh.rules: {path} {tuple(shape)}: tactic {parts[0]!r} splits axis "
                                  f"{a} of size {shape[a]}, not divisible by the model-axis size {model} "
                                  f"(config.mesh.tp_strict = True)")
    if "fsdp" in parts and int(np.prod(shape, dtype=np.int64)) >= fsdp_min_size:
        # Without a TP axis the leaf is split over both axes when it divides (all devices),
        # else over 'data'; with one, over 'data'.
        joint = (DATA_AXIS, MODEL_AXIS) if MODEL_AXIS not in spec and model > 1 and data > 1 else None
        choices = ([(joint, data * model)] if joint else []) + ([(DATA_AXIS, data)] if data > 1 else []) \
            + ([(MODEL_AXIS, model)] if MODEL_AXIS not in spec and model > 1 and data == 1 else [])
        for axes, n in choices:
            free = [a for a in sorted(range(len(shape)), key=lambda a: -shape[a])
                    if spec[a] is None and shape[a] % n == 0]
            if free:
                spec[free[0]] = axes
                break
    return P(*spec) if any(s is not None for s in spec) else P()


def leaf_spec(path: str, shape: Sequence[int], mesh: Mesh, rules: Sequence, fsdp_min_size: int,
              tp_strict: bool = False) -> P:
    """The ``PartitionSpec`` of one leaf under the name rules (see module docstring)."""
    for regex, tactic in rules:
        if re.search(regex, path):
            if tactic not in TACTICS:
                raise ConfigError(f"config.mesh.rules: unknown tactic {tactic!r} for {regex!r} (known: {TACTICS})")
            return _spec(path, tuple(shape), tactic, axis_size(mesh, DATA_AXIS), axis_size(mesh, MODEL_AXIS),
                         fsdp_min_size, tp_strict)
    return P()


def tree_shardings(abstract_tree: Any, mesh: Mesh, rules: Sequence = (), fsdp_min_size: int = 2 ** 12,
                   tp_strict: bool = False):
    """A ``NamedSharding`` per leaf of ``abstract_tree`` (arrays or ``ShapeDtypeStruct``s)."""

    def one(path, leaf):
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, leaf_spec(_path_str(path), shape, mesh, rules, fsdp_min_size, tp_strict))

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def state_shardings(abstract_state: Any, mesh: Mesh, cfg: Optional[MeshConfig] = None):
    """Shardings for a whole :class:`TrainState`: rules apply to params, the optimizer
    state and the EMA alike (leaf paths inside the optimizer state end with the param path,
    so one regex such as ``'kernel$'`` places a parameter and its Adam moments together)."""
    cfg = cfg or MeshConfig()
    return tree_shardings(abstract_state, mesh, cfg.all_rules, cfg.fsdp_min_size, cfg.tp_strict)


def describe(shardings: Any) -> dict:
    """``{leaf path: PartitionSpec}`` of a pytree of shardings (to check or print placements)."""
    flat = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))[0]
    return {_path_str(p): s.spec for p, s in flat}
