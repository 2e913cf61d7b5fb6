"""The experiment config: typed sections of an ml_collections config, checked up front.

A config file defines ``get_config() -> ConfigDict`` with the sections below; ``model`` is
free-form here (its ``name`` picks the factory; the factory checks the other fields with
its own typed dataclass). Overrides ``--config.a.b=value`` must name existing fields and
keep their types. Everything is checked before anything is compiled.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Any, Optional

import ml_collections

from gen_jax.config import Checked, ConfigError, from_config
from gen_jax.train.optim import OptimConfig, parse_optim_sections
from gen_jax.train.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class DataConfig(Checked):
    """``config.dataset``."""

    PATH = "config.dataset"

    name: str = "digits"
    data_dir: str = ""  # '' = $GEN_JAX_DATA_DIR or ~/.cache/gen_jax/tfds
    reader: str = "memory"  # 'memory': load_split + BatchStream; 'records': gen_jax.data.records (streamed)
    prefetch: int = 2       # records reader: steps read ahead by a background thread (0 = none)

    def __post_init__(self):
        self.require(self.reader in ("memory", "records"), "reader",
                     f"must be 'memory' (the split in memory) or 'records' (streamed array_record "
                     f"shards, gen_jax.data.records), got {self.reader!r}")
        self.nonnegative("prefetch")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Checked):
    """``config.train``."""

    PATH = "config.train"

    steps: int = 1000
    batch_size: int = 64
    log_every: int = 50
    ckpt_every: int = 500
    sample_every: int = 0      # 0 = only at the end
    keep_checkpoints: int = 3
    ema_decay: float = 0.0     # 0 = no EMA params
    grid_size: int = 64        # samples in a grid PNG
    eval_every: int = 0        # evaluate the sampling params every N steps (0 = never; gen_jax.train.best)
    eval_num: int = 500        # samples of each such evaluation
    best_metric: str = ""      # keep the checkpoint of the lowest value of this evaluation metric ('' = none)
    grad_accum: int = 1        # micro-batches per gradient update (lax.scan; gen_jax.train.step.Accumulation)

    def __post_init__(self):
        self.positive("steps", "log_every", "ckpt_every", "keep_checkpoints", "grid_size", "batch_size", "eval_num",
                      "grad_accum")
        self.nonnegative("sample_every", "eval_every")
        self.require(not self.best_metric or self.eval_every > 0, "best_metric",
                     f"keeping the best checkpoint by {self.best_metric!r} needs config.train.eval_every > 0")
        self.in_range("ema_decay", 0.0, 1.0, hi_open=True)


@dataclasses.dataclass(frozen=True)
class EvalConfig(Checked):
    """``config.eval``."""

    PATH = "config.eval"

    num_samples: int = 1000
    batch_size: int = 250
    feature_net: str = ""  # workdir of a trained classifier config ('' = default for the dataset)
    # a points sampler's draws filtered by discriminator rejection sampling (gen_jax.gan.rejection)
    # with a discriminator fitted for this many steps to the train split; 0 = off
    rejection_steps: int = 0

    def __post_init__(self):
        self.positive("num_samples", "batch_size")
        self.nonnegative("rejection_steps")


@dataclasses.dataclass(frozen=True)
class StageConfig(Checked):
    """``config.stages.<name>``: a trained stage one that a two-stage model composes.

    Attributes:
      config: the stage's experiment config: a file path, or a config name (``'vae_digits'``).
      workdir: the workdir it was trained into (relative paths are tried against the working
        directory, then the repository root).
      overrides: ``'section.field=value'`` overrides of that config (as ``--config.a.b=v``).
    """

    config: str
    workdir: str
    overrides: tuple[str, ...] = ()

    PATH = "config.stages.<name>"

    def __post_init__(self):
        for o in self.overrides:
            self.require("=" in o, "overrides", f"entries must be 'section.field=value', got {o!r}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The typed view of a whole config file (``optim_sections``: named optimizer sections,
    ``stages``: trained stage ones this model composes)."""

    seed: int
    dataset: DataConfig
    model: Any  # ConfigDict; checked by the model factory
    model_name: str
    optim: OptimConfig
    train: TrainConfig
    mesh: MeshConfig
    eval: EvalConfig
    raw: Any  # the full ConfigDict, for checkpoints and logs
    optim_sections: Any = dataclasses.field(default_factory=dict)
    stages: Any = dataclasses.field(default_factory=dict)


SECTIONS = ("seed", "dataset", "model", "optim", "train", "mesh", "eval", "stages")


def _parse_stages(d: Optional[dict]) -> dict:
    out = {}
    for name, spec in (d or {}).items():
        where = f"config.stages.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a section with config, workdir, overrides")
        spec = dict(spec)
        if "overrides" in spec:
            spec["overrides"] = tuple(spec["overrides"])
        out[name] = from_config(StageConfig, spec, where)
    return out


def parse_config(cfg: ml_collections.ConfigDict) -> ExperimentConfig:
    """Checks every section of ``cfg`` and returns the typed view (errors name the field)."""
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    unknown = sorted(set(d) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config.{unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    if "model" not in d or "name" not in d["model"]:
        raise ConfigError("config.model.name: required field is missing")
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"config.seed: expected int, got {seed!r}")
    model = ml_collections.ConfigDict(d["model"])
    name = model.name
    if not isinstance(name, str):
        raise ConfigError(f"config.model.name: expected str, got {name!r}")
    with model.unlocked():
        del model["name"]
    optim, sections = parse_optim_sections(d.get("optim"))
    return ExperimentConfig(
        seed=seed,
        dataset=from_config(DataConfig, d.get("dataset"), "config.dataset"),
        model=model,
        model_name=name,
        optim=optim,
        optim_sections=sections,
        stages=_parse_stages(d.get("stages")),
        train=from_config(TrainConfig, d.get("train"), "config.train"),
        mesh=from_config(MeshConfig, _rules_as_tuples(d.get("mesh")), "config.mesh"),
        eval=from_config(EvalConfig, d.get("eval"), "config.eval"),
        raw=cfg,
    )


def _rules_as_tuples(mesh: Optional[dict]) -> Optional[dict]:
    if mesh and "rules" in mesh:
        mesh = dict(mesh, rules=tuple(tuple(r) for r in mesh["rules"]))
    if mesh and isinstance(mesh.get("shape"), list):
        mesh = dict(mesh, shape=tuple(mesh["shape"]))
    return mesh


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports a config file and calls its ``get_config()``."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config: no config file at {path}")
    spec = importlib.util.spec_from_file_location("_gen_jax_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise ConfigError(f"--config: {path} defines no get_config()")
    return mod.get_config()


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


OPEN_SECTIONS = ("model", "stages")  # checked by their typed dataclasses, whose defaults configs omit


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Applies ``{'train.steps': '100', ...}``.

    In the fixed sections the field must exist and keep its type (an int may widen to a
    float). In ``model`` and ``stages``, whose config files declare only what differs from
    the dataclass defaults, a field the file omits may be set too: the typed dataclass
    (:func:`gen_jax.config.from_config`) then checks its name and type, naming the field.
    """
    for dotted, text in overrides.items():
        parts = dotted.split(".")
        open_ = parts[0] in OPEN_SECTIONS and len(parts) > 1
        node = cfg
        for i, p in enumerate(parts[:-1]):
            if isinstance(node, ml_collections.ConfigDict) and p not in node and open_:
                with node.unlocked():
                    node[p] = ml_collections.ConfigDict()
            if not isinstance(node, ml_collections.ConfigDict) or p not in node:
                raise ConfigError(f"config.{'.'.join(parts[:i + 1])}: unknown field (from --config.{dotted})")
            node = node[p]
        leaf = parts[-1]
        if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not open_):
            raise ConfigError(f"config.{dotted}: unknown field (from --config.{dotted})")
        old, new = node.get(leaf), _parse_value(text)
        if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
            new = float(new)
        if isinstance(old, tuple) and isinstance(new, list):
            new = tuple(new)
        if isinstance(new, list):
            new = tuple(new)
        if old is not None and type(old) is not type(new):
            if isinstance(old, str):
                new = text
            else:
                raise ConfigError(
                    f"config.{dotted}: expected {type(old).__name__}, got {type(new).__name__} {text!r}")
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[leaf] = new
    return cfg


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def parse_cli_overrides(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Splits ``--config.a.b=v`` / ``--config.a.b v`` arguments from the rest."""
    out, rest, i = {}, [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--config."):
            key = a[len("--config."):]
            if "=" in key:
                key, val = key.split("=", 1)
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{a}: missing value")
                val = argv[i + 1]
                i += 1
            out[key] = val
        else:
            rest.append(a)
        i += 1
    return out, rest
