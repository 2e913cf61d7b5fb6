"""MVAE on shapes (image, caption): product of Gaussian experts with a prior expert (Wu & Goodman 2018).

    python -m experiments.train --config experiments/configs/mvae_shapes.py --workdir runs/mvae_shapes
    python -m experiments.benchmarks.multimodal_vae_shapes --only mvae_shapes

Conv image expert/decoder (32 -> 16 -> 8 -> 4, widths 16/32, dense 128) with a discretized
logistic mixture (2 components) on the 256 levels; caption expert (word + position embeddings,
MLP) and a GRU caption decoder conditioned on z; shared latent 32. Trained with the
sub-sampled objective ELBO(image, caption) + ELBO(image) + ELBO(caption), caption terms
weighted by lambda = caption_weight (the image term is thousands of nats, a caption tens).

Measured: see the benchmark (figures recorded below when run).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="mvae", modalities=("image", "caption_tokens"), latent_dim=32, private_dim=0,
        conv_features=(16, 32), hidden=(128,), activation="gelu", likelihood="logistic_mixture",
        num_mixtures=2, gaussian_scale=0.0, text_dim=64, text_hidden=128, image_weight=1.0,
        caption_weight=50.0, label_weight=50.0, beta=1.0, num_samples=1, iwae_k=1, sample_mean=True))
    c.optim.learning_rate = 1e-3
    c.optim.grad_clip = 100.0
    c.train.steps = 1200
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 400
    c.train.sample_every = 0
    return c
