"""Text-to-image latent diffusion on shapes (Rombach et al. 2022): a U-Net over the 8x8x64 latents of the
frozen vqvae_shapes tokenizer, cross-attending to the frozen clip_shapes text tower.

    python -m experiments.train --config experiments/configs/vqvae_shapes.py --workdir runs/vqvae_shapes
    python -m experiments.train --config experiments/configs/clip_shapes.py --workdir runs/clip_shapes
    python -m experiments.train --config experiments/configs/ldm_shapes_caption.py --workdir runs/ldm_shapes_caption
    python -m experiments.benchmarks.ldm_shapes_caption --workdir runs/ldm_shapes_caption

Stage one (``config.stages.stage1``): the VQ-VAE's continuous latents, pre-quantization ``z_e [8, 8, 64]``,
standardized per channel over the train split; the decoder quantizes to the nearest codes and decodes (the
VQ-regularized autoencoder of Rombach et al. Sec. 3.1). The VQ-VAE rather than a KL-VAE: it is trained and
shared (vae_shapes is a 32-d flat latent, untrained), its 8x8 grid is what a U-Net with cross-attention
needs, and its quantizing decoder maps a slightly-off latent back onto the code manifold (98.4% of test
reconstructions keep a legible shape). Text (``config.stages.text``): CLIP's causal text transformer, its
per-token features after ln_final ([10, 128]) as the cross-attention context (Eq. 3) and its pooled 64-d
text embedding added to the time embedding; both zero for the empty caption (the null condition).

Denoiser: U-Net ch 64, mult (1, 2) (8x8 -> 4x4), 2 residual blocks per level, self- + cross-attention
at 8x8 and 4x4 (4 heads), eps-prediction, T = 1000 linear betas, L_simple; captions dropped to the empty
caption with probability 0.15 (classifier-free guidance). Sampling: DDIM 50 steps (eta 0), guidance
w = 2 in eps~ = (1 + w) eps(c) - w eps(c_neg) (c_neg the empty caption or cond['negative_caption_tokens']);
threshold 'none' (static / dynamic thresholding of z0_hat are options, see the benchmark).

Measured: (filled in from the benchmark run below)
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="text_ldm", timesteps=1000, beta_schedule="linear", parameterization="eps", sampler="ddim",
        sample_steps=50, eta=0.0, cond_drop_prob=0.15, guidance_scale=2.0, scale_latents=True, pooled_text=True,
        threshold="none", threshold_percentile=0.995, threshold_bound=0.0,
        unet=dict(ch=64, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(8, 4), dropout=0.0, num_groups=16,
                  num_heads=4)))
    c.stages = ml_collections.ConfigDict({
        "stage1": {"config": "vqvae_shapes", "workdir": "runs/vqvae_shapes", "overrides": ()},
        "text": {"config": "clip_shapes", "workdir": "runs/clip_shapes", "overrides": ()}})
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0
    c.train.steps = 3000
    c.train.batch_size = 64
    c.train.ema_decay = 0.999
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    c.train.sample_every = 0
    c.train.grid_size = 16
    return c
