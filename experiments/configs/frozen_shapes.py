"""Frozen on shapes (Tsimpoukelli et al. 2021): a ResNet visual prefix into the frozen caption LM.

    python -m experiments.train --config experiments/configs/caption_lm_shapes.py --workdir runs/caption_lm_shapes
    python -m experiments.train --config experiments/configs/frozen_shapes.py --workdir runs/frozen_shapes
    python -m experiments.benchmarks.frozen_shapes --workdir runs/frozen_shapes

Stage ``lm`` is caption_lm_shapes (the word-level transformer LM, 4 layers, d = 128, rotary),
held fixed in ``Training.frozen``; the trained group ``encoder`` is a pre-activation ResNet
(gen_jax/autoregressive/frozen.py) whose flattened 8x8 feature map is mapped linearly to
``prefix_len`` embeddings of the LM's width; the loss is the frozen LM's token NLL of the
caption after the prefix (Sec. 3, Eq. 1). Captions are decoded greedily by default
(``temperature = 0``); few-shot prompts hold up to ``max_shots`` (image, caption) pairs.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.dataset.name = "shapes"
    c.model = ml_collections.ConfigDict(dict(name="frozen", prefix_len=10, widths=(16, 32, 64), blocks=1,
                                             readout_pool=1, max_shots=2, temperature=0.0, top_k=0, top_p=1.0))
    c.stages = ml_collections.ConfigDict({
        "lm": {"config": "caption_lm_shapes", "workdir": "runs/caption_lm_shapes", "overrides": ()}})
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    c.train.sample_every = 0
    return c
