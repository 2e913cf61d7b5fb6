"""IWAE (Burda et al. 2016) on digits: the vae_digits model trained on the k = 5 importance bound.

    python -m experiments.train --config experiments/configs/iwae_digits.py --workdir runs/iwae_digits

Each step evaluates the decoder on 5 latent samples per image (about 2x the VAE's step time).
Expect test bits/dim about 1.84 (IWAE-1000).
"""
from experiments.configs.vae_digits import get_config as vae_config


def get_config():
    c = vae_config()
    c.model.train_iwae_k = 5
    return c
