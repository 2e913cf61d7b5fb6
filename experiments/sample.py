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
        if getattr(model, "sampler", None) is None:
            raise ValueError(f"model {model.name!r} has no sampler")
        cond = common.conditions_for(model, info, args.num, args.labels, exp=exp)
        state, _ = common.restore_state(exp, model, args.workdir, info)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.evaluation.sampling import sample_in_batches
    from gen_jax.train.loop import eval_params
    from gen_jax.viz import save_grid

    x = sample_in_batches(model, eval_params(state, model), jax.random.PRNGKey(args.seed), args.num,
                          min(args.num, exp.eval.batch_size), cond)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, x)
    if cond is not None and "label" in cond:
        np.save(os.path.splitext(args.out)[0] + "_labels.npy", cond["label"])
    if model.sampler.kind == "image":
        save_grid(os.path.splitext(args.out)[0] + ".png", x[:64])
    print(f"wrote {x.shape} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
