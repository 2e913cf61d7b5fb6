"""Frozen on shapes (Tsimpoukelli et al. 2021): a ResNet visual prefix into the frozen caption LM.

    python -m experiments.train --config experiments/configs/caption_lm_shapes.py --workdir runs/caption_lm_shapes
    python -m experiments.train --config experiments/configs/frozen_shapes.py --workdir runs/frozen_shapes
    python -m experiments.benchmarks.frozen_shapes --workdir runs/frozen_shapes

Stage ``lm`` is caption_lm_shapes (the word-level transformer LM, 4 layers, d = 128, rotary),
held fixed in ``Training.frozen``; the trained group ``encoder`` is a pre-activation ResNet
(gen_jax/autoregressive/frozen.py) whose flattened 8x8 feature map is mapped linearly to
``prefix_len`` embeddings of the LM's width; the loss is the frozen LM's token NLL of the
caption after the prefix (Sec. 3, Eq. 1). The prefix has 10 embeddings and takes the place of
the LM's 10-word text prompt (caption_lm_shapes.py says why the LM is prompt-trained: an LM
of single captions ignores any prefix). Captions are decoded greedily by default
(``temperature = 0``); few-shot prompts hold up to ``max_shots`` (image, caption) pairs.

Measured (``python -m experiments.benchmarks.frozen_shapes --workdir runs/frozen_shapes``:
2000 steps in 763 s on the shared 2-core CPU; every image of the test and heldout splits,
captions read by gen_jax.data.shapes.parse_caption against the true factors):

  setting          test: shape colour size  x     y     all  | heldout: shape colour size  x     y     all
  greedy                 1.000 1.000 1.000 1.000 1.000 1.000 |          0.902 0.994 1.000 1.000 1.000 0.896
  T = 1                  0.998 0.998 0.999 0.999 0.999 0.996 |          0.890 0.990 0.999 1.000 1.000 0.880
  T = 0.7, top-k 3       1.000 1.000 1.000 1.000 1.000 1.000 |          0.898 0.993 1.000 1.000 1.000 0.891

Targets (>= 0.9 per attribute on test, >= 0.7 on heldout): met in every setting. Caption bits
per token given the image 0.0008 (test) / 0.052 (heldout), against 0.0006 / 0.0006 for the LM
after the true caption's words as its prompt. Few-shot (first 500 images of each split, greedy,
supports from train): 0-shot all-five 1.000 / 0.866 (test / heldout), 1-shot 0.950 / 0.756,
2-shot 0.536 / 0.390 (colour 0.682 / 0.470: the LM copies words of the support captions), so
interleaved supports only distract here, where zero-shot is already exact. LM params: the
SHA-256 of the caption LM is the same at load, after training (the very arrays the train step
received), reloaded from runs/caption_lm_shapes and in the evaluated params (bit-identical).
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
