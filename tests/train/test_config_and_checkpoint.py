"""Bad input at the config and checkpoint boundaries: each case fails early with an error
that names the field, the leaf or the path."""
import dataclasses
import os
from typing import Literal, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gen_jax.config import ConfigError, from_config
from gen_jax.train import sharding as shd
from gen_jax.train.checkpoint import CheckpointError, Checkpointer
from gen_jax.train.experiment import apply_overrides, parse_cli_overrides, parse_config
from experiments.configs.base import get_base_config


@dataclasses.dataclass(frozen=True)
class Toy:
    width: int = 4
    rate: float = 0.5
    kind: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    maybe: Optional[int] = None


def _cfg():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="vae", latent_dim=8))
    return c


def test_from_config_accepts_and_coerces():
    t = from_config(Toy, {"width": 3, "rate": 1, "sizes": [3, 4], "maybe": 2})
    assert t == Toy(width=3, rate=1.0, sizes=(3, 4), maybe=2)


@pytest.mark.parametrize("values, needle", [
    ({"widht": 3}, "config.model.widht: unknown field"),
    ({"width": "3"}, "config.model.width: expected int"),
    ({"width": 2.5}, "config.model.width: expected int"),
    ({"rate": "fast"}, "config.model.rate: expected float"),
    ({"kind": "c"}, "config.model.kind: must be one of"),
    ({"sizes": [1, "x"]}, "config.model.sizes[1]: expected int"),
])
def test_from_config_names_the_field(values, needle):
    with pytest.raises(ConfigError) as e:
        from_config(Toy, values, "config.model")
    assert needle in str(e.value)


def test_unknown_override_field():
    with pytest.raises(ConfigError, match=r"config\.train\.stpes: unknown field"):
        apply_overrides(_cfg(), {"train.stpes": "5"})


def test_override_wrong_type():
    with pytest.raises(ConfigError, match=r"config\.train\.steps: expected int"):
        apply_overrides(_cfg(), {"train.steps": "many"})


def test_override_parses_values():
    c = apply_overrides(_cfg(), {"train.steps": "7", "optim.learning_rate": "2", "dataset.name": "mnist"})
    assert c.train.steps == 7 and c.optim.learning_rate == 2.0 and c.dataset.name == "mnist"
    ov, rest = parse_cli_overrides(["--config", "x.py", "--config.train.steps=3", "--config.seed", "4"])
    assert ov == {"train.steps": "3", "seed": "4"} and rest == ["--config", "x.py"]


def test_unknown_section_and_bad_values():
    c = _cfg()
    with c.unlocked():
        c.trian = ml_collections.ConfigDict({"steps": 1})
    with pytest.raises(ConfigError, match=r"config\.trian: unknown section"):
        parse_config(c)
    c = _cfg()
    c.train.batch_size = 0
    with pytest.raises(ConfigError, match=r"config\.train\.batch_size: must be > 0"):
        parse_config(c)
    c = _cfg()
    c.optim.name = "adagradx"
    with pytest.raises(ConfigError, match=r"config\.optim\.name"):
        parse_config(c)


def test_batch_not_divisible_by_devices():
    mesh = shd.make_mesh(8)
    with pytest.raises(ConfigError, match=r"config\.train\.batch_size: 60 is not divisible by the 8 devices"):
        shd.check_batch_size(60, mesh)
    with pytest.raises(ConfigError, match=r"config\.train\.batch_size: must be > 0"):
        shd.check_batch_size(0, mesh)
    with pytest.raises(ConfigError, match="num_devices"):
        shd.make_mesh(len(jax.devices()) + 1)


def test_bad_mesh_rule():
    c = _cfg()
    c.mesh.rules = (("kernel", "shard_everything"),)
    with pytest.raises(ConfigError, match=r"config\.mesh\.rules\[0\]"):
        parse_config(c)


@pytest.fixture()
def saved(tmp_path):
    tree = {"params": {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}, "step": jnp.int32(5)}
    ck = Checkpointer(str(tmp_path / "ckpt"))
    ck.save(5, tree, {"model": "toy"})
    ck.close()
    return tmp_path / "ckpt", tree


def test_checkpoint_round_trip(saved):
    path, tree = saved
    ck = Checkpointer(str(path), create=False)
    state, meta = ck.restore(jax.eval_shape(lambda: tree))
    assert meta["model"] == "toy" and meta["step"] == 5
    np.testing.assert_array_equal(state["params"]["w"], tree["params"]["w"])


def test_checkpoint_from_another_architecture(saved):
    path, tree = saved
    other = {"params": {"w": jnp.ones((3, 5)), "b": jnp.zeros(4)}, "step": jnp.int32(0)}
    with pytest.raises(CheckpointError, match=r"another architecture.*params/w.*\[3, 5.*\[3, 4"):
        Checkpointer(str(path), create=False).restore(jax.eval_shape(lambda: other))
    extra = dict(tree, extra=jnp.zeros(2))
    with pytest.raises(CheckpointError, match=r"leaf 'extra'.*missing"):
        Checkpointer(str(path), create=False).restore(jax.eval_shape(lambda: extra))


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint directory at {tmp_path}/nothing"):
        Checkpointer(str(tmp_path / "nothing"), create=False)


def test_corrupted_checkpoint_file(saved):
    path, tree = saved
    n = 0
    for root, _, files in os.walk(path / "5" / "state"):
        for f in files:
            if f.endswith("manifest.ocdbt") or root.endswith("d"):
                with open(os.path.join(root, f), "wb") as fh:
                    fh.write(b"garbage")
                n += 1
    assert n > 0
    with pytest.raises(CheckpointError, match=rf"{path}/5 is unreadable"):
        Checkpointer(str(path), create=False).restore(jax.eval_shape(lambda: tree))


def test_model_overrides_may_set_fields_the_file_leaves_at_their_default():
    c = apply_overrides(_cfg(), {"model.extra_field": "3", "model.sub.depth": "[1, 2]"})
    assert c.model.extra_field == 3 and c.model.sub.depth == (1, 2)
    with pytest.raises(ConfigError, match=r"config\.optim\.lr: unknown field"):
        apply_overrides(_cfg(), {"optim.lr": "0.1"})
