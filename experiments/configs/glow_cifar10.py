"""Glow on CIFAR-10 at paper scale (Kingma & Dhariwal 2018, Sec. 5 and Table 4 / App. D).

    python -m experiments.train --config experiments/configs/glow_cifar10.py --workdir runs/glow_cifar10

A shape-checked paper-scale config: tests/flows/test_flow_models.py builds it with
``jax.eval_shape`` (no compile) and checks the parameter count (44,055,408 here; the
paper's CIFAR-10 Glow has about 44.0M). Not trained here (the paper reports 3.35 bits/dim after
~1.5k epochs on GPUs); it needs CIFAR-10 prepared offline as TFDS array_record (see
gen_jax/data/datasets.py).

Paper settings: L = 3 levels, K = 32 steps per level, 512 channels in the coupling networks,
affine coupling, LU-decomposed invertible 1x1 convolutions (Table 2/3: additive vs affine,
both trained; affine is the one of Table 4's 3.35), learned top prior, Adam 1e-3 with linear
warmup, batch 64 (the paper uses n_batch_train 64 per GPU), data in [-1/2, 1/2]
(``preprocess='shift'``), temperature 0.7 for the sample figures (Sec. 5.4).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "cifar10"
    c.model = ml_collections.ConfigDict(dict(name="glow", levels=3, steps_per_level=32, hidden=512,
                                             temperature=0.7))
    c.optim.warmup_steps = 5000
    c.optim.grad_clip = 50.0
    c.train.steps = 1_000_000
    c.train.log_every = 1000
    c.train.ckpt_every = 10_000
    c.train.sample_every = 50_000
    return c
