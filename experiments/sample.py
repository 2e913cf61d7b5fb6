"""Draw samples from a trained workdir.

    python -m experiments.sample --config C --workdir W --num N --out F.npy [--labels L.npy] [--step S]

Writes float32 samples of shape (N, H, W, C) in [0, 1] to exactly F (NumPy .npy data; a name
without the .npy suffix is kept, with a note), and a PNG grid beside it; a sampler of kind
``points`` (ring2d, grid2d) writes float32 (N, D) in data coordinates and no grid. An unwritable F
fails before anything is sampled. The checkpoint is ``--step`` or the newest readable one.
A config with ``eval.rejection_steps > 0`` (the 2-D GAN configs) draws through discriminator
rejection sampling (``experiments/rejection.py``); ``--config.eval.rejection_steps=0`` draws the
generator's raw samples.
For a conditional model the conditioning labels are read from ``--labels`` (int [N]) when
given, else cycle through the classes; the labels used are written to ``F_labels.npy``.
"""
from __future__ import annotations

import os
import sys

import jax
import numpy as np

from experiments import common
from experiments.rejection import check_rejection, rejection_points
from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import CheckpointError


def check_out(path: str) -> None:
    """Fails (``ValueError`` naming ``--out``) if ``path`` cannot be written, before sampling;
    notes a name without ``.npy`` (written as given, not with ``.npy`` appended)."""
    if not path.endswith(".npy"):
        print(f"note: --out {path} has no .npy suffix; writing .npy data to exactly {path}", file=sys.stderr)
    if os.path.isdir(path):
        raise ValueError(f"--out: {path} is a directory; give a file name such as {os.path.join(path, 'samples.npy')}")
    existed = os.path.exists(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise ValueError(f"--out: cannot write {path}: {e.strerror or e}") from None
    if not existed:
        os.remove(path)


def parser():
    p = common.base_parser("Sample from a trained gen_jax model.")
    p.add_argument("--num", type=int, default=1000, help="number of samples")
    p.add_argument("--out", default=None, help="output .npy file, written exactly as named")
    p.add_argument("--labels", default="", help="int [num] .npy of class labels (conditional models)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step to sample from (default: the newest readable one)")
    return p


def main(argv=None) -> int:
    p = parser()
    try:
        args, overrides = common.parse_args(p, argv)
        if not args.out:
            p.error("the following arguments are required: --out")
        if args.num <= 0:
            raise ValueError(f"--num: must be > 0, got {args.num}")
        check_out(args.out)
        exp = common.load_experiment(args.config, overrides)
        info, model, _ = common.setup(exp)
        if getattr(model, "sampler", None) is None:
            raise ValueError(f"model {model.name!r} has no sampler")
        check_rejection(exp, model)
        cond = common.conditions_for(model, info, args.num, args.labels, exp=exp)
        state, _ = common.restore_state(exp, model, args.workdir, info, step=args.step)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.evaluation.sampling import sample_in_batches
    from gen_jax.train.loop import eval_params
    from gen_jax.viz import save_grid

    params, key = eval_params(state, model), jax.random.PRNGKey(args.seed)
    if exp.eval.rejection_steps:
        x, note = rejection_points(exp, info, model, params, key, args.num)
        print(note)
    else:
        x = sample_in_batches(model, params, key, args.num, min(args.num, exp.eval.batch_size), cond)
    with open(args.out, "wb") as f:  # np.save on a name would append .npy
        np.save(f, x)
    if cond is not None and "label" in cond:
        np.save(os.path.splitext(args.out)[0] + "_labels.npy", cond["label"])
    if model.sampler.kind == "image":
        save_grid(os.path.splitext(args.out)[0] + ".png", x[:64])
    print(f"wrote {x.shape} samples to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
