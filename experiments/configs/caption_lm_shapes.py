"""Word-level transformer LM of the shapes captions (``caption_tokens``), the frozen LM of Frozen.

    python -m experiments.train --config experiments/configs/caption_lm_shapes.py --workdir runs/caption_lm_shapes
    python -m experiments.evaluate --config experiments/configs/caption_lm_shapes.py --workdir runs/caption_lm_shapes

4 pre-norm layers, d = 128, 4 heads, rotary positions, dropout 0.1
(gen_jax/autoregressive/transformer_lm.py) over the dataset's word ids (vocabulary 28, ``<bos>``
2 first, ``<eos>`` 3 scored, 0 pads; 9 scored positions), trained on the 12000 train captions,
each written after a text prompt of its own words (``condition='caption_tokens'``: the prompt's
ids have their own embedding rows, so the input vocabulary is 28 + 28). It is stage ``lm`` of
experiments/configs/frozen_shapes.py, which holds it frozen and puts the visual prefix in the
prompt's place.

Why a prompt: an LM trained on single captions with nothing before ``<bos>`` has no use for
context and learns to ignore it, so no prefix can steer it (the Frozen paper's LM reads its
context because web text makes it). Measured on that unconditional LM (same sizes, 1500
steps, train bits/token 1.046): a FREE prefix (2 or 8 vectors per caption optimized directly
by Adam, 300 steps, 16 captions) lowers the caption NLL only from 0.749 to 0.722 (8 vectors:
0.696) nats/token, against 0.72 for the LM alone, and Frozen's encoder trained on it stayed at
0.71 after 400 steps. Prompt-trained, the LM has learnt to read its context for every word.

Word ids rather than the characters of char_lm_shapes.py: the same captions in 9 decoding
steps instead of 37, and a caption can never be misspelt, so every error of a Frozen caption is
a wrong attribute. Rotary (relative) positions: the LM's params do not depend on ``max_len``
(few-shot prompts are longer than the 19 positions it was trained on).

Measured (this config): 1500 steps in 255 s on the shared 2-core CPU, train bits/token 0.0007;
test / heldout bits/token after the true caption's prompt 0.0006 / 0.0006; given the prompts of
the first 500 heldout captions (combinations it never saw) it writes 99.8% of them exactly
(greedy). A free 10-vector prefix optimized by Adam (lr 0.05) in its prompt's place reaches
0.0014 nats/token in 50 steps (the unconditional LM: 0.722 after 300).
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(name="transformer_lm", tokens="caption_tokens", condition="caption_tokens",
                                             num_layers=4, d_model=128, num_heads=4, positions="rotary", dropout=0.1))
    c.optim.name = "adamw"
    c.optim.weight_decay = 0.01
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.train.steps = 1500
    c.train.log_every = 100
    c.train.ckpt_every = 500
    c.train.sample_every = 500
    c.train.grid_size = 32
    return c
