"""Deterministic autoencoder on digits (MLP, binary cross-entropy reconstruction).

    python -m experiments.train --config experiments/configs/autoencoder_digits.py --workdir runs/autoencoder_digits

An autoencoder has no likelihood (test_bpd is null); it samples by decoding codes drawn from a
Gaussian fitted to the train codes (running moments). Expect FID about 25 after 1500 steps.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(
        name="autoencoder", encoder="mlp", hidden=(256, 256), conv_features=(32, 64),
        activation="gelu", latent_dim=16, loss="bce", code_decay=0.99))
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.train.steps = 1500
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 500
    c.train.sample_every = 1500
    return c
