"""Gaussian mixture (full covariance) fitted by EM on dequantized digits.

    python -m experiments.train --config experiments/configs/gmm_digits.py --workdir runs/gmm_digits

Every step is one EM step on the whole train split (batch = 1437 = all train images, one
device). Expect the train log-likelihood to rise monotonically and test bits/dim near 2.5
(a mixture of Gaussians over 64 pixels overfits the 1437 images) in a few seconds.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="gmm", reg_covar=1e-3))
    c.train.steps = 50
    c.train.batch_size = 1437
    c.train.log_every = 5
    c.train.ckpt_every = 50
    c.mesh.num_devices = 1
    return c
