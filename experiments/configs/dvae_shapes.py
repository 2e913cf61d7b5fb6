"""DALL-E discrete VAE on shapes (Ramesh et al. 2021, Sec. 2.1): 32x32 RGB -> 8x8 grid of ids over 512 codes.

    python -m experiments.train --config experiments/configs/dvae_shapes.py --workdir runs/dvae_shapes
    python -m experiments.benchmarks.vqgan_vs_vqvae --dvae_workdir runs/dvae_shapes   # test NMSE (and the VQ rows)

The same code grid and codebook size as vqvae_shapes / vqgan_shapes (8x8 ids, K = 512): the
encoder (two stride-2 stages, widths 64, 128, one residual block each) ends in a 1x1 conv to the
512 logits, the decoder reads the relaxed one-hot times a 512 x 64 codebook. Gumbel-softmax
temperature 1 -> 1/16 (cosine) over the first 1200 of 1500 steps, KL weight to the uniform prior
0 -> 1 (cosine) over the first 300 (the paper: 1 -> 1/16 over 150k updates, 0 -> 6.6 over 5k);
Gaussian reconstruction with sigma = 0.1 (a deviation from the paper's logit-Laplace, see
gen_jax/latent/dvae.py). Test NMSE: printed by the benchmark (README / the benchmark's docstring).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="dvae", num_codes=512, code_dim=64, channels=(32, 64), downsample=2, res_blocks=1,
        rec_sigma=0.1, tau_start=1.0, tau_end=1.0 / 16, tau_steps=800, tau_schedule="cosine",
        kl_weight_start=0.0, kl_weight_end=1.0, kl_weight_steps=250, kl_weight_schedule="cosine"))
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.train.steps = 1000
    c.train.batch_size = 32
    c.train.log_every = 50
    c.train.ckpt_every = 1000
    return c
