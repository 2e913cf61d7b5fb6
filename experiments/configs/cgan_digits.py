"""Class-conditional GAN on digits: conditional batch norm in G, projection discriminator.

    python -m experiments.train --config experiments/configs/cgan_digits.py --workdir runs/cgan_digits
    python -m experiments.evaluate --config experiments/configs/cgan_digits.py --workdir runs/cgan_digits

Miyato & Koyama 2018: the generator's batch norms take per-class gains and biases, the
discriminator adds ``<embed(y), phi(x)>`` to its logit (Eq. 3) and is spectrally normalized;
hinge loss, two discriminator updates per generator update. Samples are drawn for labels
cycling 0..9; the evaluation reports ``label_accuracy``, the fraction the digits classifier
reads as their label.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="gan", z_dim=64, g_base=64, d_base=64, loss="hinge",
                                             spectral=True, d_norm="none", d_steps=2, conditioning="label"))
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
