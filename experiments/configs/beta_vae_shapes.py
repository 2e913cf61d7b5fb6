"""beta-VAE (Higgins et al. 2017) on shapes: a 10-d conv VAE with the KL weighted by beta = 4.

    python -m experiments.train --config experiments/configs/beta_vae_shapes.py --workdir runs/beta_vae_shapes
    python -m experiments.benchmarks.disentanglement_shapes

The network of the disentanglement comparison (experiments/benchmarks/disentanglement_shapes.py),
shared with factorvae_shapes and with the benchmark's plain-VAE row (this config at beta = 1):
conv encoder 32x32x3 -> 16x16x16 -> 8x8x32 -> 4x4x64 -> 128 -> (mean, log-var) of a 10-d latent
(the latent size of Kim & Mnih 2018), mirrored transposed-conv decoder, Gaussian likelihood
with a fixed scale 0.2 on [0, 1] pixels (cheap enough on 2 CPU cores; vae_shapes' logistic
mixture runs ~10x slower per step here). Adam 1e-3 (cosine), batch 32, 2000 steps.
The benchmark's plain-VAE row is this config with ``--config.model.beta=1.0`` in
runs/beta_vae_shapes_beta1.
Measured figures: experiments/configs/factorvae_shapes.py's docstring.
"""
import ml_collections

from experiments.configs.base import get_base_config


def vae_model(**fields) -> ml_collections.ConfigDict:
    """The shared 10-d conv VAE fields of the disentanglement configs, ``fields`` on top."""
    return ml_collections.ConfigDict({**dict(
        name="vae", encoder="conv", conv_features=(16, 32, 64), hidden=(128,), latent_dim=10,
        likelihood="gaussian", gaussian_scale=0.2, beta=1.0, iwae_k=1, iwae_chunk=1, sample_mean=True),
        **fields})


def get_config(beta: float = 4.0):
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = vae_model(beta=beta)
    c.optim.schedule = "cosine"
    c.train.steps = 2000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.ckpt_every = 500
    c.train.sample_every = 2000
    return c
