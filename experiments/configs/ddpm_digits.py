"""DDPM on digits (the bake-off's ddpm and ddim50 rows): a pixel-space residual MLP denoiser.

    python -m experiments.train --config experiments/configs/ddpm_digits.py --workdir runs/ddpm_digits
    python -m experiments.evaluate --config experiments/configs/ddpm_digits.py --workdir runs/ddpm_digits
    python -m experiments.benchmarks.diffusion_digits --workdir runs/ddpm_digits

Ho et al. 2020's process (T = 1000 linear betas 1e-4..0.02, eps-prediction) with the learned
variances and hybrid loss L_simple + 0.001 L_vlb of Nichol & Dhariwal 2021 (Sec. 3.1), on the
8x8, 17-level digits flattened to 64 values. The network (gen_jax/nn/mlp_denoiser.py: width
512, 4 pre-norm residual blocks, dropout 0.1, sinusoidal time embedding) outputs per-pixel
logits over the 17 levels, and the denoiser is their posterior mean given x_t
(``level_posterior``, gen_jax.diffusion.model.level_posterior_eps: Bayes' rule with the
Gaussian likelihood of each level), so noise that is small against the level spacing is
removed exactly -- where the discrete variational bound is decided. EMA 0.999, Adam 1e-3
with cosine decay, batch 128, 8000 steps.

``sample`` is ancestral DDPM-1000; ``--config.model.sampler=ddim
--config.model.sample_steps=50`` gives DDIM-50. ``evaluate`` reports the full variational
bound (all 1000 terms, discretized decoder) in bits/dim. The conv U-Net version of this model
is ddpm_digits_unet (several times slower per step on this CPU).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(
        name="ddpm", loss="hybrid", learn_variance=True, vlb_chunk=100, level_posterior=True,
        network="mlp", denoiser=ml_collections.ConfigDict(dict(width=512, num_blocks=4, dropout=0.1))))
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0
    c.train.steps = 8000
    c.train.batch_size = 128
    c.train.ema_decay = 0.999
    c.train.log_every = 500
    c.train.ckpt_every = 2000
    c.train.sample_every = 0
    c.eval.batch_size = 250
    return c
