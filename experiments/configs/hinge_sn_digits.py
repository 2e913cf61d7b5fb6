"""Hinge-loss GAN with a spectrally normalized discriminator on digits (Miyato et al. 2018).

    python -m experiments.train --config experiments/configs/hinge_sn_digits.py --workdir runs/hinge_sn_digits
    python -m experiments.evaluate --config experiments/configs/hinge_sn_digits.py --workdir runs/hinge_sn_digits

The DCGAN networks of dcgan_digits; every discriminator layer spectrally normalized (one
power iteration per training call, Alg. 1; vectors in the 'spectral' collection), the hinge
loss (Eq. 16-17), two discriminator updates per generator update, Adam(2e-4, 0.5, 0.999).
"""
from experiments.configs.base import get_gan_config


def get_config():
    return get_gan_config(dict(loss="hinge", spectral=True, d_norm="none", d_steps=2))
