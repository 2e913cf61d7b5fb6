"""Trains the two-player toy (3 disc repeats, EMA of gen) for 200 steps into argv[1]; argv[2]
is a pause in seconds after each step (so a test can kill it mid-run)."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gen_jax.data.datasets import get_info, load_split  # noqa: E402
from gen_jax.data.pipeline import BatchStream  # noqa: E402
from gen_jax.train import sharding as shd  # noqa: E402
from gen_jax.train.experiment import parse_config  # noqa: E402
from gen_jax.train.loop import train  # noqa: E402
from tests.train import toy_game as tg  # noqa: E402


def main(workdir: str, pause: float) -> None:
    exp = parse_config(tg.game_config(200, 0.05, 0.2, ema_decay=0.9, log_every=5, ckpt_every=40))
    info = get_info("digits")
    mesh = shd.make_mesh(1)
    model = tg.make_game("alternating", k=3)
    if pause:
        phases = model.training.phases
        slow = tuple(p if i else p.__class__(p.group, _slowed(p.loss, pause), repeats=p.repeats, name=p.name)
                     for i, p in enumerate(phases))
        model = model.__class__(name=model.name, training=model.training._replace(phases=slow))
    stream = BatchStream(load_split("digits", "train"), info, exp.train.batch_size, exp.seed,
                         sharding=shd.batch_sharding(mesh))
    res = train(exp, model, workdir, stream, info, progress=False, mesh=mesh)
    print(json.dumps({"steps": int(res.state.step), "resumed_from": res.resumed_from}))


def _slowed(loss, pause):
    import jax

    def fn(params, batch, key):
        jax.debug.callback(lambda: time.sleep(pause))
        return loss(params, batch, key)

    return fn


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
