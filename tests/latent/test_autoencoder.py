"""The deterministic autoencoder (gen_jax.latent.autoencoder) through the real train step:
two phases (gradient + code statistics), codec, and sampling from the fitted codes."""
import jax
import optax
import pytest

from gen_jax.config import ConfigError
from gen_jax.latent.autoencoder import make_autoencoder
from tests.latent.stand_in import INFO, stand_in_batch as _batch


def test_autoencoder_trains_and_samples_from_fitted_codes():
    from gen_jax.train.step import create_train_state, make_step_fn

    model = make_autoencoder(dict(hidden=(32,), latent_dim=3), INFO)
    batch = _batch(16)
    params = jax.jit(model.training.init)(jax.random.PRNGKey(0), batch)
    phases = model.training.phases
    assert [(p.group, p.loss is not None) for p in phases] == [("net", True), (None, False)]
    opts = {"net": optax.adam(1e-2)}
    state = create_train_state(params, opts, jax.random.PRNGKey(1), phases=phases, use_ema=False)
    step = jax.jit(make_step_fn(phases, opts))
    losses = []
    for _ in range(3):
        state, m = step(state, batch)
        losses.append(float(m["net/loss"]))
    assert float(m["finite"]) == 1.0 and losses[-1] < losses[0]
    codes = state.params["codes"]
    assert float(codes["count"]) == 3.0
    z, s = jax.jit(lambda p: (model.codec.encode(p, batch["image"]),
                              model.sampler.sample(p, jax.random.PRNGKey(2), 6)))(state.params)
    assert z.shape == (16, 3)
    assert s.shape == (6, 8, 8, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert model.likelihood is None
    with pytest.raises(ConfigError, match="config.model.loss"):
        make_autoencoder({"loss": "l1"}, INFO)
