"""unCLIP on shapes (Ramesh et al. 2022): a diffusion prior text -> CLIP image embedding and a DiT decoder embedding -> image, over the frozen clip_shapes CLIP.

    python -m experiments.train --config experiments/configs/clip_shapes.py --workdir runs/clip_shapes
    python -m experiments.train --config experiments/configs/unclip_shapes.py --workdir runs/unclip_shapes
    python -m experiments.benchmarks.unclip_shapes --workdir runs/unclip_shapes

Prior (gen_jax/diffusion/embedding_prior.py): a causal transformer (width 128, 4 blocks) over
[10 caption ids, CLIP text embedding, timestep, noised image embedding, query] predicting the
unnoised 64-d image embedding (x 8, unit scale per coordinate), cosine schedule T = 1000, text
conditioning dropped 10%, DDIM 64 steps, best of 2 by the dot product with the text embedding.
Decoder (gen_jax/diffusion/unclip_decoder.py): a pixel-space DiT on 4x4 patches (64 tokens), width
128, 4 blocks, the CLIP image embedding added to the adaLN vector and projected to 4 in-context
tokens; eps, cosine T = 1000, x0 clipped, embedding dropped 10% (no caption pathway: Ramesh et al.
find it adds little), DDIM 25 steps. Both trained together (one phase each per step), AdamW (prior
1e-3, decoder 5e-4, cosine, 100 warm-up steps), batch 32, EMA 0.995, 2400 steps (1257 s on the
shared CPU; the DiT because a conv U-Net step costs ~3x here). config.stages.stage1 (vqvae_shapes)
is only read by the latent decoder option (decoder.space='latent').

Measured (``python -m experiments.benchmarks.unclip_shapes``, step 2400, 300 captions per split,
feature-network judge; analytic judge in brackets):
  prior: cos(prior sample, z_i) 0.992 > cos(z_t, z_i) 0.985 >> shuffled caption: prior 0.016, z_t 0.016
  decoder w (prior w=1)  test shape colour size  x     y     all            heldout shape+colour
  0                           0.273 0.880 0.730 0.723 0.753 0.090 (0.103)    0.017 (0.157)
  1                           0.313 0.957 0.637 0.733 0.790 0.087 (0.150)    0.023 (0.197)
  3                           0.307 0.987 0.547 0.700 0.733 0.053 (0.123)    0.003 (0.177)
  text diff (caption -> next colour), theta 0.5: new colour 1.00, shape kept 0.22; variations keep
  all five factors 0.08. Judge ceiling on real heldout images: shape+colour 0.36 (analytic 1.0).
Targets: prior cosine met; colour >= 0.8 met (0.96 / 0.99 at w = 1 / 3, rising); all-four >= 0.7
MISSED (0.05-0.09: the decoder draws blotchy patch-tiled shapes, shape near chance 0.2); heldout
shape+colour >= 0.5 MISSED. Tried: the latent decoder (space='latent' over vqvae_shapes, 1x1 patches)
for only 800 steps (slot waits): chance-level (colour 0.20), scattered fragments -- undertrained.
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
            embed_dim=0, space="pixel", network="dit",
            dit=ml_collections.ConfigDict(dict(patch_size=4, width=128, depth=4, num_heads=4, mlp_ratio=4.0,
                                               time_dim=128)),
            context_tokens=4, caption=False, emb_drop_prob=0.1, caption_drop_prob=0.5, timesteps=1000,
            beta_schedule="cosine", parameterization="eps", sample_steps=25, eta=0.0, clip_x0=True,
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
    c.train.steps = 2400
    c.train.batch_size = 32
    c.train.ema_decay = 0.995
    c.train.log_every = 50
    c.train.ckpt_every = 600
    c.train.sample_every = 0
    return c
