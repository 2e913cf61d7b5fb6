"""DCGAN on CIFAR-10 at paper scale (Radford et al. 2016, Sec. 3-4 and Fig. 1, scaled to 32x32).

    python -m experiments.train --config experiments/configs/dcgan_cifar10.py --workdir runs/dcgan_cifar10

A shape-checked config (tests/gan/test_paper_configs.py builds both players with
``jax.eval_shape`` and checks every layer's parameter count against the architecture below);
not trained here: it needs CIFAR-10 prepared offline as TFDS array_record (gen_jax/data/datasets.py).

Generator: ``z`` (100, uniform in the paper, N(0, I) here) -> Dense to 4x4x512 -> three 4x4
stride-2 transposed convs (256, 128, 3 channels), batch norm + ReLU after all but the last,
tanh; discriminator: 4x4 stride-2 convs with 64, 128, 256 channels, LeakyReLU 0.2, batch norm
after all but the first, then a dense logit of the pooled features. Adam(2e-4, beta1 0.5),
batch 128, weights ~ N(0, 0.02), the non-saturating loss (Sec. 4). FID of 500 EMA samples every
5000 steps against the train split keeps the best checkpoint (needs a feature network:
``config.eval.feature_net``, Inception-v3 weights as .npz on CIFAR-10).
"""
from experiments.configs.base import get_gan_config


def get_config():
    c = get_gan_config(dict(loss="nonsaturating", d_norm="batch", z_dim=100, g_base=128, d_base=64), steps=100_000)
    c.dataset.name = "cifar10"
    c.train.batch_size = 128
    c.train.log_every = 500
    c.train.ckpt_every = 5000
    c.train.eval_every = 5000
    return c
