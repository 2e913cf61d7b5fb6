"""The generic weight-decay mask of gen_jax.train.optim: only non-bias leaves with ndim >= 2 decay."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.train.optim import OptimConfig, decay_mask, make_optimizer


def _params():
    return {"dense": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)},
            "norm": {"scale": jnp.full((2,), 2.0)}, "log_scale": jnp.asarray(2.0),
            "conv": jnp.full((2, 2, 1, 3), 2.0),
            "attn": {"kernel": jnp.full((3, 2, 2), 2.0), "bias": jnp.full((2, 2), 2.0)}}


def test_mask_by_rank():
    m = decay_mask(_params())
    assert m == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
                 "log_scale": False, "conv": True, "attn": {"kernel": True, "bias": False}}


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_zero_gradient_step_decays_only_matrices(name):
    """With a zero gradient Adam's moment step is 0, so what moves is the decay alone:
    adamw moves w by -lr * wd * w exactly; 1-D and scalar leaves stay put for both."""
    lr, wd = 0.1, 0.5
    params = _params()
    opt = make_optimizer(OptimConfig(name=name, learning_rate=lr, weight_decay=wd, decay="weights"), 10)
    state = opt.init(params)
    upd, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), state, params)
    np.testing.assert_array_equal(upd["dense"]["bias"], 0.0)
    np.testing.assert_array_equal(upd["norm"]["scale"], 0.0)
    np.testing.assert_array_equal(upd["attn"]["bias"], 0.0)   # a 2-D bias is a bias
    assert float(upd["log_scale"]) == 0.0
    assert np.all(np.asarray(upd["dense"]["kernel"]) < 0) and np.all(np.asarray(upd["conv"]) < 0)
    if name == "adamw":
        np.testing.assert_allclose(upd["dense"]["kernel"], -lr * wd * 2.0, rtol=1e-6)


def test_no_decay_no_mask():
    """weight_decay = 0: adamw is plain Adam (zero gradient, zero update everywhere)."""
    params = _params()
    opt = make_optimizer(OptimConfig(name="adamw", learning_rate=0.1, weight_decay=0.0), 10)
    upd, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    for leaf in jax.tree.leaves(upd):
        np.testing.assert_array_equal(leaf, 0.0)


def test_default_decays_every_leaf():
    """decay='all' (the default): adamw decays every leaf, biases and scalars too, by -lr wd w."""
    lr, wd = 0.1, 0.5
    params = _params()
    opt = make_optimizer(OptimConfig(name="adamw", learning_rate=lr, weight_decay=wd), 10)
    upd, _ = jax.jit(opt.update)(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    for leaf in jax.tree.leaves(upd):
        np.testing.assert_allclose(leaf, -lr * wd * 2.0, rtol=1e-6)
