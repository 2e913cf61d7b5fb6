"""All metrics of one model's params: test likelihood, and sample metrics for image samplers.

The metrics of image samples (FID, KID, precision/recall, Inception Score) are computed on a
feature network given as ``extractor`` (:mod:`gen_jax.metrics.features`); which network that is
(the dataset's classifier, Inception-v3 weights) is the caller's choice.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import numpy as np

from gen_jax.evaluation.likelihood import images01, split_bits_per_token, split_bpd
from gen_jax.checks import jit_sample
from gen_jax.evaluation.sampling import compile_sampler, sample_in_batches
from gen_jax.metrics.features import score_samples
from gen_jax.metrics.memorization import memorization_ratio
from gen_jax.model import GenerativeModel


class Evaluation(NamedTuple):
    """``metrics`` (JSON-ready), and the image samples ``[N, H, W, C]`` and labels used
    (``None`` when the model draws no image samples / is unconditional)."""

    metrics: dict
    samples: Optional[np.ndarray]
    labels: Optional[np.ndarray]


def has_image_metrics(model: GenerativeModel) -> bool:
    """Sample metrics apply to models whose sampler draws images."""
    return model.sampler is not None and model.sampler.kind == "image"


def draw_conditions(model: GenerativeModel, num: int, arrays: Optional[Mapping]) -> Optional[dict]:
    """Sampling conditions of ``num`` samples (from ``arrays``, a split, where needed)."""
    return None if model.conditioning is None else model.conditioning.draw(num, arrays)


def evaluate_params(model: GenerativeModel, params, info, test: Mapping, extractor: Optional[Callable], *,
                    num_samples: int = 1000, batch_size: int = 250, seed: int = 0,
                    likelihood: bool = True, train: Optional[Mapping] = None) -> Evaluation:
    """Every metric of ``params`` on the ``test`` split (key ``PRNGKey(seed)``: ``fold_in 1``
    the likelihood, ``3`` the scored samples). ``likelihood=False`` skips the test likelihood
    (``test_bpd`` and ``bpd_kind`` are then ``None``), e.g. when another evaluation of the same
    params already computed it; ``sample_seconds`` is the time of the draws, the sampler
    compiled ahead of time before the clock starts."""
    key = jax.random.PRNGKey(seed)
    lik = model.likelihood if likelihood else None
    res: dict[str, Any] = {"model": model.name, "family": model.family,
                           "bpd_kind": lik.kind if lik is not None and lik.unit == "dim" else None,
                           "test_bpd": None}
    if lik is not None:
        res["test_bpd"] = split_bpd(model, params, test, info, jax.random.fold_in(key, 1), batch_size)
        bits = split_bits_per_token(model, params, test, info, jax.random.fold_in(key, 1), batch_size)
        if bits is not None:
            res["test_bits_per_token"] = bits
    res["sample_seconds"] = None
    if model.sampler is None:
        return Evaluation(res, None, None)
    if not has_image_metrics(model):
        x = np.asarray(jit_sample(model)(
            params, jax.random.fold_in(key, 3), 8, draw_conditions(model, 8, test)))
        if model.sampler.describe is not None:
            res["samples_text"] = model.sampler.describe(x)
        return Evaluation(res, None, None)
    cond = draw_conditions(model, num_samples, test)
    bs = min(num_samples, batch_size)
    compiled, _ = compile_sampler(model, params, bs, cond)
    t0 = time.time()
    samples = sample_in_batches(model, params, jax.random.fold_in(key, 3), num_samples, bs, cond, compiled=compiled)
    res["sample_seconds"] = time.time() - t0
    labels = None if cond is None else cond.get("label")
    scores = score_samples(samples, images01(test, info.num_levels), extractor, seed=seed, labels=labels)
    res.update({k: float(v) for k, v in scores.items()})
    if train is not None:
        res.update(memorization_ratio(samples, images01(test, info.num_levels), images01(train, info.num_levels)))
    return Evaluation(res, samples, labels)


def make_sample_scorer(model: GenerativeModel, info, reference: Mapping, extractor: Callable, *, num: int = 500,
                       batch_size: int = 250, seed: int = 0) -> Callable[[Any], dict]:
    """``scorer(params) -> {'fid', 'kid', 'precision', 'recall', 'class_kl'}`` of ``num`` samples
    (fixed key ``fold_in(PRNGKey(seed), 5)``, one sampler compiled on the first call) against
    the images of ``reference`` (a split's arrays) on ``extractor``: the train loop's periodic
    evaluation (``gen_jax.train.loop.train(evaluator=...)``). Pass the *train* split as the
    reference when the best checkpoint is selected by it, so that the test split stays unseen
    by the selection."""
    if not has_image_metrics(model):
        raise ValueError(f"make_sample_scorer: model {model.name!r} draws no image samples")
    ref = images01(reference, info.num_levels)
    cond = draw_conditions(model, num, reference)
    bs = min(num, batch_size)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 5)
    compiled: list = []

    def scorer(params) -> dict:
        if not compiled:
            compiled.append(compile_sampler(model, params, bs, cond)[0])
        x = sample_in_batches(model, params, key, num, bs, cond, compiled=compiled[0])
        s = score_samples(x, ref, extractor, seed=seed, kid_subset_size=min(num, 500), kid_num_subsets=20)
        return {k: s[k] for k in ("fid", "kid", "precision", "recall", "class_kl")}

    return scorer
