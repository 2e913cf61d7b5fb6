"""Caption-conditioned conv VAE on shapes: the decoder and encoder see a caption embedding.

    python -m experiments.train --config experiments/configs/cvae_shapes_caption.py --workdir runs/cvae_shapes_caption

The caption tokens ("a small red circle at the top left") are embedded and mean-pooled into a
condition vector (gen_jax.nn.caption_encoder.bag_of_words_encoder); samples are drawn for given captions. Not tuned.
"""
from experiments.configs.vae_shapes import get_config as vae_shapes_config


def get_config():
    c = vae_shapes_config()
    c.model.conditioning = "caption"
    c.model.cond_dim = 64
    return c
