"""Shapes feature network (predicts the shape class; features score samples of shapes models).

    python -m experiments.train --config experiments/configs/classifier_shapes.py --workdir results/feature_nets/shapes

Expect > 99% test accuracy on the shape label after 1500 steps.
"""
from experiments.configs.classifier_digits import get_config as digits_config


def get_config():
    c = digits_config()
    c.dataset.name = "shapes"
    c.model.dropout_rate = 0.2
    return c
