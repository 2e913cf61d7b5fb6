"""CLIP on shapes (Radford et al. 2021): a small ViT and a causal text transformer, symmetric InfoNCE.

    python -m experiments.train --config experiments/configs/clip_shapes.py --workdir runs/clip_shapes
    python -m experiments.benchmarks.clip_shapes --workdir runs/clip_shapes

Image encoder: ViT on 32x32 RGB, patch 8 (16 patch tokens + a class token), width 128, 4 pre-LN
blocks, 4 heads; text encoder: 2 causal blocks of width 128 over the 10 caption word ids, features
at the <eos> token; joint embedding 64; learned log scale from log(1 / 0.07), clamped at 100.
AdamW (biases, norms and the temperature not decayed), cosine schedule with warm-up, batch 256.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="clip", embed_dim=64, image_encoder="vit", image_size=32, patch_size=8, conv_stem=0, vision_width=128,
        vision_layers=4, vision_heads=4, pool="cls", resnet_widths=(32, 64, 128), text_len=10, vocab_size=0,
        text_width=128, text_layers=2, text_heads=4, mlp_ratio=4, loss="infonce", init_temperature=0.07,
        max_logit_scale=100.0))
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.1
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.train.steps = 1200
    c.train.batch_size = 256
    c.train.log_every = 50
    c.train.ckpt_every = 400
    c.train.sample_every = 0
    return c
