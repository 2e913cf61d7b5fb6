"""Latent diffusion on digits with a DiT denoiser over the 16-d latents of a frozen VAE.

Stage one is the vae_digits VAE, as for ldm_digits:

    python -m experiments.train --config experiments/configs/vae_digits.py --workdir runs/vae_digits
    python -m experiments.train --config experiments/configs/ldm_digits_dit.py --workdir runs/ldm_digits_dit \
        --config.stages.stage1.workdir=runs/vae_digits

ldm_digits with the residual MLP replaced by the diffusion transformer (Peebles & Xie 2023,
Sec. 3, who run it in this latent-diffusion setting): the 16 standardized latents are viewed as
a 4x4x1 grid (``latent_grid``) and patchified with patch 1, so each latent dimension is a token
(its position given by the fixed 2-D sin-cos embedding); width 128, 4 adaLN-Zero blocks of 4
heads. The VAE's latents have no spatial structure, so the grid is only a layout: this config
exercises the DiT as a set/sequence denoiser of the latent vector, not a spatial prior.
L_simple, T = 1000 linear betas, eps-prediction, Adam 1e-3 cosine, batch 128, 3000 steps.
"""
import ml_collections

from experiments.configs.ldm_digits import get_config as ldm_config


def get_config():
    c = ldm_config()
    c.model = ml_collections.ConfigDict(dict(
        name="latent_diffusion", network="dit", latent_grid=(4, 4, 1),
        dit=ml_collections.ConfigDict(dict(patch_size=1, width=128, depth=4, num_heads=4))))
    return c
