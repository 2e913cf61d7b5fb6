"""Label-conditional gated PixelCNN on shapes (32x32 RGB, 256 levels): R, G, B sub-pixels in
raster order with channel-group masks (van den Oord et al. 2016a Sec. 3.4), the class label as
the one-hot ``h`` of 2016b Eq. 4 inside every gate.

    python -m experiments.train --config experiments/configs/gated_pixelcnn_shapes.py --workdir runs/gated_pixelcnn_shapes
    python -m experiments.evaluate --config experiments/configs/gated_pixelcnn_shapes.py --workdir runs/gated_pixelcnn_shapes

A small, shape-checked config: not trained or tuned here (no measured figures). Sampling
runs the network 32 * 32 * 3 = 3072 times per batch (one lax.scan step per sub-pixel), so
the end-of-training grid is kept to 16 samples and evaluation with the default 1000 samples is
very slow on a CPU (pass --num to score fewer). Checked here: 3 train steps run (loss 5.59 nats
= 8.06 bits/dim at init).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="gated_pixelcnn", hidden=48, num_layers=8, out_hidden=96, dropout=0.1, conditioning="label"))
    c.optim.name = "adamw"
    c.optim.weight_decay = 1e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 200
    c.optim.grad_clip = 1.0
    c.train.steps = 5000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    c.train.grid_size = 16
    c.eval.batch_size = 100
    return c
