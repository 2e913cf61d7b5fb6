"""Character-level transformer LM of the shapes captions (``caption_chars``: UTF-8 bytes).

    python -m experiments.train --config experiments/configs/char_lm_shapes.py --workdir runs/char_lm_shapes
    python -m experiments.benchmarks.pplm_shapes --workdir runs/char_lm_shapes

4 pre-norm layers, d = 128, 4 heads, rotary positions (gen_jax/autoregressive/transformer_lm.py),
trained on the 12000 train captions with end-of-text as one extra character. Results: see
below (filled after the run).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(
        name="transformer_lm", tokens="caption_chars", condition="none", num_layers=4, d_model=128,
        num_heads=4, mlp_ratio=4, positions="rotary", dropout=0.0, temperature=1.0, top_k=0, top_p=1.0))
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 0.01
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.train.steps = 400
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 200
    c.train.sample_every = 200
    c.train.grid_size = 32
    return c
