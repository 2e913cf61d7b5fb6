"""gen_jax.latent.quantizer against its mathematics: the straight-through Jacobian (autodiff), where
the two VQ terms of van den Oord et al. 2017 Eq. 3 send their gradients, the EMA codebook of
App. A.1 against a numpy re-implementation step by step, k-means init and dead-code reset on a
toy set, cosine codes, and the usage counters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.latent import quantizer as q

K, D = 6, 3


def _vq(**kw):
    return q.VectorQuantizer(q.QuantizerConfig(**{"num_codes": K, "code_dim": D, **kw}))


def _z(n=2, key=0, shape=(2, 2)):
    return jax.random.normal(jax.random.PRNGKey(key), (n,) + shape + (D,))


def test_straight_through_jacobian_is_the_identity_and_the_value_the_nearest_code():
    vq = _vq(codebook="loss", kmeans_iters=0, dead_threshold=0)
    params, state = jax.jit(vq.init)(jax.random.PRNGKey(1), _z())
    z = _z(1, key=2)
    f = lambda z: vq.quantize(params, state, z).z_q.reshape(-1)
    jac_f, jac_r = jax.jit(lambda z: (jax.jacfwd(f)(z), jax.jacrev(f)(z)))(z)
    np.testing.assert_allclose(np.asarray(jac_f).reshape(z.size, z.size), np.eye(z.size), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jac_r).reshape(z.size, z.size), np.eye(z.size), atol=1e-6)
    # the forward value is the nearest code (numpy argmin of the squared distances)
    cb, zf = np.asarray(params["codebook"]), np.asarray(z).reshape(-1, D)
    ids = np.argmin(((zf[:, None] - cb[None]) ** 2).sum(-1), -1)
    np.testing.assert_allclose(np.asarray(f(z)).reshape(-1, D), cb[ids], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(vq.quantize(params, state, z).ids).reshape(-1), ids)


def test_commitment_reaches_only_the_encoder_and_the_codebook_term_only_the_codebook():
    vq = _vq(codebook="loss", kmeans_iters=0, dead_threshold=0, beta=0.25)
    params, state = jax.jit(vq.init)(jax.random.PRNGKey(1), _z())
    z = _z(2, key=3)

    def term(name):
        return lambda z, cb: jnp.sum(getattr(vq.quantize({"codebook": cb}, state, z), name))

    cb = params["codebook"]
    gz_c, gcb_c = jax.jit(jax.grad(term("commitment"), argnums=(0, 1)))(z, cb)
    gz_b, gcb_b = jax.jit(jax.grad(term("codebook"), argnums=(0, 1)))(z, cb)
    assert float(jnp.max(jnp.abs(gcb_c))) == 0.0 and float(jnp.max(jnp.abs(gz_b))) == 0.0
    # closed forms: d/dz mean_i (z - e)^2 = 2 (z - e) / (h w D) per example, and the codebook's
    # gradient is the sum over the outputs assigned to each code of 2 (e - z) / (h w D)
    e = np.asarray(cb)[np.asarray(vq.quantize(params, state, z).ids)]
    n = z[0].size
    np.testing.assert_allclose(np.asarray(gz_c), 2 * (np.asarray(z) - e) / n, rtol=1e-5, atol=1e-6)
    ids = np.asarray(vq.quantize(params, state, z).ids).reshape(-1)
    want = np.zeros((K, D))
    np.add.at(want, ids, 2 * (e - np.asarray(z)).reshape(-1, D) / n)
    np.testing.assert_allclose(np.asarray(gcb_b), want, rtol=1e-5, atol=1e-6)
    # the loss of 'loss' mode is beta * commitment + codebook; the EMA mode has no codebook term
    out = vq.quantize(params, state, z)
    np.testing.assert_allclose(np.asarray(out.loss), np.asarray(0.25 * out.commitment + out.codebook), rtol=1e-6)
    ema = _vq(kmeans_iters=0, dead_threshold=0)
    _, s = ema.init(jax.random.PRNGKey(1), _z())
    o = ema.quantize({}, s, z)
    np.testing.assert_allclose(np.asarray(o.loss), np.asarray(0.25 * o.commitment), rtol=1e-6)


def _numpy_ema(cb, count, total, z, decay, eps):
    ids = np.argmin(((z[:, None] - cb[None]) ** 2).sum(-1), -1)
    onehot = np.eye(len(cb))[ids]
    count = decay * count + (1 - decay) * onehot.sum(0)
    total = decay * total + (1 - decay) * onehot.T @ z
    n = count.sum()
    smoothed = (count + eps) / (n + len(cb) * eps) * n
    return total / smoothed[:, None], count, total, ids


def test_ema_update_equals_a_numpy_reference_step_by_step():
    decay, eps = 0.9, 1e-3
    vq = _vq(kmeans_iters=0, dead_threshold=0, decay=decay, eps=eps, usage_window=3)
    _, state = vq.init(jax.random.PRNGKey(0), _z(4))
    cb, count, total = (np.asarray(state[k], np.float64) for k in ("codebook", "ema_count", "ema_sum"))
    step = jax.jit(lambda s, z, k: vq.update({}, s, z, vq.quantize({}, s, z).ids, k))
    usage = np.zeros(K, np.int64)
    for t in range(7):
        z = _z(4, key=10 + t) + 0.3 * t  # a drifting distribution, so the codes move
        state, m = step(state, z, jax.random.PRNGKey(t))
        cb, count, total, ids = _numpy_ema(cb, count, total, np.asarray(z, np.float64).reshape(-1, D), decay, eps)
        np.testing.assert_allclose(np.asarray(state["codebook"]), cb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(state["ema_count"]), count, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(state["ema_sum"]), total, rtol=1e-4, atol=1e-5)
        hist = np.bincount(ids, minlength=K)
        p = hist / hist.sum()
        np.testing.assert_allclose(float(m["perplexity"]), np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))), rtol=1e-5)
        usage += hist
        if (t + 1) % 3 == 0:  # the window of 3 steps closes: the fraction of codes it used
            assert float(m["codes_used_window"]) == pytest.approx(np.mean(usage > 0))
            usage[:] = 0
    assert int(state["window_step"]) == 1


def _toy(key=0, clusters=8, per=32):
    """``clusters`` tight, well separated clusters in R^D (norm 10 centres)."""
    kc, kn = jax.random.split(jax.random.PRNGKey(key))
    centres = 10 * q.l2_normalize(jax.random.normal(kc, (clusters, D)))
    z = centres[:, None] + 0.05 * jax.random.normal(kn, (clusters, per, D))
    return z.reshape(clusters * per, 1, 1, D), centres


def test_kmeans_init_and_dead_code_reset_leave_no_code_unused_on_a_toy_set():
    z, _ = _toy()
    zf = np.asarray(z).reshape(-1, D)

    def used(vq, p, s):  # distinct nearest codes of the toy set (numpy)
        cb = np.asarray(vq.codebook(p, s))
        return np.unique(np.argmin(((zf[:, None] - cb[None]) ** 2).sum(-1), -1)).size
    # k-means on the first batch: every code sits on a cluster
    vq = _vq(num_codes=8, kmeans_iters=5, dead_threshold=0)
    p, s = jax.jit(vq.init)(jax.random.PRNGKey(0), z)
    assert used(vq, p, s) == 8
    # a random codebook far from the data leaves codes unused, and the EMA alone does not fix it ...
    for threshold, want in ((0.0, None), (1.0, 8)):
        vq = _vq(num_codes=8, kmeans_iters=0, init_scale=0.1, decay=0.5, dead_threshold=threshold)
        p, s = vq.init(jax.random.PRNGKey(0), z)
        assert used(vq, p, s) < 8

        def steps(s):
            def one(s, k):
                s, m = vq.update(p, s, z, vq.quantize(p, s, z).ids, k)
                return s, m["codes_reset"]
            return jax.lax.scan(one, s, jax.random.split(jax.random.PRNGKey(1), 40))

        s, resets = jax.jit(steps)(s)
        resets = float(jnp.sum(resets))
        if want is None:
            assert used(vq, p, s) < 8 and resets == 0
        else:  # ... the dead-code reset does
            assert used(vq, p, s) == want and resets > 0


def test_uniform_reset_draws_batch_outputs():
    z, _ = _toy(clusters=4, per=8)
    flat = z.reshape(-1, D)
    cb = jnp.zeros((K, D))
    count = jnp.array([5.0, 0.1, 5.0, 0.0, 2.0, 0.5])
    reset = jax.jit(q.reset_dead_codes, static_argnums=(5, 6))
    cb2, n2, m2, dead = reset(jax.random.PRNGKey(0), cb, count, cb, flat, 1.0, "uniform")
    np.testing.assert_array_equal(np.asarray(dead), [False, True, False, True, False, True])
    for i in np.flatnonzero(np.asarray(dead)):  # a dead code is now one of the batch's outputs
        assert np.min(np.abs(np.asarray(flat) - np.asarray(cb2[i])).sum(-1)) == 0
        assert float(n2[i]) == 1.0
        np.testing.assert_allclose(np.asarray(m2[i]), np.asarray(cb2[i]))
    np.testing.assert_array_equal(np.asarray(cb2[~np.asarray(dead)]), 0.0)


def test_cosine_codes_are_unit_norm_and_nearest_by_cosine():
    z, _ = _toy(clusters=8)
    vq = _vq(num_codes=8, cosine=True, kmeans_iters=3, dead_threshold=1.0)
    p, s = jax.jit(vq.init)(jax.random.PRNGKey(0), z)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(s["codebook"]), axis=-1), 1.0, rtol=1e-5)
    zz = 3.0 * _z(2, key=5)
    out = jax.jit(vq.quantize)(p, s, zz)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(out.z_q), axis=-1), 1.0, rtol=1e-5)
    cos = np.asarray(zz).reshape(-1, D) @ np.asarray(s["codebook"]).T
    np.testing.assert_array_equal(np.asarray(out.ids).reshape(-1), np.argmax(cos, -1))
    s2, _ = jax.jit(vq.update)(p, s, zz, out.ids, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(s2["codebook"]), axis=-1), 1.0, rtol=1e-5)


def test_bad_settings_are_refused_naming_the_field():
    for kw, field in ((dict(num_codes=1), "num_codes"), (dict(code_dim=0), "code_dim"),
                      (dict(cosine=True, code_dim=1), "code_dim"), (dict(decay=1.0), "decay"),
                      (dict(codebook="loss", dead_threshold=1.0), "dead_threshold"),
                      (dict(codebook="sgd"), "codebook"), (dict(eps=0.0), "eps")):
        with pytest.raises(ConfigError, match=f"config.model.{field}"):
            q.QuantizerConfig(**{"num_codes": K, "code_dim": D, **kw})
    vq = _vq(num_codes=64)
    with pytest.raises(ConfigError, match="num_codes"):  # k-means needs >= K outputs in the batch
        vq.init(jax.random.PRNGKey(0), _z(2))
    with pytest.raises(ValueError, match="code_dim"):
        _vq().quantize({}, {"codebook": jnp.zeros((K, D))}, jnp.zeros((1, 2, 2, D + 1)))
