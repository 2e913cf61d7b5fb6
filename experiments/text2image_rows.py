"""The text-to-image rows of the shapes bake-off: samples for the captions of a split.

:func:`text_to_image_samples` draws one image per caption of the first ``num`` rows of a
split (cycled; the rows every conditional shapes row is scored on) with the prior of
``experiments/configs/dalle_shapes.py`` (gen_jax/autoregressive/text_to_image.py) at a
classifier-free guidance scale, optionally reranked best-of-N (Ramesh et al. 2021, Sec. 2.5)
by CLIP (``config.stages.clip``) when its checkpoint exists, else by the prior's own implicit
classifier ``log p(ids | c) - log p(ids | null)`` (Ho & Salimans 2022, Sec. 3.2), and returns
the images, the captions asked for and the factors the images should show (the bake-off
writes ``samples/<model>.npy`` / ``_captions.json`` from them, for the test split and the
``heldout`` split).
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from gen_jax.autoregressive import guided_tokens as G
from gen_jax.autoregressive.text_to_image import TextToImageParts, build_text_to_image, null_captions

_PARTS: dict = {}


def prior_parts(exp) -> TextToImageParts:
    """The prior of ``exp`` (an :class:`~gen_jax.train.experiment.ExperimentConfig` of
    ``dalle_shapes``) with its tokenizer loaded from ``config.stages.stage1`` (cached per config)."""
    key = id(exp)
    if key not in _PARTS:
        from gen_jax.data.datasets import get_info

        info = get_info(exp.dataset.name, common.data_dir(exp))
        stage = common.load_stage("stage1", exp.stages["stage1"], info)
        _PARTS[key] = (exp, build_text_to_image(exp.model, info, {"stage1": stage}))
    return _PARTS[key][1]


def clip_score(exp) -> Optional[Callable]:
    """CLIP similarity ``score(images, cond) -> [num]`` from ``config.stages.clip``, or None when
    the config names no CLIP stage or its workdir holds no checkpoint."""
    spec = exp.stages.get("clip") if hasattr(exp.stages, "get") else None
    if spec is None or not os.path.isdir(os.path.join(common.resolve_workdir(spec.workdir), "checkpoints")):
        return None
    from gen_jax.data.datasets import get_info

    stage = common.load_stage("clip", spec, get_info(exp.dataset.name, common.data_dir(exp)))
    if stage.model.embedder is None:
        return None
    return G.embedder_score(stage.model.embedder, stage.params)


def implicit_classifier_score(parts: TextToImageParts, params) -> Callable:
    """``score(images, cond) -> [num]``: ``log p(ids | c) - log p(ids | null)`` of the images'
    tokens (the codec's ids) under the prior (Ho & Salimans 2022, Sec. 3.2: the implicit classifier)."""
    codec = parts.stage.model.codec

    @jax.jit
    def score(images, caps):
        ids = codec.encode(params["stage1"], images).reshape(images.shape[0], -1)
        null = jnp.asarray(null_captions(images.shape[0], caps.shape[1]))

        def ll(c):
            lg = parts.image_logits(params, c, ids)
            return jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(lg), ids[..., None], -1)[..., 0], 1)

        return ll(caps) - ll(null)

    return lambda images, cond: score(images, jnp.asarray(cond["caption_tokens"]))


def text_to_image_samples(exp, params, split_arrays: dict, num: int, key: jax.Array, guidance: float,
                          rerank: int = 0, *, batch_size: int = 250, score: Optional[Callable] = None):
    """Samples for the captions of the first ``num`` rows of ``split_arrays`` (cycled).

    Args:
      exp: the experiment config of the prior (``common.load_experiment('dalle_shapes', ...)``).
      params: its evaluation params (``gen_jax.train.loop.eval_params(state, model)``: the prior
        merged with the frozen tokenizer).
      split_arrays: a split of shapes (``load_split('shapes', 'test' or 'heldout')``).
      num: samples; key: PRNG key; guidance: the classifier-free guidance scale ``s``.
      rerank: ``N > 1`` keeps the best of ``N`` candidates per caption by ``score`` (default
        CLIP, :func:`clip_score`, else :func:`implicit_classifier_score`); 0 or 1: no reranking.

    Returns:
      ``(images float32 [num, 32, 32, 3] in [0, 1], captions list[str] of num,
      factors int [num, 5] in gen_jax.data.shapes.FACTORS order)``.
    """
    from gen_jax.data import image_pairs

    parts = prior_parts(exp)
    rows = image_pairs.first_rows(split_arrays, num)
    caps = np.asarray(split_arrays["caption_tokens"])[rows].astype(np.int32)
    sample = parts.make_sampler(float(guidance))
    if rerank and rerank > 1 and score is None:
        score = clip_score(exp) or implicit_classifier_score(parts, params)
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        cond = {"caption_tokens": caps[start:start + batch_size]}
        k = jax.random.fold_in(key, i)
        n = len(cond["caption_tokens"])
        if rerank and rerank > 1:
            x, _ = G.best_of_n(sample, score, params, k, n, int(rerank), cond)
        else:
            x = sample(params, k, n, cond)
        out.append(np.asarray(x, np.float32))
    captions = [str(c) for c in np.asarray(split_arrays["caption"])[rows]]
    return np.concatenate(out, 0), captions, image_pairs.split_factors(split_arrays, rows)


HELDOUT_COLUMNS = ("heldout_acc_shape", "heldout_acc_colour", "heldout_acc_shape_colour")


def is_caption_row(model) -> bool:
    """A shapes row whose samples are conditioned on captions (text-to-image)."""
    cond = getattr(model, "conditioning", None)
    return cond is not None and "caption_tokens" in cond.keys


def caption_row_outputs(model, params, base: str, row: dict, test: dict, heldout: dict, predictor,
                        batch_size: int = 250) -> dict:
    """The text-to-image outputs of a finished shapes row beside its test samples (which the
    row's sampler drew for the captions of the first test rows): ``samples/<model>_captions.json``
    (those captions), and for the captions of the first rows of the ``heldout`` split (the
    (shape, colour) combinations never trained on) ``samples/<model>_heldout.npy`` (float32
    ``[N, 32, 32, 3]`` in [0, 1]), ``_heldout_captions.json``, ``_heldout_factors.npy``; returns the
    row's new fields (their paths and :data:`HELDOUT_COLUMNS`: the factor heads' accuracy on them).
    ``params``: the row's evaluation params (``eval_params`` of its evaluated checkpoint)."""
    import json

    from gen_jax.data import image_pairs
    from gen_jax.evaluation.evaluate import draw_conditions
    from gen_jax.evaluation.sampling import sample_in_batches
    num = len(np.load(os.path.join(base, row["samples"])))
    name = row["model"]
    paths = {k: os.path.join("samples", f"{name}{k}") for k in
             ("_captions.json", "_heldout.npy", "_heldout_captions.json", "_heldout_factors.npy")}
    for split, key in ((test, "_captions.json"), (heldout, "_heldout_captions.json")):
        rows = image_pairs.first_rows(split, num)   # the heldout rows' are kept for their factors
        with open(os.path.join(base, paths[key]), "w") as f:
            json.dump([str(c) for c in np.asarray(split["caption"])[rows]], f)
    x = sample_in_batches(model, params, jax.random.PRNGKey(7), num, min(num, batch_size),
                          draw_conditions(model, num, heldout))
    factors = image_pairs.split_factors(heldout, rows)
    np.save(os.path.join(base, paths["_heldout.npy"]), np.asarray(x, np.float32))
    np.save(os.path.join(base, paths["_heldout_factors.npy"]), factors.astype(np.int64))
    right = np.asarray(predictor(np.asarray(x, np.float32))) == factors
    out = {"captions": paths["_captions.json"], "heldout_samples": paths["_heldout.npy"],
           "heldout_captions": paths["_heldout_captions.json"], "heldout_factors": paths["_heldout_factors.npy"]}
    out.update(dict(zip(HELDOUT_COLUMNS, (float(right[:, 0].mean()), float(right[:, 1].mean()),
                                          float((right[:, 0] & right[:, 1]).mean())))))
    return out
