"""Metrics for a trained workdir, printed as one JSON line.

    python -m experiments.evaluate --config C --workdir W [--num N]

Reports test bits/dim (where the model defines a likelihood; ``bpd_kind`` says whether it is
exact or a bound), and FID, KID, precision/recall and Inception Score of ``config.eval.num_samples``
samples against the test split, on the dataset's feature network. Sequence models (text LMs)
report test bits per token (``extras['token_log_prob']``) and a few decoded samples; 1-D
signal models report their likelihood only.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import jax
import numpy as np

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import CheckpointError


def images01(arrays: dict, info) -> np.ndarray:
    """uint8 levels -> float32 level/(K-1) in [0, 1]."""
    return arrays["image"].astype(np.float32) / (info.num_levels - 1)


def test_bpd(model, params, arrays: dict, info, key, batch_size: int) -> Optional[float]:
    """Mean test bits/dim under the DESIGN.md convention, or None without a likelihood."""
    if model.log_prob is None:
        return None
    from gen_jax.distributions.bpd import bits_per_dim

    fn = jax.jit(model.log_prob)
    x = images01(arrays, info)
    n = len(x)
    dims = int(np.prod(info.image_shape))
    out = []
    for i, start in enumerate(range(0, n, batch_size)):
        idx = np.arange(start, start + batch_size) % n  # pad by wrapping: one compile
        batch = _batch_of(arrays, x, idx)
        lp = np.asarray(fn(params, batch, jax.random.fold_in(key, i)))
        out.append(lp[: min(batch_size, n - start)])
    lp = np.concatenate(out)
    return float(np.mean(bits_per_dim(lp, dims, info.num_levels)))


def _batch_of(arrays: dict, x: np.ndarray, idx: np.ndarray) -> dict:
    """The batch of rows ``idx``: the image as floats and every other batch key of the split."""
    from gen_jax.data.pipeline import BATCH_KEYS

    batch = {"image": x[idx]}
    batch.update({k: arrays[k][idx] for k in BATCH_KEYS if k != "image" and k in arrays})
    return batch


def test_token_bits(model, params, arrays: dict, info, batch_size: int) -> Optional[float]:
    """Mean test bits per token of a sequence model (``extras['token_log_prob']`` gives nats
    per example and ``extras['num_tokens']`` the scored tokens per example), or None."""
    if "token_log_prob" not in model.extras:
        return None
    fn = jax.jit(model.extras["token_log_prob"])
    count = jax.jit(model.extras["num_tokens"]) if "num_tokens" in model.extras else None
    x = images01(arrays, info)
    n = len(x)
    nats = toks = 0.0
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        batch = _batch_of(arrays, x, idx)
        keep = min(batch_size, n - start)
        nats -= float(np.sum(np.asarray(fn(params, batch))[:keep]))
        toks += float(np.sum(np.asarray(count(batch))[:keep])) if count is not None else keep
    return nats / toks / np.log(2.0)


def has_image_metrics(model, info) -> bool:
    """FID-style sample metrics apply to image models (not text or 1-D signal models)."""
    h, w = info.image_shape[:2]
    return model.sample is not None and "describe_samples" not in model.extras and h > 1 and w > 1


def default_feature_dir(dataset: str) -> str:
    return os.path.join(common.REPO, "results", "feature_nets", dataset)


def feature_extractor(dataset: str, data_dir: Optional[str], path: str = "", progress: bool = False):
    """The feature network the sample metrics use for ``dataset``.

    * ``path`` ending in ``.npz``: Inception-v3 weights given by the user (standard datasets);
    * otherwise a classifier workdir (default ``results/feature_nets/<dataset>``), trained with
      ``experiments/configs/classifier_<dataset>.py`` if it holds no checkpoint yet.
    """
    from gen_jax.metrics import features as F

    if path.endswith(".npz"):
        from gen_jax.metrics.inception import load_inception_params

        return F.make_inception_extractor(load_inception_params(path))
    path = path or default_feature_dir(dataset)
    overrides = {"dataset.data_dir": data_dir} if data_dir else {}
    try:
        exp = common.load_experiment(f"classifier_{dataset}", overrides)
    except ConfigError:
        raise ConfigError(f"config.eval.feature_net: no classifier config for dataset {dataset!r}; "
                          f"give Inception-v3 weights as a .npz path") from None
    info, model, mesh = common.setup(exp)
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        from gen_jax.train.loop import train

        train(exp, model, path, common.build_stream(exp, info, mesh), info, progress=progress, mesh=mesh)
    state, _ = common.restore_state(exp, model, path, info)
    from gen_jax.config import from_config
    from gen_jax.metrics.classifier import ClassifierConfig

    return F.make_classifier_extractor(from_config(ClassifierConfig, exp.model, "config.model"),
                                       state.params)


def evaluate_params(exp, model, info, params, extractor, *, seed: int = 0, num_samples: Optional[int] = None,
                    test_arrays: Optional[dict] = None) -> dict:
    """All metrics of ``params``; also returns the samples and labels used (under ``_samples``,
    ``_labels``) for callers that save them."""
    from gen_jax.data.datasets import load_split
    from gen_jax.metrics.features import score_samples
    from experiments.sample import conditions_for

    num = num_samples or exp.eval.num_samples
    test = test_arrays if test_arrays is not None else load_split(exp.dataset.name, "test", common.data_dir(exp))
    key = jax.random.PRNGKey(seed)
    res = {"model": model.name, "family": model.family, "bpd_kind": model.bpd_kind}
    res["test_bpd"] = test_bpd(model, params, test, info, jax.random.fold_in(key, 1), exp.eval.batch_size)
    bits = test_token_bits(model, params, test, info, exp.eval.batch_size)
    if bits is not None:
        res["test_bits_per_token"] = bits
    labels = samples = None
    res["sample_seconds"] = None
    if model.sample is not None and not has_image_metrics(model, info):
        cond = conditions_for(exp, model, info, 8, arrays=test)
        x = np.asarray(jax.jit(model.sample, static_argnums=(2,))(params, jax.random.fold_in(key, 3), 8, cond))
        if "describe_samples" in model.extras:
            res["samples_text"] = model.extras["describe_samples"](x)
    elif model.sample is not None:
        cond = conditions_for(exp, model, info, num, arrays=test)
        labels = None if cond is None else cond.get("label")
        bs = min(num, exp.eval.batch_size)
        common.sample_in_batches(model, params, jax.random.fold_in(key, 2), bs, bs,
                                 None if cond is None else {k: v[:bs] for k, v in cond.items()})  # compile
        t0 = time.time()
        samples = common.sample_in_batches(model, params, jax.random.fold_in(key, 3), num, bs, cond)
        res["sample_seconds"] = time.time() - t0
        scores = score_samples(samples, images01(test, info), extractor, seed=seed)
        res.update({k: float(v) for k, v in scores.items()})
    res["_samples"], res["_labels"] = samples, labels
    return res


def main(argv=None) -> int:
    p = common.base_parser("Evaluate a trained gen_jax model.")
    p.add_argument("--num", type=int, default=0, help="samples to score (default config.eval.num_samples)")
    p.add_argument("--seed", type=int, default=0)
    try:
        args, overrides = common.parse_args(p, argv)
        exp = common.load_experiment(args.config, overrides)
        info, model, _ = common.setup(exp)
        state, _ = common.restore_state(exp, model, args.workdir, info)
        extractor = (feature_extractor(exp.dataset.name, common.data_dir(exp), exp.eval.feature_net)
                     if has_image_metrics(model, info) else None)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.train.loop import eval_params

    res = evaluate_params(exp, model, info, eval_params(state), extractor, seed=args.seed,
                          num_samples=args.num or None)
    res = {k: v for k, v in res.items() if not k.startswith("_")}
    res["step"] = int(state.step)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
