"""What train, sample, evaluate and the bake-off share: config loading, model building,
restoring a workdir's params, and the feature network the metrics use."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Optional

import jax
import numpy as np

from gen_jax.config import ConfigError
from gen_jax.model import GenerativeModel
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import ExperimentConfig, apply_overrides, load_config_file, parse_cli_overrides, parse_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "experiments", "configs")


def config_path(name_or_path: str) -> str:
    """``vae_digits`` -> ``experiments/configs/vae_digits.py``; paths pass through."""
    if os.path.isfile(name_or_path):
        return name_or_path
    cand = os.path.join(CONFIG_DIR, name_or_path if name_or_path.endswith(".py") else name_or_path + ".py")
    if os.path.isfile(cand):
        return cand
    raise ConfigError(f"--config: no config file at {name_or_path}")


def load_experiment(path: str, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Loads a config file, applies ``--config.x=y`` overrides, checks every section."""
    cfg = load_config_file(config_path(path))
    apply_overrides(cfg, overrides or {})
    return parse_config(cfg)


def data_dir(exp: ExperimentConfig) -> Optional[str]:
    return exp.dataset.data_dir or None


def build_model(exp: ExperimentConfig, info) -> GenerativeModel:
    from experiments.registry import get_factory

    return get_factory(exp.model_name)(exp.model, info)


def build_stream(exp: ExperimentConfig, info, mesh, split: str = "train"):
    """The sharded, deterministic batch stream of ``split``."""
    from gen_jax.data.datasets import load_split
    from gen_jax.data.pipeline import BatchStream

    shd.check_batch_size(exp.train.batch_size, mesh)
    arrays = load_split(exp.dataset.name, split, data_dir(exp))
    return BatchStream(arrays, info, exp.train.batch_size, exp.seed, sharding=shd.batch_sharding(mesh))


def setup(exp: ExperimentConfig):
    """Dataset info, the model, and the mesh, all checked before anything compiles."""
    from gen_jax.data.datasets import get_info

    info = get_info(exp.dataset.name, data_dir(exp))
    model = build_model(exp, info)
    mesh = shd.make_mesh(exp.mesh.num_devices)
    shd.check_batch_size(exp.train.batch_size, mesh)
    return info, model, mesh


def restore_state(exp: ExperimentConfig, model: GenerativeModel, workdir: str, info, step=None):
    """Restores the train state of ``workdir`` onto one device (for sampling/evaluation)."""
    from gen_jax.data.datasets import load_split
    from gen_jax.data.pipeline import BatchStream
    from gen_jax.train.checkpoint import Checkpointer
    from gen_jax.train.loop import init_state, _with_shardings

    mesh = shd.make_mesh(1)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
    arrays = load_split(exp.dataset.name, "train", data_dir(exp))
    example = BatchStream(arrays, info, exp.train.batch_size, exp.seed).batch_at(0)
    _, _, abstract, state_sh, _ = init_state(exp, model, example, mesh, shd.batch_sharding(mesh))
    state, meta = ckpt.restore(_with_shardings(abstract, state_sh), step=step)
    ckpt.close()
    return state, meta


def sample_in_batches(model: GenerativeModel, params, key, num: int, batch_size: int,
                      cond: Optional[dict] = None) -> np.ndarray:
    """``num`` samples ``[num, H, W, C]`` in [0, 1], drawn ``batch_size`` at a time with one
    compiled sampler (key of chunk i is ``fold_in(key, i)``)."""
    fn = jax.jit(model.sample, static_argnums=(2,))
    out = []
    for i, start in enumerate(range(0, num, batch_size)):
        n = batch_size
        c = None
        if cond is not None:
            c = {k: _pad(v[start:start + n], n) for k, v in cond.items()}
        x = np.asarray(fn(params, jax.random.fold_in(key, i), n, c))
        out.append(x[: min(n, num - start)])
    return np.concatenate(out, 0).astype(np.float32)


def _pad(a, n):
    a = np.asarray(a)
    if len(a) == n:
        return a
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), 0)], 0)


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="config file (or its name in experiments/configs)")
    p.add_argument("--workdir", required=True)
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None):
    """argparse plus ``--config.a.b=value`` overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = parse_cli_overrides(argv)
    args = parser.parse_args(rest)
    return args, overrides


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)
