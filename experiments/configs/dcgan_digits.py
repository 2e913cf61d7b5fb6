"""DCGAN on digits (Radford et al. 2016): non-saturating loss, BN in the generator, Adam(2e-4, 0.5).

    python -m experiments.train --config experiments/configs/dcgan_digits.py --workdir runs/dcgan_digits
    python -m experiments.sample --config experiments/configs/dcgan_digits.py --workdir runs/dcgan_digits --num 1000 --out runs/dcgan_digits/samples.npy
    python -m experiments.evaluate --config experiments/configs/dcgan_digits.py --workdir runs/dcgan_digits

8x8x1 digits: generator z (64) -> 2x2x128 -> 4x4x64 -> 8x8x1 (stride-2 transposed convs, batch
norm, ReLU, ``(tanh + 1) / 2``), discriminator 8x8 -> 4x4x64 -> 2x2x128 (stride-2 convs,
LeakyReLU 0.2, batch norm after the first layer) -> sum-pooled features -> logit. One
discriminator step per generator step; the generator's EMA (0.999) with its running batch
statistics samples. No likelihood: the evaluation reports FID / precision / recall only.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="gan", z_dim=64, g_base=64, d_base=64, loss="nonsaturating",
                                             d_norm="batch"))
    c.optim.learning_rate = 2e-4
    c.optim.b1 = 0.5
    c.optim.gen = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.train.steps = 3000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    return c
