"""Gradient accumulation inside the compiled step (gen_jax.train.step.Accumulation): 4
micro-batches equal one step on the 4x batch (loss, metrics and params after the update) for
a batch-mean loss (a tiny image transformer LM) and for a two-player GAN phase list with k
discriminator repeats; the per-shard split on 8 devices equals 1 device; bad batch sizes and
bad values raise ConfigErrors naming config.train.grad_accum."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gen_jax.autoregressive.transformer_lm import make_transformer_lm
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info
from gen_jax.model import Phase
from gen_jax.train import sharding as shd
from gen_jax.train.experiment import TrainConfig
from gen_jax.train.step import Accumulation, create_train_state, make_train_step

K, B = 4, 8  # micro-batches, micro-batch size: every step sees 4 x 8 = 32 examples
STEPS = 2


def _images(key, n, levels=17):
    lev = jax.random.randint(key, (n, 8, 8, 1), 0, levels)
    return np.asarray(lev, np.float32) / (levels - 1)


def _run(phases, init_params, batches_per_step, grad_accum, make_batch, mesh=None):
    """``STEPS`` compiled steps (SGD with momentum); ``(state, [metrics per step])``."""
    opt = {g: optax.sgd(0.1, momentum=0.9) for g in {p.group or "__all__" for p in phases}}
    opt = {("__all__" if g is None else g): t for g, t in opt.items()}
    state = create_train_state(init_params, opt, jax.random.PRNGKey(1), phases=phases, use_ema=False)
    kw = {}
    if mesh is not None:
        state = jax.device_put(state, shd.replicated(mesh))
        kw = dict(batch_sharding=shd.batch_sharding(mesh))
    step = make_train_step(phases, opt, grad_accum=grad_accum, donate=False, **kw)
    out = []
    for s in range(STEPS):
        batches = tuple(make_batch(s * batches_per_step + r) for r in range(batches_per_step))
        if mesh is not None:
            batches = jax.device_put(batches, kw["batch_sharding"])
        state, m = step(state, batches)
        out.append(jax.device_get(m))
    return jax.device_get(state), out


def _assert_same(a, b, tol=1e-5):
    (sa, ma), (sb, mb) = a, b
    for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)
    for x, y in zip(ma, mb):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_allclose(x[k], y[k], rtol=tol, atol=tol, err_msg=k)


# ----------------------------------------------------------------------------- the LM


@pytest.fixture(scope="module")
def lm():
    info = get_info("digits")
    model = make_transformer_lm(dict(tokens="image", num_layers=1, d_model=16, num_heads=2, mlp_ratio=2), info)
    data = lambda i: {"image": _images(jax.random.PRNGKey(100 + i), K * B)}
    params = model.training.init(jax.random.PRNGKey(0), data(0))
    return model, params, data


@pytest.fixture(scope="module")
def lm_big_batch(lm):
    model, params, data = lm
    return _run(model.training.phases, params, 1, 1, data)


def test_lm_accumulation_equals_the_big_batch_step(lm, lm_big_batch):
    """The mean token NLL is a batch mean: the mean of 4 micro-batch gradients is the gradient
    of the 32 examples, so loss, metrics and params after each update agree within 1e-5."""
    model, params, data = lm
    acc = _run(model.training.phases, params, 1, K, data)
    _assert_same(acc, lm_big_batch)
    moved = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(acc[0].params), jax.tree.leaves(params))]
    assert max(moved) > 1e-3  # the updates are not no-ops


def _regression():
    """A batch-mean squared error of a small MLP (cheap to compile)."""
    net = _MLP(1)

    def loss(p, batch, key):
        err = (net.apply(p, batch["x"])[:, 0] - batch["y"]) ** 2
        return jnp.mean(err), {"mse": err}

    def data(i):
        x = np.asarray(jax.random.normal(jax.random.PRNGKey(300 + i), (K * B, 3)))
        return {"x": x, "y": np.sin(x @ np.array([1.0, -2.0, 0.5], np.float32))}

    return (Phase(None, loss=loss),), net.init(jax.random.PRNGKey(5), jnp.zeros((1, 3))), data


def test_accumulation_on_8_devices_equals_the_big_batch_on_1_device():
    """The split is made within each device's rows (4 per device here, 1 per micro-batch)."""
    phases, params, data = _regression()
    _assert_same(_run(phases, params, 1, K, data, mesh=shd.make_mesh(8)), _run(phases, params, 1, 1, data))


def test_micro_batches_are_split_within_each_shard():
    """With 2 shards of 4 rows and 2 micro-batches, micro-batch i holds rows [2i, 2i+1] of
    each shard: rows (0, 1, 4, 5) then (2, 3, 6, 7)."""
    mesh = shd.make_mesh(2)
    acc = Accumulation(2, shd.batch_sharding(mesh))
    x = jax.device_put(jnp.arange(8.0), shd.batch_sharding(mesh))
    np.testing.assert_array_equal(jax.jit(acc.split)(x), [[0, 1, 4, 5], [2, 3, 6, 7]])
    np.testing.assert_array_equal(Accumulation(2).split(jnp.arange(8.0)), [[0, 1, 2, 3], [4, 5, 6, 7]])


# ----------------------------------------------------------------------------- a GAN


class _MLP(nn.Module):
    out: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.out)(jnp.tanh(nn.Dense(16)(x)))


def _gan():
    """A two-player non-saturating GAN on 4-D points (Goodfellow et al. 2014, Sec. 3): the
    generator's noise comes from the batch (``batch['z']``), so both losses are batch means
    of per-example terms with no key."""
    gen, disc = _MLP(4), _MLP(1)

    def d_loss(p, batch, key):
        real = disc.apply(p["disc"], batch["x"])[:, 0]
        fake = disc.apply(p["disc"], gen.apply(p["gen"], batch["z"]))[:, 0]
        terms = jax.nn.softplus(-real) + jax.nn.softplus(fake)
        return jnp.mean(terms), {"d_real": jax.nn.sigmoid(real)}

    def g_loss(p, batch, key):
        fake = disc.apply(p["disc"], gen.apply(p["gen"], batch["z"]))[:, 0]
        return jnp.mean(jax.nn.softplus(-fake)), {"d_fake": jax.nn.sigmoid(fake)}

    phases = (Phase("disc", d_loss, repeats=2, name="d"), Phase("gen", g_loss, name="g"))
    k = jax.random.split(jax.random.PRNGKey(3), 2)
    params = {"gen": gen.init(k[0], jnp.zeros((1, 2))), "disc": disc.init(k[1], jnp.zeros((1, 4)))}

    def data(i):
        kx, kz = jax.random.split(jax.random.PRNGKey(200 + i))
        return {"x": np.asarray(jax.random.normal(kx, (K * B, 4)) + 2.0),
                "z": np.asarray(jax.random.normal(kz, (K * B, 2)))}

    return phases, params, data


def test_gan_accumulation_with_k_disc_repeats_equals_the_big_batch_step():
    """Two disc updates (two fresh batches) then one gen update per step, each accumulated
    over 4 micro-batches: the same as each update on its whole batch."""
    phases, params, data = _gan()
    big = _run(phases, params, 2, 1, data)
    acc = _run(phases, params, 2, K, data)
    _assert_same(acc, big)
    assert {"d/loss", "g/loss", "d/grad_norm", "g/d_fake", "finite"} <= set(big[1][0])
    assert all(m["finite"] == 1.0 for m in acc[1])


# ----------------------------------------------------------------------------- errors


def test_indivisible_batch_names_the_field():
    mesh = shd.make_mesh(8)
    acc = Accumulation(4, shd.batch_sharding(mesh))
    x = jax.device_put(jnp.zeros((24, 3)), shd.batch_sharding(mesh))  # 3 rows per device
    with pytest.raises(ConfigError, match=r"config\.train\.grad_accum: the batch of 24 examples \(3 per data shard"):
        acc.split({"x": x})
    with pytest.raises(ConfigError, match=r"config\.train\.grad_accum"):
        Accumulation(0)
    with pytest.raises(ConfigError, match=r"config\.train\.grad_accum"):
        TrainConfig(grad_accum=0)
