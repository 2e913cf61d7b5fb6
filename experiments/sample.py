"""Draw samples from a trained workdir.

    python -m experiments.sample --config C --workdir W --num N --out F.npy [--labels L.npy]

Writes float32 samples of shape (N, H, W, C) in [0, 1] to F.npy (and a PNG grid beside it).
For a conditional model the conditioning labels are read from ``--labels`` (int [N]) when
given, else cycle through the classes; the labels used are written to ``F_labels.npy``.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import CheckpointError


def conditions_for(exp, model, info, num: int, labels_path: str = "", arrays: dict | None = None) -> dict | None:
    """The ``cond`` dict of ``num`` samples of a conditional model (``None`` otherwise).

    Class-conditional models get the labels of ``labels_path`` (int ``[num]`` .npy) or labels
    cycling ``0..C-1``; caption-conditional models get the captions (and their labels) of the
    first ``num`` examples of ``arrays`` (default: the test split), cycled.
    """
    from gen_jax.train.loop import sample_conditions

    if not model.conditional:
        return None
    labels = None
    if labels_path:
        if model.condition_key != "label":
            raise ValueError(f"--labels: model {model.name!r} is conditioned on {model.condition_key}, not labels")
        if not os.path.isfile(labels_path):
            raise ValueError(f"--labels: no file at {labels_path}")
        labels = np.load(labels_path)
        if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"--labels: expected int labels of shape ({num},), got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= info.num_classes:
            raise ValueError(f"--labels: values must be in [0, {info.num_classes}), got [{labels.min()}, {labels.max()}]")
    if (model.condition_key != "label" or getattr(info, "local_cond_shape", ())) and arrays is None:
        from gen_jax.data.datasets import load_split

        arrays = load_split(exp.dataset.name, "test", common.data_dir(exp))
    cond = sample_conditions(model, info, num, arrays)
    if labels is not None:
        cond["label"] = labels.astype(np.int32)
    return cond


def main(argv=None) -> int:
    p = common.base_parser("Sample from a trained gen_jax model.")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--out", required=True)
    p.add_argument("--labels", default="")
    p.add_argument("--seed", type=int, default=0)
    try:
        args, overrides = common.parse_args(p, argv)
        if args.num <= 0:
            raise ValueError(f"--num: must be > 0, got {args.num}")
        exp = common.load_experiment(args.config, overrides)
        info, model, _ = common.setup(exp)
        if model.sample is None:
            raise ValueError(f"model {model.name!r} has no sampler")
        cond = conditions_for(exp, model, info, args.num, args.labels)
        state, _ = common.restore_state(exp, model, args.workdir, info)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.train.loop import eval_params
    from gen_jax.viz import save_grid

    x = common.sample_in_batches(model, eval_params(state), jax.random.PRNGKey(args.seed), args.num,
                                 min(args.num, exp.eval.batch_size), cond)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, x)
    if cond is not None and "label" in cond:
        np.save(os.path.splitext(args.out)[0] + "_labels.npy", cond["label"])
    save_grid(os.path.splitext(args.out)[0] + ".png", x[:64])
    print(f"wrote {x.shape} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
