"""The experiment edge that train, sample, evaluate and the bake-off share: config loading,
model building (trained stage ones loaded here and handed to stage-two factories), restoring
a workdir's params, and the feature network the metrics use."""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Optional

import jax
import numpy as np

from gen_jax.config import ConfigError
from gen_jax.model import Model, Stage
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import ExperimentConfig, apply_overrides, load_config_file, parse_cli_overrides, parse_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "experiments", "configs")


def config_names() -> list[str]:
    """The names of the configs in ``experiments/configs`` (of this package, wherever it is
    installed; not of the working directory)."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                  if f.endswith(".py") and not f.startswith("_") and f != "base.py")


def config_purpose(name: str) -> str:
    """The first line of a config file's docstring ('' without one)."""
    import ast

    with open(os.path.join(CONFIG_DIR, name + ".py")) as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def list_configs() -> str:
    """One line per config: its name and purpose."""
    names = config_names()
    width = max(map(len, names))
    return "\n".join(f"{n.ljust(width)}  {config_purpose(n)}" for n in names)


def config_path(name_or_path: str) -> str:
    """``vae_digits`` -> ``<package>/experiments/configs/vae_digits.py``; paths pass through.
    An unknown name is a ``ConfigError`` suggesting the closest config names."""
    if os.path.isfile(name_or_path):
        return name_or_path
    cand = os.path.join(CONFIG_DIR, name_or_path if name_or_path.endswith(".py") else name_or_path + ".py")
    if os.path.isfile(cand):
        return cand
    stem = os.path.basename(name_or_path)
    stem = stem[:-3] if stem.endswith(".py") else stem
    close = difflib.get_close_matches(stem, config_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"--config: no config file at {name_or_path} and no config named {stem!r} in "
                      f"{CONFIG_DIR}{hint} (--list shows them all)")


def load_experiment(path: str, overrides: Optional[dict] = None) -> ExperimentConfig:
    """Loads a config file, applies ``--config.x=y`` overrides, checks every section."""
    cfg = load_config_file(config_path(path))
    apply_overrides(cfg, overrides or {})
    return parse_config(cfg)


def data_dir(exp: ExperimentConfig) -> Optional[str]:
    return exp.dataset.data_dir or None


def build_model(exp: ExperimentConfig, info) -> Model:
    """The model of ``exp``: its factory from the registry, given the trained stages it names
    (``config.stages``), each loaded by :func:`load_stage`."""
    from experiments.registry import get_entry

    entry = get_entry(exp.model_name)
    if not entry.stages:
        if exp.stages:
            raise ConfigError(f"config.stages: model {exp.model_name!r} composes no trained stage "
                              f"(got {sorted(exp.stages)})")
        return entry.factory()(exp.model, info)
    missing = [s for s in entry.stages if s not in exp.stages]
    if missing:
        raise ConfigError(f"config.stages.{missing[0]}: model {exp.model_name!r} needs a trained "
                          f"{missing[0]} (config, workdir)")
    stages = {name: load_stage(name, exp.stages[name], info) for name in entry.stages}
    return entry.factory()(exp.model, info, stages)


def resolve_workdir(path: str) -> str:
    """A workdir path: absolute, or relative to the working directory if it exists there,
    else to the repository root."""
    if os.path.isabs(path) or os.path.isdir(path):
        return os.path.abspath(path)
    in_repo = os.path.join(REPO, path)
    return in_repo if os.path.isdir(in_repo) else os.path.abspath(path)


def load_stage(name: str, spec, info=None) -> Stage:
    """Loads the trained stage ``config.stages.<name>``: its config (``spec.config`` plus
    ``spec.overrides``), its model, and the params of the latest checkpoint in
    ``spec.workdir`` (the EMA params when the run kept them), on the host.

    Raises:
      ConfigError naming ``config.stages.<name>.config`` (no such config, a bad override, a
      stage of another dataset than ``info``) or ``config.stages.<name>.workdir`` (no
      checkpoint there, or one of another architecture), with the command that trains it.
    """
    from gen_jax.data.datasets import get_info
    from gen_jax.train.checkpoint import CheckpointError
    from gen_jax.train.loop import eval_params

    where = f"config.stages.{name}"
    try:
        path = config_path(spec.config)
    except ConfigError:
        raise ConfigError(f"{where}.config: no config file {spec.config!r} (tried it as a path and in "
                          f"{CONFIG_DIR})") from None
    try:
        exp = load_experiment(path, dict(o.split("=", 1) for o in spec.overrides))
        ds = getattr(info, "name", None)
        if ds is not None and exp.dataset.name != ds:
            raise ConfigError(f"stage {name} was configured on dataset {exp.dataset.name!r}, this model on {ds!r}")
        stage_info = get_info(exp.dataset.name, data_dir(exp))
        model = build_model(exp, stage_info)
    except ConfigError as e:
        raise ConfigError(f"{where}.config / overrides: {e}") from None
    workdir = resolve_workdir(spec.workdir)
    hint = f"python -m experiments.train --config {path} --workdir {spec.workdir}"
    try:
        state, meta = restore_state(exp, model, workdir, stage_info)
    except CheckpointError as e:
        raise ConfigError(f"{where}.workdir: cannot restore stage {name} ({spec.config!r}) from {workdir}: "
                          f"{e}. Either train stage one first: {hint}, or point {where}.config / overrides at "
                          f"the config that workdir was trained with.") from None
    params = jax.tree.map(np.asarray, jax.device_get(eval_params(state, model)))
    return Stage(model=model, params=params, config=exp, workdir=workdir,
                 step=int(meta.get("step", int(state.step))))


def train_missing_stages(exp: ExperimentConfig, under: str, progress: bool = False) -> dict:
    """Trains each stage ``exp``'s model restores (its registry entry's ``stages``) whose
    ``config.stages.<name>.workdir`` lies under ``under`` and holds no checkpoint yet, with the
    stage's own config and overrides; returns ``{name: train seconds}`` of the stages trained now.
    Stages elsewhere are left alone (a missing one is then :func:`load_stage`'s ``ConfigError``)."""
    from experiments import registry
    from gen_jax.train.loop import train

    under, trained = os.path.abspath(under), {}
    for name in registry.get_entry(exp.model_name).stages:
        spec = exp.stages.get(name)
        workdir = resolve_workdir(spec.workdir) if spec is not None else ""   # where load_stage looks
        if not workdir.startswith(under + os.sep) or os.path.isdir(os.path.join(workdir, "checkpoints")):
            continue
        stage_exp = load_experiment(spec.config, dict(o.split("=", 1) for o in spec.overrides))
        info, model, mesh = setup(stage_exp)
        print(f"training stage {name} ({spec.config}) into {workdir}", flush=True)
        result = train(stage_exp, model, workdir, build_stream(stage_exp, info, mesh), info, progress=progress,
                       mesh=mesh)
        trained[name] = result.seconds
    return trained


def build_stream(exp: ExperimentConfig, info, mesh, split: str = "train"):
    """The sharded, deterministic batch stream of ``split``."""
    from gen_jax.data.datasets import load_split
    from gen_jax.data.pipeline import BatchStream

    shd.check_batch_size(exp.train.batch_size, mesh)
    if exp.dataset.reader == "records":  # streamed per-process reads, no split in memory
        from gen_jax.data.records import open_records

        return open_records(exp.dataset.name, split, data_dir(exp), info, exp.train.batch_size, exp.seed,
                            sharding=shd.batch_sharding(mesh), prefetch=exp.dataset.prefetch)
    arrays = load_split(exp.dataset.name, split, data_dir(exp))
    return BatchStream(arrays, info, exp.train.batch_size, exp.seed, sharding=shd.batch_sharding(mesh))


def setup(exp: ExperimentConfig):
    """Dataset info, the model, and the mesh, all checked before anything compiles."""
    from gen_jax.data.datasets import get_info

    info = get_info(exp.dataset.name, data_dir(exp))
    model = build_model(exp, info)
    mesh = shd.mesh_from_config(exp.mesh)
    shd.check_batch_size(exp.train.batch_size, mesh)
    return info, model, mesh


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def restore_state(exp: ExperimentConfig, model: Model, workdir: str, info, step=None):
    """Restores the train state of ``workdir`` onto one device (for sampling/evaluation):
    checkpoint ``step``, or the newest one that reads (each unreadable newer one reported in
    one line on stderr). Frozen stage-one groups are not in it:
    :func:`gen_jax.train.loop.eval_params` merges them."""
    from gen_jax.data.datasets import load_split
    from gen_jax.data.pipeline import BatchStream
    from gen_jax.train.checkpoint import Checkpointer
    from gen_jax.train.loop import init_state, _with_shardings

    mesh = shd.make_mesh(1)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), create=False)
    try:
        if exp.dataset.reader == "records":  # one batch read, not the split
            from gen_jax.data.records import open_records

            example = open_records(exp.dataset.name, "train", data_dir(exp), info, exp.train.batch_size,
                                   exp.seed, process_index=0, process_count=1).batch_at(0)
        else:
            arrays = load_split(exp.dataset.name, "train", data_dir(exp))
            example = BatchStream(arrays, info, exp.train.batch_size, exp.seed).batch_at(0)
        _, _, abstract, state_sh, _ = init_state(exp, model, example, mesh, shd.batch_sharding(mesh))
        state, meta = ckpt.restore_readable(_with_shardings(abstract, state_sh), step=step, say=_note)
    finally:
        ckpt.close()
    return state, meta


def evaluator_for(exp: ExperimentConfig, model: Model, info, progress: bool = False, extractor=None,
                  train_arrays: Optional[dict] = None):
    """The train loop's periodic evaluation for ``exp`` (``config.train.eval_every > 0``, an image
    sampler): FID / KID / precision / recall of ``config.train.eval_num`` samples against the
    *train* split on the dataset's feature network (the test split stays unseen by the choice
    of the best checkpoint); ``None`` otherwise. ``extractor`` / ``train_arrays``: ones the caller
    already holds (loaded here when omitted)."""
    from gen_jax.evaluation.evaluate import has_image_metrics, make_sample_scorer

    if not exp.train.eval_every or not has_image_metrics(model):
        return None
    from gen_jax.data.datasets import load_split

    if extractor is None:
        extractor = feature_extractor(exp.dataset.name, data_dir(exp), exp.eval.feature_net, progress=progress)
    if train_arrays is None:
        train_arrays = load_split(exp.dataset.name, "train", data_dir(exp))
    return make_sample_scorer(model, info, train_arrays, extractor, num=exp.train.eval_num,
                              batch_size=exp.eval.batch_size, seed=exp.seed)


def restore_for_eval(exp: ExperimentConfig, model: Model, workdir: str, info, step=None):
    """``(state, meta, which)``: the state to evaluate a finished run with: the best checkpoint
    (``<workdir>/best``, :mod:`gen_jax.train.best`) when the config keeps one by
    ``config.train.best_metric`` and no ``step`` is asked for, else checkpoint ``step`` / the newest."""
    from gen_jax.train.best import best_dir, read_best

    rec = read_best(workdir) if exp.train.best_metric and step is None else None
    if rec is not None:
        state, meta = restore_state(exp, model, best_dir(workdir), info)
        return state, meta, f"best {rec['metric']} {rec['value']:.4g} at step {rec['step']}"
    state, meta = restore_state(exp, model, workdir, info, step=step)
    return state, meta, "latest"


def default_feature_dir(dataset: str) -> str:
    return os.path.join(REPO, "results", "feature_nets", dataset)


def feature_extractor(dataset: str, data_dir_: Optional[str], path: str = "", progress: bool = False,
                      train_missing: bool = False):
    """The feature network the sample metrics use for ``dataset``.

    * ``path`` ending in ``.npz``: Inception-v3 weights given by the user (standard datasets);
    * otherwise a classifier workdir (default ``results/feature_nets/<dataset>``), trained with
      ``experiments/configs/classifier_<dataset>.py`` if it holds no checkpoint yet: always for
      the default location, for a given ``path`` only with ``train_missing``
      (``--train_feature_net``); else a ``ConfigError`` naming ``config.eval.feature_net``.
      A checkpoint there that does not restore as that classifier is a ``ConfigError`` saying
      the feature network is the problem.
    """
    from gen_jax.metrics import features as F

    if path.endswith(".npz"):
        from gen_jax.metrics.inception import load_inception_params

        return F.make_inception_extractor(load_inception_params(path))
    if path and not train_missing and not os.path.isdir(os.path.join(path, "checkpoints")):
        raise ConfigError(f"config.eval.feature_net: no feature-network checkpoint in {path} (expected "
                          f"{os.path.join(path, 'checkpoints')}); pass --train_feature_net to train one there, "
                          f"or leave config.eval.feature_net empty for {default_feature_dir(dataset)}")
    path = path or default_feature_dir(dataset)
    overrides = {"dataset.data_dir": data_dir_} if data_dir_ else {}
    try:
        exp = load_experiment(f"classifier_{dataset}", overrides)
    except ConfigError:
        raise ConfigError(f"config.eval.feature_net: no classifier config for dataset {dataset!r}; "
                          f"give Inception-v3 weights as a .npz path") from None
    info, model, mesh = setup(exp)
    if not os.path.isdir(os.path.join(path, "checkpoints")):
        from gen_jax.train.loop import train

        print(f"training the {dataset} feature network into {path} (once; the metrics use it)", flush=True)
        train(exp, model, path, build_stream(exp, info, mesh), info, progress=progress, mesh=mesh)
    from gen_jax.train.checkpoint import CheckpointError

    try:
        state, _ = restore_state(exp, model, path, info)
    except CheckpointError as e:
        raise ConfigError(f"config.eval.feature_net: the feature network at {path} is not a usable "
                          f"classifier_{dataset} checkpoint (the feature network is the problem, not the "
                          f"model being evaluated): {e}") from None
    from gen_jax.config import typed
    from gen_jax.metrics.classifier import ClassifierConfig

    return F.make_classifier_extractor(typed(ClassifierConfig, exp.model, "config.model"), state.params)


def conditions_for(model: Model, info, num: int, labels_path: str = "", arrays: Optional[dict] = None,
                   exp: Optional[ExperimentConfig] = None) -> Optional[dict]:
    """The ``cond`` dict of ``num`` samples of a conditional model (``None`` otherwise): the
    model's own draw (``model.conditioning.draw`` over ``arrays``, default the test split),
    with the labels of ``labels_path`` (int ``[num]`` .npy) in place of its labels."""
    from gen_jax.data.datasets import load_split

    cond_cap = getattr(model, "conditioning", None)
    if cond_cap is None:
        if labels_path:
            raise ValueError(f"--labels: model {model.name!r} is unconditional")
        return None
    labels = None
    if labels_path:
        if "label" not in cond_cap.keys or cond_cap.num_classes < 1:
            raise ValueError(f"--labels: model {model.name!r} is conditioned on {cond_cap.key}, not labels")
        if not os.path.isfile(labels_path):
            raise ValueError(f"--labels: no file at {labels_path}")
        labels = np.load(labels_path)
        if labels.shape != (num,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"--labels: expected int labels of shape ({num},), got {labels.dtype} {labels.shape}")
        if labels.min() < 0 or labels.max() >= cond_cap.num_classes:
            raise ValueError(f"--labels: values must be in [0, {cond_cap.num_classes}), got "
                             f"[{labels.min()}, {labels.max()}]")
    if arrays is None and exp is not None:
        arrays = load_split(exp.dataset.name, "test", data_dir(exp))
    cond = cond_cap.draw(num, arrays)
    if labels is not None:
        cond["label"] = labels.astype(np.int32)
    return cond


OVERRIDES_HELP = """config overrides:
  --config.SECTION.FIELD=VALUE  sets one field of the config file (repeatable), e.g.
                                --config.train.steps=2000 --config.optim.learning_rate=3e-4
                                --config.model.hidden='(64, 32)' --config.seed=1.
                                VALUE is a Python literal (or a bare string); the field must
                                exist (or be a field of the section's typed dataclass) and keep
                                its type. Sections: seed, dataset, model, optim, train, mesh,
                                eval, stages. Every field is checked before anything compiles.
"""


def base_parser(description: str, workdir_help: str = "the run's directory (checkpoints/, metrics.jsonl, "
                "tb/, samples/)") -> argparse.ArgumentParser:
    """The shared flags; ``--config.a.b=v`` overrides are documented in the epilog."""
    p = argparse.ArgumentParser(description=description, epilog=OVERRIDES_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="config file path, or a config name from experiments/configs (see --list)")
    p.add_argument("--workdir", default=None, help=workdir_help)
    p.add_argument("--list", action="store_true", help="list the configs with their purpose and exit")
    return p


def parse_args(parser: argparse.ArgumentParser, argv=None):
    """argparse plus ``--config.a.b=value`` overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, rest = parse_cli_overrides(argv)
    args = parser.parse_args(rest)
    if getattr(args, "list", False):
        print(list_configs())
        raise SystemExit(0)
    for flag in ("config", "workdir"):
        if hasattr(args, flag) and not getattr(args, flag):
            parser.error(f"the following arguments are required: --{flag}")
    return args, overrides


def fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)
