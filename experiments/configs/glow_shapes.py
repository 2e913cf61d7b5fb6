"""Glow on shapes (32x32 RGB, 256 levels): L = 3 levels of K = 8 steps, 128-channel couplings.

    python -m experiments.train --config experiments/configs/glow_shapes.py --workdir runs/glow_shapes
    python -m experiments.evaluate --config experiments/configs/glow_shapes.py --workdir runs/glow_shapes

Exact bits/dim on the shapes test split (uniform dequantization of the 256 levels), samples at
temperature 0.7 (Glow Sec. 5.4) scored on the shapes feature network
(experiments/configs/classifier_shapes.py). Not trained or tuned here: a starting point for
shapes work (a step costs far more than on digits on CPU).
"""

from experiments.configs.glow_digits import get_config as glow_digits_config


def get_config():
    c = glow_digits_config()
    c.dataset.name = "shapes"
    c.model.update(dict(levels=3, hidden=128, temperature=0.7))
    c.train.steps = 5000
    c.train.ckpt_every = 1000
    c.train.sample_every = 1000
    return c
