"""Conv VAE on shapes (32x32 RGB, 256 levels) with a discretized logistic-mixture decoder.

    python -m experiments.train --config experiments/configs/vae_shapes.py --workdir runs/vae_shapes
    python -m experiments.evaluate --config experiments/configs/vae_shapes.py --workdir runs/vae_shapes

Conv encoder (stride-2 stages 32 -> 16 -> 8) and mirrored transposed-conv decoder, 32-d latent.
Scored against the shapes test split on the shapes feature network
(experiments/configs/classifier_shapes.py). Not tuned: a starting point for shapes work.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="vae", encoder="conv", hidden=(256,), conv_features=(32, 64), activation="gelu",
        latent_dim=32, likelihood="logistic_mixture", num_mixtures=5, gaussian_scale=0.0, beta=1.0,
        conditioning="none", cond_dim=32, iwae_k=100, iwae_chunk=25, train_iwae_k=1,
        sample_mean=False))
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.train.steps = 3000
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 500
    c.train.sample_every = 1000
    return c
