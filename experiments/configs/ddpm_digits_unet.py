"""DDPM on digits with the DDPM U-Net (8x8 -> 4x4), T = 1000 linear betas, eps-prediction, L_simple.

    python -m experiments.train --config experiments/configs/ddpm_digits_unet.py --workdir runs/ddpm_digits_unet
    python -m experiments.evaluate --config experiments/configs/ddpm_digits_unet.py --workdir runs/ddpm_digits_unet

Ho et al. 2020 on the 8x8, 17-level digits: ch 64, multipliers (1, 2), 2 residual blocks per
level, self-attention at 4x4, dropout 0.1, EMA 0.999. ``sample`` is ancestral DDPM-1000;
``--config.model.sampler=ddim --config.model.sample_steps=50`` gives DDIM-50. ``evaluate``
reports the full variational bound (all 1000 terms) in bits/dim.

The conv U-Net is the library's image denoiser, but on this 2-core CPU it is slow for 8x8
images (XLA's CPU convolutions: see experiments/benchmarks/unet_step.py): a train step at
batch 64 took about 0.63 s here (4000 steps: about 45 minutes), versus about 0.07 s at batch
128 for the pixel MLP of ddpm_digits, which the bake-off trains instead. Not trained here.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(
        name="ddpm", vlb_chunk=100,
        unet=ml_collections.ConfigDict(dict(ch=64, ch_mult=(1, 2), attn_resolutions=(4,), num_groups=16))))
    c.optim.learning_rate = 2e-4
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
