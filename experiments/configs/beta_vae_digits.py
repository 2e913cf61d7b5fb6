"""beta-VAE (Higgins et al. 2017) on digits: the vae_digits model with the KL weighted by beta = 4.

    python -m experiments.train --config experiments/configs/beta_vae_digits.py --workdir runs/beta_vae_digits

A stronger KL weight trades likelihood for a more factorized, less used latent code: expect
test bits/dim about 2.1 (IWAE-1000, evaluated as a plain VAE bound) against 1.86 for beta = 1.
"""
from experiments.configs.vae_digits import get_config as vae_config


def get_config():
    c = vae_config()
    c.model.beta = 4.0
    return c
