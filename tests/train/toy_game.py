"""A two-player toy for the trainer: the bilinear game min_x max_y x*y with a batch-reading
probe, as a :class:`gen_jax.model.Model` (imported by the tests and by the SIGKILL worker).

Players: group ``'gen'`` holds ``x`` (minimizes ``x*y``), group ``'disc'`` holds ``y``
(maximizes it, i.e. minimizes ``-x*y``). Each group also holds a probe ``p`` whose loss is
``-p * mean(batch['image'])``: with SGD at learning rate ``lr`` the probe accumulates
``lr * mean(image)`` of every batch its phase saw, which is how the tests see which batches a
phase was given. ``frozen`` (a stage-one stand-in) is added to the losses as a constant.
"""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from gen_jax.model import Model, Phase, Training

X0, Y0 = 1.0, 0.5


def _probe(p, batch):
    return -p * jnp.mean(batch["image"])


def d_loss(params, batch, key):
    x, y = params["gen"]["x"], params["disc"]["y"]
    c = jnp.sum(params["stage1"]["w"]) * 0.0 if "stage1" in params else 0.0
    return -x * y + _probe(params["disc"]["p"], batch) + c, {"y": y}


def g_loss(params, batch, key):
    x, y = params["gen"]["x"], params["disc"]["y"]
    return x * y + _probe(params["gen"]["p"], batch), {"x": x}


def joint_losses(params, batch, key):
    x, y = params["gen"]["x"], params["disc"]["y"]
    return ({"gen": x * y + _probe(params["gen"]["p"], batch),
             "disc": -x * y + _probe(params["disc"]["p"], batch)}, {"x": x, "y": y})


def init(key, batch):
    return {"gen": {"x": jnp.float32(X0), "p": jnp.float32(0.0)},
            "disc": {"y": jnp.float32(Y0), "p": jnp.float32(0.0)}}


def make_game(mode: str = "alternating", k: int = 1, ema_groups=("gen",), frozen=None) -> Model:
    """``mode='alternating'``: ``k`` disc steps then one gen step; ``'simultaneous'``: one
    phase over both groups from one forward pass."""
    if mode == "alternating":
        phases = (Phase("disc", d_loss, repeats=k, name="d"), Phase("gen", g_loss, name="g"))
    else:
        phases = (Phase(("gen", "disc"), joint_losses, name="joint"),)
    return Model(name=f"game_{mode}", training=Training(init=init, phases=phases, ema_groups=ema_groups,
                                                        frozen=frozen or {}))


def game_config(steps: int, lr_gen: float, lr_disc: float, **train) -> ml_collections.ConfigDict:
    """An experiment config with two optimizer sections (plain SGD, different rates)."""
    return ml_collections.ConfigDict({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "game"},
        "optim": {"name": "sgd", "momentum": 0.0, "learning_rate": 1.0,
                  "gen": {"learning_rate": lr_gen}, "disc": {"learning_rate": lr_disc}},
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "ckpt_every": 10, **train},
    })
