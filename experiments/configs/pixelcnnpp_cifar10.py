"""PixelCNN++ on CIFAR-10 at paper scale (Salimans et al. 2017, Secs. 2-3).

    python -m experiments.train --config experiments/configs/pixelcnnpp_cifar10.py --workdir runs/pixelcnnpp_cifar10

A shape-checked paper-scale config: tests/test_pixelcnnpp.py builds it with ``jax.eval_shape``
(no compile), checks the output ``[B, 32, 32, 100]`` (10 mixtures x (1 + 2*3 + 3)) and the
parameter count, 53,659,080, against a hand count of the architecture (the paper reports
about 53M parameters). Not trained or downloaded here (the paper reports 2.92 bits/dim on
the test set after training on 8 GPUs); it needs CIFAR-10 prepared offline as TFDS
array_record (see gen_jax/data/datasets.py).

Paper settings: 3 resolutions (32, 16, 8), 5 gated ResNet blocks per resolution and stream
(6 in the down pass above the lowest resolution), 160 filters, 10 logistic mixtures with
RGB coupling, concat_elu, dropout 0.5, weight normalization, Adam lr 1e-3 decayed by
0.999995 per step, Polyak averaging 0.9995, batch 16 per GPU on 8 GPUs (128 here).
Deviations: weight norm without the data-dependent initialization (see pixelcnnpp.py); a
linear learning-rate decay to 0 over 500k steps instead of the exponential one (gen_jax's
optimizer config has constant / cosine / linear schedules).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "cifar10"
    c.model = ml_collections.ConfigDict(dict(name="pixelcnnpp"))
    c.optim.schedule = "linear"  # gen_jax.train.optim has no exponential decay (the paper's 0.999995^step)
    c.train.steps = 500_000
    c.train.batch_size = 128
    c.train.ema_decay = 0.9995
    c.train.log_every = 1000
    c.train.ckpt_every = 10_000
    c.train.sample_every = 50_000
    c.eval.batch_size = 100
    return c
