"""PixelCNN++ on digits (8x8, 17 levels): 2 stages (8x8, 4x4), 2 gated ResNet blocks per
stage and stream (3 in the down pass at 8x8), 32 filters, 5 logistic mixtures, dropout 0.25.

    python -m experiments.train --config experiments/configs/pixelcnnpp_digits.py --workdir runs/pixelcnnpp_digits
    python -m experiments.evaluate --config experiments/configs/pixelcnnpp_digits.py --workdir runs/pixelcnnpp_digits

Salimans et al. 2017's architecture at digits size (618,366 parameters; see
gen_jax/autoregressive/pixelcnnpp.py). Measured here (2 shared CPU cores, load 4-6): 210 s of
training (300 steps, compile included; train batches 1.88 bits/dim with dropout), exact test
bits/dim 1.926, FID 14.8 (precision 0.53, recall 0.90, Inception Score 6.7 on the digits
classifier); evaluation takes ~130 s, 88 s of it drawing the 1000 samples (64 network passes
per batch of 250). A 400-step run with dropout 0.5 reached test 1.896 bits/dim (FID 15.1 on
250 samples) but took ~11 min on the loaded machine; no sign of overfitting at either length
(test within 0.05 of the train batches). Only nr_filters (64 -> 32, for speed), the step
count and the dropout rate were tried; nothing else was tuned.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(
        name="pixelcnnpp", nr_resnet=2, nr_filters=32, num_stages=2, nr_logistic_mix=5, dropout=0.25))
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 50
    c.optim.grad_clip = 100.0
    c.train.steps = 300
    c.train.ckpt_every = 300
    c.train.sample_every = 300
    return c
