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


def labels_for(model, info, num: int, labels_path: str = "") -> np.ndarray | None:
    if not model.conditional:
        return None
    if labels_path:
        if not os.path.isfile(labels_path):
            raise ValueError(f"--labels: no file at {labels_path}")
        labels = np.load(labels_path)
        if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"--labels: expected int labels of shape ({num},), got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= info.num_classes:
            raise ValueError(f"--labels: values must be in [0, {info.num_classes}), got [{labels.min()}, {labels.max()}]")
        return labels.astype(np.int32)
    return (np.arange(num) % info.num_classes).astype(np.int32)


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
        labels = labels_for(model, info, args.num, args.labels)
        state, _ = common.restore_state(exp, model, args.workdir, info)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.train.loop import eval_params
    from gen_jax.viz import save_grid

    cond = None if labels is None else {"label": labels}
    x = common.sample_in_batches(model, eval_params(state), jax.random.PRNGKey(args.seed), args.num,
                                 min(args.num, exp.eval.batch_size), cond)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, x)
    if labels is not None:
        np.save(os.path.splitext(args.out)[0] + "_labels.npy", labels)
    save_grid(os.path.splitext(args.out)[0] + ".png", x[:64])
    print(f"wrote {x.shape} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
