"""Train any model from a config.

    python -m experiments.train --config vae_digits --workdir W \
        [--config.train.steps=2000] [--coordinator 127.0.0.1:PORT --num_processes 2 --process_id 0]
    python -m experiments.train --list            # the configs and what each is for

Restarting on the same workdir resumes from the latest readable checkpoint and continues on
the exact trajectory of an uninterrupted run; a resume under a config that would leave that
trajectory is refused unless ``--allow_config_change`` (:mod:`gen_jax.train.resume`). A
workdir is locked while a run trains into it. Invalid configs fail before anything
compiles, with a message naming the field.
"""
from __future__ import annotations

import json
import sys

from experiments import common
from gen_jax.config import ConfigError


def parser():
    p = common.base_parser("Train a gen_jax model (resuming the workdir's latest readable checkpoint, if any).")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    p.add_argument("--step", type=int, default=None,
                   help="resume from this checkpoint step instead of the newest readable one "
                        "(the later checkpoints are deleted)")
    p.add_argument("--allow_config_change", action="store_true",
                   help="resume even if the config changes what the checkpoint was trained with "
                        "(the run then leaves the uninterrupted trajectory)")
    p.add_argument("--coordinator", default="", help="host:port of process 0 (multi-process)")
    p.add_argument("--num_processes", type=int, default=1, help="number of processes (multi-process)")
    p.add_argument("--process_id", type=int, default=0, help="this process's index (multi-process)")
    return p


def main(argv=None) -> int:
    from gen_jax.train.checkpoint import CheckpointError
    from gen_jax.train.lock import WorkdirLocked
    from gen_jax.train.writers import MetricsError

    p = parser()
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
        evaluator = common.evaluator_for(exp, model, info, progress=not args.no_progress)
    except (ConfigError, ValueError, KeyError) as e:
        common.fail(str(e))
    from gen_jax.train.loop import train

    try:
        result = train(exp, model, args.workdir, stream, info, progress=not args.no_progress, mesh=mesh,
                       resume_step=args.step, allow_config_change=args.allow_config_change, evaluator=evaluator)
    except (WorkdirLocked, ConfigError, CheckpointError, MetricsError) as e:
        common.fail(str(e))
    print(json.dumps({"model": model.name, "steps": int(result.state.step),
                      "resumed_from": result.resumed_from, "seconds": round(result.seconds, 2),
                      **{k: round(v, 6) for k, v in result.last_metrics.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
