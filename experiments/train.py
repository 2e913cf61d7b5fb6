"""Train any model from a config.

    python -m experiments.train --config vae_digits --workdir W [--config.train.steps=2000]
    python -m experiments.train --list            # the configs and what each is for

Multi-process (one process per host; every process runs the same command, the workdir on a
shared filesystem; :mod:`gen_jax.train.distributed`):

    python -m experiments.train ... --cluster tpu                     # every worker of a TPU pod
    srun python -m experiments.train ... --cluster slurm              # each SLURM task
    python -m experiments.train ... --coordinator HOST0:PORT --num_processes 2 --process_id I

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
    add_launch_flags(p)
    return p


def add_launch_flags(p) -> None:
    """The multi-process launch flags (:mod:`gen_jax.train.distributed`; each falls back to
    its ``GEN_JAX_*`` environment variable)."""
    from gen_jax.train import distributed as dist

    g = p.add_argument_group("multi-process launch (gen_jax.train.distributed)")
    g.add_argument("--cluster", default=None, choices=dist.CLUSTERS,
                   help="auto (default; env GEN_JAX_CLUSTER): manual if --coordinator/--num_processes > 1, "
                        "else slurm inside srun, else tpu on a Cloud TPU VM, else one process")
    g.add_argument("--coordinator", default=None, help="host:port of process 0 (env GEN_JAX_COORDINATOR)")
    g.add_argument("--num_processes", type=int, default=None, help="number of processes (env GEN_JAX_NUM_PROCESSES)")
    g.add_argument("--process_id", type=int, default=None, help="this process's index (env GEN_JAX_PROCESS_ID)")
    g.add_argument("--init_timeout", type=int, default=300, help="seconds for all processes to connect")
    g.add_argument("--heartbeat_timeout", type=int, default=100,
                   help="seconds without heartbeats after which a process is declared dead (the others then abort)")
    g.add_argument("--shutdown_timeout", type=int, default=300, help="seconds the exit barrier waits")


def launch(args):
    """Initializes ``jax.distributed`` from the launch flags (nothing for one process); returns
    the :class:`gen_jax.train.distributed.LaunchSpec`. Raises ``LaunchError`` naming the flag."""
    from gen_jax.train import distributed as dist

    spec = dist.resolve(args.cluster, args.coordinator, args.num_processes, args.process_id,
                        init_timeout=args.init_timeout, heartbeat_timeout=args.heartbeat_timeout,
                        shutdown_timeout=args.shutdown_timeout)
    return dist.initialize(spec)


def main(argv=None) -> int:
    from gen_jax.train.checkpoint import CheckpointError
    from gen_jax.train.lock import WorkdirLocked
    from gen_jax.train.distributed import exit_on_peer_failure
    from gen_jax.train.writers import MetricsError

    p = parser()
    try:
        args, overrides = common.parse_args(p, argv)
        exp = common.load_experiment(args.config, overrides)  # config errors before any process waits
        spec = launch(args)
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
    except Exception as e:  # a peer's death fails a collective: one clear line, no shutdown wait
        exit_on_peer_failure(e, spec)
        raise
    print(json.dumps({"model": model.name, "steps": int(result.state.step),
                      "resumed_from": result.resumed_from, "seconds": round(result.seconds, 2),
                      **{k: round(v, 6) for k, v in result.last_metrics.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
