"""DDPM on the procedural shapes (32x32x3, 256 levels): the DDPM U-Net at a CPU-friendly width.

    python -m experiments.train --config experiments/configs/ddpm_shapes.py --workdir runs/ddpm_shapes
    python -m experiments.evaluate --config experiments/configs/ddpm_shapes.py --workdir runs/ddpm_shapes

Ho et al. 2020's architecture scaled down: ch 64, multipliers (1, 2, 2) (32 -> 16 -> 8),
2 residual blocks per level, self-attention at 8x8, dropout 0.1; T = 1000 linear betas,
eps-prediction, L_simple, EMA 0.9999. Not trained here (a step of this U-Net costs seconds on
2 CPU cores); built and shape-checked by tests/test_configs.py.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="ddpm", sampler="ddim", sample_steps=100,
        unet=ml_collections.ConfigDict(dict(ch=64, ch_mult=(1, 2, 2), attn_resolutions=(8,), num_groups=16))))
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 1000
    c.optim.grad_clip = 1.0
    c.train.steps = 100000
    c.train.batch_size = 64
    c.train.ema_decay = 0.9999
    c.train.log_every = 100
    c.train.ckpt_every = 2000
    c.train.sample_every = 5000
    c.eval.batch_size = 100
    return c
