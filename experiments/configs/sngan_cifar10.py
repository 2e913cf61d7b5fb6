"""SN-GAN on CIFAR-10 at paper scale (Miyato et al. 2018: Table 3 standard CNN, Alg. 1, Sec. 4.1).

    python -m experiments.train --config experiments/configs/sngan_cifar10.py --workdir runs/sngan_cifar10

A shape-checked config (tests/gan/test_paper_configs.py builds both players with
``jax.eval_shape`` and checks every layer's parameter count against Table 3); not trained here:
it needs CIFAR-10 prepared offline as TFDS array_record (gen_jax/data/datasets.py).

Generator (:class:`gen_jax.gan.sngan_networks.SNGANGenerator`): z (128) -> 4x4x512, three 4x4
stride-2 transposed convs (256, 128, 64; BN, ReLU), 3x3 conv to RGB, tanh. Discriminator
(:class:`~gen_jax.gan.sngan_networks.SNGANDiscriminator`): 3x3/4x4 conv pairs of 64, 128, 256
channels and a 3x3 conv of 512, LeakyReLU 0.1, dense logit, every layer spectrally normalized.
Hinge loss, Adam(2e-4, beta1 0.5, beta2 0.999), batch 64, n_dis = 5 discriminator steps per
generator step (the paper's setting "C" with the hinge loss of its Table 2 column).
"""
from experiments.configs.base import get_gan_config


def get_config():
    c = get_gan_config(dict(arch="sngan", loss="hinge", spectral=True, d_norm="none", d_steps=5, z_dim=128),
                       lr=2e-4, b1=0.5, b2=0.999, steps=100_000)
    c.dataset.name = "cifar10"
    c.train.log_every = 500
    c.train.ckpt_every = 5000
    c.train.eval_every = 5000
    return c
