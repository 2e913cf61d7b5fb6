"""Shapes feature network: predicts the shape label and, with one head each on the same
features, every factor (shape, colour, size, x, y); its features score samples of shapes models
and its factor heads judge what samples show (the bake-off's per-attribute accuracy).

    python -m experiments.train --config experiments/configs/classifier_shapes.py --workdir results/feature_nets/shapes

Expect > 99% test accuracy on the shape label after 1500 steps, and on every factor head
(tests/metrics/test_factor_heads.py measures a shorter run).
"""
from experiments.configs.classifier_digits import get_config as digits_config
from gen_jax.data import shapes


def get_config():
    c = digits_config()
    c.dataset.name = "shapes"
    c.model.dropout_rate = 0.2
    c.model.factor_classes = tuple(len(v) for v in (shapes.SHAPES, shapes.COLOURS, shapes.SIZES, shapes.XS, shapes.YS))
    return c
