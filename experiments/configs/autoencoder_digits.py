"""Deterministic autoencoder on digits (MLP, binary cross-entropy reconstruction).

    python -m experiments.train --config experiments/configs/autoencoder_digits.py --workdir runs/autoencoder_digits

An autoencoder has no likelihood (test_bpd is null); it samples by decoding codes drawn from a
Gaussian fitted to the train codes (running moments). Expect FID about 25 after 1500 steps.
"""
import ml_collections

from experiments.configs.vae_digits import get_config as vae_digits_config


def get_config():
    c = vae_digits_config()  # same data, optimizer and schedule as the VAE it is compared with
    c.model = ml_collections.ConfigDict(dict(name="autoencoder"))
    return c
