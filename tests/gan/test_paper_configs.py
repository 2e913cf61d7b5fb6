"""Paper-scale GAN configs (not trained here): both players built with jax.eval_shape on
CIFAR-10's shapes, parameter counts layer by layer against the papers' architectures."""
import types

import jax
import jax.numpy as jnp
import pytest

from gen_jax.config import ConfigError
from gen_jax.gan.model import make_gan
from gen_jax.gan.networks import count_params
from gen_jax.train.experiment import parse_config

CIFAR = types.SimpleNamespace(image_shape=(32, 32, 3), num_levels=256, num_classes=10)


def _conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def _bn(c):
    return 2 * c


def _shapes(name):
    cfg = __import__(f"experiments.configs.{name}", fromlist=["get_config"]).get_config()
    exp = parse_config(cfg)
    model = make_gan(exp.model, CIFAR)
    batch = {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32),
             "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    return cfg, model, params


def test_dcgan_cifar10_matches_radford_layer_by_layer():
    cfg, model, params = _shapes("dcgan_cifar10")
    assert cfg.dataset.name == "cifar10" and cfg.train.batch_size == 128
    z = cfg.model.z_dim
    g = (z * 4 * 4 * 512 + _bn(512)                       # project (no bias: BN follows), BN
         + _conv(4, 512, 256, False) + _bn(256) + _conv(4, 256, 128, False) + _bn(128)
         + _conv(4, 128, 3))                              # the output layer has a bias
    d = (_conv(4, 3, 64) + _conv(4, 64, 128) + _bn(128) + _conv(4, 128, 256) + _bn(256) + 256 + 1)
    assert count_params(params["gen"]) == g
    assert count_params(params["disc"]) == d
    state = jax.eval_shape(model.training.init_model_state, jax.random.PRNGKey(0),
                           {"image": jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)})
    x = jax.eval_shape(lambda p, k: model.sampler.sample(p, k, 4), {**params, "model_state": state},
                       jax.random.PRNGKey(0))
    assert x.shape == (4, 32, 32, 3)


def test_sngan_cifar10_matches_miyato_table_3_layer_by_layer():
    cfg, model, params = _shapes("sngan_cifar10")
    assert cfg.model.arch == "sngan" and cfg.model.spectral and cfg.model.d_steps == 5
    z = cfg.model.z_dim
    g = (z * 4 * 4 * 512 + 4 * 4 * 512 + _bn(512) + _conv(4, 512, 256) + _bn(256) + _conv(4, 256, 128) + _bn(128)
         + _conv(4, 128, 64) + _bn(64) + _conv(3, 64, 3))
    layers = [(3, 3, 64), (4, 64, 64), (3, 64, 128), (4, 128, 128), (3, 128, 256), (4, 256, 256), (3, 256, 512)]
    d = sum(_conv(k, i, o) for k, i, o in layers) + 4 * 4 * 512 + 1
    assert count_params(params["gen"]) == g
    assert count_params(params["disc"]) == d
    bad = __import__("experiments.configs.sngan_cifar10", fromlist=["get_config"]).get_config()
    bad.model.conditioning = "label"
    with pytest.raises(ConfigError, match=r"config\.model\.arch.*SN-GAN"):
        make_gan(parse_config(bad).model, CIFAR)
