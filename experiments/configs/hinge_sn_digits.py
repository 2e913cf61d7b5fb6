"""Hinge-loss GAN with a spectrally normalized discriminator on digits (Miyato et al. 2018).

    python -m experiments.train --config experiments/configs/hinge_sn_digits.py --workdir runs/hinge_sn_digits
    python -m experiments.evaluate --config experiments/configs/hinge_sn_digits.py --workdir runs/hinge_sn_digits

The DCGAN networks of dcgan_digits; every discriminator layer spectrally normalized (one
power iteration per training call, Alg. 1; vectors in the 'spectral' collection), the hinge
loss (Eq. 16-17), two discriminator updates per generator update, Adam(2e-4, 0.5, 0.999).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="gan", z_dim=64, g_base=64, d_base=64, loss="hinge",
                                             spectral=True, d_norm="none", d_steps=2))
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.5
    c.optim.gen = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.train.steps = 3000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    return c
