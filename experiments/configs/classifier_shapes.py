"""Shapes feature network (predicts the shape class; features score samples of shapes models).

    python -m experiments.train --config experiments/configs/classifier_shapes.py --workdir results/feature_nets/shapes

Expect > 99% test accuracy on the shape label after 1500 steps.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.seed = 1234
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(name="classifier", features=(32, 64), hidden=128, dropout_rate=0.2))
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.train.steps = 1500
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 1500
    return c
