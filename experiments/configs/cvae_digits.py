"""Conditional VAE (Sohn et al. 2015) on digits, conditioned on the class label.

    python -m experiments.train --config experiments/configs/cvae_digits.py --workdir runs/cvae_digits

Encoder and decoder both see a learned label embedding; the prior is N(0, I). Samples are
drawn for given labels (the bake-off draws 100 per class and saves the labels beside them).
Expect test bits/dim about 1.78 (IWAE-1000 of log p(x | y)).
"""
from experiments.configs.vae_digits import get_config as vae_config


def get_config():
    c = vae_config()
    c.model.conditioning = "label"
    return c
