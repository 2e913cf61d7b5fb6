"""DDPM on CIFAR-10 at paper scale (Ho et al. 2020, Sec. 4 and App. B).

    python -m experiments.train --config experiments/configs/ddpm_cifar10.py --workdir runs/ddpm_cifar10

A shape-checked paper-scale config: tests/nn/test_unet.py builds its U-Net with ``jax.eval_shape``
and checks the parameter count (35,746,307, the paper's 35.7M); it is not trained here (800k
steps at batch 128 is TPU-scale; the paper reports FID 3.17, 3.75 bits/dim bound). It needs
CIFAR-10 prepared offline as TFDS array_record (see gen_jax/data/datasets.py) and the
``ddpm`` model factory of the diffusion family.

Paper settings: U-Net ch 128, multipliers (1, 2, 2, 2), 2 residual blocks per resolution,
self-attention at 16x16, dropout 0.1, GroupNorm 32; T = 1000, betas linear 1e-4..0.02;
eps-prediction with L_simple; Adam 2e-4, batch 128, 5000 warmup steps, grad-norm clip 1,
EMA 0.9999, 800k steps. (The paper also uses random horizontal flips; not modelled here.)
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "cifar10"
    # The U-Net defaults (gen_jax.nn.unet.UNetConfig) are the paper's CIFAR-10 network.
    c.model = ml_collections.ConfigDict(dict(name="ddpm"))
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5000
    c.optim.grad_clip = 1.0
    c.train.steps = 800_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9999
    c.train.log_every = 1000
    c.train.ckpt_every = 10_000
    c.train.sample_every = 50_000
    return c
