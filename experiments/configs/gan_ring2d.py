"""PacGAN-2 MLP GAN on the ring of 8 Gaussians (std 0.01 on the unit circle), PacGAN's benchmark.

    python -m experiments.train --config experiments/configs/gan_ring2d.py --workdir runs/gan_ring2d
    python -m experiments.sample --config experiments/configs/gan_ring2d.py --workdir runs/gan_ring2d --num 2500 --out runs/gan_ring2d/points.npy
    python -m experiments.benchmarks.gan_mode_coverage --only ring

The plain GAN is the override ``--config.model.pack=1``. Networks (Lin et al. 2018, App. D, after
VEEGAN): generator z (8) -> 4 x 400 ReLU -> 2 (data coordinates), discriminator 2 m -> 4 x 400
LeakyReLU(0.2) -> logit, on packs of m = 2 points; non-saturating loss, Adam.
"""
from experiments.configs.base import get_gan_config

PACK = 2


def get_config():
    c = get_gan_config(dict(arch="mlp", loss="nonsaturating", z_dim=8, pack=PACK,
                            g_hidden=(400, 400, 400, 400), d_hidden=(400, 400, 400, 400)),
                       lr=1e-4, b1=0.5, b2=0.999, steps=6000)
    c.dataset.name = "ring2d"
    c.train.batch_size = 256
    c.train.ema_decay = 0.0
    c.train.log_every = 200
    c.train.ckpt_every = 6000
    c.eval.num_samples = 2500
    c.train.eval_every, c.train.best_metric = 0, ""  # no image metrics for points: keep the last checkpoint
    return c
