"""Metrics for a trained workdir, printed as one JSON line.

    python -m experiments.evaluate --config C --workdir W [--num N] [--seed S] [--step S]

Reports the test likelihood where the model has one (bits/dim, with ``bpd_kind`` saying
whether it is exact or a bound; bits per token for token models), and for image samplers FID,
KID, precision/recall and Inception Score of ``config.eval.num_samples`` samples against the
test split, on the dataset's feature network. The work is :mod:`gen_jax.evaluation`'s.
"""
from __future__ import annotations

import json
import sys

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.train.checkpoint import CheckpointError


def parser():
    p = common.base_parser("Evaluate a trained gen_jax model.")
    p.add_argument("--num", type=int, default=0, help="samples to score (default config.eval.num_samples)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step to evaluate (default: the best one when config.train.best_metric "
                        "keeps one, else the newest readable one)")
    p.add_argument("--train_feature_net", action="store_true",
                   help="train the feature network into config.eval.feature_net if it holds no checkpoint "
                        "(the default location trains on first use anyway)")
    return p


def main(argv=None) -> int:
    p = parser()
    try:
        args, overrides = common.parse_args(p, argv)
        exp = common.load_experiment(args.config, overrides)
        info, model, _ = common.setup(exp)
        state, _, which = common.restore_for_eval(exp, model, args.workdir, info, step=args.step)
        from gen_jax.evaluation.evaluate import has_image_metrics

        extractor = (common.feature_extractor(exp.dataset.name, common.data_dir(exp), exp.eval.feature_net,
                                              train_missing=args.train_feature_net)
                     if has_image_metrics(model) else None)
    except (ConfigError, CheckpointError, ValueError) as e:
        common.fail(str(e))
    from gen_jax.data.datasets import load_split
    from gen_jax.evaluation.evaluate import evaluate_params
    from gen_jax.train.loop import eval_params

    test = load_split(exp.dataset.name, "test", common.data_dir(exp))
    res = evaluate_params(model, eval_params(state, model), info, test, extractor, seed=args.seed,
                          num_samples=args.num or exp.eval.num_samples, batch_size=exp.eval.batch_size).metrics
    res["step"] = int(state.step)
    res["checkpoint"] = which
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
