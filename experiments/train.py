"""Train any model from a config.

    python -m experiments.train --config experiments/configs/vae_digits.py --workdir W \
        [--config.train.steps=2000] [--coordinator 127.0.0.1:PORT --num_processes 2 --process_id 0]

Restarting on the same workdir resumes from the latest checkpoint and continues on the
exact trajectory of an uninterrupted run. Invalid configs fail before anything compiles,
with a message naming the field.
"""
from __future__ import annotations

import json
import sys

from experiments import common
from gen_jax.config import ConfigError


def main(argv=None) -> int:
    p = common.base_parser("Train a gen_jax model.")
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--coordinator", default="", help="host:port of process 0 (multi-process)")
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    try:
        args, overrides = common.parse_args(p, argv)
        if args.coordinator:
            import jax

            jax.distributed.initialize(coordinator_address=args.coordinator,
                                       num_processes=args.num_processes,
                                       process_id=args.process_id, initialization_timeout=120)
        exp = common.load_experiment(args.config, overrides)
        info, model, mesh = common.setup(exp)
        stream = common.build_stream(exp, info, mesh)
    except (ConfigError, ValueError, KeyError) as e:
        common.fail(str(e))
    from gen_jax.train.loop import train

    result = train(exp, model, args.workdir, stream, info, progress=not args.no_progress, mesh=mesh)
    print(json.dumps({"model": model.name, "steps": int(result.state.step),
                      "resumed_from": result.resumed_from, "seconds": round(result.seconds, 2),
                      **{k: round(v, 6) for k, v in result.last_metrics.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
