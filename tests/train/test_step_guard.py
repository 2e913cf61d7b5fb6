"""The train step's non-finite guard, decided before the update: nothing of the state moves
(params, optimizer moments, EMA) when a gradient is non-finite though the loss is finite, a
failed later update undoes the earlier ones of the step, an overflowing update is flagged,
and a good step equals the unguarded computation exactly."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.model import Phase
from gen_jax.train.step import create_train_state, make_step_fn

BATCH = {"x": np.linspace(-1, 1, 8, dtype=np.float32)}


def _state(params, tx, phases, ema=True):
    return create_train_state(params, tx, jax.random.PRNGKey(0), phases=phases, use_ema=ema)


def _assert_same_tree(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_non_finite_gradient_with_a_finite_loss_changes_nothing():
    def loss(p, batch, key):  # sqrt at 0: the loss is 0, its gradient inf
        return jnp.sqrt(jnp.abs(p["w"][0])) + jnp.sum(p["w"] ** 2), {}

    params = {"w": jnp.array([0.0, 1.0, 2.0])}
    tx = {"__all__": optax.adam(1e-2)}
    phases = (Phase(None, loss),)
    state = _state(params, tx, phases)
    new, m = jax.jit(make_step_fn(phases, tx, ema_decay=0.5))(state, BATCH)
    assert np.isfinite(m["loss"]) and not np.isfinite(m["grad_norm"]) and float(m["finite"]) == 0.0
    _assert_same_tree((new.params, new.opt_state, new.ema_params), (state.params, state.opt_state, state.ema_params))
    assert int(new.step) == 1


def test_a_good_step_equals_the_unguarded_update():
    def loss(p, batch, key):
        return jnp.mean((batch["x"] * p["w"][0] - p["w"][1]) ** 2), {}

    params = {"w": jnp.array([0.3, -0.2])}
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-1))
    phases = (Phase(None, loss),)
    state = _state(params, {"__all__": tx}, phases)
    new, m = jax.jit(make_step_fn(phases, {"__all__": tx}, ema_decay=0.9))(state, BATCH)
    g = jax.grad(lambda p: loss(p, BATCH, None)[0])(params)
    upd, os_ = tx.update(g, tx.init(params), params)
    want = optax.apply_updates(params, upd)
    np.testing.assert_allclose(new.params["w"], want["w"], rtol=1e-6)
    np.testing.assert_allclose(new.ema_params["w"], 0.9 * params["w"] + 0.1 * want["w"], rtol=1e-6)
    _assert_same_tree(new.opt_state["__all__"], os_)
    assert float(m["finite"]) == 1.0


def test_a_failed_second_phase_undoes_the_first():
    def good(p, batch, key):
        return jnp.sum((p["a"]["v"] - 1.0) ** 2), {}

    def bad(p, batch, key):  # finite loss, inf gradient
        return jnp.sqrt(jnp.abs(p["b"]["v"][0])), {}

    params = {"a": {"v": jnp.zeros(2)}, "b": {"v": jnp.zeros(2)}}
    tx = {"a": optax.sgd(0.1), "b": optax.sgd(0.1)}
    phases = (Phase("a", good, name="first"), Phase("b", bad, name="second"))
    state = _state(params, tx, phases, ema=False)
    new, m = jax.jit(make_step_fn(phases, tx))(state, BATCH)
    assert float(m["finite"]) == 0.0 and np.isfinite(m["first/grad_norm"])
    _assert_same_tree(new.params, state.params)
    ok_state, m = jax.jit(make_step_fn(phases[:1], tx))(_state(params, tx, phases[:1], ema=False), BATCH)
    np.testing.assert_allclose(ok_state.params["a"]["v"], 0.2 * np.ones(2), rtol=1e-6)  # sgd: 0 - 0.1 * 2(0 - 1)


def test_an_overflowing_update_is_flagged():
    def loss(p, batch, key):
        return jnp.sum(p["w"]), {}

    params = {"w": jnp.array([3e38, 1.0], jnp.float32)}
    tx = {"__all__": optax.sgd(-1e38)}  # ascends: 3e38 + 1e38 overflows float32
    phases = (Phase(None, loss),)
    new, m = jax.jit(make_step_fn(phases, tx))(_state(params, tx, phases, ema=False), BATCH)
    assert np.isfinite(m["grad_norm"]) and not np.isfinite(m["param_norm"]) and float(m["finite"]) == 0.0


def test_progress_bar_metric_is_the_loss_or_the_models_own():
    from gen_jax.train.loop import progress_metric

    assert progress_metric({"loss": 1.23456, "grad_norm": 3.0, "finite": 1.0}) == {"loss": "1.235"}
    assert progress_metric({"loglik": -12.5, "finite": 1.0}) == {"loglik": "-12.5"}  # GMM EM: no loss
    assert progress_metric({"d/loss": 0.7, "g/loss": 1.5, "d/d_adv": 0.7, "finite": 1.0}) == {"d/loss": "0.7"}
    assert progress_metric({"loss/d": 0.7, "loss/g": 1.5, "grad_norm/d": 2.0, "finite": 1.0}) == {"loss/d": "0.7"}
    assert progress_metric({"finite": 1.0}) == {}
