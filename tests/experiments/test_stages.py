"""Stages composed at the experiment edge: experiments.common.load_stage and build_model."""
import jax
import ml_collections
import numpy as np
import pytest

from experiments import common
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info
from gen_jax.train.experiment import StageConfig, parse_config
from gen_jax.train.loop import eval_params, train


@pytest.fixture(scope="module")
def trained_stage(tmp_path_factory, digits_data_dir):
    wd = tmp_path_factory.mktemp("stage")
    exp = common.load_experiment("classifier_digits", {"train.steps": "4", "train.ckpt_every": "4",
                                                       "train.ema_decay": "0.5"})
    info, model, mesh = common.setup(exp)
    res = train(exp, model, str(wd), common.build_stream(exp, info, mesh), info, progress=False, mesh=mesh)
    return str(wd), res, model


def test_load_stage_restores_the_eval_params(trained_stage):
    wd, res, model = trained_stage
    spec = StageConfig(config="classifier_digits", workdir=wd,
                       overrides=("train.steps=4", "train.ckpt_every=4", "train.ema_decay=0.5"))
    stage = common.load_stage("stage1", spec, get_info("digits"))
    assert stage.step == 4 and stage.model.name == model.name and stage.config.model_name == "classifier"
    want = jax.device_get(eval_params(res.state, model))
    for a, b in zip(jax.tree.leaves(stage.params), jax.tree.leaves(want)):
        assert isinstance(a, np.ndarray)
        np.testing.assert_array_equal(a, b)


def test_load_stage_errors_name_the_field(tmp_path, trained_stage):
    info = get_info("digits")
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config: no config file 'nope'"):
        common.load_stage("stage1", StageConfig(config="nope", workdir=str(tmp_path)), info)
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir: cannot restore stage stage1 .*"
                                          r"train stage one first: python -m experiments\.train"):
        common.load_stage("stage1", StageConfig(config="classifier_digits", workdir=str(tmp_path)), info)
    wd, _, _ = trained_stage
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir: .*another architecture"):
        common.load_stage("stage1", StageConfig(config="classifier_digits", workdir=wd,
                                                overrides=("model.hidden=32",)), info)
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.config / overrides: config\.model\.hiden"):
        common.load_stage("stage1", StageConfig(config="classifier_digits", workdir=wd,
                                                overrides=("model.hiden=32",)), info)


def test_stage_sections_are_checked():
    base = {"seed": 0, "dataset": {"name": "digits"}, "model": {"name": "classifier"}}
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.workdir: required field is missing"):
        parse_config(ml_collections.ConfigDict({**base, "stages": {"stage1": {"config": "vae_digits"}}}))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1\.overrides: entries must be"):
        parse_config(ml_collections.ConfigDict({**base, "stages": {"stage1": {
            "config": "vae_digits", "workdir": "w", "overrides": ("oops",)}}}))
    exp = parse_config(ml_collections.ConfigDict({**base, "stages": {"stage1": {"config": "vae_digits", "workdir": "w"}}}))
    with pytest.raises(ConfigError, match=r"config\.stages: model 'classifier' composes no trained stage"):
        common.build_model(exp, get_info("digits"))
    ldm = parse_config(ml_collections.ConfigDict({**base, "model": {"name": "latent_diffusion"}}))
    with pytest.raises(ConfigError, match=r"config\.stages\.stage1: model 'latent_diffusion' needs a trained stage1"):
        common.build_model(ldm, get_info("digits"))
