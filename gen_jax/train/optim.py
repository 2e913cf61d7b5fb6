"""optax optimizers and learning-rate schedules built from config."""
from __future__ import annotations

import dataclasses
from typing import Literal

import optax

from gen_jax.config import ConfigError


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """``config.optim``: one optimizer (per parameter group, if the model has several)."""

    name: Literal["adam", "adamw", "sgd", "lamb"] = "adam"
    learning_rate: float = 1e-3
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # global-norm clipping; 0 disables
    momentum: float = 0.9   # sgd only

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ConfigError(f"config.optim.learning_rate: must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ConfigError(f"config.optim.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.grad_clip < 0:
            raise ConfigError(f"config.optim.grad_clip: must be >= 0, got {self.grad_clip}")


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


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping (optional) chained with the named optax optimizer."""
    sched = make_schedule(cfg, total_steps)
    if cfg.name == "adam":
        opt = optax.adam(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    elif cfg.name == "adamw":
        opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.name == "lamb":
        opt = optax.lamb(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    else:
        opt = optax.sgd(sched, momentum=cfg.momentum)
    if cfg.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt
