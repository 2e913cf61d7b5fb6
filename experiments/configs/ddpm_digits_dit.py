"""DDPM on digits with a diffusion transformer (DiT, Peebles & Xie 2023) instead of the U-Net.

    python -m experiments.train --config experiments/configs/ddpm_digits_dit.py --workdir runs/ddpm_digits_dit
    python -m experiments.evaluate --config experiments/configs/ddpm_digits_dit.py --workdir runs/ddpm_digits_dit
    python -m experiments.benchmarks.dit_vs_unet            # against ddpm_digits_unet, same process

The process and training of ddpm_digits_unet (Ho et al. 2020: T = 1000 linear betas,
eps-prediction, L_simple; batch 64, EMA 0.999, 4000 steps) with gen_jax/nn/dit.py as the
network: the 8x8x1 digits cut into 2x2 patches (16 tokens of 4 values), width 192, 6 adaLN-Zero
blocks of 6 heads (head width 32), MLP ratio 4, fixed 2-D sin-cos positions; the time (and,
with --config.model.conditioning=label, the label + null class) enters through the adaLN
conditioning vector. 4.2M parameters (the U-Net config: 4.0M). Adam 3e-4 after 200 warm-up
steps (the paper trains with AdamW 1e-4 at batch 256; a smaller model at batch 64 takes a
larger rate), gradient clipping 1.

Every layer but the (re)arrangement of patches is a dense matmul, so on this 2-core CPU the
train step runs about 1.8x faster than the U-Net's at the same batch (the U-Net's 8x8
convolutions are far from the machine's matmul rate): see the benchmark's docstring for the
measured ratios and the loss per training minute.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(
        name="ddpm", vlb_chunk=100, network="dit",
        dit=ml_collections.ConfigDict(dict(patch_size=2, width=192, depth=6, num_heads=6, mlp_ratio=4.0))))
    c.optim.learning_rate = 3e-4
    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0
    c.train.steps = 4000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    c.train.sample_every = 0
    c.eval.batch_size = 250
    return c
