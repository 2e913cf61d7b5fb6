"""CycleGAN on shapes (Zhu et al. 2017): circles <-> squares, unpaired, LSGAN + cycle + identity.

    python -m experiments.train --config experiments/configs/cyclegan_shapes.py --workdir runs/cyclegan_shapes
    python -m experiments.benchmarks.cyclegan_shapes --workdir runs/cyclegan_shapes

Domain A = circles (label 0), domain B = squares (label 1) of the shapes train split, taken from
each batch of 30 by their labels (``gen_jax.gan.cyclegan.domain_rows``: up to 6 rows of each
domain, about 2.4x the expected count of a 5-class batch's 6; other classes contribute nothing).
ResNet generators scaled to 32x32 (c7s1-16, d32, d64, 4 x R64, u32, u16 as nearest resize +
3x3 conv, c7s1-3; instance norm), 34x34 PatchGAN discriminators with instance norm, least-squares
adversarial loss, lambda = 10, identity 0.5 lambda, history pools of 50, Adam(2e-4, 0.5, 0.999) for
both players (the paper's settings; its batch of 1 becomes up to 6 rows per domain).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="cyclegan", domain_a=0, domain_b=1, rows_per_domain=6, g_base=16, g_res=4, g_upsample="resize",
        d_base=32, d_layers=2, cycle_weight=10.0, identity_scale=0.5, pool_size=50, task="circle_to_square"))
    c.optim.learning_rate, c.optim.b1, c.optim.b2 = 2e-4, 0.5, 0.999
    c.optim.gen = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=2e-4))
    c.train.steps = 1500
    c.train.batch_size = 30
    c.train.log_every = 50
    c.train.ckpt_every = 250
    c.train.sample_every = 500
    c.train.grid_size = 36
    c.eval.num_samples = 1000  # the shapes table: the test circles (406), cycled
    return c
