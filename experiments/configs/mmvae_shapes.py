"""MMVAE on shapes (image, caption): uniform mixture of experts, stratified IWAE bound (Shi et al. 2019).

    python -m experiments.train --config experiments/configs/mmvae_shapes.py --workdir runs/mmvae_shapes
    python -m experiments.benchmarks.multimodal_vae_shapes --only mmvae_shapes

The networks of mvae_shapes; the joint posterior is the mixture of the image and caption
experts, trained with the stratified importance-weighted bound of Shi et al. 2019, Eq. 3, with
K = num_samples draws per expert (every draw decodes both modalities, so the caption expert
learns to reconstruct the image: the cross-modal term MVAE lacks).

Measured: see the benchmark (figures recorded below when run).
"""
from experiments.configs.mvae_shapes import get_config as mvae_config


def get_config():
    c = mvae_config()
    c.model.name = "mmvae"
    c.model.num_samples = 2
    c.train.batch_size = 32  # K = 2 draws per expert decode 2 x 2 x 32 images a step
    c.model.caption_weight = 20.0
    return c
