"""Text-to-image DDPM on shapes: the U-Net cross-attends to the caption, with classifier-free guidance.

    python -m experiments.train --config experiments/configs/ddpm_shapes_caption.py --workdir runs/ddpm_shapes_caption
    python -m experiments.sample --config experiments/configs/ddpm_shapes_caption.py --workdir runs/ddpm_shapes_caption

The ddpm_shapes U-Net conditioned on the caption ("a large red circle at the top left"): a
caption encoder (token + position embeddings, one pre-norm transformer block, width 64;
gen_jax/nn/caption_encoder.py) gives the sequence every attention layer of the U-Net
cross-attends to (Rombach et al. 2022, Eq. 3) and its masked mean, added to the time embedding.
The caption is dropped to the empty caption with probability 0.1 at training; sampling uses
eps = (1 + w) eps(x, c) - w eps(x, c_neg) with w = 2 (Ho & Salimans 2022, Eq. 6), c_neg the
empty caption or ``cond['negative_caption_tokens']``. Not trained here (see ddpm_shapes).
"""
from experiments.configs.ddpm_shapes import get_config as ddpm_shapes_config


def get_config():
    c = ddpm_shapes_config()
    c.model.conditioning = "caption"
    c.model.cond_drop_prob = 0.1
    c.model.guidance_scale = 2.0
    c.model.unet.attn_resolutions = (16, 8)
    return c
