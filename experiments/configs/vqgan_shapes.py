"""VQGAN tokenizer on shapes (Esser et al. 2021): vqvae_shapes' networks and codebook (8x8 ids, K = 512) plus a PatchGAN, a perceptual loss and the adaptive weight.

    # the shapes feature network (the perceptual loss's stage; the metrics train it on first use too):
    python -m experiments.train --config experiments/configs/classifier_shapes.py --workdir results/feature_nets/shapes
    python -m experiments.train --config experiments/configs/vqgan_shapes.py --workdir runs/vqgan_shapes
    python -m experiments.benchmarks.vqgan_vs_vqvae --vqgan_workdir runs/vqgan_shapes --vqvae_workdir runs/vqvae_shapes

Everything of vqvae_shapes (encoder, EMA codebook with k-means init and dead-code reset, decoder,
steps, batch, optimizer) so the two tokenizers differ only in VQGAN's losses: L1 + the LPIPS-style
distance in the conv0 / conv1 / hidden layers of the frozen shapes feature network
(``config.stages.features``: classifier_shapes, trained into results/feature_nets/shapes, the
same network the bake-off and the FID use; if that workdir holds no checkpoint, train it with the
first command above, or run any shapes evaluation, which trains it there on first use), a
PatchGAN (2 stride-2 layers, instance norm, width 64) with the hinge loss switched on at half the
steps (``disc_start``), adaptive weight (Eq. 7, delta 1e-6) times ``disc_weight`` 0.8, Adam
(lr 2e-4, b1 0.5) for the discriminator. Figures: experiments/benchmarks/vqgan_vs_vqvae.py.
"""
import ml_collections

from experiments.configs.vqvae_shapes import get_config as vqvae_config


def get_config():
    c = vqvae_config()
    c.model.update(dict(name="vqgan", rec_loss="l1", perceptual_weight=1.0,
                        perceptual_layers=("conv0", "conv1", "hidden"), disc_weight=0.8,
                        disc_start=c.train.steps // 2, disc_base=64, disc_layers=2, disc_norm="instance"))
    c.optim.disc = ml_collections.ConfigDict(dict(learning_rate=2e-4, b1=0.5, schedule="constant"))
    c.stages = ml_collections.ConfigDict({"features": {
        "config": "classifier_shapes", "workdir": "results/feature_nets/shapes", "overrides": ()}})
    return c
