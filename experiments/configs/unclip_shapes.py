"""unCLIP on shapes (Ramesh et al. 2022): a diffusion prior text -> CLIP image embedding and a DiT decoder embedding -> image, over the frozen clip_shapes CLIP.

    python -m experiments.train --config experiments/configs/clip_shapes.py --workdir runs/clip_shapes
    python -m experiments.train --config experiments/configs/unclip_shapes.py --workdir runs/unclip_shapes
    python -m experiments.benchmarks.unclip_shapes --workdir runs/unclip_shapes

Prior (gen_jax/diffusion/embedding_prior.py): a causal transformer (width 128, 4 blocks) over
[10 caption ids, CLIP text embedding, timestep, noised image embedding, query] predicting the
unnoised 64-d image embedding (x 8, unit scale per coordinate), cosine schedule T = 1000, text
conditioning dropped 10%, DDIM 64 steps, best of 2 by the dot product with the text embedding.
Decoder (gen_jax/diffusion/unclip_decoder.py): diffusion in the 8x8x64 pre-quantization latent
space of the frozen vqvae_shapes tokenizer (standardized per channel over 2048 training images;
sampled latents snap to their nearest codes before the VQ decoder), a DiT with 1x1 patches (64
tokens), width 128, 4 blocks, the CLIP image embedding added to the adaLN vector and projected to 4
in-context tokens; eps, cosine T = 1000, embedding dropped 10% (no caption pathway: Ramesh et al.
find it adds little), DDIM 25 steps. Both trained together (one phase each per step), AdamW
(prior 1e-3, decoder 5e-4, cosine, 100 warm-up steps), batch 32, EMA 0.995, 800 steps.

Measured, first attempt (a pixel-space DiT on 4x4 patches, same widths, 2400 steps, 1257 s on the
shared CPU; ``python -m experiments.benchmarks.unclip_shapes``, 300 captions per split, feature
network judge):
  prior: cos(prior sample, z_i) 0.992 > cos(z_t, z_i) 0.985 >> shuffled caption 0.016
  decoder w   test shape colour size  x     y     all    heldout shape+colour (analytic judge)
  0           0.273 0.880 0.730 0.723 0.753 0.090  0.017 (0.157)
  1           0.313 0.957 0.637 0.733 0.790 0.087  0.023 (0.197)
  3           0.307 0.987 0.547 0.700 0.733 0.053  0.003 (0.177)
  (blotchy patch-tiled shapes: colour and position right, shape near chance 0.2); text diff
  red -> next colour at theta 0.5: new colour 1.00, shape kept 0.22. Hence the latent decoder.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="unclip",
        prior=ml_collections.ConfigDict(dict(
            embed_dim=0, width=128, depth=4, num_heads=4, mlp_ratio=4, time_dim=128, timesteps=1000,
            beta_schedule="cosine", sample_steps=64, eta=0.0, cond_drop_prob=0.1, guidance_scale=1.0,
            candidates=2)),
        decoder=ml_collections.ConfigDict(dict(
            embed_dim=0, space="latent", network="dit",
            dit=ml_collections.ConfigDict(dict(patch_size=1, width=128, depth=4, num_heads=4, mlp_ratio=4.0,
                                               time_dim=128)),
            context_tokens=4, caption=False, emb_drop_prob=0.1, caption_drop_prob=0.5, timesteps=1000,
            beta_schedule="cosine", parameterization="eps", sample_steps=25, eta=0.0, clip_x0=False,
            guidance_scale=2.0))))
    c.stages = ml_collections.ConfigDict({
        "clip": {"config": "clip_shapes", "workdir": "runs/clip_shapes", "overrides": ()},
        "stage1": {"config": "vqvae_shapes", "workdir": "runs/vqvae_shapes", "overrides": ()}})
    c.optim.name = "adamw"
    c.optim.learning_rate = 5e-4
    c.optim.b2 = 0.99
    c.optim.weight_decay = 0.0
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.optim.prior = ml_collections.ConfigDict(dict(learning_rate=1e-3))
    c.optim.decoder = ml_collections.ConfigDict(dict(learning_rate=5e-4))
    c.train.steps = 800
    c.train.batch_size = 32
    c.train.ema_decay = 0.995
    c.train.log_every = 50
    c.train.ckpt_every = 400
    c.train.sample_every = 0
    return c
