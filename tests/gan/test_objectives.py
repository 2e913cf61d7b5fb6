"""gen_jax.gan.objectives: the GAN losses against their closed forms (numpy float64), the
penalties against closed forms and a per-example autodiff loop, BEGAN's control of k step by
step, and a trained discriminator against the optimal one of Goodfellow et al. 2014, Prop. 1."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import norm

from gen_jax.gan import objectives as obj


def _sig(x):
    x = np.asarray(x, np.float64)
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow warnings


R = np.array([0.0, 2.0, -2.0, 0.7, -1.3])
F = np.array([0.0, -2.0, 2.0, 1.1, -0.4, 3.0])

# Each loss's closed form in float64, written from its paper's definition (D = sigmoid).
D_CASES = {
    "minimax": (obj.d_minimax, lambda r, f: -np.mean(np.log(_sig(r))) - np.mean(np.log(1 - _sig(f)))),
    "hinge": (obj.d_hinge, lambda r, f: np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f))),
    "least_squares": (obj.d_least_squares, lambda r, f: 0.5 * np.mean((r - 1) ** 2) + 0.5 * np.mean(f ** 2)),
    "wasserstein": (obj.d_wasserstein, lambda r, f: np.mean(f) - np.mean(r)),
}
G_CASES = {
    "minimax": (obj.g_minimax, lambda f: np.mean(np.log(1 - _sig(f)))),
    "nonsaturating": (obj.g_nonsaturating, lambda f: -np.mean(np.log(_sig(f)))),
    "hinge": (obj.g_hinge, lambda f: -np.mean(f)),
    "least_squares": (obj.g_least_squares, lambda f: 0.5 * np.mean((f - 1) ** 2)),
    "wasserstein": (obj.g_wasserstein, lambda f: -np.mean(f)),
}


@pytest.mark.parametrize("name", sorted(D_CASES))
def test_discriminator_losses_closed_form(name):
    fn, ref = D_CASES[name]
    for r, f in [(R[:1], F[:1]), (R[1:2], F[1:2]), (R[2:3], F[2:3]), (R, F)]:
        got = fn(jnp.asarray(r, jnp.float32), jnp.asarray(f, jnp.float32))
        assert got.shape == () and got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), ref(r, f), rtol=1e-6, atol=1e-6)
    # [B, 1] is the same as [B]
    np.testing.assert_allclose(float(fn(jnp.asarray(R[:, None]), jnp.asarray(F[:, None]))), ref(R, F), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(G_CASES))
def test_generator_losses_closed_form(name):
    fn, ref = G_CASES[name]
    for f in [F[:1], F[1:2], F[2:3], F]:
        got = fn(jnp.asarray(f, jnp.float32))
        assert got.shape == () and got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), ref(f), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(fn(jnp.asarray(F[:, None], jnp.float32))), ref(F), rtol=1e-6)


def test_least_squares_targets():
    a, b, c = -1.0, 1.0, 0.0  # the paper's -1/1/0 coding (Mao et al. 2017, Sec. 3.2.3)
    got = obj.d_least_squares(jnp.asarray(R), jnp.asarray(F), a=a, b=b)
    np.testing.assert_allclose(float(got), 0.5 * np.mean((R - b) ** 2) + 0.5 * np.mean((F - a) ** 2), rtol=1e-6)
    np.testing.assert_allclose(float(obj.g_least_squares(jnp.asarray(F), c=c)), 0.5 * np.mean(F ** 2), rtol=1e-6)


EXTREME = np.array([100.0, -100.0, 1e4, -1e4], np.float32)


@pytest.mark.parametrize("name", ["minimax", "nonsaturating", "hinge"])
def test_losses_and_grads_finite_at_extreme_logits(name):
    d_fn, g_fn = obj.get_losses(name)
    for x in EXTREME:
        v = jnp.full((3,), x)
        dv, (gr, gf) = jax.value_and_grad(d_fn, argnums=(0, 1))(v, v)
        gv, gg = jax.value_and_grad(g_fn)(v)
        for a in (dv, gr, gf, gv, gg):
            assert np.all(np.isfinite(np.asarray(a))), (name, x)
    # the gradients are the closed forms: d/df mean softplus(-f) = -sigmoid(-f) / B, etc.
    v = jnp.asarray(EXTREME)
    b = len(EXTREME)
    np.testing.assert_allclose(np.asarray(jax.grad(obj.g_nonsaturating)(v)), -_sig(-EXTREME) / b, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jax.grad(obj.g_minimax)(v)), -_sig(EXTREME) / b, atol=1e-7)
    gr, gf = jax.grad(obj.d_minimax, argnums=(0, 1))(v, v)
    np.testing.assert_allclose(np.asarray(gr), -_sig(-EXTREME) / b, atol=1e-7)
    np.testing.assert_allclose(np.asarray(gf), _sig(EXTREME) / b, atol=1e-7)


def test_softplus_matches_log_sigmoid_where_finite():
    x = np.concatenate([np.linspace(-100, 100, 41), EXTREME]).astype(np.float32)
    naive = -jnp.log(jax.nn.sigmoid(jnp.asarray(x)))  # float32 -log D, inf where D underflows
    ok = np.isfinite(np.asarray(naive))
    assert not ok.all()  # the naive form does overflow on this grid (at -1e4)
    per_example = np.asarray(jax.vmap(lambda t: obj.g_nonsaturating(t[None]))(jnp.asarray(x)))
    assert np.all(np.isfinite(per_example))
    np.testing.assert_allclose(per_example[ok], np.asarray(naive)[ok], rtol=1e-5, atol=1e-6)
    # and against float64 everywhere: -log sigmoid(x) = log(1 + exp(-x)) (XLA flushes float32
    # subnormals, e.g. softplus(-100) = 3.7e-44, to 0: hence the atol of the smallest normal)
    want = np.logaddexp(0.0, -x.astype(np.float64))
    np.testing.assert_allclose(per_example, want, rtol=1e-6, atol=np.finfo(np.float32).tiny)


def test_loss_table_and_unknown_name():
    assert obj.LOSSES["minimax"] == (obj.d_minimax, obj.g_minimax)
    assert obj.LOSSES["nonsaturating"] == (obj.d_minimax, obj.g_nonsaturating)
    assert obj.get_losses("wasserstein") == (obj.d_wasserstein, obj.g_wasserstein)
    assert set(obj.LOSSES) == {"minimax", "nonsaturating", "hinge", "least_squares", "wasserstein"}
    with pytest.raises(ValueError, match=r"config\.model\.loss.*'bogus'.*hinge"):
        obj.get_losses("bogus")


# ----------------------------------------------------------------------------- weight clipping

def test_clip_weights_box_and_inside_unchanged():
    c = 0.01
    r = np.random.default_rng(0)
    params = {"w": jnp.asarray(r.normal(0, 0.01, (5, 7)), jnp.float32),
              # the last two: large parameters that the update brings into the box
              "b": jnp.asarray([0.003, -0.5, 1000.0, -37.3, 0.0, 5.0, -3.1], jnp.float32)}
    grads = {"w": jnp.asarray(r.normal(0, 0.01, (5, 7)), jnp.float32),
             "b": jnp.asarray([0.001, 0.2, 3.0, 1.0, -0.02, 4.99531, -3.10617], jnp.float32)}
    plain = optax.apply_updates(params, optax.sgd(1.0).update(grads, optax.sgd(1.0).init(params))[0])
    tx = optax.chain(optax.sgd(1.0), obj.clip_weights(c))
    state = tx.init(params)
    upd, state = jax.jit(tx.update)(grads, state, params)
    new = optax.apply_updates(params, upd)
    for k in params:
        p, q = np.asarray(new[k]), np.asarray(plain[k])
        assert np.all(np.abs(p) <= c), k  # float32: |p| <= float32(0.01) < 0.01
        inside = np.abs(q) <= np.float32(c)
        np.testing.assert_array_equal(p[inside], q[inside])
        # clipped ones sit on the box edge, up to the float32 spacing at the old parameter
        # (p + u can only land on a grid that coarse: ulp(1000) = 6e-5)
        ulp = np.spacing(np.abs(np.asarray(params[k])))[~inside]
        assert np.all(np.abs(p[~inside] - np.sign(q[~inside]) * np.float32(c)) <= ulp), k
    # the test exercises both cases
    assert np.all(np.abs(np.asarray(plain["b"])[-2:]) < c)
    assert np.any(np.abs(np.asarray(plain["w"])) <= c) and np.any(np.abs(np.asarray(plain["w"])) > c)


def test_clip_weights_refuses_bad_use():
    with pytest.raises(ValueError, match=r"c must be > 0, got 0"):
        obj.clip_weights(0.0)
    tx = obj.clip_weights(0.1)
    p = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"needs params"):
        tx.update(p, tx.init(p))


# ----------------------------------------------------------------------------- gradient penalties

def _linear(w):
    return lambda x: x.reshape(x.shape[0], -1) @ w


def test_gradient_penalty_linear_critic():
    r = np.random.default_rng(1)
    shape = (4, 3, 2, 2)
    real = jnp.asarray(r.normal(size=shape), jnp.float32)
    fake = jnp.asarray(r.normal(size=shape), jnp.float32)
    key = jax.random.PRNGKey(3)
    w = r.normal(size=12).astype(np.float32)
    w1 = jnp.asarray(w / np.linalg.norm(w))
    pen, norms = obj.gradient_penalty(_linear(w1), real, fake, key)
    assert norms.shape == (4,) and pen.shape == ()
    assert float(pen) < 1e-10
    for scale, target in [(2.5, 1.0), (0.3, 1.0), (2.5, 0.5)]:
        ws = jnp.asarray(w * scale)
        pen, norms = obj.gradient_penalty(_linear(ws), real, fake, key, target=target)
        n = np.linalg.norm(np.asarray(ws, np.float64))
        np.testing.assert_allclose(np.asarray(norms), np.full(4, n), rtol=1e-6)
        np.testing.assert_allclose(float(pen), (n - target) ** 2, rtol=1e-5)
    # differentiable w.r.t. the critic (double backprop): d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    ws = jnp.asarray(w * 2.5)
    g = jax.grad(lambda v: obj.gradient_penalty(_linear(v), real, fake, key)[0])(ws)
    n = np.linalg.norm(np.asarray(ws, np.float64))
    np.testing.assert_allclose(np.asarray(g), 2 * (n - 1) * np.asarray(ws) / n, rtol=1e-5)
    # a zero critic gradient gives a finite (zero) gradient of the penalty, not NaN
    g0 = jax.grad(lambda v: obj.gradient_penalty(_linear(v), real, fake, key)[0])(jnp.zeros(12))
    assert np.all(np.isfinite(np.asarray(g0)))


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        h = nn.tanh(nn.Dense(16)(h))
        h = nn.softplus(nn.Dense(16)(h))
        return nn.Dense(1)(h)  # [B, 1]


def test_gradient_penalty_matches_per_example_loop():
    r = np.random.default_rng(2)
    shape = (5, 2, 3)
    real = jnp.asarray(r.normal(size=shape), jnp.float32)
    fake = jnp.asarray(r.normal(size=shape) + 1.0, jnp.float32)
    key = jax.random.PRNGKey(7)
    mlp = _MLP()
    params = mlp.init(jax.random.PRNGKey(0), real)
    critic = lambda x: mlp.apply(params, x)  # noqa: E731
    pen, norms = obj.gradient_penalty(critic, real, fake, key)
    eps = np.asarray(jax.random.uniform(key, (shape[0],)))
    assert len(np.unique(eps)) == shape[0]
    ref = []
    for i in range(shape[0]):
        xh = eps[i] * real[i] + (1 - eps[i]) * fake[i]
        g = jax.grad(lambda v: critic(v[None])[0, 0])(xh)
        ref.append(np.linalg.norm(np.asarray(g, np.float64).ravel()))
    ref = np.array(ref)
    assert norms.shape == (shape[0],)
    np.testing.assert_allclose(np.asarray(norms), ref, rtol=1e-5)
    np.testing.assert_allclose(float(pen), np.mean((ref - 1.0) ** 2), rtol=1e-5)


def test_r1_penalty_quadratic_critic():
    r = np.random.default_rng(4)
    x = jnp.asarray(r.normal(size=(6, 2, 2, 3)), jnp.float32)
    sq = np.sum(np.asarray(x, np.float64).reshape(6, -1) ** 2, axis=1)
    for a in (0.5, -2.0):
        critic = lambda v, a=a: 0.5 * a * jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1)  # noqa: E731
        pen, norms = obj.r1_penalty(critic, x)
        np.testing.assert_allclose(float(pen), np.mean(a ** 2 * sq), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(norms), abs(a) * np.sqrt(sq), rtol=1e-5)
    # d/da mean a^2 ||x||^2 = 2 a mean ||x||^2
    g = jax.grad(lambda a: obj.r1_penalty(lambda v: 0.5 * a * jnp.sum(jnp.square(v.reshape(6, -1)), 1), x)[0])(1.5)
    np.testing.assert_allclose(float(g), 2 * 1.5 * np.mean(sq), rtol=1e-5)


# ----------------------------------------------------------------------------- BEGAN

def test_began_k_control_and_convergence():
    gamma, lam = 0.5, 0.4
    r = np.random.default_rng(5)
    # made-up per-example losses: fake >> gamma real drives k down to 0, then fake << real up to 1
    scales = [(1.0, 0.2), (1.0, 0.1), (1.0, 2.0), (1.0, 3.0), (0.5, 0.0), (2.0, 0.1), (2.0, 0.1),
              (2.0, 0.1), (2.0, 0.1), (1.0, 0.45)]
    k, k_ref, seen = jnp.float32(0.3), 0.3, []
    for sr, sf in scales:
        lr = sr * (1 + 0.1 * r.random(8))
        lf = sf * (1 + 0.1 * r.random(8))
        k = obj.began_k_update(k, jnp.asarray(lr), jnp.asarray(lf), gamma, lam)
        k_ref = min(max(k_ref + lam * (gamma * lr.mean() - lf.mean()), 0.0), 1.0)
        seen.append(k_ref)
        np.testing.assert_allclose(float(k), k_ref, atol=1e-6)
        m = obj.began_convergence(jnp.asarray(lr), jnp.asarray(lf), gamma)
        np.testing.assert_allclose(float(m), lr.mean() + abs(gamma * lr.mean() - lf.mean()), rtol=1e-6)
    assert 0.0 in seen and 1.0 in seen  # both clips were hit
    # no gradient through the k update
    g = jax.grad(lambda a: obj.began_k_update(0.5, a, a, gamma, lam))(jnp.ones(4))
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_began_losses_and_recon():
    r = np.random.default_rng(6)
    x = r.random((3, 4, 4, 1)).astype(np.float32)
    rec = r.random((3, 4, 4, 1)).astype(np.float32)
    lx = obj.began_recon_loss(jnp.asarray(x), jnp.asarray(rec))
    np.testing.assert_allclose(np.asarray(lx), np.abs(x - rec).reshape(3, -1).mean(1), rtol=1e-6)
    lr, lf = jnp.asarray([0.2, 0.4, 0.3]), jnp.asarray([0.5, 0.1, 0.6])
    d, g = obj.began_losses(lr, lf, 0.25)
    np.testing.assert_allclose(float(d), 0.3 - 0.25 * 0.4, rtol=1e-6)
    np.testing.assert_allclose(float(g), 0.4, rtol=1e-6)
    dk = jax.grad(lambda k: obj.began_losses(lr, lf, k)[0])(0.25)
    assert float(dk) == 0.0
    dlf = jax.grad(lambda v: obj.began_losses(lr, v, 0.25)[0])(lf)
    np.testing.assert_allclose(np.asarray(dlf), -0.25 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match=r"x \(3, 4, 4, 1\) and recon \(3, 4, 4\)"):
        obj.began_recon_loss(jnp.asarray(x), jnp.asarray(rec[..., 0]))


def test_began_gamma_check():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"config\.model\.began_gamma: gamma must be in \(0, 1\], got"):
            obj.check_began_gamma(bad)
    obj.check_began_gamma(1.0)
    with pytest.raises(ValueError, match=r"began_gamma"):
        obj.began_k_update(0.0, jnp.ones(2), jnp.ones(2), 1.5, 0.001)


# ----------------------------------------------------------------------------- optimal discriminator

class _Disc(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Dense(32)(x))
        h = nn.tanh(nn.Dense(32)(h))
        return nn.Dense(1)(h)[:, 0]


def test_optimal_discriminator_closed_form():
    x = np.linspace(-2, 2, 9)
    pd, pg = norm.pdf(x, 1.0, 0.5), norm.pdf(x, -1.0, 0.8)
    got = np.asarray(obj.optimal_discriminator(jnp.asarray(pd), jnp.asarray(pg)))
    # D* = sigmoid(log p_data - log p_g)
    np.testing.assert_allclose(got, _sig(norm.logpdf(x, 1.0, 0.5) - norm.logpdf(x, -1.0, 0.8)), rtol=1e-5)


def test_trained_discriminator_is_optimal():
    rng = np.random.default_rng(0)
    n = 4000
    xd = jnp.asarray(rng.normal(1.0, 0.5, (n, 1)), jnp.float32)
    xg = jnp.asarray(rng.normal(-1.0, 0.8, (n, 1)), jnp.float32)
    disc = _Disc()
    params = disc.init(jax.random.PRNGKey(0), xd[:2])
    tx = optax.adam(1e-2)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(lambda q: obj.d_minimax(disc.apply(q, xd), disc.apply(q, xg)))(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), loss

    (params, _), losses = jax.jit(lambda p, s: jax.lax.scan(step, (p, s), None, length=400))(params, tx.init(params))
    grid = np.linspace(-1.5, 1.5, 61)
    d_hat = np.asarray(jax.nn.sigmoid(disc.apply(params, jnp.asarray(grid[:, None], jnp.float32))))
    d_star = np.asarray(obj.optimal_discriminator(norm.pdf(grid, 1.0, 0.5), norm.pdf(grid, -1.0, 0.8)))
    assert float(losses[-1]) < float(losses[0])
    assert np.max(np.abs(d_hat - d_star)) < 0.05, np.max(np.abs(d_hat - d_star))


# ----------------------------------------------------------------------------- bad inputs

def test_bad_shapes_named():
    good, bad = jnp.zeros(4), jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"real_logits must have shape \[B\] or \[B, 1\], got shape \(4, 2\)"):
        obj.d_minimax(bad, good)
    with pytest.raises(ValueError, match=r"fake_logits .*\(4, 2\)"):
        obj.d_hinge(good, bad)
    with pytest.raises(ValueError, match=r"fake_logits .*\(4, 2\)"):
        obj.g_nonsaturating(bad)
    with pytest.raises(ValueError, match=r"fake_critic .*\(4, 2\)"):
        obj.d_wasserstein(good, bad)
    with pytest.raises(ValueError, match=r"real \(4, 3\) and fake \(4, 2\)"):
        obj.gradient_penalty(lambda x: x.sum(1), jnp.zeros((4, 3)), jnp.zeros((4, 2)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"critic_fn output .*\(4, 3\)"):
        obj.gradient_penalty(lambda x: x, jnp.zeros((4, 3)), jnp.zeros((4, 3)), jax.random.PRNGKey(0))
