"""Conv VAE on shapes (32x32 RGB, 256 levels) with a discretized logistic-mixture decoder.

    python -m experiments.train --config experiments/configs/vae_shapes.py --workdir runs/vae_shapes
    python -m experiments.evaluate --config experiments/configs/vae_shapes.py --workdir runs/vae_shapes

Conv encoder (stride-2 stages 32 -> 16 -> 8) and mirrored transposed-conv decoder, 32-d latent.
Scored against the shapes test split on the shapes feature network
(experiments/configs/classifier_shapes.py). Not tuned: a starting point for shapes work.
"""
from experiments.configs.vae_digits import get_config as vae_digits_config


def get_config():
    c = vae_digits_config()
    c.dataset.name = "shapes"
    c.model.update(dict(encoder="conv", hidden=(256,), latent_dim=32, iwae_k=100, iwae_chunk=25))
    c.train.steps = 3000
    c.train.sample_every = 1000
    return c
