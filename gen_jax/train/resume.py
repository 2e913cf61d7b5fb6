"""Checks of a resumed or a new run before anything compiles: the config a checkpoint was
trained with against the config of the resume, and runs too short to show anything.

The trajectory promise (a resumed run writes exactly the metrics and params of an
uninterrupted one) holds only if the resume changes nothing the steps depend on. Allowed
without ``--allow_config_change``: the bookkeeping fields in :data:`BOOKKEEPING` (logging,
checkpoint and grid cadence, evaluation, where the data lives) and a larger
``train.steps`` when every optimizer's schedule is ``constant`` (a cosine or linear decay is
a function of the total step count, so growing the run changes every step's learning rate).
The placement levers (:data:`PLACEMENT`: the ``mesh`` section, gradient accumulation,
rematerialization) are allowed too: they only place or schedule the same computation, so a
resume onto another mesh (8 -> 4 devices, 2-D -> 1-D) or with another micro-batch count continues
the same trajectory up to float round-off of another reduction order (not bit-identically, like
a changed device count). A field that a checkpoint's config lacks because it was added later
(:data:`ADDED_DEFAULTS`) may appear with the value that reproduces the old behaviour.
Anything else (seed, batch size, optimizer fields, dataset, model, EMA, stages)
is refused, as is a ``train.steps`` below the checkpoint's step.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional

from gen_jax.config import ConfigError

BOOKKEEPING = ("train.log_every", "train.ckpt_every", "train.sample_every", "train.keep_checkpoints",
               "train.grid_size", "train.eval_every", "train.eval_num", "train.best_metric", "eval.",
               "dataset.data_dir", "dataset.prefetch")
PLACEMENT = ("mesh.", "train.grad_accum", "model.remat")
# Fields added after checkpoints were written: a checkpoint whose config lacks one was trained
# with the behaviour of this value, so resuming with it (absent -> this value) changes nothing.
ADDED_DEFAULTS = {"dataset.reader": "memory", "dataset.prefetch": 2, "train.grad_accum": 1,
                  "model.compute_dtype": "float32", "model.remat": "none"}
ABSENT = "<absent>"


def flatten(d: Any, prefix: str = "") -> dict:
    """``{'a.b': v}`` of nested dicts (lists and scalars are leaves)."""
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``[(field, checkpoint's value, this run's value)]`` of every field that differs
    (``'<absent>'`` for a field one side lacks), sorted by field."""
    a, b = flatten(old), flatten(new)
    missing = ABSENT
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def _schedules(cfg: dict) -> list[str]:
    opt = cfg.get("optim", {}) or {}
    found = [opt.get("schedule", "constant")]
    found += [v.get("schedule", "constant") for v in opt.values() if isinstance(v, dict)]
    return found


def breaks_trajectory(field: str, old: Any, new: Any, new_cfg: dict) -> bool:
    """Whether changing ``field`` from ``old`` to ``new`` on resume changes the steps already
    promised (module docstring)."""
    if any(field == b or (b.endswith(".") and field.startswith(b)) for b in BOOKKEEPING + PLACEMENT):
        return False
    if old == ABSENT and field in ADDED_DEFAULTS and new == ADDED_DEFAULTS[field]:
        return False
    if field == "train.steps" and isinstance(old, int) and isinstance(new, int) and new > old:
        return any(s != "constant" for s in _schedules(new_cfg))
    return True


def check_resume(old_json: Optional[str], new_json: str, ckpt_step: int, steps: int, where: str,
                 allow_change: bool = False, say: Callable[[str], None] = print) -> None:
    """Prints the config differences of a resume and raises a one-line ``ConfigError`` for a
    change that breaks the trajectory (unless ``allow_change``) or a ``train.steps`` below
    the checkpoint's step ``ckpt_step`` (checkpoint ``where``)."""
    if steps < ckpt_step:
        raise ConfigError(f"config.train.steps: {steps} is fewer than the {ckpt_step} steps the checkpoint "
                          f"{where} already holds; ask for >= {ckpt_step} steps, or sample/evaluate that "
                          f"workdir with --step")
    if old_json is None:
        say(f"resuming from {where}: the checkpoint stores no config to compare with")
        return
    old, new = json.loads(old_json), json.loads(new_json)
    changes = config_changes(old, new)
    if not changes:
        return
    say(f"resuming from {where} with a changed config: "
        + "; ".join(f"config.{k}: {a!r} -> {b!r}" for k, a, b in changes))
    bad = [(k, a, b) for k, a, b in changes if breaks_trajectory(k, a, b, new)]
    if bad and not allow_change:
        k, a, b = bad[0]
        extra = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        why = (" with a non-constant learning-rate schedule, which depends on the step count"
               if k == "train.steps" else "")
        raise ConfigError(f"config.{k}: the checkpoint {where} was trained with {a!r}, this run asks for "
                          f"{b!r}{why}{extra}; resuming would leave the uninterrupted run's trajectory. "
                          f"Pass --allow_config_change to continue anyway, or use another --workdir")


def run_warnings(exp, num_examples: int) -> list[str]:
    """Warnings for a run that cannot show what it is meant to (``exp`` an ExperimentConfig,
    ``num_examples`` the training split's size)."""
    out = []
    t = exp.train
    if t.ema_decay > 0 and 1.0 / (1.0 - t.ema_decay) > t.steps / 2:
        out.append(f"config.train.ema_decay={t.ema_decay} averages over ~{1.0 / (1.0 - t.ema_decay):.0f} steps, "
                   f"more than half of the {t.steps} steps: the EMA params (used for samples and "
                   f"evaluation) will still be close to the initialization")
    if t.batch_size > num_examples:
        out.append(f"config.train.batch_size={t.batch_size} is larger than the training split "
                   f"({num_examples} examples): every batch repeats examples")
    sections = {"optim": exp.optim, **{f"optim.{k}": v for k, v in dict(exp.optim_sections).items()}}
    for name, o in sections.items():
        if o.warmup_steps >= t.steps:
            out.append(f"config.{name}.warmup_steps={o.warmup_steps} is not shorter than the run "
                       f"({t.steps} steps): the learning rate never reaches config.{name}.learning_rate")
    return out
