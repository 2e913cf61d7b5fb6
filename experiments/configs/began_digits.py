"""BEGAN on digits (Berthelot et al. 2017): autoencoder discriminator, L1 losses, k_t equilibrium control.

    python -m experiments.train --config experiments/configs/began_digits.py --workdir runs/began_digits
    python -m experiments.evaluate --config experiments/configs/began_digits.py --workdir runs/began_digits

8x8x1 digits (``gen_jax.gan.began``): discriminator 8x8 -> conv 32, 2 x conv 32 -> stride-2
conv 64 -> 4x4, 2 x conv 64 -> h (32) -> 4x4x32, 2 x conv 32 -> upsample -> 8x8, 2 x conv 32 ->
conv 1 (ELU, 3x3); the generator is the decoder's architecture from z ~ U[-1, 1]^32 with a tanh
output. gamma = 0.5, lambda_k = 0.001, k_0 = 0 (the paper's); Adam(1e-4, 0.5, 0.999) for both
players, updated simultaneously from one forward pass; the generator's EMA (0.999) samples. The
convergence measure M_global and k_t are logged every log_every steps (metrics.jsonl). No
likelihood: the evaluation reports FID / precision / recall only.
"""
import ml_collections

from experiments.configs.base import get_gan_config


def get_config():
    c = get_gan_config({}, lr=2e-4, b1=0.5, b2=0.999, steps=12000)
    c.model = ml_collections.ConfigDict(dict(
        name="began", z_dim=16, h_dim=8, base=16, scales=2, gamma=1.0, lambda_k=0.001, k_init=0.0))
    return c
