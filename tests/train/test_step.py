"""The generic train step: gradient phases, two players with k repeats, EM-style updates,
frozen groups, the non-finite guard, and 8-device data parallelism equal to 1 device."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gen_jax.model import Phase
from gen_jax.train import sharding as shd
from gen_jax.train.step import create_train_state
from gen_jax.train.step import make_step_fn, make_train_step


def _data(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)[:d] + 0.1 * rng.normal(size=n).astype(np.float32)
    return {"x": x, "y": y}


def mse_loss(params, batch, key):
    pred = batch["x"] @ params["w"] + params["b"]
    err = (pred - batch["y"]) ** 2
    return jnp.mean(err), {"mse": err}


def test_gradient_phase_matches_manual_adam():
    batch = _data()
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    tx = optax.adam(1e-2)
    phases = (Phase(group=None, loss=mse_loss),)
    state = create_train_state(params, {"__all__": tx}, jax.random.PRNGKey(0), phases=phases, use_ema=True)
    step = jax.jit(make_step_fn(phases, {"__all__": tx}, ema_decay=0.5))
    s2, m = step(state, batch)
    g = jax.grad(lambda p: mse_loss(p, batch, None)[0])(params)
    upd, _ = tx.update(g, tx.init(params), params)
    want = optax.apply_updates(params, upd)
    np.testing.assert_allclose(s2.params["w"], want["w"], rtol=1e-6)
    np.testing.assert_allclose(s2.ema_params["w"], 0.5 * want["w"], rtol=1e-6)
    np.testing.assert_allclose(m["grad_norm"], optax.tree.norm(g), rtol=1e-6)
    assert int(s2.step) == 1 and float(m["finite"]) == 1.0


def test_two_players_k_repeats_and_frozen_group():
    """Disc phase k=3 times then gen phase once; the 'frozen' group never changes."""
    batch = _data()

    def d_loss(p, batch, key):
        return jnp.sum((p["disc"] - p["gen"]) ** 2) + 0 * p["frozen"].sum(), {}

    def g_loss(p, batch, key):
        return jnp.sum((p["gen"] - 3.0 * p["disc"] - p["frozen"]) ** 2), {}

    params = {"disc": jnp.ones(2), "gen": jnp.zeros(2), "frozen": jnp.full(2, 7.0)}
    sgd = optax.sgd(0.1)
    phases = (Phase("disc", d_loss, repeats=3, name="d"), Phase("gen", g_loss, name="g"))
    opt = {"disc": sgd, "gen": sgd}
    state = create_train_state(params, opt, jax.random.PRNGKey(0), phases=phases, use_ema=False)
    s2, m = jax.jit(make_step_fn(phases, opt))(state, (batch,) * 3)
    d, g, f = np.ones(2), np.zeros(2), np.full(2, 7.0)
    for _ in range(3):
        d = d - 0.1 * 2 * (d - g)
    g = g - 0.1 * 2 * (g - 3 * d - f)
    np.testing.assert_allclose(s2.params["disc"], d, rtol=1e-6)
    np.testing.assert_allclose(s2.params["gen"], g, rtol=1e-6)
    np.testing.assert_array_equal(s2.params["frozen"], f)
    assert set(m) >= {"d/loss", "g/loss", "d/grad_norm", "g/grad_norm", "finite"}


def test_gradient_free_update_phase():
    """An EM-like update: params <- batch mean, no optimizer state needed."""
    batch = _data()

    def update(p, batch, key):
        return {"mu": jnp.mean(batch["x"], 0)}, {"shift": jnp.sum((p["mu"] - jnp.mean(batch["x"], 0)) ** 2)}

    phases = (Phase(None, update=update),)
    state = create_train_state({"mu": jnp.zeros(3)}, {}, jax.random.PRNGKey(0), phases=phases, use_ema=False)
    s2, m = jax.jit(make_step_fn(phases, {}))(state, batch)
    np.testing.assert_allclose(s2.params["mu"], batch["x"].mean(0), rtol=1e-6)
    assert s2.opt_state == {}


def test_non_finite_step_keeps_state_and_flags():
    batch = _data()

    def bad_loss(p, batch, key):
        return jnp.log(p["w"][0] - 10.0), {"term": jnp.log(p["w"][0] - 10.0)}

    params = {"w": jnp.ones(3)}
    tx = {"__all__": optax.adam(1e-2)}
    phases = (Phase(None, bad_loss),)
    state = create_train_state(params, tx, jax.random.PRNGKey(0), phases=phases, use_ema=False)
    s2, m = jax.jit(make_step_fn(phases, tx))(state, batch)
    assert float(m["finite"]) == 0.0 and not np.isfinite(m["term"])
    np.testing.assert_array_equal(s2.params["w"], params["w"])
    assert int(s2.step) == 1


@pytest.fixture(scope="module")
def sharded_vs_single():
    batch = _data(n=64)
    tx = {"__all__": optax.adam(1e-2)}
    phases = (Phase(None, mse_loss),)
    results = {}
    for n in (1, 8):
        mesh = shd.make_mesh(n)
        params = {"w": jnp.zeros(3), "b": jnp.zeros(())}  # fresh buffers: the step donates
        state = create_train_state(params, tx, jax.random.PRNGKey(0), phases=phases, use_ema=True)
        state_sh = shd.state_shardings(jax.eval_shape(lambda: state), mesh)
        state = jax.device_put(state, state_sh)
        b = jax.device_put(batch, shd.batch_sharding(mesh))
        step = make_train_step(phases, tx, ema_decay=0.9, state_sharding=state_sh,
                               batch_sharding=shd.batch_sharding(mesh))
        losses = []
        for _ in range(5):
            state, m = step(state, b)
            losses.append(float(m["loss"]))
        results[n] = (jax.device_get(state), losses, state)
    return results


def test_eight_devices_match_one(sharded_vs_single):
    assert len(jax.devices()) >= 8, "conftest sets 8 fake CPU devices"
    s1, l1, _ = sharded_vs_single[1]
    s8, l8, live8 = sharded_vs_single[8]
    np.testing.assert_allclose(l1, l8, atol=1e-5)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert len(live8.params["w"].sharding.device_set) == 8


def test_fsdp_rules_shard_large_leaves():
    mesh = shd.make_mesh(8)
    tree = {"dense": {"kernel": jax.ShapeDtypeStruct((64, 128), jnp.float32),
                      "bias": jax.ShapeDtypeStruct((128,), jnp.float32)},
            "odd": jax.ShapeDtypeStruct((63, 65), jnp.float32)}
    sh = shd.tree_shardings(tree, mesh, rules=((".*", "fsdp"),), fsdp_min_size=1000)
    assert sh["dense"]["kernel"].spec == jax.sharding.PartitionSpec(None, "data")
    assert sh["dense"]["bias"].spec == jax.sharding.PartitionSpec()  # below min size
    assert sh["odd"].spec == jax.sharding.PartitionSpec()  # no divisible axis
