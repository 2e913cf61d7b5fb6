"""Every experiment config parses, builds its model and initializes (shapes only, by
``jax.eval_shape``: nothing is compiled or trained), and opens with the command that runs it."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, registry
from gen_jax.config import ConfigError
from gen_jax.data.datasets import EMBEDDED
from gen_jax.model import MODEL_STATE, full_params
from gen_jax.train.loop import sample_conditions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "experiments", "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "base")))


def _example_batch(info, n):
    return {"image": jnp.zeros((n,) + tuple(info.image_shape), jnp.float32),
            "label": jnp.zeros((n,), jnp.int32),
            "caption_tokens": jnp.ones((n, max(info.caption_len, 1)), jnp.int32),
            "caption_chars": jnp.ones((n, max(getattr(info, "caption_char_len", 0), 1)), jnp.int32),
            **({"local_cond": jnp.zeros((n,) + tuple(info.local_cond_shape), jnp.int32)}
               if getattr(info, "local_cond_shape", ()) else {}),
            **({"factors": jnp.zeros((n, 5), jnp.int32)} if info.name == "shapes" else {})}  # shape, colour, size, x, y


def test_the_latent_family_configs_exist():
    assert {"gmm_digits", "autoencoder_digits", "vae_digits", "beta_vae_digits", "iwae_digits",
            "cvae_digits", "vae_shapes", "cvae_shapes_caption"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_and_documents_its_command(name):
    text = open(os.path.join(REPO, "experiments", "configs", name + ".py")).read()
    assert "python -m experiments.train --config experiments/configs/" + name + ".py" in text
    exp = common.load_experiment(name)
    if exp.dataset.name not in EMBEDDED:
        return  # paper-scale configs on standard datasets: shape-checked by their family's tests
    for name_ in registry.get_entry(exp.model_name).stages:  # the stages the model restores
        if not os.path.isdir(os.path.join(common.resolve_workdir(exp.stages[name_].workdir), "checkpoints")):
            # A two-stage config whose stage one is not trained here: building must say so.
            with pytest.raises(ConfigError, match=f"config.stages.{name_}.workdir"):
                common.setup(exp)
            return
    info, model, _ = common.setup(exp)
    batch = _example_batch(info, exp.train.batch_size)  # shapes only: the batch training starts from
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)) > 0
    sampler = getattr(model, "sampler", None)
    if sampler is not None:
        cond = sample_conditions(model, info, 3, {k: np.asarray(v) for k, v in batch.items()})
        params = full_params(model, params)
        if model.training.init_model_state is not None:  # as eval_params: the running statistics
            state = jax.eval_shape(model.training.init_model_state, jax.random.PRNGKey(0), batch)
            params = {**params, MODEL_STATE: state}
        out = jax.eval_shape(lambda p, k: sampler.sample(p, k, 3, cond), params, jax.random.PRNGKey(1))
        if sampler.kind == "tokens":  # sequence models (text LMs): int tokens [3, L]
            assert out.ndim == 2 and out.shape[0] == 3 and out.dtype == jnp.int32
        elif sampler.kind == "points":  # datasets of points: [3, D] in data coordinates
            assert out.shape == (3, info.image_shape[-1]) and out.dtype == jnp.float32
        else:
            assert out.shape == (3,) + tuple(info.image_shape) and out.dtype == jnp.float32


def test_caption_conditions_come_from_the_split():
    exp = common.load_experiment("cvae_shapes_caption")
    info, model, _ = common.setup(exp)
    assert model.conditional and model.conditioning.key == "caption_tokens"
    arrays = {"caption_tokens": np.arange(12, dtype=np.int32).reshape(2, 6) + 1,
              "label": np.array([3, 5], np.int32)}
    cond = sample_conditions(model, info, 5, arrays)
    np.testing.assert_array_equal(cond["caption_tokens"], arrays["caption_tokens"][[0, 1, 0, 1, 0]])
    np.testing.assert_array_equal(cond["label"], [3, 5, 3, 5, 3])
    with pytest.raises(ValueError, match="caption_tokens"):
        sample_conditions(model, info, 5, {"label": arrays["label"]})
