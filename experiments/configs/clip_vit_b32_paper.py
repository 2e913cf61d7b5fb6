"""CLIP ViT-B/32 at paper scale (Radford et al. 2021, Table 19/20: ~151.3M parameters): shape check only.

    python -m experiments.train --config experiments/configs/clip_vit_b32_paper.py --workdir runs/clip_vit_b32_paper

Image encoder: ViT-B/32 on 224x224 RGB (7x7 patches of 32 + a class token), width 768, 12 layers,
12 heads; text encoder: 12 causal layers of width 512, 8 heads, context 77, BPE vocabulary 49408;
joint embedding 512; learned temperature from 0.07, clamped at 100. The paper trains it on 400M
image-text pairs (WIT) with batch 32768, AdamW (decoupled weight decay 0.2, not on gains, biases
or the temperature), lr 5e-4 cosine, 32 epochs; no such dataset exists here, so the config names a
standard dataset and tests/multimodal/test_clip.py checks its parameter count layer by layer
(``jax.eval_shape``, nothing allocated) against the paper's architecture.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "imagenet2012"
    c.model = ml_collections.ConfigDict(dict(
        name="clip", embed_dim=512, image_encoder="vit", image_size=224, patch_size=32, conv_stem=0, vision_width=768,
        vision_layers=12, vision_heads=12, pool="cls", resnet_widths=(64,), text_len=77, vocab_size=49408,
        text_width=512, text_layers=12, text_heads=8, mlp_ratio=4, loss="infonce", init_temperature=0.07,
        max_logit_scale=100.0))
    c.optim.name = "adamw"
    c.optim.learning_rate = 5e-4
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.98, 1e-6
    c.optim.weight_decay = 0.2
    c.optim.decay = "weights"
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 2000
    c.train.steps = 390_000
    c.train.batch_size = 32768
    return c
