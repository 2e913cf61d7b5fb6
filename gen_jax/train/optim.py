"""optax optimizers and learning-rate schedules built from config.

``config.optim`` holds the fields of one optimizer; a model with several trained parameter
groups may add named sections beside them (``config.optim.gen``, ``config.optim.disc``), each
setting only the fields in which that group's optimizer differs::

    config.optim = dict(name='adam', learning_rate=2e-4, b1=0.5, b2=0.999,
                        disc=dict(learning_rate=4e-4))

A phase picks its section by name (:class:`gen_jax.model.Phase` ``optim``, else the group's
name); a group without a section uses ``config.optim`` itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Mapping

import jax
import optax

from gen_jax.config import Checked, ConfigError, from_config


@dataclasses.dataclass(frozen=True)
class OptimConfig(Checked):
    """``config.optim``: one optimizer (per parameter group, if the model has several)."""

    PATH = "config.optim"

    name: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    learning_rate: float = 1e-3
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    # which leaves adamw / lamb decay: "all", or "weights" (decay_mask: ndim >= 2, not named bias)
    decay: Literal["all", "weights"] = "all"
    grad_clip: float = 0.0  # global-norm clipping; 0 disables
    momentum: float = 0.9   # sgd only

    def __post_init__(self):
        self.positive("learning_rate")
        self.nonnegative("warmup_steps", "grad_clip")


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``learning_rate`` then constant, cosine or linear decay to 0."""
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    decay_steps = max(total_steps - warm, 1)
    if cfg.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, decay_steps)
    else:
        main = optax.linear_schedule(lr, 0.0, decay_steps)
    if warm == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), main], [warm])


def decay_mask(params: Any) -> Any:
    """The weight-decay mask of ``params``: ``True`` for weight leaves of ``ndim >= 2`` (matrices,
    conv kernels, embedding tables), ``False`` for scalars and vectors (norm scales/offsets,
    learned temperatures) and for every leaf named ``bias`` (also the ``[heads, head_dim]``
    biases of multi-head projections), which are not decayed (decoupled weight decay,
    Loshchilov & Hutter 2019, on the weights only, as in GPT-2 and CLIP). Generic: by rank and
    the ``bias`` leaf name only."""
    def decay(path, p):
        last = path[-1] if path else None
        name = getattr(last, "key", getattr(last, "name", None))
        return getattr(p, "ndim", 0) >= 2 and name != "bias"

    return jax.tree_util.tree_map_with_path(decay, params)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping (optional) chained with the named optax optimizer; with
    ``decay='weights'`` adamw and lamb decay only the leaves :func:`decay_mask` selects."""
    sched = make_schedule(cfg, total_steps)
    mask = decay_mask if cfg.weight_decay > 0 and cfg.decay == "weights" else None
    if cfg.name == "adam":
        opt = optax.adam(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "adamw":
        opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)
    elif cfg.name == "lamb":
        opt = optax.lamb(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=mask)
    else:
        opt = optax.sgd(sched, momentum=cfg.momentum)
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt


def parse_optim_sections(d: Any) -> tuple[OptimConfig, dict[str, OptimConfig]]:
    """``config.optim`` -> (the base optimizer, ``{section: optimizer}``); a section inherits
    every field it does not set from the base. Errors name ``config.optim[.section].field``."""
    d = dict(d.to_dict() if hasattr(d, "to_dict") else (d or {}))
    sections = {k: d.pop(k) for k in list(d) if isinstance(d[k], Mapping)}
    base = from_config(OptimConfig, d, "config.optim")
    out = {}
    for name, sec in sections.items():
        out[name] = from_config(OptimConfig, {**d, **dict(sec)}, f"config.optim.{name}")
    return base, out


def optimizer_for(phase, group, base: OptimConfig, sections: Mapping[str, OptimConfig]) -> tuple[str, OptimConfig]:
    """``(section name, optimizer config)`` of ``group`` trained by ``phase``: the section the
    phase names, else the section named like the group, else the base (``'optim'``)."""
    name = phase.optim or group
    if phase.optim is not None and phase.optim not in sections:
        raise ConfigError(f"config.optim.{phase.optim}: phase {phase.name or group!r} names this optimizer "
                          f"section, the config has {sorted(sections) or 'no sections'}")
    if name is not None and name in sections:
        return name, sections[name]
    return "optim", base
