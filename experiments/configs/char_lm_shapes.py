"""Character-level transformer LM of the shapes captions (``caption_chars``: UTF-8 bytes).

    python -m experiments.train --config experiments/configs/char_lm_shapes.py --workdir runs/char_lm_shapes
    python -m experiments.evaluate --config experiments/configs/char_lm_shapes.py --workdir runs/char_lm_shapes
    python -m experiments.benchmarks.pplm_shapes --workdir runs/char_lm_shapes

4 pre-norm layers, d = 128, 4 heads, rotary positions (gen_jax/autoregressive/transformer_lm.py),
0.86M parameters, trained on the 12000 train captions with end-of-text as one extra character.

Measured here (2 CPU cores shared with 3 other jobs): 400 steps in 278 s (compile included);
test bits/char 0.2481 (evaluate's ``test_bits_per_token``; 72924 characters of the 2000 test
captions, end-of-text included). The caption generator's entropy is log2(25 * 2 * 9) = 8.81
bits per caption = 0.2417 bits/char at the test set's 36.46 characters per caption, so the LM
is 0.006 bits/char (0.23 bits per caption) above the floor. Train bits/char 0.258 at step 200,
0.248 at 400; longer runs were not tried. Samples at T = 1: 86-90% are captions the shapes
grammar can produce (200 samples; the errors are misspelt words, e.g. "a small yellos cross").
PPLM toward "red" (experiments/benchmarks/pplm_shapes.py, seed 0 / seed 1, 200 captions each):
unsteered 14.0% / 16.5% contain "red"; the paper's recipe 3.5% / 1.0% (text breaks: 52% / 49%
in grammar); the grounded variant 88.5% / 84.5% (86% / 83.5% in grammar, unsteered 90% / 86%).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(name="transformer_lm"))
    c.optim.name = "adamw"
    c.optim.weight_decay = 0.01
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.train.steps = 400
    c.train.log_every = 100
    c.train.ckpt_every = 200
    c.train.sample_every = 200
    c.train.grid_size = 32
    return c
