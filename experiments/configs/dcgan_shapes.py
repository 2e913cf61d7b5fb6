"""DCGAN on shapes (Radford et al. 2016): 32x32x3, non-saturating loss, BN in both players, Adam(2e-4, 0.5).

    python -m experiments.train --config experiments/configs/dcgan_shapes.py --workdir runs/dcgan_shapes
    python -m experiments.benchmarks.clip_editing --gan_workdir runs/dcgan_shapes --clip_workdir runs/clip_shapes

The generator edited by CLIP guidance (:mod:`gen_jax.gan.clip_editing`). 32x32x3 shapes (one
flat-coloured shape on black): generator z (64) -> 4x4x96 -> 8x8x48 -> 16x16x24 -> 32x32x3
(stride-2 transposed convs, batch norm, ReLU, ``(tanh + 1) / 2``), discriminator 32x32 -> 16x16x24
-> 8x8x48 -> 4x4x96 (stride-2 convs, LeakyReLU 0.2, batch norm after all but the first) -> logit.
Widths are 3/8 of dcgan_digits' (g_base = d_base = 24) to train within about ten minutes on 2 CPU
cores; one discriminator step per generator step, batch 64, the generator's EMA (0.999) samples.
FID of 500 EMA samples against the train split (on the shapes feature network) every 500 steps
keeps the best checkpoint.
"""
from experiments.configs.base import get_gan_config


def get_config():
    c = get_gan_config(dict(loss="nonsaturating", d_norm="batch", z_dim=64,
                            g_base=24, d_base=24), steps=3000)
    c.dataset.name = "shapes"
    c.train.ckpt_every = 500
    c.train.eval_every = 500  # FID of 500 EMA samples vs the train split; the best checkpoint is kept
    return c
