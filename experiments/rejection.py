"""Discriminator rejection sampling of a trained points GAN (``config.eval.rejection_steps``).

Composes, at the experiment edge, a trained model's points sampler with
:mod:`gen_jax.gan.rejection` (Azadi et al. 2019): a fresh MLP discriminator of the config's
``model.d_hidden`` widths, one point per input (no packing: its logit estimates the per-point
ratio ``log p_data / p_g``), is fitted for ``eval.rejection_steps`` steps to the train split
against the frozen generator, and proposals are kept with probability ``exp(d(x) - d_M)``.
Used by ``python -m experiments.sample`` and ``experiments.benchmarks.gan_mode_coverage``.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from experiments import common


def check_rejection(exp, model) -> None:
    """``ValueError`` naming ``config.eval.rejection_steps`` unless the model samples points."""
    if exp.eval.rejection_steps and model.sampler.kind != "points":
        raise ValueError(f"config.eval.rejection_steps={exp.eval.rejection_steps}: discriminator rejection "
                         f"sampling is implemented for points samplers (ring2d, grid2d); model "
                         f"{model.name!r} samples {model.sampler.kind!r}; set it to 0")


def rejection_points(exp, info, model, params, key, num: int, steps: int = 0):
    """``(points float32 [num, D], note)``: DRS draws; ``steps`` overrides
    ``config.eval.rejection_steps`` when > 0."""
    from gen_jax.data.datasets import load_split
    from gen_jax.data.points2d import from_unit
    from gen_jax.gan.networks import MLPDiscriminator
    from gen_jax.gan.rejection import fit_density_ratio, rejection_sample

    check_rejection(exp, model)
    steps = steps or exp.eval.rejection_steps
    train_split = load_split(exp.dataset.name, "train", common.data_dir(exp))
    real = from_unit(train_split["image"].reshape(train_split["image"].shape[0], -1) / (info.num_levels - 1),
                     info.value_range)
    disc = MLPDiscriminator(hidden=tuple(exp.model.d_hidden))

    def propose(k, n):
        return model.sampler.sample(params, k, n)

    t0 = time.time()
    k_fit, k_draw = jax.random.split(jax.random.fold_in(key, 1))
    v = fit_density_ratio(k_fit, disc, real, propose, steps=steps, batch_size=256)
    x, info_drs = rejection_sample(k_draw, propose, lambda p: disc.apply(v, p, train=False), num, max_rounds=400)
    note = (f"DRS ({steps} discriminator steps): acceptance {100 * info_drs['acceptance']:.2f}%, "
            f"d_M {info_drs['max_logit']:.2f}, {time.time() - t0:.0f} s")
    return np.asarray(x, np.float32), note
