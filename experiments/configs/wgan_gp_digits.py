"""WGAN-GP on digits (Gulrajani et al. 2017, Alg. 1): Wasserstein critic, gradient penalty lambda = 10.

    python -m experiments.train --config experiments/configs/wgan_gp_digits.py --workdir runs/wgan_gp_digits
    python -m experiments.evaluate --config experiments/configs/wgan_gp_digits.py --workdir runs/wgan_gp_digits

The DCGAN networks of dcgan_digits with a critic without batch norm (the penalty is per
example), n_critic = 5 critic updates per generator update, each on a fresh batch, and
Adam(1e-4, beta1 = 0, beta2 = 0.9) for both players (Alg. 1's defaults). The critic's
``d/grad_norm_dev`` metric is the mean |‖grad D(x_hat)‖ - 1| at the interpolates.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="gan", z_dim=64, g_base=64, d_base=64, loss="wasserstein",
                                             gp_weight=10.0, d_norm="none", d_steps=5))
    c.optim.learning_rate = 1e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.9
    c.optim.gen = ml_collections.ConfigDict(dict(learning_rate=1e-4))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=1e-4))
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    return c
