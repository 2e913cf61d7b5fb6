"""FactorVAE (Kim & Mnih 2018) on shapes: beta_vae_shapes' 10-d conv VAE (at beta = 1) with the
total-correlation penalty gamma = 10, estimated by a permutation discriminator.

    python -m experiments.train --config experiments/configs/factorvae_shapes.py --workdir runs/factorvae_shapes
    python -m experiments.benchmarks.disentanglement_shapes

Network, likelihood (Gaussian, fixed scale 0.2), batch 32, 2000 steps and the VAE's optimizer
(Adam 1e-3, cosine) are those of beta_vae_shapes, so the three rows of the benchmark differ in
the objective only. Discriminator: MLP 10 -> 4 x 512 LeakyReLU(0.2) -> logit (the paper: 6 x 1000),
Adam(1e-3, b1 = 0.5, b2 = 0.9) at a constant rate (the paper's betas), trained on half of each
batch against the other half with every latent dimension permuted (gen_jax.latent.factorvae).
gamma = 10 is the low end of the paper's range (10-40 on dSprites / 3D Shapes); not tuned here.

Measured: see the table below (experiments/benchmarks/disentanglement_shapes.py).
"""
import ml_collections

from experiments.configs.beta_vae_shapes import get_config as beta_vae_config, vae_model


def get_config():
    c = beta_vae_config(beta=1.0)
    c.model = vae_model(name="factorvae", gamma=10.0, disc_hidden=(512, 512, 512, 512), disc_slope=0.2)
    c.optim.vae = ml_collections.ConfigDict(dict(learning_rate=1e-3))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=1e-3, b1=0.5, b2=0.9, schedule="constant"))
    return c
